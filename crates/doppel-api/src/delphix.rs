//! The subset of the Delphix web API that the SDK tool (`dvp upload`,
//! `dvp download-logs`) uses, under `/resources/json/delphix`, with the same
//! users as `/api/v1`.
//!
//! Answers are shaped as that API shapes them: `{"type": "OKResult",
//! "status": "OK", "result": ..., "job": ..., "action": ...}`, lists as
//! `ListResult`, errors as `{"type": "ErrorResult", "status": "ERROR",
//! "error": {"type": "APIError", "id", "details", "action", ...}}`. An error's
//! `id` is `exception.doppel.<code>`, `<code>` being the `/api/v1` error code
//! (`invalid_input`, `unauthorized`, `rate_limited`, `not_found`, ...), and
//! its HTTP status is that code's.
//!
//! Flow: `POST session` starts a cookie session (`JSESSIONID`); `POST login`
//! checks the password and replaces the cookie with an authenticated one;
//! every other route needs that cookie. `toolkit/requestUploadToken` gives a
//! single-use upload token; `data/upload` (multipart: `token`, `file`)
//! installs or upgrades the plugin exactly like `doppel plugin install`, as a
//! job whose action (`ACTION-<n>`) and job (`JOB-<n>`) can be read back.
//! `service/support/bundle/generate` with `bundleType: PLUGIN_LOG` gives a
//! single-use download token; `data/downloadOutputStream?token=` answers a
//! tar.gz of that plugin's `debug.log`, `info.log` and `error.log` under
//! `<plugin name>/`.
//!
//! Bodies are JSON objects whose `type` must be the documented one; unknown
//! fields, wrong types and bodies over 64 KiB (the upload: 256 MiB) are
//! refused and change nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use doppel_engine::auth::{Principal, TokenKind};
use doppel_engine::{Engine, EngineError};
use doppel_model::{ApiError, ErrorCode, Job, JobState};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::peer;

const PREFIX: &str = "/resources/json/delphix";
const COOKIE: &str = "JSESSIONID";
const MAX_BODY: usize = 64 * 1024;
/// Sessions started but not logged in yet: how long they wait, how many.
const PENDING_TTL: Duration = Duration::from_secs(300);
const MAX_PENDING: usize = 10_000;

struct Dx {
    engine: Arc<Engine>,
    /// Started sessions awaiting their login.
    pending: Mutex<HashMap<String, Instant>>,
}

pub(crate) fn routes(engine: Arc<Engine>) -> Router<Arc<Engine>> {
    let dx = Arc::new(Dx {
        engine,
        pending: Mutex::default(),
    });
    let r = |p: &str| format!("{PREFIX}/{p}");
    Router::new()
        .route(&r("session"), post(start_session))
        .route(&r("login"), post(login))
        .route(&r("logout"), post(logout))
        .route(&r("toolkit"), get(list_toolkits))
        .route(&r("toolkit/requestUploadToken"), post(request_upload_token))
        .route(
            &r("data/upload"),
            // The artifact plus the form's token field and boundaries.
            post(upload).layer(axum::extract::DefaultBodyLimit::max(
                crate::MAX_ARTIFACT_BYTES + 64 * 1024,
            )),
        )
        .route(&r("action/{action}"), get(get_action))
        .route(&r("action/{action}/getJob"), get(get_action_job))
        .route(&r("job/{job}"), get(get_job))
        .route(&r("service/support/bundle/generate"), post(generate_bundle))
        .route(&r("data/downloadOutputStream"), get(download))
        .route("/resources/json/{*rest}", any(unknown))
        .with_state(dx)
}

// ---- answers ----

/// An `ErrorResult`.
struct DxError {
    status: StatusCode,
    error: Box<ApiError>,
    retry_after: Option<u64>,
}

type DxResult<T> = std::result::Result<T, DxError>;

impl DxError {
    fn new(code: ErrorCode, message: impl Into<String>, action: Option<&str>) -> DxError {
        DxError {
            status: crate::http_status(code),
            error: Box::new(ApiError {
                code,
                message: message.into(),
                action: action.map(str::to_owned),
                details: Vec::new(),
                output: None,
                correlation_id: None,
            }),
            retry_after: None,
        }
    }

    fn from_api(error: ApiError) -> DxError {
        DxError {
            status: crate::http_status(error.code),
            error: Box::new(error),
            retry_after: None,
        }
    }

    fn invalid(message: impl Into<String>) -> DxError {
        DxError::new(ErrorCode::InvalidInput, message, None)
    }

    fn not_logged_in() -> DxError {
        DxError::new(
            ErrorCode::Unauthorized,
            "not logged in, or the session expired",
            Some("start a session (POST delphix/session) and log in (POST delphix/login) first"),
        )
    }
}

impl From<EngineError> for DxError {
    fn from(e: EngineError) -> DxError {
        if e.code() == ErrorCode::Internal {
            tracing::error!(error = %e, "request failed");
        }
        let retry_after = match &e {
            EngineError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        DxError {
            retry_after,
            ..DxError::from_api(e.to_api())
        }
    }
}

impl IntoResponse for DxError {
    fn into_response(self) -> Response {
        let e = &self.error;
        let mut details = e.message.clone();
        for d in &e.details {
            details.push_str("\n  - ");
            details.push_str(d);
        }
        let body = json!({
            "type": "ErrorResult",
            "status": "ERROR",
            "error": {
                "type": "APIError",
                "id": format!("exception.doppel.{}", e.code.as_str()),
                "details": details,
                "action": e.action,
                "commandOutput": e.output,
                "diagnoses": [],
            }
        });
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

fn ok(result: Value) -> Response {
    ok_with(result, Value::Null, Value::Null)
}

fn ok_with(result: Value, job: Value, action: Value) -> Response {
    Json(
        json!({"type": "OKResult", "status": "OK", "result": result, "job": job, "action": action}),
    )
    .into_response()
}

fn set_cookie(mut resp: Response, value: &str) -> Response {
    let cookie = format!("{COOKIE}={value}; Path=/resources; HttpOnly; SameSite=Strict");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

// ---- requests ----

/// Reads a JSON body of at most [`MAX_BODY`] bytes into `T` (unknown
/// fields refused by `T`); an empty body reads as `{}` when `empty_ok`.
async fn json_body<T: DeserializeOwned>(body: Body, empty_ok: bool) -> DxResult<T> {
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| DxError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            ..DxError::invalid(format!("the request body is larger than {MAX_BODY} bytes"))
        })?;
    let bytes: &[u8] = if empty_ok && bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    serde_json::from_slice(bytes)
        .map_err(|e| DxError::invalid(format!("malformed request body: {e}")))
}

fn check_type(found: &str, want: &str) -> DxResult<()> {
    if found == want {
        Ok(())
    } else {
        Err(DxError::invalid(format!(
            "type: expected {want:?}, found {found:?}"
        )))
    }
}

/// The `JSESSIONID` the client sent. The SDK tool sends back its last
/// `Set-Cookie` line whole, attributes included; only the pair counts.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

impl Dx {
    fn principal(&self, headers: &HeaderMap) -> DxResult<Principal> {
        let token = session_cookie(headers).ok_or_else(DxError::not_logged_in)?;
        self.engine
            .authenticate(&token, &TokenKind::Session)
            .map_err(|e| match e {
                EngineError::Unauthorized(_) => DxError::not_logged_in(),
                e => e.into(),
            })
    }

    fn take_pending(&self, id: &str) -> bool {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        p.retain(|_, t| t.elapsed() < PENDING_TTL);
        p.contains_key(id)
    }
}

// ---- session and login ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiVersion {
    r#type: String,
    major: u32,
    minor: u32,
    micro: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionRequest {
    r#type: String,
    version: ApiVersion,
    locale: Option<String>,
    client: Option<String>,
}

async fn start_session(State(dx): State<Arc<Dx>>, body: Body) -> DxResult<Response> {
    let req: SessionRequest = json_body(body, false).await?;
    check_type(&req.r#type, "APISession")?;
    check_type(&req.version.r#type, "APIVersion")?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    {
        let mut p = dx.pending.lock().unwrap_or_else(|p| p.into_inner());
        p.retain(|_, t| t.elapsed() < PENDING_TTL);
        if p.len() >= MAX_PENDING {
            return Err(DxError::new(
                ErrorCode::RateLimited,
                "too many sessions are waiting for a login; try again later",
                None,
            ));
        }
        p.insert(id.clone(), Instant::now());
    }
    let v = &req.version;
    let result = json!({
        "type": "APISession",
        "version": {"type": "APIVersion", "major": v.major, "minor": v.minor, "micro": v.micro},
        "locale": req.locale,
        "client": req.client,
    });
    Ok(set_cookie(ok(result), &id))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    r#type: String,
    username: String,
    password: String,
    target: Option<String>,
}

async fn login(State(dx): State<Arc<Dx>>, req: Request) -> DxResult<Response> {
    let peer = peer(req.extensions());
    let (parts, body) = req.into_parts();
    let pending = session_cookie(&parts.headers)
        .filter(|id| dx.take_pending(id))
        .ok_or_else(|| {
            DxError::new(
                ErrorCode::Unauthorized,
                "no session was started, or it expired",
                Some("start a session (POST delphix/session) before logging in"),
            )
        })?;
    let req: LoginRequest = json_body(body, false).await?;
    check_type(&req.r#type, "LoginRequest")?;
    if let Some(t) = &req.target {
        if t != "DOMAIN" {
            return Err(DxError::invalid(format!(
                "target: only \"DOMAIN\" users exist here, not {t:?}"
            )));
        }
    }
    let who = dx.engine.login(&req.username, &req.password, &peer).await?;
    dx.pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&pending);
    let session = dx.engine.issue_token(&who, TokenKind::Session)?;
    Ok(set_cookie(
        ok(json!(format!("USER-{}", who.user_id))),
        &session.token,
    ))
}

async fn logout(State(dx): State<Arc<Dx>>, headers: HeaderMap) -> DxResult<Response> {
    if let Some(token) = session_cookie(&headers) {
        dx.engine.revoke_token(&token)?;
    }
    Ok(ok(Value::Null))
}

// ---- plugins (toolkits) ----

async fn list_toolkits(State(dx): State<Arc<Dx>>, headers: HeaderMap) -> DxResult<Response> {
    dx.principal(&headers)?;
    let toolkits: Vec<Value> = dx
        .engine
        .list_plugins()?
        .into_iter()
        .map(|p| {
            json!({
                "type": "Toolkit",
                "reference": p.id,
                "namespace": null,
                "identifier": p.id,
                "name": p.name,
                "prettyName": p.name,
                "version": p.external_version,
                "buildNumber": p.build_number,
                "hostTypes": p.host_types,
                "language": p.language,
                "entryPoint": p.entry_point,
            })
        })
        .collect();
    let total = toolkits.len();
    Ok(Json(json!({
        "type": "ListResult", "status": "OK", "result": toolkits, "job": null, "action": null,
        "total": total, "overflow": false,
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct NoParameters {
    r#type: Option<String>,
}

async fn request_upload_token(
    State(dx): State<Arc<Dx>>,
    headers: HeaderMap,
    body: Body,
) -> DxResult<Response> {
    let who = dx.principal(&headers)?;
    let _: NoParameters = json_body(body, true).await?;
    // An upload installs plugin code: refuse before the file is sent.
    doppel_engine::access::require_role(&who, doppel_model::Role::Admin, "upload plugins")?;
    let t = dx.engine.issue_token(&who, TokenKind::Upload)?;
    Ok(ok(
        json!({"type": "FileUploadResult", "url": format!("{PREFIX}/data/upload"), "token": t.token}),
    ))
}

/// `multipart/form-data` with a `token` field, then a `file` field holding
/// artifact.json.
async fn upload(State(dx): State<Arc<Dx>>, req: Request) -> DxResult<Response> {
    let who = dx.principal(req.headers())?;
    let mut form = Multipart::from_request(req, &()).await.map_err(|e| {
        DxError::invalid(format!(
            "the upload must be multipart/form-data: {}",
            e.body_text()
        ))
    })?;
    let mut token = None;
    let mut file = None;
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(e)),
        };
        let name = field.name().unwrap_or_default().to_owned();
        let data = field.bytes().await.map_err(multipart_error)?;
        match name.as_str() {
            "token" if token.is_none() => {
                token = Some(
                    String::from_utf8(data.to_vec())
                        .map_err(|_| DxError::invalid("token: not text"))?
                        .trim()
                        .to_owned(),
                )
            }
            "file" if file.is_none() => file = Some(data),
            "token" | "file" => {
                return Err(DxError::invalid(format!("field {name:?} is given twice")))
            }
            other => {
                return Err(DxError::invalid(format!(
                    "unknown field {other:?}; expected \"token\" and \"file\""
                )))
            }
        }
    }
    let token = token.ok_or_else(|| DxError::invalid("the upload has no \"token\" field"))?;
    let file = file.ok_or_else(|| DxError::invalid("the upload has no \"file\" field"))?;
    dx.engine
        .redeem_token(&token, &TokenKind::Upload, &who)
        .map_err(|e| match e {
            EngineError::Unauthorized(_) => DxError::new(
                ErrorCode::Unauthorized,
                "the upload token is unknown, expired, already used or another user's",
                Some("ask for a new one (POST delphix/toolkit/requestUploadToken)"),
            ),
            e => e.into(),
        })?;
    install_as_job(&dx.engine, &who, file).await
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> DxError {
    let mut err = DxError::invalid(format!("malformed upload: {}", e.body_text()));
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        err.status = StatusCode::PAYLOAD_TOO_LARGE;
        err.error.message = format!(
            "the upload is larger than {} bytes",
            crate::MAX_ARTIFACT_BYTES
        );
    }
    err
}

/// Installs in a job (the engine waits for its end) and answers with it.
async fn install_as_job(
    engine: &Arc<Engine>,
    who: &Principal,
    artifact: Bytes,
) -> DxResult<Response> {
    let (job, outcome) = engine.install_plugin_in_job(who, artifact).await?;
    let number = job.id.trim_start_matches("JOB-");
    match outcome {
        Ok(_) => Ok(ok_with(
            json!(""),
            json!(job.id),
            json!(format!("ACTION-{number}")),
        )),
        Err(e) => Err(DxError::from_api(e)),
    }
}

// ---- actions and jobs ----

fn job_of(dx: &Dx, reference: &str, prefix: &str) -> DxResult<Job> {
    let n = reference
        .strip_prefix(prefix)
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            DxError::new(
                ErrorCode::NotFound,
                format!("no object {reference:?}"),
                None,
            )
        })?;
    Ok(dx.engine.jobs().get(&format!("JOB-{n}"))?)
}

/// Delphix job and action states. A canceled job reads as failed: the SDK
/// tool waits forever on the documented `CANCELED`.
fn states(j: &Job) -> (&'static str, &'static str) {
    match j.state {
        JobState::Queued | JobState::Running => ("RUNNING", "EXECUTING"),
        JobState::Succeeded => ("COMPLETED", "COMPLETED"),
        JobState::Failed | JobState::Canceled => ("FAILED", "FAILED"),
    }
}

fn action_json(j: &Job) -> Value {
    let n = j.id.trim_start_matches("JOB-");
    json!({
        "type": "Action",
        "reference": format!("ACTION-{n}"),
        "actionType": j.kind,
        "title": j.step,
        "state": states(j).1,
        "startTime": j.started_at.as_ref().unwrap_or(&j.created_at),
        "endTime": j.finished_at,
        "failureDescription": j.error.as_ref().map(|e| e.message.clone()),
        "failureAction": j.error.as_ref().and_then(|e| e.action.clone()),
    })
}

fn job_json(dx: &Dx, j: &Job) -> DxResult<Value> {
    let mut events: Vec<Value> = dx
        .engine
        .jobs()
        .events(&j.id, 0)?
        .into_iter()
        .map(|e| {
            json!({
                "type": "JobEvent",
                "timestamp": e.at,
                "eventType": match e.level { doppel_model::EventLevel::Info => "INFO", doppel_model::EventLevel::Warning => "WARNING", doppel_model::EventLevel::Error => "ERROR" },
                "messageCode": format!("event.doppel.{}.{}", j.kind.to_ascii_lowercase(), e.seq),
                "messageDetails": e.message,
                "messageAction": null,
            })
        })
        .collect();
    if let Some(err) = &j.error {
        events.push(json!({
            "type": "JobEvent",
            "timestamp": j.finished_at,
            "eventType": "ERROR",
            "messageCode": format!("exception.doppel.{}", err.code.as_str()),
            "messageDetails": err.to_string(),
            "messageAction": err.action,
        }));
    }
    let n = j.id.trim_start_matches("JOB-");
    Ok(json!({
        "type": "Job",
        "reference": j.id,
        "actionType": j.kind,
        "jobState": states(j).0,
        "percentComplete": j.progress,
        "title": j.step,
        "startTime": j.started_at.as_ref().unwrap_or(&j.created_at),
        "updateTime": j.finished_at,
        "parentAction": format!("ACTION-{n}"),
        "events": events,
    }))
}

async fn get_action(
    State(dx): State<Arc<Dx>>,
    headers: HeaderMap,
    Path(action): Path<String>,
) -> DxResult<Response> {
    dx.principal(&headers)?;
    Ok(ok(action_json(&job_of(&dx, &action, "ACTION-")?)))
}

async fn get_action_job(
    State(dx): State<Arc<Dx>>,
    headers: HeaderMap,
    Path(action): Path<String>,
) -> DxResult<Response> {
    dx.principal(&headers)?;
    let j = job_of(&dx, &action, "ACTION-")?;
    Ok(ok(job_json(&dx, &j)?))
}

async fn get_job(
    State(dx): State<Arc<Dx>>,
    headers: HeaderMap,
    Path(job): Path<String>,
) -> DxResult<Response> {
    dx.principal(&headers)?;
    let j = job_of(&dx, &job, "JOB-")?;
    Ok(ok(job_json(&dx, &j)?))
}

// ---- plugin logs ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
struct BundleRequest {
    r#type: String,
    bundle_type: String,
    plugin: Option<String>,
}

async fn generate_bundle(
    State(dx): State<Arc<Dx>>,
    headers: HeaderMap,
    body: Body,
) -> DxResult<Response> {
    let who = dx.principal(&headers)?;
    let req: BundleRequest = json_body(body, false).await?;
    check_type(&req.r#type, "SupportBundleGenerateParameters")?;
    if req.bundle_type != "PLUGIN_LOG" {
        return Err(DxError::invalid(format!(
            "bundleType: only \"PLUGIN_LOG\" bundles exist here, not {:?}",
            req.bundle_type
        )));
    }
    let plugin = req.plugin.ok_or_else(|| {
        DxError::invalid("plugin: a PLUGIN_LOG bundle needs the plugin's reference")
    })?;
    let summary = dx.engine.get_plugin(&plugin)?;
    let t = dx
        .engine
        .issue_token(&who, TokenKind::Download(summary.id))?;
    Ok(ok(json!(t.token)))
}

async fn download(
    State(dx): State<Arc<Dx>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> DxResult<Response> {
    let who = dx.principal(&headers)?;
    let mut token = None;
    for pair in query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("token", v)) if token.is_none() => token = Some(v.to_owned()),
            _ => {
                return Err(DxError::invalid(format!(
                    "unexpected query parameter {pair:?}; only token= is understood"
                )))
            }
        }
    }
    let token = token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| DxError::invalid("token: missing"))?;
    let bad_token = || {
        DxError::new(
            ErrorCode::Unauthorized,
            "the download token is unknown, expired, already used or another user's",
            Some("ask for a new one (POST delphix/service/support/bundle/generate)"),
        )
    };
    let plugin_id = dx
        .engine
        .download_token_plugin(&token)
        .map_err(|_| bad_token())?;
    let summary = dx.engine.get_plugin(&plugin_id)?;
    dx.engine
        .redeem_token(&token, &TokenKind::Download(plugin_id.clone()), &who)
        .map_err(|_| bad_token())?;
    let dir = dx.engine.layout().plugin_log_dir(&plugin_id);
    let name = safe_name(&summary.name);
    let tarball = tokio::task::spawn_blocking(move || logs_tarball(&dir, &name))
        .await
        .map_err(|e| DxError::new(ErrorCode::Internal, format!("log bundle task: {e}"), None))?
        .map_err(|e| {
            DxError::from(EngineError::Io {
                context: "bundling plugin logs".into(),
                source: e,
            })
        })?;
    let mut resp = (StatusCode::OK, tarball).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"dlpx-plugin-logs-{}.tar.gz\"",
        safe_name(&summary.name)
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

fn safe_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.chars().all(|c| c == '.') {
        "plugin".into()
    } else {
        s
    }
}

/// `<name>/{debug,info,error}.log` as a gzipped tar; a log not written yet
/// is there, empty. Only the current files go in, not the rotated ones:
/// each is at most the rotation size (10 MiB), so the bundle stays bounded,
/// and the newest lines are what a plugin author debugging asks for (older
/// ones are paged with `doppel plugin logs --before`).
fn logs_tarball(dir: &std::path::Path, name: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mtime = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
    let mut dir_header = tar::Header::new_gnu();
    dir_header.set_entry_type(tar::EntryType::Directory);
    dir_header.set_mode(0o755);
    dir_header.set_size(0);
    dir_header.set_mtime(mtime);
    tar.append_data(&mut dir_header, format!("{name}/"), std::io::empty())?;
    for file in ["debug.log", "info.log", "error.log"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_mtime(mtime);
        let path = format!("{name}/{file}");
        match std::fs::File::open(dir.join(file)) {
            Ok(f) => {
                // The size when opened: a plugin may append meanwhile, and a
                // tar entry must be as long as its header says. Streamed, so
                // the bundle never holds a whole log uncompressed.
                let len = f.metadata()?.len();
                h.set_size(len);
                tar.append_data(&mut h, path, f.take(len))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                h.set_size(0);
                tar.append_data(&mut h, path, std::io::empty())?;
            }
            Err(e) => return Err(e),
        }
    }
    tar.into_inner()?.finish()
}

async fn unknown(req: Request) -> DxError {
    DxError::new(
        ErrorCode::NotFound,
        format!("no such endpoint: {} {}", req.method(), req.uri().path()),
        None,
    )
}
