//! The Delphix-compatible API, driven by the real SDK tool (`dvp upload`,
//! `dvp download-logs`) and by hand for its error shapes.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

const ALL_OPS_ID: &str = "68223316-40de-41af-88fe-a4bfc90a840f";
const ALL_OPS: &str = "doppel-all-ops-staged";

/// Runs `dvp <args>` with `password` on stdin and no controlling terminal
/// (so that its password prompt reads stdin, as it does in scripts).
fn dvp_with_password(args: &[&str], password: &str, dir: &Path) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(dvp());
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setsid(2) only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn show(o: &Output) -> String {
    format!(
        "{}\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn host_port(engine: &Engine) -> String {
    engine.url.trim_start_matches("http://").to_owned()
}

#[test]
fn dvp_upload_installs_and_upgrades_and_dvp_download_logs_fetches_the_logs() {
    let engine = Engine::start();
    let work = tempfile::tempdir().unwrap();
    let artifact = build_plugin("all-ops-staged");
    let e = host_port(&engine);
    let out = dvp_with_password(
        &[
            "upload",
            "-e",
            &e,
            "-u",
            "admin",
            "-a",
            artifact.to_str().unwrap(),
        ],
        ADMIN_PASSWORD,
        work.path(),
    );
    assert!(out.status.success(), "{}", show(&out));
    let plugin = engine.client().get_plugin(ALL_OPS_ID).unwrap();
    assert_eq!(plugin.build_number, "1");

    // An upgrade, waiting for its job like a release script would.
    let v2 = build_plugin_with("all-ops-staged", "build-1.1", |src| {
        let cfg = src.join("plugin_config.yml");
        let text = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("buildNumber: 1.0.0", "buildNumber: 1.1.0");
        std::fs::write(cfg, text).unwrap();
    });
    let out = dvp_with_password(
        &[
            "upload",
            "--wait",
            "-e",
            &e,
            "-u",
            "admin",
            "-a",
            v2.to_str().unwrap(),
        ],
        ADMIN_PASSWORD,
        work.path(),
    );
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        show(&out).contains("successfully uploaded"),
        "{}",
        show(&out)
    );
    assert!(
        show(&out).contains("plugin doppel-all-ops-staged build 1.1 is installed"),
        "job events are shown: {}",
        show(&out)
    );
    assert_eq!(
        engine.client().get_plugin(ALL_OPS_ID).unwrap().build_number,
        "1.1"
    );
    let jobs = engine.client().list_jobs(None, None).unwrap();
    assert!(
        jobs.iter().filter(|j| j.kind == "PLUGIN_UPLOAD").count() == 2,
        "{jobs:?}"
    );

    // The same build again is refused, and dvp says why.
    let out = dvp_with_password(
        &[
            "upload",
            "-e",
            &e,
            "-u",
            "admin",
            "-a",
            v2.to_str().unwrap(),
        ],
        ADMIN_PASSWORD,
        work.path(),
    );
    assert!(!out.status.success());
    assert!(show(&out).contains("is not newer"), "{}", show(&out));

    // Logs: what the plugin wrote, fetched as the SDK tool does.
    let config = workspace_root().join("tests/plugins/all-ops-staged/plugin_config.yml");
    let logs = work.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let out = dvp_with_password(
        &[
            "download-logs",
            "-e",
            &e,
            "-u",
            "admin",
            "-c",
            config.to_str().unwrap(),
            "-d",
            logs.to_str().unwrap(),
        ],
        ADMIN_PASSWORD,
        work.path(),
    );
    assert!(out.status.success(), "{}", show(&out));
    let tarball = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .next()
        .expect("a tarball");
    let file = tarball.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        file.starts_with(&format!("dlpx-plugin-logs-{ALL_OPS}-")) && file.ends_with(".tar.gz"),
        "{file}"
    );
    let unpacked = work.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    let tar = Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&unpacked)
        .output()
        .unwrap();
    assert!(tar.status.success(), "{}", show(&tar));
    let info = std::fs::read_to_string(unpacked.join(ALL_OPS).join("info.log")).unwrap();
    assert!(
        info.contains("installed") && info.contains("upgraded"),
        "{info}"
    );
    for f in ["debug.log", "error.log"] {
        assert!(unpacked.join(ALL_OPS).join(f).exists(), "{f}");
    }

    // A wrong password fails dvp with the engine's words.
    let out = dvp_with_password(
        &[
            "upload",
            "-e",
            &e,
            "-u",
            "admin",
            "-a",
            v2.to_str().unwrap(),
        ],
        "wrong-password",
        work.path(),
    );
    assert!(!out.status.success());
    assert!(
        show(&out).contains("wrong user name or password"),
        "{}",
        show(&out)
    );
}

// ---- by hand ----

struct Web {
    base: String,
    http: reqwest::blocking::Client,
    cookie: Option<String>,
}

impl Web {
    fn new(engine: &Engine) -> Web {
        Web {
            base: format!("{}/resources/json/delphix/", engine.url),
            http: reqwest::blocking::Client::new(),
            cookie: None,
        }
    }

    fn send(&mut self, req: reqwest::blocking::RequestBuilder) -> (u16, Value) {
        let req = match &self.cookie {
            Some(c) => req.header("cookie", c),
            None => req,
        };
        let resp = req.send().unwrap();
        if let Some(c) = resp.headers().get("set-cookie") {
            self.cookie = Some(c.to_str().unwrap().to_owned());
        }
        let status = resp.status().as_u16();
        let text = resp.text().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
        )
    }

    fn post(&mut self, path: &str, body: impl Into<reqwest::blocking::Body>) -> (u16, Value) {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        self.send(req)
    }

    fn get(&mut self, path: &str) -> (u16, Value) {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req)
    }

    fn login(&mut self, password: &str) -> (u16, Value) {
        let s = self.post("session", json!({"type": "APISession", "version": {"type": "APIVersion", "major": 1, "minor": 11, "micro": 51}}).to_string());
        assert_eq!(s.0, 200, "{s:?}");
        self.post(
            "login",
            json!({"type": "LoginRequest", "username": "admin", "password": password}).to_string(),
        )
    }

    fn upload(&mut self, token: &str, file: &[u8]) -> (u16, Value) {
        let b = "----------boundary------";
        let mut body = format!("--{b}\r\nContent-Disposition: form-data; name=\"token\"\r\n\r\n{token}\r\n--{b}\r\nContent-Disposition:form-data; name=\"file\"; filename=\"artifact.json\"\r\nContent-Type: application/octet-stream\r\n\r\n").into_bytes();
        body.extend_from_slice(file);
        body.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
        let req = self
            .http
            .post(format!("{}data/upload", self.base))
            .header("content-type", format!("multipart/form-data; boundary={b}"))
            .body(body);
        self.send(req)
    }

    fn upload_token(&mut self) -> String {
        let (status, v) = self.post("toolkit/requestUploadToken", "");
        assert_eq!(status, 200, "{v}");
        v["result"]["token"].as_str().unwrap().to_owned()
    }
}

/// Asserts an `ErrorResult` with this status and error code.
fn error_result(r: (u16, Value), status: u16, code: &str) -> Value {
    assert_eq!(r.0, status, "{}", r.1);
    assert_eq!(r.1["type"], "ErrorResult", "{}", r.1);
    assert_eq!(r.1["status"], "ERROR");
    assert_eq!(r.1["error"]["type"], "APIError");
    assert_eq!(
        r.1["error"]["id"],
        format!("exception.doppel.{code}"),
        "{}",
        r.1
    );
    assert!(
        r.1["error"]["details"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{}",
        r.1
    );
    r.1
}

#[test]
fn sessions_answer_bad_input_and_bad_credentials_with_error_results() {
    let engine = Engine::start();
    let mut web = Web::new(&engine);
    // Nothing without a logged-in session.
    error_result(web.get("toolkit"), 401, "unauthorized");
    error_result(
        web.post("toolkit/requestUploadToken", ""),
        401,
        "unauthorized",
    );
    error_result(
        web.post(
            "login",
            json!({"type": "LoginRequest", "username": "admin", "password": ADMIN_PASSWORD})
                .to_string(),
        ),
        401,
        "unauthorized",
    );
    error_result(web.get("nothing/here"), 404, "not_found");

    // Malformed JSON, unknown fields, wrong types, wrong type tags, oversized bodies.
    error_result(web.post("session", "{not json"), 400, "invalid_input");
    let v = error_result(web.post("session", json!({"type": "APISession", "version": {"type": "APIVersion", "major": 1, "minor": 11, "micro": 51}, "extra": 1}).to_string()), 400, "invalid_input");
    assert!(
        v["error"]["details"].as_str().unwrap().contains("extra"),
        "{v}"
    );
    error_result(web.post("session", json!({"type": "APISession", "version": {"type": "APIVersion", "major": "1", "minor": 11, "micro": 51}}).to_string()), 400, "invalid_input");
    error_result(web.post("session", json!({"type": "LoginRequest", "version": {"type": "APIVersion", "major": 1, "minor": 11, "micro": 51}}).to_string()), 400, "invalid_input");
    error_result(
        web.post("session", vec![b' '; 100 * 1024]),
        413,
        "invalid_input",
    );
    assert!(web.cookie.is_none(), "no session from bad input");

    // A wrong password.
    let v = error_result(web.login("wrong-password"), 401, "unauthorized");
    assert!(v["error"]["details"]
        .as_str()
        .unwrap()
        .contains("wrong user name or password"));
    error_result(web.get("toolkit"), 401, "unauthorized");

    // The right one: OKResult, a new session cookie, and the list.
    let (status, v) = web.login(ADMIN_PASSWORD);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["type"], "OKResult");
    assert!(web.cookie.as_deref().unwrap().starts_with("JSESSIONID="));
    let (status, v) = web.get("toolkit");
    assert_eq!(
        (status, v["type"].as_str()),
        (200, Some("ListResult")),
        "{v}"
    );
    assert_eq!(v["result"], json!([]));
    error_result(
        web.post(
            "service/support/bundle/generate",
            json!({"type": "SupportBundleGenerateParameters", "bundleType": "MDS", "plugin": "x"})
                .to_string(),
        ),
        400,
        "invalid_input",
    );
    error_result(web.post("service/support/bundle/generate", json!({"type": "SupportBundleGenerateParameters", "bundleType": "PLUGIN_LOG", "plugin": "nope"}).to_string()), 404, "not_found");
    error_result(
        web.get("data/downloadOutputStream?token=forged"),
        401,
        "unauthorized",
    );
    error_result(web.get("action/ACTION-999"), 404, "not_found");

    // Logged out: the cookie no longer works.
    assert_eq!(web.post("logout", "").0, 200);
    error_result(web.get("toolkit"), 401, "unauthorized");

    // Password guessing is braked here too (same users, same counters).
    let mut guesser = Web::new(&engine);
    for _ in 0..4 {
        error_result(guesser.login("guess-guess"), 401, "unauthorized");
    }
    let (status, _) = guesser.login("guess-guess-2");
    assert_eq!(status, 401);
    error_result(guesser.login(ADMIN_PASSWORD), 429, "rate_limited");
}

#[test]
fn upload_tokens_are_single_use_and_expire_and_bad_uploads_change_nothing() {
    let engine = Engine::start_with(&["--single-use-token-ttl", "2"]);
    let artifact = std::fs::read(build_plugin("all-ops-staged")).unwrap();
    let mut web = Web::new(&engine);
    assert_eq!(web.login(ADMIN_PASSWORD).0, 200);

    // A broken artifact: refused with the install's own error; nothing installed.
    let t = web.upload_token();
    let v = error_result(
        web.upload(&t, b"{\"not\": \"an artifact\"}"),
        400,
        "invalid_artifact",
    );
    assert!(v["error"]["details"].as_str().unwrap().len() > 10, "{v}");
    // Neither a forged token nor a used one.
    error_result(web.upload("forged", &artifact), 401, "unauthorized");
    error_result(web.upload(&t, &artifact), 401, "unauthorized");
    assert!(engine.client().list_plugins().unwrap().is_empty());

    // Expired tokens are refused.
    let t = web.upload_token();
    std::thread::sleep(Duration::from_millis(2500));
    error_result(web.upload(&t, &artifact), 401, "unauthorized");
    assert!(engine.client().list_plugins().unwrap().is_empty());

    // A good upload: OKResult naming the job and the action, both readable.
    let t = web.upload_token();
    let (status, v) = web.upload(&t, &artifact);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["type"], "OKResult");
    let action = v["action"].as_str().unwrap().to_owned();
    let job = v["job"].as_str().unwrap().to_owned();
    let (_, a) = web.get(&format!("action/{action}"));
    assert_eq!(a["result"]["state"], "COMPLETED", "{a}");
    let (_, j) = web.get(&format!("job/{job}"));
    assert_eq!(j["result"]["jobState"], "COMPLETED", "{j}");
    assert!(!j["result"]["events"].as_array().unwrap().is_empty(), "{j}");
    let (_, j2) = web.get(&format!("action/{action}/getJob"));
    assert_eq!(j2["result"]["reference"], job.as_str());
    // The same token again: refused, and the plugin is as it was.
    error_result(web.upload(&t, &artifact), 401, "unauthorized");
    assert_eq!(engine.client().list_plugins().unwrap().len(), 1);

    // Download tokens: once only.
    let (_, list) = web.get("toolkit");
    let reference = list["result"][0]["reference"].as_str().unwrap().to_owned();
    assert_eq!(list["result"][0]["identifier"], ALL_OPS_ID);
    assert_eq!(list["result"][0]["namespace"], Value::Null);
    let (status, v) = web.post(
        "service/support/bundle/generate",
        json!({"type": "SupportBundleGenerateParameters", "bundleType": "PLUGIN_LOG", "plugin": reference}).to_string(),
    );
    assert_eq!(status, 200, "{v}");
    let token = v["result"].as_str().unwrap().to_owned();
    let cookie = web.cookie.clone().unwrap();
    let resp = reqwest::blocking::Client::new()
        .get(format!(
            "{}data/downloadOutputStream?token={token}",
            web.base
        ))
        .header("cookie", &cookie)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(&resp.bytes().unwrap()[..2], &[0x1f, 0x8b], "gzip");
    error_result(
        web.get(&format!("data/downloadOutputStream?token={token}")),
        401,
        "unauthorized",
    );
}

#[test]
fn with_tls_on_dvp_upload_and_download_logs_go_through_the_plain_delphix_listener() {
    let port = free_port();
    let delphix = format!("127.0.0.1:{port}");
    let engine = Engine::start_tls(&["--delphix-listen", &delphix]);
    assert!(engine.url.starts_with("https://"));
    let work = tempfile::tempdir().unwrap();
    let artifact = build_plugin("all-ops-staged");
    let out = dvp_with_password(
        &[
            "upload",
            "--wait",
            "-e",
            &delphix,
            "-u",
            "admin",
            "-a",
            artifact.to_str().unwrap(),
        ],
        ADMIN_PASSWORD,
        work.path(),
    );
    assert!(out.status.success(), "{}", show(&out));
    // Installed for the whole API, which the CLI reaches over TLS.
    let shown = engine
        .cli(&["plugin", "show", ALL_OPS_ID, "-o", "json"])
        .json();
    assert_eq!(shown["build_number"], "1", "{shown}");

    let config = workspace_root().join("tests/plugins/all-ops-staged/plugin_config.yml");
    let logs = work.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let out = dvp_with_password(
        &[
            "download-logs",
            "-e",
            &delphix,
            "-u",
            "admin",
            "-c",
            config.to_str().unwrap(),
            "-d",
            logs.to_str().unwrap(),
        ],
        ADMIN_PASSWORD,
        work.path(),
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(std::fs::read_dir(&logs).unwrap().count(), 1, "a tarball");

    // The plain listener serves nothing else: the API's 404, even for the
    // routes that need no token.
    let http = reqwest::blocking::Client::new();
    for path in ["/api/v1/health", "/api/v1/plugins", "/api/v1/login", "/"] {
        let resp = http.get(format!("http://{delphix}{path}")).send().unwrap();
        assert_eq!(resp.status().as_u16(), 404, "{path}");
        let body: Value = resp.json().unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{path}: {body}");
    }
    // And the TLS listener answers no plain HTTP at all.
    let plain = engine.url.replace("https://", "http://");
    assert!(http.get(format!("{plain}/api/v1/health")).send().is_err());
}
