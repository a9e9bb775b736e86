//! TLS on the API: the certificate the engine makes itself, the CLI
//! trusting it as a CA or by its pinned fingerprint (real rustls handshakes
//! both sides), refusals that say what to do, and the warning for plain
//! HTTP beyond loopback.

use base64::Engine as _;
use doppel_client::tls::Fingerprint;

use crate::support::*;

/// The fingerprints the engine logged (`fingerprint=SHA256:...`), in order.
fn logged_fingerprints(engine: &Engine) -> Vec<String> {
    engine
        .log()
        .split("fingerprint=")
        .skip(1)
        .map(|rest| rest.chars().take(71).collect())
        .collect()
}

/// The SHA-256 of the first certificate of a PEM file.
fn pem_fingerprint(path: &std::path::Path) -> Fingerprint {
    let text = std::fs::read_to_string(path).unwrap();
    let b64: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    Fingerprint::of(
        &base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
}

/// `doppel plugin list` as admin, trusting the engine only as `extra` says.
fn list(engine: &Engine, extra: &[&str]) -> Cli {
    let mut args = vec!["plugin", "list", "-o", "json"];
    args.extend_from_slice(extra);
    engine.cli_trusting(&args, Some(&engine.token), None, None, false)
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_cli_trusts_the_engines_own_certificate_by_ca_file_or_pinned_fingerprint_and_nothing_else() {
    let mut engine = Engine::start_tls(&[]);
    assert!(engine.url.starts_with("https://"), "{}", engine.url);
    let cert = engine.ca_cert().unwrap();
    let key = engine.data_dir.path().join("tls-key.pem");
    assert_eq!(mode(&key), 0o600, "the TLS key is the engine user's only");

    // The fingerprint in the log is the served certificate's.
    let logged = logged_fingerprints(&engine);
    assert_eq!(logged.len(), 1, "{}", engine.log());
    let fingerprint = pem_fingerprint(&cert);
    assert_eq!(logged[0], fingerprint.to_string());

    let ca = cert.to_str().unwrap();
    let pin = fingerprint.to_string();
    let list = |extra: &[&str]| list(&engine, extra);

    // Trusted as a CA: names are checked, and the certificate has
    // 127.0.0.1 and localhost.
    assert_eq!(list(&["--ca-cert", ca]).json(), serde_json::json!([]));
    let localhost = engine.url.replace("127.0.0.1", "localhost");
    assert_eq!(
        list(&["--ca-cert", ca, "--url", &localhost]).json(),
        serde_json::json!([])
    );
    // Pinned: nothing but the fingerprint counts.
    assert_eq!(
        list(&["--tls-fingerprint", &pin]).json(),
        serde_json::json!([])
    );
    // Pinned in openssl's spelling.
    let openssl: Vec<String> = pin.as_bytes()["SHA256:".len()..]
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_uppercase())
        .collect();
    assert_eq!(
        list(&["--tls-fingerprint", &openssl.join(":")]).json(),
        serde_json::json!([])
    );

    // A wrong pin: refused, naming both certificates.
    let wrong = Fingerprint([7; 32]).to_string();
    let out = list(&["--tls-fingerprint", &wrong]);
    let err = out.fails(10);
    assert!(
        err.contains(&pin) && err.contains(&wrong) && err.contains("not the pinned"),
        "{err}"
    );
    // Neither CA nor pin: refused, saying how to trust it.
    let out = list(&[]);
    let err = out.fails(10);
    assert!(
        err.contains("not trusted") && err.contains(&pin) && err.contains("--ca-cert"),
        "{err}"
    );
    // A CA file that is not one.
    let out = list(&[
        "--ca-cert",
        engine.data_dir.path().join("nothing").to_str().unwrap(),
    ]);
    assert!(out.fails(2).contains("--ca-cert"), "{}", out.stderr);
    // Plain HTTP to the TLS port gets no answer.
    let plain = engine.url.replace("https://", "http://");
    let out = list(&["--url", &plain]);
    assert_ne!(out.code, 0, "{out:?}");

    // `doppel login` keeps the pin: later commands need no flag.
    let config = tempfile::tempdir().unwrap();
    engine
        .cli_trusting(
            &["login", "--user", "admin", "--tls-fingerprint", &pin],
            None,
            Some(config.path()),
            Some(&format!("{ADMIN_PASSWORD}\n")),
            false,
        )
        .ok();
    let saved = std::fs::read_to_string(config.path().join("doppel/config.json")).unwrap();
    assert!(saved.contains(&pin), "{saved}");
    let out = engine.cli_trusting(&["plugin", "list"], None, Some(config.path()), None, false);
    out.ok();

    // The certificate is kept across restarts, and its fingerprint logged at each.
    engine.restart();
    let logged = logged_fingerprints(&engine);
    assert_eq!(logged, vec![pin.clone(), pin.clone()], "{}", engine.log());
    assert_eq!(
        super::tls::list(&engine, &["--tls-fingerprint", &pin]).json(),
        serde_json::json!([])
    );
}

#[test]
fn an_operators_certificate_is_served_and_trusted_through_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // A CA, and a leaf for 127.0.0.1 signed by it.
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.pem"),
        "-days",
        "2",
        "-subj",
        "/CN=Test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p("leaf.key"),
        "-out",
        &p("leaf.csr"),
        "-subj",
        "/CN=engine",
    ]);
    std::fs::write(dir.path().join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p("leaf.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-out",
        &p("leaf.pem"),
        "-days",
        "2",
        "-extfile",
        &p("ext"),
    ]);

    // Given a certificate, `--tls auto` serves TLS even on loopback.
    let engine = Engine::start_with_ca(
        &dir.path().join("ca.pem"),
        &["--tls-cert", &p("leaf.pem"), "--tls-key", &p("leaf.key")],
    );
    // The engine made no certificate of its own; it logs the one it serves.
    assert!(!engine.data_dir.path().join("tls-key.pem").exists());
    let served = pem_fingerprint(&dir.path().join("leaf.pem")).to_string();
    assert_eq!(logged_fingerprints(&engine), vec![served]);
    let list = |extra: &[&str]| list(&engine, extra);
    assert_eq!(
        list(&["--ca-cert", &p("ca.pem")]).json(),
        serde_json::json!([])
    );
    // The leaf is for 127.0.0.1 only: a CA-checked name must match.
    let localhost = engine.url.replace("127.0.0.1", "localhost");
    let out = list(&["--ca-cert", &p("ca.pem"), "--url", &localhost]);
    assert!(out.fails(10).contains("not trusted"), "{}", out.stderr);
}

#[test]
fn plain_http_beyond_loopback_is_warned_about_and_auto_means_tls_there() {
    let plain = Engine::start_listening("0.0.0.0", false, &["--tls", "off"]);
    let log = plain.log();
    assert!(log.contains("WITHOUT TLS"), "{log}");
    plain.cli(&["plugin", "list"]).ok();

    // The default (auto) beyond loopback is TLS, and no warning.
    let auto = Engine::start_listening("0.0.0.0", true, &[]);
    assert!(!auto.log().contains("WITHOUT TLS"), "{}", auto.log());
    assert_eq!(logged_fingerprints(&auto).len(), 1, "{}", auto.log());
    auto.cli(&["plugin", "list"]).ok();

    // And on loopback, auto stays plain HTTP, quietly.
    let local = Engine::start();
    assert!(local.url.starts_with("http://"));
    assert!(!local.log().contains("WITHOUT TLS"), "{}", local.log());
    assert!(logged_fingerprints(&local).is_empty(), "{}", local.log());
}
