//! Whom the client trusts for `https://` URLs: the public CAs, plus a CA
//! file (`--ca-cert`), or exactly one certificate by its SHA-256
//! fingerprint (`--tls-fingerprint`), as SSH pins a host key. A pinned
//! certificate is trusted whatever its names, issuer and dates: the pin is
//! the whole check, and the handshake's signature still proves that the
//! server holds its key.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::Digest;

/// What the client trusts beyond the public CAs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trust {
    /// PEM file of CA certificates (or the engine's self-signed certificate).
    pub ca_cert: Option<PathBuf>,
    /// The one certificate to accept.
    pub fingerprint: Option<Fingerprint>,
}

/// A certificate's SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of(der: &[u8]) -> Fingerprint {
        Fingerprint(sha2::Sha256::digest(der).into())
    }

    /// `SHA256:<hex>` as the engine logs it, or hex alone, with or without
    /// colons (as `openssl x509 -fingerprint -sha256` prints it).
    pub fn parse(s: &str) -> Result<Fingerprint, String> {
        let t = s.trim();
        let t = match t.split_once(':') {
            Some((alg, rest)) if alg.eq_ignore_ascii_case("sha256") => rest,
            _ => t,
        };
        let t = t.rsplit('=').next().unwrap_or(t);
        let hex: String = t.chars().filter(|c| *c != ':').collect();
        let bad = || {
            format!("{s:?} is not a SHA-256 certificate fingerprint (SHA256: and 64 hex digits, as the engine logs it)")
        };
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Fingerprint(out))
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SHA256:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Checks the server's certificate and remembers why it refused one, so the
/// error the user sees says which certificate and what to do.
#[derive(Debug)]
pub(crate) struct Verifier {
    webpki: Arc<WebPkiServerVerifier>,
    pin: Option<Fingerprint>,
    provider: Arc<CryptoProvider>,
    refusal: Mutex<Option<Refusal>>,
}

#[derive(Debug, Clone)]
pub(crate) enum Refusal {
    /// The certificate is not the pinned one.
    NotPinned {
        expected: Fingerprint,
        actual: Fingerprint,
    },
    /// No trusted CA vouches for it (or its name or dates are wrong).
    Untrusted { actual: Fingerprint, reason: String },
}

impl Refusal {
    pub(crate) fn message(&self, url: &str) -> String {
        match self {
            Refusal::NotPinned { expected, actual } => format!(
                "the engine at {url} presented the TLS certificate {actual}, not the pinned {expected}. \
                 If the engine's certificate was replaced on purpose, pass the fingerprint its log shows \
                 (--tls-fingerprint or DOPPEL_TLS_FINGERPRINT); otherwise something between you and the \
                 engine is impersonating it"
            ),
            Refusal::Untrusted { actual, reason } => format!(
                "the engine at {url} presented a TLS certificate that is not trusted ({reason}); its \
                 fingerprint is {actual}. Pass the engine's CA or certificate with --ca-cert FILE \
                 (DOPPEL_CA_CERT), or, after checking this fingerprint against the one in the engine's \
                 log, pin it with --tls-fingerprint {actual} (DOPPEL_TLS_FINGERPRINT)"
            ),
        }
    }
}

/// A trust setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("--ca-cert {path}: {reason}")]
    CaCert { path: PathBuf, reason: String },
}

impl Verifier {
    pub(crate) fn new(trust: &Trust) -> Result<Verifier, TrustError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = &trust.ca_cert {
            for cert in read_certs(path)? {
                roots.add(cert).map_err(|e| TrustError::CaCert {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            }
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| TrustError::CaCert {
                path: trust.ca_cert.clone().unwrap_or_default(),
                reason: e.to_string(),
            })?;
        Ok(Verifier {
            webpki,
            pin: trust.fingerprint,
            provider,
            refusal: Mutex::new(None),
        })
    }

    /// Why the last certificate was refused, if one was.
    pub(crate) fn take_refusal(&self) -> Option<Refusal> {
        self.refusal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn refuse(&self, r: Refusal) {
        *self.refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let err = |reason: String| TrustError::CaCert {
        path: path.to_owned(),
        reason,
    };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("holds no PEM certificate".into()));
    }
    Ok(certs)
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let actual = Fingerprint::of(end_entity);
        if let Some(expected) = self.pin {
            if actual == expected {
                return Ok(ServerCertVerified::assertion());
            }
            self.refuse(Refusal::NotPinned { expected, actual });
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .inspect_err(|e| {
                self.refuse(Refusal::Untrusted {
                    actual,
                    reason: e.to_string(),
                })
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The rustls configuration of a client that trusts through `verifier`.
pub(crate) fn client_config(verifier: Arc<Verifier>) -> rustls::ClientConfig {
    let provider = verifier.provider.clone();
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_as_the_engine_and_openssl_print_them() {
        let fp = Fingerprint::of(b"certificate");
        let logged = fp.to_string();
        assert_eq!(Fingerprint::parse(&logged), Ok(fp));
        let hex = &logged["SHA256:".len()..];
        assert_eq!(Fingerprint::parse(hex), Ok(fp));
        let openssl: Vec<String> = (0..32)
            .map(|i| hex[2 * i..2 * i + 2].to_uppercase())
            .collect();
        let openssl = format!("sha256 Fingerprint={}", openssl.join(":"));
        assert_eq!(Fingerprint::parse(&openssl), Ok(fp));
        assert!(Fingerprint::parse("SHA256:abc").is_err());
        assert!(Fingerprint::parse(&format!("SHA256:{}", "zz".repeat(32))).is_err());
    }
}
