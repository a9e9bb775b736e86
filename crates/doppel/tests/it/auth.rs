//! Authentication of `/api/v1` and of the CLI: tokens, `doppel login`,
//! users, and the brake on password guessing.

use std::os::unix::fs::PermissionsExt;

use doppel_client::{Client, ClientError};
use doppel_model::ErrorCode;

use crate::support::*;

fn code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> ErrorCode {
    r.expect_err("must fail").code().expect("an API error")
}

#[test]
fn every_endpoint_but_health_needs_a_valid_token() {
    let engine = Engine::start();
    let anonymous = Client::new(&engine.url);
    assert!(anonymous.health().is_ok());
    assert_eq!(code(anonymous.list_plugins()), ErrorCode::Unauthorized);
    assert_eq!(
        code(anonymous.list_jobs(None, None)),
        ErrorCode::Unauthorized
    );
    assert_eq!(code(anonymous.pool_status()), ErrorCode::Unauthorized);
    assert_eq!(code(anonymous.list_users()), ErrorCode::Unauthorized);
    let forged = Client::with_token(&engine.url, Some("not-a-token".into()));
    assert_eq!(code(forged.list_plugins()), ErrorCode::Unauthorized);
    assert!(engine.client().list_plugins().unwrap().is_empty());

    let err = engine.cli_as(&["plugin", "list"], None, None, None);
    assert!(err.fails(11).contains("error[unauthorized]"), "{err:?}");
    assert!(
        err.stderr.contains("doppel login"),
        "says what to do: {err:?}"
    );
    engine
        .cli_as(&["plugin", "list"], Some("forged"), None, None)
        .fails(11);
    // Unknown routes under /api/v1 do not tell an anonymous caller what exists.
    assert_eq!(code(anonymous.get_job("JOB-1")), ErrorCode::Unauthorized);
}

#[test]
fn login_reads_the_password_from_stdin_and_saves_a_private_token() {
    let engine = Engine::start();
    let home = tempfile::tempdir().unwrap();
    let url_flag = ["--url", engine.url.as_str()];
    let mut args = vec!["login", "--user", "admin"];
    args.extend(url_flag);
    let out = engine.cli_as(
        &args,
        None,
        Some(home.path()),
        Some(&format!("{ADMIN_PASSWORD}\n")),
    );
    assert!(out.ok().contains("Logged in"), "{out:?}");
    let config = home.path().join("doppel/config.json");
    let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the token file is private");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    assert_eq!(saved["url"], engine.url.as_str());
    // The saved token works without DOPPEL_TOKEN...
    engine
        .cli_as(&["plugin", "list"], None, Some(home.path()), None)
        .ok();
    // ...and DOPPEL_TOKEN overrides it.
    engine
        .cli_as(&["plugin", "list"], Some("forged"), Some(home.path()), None)
        .fails(11);

    let wrong = engine.cli_as(&args, None, Some(home.path()), Some("wrong password\n"));
    assert!(
        wrong.fails(11).contains("wrong user name or password"),
        "{wrong:?}"
    );
    let nobody = engine.cli_as(
        &["login", "--user", "nobody"],
        None,
        Some(home.path()),
        Some("whatever1\n"),
    );
    assert!(
        nobody.fails(11).contains("wrong user name or password"),
        "same answer for unknown users: {nobody:?}"
    );
    let log = engine.log();
    assert!(
        !log.contains(ADMIN_PASSWORD) && !log.contains("wrong password"),
        "passwords are never logged"
    );
}

#[test]
fn failed_logins_are_rate_limited_per_user() {
    let engine = Engine::start();
    let c = Client::new(&engine.url);
    engine
        .cli_as(
            &["user", "add", "bob"],
            Some(&engine.token),
            None,
            Some("bob-password\n"),
        )
        .ok();
    for _ in 0..5 {
        assert_eq!(
            code(c.login("admin", "guess-guess")),
            ErrorCode::Unauthorized
        );
    }
    // Even the right password is refused now, with a hint when to retry.
    let err = c.login("admin", ADMIN_PASSWORD).expect_err("rate limited");
    assert_eq!(err.code(), Some(ErrorCode::RateLimited), "{err}");
    assert!(err.to_string().contains("try again in"), "{err}");
    let cli = engine.cli_as(
        &["login", "--user", "admin"],
        None,
        None,
        Some(&format!("{ADMIN_PASSWORD}\n")),
    );
    assert!(cli.fails(13).contains("rate_limited"), "{cli:?}");
    // Other users and existing tokens are not affected.
    c.login("bob", "bob-password").unwrap();
    engine.client().list_plugins().unwrap();
}

#[test]
fn admins_manage_users_and_deleting_a_user_ends_their_tokens() {
    let engine = Engine::start();
    let added = engine
        .cli_as(
            &["user", "add", "bob", "-o", "json"],
            Some(&engine.token),
            None,
            Some("bob-password\n"),
        )
        .json();
    assert_eq!(added["name"], "bob");
    assert_eq!(added["admin"], false);
    let dup = engine.cli_as(
        &["user", "add", "bob"],
        Some(&engine.token),
        None,
        Some("bob-password\n"),
    );
    dup.fails(5);
    let short = engine.cli_as(
        &["user", "add", "carol"],
        Some(&engine.token),
        None,
        Some("short\n"),
    );
    assert!(short.fails(3).contains("password"), "{short:?}");
    let list = engine.cli(&["user", "list", "-o", "json"]).json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "bob"]);

    let bob = Client::new(&engine.url)
        .login("bob", "bob-password")
        .unwrap()
        .token;
    let bob_client = Client::with_token(&engine.url, Some(bob.clone()));
    bob_client.list_plugins().unwrap();
    assert_eq!(code(bob_client.list_users()), ErrorCode::Forbidden);
    engine
        .cli_as(&["user", "delete", "admin"], Some(&bob), None, None)
        .fails(12);
    engine
        .cli_as(
            &["user", "add", "eve"],
            Some(&bob),
            None,
            Some("eve-password\n"),
        )
        .fails(12);

    // A new role holds from bob's next request, on the token he has.
    let promoted = engine
        .cli(&["user", "set-role", "bob", "admin", "-o", "json"])
        .json();
    assert_eq!(promoted["role"], "admin");
    assert_eq!(bob_client.list_users().unwrap().len(), 2);
    engine.cli(&["user", "set-role", "bob", "operator"]).ok();
    assert_eq!(code(bob_client.list_users()), ErrorCode::Forbidden);
    engine
        .cli(&["user", "set-role", "nobody", "auditor"])
        .fails(4);
    engine.cli(&["user", "set-role", "bob", "root"]).fails(2);

    // The last administrator stays one, and stays.
    let demoted = engine.cli(&["user", "set-role", "admin", "auditor"]);
    assert!(
        demoted.fails(5).contains("last administrator"),
        "{demoted:?}"
    );
    engine.client().list_users().unwrap();
    let last = engine.cli(&["user", "delete", "admin"]);
    assert!(last.fails(5).contains("last administrator"), "{last:?}");
    engine.cli(&["user", "delete", "bob"]).ok();
    assert_eq!(code(bob_client.list_plugins()), ErrorCode::Unauthorized);
    engine.cli(&["user", "delete", "bob"]).fails(4);
    // The admin's token survives a restart (tokens live in the metadata store).
    let mut engine = engine;
    let token = engine.token.clone();
    engine.restart();
    Client::with_token(&engine.url, Some(token))
        .list_plugins()
        .unwrap();
}
