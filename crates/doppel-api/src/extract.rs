//! Extractors whose refusals leave in the API's error shape, naming the
//! parameter and the reason. axum's own answer in plain text, which clients
//! (and scripts matching on `error.code`) cannot read; every handler uses
//! these instead of `Path`, `Query` and `Bytes`.

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use doppel_model::{ApiError, ErrorCode};
use serde::de::DeserializeOwned;

use crate::Failure;

/// Largest request body of any endpoint but the plugin upload: bodies are
/// small JSON documents (parameters, hooks), so 2 MiB is generous.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Path parameters; a value that does not parse or is not UTF-8 once
/// percent-decoded (`%ff`) is a 400 naming the parameter.
pub(crate) struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Failure> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(ApiPath(v)),
            Err(r) => Err(path_failure(r)),
        }
    }
}

fn path_failure(r: PathRejection) -> Failure {
    use axum::extract::path::ErrorKind;
    let PathRejection::FailedToDeserializePathParams(e) = &r else {
        // Missing parameters mean a route and its handler disagree: our bug.
        return Failure::from(doppel_engine::EngineError::Internal(r.body_text()));
    };
    match e.kind() {
        ErrorKind::InvalidUtf8InPathParam { key } => Failure::invalid(
            key,
            "is not valid UTF-8 once percent-decoded; encode the value as UTF-8",
        ),
        ErrorKind::ParseErrorAtKey {
            key,
            value,
            expected_type,
        } => Failure::invalid(key, format!("{value:?} is not a valid {expected_type}")),
        ErrorKind::DeserializeError {
            key,
            value,
            message,
        } => Failure::invalid(key, format!("{value:?}: {message}")),
        ErrorKind::UnsupportedType { .. } | ErrorKind::WrongNumberOfParameters { .. } => {
            Failure::from(doppel_engine::EngineError::Internal(r.body_text()))
        }
        other => Failure::invalid("path", other),
    }
}

/// Query parameters; a value that does not parse, or a parameter the
/// endpoint does not know, is a 400 naming it.
pub(crate) struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Failure> {
        parse_query(parts.uri.query().unwrap_or_default()).map(ApiQuery)
    }
}

/// Deserializes a query string, keeping the path to the field that failed
/// (axum's `Query` folds it into plain text).
pub(crate) fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, Failure> {
    let pairs = form_urlencoded::parse(query.as_bytes());
    serde_path_to_error::deserialize(serde_urlencoded::Deserializer::new(pairs)).map_err(
        |e: serde_path_to_error::Error<serde_urlencoded::de::Error>| {
            let field = e.path().to_string();
            if field.is_empty() || field == "." {
                // Not about one field: an unknown parameter, say.
                return Failure::invalid("query", e.inner());
            }
            let given = form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| *k == field)
                .map(|(_, v)| format!(" (got {v:?})"))
                .unwrap_or_default();
            Failure::invalid(&field, format!("{}{given}", e.inner()))
        },
    )
}

/// A request body of at most `LIMIT` bytes; a larger one is a 413 naming
/// the limit, before more than `LIMIT` bytes are read.
pub(crate) struct ApiBody<const LIMIT: usize = MAX_BODY_BYTES>(pub Bytes);

impl<S, const LIMIT: usize> FromRequest<S> for ApiBody<LIMIT>
where
    S: Send + Sync,
{
    type Rejection = Failure;

    async fn from_request(mut req: Request, state: &S) -> Result<Self, Failure> {
        // A body announced as too large is refused before a byte is read.
        let announced = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|n| n > LIMIT as u64) {
            return Err(too_large(LIMIT));
        }
        DefaultBodyLimit::max(LIMIT).apply(&mut req);
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(ApiBody(b)),
            Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(too_large(LIMIT)),
            Err(r) => Err(Failure::invalid("body", r.body_text())),
        }
    }
}

impl<const LIMIT: usize> std::ops::Deref for ApiBody<LIMIT> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

pub(crate) fn too_large(limit: usize) -> Failure {
    Failure(ApiError {
        code: ErrorCode::PayloadTooLarge,
        message: format!(
            "body: the request body is larger than this endpoint's limit of {}",
            human(limit)
        ),
        action: None,
        details: Vec::new(),
        output: None,
        correlation_id: None,
    })
}

fn human(n: usize) -> String {
    const MIB: usize = 1024 * 1024;
    if n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else {
        format!("{n} bytes")
    }
}

/// An axum answer that is not in our shape (an extractor in a handler that
/// does not use the ones above, a layer's refusal) leaves in it all the
/// same: the status stays, the text becomes the message.
pub(crate) async fn json_errors(req: Request, next: axum::middleware::Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    // JSON is ours already; HTML is the web UI's page saying it was not built.
    if is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    // axum's own refusals are one short line; more is not a message.
    let text = match axum::body::to_bytes(body, 4096).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_owned(),
        Err(_) => String::new(),
    };
    let code = match status {
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
        StatusCode::FORBIDDEN => ErrorCode::Forbidden,
        StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimited,
        s if s.is_client_error() => ErrorCode::InvalidInput,
        _ => ErrorCode::Internal,
    };
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_owned()
    } else {
        text
    };
    let api = ApiError {
        code,
        message,
        action: None,
        details: Vec::new(),
        output: None,
        correlation_id: None,
    };
    // The status and headers (`Allow`, ...) the refusal had, even where
    // our code would imply another status.
    let mut out = Failure(api).into_response();
    *out.status_mut() = status;
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    async fn error_of(f: Failure) -> (StatusCode, serde_json::Value) {
        let resp = f.into_response();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    /// A body without Content-Length is counted as it arrives.
    #[tokio::test]
    async fn a_streamed_body_over_the_limit_is_a_413_in_our_shape() {
        let chunks = (0..3).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 600])));
        let req = Request::builder()
            .method("POST")
            .uri("/")
            .body(Body::from_stream(futures_util::stream::iter(chunks)))
            .unwrap();
        let Err(f) = ApiBody::<1024>::from_request(req, &()).await else {
            panic!("1800 bytes passed a 1024-byte limit")
        };
        let (status, v) = error_of(f).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(v["error"]["code"], "payload_too_large");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1024 bytes"));

        let req = Request::builder().body(Body::from("small")).unwrap();
        let Ok(body) = ApiBody::<1024>::from_request(req, &()).await else {
            panic!("a small body was refused")
        };
        assert_eq!(&*body, b"small");
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Q {
        limit: Option<usize>,
        after: Option<i64>,
    }

    #[tokio::test]
    async fn query_errors_name_the_parameter_and_the_value() {
        let (status, v) = error_of(parse_query::<Q>("after=1&limit=-1").unwrap_err()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("limit: "), "{message}");
        assert!(message.contains("(got \"-1\")"), "{message}");
        let (_, v) = error_of(parse_query::<Q>("colour=red").unwrap_err()).await;
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("colour"), "{message}");
        assert!(parse_query::<Q>("limit=5").is_ok());
    }
}
