//! What a hostile client sends: artifacts built to exhaust the engine's
//! memory or disk or to write outside its directories, and requests whose
//! every refusal must still come in the API's error shape.

use std::io::{Cursor, Write};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::support::*;

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// `VmHWM` (peak resident size) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// A zip whose one stored entry holds `data` while its local and central
/// (zip64) headers both declare `declared` bytes.
fn zip_declaring(name: &str, data: &[u8], declared: u64) -> Vec<u8> {
    let mut extra = Vec::new();
    extra.extend(1u16.to_le_bytes());
    extra.extend(16u16.to_le_bytes());
    extra.extend(declared.to_le_bytes());
    extra.extend((data.len() as u64).to_le_bytes());
    let header = |sig: u32, central: bool| {
        let mut h = Vec::new();
        h.extend(sig.to_le_bytes());
        if central {
            h.extend((3u16 << 8 | 45).to_le_bytes());
        }
        for v in [45u16, 0, 0, 0, 0x21] {
            h.extend(v.to_le_bytes());
        }
        h.extend(crc32(data).to_le_bytes());
        h.extend(u32::MAX.to_le_bytes());
        h.extend(u32::MAX.to_le_bytes());
        h.extend((name.len() as u16).to_le_bytes());
        h.extend((extra.len() as u16).to_le_bytes());
        if central {
            for v in [0u16, 0, 0] {
                h.extend(v.to_le_bytes());
            }
            h.extend((0o100644u32 << 16).to_le_bytes());
            h.extend(0u32.to_le_bytes());
        }
        h.extend(name.as_bytes());
        h.extend(&extra);
        h
    };
    let mut z = header(0x0403_4b50, false);
    z.extend(data);
    let cd_start = z.len();
    z.extend(header(0x0201_4b50, true));
    let cd_len = z.len() - cd_start;
    z.extend(0x0605_4b50u32.to_le_bytes());
    for v in [0u16, 0, 1, 1] {
        z.extend(v.to_le_bytes());
    }
    z.extend((cd_len as u32).to_le_bytes());
    z.extend((cd_start as u32).to_le_bytes());
    z.extend(0u16.to_le_bytes());
    z
}

/// 4 GiB of zeros in one deflated entry, streamed through the writer so
/// the test holds only the compressed few MiB.
fn zip_bomb() -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(1))
        .large_file(true);
    w.start_file("zeros.bin", opts).unwrap();
    let block = vec![0u8; 1 << 20];
    for _ in 0..4096 {
        w.write_all(&block).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// A symbolic link to the root and a file "through" it.
fn zip_with_symlink() -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    w.add_symlink("escape", "/", opts).unwrap();
    w.start_file("escape/tmp/doppel-escaped", opts).unwrap();
    w.write_all(b"written through a symlink\n").unwrap();
    w.finish().unwrap().into_inner()
}

/// The template artifact with `zip` as its code.
fn artifact_with(zip: &[u8]) -> Vec<u8> {
    let mut v: Value =
        serde_json::from_slice(&std::fs::read(template_artifact()).unwrap()).unwrap();
    v["sourceCode"] = json!(base64::engine::general_purpose::STANDARD.encode(zip));
    v.to_string().into_bytes()
}

fn install_raw(engine: &Engine, body: Vec<u8>) -> (u16, Value) {
    let resp = http()
        .post(format!("{}/api/v1/plugins", engine.url))
        .bearer_auth(&engine.token)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .unwrap_or_else(|e| panic!("no answer (did the engine die?): {e}\n{}", engine.log()));
    let status = resp.status().as_u16();
    let text = resp.text().unwrap();
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not JSON ({e}), status {status}: {text}"));
    (status, v)
}

fn plugin_area_is_empty(engine: &Engine) {
    let left: Vec<_> = std::fs::read_dir(engine.data_dir.path().join("plugins"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "refused installs left files: {left:?}");
}

#[test]
fn hostile_artifacts_are_refused_naming_the_limit_and_the_engine_stays_small() {
    let mut engine = Engine::start();
    let pid = engine.pid();
    let before = peak_rss_kib(pid);
    assert_eq!(
        engine.cli(&["plugin", "list", "-o", "json"]).json(),
        json!([])
    );

    let cases: [(&str, Vec<u8>, &[&str]); 3] = [
        (
            "a 5-byte entry declaring 2^45 bytes",
            zip_declaring("huge.bin", b"hello", 1 << 45),
            &["\"huge.bin\"", "35184372088832", "64 MiB per entry"],
        ),
        (
            "4 GiB of zeros",
            zip_bomb(),
            &["\"zeros.bin\"", "4294967296", "64 MiB per entry"],
        ),
        (
            "a symlink and a file through it",
            zip_with_symlink(),
            &["\"escape\"", "symbolic link"],
        ),
    ];
    let data_dir = engine.data_dir.path().to_string_lossy().into_owned();
    for (what, zip, needles) in cases {
        let (status, v) = install_raw(&engine, artifact_with(&zip));
        assert_eq!(status, 400, "{what}: {v}");
        assert_eq!(v["error"]["code"], "invalid_artifact", "{what}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        for needle in needles {
            assert!(
                message.contains(needle),
                "{what}: {needle:?} not in {message:?}"
            );
        }
        assert!(
            !message.contains(&data_dir),
            "{what}: the engine's paths leak: {message}"
        );
        assert!(
            engine.alive(),
            "{what} killed the engine:\n{}",
            engine.log()
        );
    }
    assert!(!std::path::Path::new("/tmp/doppel-escaped").exists());

    let after = peak_rss_kib(pid);
    assert!(
        after < before + 256 * 1024,
        "the engine's peak memory grew from {before} KiB to {after} KiB"
    );
    assert_eq!(
        engine.cli(&["plugin", "list", "-o", "json"]).json(),
        json!([])
    );
    plugin_area_is_empty(&engine);
}

fn get(engine: &Engine, path: &str) -> reqwest::blocking::Response {
    http()
        .get(format!("{}{path}", engine.url))
        .bearer_auth(&engine.token)
        .send()
        .unwrap()
}

/// Status and `error` of an answer, which must be in the API's shape.
fn refusal(resp: reqwest::blocking::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = resp.text().unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "status {status}, {content_type:?}: {text}"
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    let err = v["error"].clone();
    assert!(
        err["code"].is_string() && err["message"].is_string(),
        "not our shape: {text}"
    );
    (status, err)
}

/// Status and JSON answer of a POST that announces a body of `len` bytes
/// and sends none of it.
fn announce_body(engine: &Engine, path: &str, len: usize) -> (u16, Value) {
    use std::io::Read;
    let addr = engine.url.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        conn,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n",
        engine.token
    )
    .unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let v = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, v)
}

#[test]
fn every_refusal_comes_in_the_error_shape_naming_the_field() {
    let engine = Engine::start();
    let cases: &[(&str, u16, &str, &[&str])] = &[
        (
            "/api/v1/jobs?limit=-1",
            400,
            "invalid_input",
            &["limit", "-1"],
        ),
        ("/api/v1/jobs?color=red", 400, "invalid_input", &["color"]),
        (
            "/api/v1/jobs/JOB-1/events?after=x",
            400,
            "invalid_input",
            &["after", "\"x\""],
        ),
        (
            "/api/v1/plugins/any/logs?tail=-5",
            400,
            "invalid_input",
            &["tail", "-5"],
        ),
        (
            "/api/v1/plugins/any/logs?tail=20000",
            400,
            "invalid_input",
            &["tail", "10000"],
        ),
        (
            "/api/v1/plugins/%ff",
            400,
            "invalid_input",
            &["plugin", "UTF-8"],
        ),
        (
            "/api/v1/jobs/%ff/events",
            400,
            "invalid_input",
            &["job", "UTF-8"],
        ),
    ];
    for (path, status, code, needles) in cases {
        let (got, err) = refusal(get(&engine, path));
        assert_eq!(got, *status, "{path}: {err}");
        assert_eq!(err["code"], *code, "{path}: {err}");
        let message = err["message"].as_str().unwrap();
        for needle in *needles {
            assert!(
                message.contains(needle),
                "{path}: {needle:?} not in {message:?}"
            );
        }
    }

    // A real route, a method it does not take.
    let resp = http()
        .delete(format!("{}/api/v1/jobs", engine.url))
        .bearer_auth(&engine.token)
        .send()
        .unwrap();
    let allow = resp
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap().to_owned());
    let (status, err) = refusal(resp);
    assert_eq!(status, 405, "{err}");
    assert_eq!(err["code"], "method_not_allowed", "{err}");
    assert!(err["message"].as_str().unwrap().contains("DELETE"), "{err}");
    assert!(allow.is_some_and(|a| a.contains("GET")), "an Allow header");

    // Bodies over their limit: the engine answers from Content-Length
    // alone, before reading them (so these send none: a client still
    // writing when the answer comes would see a broken pipe instead).
    for (path, len, limit) in [
        ("/api/v1/environments", 3 << 20, "2 MiB"),
        ("/api/v1/plugins", (64 << 20) + 1, "64 MiB"),
    ] {
        let (status, v) = announce_body(&engine, path, len);
        assert_eq!(status, 413, "{path}: {v}");
        assert_eq!(v["error"]["code"], "payload_too_large", "{path}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(limit), "{path}: {message}");
    }

    // The CLI reads these too: a refused request exits 3.
    let out = engine.cli(&["plugin", "logs", "any", "--tail", "0"]);
    assert!(out.fails(3).contains("tail"), "{}", out.stderr);
}

#[test]
fn plugin_logs_come_in_pages_from_the_end() {
    let engine = Engine::start();
    let plugin = engine.install(&template_artifact());
    let id = plugin["id"].as_str().unwrap();
    // A log longer than a page, as a chatty plugin leaves it.
    let log = engine
        .data_dir
        .path()
        .join("plugins")
        .join(id)
        .join("logs/info.log");
    let mut text = std::fs::read_to_string(&log).unwrap();
    let installed = text.lines().count();
    for i in 0..1500 {
        text.push_str(&format!("2025-01-01T00:00:00Z INFO [engine] line {i}\n"));
    }
    std::fs::write(&log, text).unwrap();

    let page = |query: &str| -> Value {
        let resp = get(&engine, &format!("/api/v1/plugins/{id}/logs{query}"));
        assert_eq!(resp.status(), 200);
        resp.json().unwrap()
    };
    let last = page("");
    let lines = last["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 1000, "the default page");
    assert!(lines[999].as_str().unwrap().ends_with("line 1499"));
    assert!(lines[0].as_str().unwrap().ends_with("line 500"));
    let cursor = last["before"].as_str().expect("older lines remain");
    let older = page(&format!("?before={cursor}&tail=10000"));
    let lines = older["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 500 + installed);
    assert!(lines
        .last()
        .unwrap()
        .as_str()
        .unwrap()
        .ends_with("line 499"));
    assert!(older.get("before").is_none(), "the first page: {older}");

    let (status, err) = refusal(get(
        &engine,
        &format!("/api/v1/plugins/{id}/logs?before=not-a-cursor"),
    ));
    assert_eq!(status, 400);
    assert!(err["message"].as_str().unwrap().contains("before"), "{err}");

    let out = engine.cli(&["plugin", "logs", id, "--tail", "3"]);
    assert_eq!(out.ok().lines().count(), 3);
    assert!(out.stderr.contains("--before"), "{}", out.stderr);
}
