//! The OpenAPI document served by the engine, and following a job as
//! server-sent events.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// The engine serves the document the code generates (what `doppel openapi`
/// prints and `docs/openapi.json` holds), without a token.
#[test]
fn engine_serves_the_generated_document() {
    let engine = Engine::start();
    let resp = http()
        .get(format!("{}/api/v1/openapi.json", engine.url))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let served = resp.text().unwrap();
    assert_eq!(served, doppel_api::openapi_json());
    let printed = engine.cli(&["openapi"]);
    assert_eq!(printed.ok(), served);
    let doc: Value = serde_json::from_str(&served).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/api/v1/vdbs"]["get"].is_object());
}

/// Every documented operation reaches a handler: none falls through to
/// "no such API endpoint" or answers 405. Bodies are malformed and ids
/// unknown, so nothing changes.
#[test]
fn every_documented_operation_is_served() {
    let engine = Engine::start();
    let doc: Value = serde_json::from_str(&doppel_api::openapi_json()).unwrap();
    let client = http();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            // Would revoke the token the other requests use.
            if path == "/api/v1/logout" {
                continue;
            }
            let url = format!(
                "{}{}",
                engine.url,
                path.replace('{', "NOPE-").replace('}', "")
            );
            let req = match method.as_str() {
                "get" => client.get(&url),
                "post" => client.post(&url).body("["),
                "put" => client.put(&url).body("["),
                "delete" => client.delete(&url),
                other => panic!("unexpected method {other} for {path}"),
            };
            let resp = req.bearer_auth(&engine.token).send().unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().unwrap();
            assert_ne!(status, 405, "{method} {path}: {body}");
            assert!(
                !body.contains("no such API endpoint"),
                "{method} {path} is documented but not routed: {body}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 50, "{checked}");
}

/// Reads server-sent events until the server closes the stream.
fn read_events(resp: reqwest::blocking::Response) -> Vec<(String, Option<String>, Value)> {
    let mut out = Vec::new();
    let (mut kind, mut id, mut data) = (String::from("message"), None, String::new());
    for line in BufReader::new(resp).lines() {
        let line = line.unwrap();
        if line.is_empty() {
            if !data.is_empty() {
                out.push((
                    kind.clone(),
                    id.take(),
                    serde_json::from_str(&data).unwrap(),
                ));
            }
            kind = "message".into();
            data.clear();
        } else if let Some(v) = line.strip_prefix("event:") {
            kind = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("id:") {
            id = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    out
}

#[test]
fn job_progress_streams_as_server_sent_events() {
    let engine = Engine::start();
    let client = http();
    let stream_url = |job: &str| format!("{}/api/v1/jobs/{job}/stream", engine.url);

    // A job that fails: adding a host nobody listens on.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let add = json!({"name": "nobody", "host": "127.0.0.1", "port": free, "user": "u",
                     "credentials": {"password": {"password": "p"}}});
    let resp = client
        .post(format!("{}/api/v1/environments", engine.url))
        .bearer_auth(&engine.token)
        .json(&add)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 202);
    let job: Value = resp.json().unwrap();
    let id = job["id"].as_str().unwrap().to_owned();

    let resp = client
        .get(stream_url(&id))
        .bearer_auth(&engine.token)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = read_events(resp);
    let (last_kind, _, last) = events.last().expect("some events");
    assert_eq!(last_kind, "end", "{events:?}");
    assert_eq!(last["id"], id.as_str());
    assert_eq!(last["state"], "failed", "{last}");
    assert_eq!(last["error"]["code"], "host_failed", "{last}");
    assert_eq!(events.iter().filter(|e| e.0 == "end").count(), 1);
    for (kind, _, data) in &events[..events.len() - 1] {
        assert!(kind == "job" || kind == "event", "{kind}: {data}");
    }

    // The job events, in order, each with its seq as the id: the same as polling gives.
    let streamed: Vec<&Value> = events
        .iter()
        .filter(|e| e.0 == "event")
        .map(|e| &e.2)
        .collect();
    for (_, sse_id, data) in events.iter().filter(|e| e.0 == "event") {
        assert_eq!(sse_id.as_deref(), Some(data["seq"].to_string().as_str()));
    }
    let polled: Vec<Value> = client
        .get(format!("{}/api/v1/jobs/{id}/events", engine.url))
        .bearer_auth(&engine.token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(!polled.is_empty());
    assert_eq!(streamed, polled.iter().collect::<Vec<_>>());

    // A finished job streams at once; Last-Event-ID resumes after that event.
    let first_seq = polled[0]["seq"].as_i64().unwrap();
    let resp = client
        .get(stream_url(&id))
        .bearer_auth(&engine.token)
        .header("Last-Event-ID", first_seq.to_string())
        .send()
        .unwrap();
    let again = read_events(resp);
    let seqs: Vec<i64> = again
        .iter()
        .filter(|e| e.0 == "event")
        .map(|e| e.2["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        polled[1..]
            .iter()
            .map(|e| e["seq"].as_i64().unwrap())
            .collect::<Vec<_>>()
    );
    assert_eq!(again.last().unwrap().0, "end");

    // The client library follows the same stream (the CLI's `job wait` and
    // every waiting command use it): every event once, in order, then the
    // finished job; an unknown job is the API's not-found error.
    let c = engine.client();
    let mut updates = Vec::new();
    let ended = c.follow_job(&id, |u| updates.push(u)).unwrap();
    assert_eq!(ended.state, doppel_model::JobState::Failed);
    let followed: Vec<i64> = updates
        .iter()
        .filter_map(|u| match u {
            doppel_client::JobUpdate::Event(e) => Some(e.seq),
            doppel_client::JobUpdate::Job(_) => None,
        })
        .collect();
    assert_eq!(
        followed,
        polled
            .iter()
            .map(|e| e["seq"].as_i64().unwrap())
            .collect::<Vec<_>>()
    );
    let missing = c.follow_job("JOB-999999", |_| {}).unwrap_err();
    assert_eq!(
        missing.code(),
        Some(doppel_model::ErrorCode::NotFound),
        "{missing}"
    );
    // `doppel job wait` without a terminal prints each event and fails with the job.
    let waited = engine.cli(&["job", "wait", &id]);
    let stderr = waited.fails(10);
    for e in &polled {
        assert!(
            stderr.contains(&format!("{id}: {}", e["message"].as_str().unwrap())),
            "{stderr}"
        );
    }

    // Authenticated like every route; unknown jobs are 404 errors.
    let resp = client.get(stream_url(&id)).send().unwrap();
    assert_eq!(resp.status(), 401);
    let resp = client
        .get(stream_url("JOB-999999"))
        .bearer_auth(&engine.token)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}
