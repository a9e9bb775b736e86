//! The API's TLS certificate: the operator's (`--tls-cert`, `--tls-key`),
//! or a self-signed one the engine makes once, at the first start that
//! needs it, and keeps in the data directory. Either way its SHA-256
//! fingerprint goes to the log at every start, so clients can pin it.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest;

/// A certificate ready to serve.
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    /// `SHA256:<hex>` of the leaf certificate, as clients pin it.
    pub fingerprint: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS certificate {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("TLS key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("TLS certificate {cert} and key {key} do not go together: {reason}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("making a self-signed TLS certificate: {0}")]
    Generate(String),
}

/// `SHA256:` and the hex SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = sha2::Sha256::digest(der);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("SHA256:{hex}")
}

/// Loads a PEM certificate chain (leaf first) and its PEM private key.
pub fn load(cert: &Path, key: &Path) -> Result<ServerTls, TlsError> {
    let cert_err = |reason: String| TlsError::Cert {
        path: cert.to_owned(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(cert_err("holds no PEM certificate".into()));
    };
    let fingerprint = fingerprint(leaf);
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    if let Ok(meta) = std::fs::metadata(key) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(key = %key.display(), mode = format!("{mode:o}"), "the TLS private key is readable by other users; make it 0600");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Generate(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| TlsError::Pair {
            cert: cert.to_owned(),
            key: key.to_owned(),
            reason: e.to_string(),
        })?;
    // The server speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ServerTls {
        config: Arc::new(config),
        fingerprint,
    })
}

/// Loads the self-signed certificate at `cert`/`key`, making it first when
/// it is missing (or only half there after a crash). Says whether it was made.
pub fn load_or_generate(
    cert: &Path,
    key: &Path,
    names: &[String],
) -> Result<(ServerTls, bool), TlsError> {
    let made = !(cert.exists() && key.exists());
    if made {
        generate(cert, key, names)?;
    }
    Ok((load(cert, key)?, made))
}

/// The names a self-signed certificate is made for: the listen address
/// (when it is one address), the loopback names and the machine's hostname.
pub fn self_signed_names(listen: SocketAddr) -> Vec<String> {
    let mut names = Vec::new();
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    names.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            names.push(h.to_owned());
        }
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

fn generate(cert: &Path, key: &Path, names: &[String]) -> Result<(), TlsError> {
    let gen = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(gen)?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!(
            "Doppel engine {}",
            names.last().map(String::as_str).unwrap_or("")
        ),
    );
    let pair = rcgen::KeyPair::generate().map_err(gen)?;
    let made = params.self_signed(&pair).map_err(gen)?;
    // The key lands first: a certificate on disk always has its key.
    write_private(key, pair.serialize_pem().as_bytes()).map_err(|e| TlsError::Key {
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    write_private(cert, made.pem().as_bytes()).map_err(|e| TlsError::Cert {
        path: cert.to_owned(),
        reason: e.to_string(),
    })
}

/// Writes through a temporary file made 0600, then renames, so the file is
/// never seen half written or readable by others.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_is_kept_and_its_key_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let (first, made) = load_or_generate(&cert, &key, &names).unwrap();
        assert!(made);
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, made) = load_or_generate(&cert, &key, &names).unwrap();
        assert!(!made);
        assert_eq!(first.fingerprint, again.fingerprint);
        assert!(first.fingerprint.starts_with("SHA256:") && first.fingerprint.len() == 71);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let names = vec!["localhost".to_owned()];
        load_or_generate(&p("c1"), &p("k1"), &names).unwrap();
        load_or_generate(&p("c2"), &p("k2"), &names).unwrap();
        let err = load(&p("c1"), &p("k2")).err().expect("refused");
        assert!(matches!(err, TlsError::Pair { .. }), "{err}");
    }
}
