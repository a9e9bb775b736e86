//! Environments on fake hosts: real sshd in private mount namespaces.

use std::path::Path;

use doppel_testworld::World;
use serde_json::{json, Value};

use crate::support::*;

const ALL_OPS: &str = "doppel-all-ops-staged";

fn add_env(
    engine: &Engine,
    name: &str,
    host: &doppel_testworld::Host,
    user: &str,
    flag: &str,
    file: &str,
) -> crate::support::Cli {
    engine.cli(&[
        "env",
        "add",
        "--name",
        name,
        "--host",
        &host.address().to_string(),
        "--port",
        &host.port().to_string(),
        "--user",
        user,
        flag,
        file,
        "-o",
        "json",
    ])
}

fn lib_calls_request(env_ref: &str, user_ref: &str) -> Value {
    let mut vs = virtual_source(json!({"behavior": "lib_calls", "mountPath": "/mnt/v"}));
    vs["connection"]["environment"]["reference"] = json!(env_ref);
    vs["connection"]["user"]["reference"] = json!(user_ref);
    json!({"repository": {"parameters": pdo(json!({"name": "r"}))},
           "source_config": {"parameters": pdo(json!({"name": "sc"}))}, "virtual_source": vs})
}

#[test]
fn environments_are_added_discovered_refreshed_and_deleted() {
    let world = World::new(&["source", "other"]);
    let source = world.host("source");
    let engine = Engine::start();
    engine.install(&build_plugin("all-ops-staged"));
    let secrets = tempfile::tempdir().unwrap();
    let pw = secret_file(
        secrets.path(),
        "pw",
        source.user("delphix").password.as_deref().unwrap(),
    );

    let env = add_env(&engine, "source", source, "delphix", "--password-file", &pw).json();
    let reference = env["reference"].as_str().unwrap().to_owned();
    assert!(
        reference.starts_with("UNIX_HOST_ENVIRONMENT-") && reference[22..].parse::<u32>().is_ok(),
        "{reference}"
    );
    assert_eq!(env["host_key_fingerprint"], source.host_key_fingerprint());
    let toolkit = env["toolkit_path"].as_str().unwrap();
    assert_eq!(toolkit, "/home/delphix/.doppel/toolkit");
    assert!(
        source.exists(toolkit) && source.exists(env["scratch_path"].as_str().unwrap()),
        "toolkit made on the host"
    );
    assert!(
        !Path::new(toolkit).exists(),
        "the host's files are not visible to the engine"
    );

    // Discovery ran through the plugin, with the environment's reference.
    let repos = engine
        .cli(&["repository", "list", "--env", "source", "-o", "json"])
        .json();
    assert_eq!(repos.as_array().unwrap().len(), 1, "{repos}");
    assert_eq!(repos[0]["name"], format!("repo-{reference}"));
    assert_eq!(repos[0]["parameters"]["toolkitPath"], toolkit);
    let configs = engine
        .cli(&["sourceconfig", "list", "--env", "source", "-o", "json"])
        .json();
    let names: Vec<&str> = configs
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            format!("repo-{reference}-config-1"),
            format!("repo-{reference}-config-2")
        ]
    );

    // A source config by hand: checked against the schema, identity unique.
    let repo_name = format!("repo-{reference}");
    let manual = engine
        .cli(&[
            "sourceconfig",
            "add",
            "--env",
            "source",
            "--repository",
            &repo_name,
            "--params",
            r#"{"name": "manual", "path": "/srv/manual"}"#,
            "-o",
            "json",
        ])
        .json();
    assert_eq!(manual["discovered"], false);
    let dup = engine.cli(&[
        "sourceconfig",
        "add",
        "--env",
        "source",
        "--repository",
        &repo_name,
        "--params",
        r#"{"name": "manual"}"#,
    ]);
    assert!(dup.fails(5).contains("identity"), "{}", dup.stderr);
    let bad = engine.cli(&[
        "sourceconfig",
        "add",
        "--env",
        "source",
        "--repository",
        &repo_name,
        "--params",
        r#"{"path": 5, "bogus": 1}"#,
    ]);
    let stderr = bad.fails(3);
    assert!(
        stderr.contains("/name") && stderr.contains("/path"),
        "{stderr}"
    );
    let updated = engine
        .cli(&[
            "sourceconfig",
            "update",
            manual["reference"].as_str().unwrap(),
            "--params",
            r#"{"name": "manual", "path": "/srv/other"}"#,
            "-o",
            "json",
        ])
        .json();
    assert_eq!(updated["parameters"]["path"], "/srv/other");

    // Refresh keeps the hand-added config and the discovered ones.
    engine.cli(&["env", "refresh", "source"]).ok();
    assert_eq!(
        engine
            .cli(&["sourceconfig", "list", "-o", "json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // Users: a key user joins after its login is checked; the primary stays.
    let key = secret_file(
        secrets.path(),
        "key",
        source.user("alice").private_key_pem.as_deref().unwrap(),
    );
    let alice = engine
        .cli(&[
            "env",
            "user",
            "add",
            "source",
            "--name",
            "alice",
            "--key-file",
            &key,
            "-o",
            "json",
        ])
        .json();
    assert_eq!(alice["auth"], "key");
    let wrong_key = secret_file(
        secrets.path(),
        "wrong",
        world
            .host("other")
            .user("alice")
            .private_key_pem
            .as_deref()
            .unwrap(),
    );
    let refused = engine.cli(&[
        "env",
        "user",
        "add",
        "source",
        "--name",
        "alice2",
        "--key-file",
        &wrong_key,
    ]);
    refused.fails(10);
    assert_eq!(
        engine
            .cli(&["env", "user", "list", "source", "-o", "json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    engine
        .cli(&["env", "user", "delete", "source", "delphix"])
        .fails(5);
    engine
        .cli(&["env", "user", "delete", "source", "alice"])
        .ok();

    // A second environment with key authentication.
    let other = world.host("other");
    let other_key = secret_file(
        secrets.path(),
        "okey",
        other.user("alice").private_key_pem.as_deref().unwrap(),
    );
    let env2 = add_env(&engine, "other", other, "alice", "--key-file", &other_key).json();
    assert_eq!(env2["users"][0]["auth"], "key");
    assert_eq!(env2["toolkit_path"], "/home/alice/.doppel/toolkit");
    assert!(
        other.exists("/home/alice/.doppel/toolkit")
            && !source.exists("/home/alice/.doppel/toolkit")
    );

    // Nothing secret in what the engine says or logs.
    let shown = engine
        .cli(&["env", "show", "source", "-o", "json"])
        .ok()
        .to_owned();
    let password = source.user("delphix").password.clone().unwrap();
    assert!(!shown.contains(&password) && !engine.log().contains(&password));
    let db = std::fs::read(engine.data_dir.path().join("metadata.db")).unwrap();
    assert!(
        !String::from_utf8_lossy(&db).contains(&password),
        "the password is stored in clear"
    );

    // The plugin is tied down while its objects exist.
    let out = engine.cli(&["plugin", "delete", ALL_OPS]);
    assert!(out.fails(5).contains("repositories"), "{}", out.stderr);

    engine.cli(&["env", "delete", "source"]).ok();
    let left = engine.cli(&["env", "list", "-o", "json"]).json();
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert!(
        engine
            .cli(&["repository", "list", "--env", "other", "-o", "json"])
            .json()
            .as_array()
            .unwrap()
            .len()
            == 1
    );
    assert_eq!(
        engine
            .cli(&["sourceconfig", "list", "-o", "json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        2,
        "source's configs went with it"
    );
}

#[test]
fn library_callbacks_run_on_the_real_host() {
    let world = World::new(&["target"]);
    let host = world.host("target");
    let engine = Engine::start();
    engine.install(&build_plugin("all-ops-staged"));
    let secrets = tempfile::tempdir().unwrap();
    let pw = secret_file(
        secrets.path(),
        "pw",
        host.user("delphix").password.as_deref().unwrap(),
    );
    let env = add_env(&engine, "target", host, "delphix", "--password-file", &pw).json();
    let env_ref = env["reference"].as_str().unwrap();
    let user_ref = env["users"][0]["reference"].as_str().unwrap();

    engine
        .client()
        .invoke(
            ALL_OPS,
            "virtual.start",
            lib_calls_request(env_ref, user_ref),
            None,
        )
        .unwrap();
    let info = engine
        .cli(&["plugin", "logs", ALL_OPS, "--level", "info"])
        .ok()
        .to_owned();
    assert!(
        info.contains(r#"lib run_bash ok exit=0 stdout="hello\n" stderr="""#),
        "{info}"
    );
    assert!(info.contains("lib run_expect ok exit=0"), "{info}");
    assert!(
        info.contains("lib run_sync error 1 run_sync copies into the dataset being synced"),
        "{info}"
    );
    assert!(
        info.contains("lib run_powershell error 1 run_powershell needs a Windows host"),
        "{info}"
    );
    assert!(
        info.contains(
            "lib retrieve_credentials ok PasswordCredentials username=dbuser password=<6 chars>"
        ),
        "{info}"
    );
    assert!(info.contains("lib upgrade_password error 1 upgrade_password is only allowed while a plugin upgrade runs"), "{info}");

    // A user that does not belong to the environment is refused.
    engine
        .client()
        .invoke(
            ALL_OPS,
            "virtual.start",
            lib_calls_request(env_ref, "HOST_USER-999"),
            None,
        )
        .unwrap();
    let info = engine
        .cli(&["plugin", "logs", ALL_OPS, "--level", "info", "--tail", "20"])
        .ok()
        .to_owned();
    assert!(
        info.contains(&format!(
            "lib run_bash error 1 HOST_USER-999 is not a user of {env_ref}"
        )),
        "{info}"
    );
}

#[test]
fn bad_environments_fail_their_job_with_the_cause_and_store_nothing() {
    let world = World::builder()
        .host("good")
        .host_without_bash("nobash")
        .build();
    let good = world.host("good");
    let engine = Engine::start();
    engine.install(&build_plugin("all-ops-staged"));
    let secrets = tempfile::tempdir().unwrap();
    let pw = secret_file(
        secrets.path(),
        "pw",
        good.user("delphix").password.as_deref().unwrap(),
    );
    let wrong = secret_file(secrets.path(), "wrong", "not-the-password");

    let out = add_env(&engine, "e1", good, "delphix", "--password-file", &wrong);
    assert!(
        out.fails(10).contains("authentication failed"),
        "{}",
        out.stderr
    );

    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = engine.cli(&[
        "env",
        "add",
        "--name",
        "e2",
        "--host",
        "127.0.0.1",
        "--port",
        &free.to_string(),
        "--user",
        "delphix",
        "--password-file",
        &pw,
    ]);
    let stderr = out.fails(10);
    assert!(
        stderr.contains("cannot reach host")
            || stderr.contains("no SSH banner")
            || stderr.contains("timed out"),
        "{stderr}"
    );

    let nobash = world.host("nobash");
    let out = add_env(&engine, "e3", nobash, "delphix", "--password-file", &pw);
    assert!(out.fails(3).contains("no bash"), "{}", out.stderr);

    // The all-ops plugin's discovery raises a UserError on an environment named so.
    let out = add_env(
        &engine,
        "user_error",
        good,
        "delphix",
        "--password-file",
        &pw,
    );
    let stderr = out.fails(6);
    assert!(
        stderr.contains("requested user error") && stderr.contains("Set behavior to ok."),
        "{stderr}"
    );

    engine
        .cli(&[
            "env",
            "add",
            "--name",
            "bad name",
            "--host",
            "h",
            "--user",
            "u",
            "--password-file",
            &pw,
        ])
        .fails(3);
    engine
        .cli(&[
            "env",
            "add",
            "--name",
            "p0",
            "--host",
            "h",
            "--port",
            "0",
            "--user",
            "u",
            "--password-file",
            &pw,
        ])
        .fails(3);
    assert_eq!(
        engine.cli(&["env", "list", "-o", "json"]).json(),
        json!([]),
        "nothing half-made"
    );
    assert_eq!(
        engine.cli(&["repository", "list", "-o", "json"]).json(),
        json!([])
    );

    // A pinned key that changes is refused, naming both fingerprints.
    add_env(&engine, "good", good, "delphix", "--password-file", &pw).ok();
    engine
        .cli(&[
            "env",
            "add",
            "--name",
            "good",
            "--host",
            "h",
            "--user",
            "u",
            "--password-file",
            &pw,
        ])
        .fails(5);
    let old = good.host_key_fingerprint().to_owned();
    let mut world = world;
    let new = world.host_mut("good").regenerate_host_key();
    let out = engine.cli(&["env", "refresh", "good"]);
    let stderr = out.fails(10);
    assert!(
        stderr.contains("host key changed") && stderr.contains(&old) && stderr.contains(&new),
        "{stderr}"
    );
}
