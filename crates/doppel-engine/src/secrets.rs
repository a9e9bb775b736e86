//! Secrets at rest: environment passwords and keys are stored encrypted
//! with a key that lives only in the data directory (mode 0600), so a copy
//! of the metadata database alone reveals nothing.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

use crate::EngineError;

/// Version tag of the stored form: `v1:` + base64(nonce ‖ ciphertext).
const PREFIX: &str = "v1:";

pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl SecretBox {
    /// Loads the key file, creating it (0600) on first use.
    pub fn open(path: &Path) -> Result<SecretBox, EngineError> {
        let key = match std::fs::read(path) {
            Ok(bytes) => {
                let mode = std::fs::metadata(path)
                    .map_err(EngineError::io(format!("reading {}", path.display())))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(EngineError::Internal(format!(
                        "{} is readable by others (mode {:o}); make it 0600",
                        path.display(),
                        mode & 0o777
                    )));
                }
                if bytes.len() != 32 {
                    return Err(EngineError::Internal(format!(
                        "{} is not a 32-byte key",
                        path.display()
                    )));
                }
                *Key::from_slice(&bytes)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = XChaCha20Poly1305::generate_key(&mut OsRng);
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(EngineError::io(format!("creating {}", path.display())))?;
                f.write_all(&key)
                    .and_then(|_| f.sync_all())
                    .map_err(EngineError::io(format!("writing {}", path.display())))?;
                key
            }
            Err(e) => return Err(EngineError::io(format!("reading {}", path.display()))(e)),
        };
        Ok(SecretBox {
            cipher: XChaCha20Poly1305::new(&key),
        })
    }

    pub fn seal(&self, plaintext: &str) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = self
            .cipher
            .encrypt(&nonce, plaintext.as_bytes())
            .expect("encryption of in-memory data cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        )
    }

    pub fn open_sealed(&self, sealed: &str) -> Result<String, EngineError> {
        let corrupt = || {
            EngineError::Internal(
                "a stored secret cannot be decrypted (wrong key file, or corrupt)".into(),
            )
        };
        let raw = sealed.strip_prefix(PREFIX).ok_or_else(corrupt)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(raw)
            .map_err(|_| corrupt())?;
        if bytes.len() < 24 {
            return Err(corrupt());
        }
        let (nonce, ct) = bytes.split_at(24);
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), ct)
            .map_err(|_| corrupt())?;
        String::from_utf8(plain).map_err(|_| corrupt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_round_trip_and_differ_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let b = SecretBox::open(&path).unwrap();
        let (s1, s2) = (b.seal("hunter2"), b.seal("hunter2"));
        assert_ne!(s1, s2, "fresh nonce per secret");
        assert!(!s1.contains("hunter2"));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // The same key file opens what it sealed; another key does not.
        assert_eq!(
            SecretBox::open(&path).unwrap().open_sealed(&s1).unwrap(),
            "hunter2"
        );
        let other = SecretBox::open(&dir.path().join("other.key")).unwrap();
        assert!(other.open_sealed(&s1).is_err());
        assert!(b.open_sealed("v1:!!").is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            SecretBox::open(&path).is_err(),
            "a world-readable key is refused"
        );
    }
}
