//! Roles and object rights: every documented route walked as each role
//! against a table kept here (so a new route without a rule fails), and
//! ownership and grants on real objects.

use doppel_client::{Client, ClientError};
use doppel_model::ErrorCode;
use serde_json::Value;

use crate::support::*;

/// The least role each route needs, as this test expects it; independent
/// of the engine's own table on purpose.
const EXPECTED: &[(&str, &str, &str)] = &[
    ("GET", "/api/v1/health", "open"),
    ("GET", "/api/v1/openapi.json", "open"),
    ("POST", "/api/v1/login", "open"),
    ("POST", "/api/v1/logout", "auditor"),
    ("GET", "/api/v1/whoami", "auditor"),
    ("GET", "/api/v1/users", "admin"),
    ("POST", "/api/v1/users", "admin"),
    ("DELETE", "/api/v1/users/{name}", "admin"),
    ("PUT", "/api/v1/users/{name}/role", "admin"),
    ("GET", "/api/v1/grants", "auditor"),
    ("POST", "/api/v1/grants", "operator"),
    ("DELETE", "/api/v1/grants", "operator"),
    ("GET", "/api/v1/plugins", "auditor"),
    ("POST", "/api/v1/plugins", "admin"),
    ("GET", "/api/v1/plugins/{plugin}", "auditor"),
    ("DELETE", "/api/v1/plugins/{plugin}", "admin"),
    ("GET", "/api/v1/plugins/{plugin}/definition", "auditor"),
    ("GET", "/api/v1/plugins/{plugin}/logs", "auditor"),
    ("GET", "/api/v1/plugins/{plugin}/worker", "auditor"),
    (
        "POST",
        "/api/v1/plugins/{plugin}/operations/{operation}",
        "admin",
    ),
    (
        "POST",
        "/api/v1/plugins/{plugin}/validate/{definition}",
        "auditor",
    ),
    ("GET", "/api/v1/pool", "auditor"),
    ("GET", "/metrics", "auditor"),
    ("GET", "/api/v1/environments", "auditor"),
    ("POST", "/api/v1/environments", "operator"),
    ("GET", "/api/v1/environments/{env}", "auditor"),
    ("DELETE", "/api/v1/environments/{env}", "operator"),
    ("POST", "/api/v1/environments/{env}/refresh", "operator"),
    ("GET", "/api/v1/environments/{env}/users", "auditor"),
    ("POST", "/api/v1/environments/{env}/users", "operator"),
    (
        "DELETE",
        "/api/v1/environments/{env}/users/{user}",
        "operator",
    ),
    ("GET", "/api/v1/repositories", "auditor"),
    ("GET", "/api/v1/sourceconfigs", "auditor"),
    ("POST", "/api/v1/sourceconfigs", "operator"),
    ("GET", "/api/v1/sourceconfigs/{sc}", "auditor"),
    ("PUT", "/api/v1/sourceconfigs/{sc}", "operator"),
    ("DELETE", "/api/v1/sourceconfigs/{sc}", "operator"),
    ("GET", "/api/v1/jobs", "auditor"),
    ("GET", "/api/v1/jobs/{job}", "auditor"),
    ("GET", "/api/v1/jobs/{job}/events", "auditor"),
    ("GET", "/api/v1/jobs/{job}/stream", "auditor"),
    ("POST", "/api/v1/jobs/{job}/cancel", "operator"),
    ("GET", "/api/v1/dsources", "auditor"),
    ("POST", "/api/v1/dsources", "operator"),
    ("GET", "/api/v1/dsources/{ds}", "auditor"),
    ("DELETE", "/api/v1/dsources/{ds}", "operator"),
    ("POST", "/api/v1/dsources/{ds}/sync", "operator"),
    ("POST", "/api/v1/dsources/{ds}/{action}", "operator"),
    ("GET", "/api/v1/snapshots", "auditor"),
    ("DELETE", "/api/v1/snapshots/{snapshot}", "operator"),
    ("GET", "/api/v1/vdbs", "auditor"),
    ("POST", "/api/v1/vdbs", "operator"),
    ("GET", "/api/v1/vdbs/{vdb}", "auditor"),
    ("DELETE", "/api/v1/vdbs/{vdb}", "operator"),
    ("POST", "/api/v1/vdbs/{vdb}/snapshot", "operator"),
    ("POST", "/api/v1/vdbs/{vdb}/refresh", "operator"),
    ("POST", "/api/v1/vdbs/{vdb}/rewind", "operator"),
    ("POST", "/api/v1/vdbs/{vdb}/power/{action}", "operator"),
    ("POST", "/api/v1/empty-vdbs", "operator"),
    ("POST", "/api/v1/exports", "operator"),
    ("GET", "/api/v1/mounts", "auditor"),
    ("GET", "/api/v1/hooks/{object}", "operator"),
    ("PUT", "/api/v1/hooks/{object}", "operator"),
    ("GET", "/api/v1/policies", "auditor"),
    ("POST", "/api/v1/policies", "operator"),
    ("GET", "/api/v1/policies/{policy}", "auditor"),
    ("PUT", "/api/v1/policies/{policy}", "operator"),
    ("DELETE", "/api/v1/policies/{policy}", "operator"),
    ("POST", "/api/v1/policies/{policy}/apply", "operator"),
    (
        "DELETE",
        "/api/v1/policies/{policy}/objects/{object}",
        "operator",
    ),
    ("GET", "/api/v1/schedule-runs", "auditor"),
    ("GET", "/api/v1/bookmarks", "auditor"),
    ("POST", "/api/v1/bookmarks", "operator"),
    ("GET", "/api/v1/bookmarks/{bookmark}", "auditor"),
    ("DELETE", "/api/v1/bookmarks/{bookmark}", "operator"),
    ("POST", "/api/v1/vdbs/{vdb}/protection", "operator"),
    ("DELETE", "/api/v1/vdbs/{vdb}/protection", "operator"),
    ("PUT", "/api/v1/vdbs/{vdb}/expiry", "operator"),
    ("DELETE", "/api/v1/vdbs/{vdb}/expiry", "operator"),
    ("POST", "/api/v1/test-clock", "admin"),
    ("GET", "/api/v1/webhooks", "admin"),
    ("POST", "/api/v1/webhooks", "admin"),
    ("GET", "/api/v1/webhooks/{webhook}", "admin"),
    ("DELETE", "/api/v1/webhooks/{webhook}", "admin"),
    ("POST", "/api/v1/webhooks/{webhook}/test", "admin"),
];

const ROLES: [&str; 3] = ["auditor", "operator", "admin"];

fn rank(role: &str) -> usize {
    ROLES.iter().position(|r| *r == role).unwrap()
}

/// Sends one request; answers (status, body).
fn send(engine: &Engine, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let http = reqwest::blocking::Client::new();
    let url = format!("{}{path}", engine.url);
    let mut req = http.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if method != "GET" {
        req = req.header("content-type", "application/json").body("{}");
    }
    let resp = req
        .timeout(std::time::Duration::from_secs(20))
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.text().unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[test]
fn every_route_answers_each_role_as_the_table_says() {
    let engine = Engine::start();
    let tokens = [
        add_user(&engine, "audrey", "auditor"),
        add_user(&engine, "olga", "operator"),
        engine.token.clone(),
    ];
    let doc: Value = reqwest::blocking::get(format!("{}/api/v1/openapi.json", engine.url))
        .unwrap()
        .json()
        .unwrap();
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    let unlisted: Vec<_> = documented
        .iter()
        .filter(|(m, p)| !EXPECTED.iter().any(|(em, ep, _)| em == m && ep == p))
        .collect();
    assert!(
        unlisted.is_empty(),
        "routes this test has no rule for (add them to EXPECTED): {unlisted:?}"
    );
    let gone: Vec<_> = EXPECTED
        .iter()
        .filter(|(m, p, _)| !documented.iter().any(|(dm, dp)| dm == m && dp == p))
        .collect();
    assert!(
        gone.is_empty(),
        "EXPECTED names routes that do not exist: {gone:?}"
    );

    for (method, template, needed) in EXPECTED {
        // Objects that do not exist: the answer shows the role check alone.
        let path = template
            .replace("{action}", "enable")
            .replace("{definition}", "virtual_source")
            .replace("{operation}", "discovery.repository")
            .replace("{job}", "JOB-999999")
            .replace("{snapshot}", "SNAPSHOT-999999")
            .replace("{sc}", "SOURCE_CONFIG-999999")
            .replace(['{', '}'], "");
        let anonymous = send(&engine, method, &path, None);
        if *needed == "open" {
            assert_ne!(anonymous.0, 401, "{method} {path} is open: {anonymous:?}");
            continue;
        }
        assert_eq!(
            anonymous.0, 401,
            "{method} {path} without a token: {anonymous:?}"
        );
        for (i, role) in ROLES.iter().enumerate() {
            // Logging out ends the token used: give it one of its own.
            let own;
            let token = if *template == "/api/v1/logout" {
                let name = ["audrey", "olga", "admin"][i];
                let password = if i == 2 {
                    ADMIN_PASSWORD.to_owned()
                } else {
                    format!("{name}-password")
                };
                own = Client::new(&engine.url)
                    .login(name, &password)
                    .unwrap()
                    .token;
                &own
            } else {
                &tokens[i]
            };
            let (status, body) = send(&engine, method, &path, Some(token));
            if rank(role) < rank(needed) {
                assert_eq!(status, 403, "{method} {path} as {role}: {body}");
                assert_eq!(body["error"]["code"], "forbidden", "{body}");
                let message = body["error"]["message"].as_str().unwrap();
                assert!(
                    message.contains(&format!("needs the {needed} role")),
                    "the refusal names the missing role: {message}"
                );
            } else {
                assert!(
                    status != 401 && status != 403,
                    "{method} {path} as {role} must pass the role check: {status} {body}"
                );
            }
        }
    }
    // The auditor changed nothing and the operator made no user.
    let users = engine.client().list_users().unwrap();
    assert_eq!(users.len(), 3, "{users:?}");
}

fn code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> ErrorCode {
    r.expect_err("must fail").code().expect("an API error")
}

#[test]
fn user_names_follow_the_name_rule_and_roles_are_checked() {
    let engine = Engine::start();
    let c = engine.client();
    for bad in ["..", ".", "-rf", "a/b", "with space", ""] {
        let err = c
            .add_user(&doppel_model::AddUser {
                name: bad.into(),
                password: "long-enough-password".into(),
                role: None,
                admin: false,
            })
            .expect_err(bad);
        assert_eq!(err.code(), Some(ErrorCode::InvalidInput), "{bad:?}: {err}");
        assert!(err.to_string().contains("name"), "{err}");
    }
    let contradiction = c.add_user(&doppel_model::AddUser {
        name: "carl".into(),
        password: "long-enough-password".into(),
        role: Some(doppel_model::Role::Auditor),
        admin: true,
    });
    assert_eq!(code(contradiction), ErrorCode::InvalidInput);
    let bad_role = engine.cli_as(
        &["user", "add", "dave", "--role", "root"],
        Some(&engine.token),
        None,
        Some("dave-password\n"),
    );
    assert!(bad_role.fails(2).contains("not a role"), "{bad_role:?}");
    assert_eq!(c.list_users().unwrap().len(), 1, "nothing was added");
    let listed = engine
        .cli_as(
            &[
                "user",
                "add",
                "erin@example.org",
                "--role",
                "auditor",
                "-o",
                "json",
            ],
            Some(&engine.token),
            None,
            Some("erin-password\n"),
        )
        .json();
    assert_eq!(listed["role"], "auditor");
    assert_eq!(listed["admin"], false);
}

#[test]
fn failed_logins_across_user_names_are_braked_per_client() {
    let engine = Engine::start();
    let c = Client::new(&engine.url);
    // Under the per-user limit for every name, but many names in all.
    for i in 0..20 {
        let err = c
            .login(&format!("user{i}"), "guess-guess")
            .expect_err("unknown user");
        assert_eq!(
            err.code(),
            Some(ErrorCode::Unauthorized),
            "attempt {i}: {err}"
        );
    }
    let err = c.login("someone-new", "guess-guess").expect_err("braked");
    assert_eq!(err.code(), Some(ErrorCode::RateLimited), "{err}");
    let err = c.login("admin", ADMIN_PASSWORD).expect_err("braked");
    assert_eq!(err.code(), Some(ErrorCode::RateLimited), "{err}");
    assert!(err.to_string().contains("try again in"), "{err}");
    // Tokens already issued keep working.
    engine.client().list_plugins().unwrap();
}
