//! Embeds the web UI when it was built: `ui/dist/index.html` present sets
//! `cfg(doppel_ui)` (see `src/ui.rs`); otherwise the binary serves a page
//! saying how to build it, and the build says so once.

use std::path::Path;

fn main() {
    let ui = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ui");
    let dist = ui.join("dist");
    println!("cargo::rustc-check-cfg=cfg(doppel_ui)");
    if dist.join("index.html").is_file() {
        println!("cargo::rerun-if-changed={}", dist.display());
        println!("cargo::rustc-cfg=doppel_ui");
    } else {
        // The whole folder: building the UI creates dist/ inside it.
        println!("cargo::rerun-if-changed={}", ui.display());
        println!(
            "cargo::warning=the web UI is not built (no ui/dist): `doppel serve` answers / with a page saying so; run scripts/setup.sh (or `npm ci && npm run build` in ui/), then build again"
        );
    }
}
