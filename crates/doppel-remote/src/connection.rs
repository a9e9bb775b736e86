//! Connecting: TCP, banner check, handshake with host key pinning, auth.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use tokio::net::TcpStream;

use crate::error::{AuthMethod, Error, Result, Target};

/// A host's public key as pinned by the engine.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HostKey {
    fingerprint: String,
    openssh: String,
}

impl HostKey {
    /// Parses a key in OpenSSH format (`ssh-ed25519 AAAA... [comment]`).
    pub fn from_openssh(line: &str) -> Result<HostKey> {
        let key = PublicKey::from_openssh(line.trim()).map_err(|e| Error::InvalidHostKey {
            reason: e.to_string(),
        })?;
        Ok(HostKey::from_key(&key))
    }

    fn from_key(key: &PublicKey) -> HostKey {
        let mut key = key.clone();
        key.set_comment("");
        HostKey {
            fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
            openssh: key.to_openssh().unwrap_or_default().trim().to_string(),
        }
    }

    /// `SHA256:<base64>`, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The key in OpenSSH format (without comment): what to store.
    pub fn openssh(&self) -> &str {
        &self.openssh
    }
}

impl fmt::Debug for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostKey({})", self.fingerprint)
    }
}

/// Which host keys a connection accepts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostKeyPolicy {
    /// First contact: accept any key; read it back with
    /// [`Connection::host_key`] and store it.
    AcceptFirst,
    /// Only this key.
    Pinned(HostKey),
}

/// How to log in.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Credentials {
    /// A password.
    Password(String),
    /// A private key (OpenSSH or PEM text), with its passphrase if encrypted.
    KeyPair {
        /// The private key text.
        private_key_pem: String,
        /// Its passphrase.
        passphrase: Option<String>,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Password(_) => f.write_str("Password(<redacted>)"),
            Credentials::KeyPair { passphrase, .. } => write!(
                f,
                "KeyPair {{ private_key_pem: <redacted>, passphrase: {} }}",
                if passphrase.is_some() {
                    "<redacted>"
                } else {
                    "None"
                }
            ),
        }
    }
}

/// Timeouts and keepalive of a connection.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// TCP connect.
    pub connect_timeout: Duration,
    /// From TCP connected to the server's `SSH-2.0-` line.
    pub banner_timeout: Duration,
    /// Key exchange and authentication.
    pub handshake_timeout: Duration,
    /// Keepalive interval on idle connections (None: off).
    pub keepalive_interval: Option<Duration>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            connect_timeout: Duration::from_secs(10),
            banner_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(30),
            keepalive_interval: Some(Duration::from_secs(30)),
        }
    }
}

/// What the handshake saw of the server key.
#[derive(Default)]
struct KeyCheck {
    offered: Option<HostKey>,
    mismatch: bool,
}

pub(crate) struct ClientHandler {
    policy: HostKeyPolicy,
    seen: Arc<Mutex<KeyCheck>>,
}

impl russh::client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            // Certificates are not pinned keys; refuse them.
            return Ok(false);
        };
        let offered = HostKey::from_key(key);
        let ok = match &self.policy {
            HostKeyPolicy::AcceptFirst => true,
            HostKeyPolicy::Pinned(pinned) => pinned.fingerprint == offered.fingerprint,
        };
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.offered = Some(offered);
        seen.mismatch = !ok;
        Ok(ok)
    }
}

pub(crate) type Handle = russh::client::Handle<ClientHandler>;

/// An authenticated SSH connection. Cheap to clone: clones share the
/// connection, and each command runs on its own channel.
#[derive(Clone)]
pub struct Connection {
    pub(crate) target: Arc<Target>,
    pub(crate) handle: Arc<Handle>,
    host_key: HostKey,
    login: Arc<tokio::sync::OnceCell<Login>>,
}

/// What a login session is on its host, read once per connection: it cannot
/// change while the session lasts, and asking costs a round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// `id -u` of the login.
    pub uid: u32,
    /// `id -g` of the login.
    pub gid: u32,
    /// `readlink /proc/self/ns/mnt` on the host (`mnt:[4026531841]`), or
    /// empty where the host has no such thing.
    pub mount_namespace: String,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("target", &self.target.to_string())
            .field("host_key", &self.host_key)
            .finish()
    }
}

impl Connection {
    /// Connects and authenticates with default [`ConnectOptions`].
    pub async fn connect(
        host: &str,
        port: u16,
        user: &str,
        credentials: &Credentials,
        policy: &HostKeyPolicy,
    ) -> Result<Connection> {
        Self::connect_with(
            host,
            port,
            user,
            credentials,
            policy,
            &ConnectOptions::default(),
        )
        .await
    }

    /// Connects and authenticates.
    pub async fn connect_with(
        host: &str,
        port: u16,
        user: &str,
        credentials: &Credentials,
        policy: &HostKeyPolicy,
        options: &ConnectOptions,
    ) -> Result<Connection> {
        let target = Target {
            host: host.to_string(),
            port,
            user: user.to_string(),
        };
        let stream =
            match tokio::time::timeout(options.connect_timeout, TcpStream::connect((host, port)))
                .await
            {
                Err(_) => {
                    return Err(Error::ConnectTimeout {
                        target,
                        after: options.connect_timeout,
                    })
                }
                Ok(Err(source)) => return Err(Error::Unreachable { target, source }),
                Ok(Ok(s)) => s,
            };
        let _ = stream.set_nodelay(true);
        wait_for_banner(&stream, &target, options.banner_timeout).await?;

        let config = russh::client::Config {
            keepalive_interval: options.keepalive_interval,
            nodelay: true,
            ..Default::default()
        };
        let seen = Arc::new(Mutex::new(KeyCheck::default()));
        let handler = ClientHandler {
            policy: policy.clone(),
            seen: seen.clone(),
        };
        let step = "key exchange";
        let connected = tokio::time::timeout(
            options.handshake_timeout,
            russh::client::connect_stream(Arc::new(config), stream, handler),
        )
        .await;
        let mut handle = match connected {
            Err(_) => {
                return Err(Error::Timeout {
                    target,
                    step,
                    after: options.handshake_timeout,
                })
            }
            Ok(Ok(h)) => h,
            Ok(Err(source)) => {
                let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                if let (true, Some(offered), HostKeyPolicy::Pinned(pinned)) =
                    (seen.mismatch, &seen.offered, policy)
                {
                    return Err(Error::HostKeyMismatch {
                        target,
                        expected: pinned.fingerprint.clone(),
                        actual: offered.fingerprint.clone(),
                    });
                }
                return Err(Error::Ssh {
                    target,
                    step,
                    source: Box::new(source),
                });
            }
        };
        let host_key = seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .offered
            .clone()
            .ok_or_else(|| Error::Exec {
                target: target.clone(),
                command: String::new(),
                reason: "the server presented no host key".into(),
            })?;

        let auth = tokio::time::timeout(
            options.handshake_timeout,
            authenticate(&mut handle, &target, credentials),
        );
        match auth.await {
            Err(_) => {
                return Err(Error::Timeout {
                    target,
                    step: "authentication",
                    after: options.handshake_timeout,
                })
            }
            Ok(r) => r?,
        }
        tracing::debug!(target = %target, host_key = %host_key.fingerprint, "ssh connected");
        Ok(Connection {
            target: Arc::new(target),
            handle: Arc::new(handle),
            host_key,
            login: Arc::default(),
        })
    }

    /// The uid, gid and mount namespace of this login on the host, asked on
    /// first use and remembered for the connection's life.
    pub async fn login(&self) -> Result<&Login> {
        self.login
            .get_or_try_init(|| async {
                let script = "printf '%s %s %s' \"$(id -u)\" \"$(id -g)\" \"$(readlink /proc/self/ns/mnt 2>/dev/null)\"";
                let out = self.run_bash(script, &Default::default(), false).await?;
                let text = out.stdout_str();
                let mut it = text.split_whitespace();
                let mut id = || it.next().and_then(|x| x.parse::<u32>().ok());
                match (id(), id()) {
                    (Some(uid), Some(gid)) => Ok(Login {
                        uid,
                        gid,
                        mount_namespace: it.next().unwrap_or_default().to_owned(),
                    }),
                    _ => Err(crate::Error::Exec {
                        target: (*self.target).clone(),
                        command: script.to_owned(),
                        reason: format!("cannot read the uid and gid of this login: {text:?}"),
                    }),
                }
            })
            .await
    }

    /// The key the host presented (equal to the pinned one if there was one).
    pub fn host_key(&self) -> &HostKey {
        &self.host_key
    }

    /// `user@host:port`.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Whether the connection is gone (the server closed it, or it failed).
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Closes the connection politely (other clones stop working too).
    pub async fn close(&self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "bye", "en")
            .await;
    }
}

async fn authenticate(
    handle: &mut Handle,
    target: &Target,
    credentials: &Credentials,
) -> Result<()> {
    let ssh_err = |source| Error::Ssh {
        target: target.clone(),
        step: "authentication",
        source: Box::new(source),
    };
    let (result, method) = match credentials {
        Credentials::Password(password) => (
            handle
                .authenticate_password(target.user.clone(), password.clone())
                .await
                .map_err(ssh_err)?,
            AuthMethod::Password,
        ),
        Credentials::KeyPair {
            private_key_pem,
            passphrase,
        } => {
            let key = russh::keys::decode_secret_key(private_key_pem, passphrase.as_deref())
                .map_err(|e| Error::InvalidKey {
                    target: target.clone(),
                    reason: e.to_string(),
                })?;
            let hash = if key.algorithm().is_rsa() {
                handle
                    .best_supported_rsa_hash()
                    .await
                    .map_err(ssh_err)?
                    .flatten()
            } else {
                None
            };
            let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
            (
                handle
                    .authenticate_publickey(target.user.clone(), key)
                    .await
                    .map_err(ssh_err)?,
                AuthMethod::PublicKey,
            )
        }
    };
    if result.success() {
        Ok(())
    } else {
        Err(Error::AuthFailed {
            target: target.clone(),
            method,
        })
    }
}

/// Waits until the server's identification line is readable, without
/// consuming it (the SSH library reads it). In some VMs a TCP connect
/// succeeds to any address, so this is the real reachability check.
async fn wait_for_banner(stream: &TcpStream, target: &Target, after: Duration) -> Result<()> {
    let check = async {
        let mut buf = [0u8; 64];
        loop {
            let n = stream
                .peek(&mut buf)
                .await
                .map_err(|source| Error::Unreachable {
                    target: target.clone(),
                    source,
                })?;
            if n == 0 {
                return Err(Error::NotSsh {
                    target: target.clone(),
                    first_line: String::new(),
                });
            }
            let seen = &buf[..n];
            let prefix = b"SSH-";
            if seen.len() >= prefix.len() || seen.contains(&b'\n') {
                // RFC 4253 allows other lines before the identification
                // line; sshd never sends any, so anything else is not SSH.
                if seen.starts_with(prefix) {
                    return Ok(());
                }
                return Err(Error::NotSsh {
                    target: target.clone(),
                    first_line: String::from_utf8_lossy(seen).into_owned(),
                });
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    match tokio::time::timeout(after, check).await {
        Err(_) => Err(Error::BannerTimeout {
            target: target.clone(),
            after,
        }),
        Ok(r) => r,
    }
}
