//! Plugins for tests, built from `tests/plugins/<name>` with the real
//! `dvp build` (the SDK's own tool), cached by a hash of their source so a
//! test run builds each at most once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

fn tool(env: &str, default: &str) -> PathBuf {
    let p = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(default));
    assert!(
        p.exists(),
        "{} not found; run scripts/test.sh (or scripts/setup.sh --test), or set {env}",
        p.display()
    );
    p
}

/// CPython 3.11 with the worker's packages.
pub fn python() -> PathBuf {
    tool("DOPPEL_TEST_PYTHON", ".venv/worker/bin/python")
}

/// The SDK's `dvp`.
pub fn dvp() -> PathBuf {
    tool("DOPPEL_TEST_DVP", ".venv/dvp/bin/dvp")
}

/// CPython 2.7 for PYTHON27 plugins (scripts/setup.sh's wrapper).
pub fn python27() -> PathBuf {
    tool("DOPPEL_TEST_PYTHON27", ".venv/python27/bin/python")
}

/// dvp 3.1.0, the last SDK that builds PYTHON27 plugins.
pub fn dvp27() -> PathBuf {
    tool("DOPPEL_TEST_DVP27", ".venv/dvp27/bin/dvp")
}

/// Which SDK builds a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sdk {
    /// dvp 5.2.0: PYTHON311.
    Dvp5,
    /// dvp 3.1.0 on CPython 2.7: PYTHON27.
    Dvp3,
}

impl Sdk {
    fn command(self) -> Command {
        match self {
            Sdk::Dvp5 => Command::new(dvp()),
            Sdk::Dvp3 => {
                // The venv's interpreter is a copy of the unpacked 2.7 one,
                // whose libraries sit beside it in the set-up's prefix.
                let libs = python27()
                    .parent()
                    .and_then(Path::parent)
                    .expect("python27 is <prefix>/bin/python")
                    .join("root/usr/lib/x86_64-linux-gnu");
                let mut cmd = Command::new(dvp27());
                cmd.env("LD_LIBRARY_PATH", libs);
                cmd
            }
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Sdk::Dvp5 => "",
            Sdk::Dvp3 => "-dvp3",
        }
    }
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn build_dir() -> PathBuf {
    let dir = workspace_root().join("target/test-plugins");
    std::fs::create_dir_all(&dir).expect("test plugin directory");
    dir
}

/// A hash of every source file under `dir`.
fn tree_hash(dir: &Path) -> String {
    let out = run(Command::new("sh").arg("-c").arg(
        "find . -type f ! -path './build/*' ! -path './src/generated/*' ! -name artifact.json ! -name '.dvp-gen-output' -print0 \
         | sort -z | xargs -0 sha256sum | sha256sum",
    ).current_dir(dir));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

type Cache = Mutex<HashMap<String, Arc<OnceLock<PathBuf>>>>;

/// Builds `tests/plugins/<name>` after `tweak` edits a copy of it; returns
/// the artifact.json. `variant` names the tweak in the cache.
pub fn build_plugin_with(name: &str, variant: &str, tweak: impl FnOnce(&Path)) -> PathBuf {
    build_from(
        &workspace_root().join("tests/plugins").join(name),
        variant,
        Sdk::Dvp5,
        tweak,
    )
}

/// Builds `tests/plugins/<name>` (a PYTHON27 plugin) with dvp 3.1.0 after
/// `tweak` edits a copy of it.
pub fn build_plugin27_with(name: &str, variant: &str, tweak: impl FnOnce(&Path)) -> PathBuf {
    build_from(
        &workspace_root().join("tests/plugins").join(name),
        variant,
        Sdk::Dvp3,
        tweak,
    )
}

/// Builds `tests/plugins/<name>` as it is with dvp 3.1.0.
pub fn build_plugin27(name: &str) -> PathBuf {
    build_plugin27_with(name, "plain", |_| {})
}

/// Builds the example plugin `examples/plugins/<name>`.
pub fn build_example(name: &str) -> PathBuf {
    build_example_with(name, "example", Sdk::Dvp5, |_| {})
}

/// Builds the example plugin `examples/plugins/<name>` with `sdk` after
/// `tweak` edits a copy of it.
pub fn build_example_with(
    name: &str,
    variant: &str,
    sdk: Sdk,
    tweak: impl FnOnce(&Path),
) -> PathBuf {
    build_from(
        &workspace_root().join("examples/plugins").join(name),
        variant,
        sdk,
        tweak,
    )
}

fn build_from(source: &Path, variant: &str, sdk: Sdk, tweak: impl FnOnce(&Path)) -> PathBuf {
    let name = source
        .file_name()
        .expect("a plugin directory")
        .to_string_lossy()
        .into_owned();
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let key = format!("{name}-{variant}{}", sdk.tag());
    let cell = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key.clone())
        .or_default()
        .clone();
    cell.get_or_init(|| {
        let base = build_dir();
        let scratch = tempfile::tempdir_in(&base).expect("scratch directory");
        let src = scratch.path().join(&name);
        run(Command::new("cp").arg("-a").arg(source).arg(&src));
        tweak(&src);
        let cached = base.join(format!("{key}-{}.json", tree_hash(&src)));
        if !cached.exists() {
            run(sdk.command().arg("build").current_dir(&src));
            let tmp = cached.with_extension("json.tmp");
            std::fs::copy(src.join("artifact.json"), &tmp).expect("copy artifact");
            std::fs::rename(&tmp, &cached).expect("place artifact");
        }
        cached
    })
    .clone()
}

/// Builds `tests/plugins/<name>` as it is.
pub fn build_plugin(name: &str) -> PathBuf {
    build_plugin_with(name, "plain", |_| {})
}

/// The untouched `dvp init -s STAGED -t UNIX` template, built.
pub fn template_artifact() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let scratch = tempfile::tempdir_in(build_dir()).expect("scratch directory");
            let dir = scratch.path().join("tmpl");
            std::fs::create_dir(&dir).expect("template directory");
            run(Command::new(dvp())
                .args(["init", "-n", "template", "-s", "STAGED", "-t", "UNIX"])
                .current_dir(&dir));
            run(Command::new(dvp()).arg("build").current_dir(&dir));
            let out = build_dir().join(format!("template-{}.json", std::process::id()));
            std::fs::copy(dir.join("artifact.json"), &out).expect("copy template artifact");
            out
        })
        .clone()
}
