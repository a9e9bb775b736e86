//! The web UI at `/`: the files `ui/` builds (`npm run build` into
//! `ui/dist`), embedded in the binary at compile time, so the engine serves
//! them offline and a binary carries the UI of its own version. The UI is a
//! client of `/api/v1` like any other; nothing here knows its screens.
//!
//! A binary compiled before the UI was built serves a page saying so at
//! `/` (status 503), rather than an empty UI: `build.rs` sets `doppel_ui`
//! only when `ui/dist/index.html` exists, and warns otherwise.

use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// The UI loads its own scripts and styles and talks to its own origin only.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
    script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    frame-ancestors 'none'; form-action 'self'";

#[cfg(doppel_ui)]
#[derive(rust_embed::RustEmbed)]
#[folder = "../../ui/dist"]
struct Assets;

#[cfg(doppel_ui)]
fn asset(path: &str) -> Option<std::borrow::Cow<'static, [u8]>> {
    Assets::get(path).map(|f| f.data)
}

#[cfg(not(doppel_ui))]
fn asset(path: &str) -> Option<std::borrow::Cow<'static, [u8]>> {
    (path == "index.html").then(|| NOT_BUILT.as_bytes().into())
}

/// Whether this binary carries the built UI.
pub const BUILT: bool = cfg!(doppel_ui);

#[cfg(not(doppel_ui))]
const NOT_BUILT: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Doppel: web UI not built</title></head><body><main>\
<h1>The web UI was not built into this binary</h1>\
<p>This <code>doppel</code> was compiled before <code>ui/dist</code> existed. \
Build the UI and then the binary again:</p>\
<pre>scripts/setup.sh        # or: cd ui &amp;&amp; npm ci &amp;&amp; npm run build\n\
cargo build -p doppel</pre>\
<p>The API at <code>/api/v1</code> and the <code>doppel</code> CLI work without it.</p>\
</main></body></html>\n";

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// Everything no route matched: the UI's files, else the API's 404.
pub(crate) async fn fallback(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    if path.starts_with("/api/") || !(method == Method::GET || method == Method::HEAD) {
        return crate::not_found().await.into_response();
    }
    let file = match path.trim_start_matches('/') {
        "" => "index.html",
        p => p,
    };
    let Some(body) = asset(file) else {
        return crate::not_found().await.into_response();
    };
    let status = if BUILT {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    // Vite names what it builds under assets/ by content hash: those never
    // change; index.html names the current ones, so it is always asked again.
    let cache = if file.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut resp = (status, body.into_owned()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(file)),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(path: &str) -> Response {
        fallback(Method::GET, path.parse().unwrap()).await
    }

    #[tokio::test]
    async fn the_root_is_the_ui_page_and_other_paths_keep_the_api_404() {
        let root = get("/").await;
        let want = if BUILT {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        assert_eq!(root.status(), want);
        assert_eq!(
            root.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert!(root.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("default-src 'self'"));
        for path in ["/api/v2/x", "/no-such-file.js", "/assets/gone.css"] {
            let resp = get(path).await;
            assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
            assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        }
        let post = fallback(Method::POST, "/".parse().unwrap()).await;
        assert_eq!(post.status(), StatusCode::NOT_FOUND);
    }
}
