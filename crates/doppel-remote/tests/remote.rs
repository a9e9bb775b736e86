//! doppel-remote against real sshd hosts of the test world.

// A test or benchmark stops at its first surprise: there an unwrap is an assert.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use doppel_remote::{
    AuthMethod, ConnectOptions, Connection, Credentials, Error, ExecRequest, HostKey,
    HostKeyPolicy, Pool,
};
use doppel_testworld::{Host, ReservedAddress, World, DELPHIX_PASSWORD};

fn password() -> Credentials {
    Credentials::Password(DELPHIX_PASSWORD.into())
}

fn alice_key(host: &Host) -> Credentials {
    Credentials::KeyPair {
        private_key_pem: host.user("alice").private_key_pem.clone().unwrap(),
        passphrase: None,
    }
}

fn pin(host: &Host) -> HostKeyPolicy {
    HostKeyPolicy::Pinned(HostKey::from_openssh(host.host_public_key()).unwrap())
}

async fn delphix(host: &Host) -> Connection {
    Connection::connect(
        &host.address().to_string(),
        host.port(),
        "delphix",
        &password(),
        &pin(host),
    )
    .await
    .unwrap()
}

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn first_contact_returns_the_key_to_pin_and_password_auth_works() {
    let world = World::new(&["a"]);
    let a = world.host("a");
    let conn = Connection::connect(
        &a.address().to_string(),
        a.port(),
        "delphix",
        &password(),
        &HostKeyPolicy::AcceptFirst,
    )
    .await
    .unwrap();
    assert_eq!(conn.host_key().fingerprint(), a.host_key_fingerprint());
    assert!(a.host_public_key().starts_with(conn.host_key().openssh()));
    let again = HostKey::from_openssh(conn.host_key().openssh()).unwrap();
    assert_eq!(&again, conn.host_key());
    let out = conn
        .run_bash("id -un", &BTreeMap::new(), false)
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), "delphix\n");
    assert_eq!(
        conn.target().to_string(),
        format!("delphix@{}:{}", a.address(), a.port())
    );
}

#[tokio::test]
async fn key_auth_works_and_wrong_credentials_are_auth_failures() {
    let world = World::new(&["a", "b"]);
    let (a, b) = (world.host("a"), world.host("b"));
    let addr = a.address().to_string();
    let conn = Connection::connect(&addr, a.port(), "alice", &alice_key(a), &pin(a))
        .await
        .unwrap();
    assert_eq!(
        conn.run_bash("id -un", &BTreeMap::new(), false)
            .await
            .unwrap()
            .stdout_str(),
        "alice\n"
    );

    let wrong_pw = Credentials::Password("nope".into());
    let err = Connection::connect(&addr, a.port(), "delphix", &wrong_pw, &pin(a))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::AuthFailed {
                method: AuthMethod::Password,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&format!("delphix@{addr}:{}", a.port())),
        "{err}"
    );

    // b's alice key is not authorized on a.
    let err = Connection::connect(&addr, a.port(), "alice", &alice_key(b), &pin(a))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::AuthFailed {
                method: AuthMethod::PublicKey,
                ..
            }
        ),
        "{err}"
    );

    let garbage = Credentials::KeyPair {
        private_key_pem: "not a key".into(),
        passphrase: None,
    };
    let err = Connection::connect(&addr, a.port(), "alice", &garbage, &pin(a))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidKey { .. }), "{err}");
}

#[tokio::test]
async fn unreachable_silent_and_non_ssh_addresses_are_typed_errors() {
    let reserved = ReservedAddress::new();
    let addr = reserved.address().to_string();
    let err = Connection::connect(
        &addr,
        reserved.port(),
        "delphix",
        &password(),
        &HostKeyPolicy::AcceptFirst,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");

    // Something that accepts and says nothing.
    let listener = std::net::TcpListener::bind(reserved.socket_addr()).unwrap();
    let options = ConnectOptions {
        banner_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let err = Connection::connect_with(
        &addr,
        reserved.port(),
        "delphix",
        &password(),
        &HostKeyPolicy::AcceptFirst,
        &options,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::BannerTimeout { .. }), "{err}");

    drop(listener);

    // Something that is not SSH.
    let other = ReservedAddress::new();
    let listener = std::net::TcpListener::bind(other.socket_addr()).unwrap();
    let server = std::thread::spawn(move || {
        use std::io::Write;
        let (mut s, _) = listener.accept().unwrap();
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        std::thread::sleep(Duration::from_millis(200));
    });
    let err = Connection::connect_with(
        &other.address().to_string(),
        other.port(),
        "delphix",
        &password(),
        &HostKeyPolicy::AcceptFirst,
        &options,
    )
    .await
    .unwrap_err();
    server.join().unwrap();
    assert!(
        matches!(&err, Error::NotSsh { first_line, .. } if first_line.starts_with("HTTP/1.1")),
        "{err}"
    );
}

#[tokio::test]
async fn a_changed_host_key_is_refused_naming_both_fingerprints() {
    let mut world = World::new(&["a", "b"]);
    let b_pin = pin(world.host("b"));
    let a = world.host("a");
    let addr = a.address().to_string();
    let err = Connection::connect(&addr, a.port(), "delphix", &password(), &b_pin)
        .await
        .unwrap_err();
    match &err {
        Error::HostKeyMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, world.host("b").host_key_fingerprint());
            assert_eq!(actual, a.host_key_fingerprint());
        }
        other => panic!("expected a mismatch, got {other}"),
    }
    assert!(err.to_string().contains(a.host_key_fingerprint()));

    // The same host restarted with a new key.
    let old_pin = pin(a);
    let new_fp = world.host_mut("a").regenerate_host_key();
    let a = world.host("a");
    let err = Connection::connect(&addr, a.port(), "delphix", &password(), &old_pin)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::HostKeyMismatch { actual, .. } if *actual == new_fp),
        "{err}"
    );
    delphix(a).await;
}

#[tokio::test]
async fn bash_missing_is_reported() {
    let world = World::builder().host_without_bash("nobash").build();
    let h = world.host("nobash");
    let conn = delphix(h).await;
    assert!(!conn.has_bash().await.unwrap());
    let err = conn
        .run_bash("echo hi", &BTreeMap::new(), false)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::BashNotFound { command, .. } if command == "echo hi"),
        "{err}"
    );
}

#[tokio::test]
async fn run_bash_semantics() {
    let world = World::new(&["a"]);
    let a = world.host("a");
    let conn = delphix(a).await;
    assert!(conn.has_bash().await.unwrap());
    let none = BTreeMap::new();

    // Exit codes are results; stdout and stderr are kept apart.
    let out = conn
        .run_bash("echo out; echo err >&2; exit 3", &none, false)
        .await
        .unwrap();
    assert_eq!(
        (
            out.exit_code,
            out.stdout_str().as_str(),
            out.stderr_str().as_str()
        ),
        (3, "out\n", "err\n")
    );
    assert!(!out.truncated);
    let out = conn.run_bash("kill -TERM $$", &none, false).await.unwrap();
    assert_eq!(out.exit_code, 128 + 15, "{out:?}");

    // Home directory, user, bash.
    let out = conn
        .run_bash("pwd; id -un; echo $BASH_VERSION | cut -c1", &none, false)
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), "/home/delphix\ndelphix\n5\n");

    // Variables reach the command intact, and never its command line.
    let tricky = "it's \"quoted\" $HOME `x` \\ \n second line ünïcode";
    let out = conn
        .run_bash(
            "printf '%s' \"$TRICKY\"; echo; echo \"$EMPTY|$PLAIN\"; cat /proc/$$/cmdline /proc/$PPID/cmdline | tr '\\0' ' '",
            &vars(&[("TRICKY", tricky), ("EMPTY", ""), ("PLAIN", "p")]),
            false,
        )
        .await
        .unwrap();
    let text = out.stdout_str();
    let mut parts = text.splitn(2, "\n p\n");
    let _ = parts.next();
    assert!(text.starts_with(&format!("{tricky}\n|p\n")), "{text:?}");
    assert!(
        !text[tricky.len()..].contains("second line"),
        "a value leaked into a command line: {text}"
    );

    let err = conn
        .run_bash("true", &vars(&[("BAD-NAME", "x")]), false)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidVariableName { .. }));
    assert!(!err.to_string().contains('x') || err.to_string().contains("BAD-NAME"));

    // Login shells read ~/.bash_profile; plain ones do not.
    a.put_file(
        "/home/delphix/.bash_profile",
        b"export FROM_PROFILE=yes\n",
        "delphix",
    );
    let probe = "echo \"[$FROM_PROFILE]\"";
    assert_eq!(
        conn.run_bash(probe, &none, true)
            .await
            .unwrap()
            .stdout_str(),
        "[yes]\n"
    );
    assert_eq!(
        conn.run_bash(probe, &none, false)
            .await
            .unwrap()
            .stdout_str(),
        "[]\n"
    );

    // Stdin and a multi-line script.
    let out = conn
        .exec(&ExecRequest::new("read -r x\nread -r y\necho \"$y$x\"").stdin("a\nb\n"))
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), "ba\n");

    // The cap is reported, the command still completes.
    let out = conn
        .exec(&ExecRequest::new("head -c 100000 /dev/zero; echo done >&2; exit 4").output_cap(1000))
        .await
        .unwrap();
    assert!(out.truncated);
    assert_eq!(
        (out.stdout.len(), out.stdout_bytes, out.exit_code),
        (1000, 100000, 4)
    );
    assert_eq!(out.stderr_str(), "done\n");
}

#[tokio::test]
async fn run_expect_drives_an_interactive_program() {
    let world = World::new(&["a"]);
    let conn = delphix(world.host("a")).await;
    let script = r#"
set timeout 5
spawn bash -c {read -p "Name: " n; echo "hello $n"}
expect "Name: "
send -- "$env(WHO)\r"
expect {
    "hello $env(WHO)" { puts "\nsaw greeting"; exit 0 }
    timeout { exit 9 }
}
"#;
    let out = conn
        .run_expect(script, &vars(&[("WHO", "Ada Lovelace")]))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert!(
        out.stdout_str().contains("saw greeting"),
        "{}",
        out.stdout_str()
    );
    let out = conn.run_expect("exit 7", &BTreeMap::new()).await.unwrap();
    assert_eq!(out.exit_code, 7);
}

#[tokio::test]
async fn connections_are_pooled_and_channels_run_concurrently() {
    let world = World::new(&["a"]);
    let a = world.host("a");
    let pool = Pool::default();
    let addr = a.address().to_string();
    let c1 = pool
        .get(
            &addr,
            a.port(),
            "delphix",
            &password(),
            &HostKeyPolicy::AcceptFirst,
        )
        .await
        .unwrap();
    // First contact pinned what it saw: the pinned lookup finds the same connection.
    let c2 = pool
        .get(&addr, a.port(), "delphix", &password(), &pin(a))
        .await
        .unwrap();
    assert_eq!(c1.host_key(), c2.host_key());
    assert_eq!(pool.len().await, 2);
    let started = std::time::Instant::now();
    let runs = (0..8).map(|i| {
        let c = c2.clone();
        async move {
            c.run_bash(&format!("sleep 0.3; echo {i}"), &BTreeMap::new(), false)
                .await
                .unwrap()
        }
    });
    let outs = futures_join_all(runs).await;
    assert!(
        started.elapsed() < Duration::from_millis(2000),
        "channels did not run concurrently"
    );
    for (i, out) in outs.iter().enumerate() {
        assert_eq!(out.stdout_str(), format!("{i}\n"));
    }
    c1.close().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let c3 = pool
        .get(&addr, a.port(), "delphix", &password(), &pin(a))
        .await
        .unwrap();
    assert!(!c3.is_closed());
    assert_eq!(
        c3.run_bash("echo again", &BTreeMap::new(), false)
            .await
            .unwrap()
            .stdout_str(),
        "again\n"
    );
}

async fn futures_join_all<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

mod sync {
    use super::*;
    use doppel_remote::SyncRequest;
    use std::fs;
    use std::path::Path;

    #[tokio::test]
    async fn rsync_mirrors_a_tree_over_the_connection() {
        let world = World::new(&["source"]);
        let h = world.host("source");
        let src = "/srv/data/src";
        h.put_file(&format!("{src}/a.txt"), b"alpha", "delphix");
        h.put_file(&format!("{src}/sub/b.txt"), b"beta", "delphix");
        h.put_file(&format!("{src}/sub/deep/c.txt"), b"gamma", "delphix");
        h.put_file(&format!("{src}/sub/skip.log"), b"noise", "delphix");
        h.put_file(&format!("{src}/excluded/x.txt"), b"x", "delphix");
        h.put_file(&format!("{src}/with space/[odd]*.txt"), b"odd", "delphix");
        h.symlink("a.txt", &format!("{src}/link_rel"), "delphix");
        h.put_file("/srv/data/outside/o.txt", b"outside", "delphix");
        h.symlink("/srv/data/outside", &format!("{src}/followed"), "delphix");
        h.put_file("/srv/data/outside-file", b"file target", "delphix");
        h.symlink(
            "/srv/data/outside-file",
            &format!("{src}/followed_file"),
            "delphix",
        );
        assert!(
            !Path::new(src).exists(),
            "the engine must not see the host's data directly"
        );

        let conn = delphix(h).await;
        let local = tempfile::tempdir().unwrap();
        let dest = local.path().join("dataset");
        let request = SyncRequest {
            source_directory: src.into(),
            destination: dest.clone(),
            exclude_paths: vec!["excluded".into(), format!("{src}/sub/skip.log")],
            sym_links_to_follow: vec!["followed".into(), format!("{src}/followed_file")],
        };
        let out = conn.run_sync(&request).await.unwrap();
        assert_eq!(out.passes, 3);
        let read = |p: &str| fs::read_to_string(dest.join(p)).unwrap();
        assert_eq!(read("a.txt"), "alpha");
        assert_eq!(read("sub/b.txt"), "beta");
        assert_eq!(read("sub/deep/c.txt"), "gamma");
        assert_eq!(read("with space/[odd]*.txt"), "odd");
        assert_eq!(
            fs::read_link(dest.join("link_rel")).unwrap(),
            Path::new("a.txt")
        );
        assert!(!dest.join("excluded").exists());
        assert!(!dest.join("sub/skip.log").exists());
        assert!(fs::symlink_metadata(dest.join("followed"))
            .unwrap()
            .is_dir());
        assert_eq!(read("followed/o.txt"), "outside");
        assert!(fs::symlink_metadata(dest.join("followed_file"))
            .unwrap()
            .is_file());
        assert_eq!(read("followed_file"), "file target");

        // Second, incremental sync: changes, deletions and local strays mirrored.
        h.sh(
            "delphix",
            &format!(
                "rm {src}/sub/b.txt && echo -n ALPHA > {src}/a.txt && echo -n new > {src}/new.txt \
             && rm /srv/data/outside/o.txt && echo -n o2 > /srv/data/outside/o2.txt"
            ),
        );
        fs::write(dest.join("stray.txt"), "local only").unwrap();
        fs::create_dir_all(dest.join("excluded")).unwrap();
        fs::write(dest.join("excluded/old.txt"), "left from before").unwrap();
        conn.run_sync(&request).await.unwrap();
        assert_eq!(read("a.txt"), "ALPHA");
        assert_eq!(read("new.txt"), "new");
        assert!(!dest.join("sub/b.txt").exists());
        assert!(!dest.join("stray.txt").exists());
        assert!(
            !dest.join("excluded").exists(),
            "excluded paths are not kept in the mirror"
        );
        assert!(!dest.join("followed/o.txt").exists());
        assert_eq!(read("followed/o2.txt"), "o2");
        assert_eq!(read("followed_file"), "file target");
    }

    #[tokio::test]
    async fn sync_failures_keep_argv_status_and_stderr() {
        let world = World::new(&["source"]);
        let h = world.host("source");
        let conn = delphix(h).await;
        let local = tempfile::tempdir().unwrap();
        let request = SyncRequest {
            source_directory: "/srv/data/does-not-exist".into(),
            destination: local.path().join("d"),
            exclude_paths: vec![],
            sym_links_to_follow: vec![],
        };
        let err = conn.run_sync(&request).await.unwrap_err();
        match &err {
            Error::LocalCommand { argv, stderr, .. } => {
                assert_eq!(argv[0], "rsync");
                assert!(stderr.contains("No such file"), "{stderr}");
            }
            other => panic!("{other}"),
        }
        let bad = SyncRequest {
            exclude_paths: vec!["/elsewhere/x".into()],
            ..request.clone()
        };
        assert!(matches!(
            conn.run_sync(&bad).await.unwrap_err(),
            Error::InvalidSyncPath { .. }
        ));
        let bad = SyncRequest {
            exclude_paths: vec!["../x".into()],
            ..request
        };
        assert!(matches!(
            conn.run_sync(&bad).await.unwrap_err(),
            Error::InvalidSyncPath { .. }
        ));
    }
}
