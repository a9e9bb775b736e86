//! Reusing warm connections.

use std::collections::HashMap;

use tokio::sync::Mutex;

use crate::connection::{ConnectOptions, Connection, Credentials, HostKeyPolicy};
use crate::error::Result;

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    host: String,
    port: u16,
    user: String,
    credentials: Credentials,
    policy: HostKeyPolicy,
}

/// Keeps one open [`Connection`] per (host, port, user, credentials, host key
/// policy) and hands out clones of it; a closed connection is replaced on the
/// next request. Commands on a shared connection run on separate channels,
/// concurrently.
pub struct Pool {
    options: ConnectOptions,
    connections: Mutex<HashMap<Key, Connection>>,
}

impl Default for Pool {
    fn default() -> Self {
        Pool::new(ConnectOptions::default())
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// An empty pool whose connections use `options`.
    pub fn new(options: ConnectOptions) -> Pool {
        Pool {
            options,
            connections: Mutex::new(HashMap::new()),
        }
    }

    /// A warm connection, opening one if needed. Connecting happens under
    /// the pool's lock, so concurrent callers for one key share one login.
    pub async fn get(
        &self,
        host: &str,
        port: u16,
        user: &str,
        credentials: &Credentials,
        policy: &HostKeyPolicy,
    ) -> Result<Connection> {
        let key = Key {
            host: host.to_string(),
            port,
            user: user.to_string(),
            credentials: credentials.clone(),
            policy: policy.clone(),
        };
        let mut map = self.connections.lock().await;
        if let Some(conn) = map.get(&key) {
            if !conn.is_closed() {
                return Ok(conn.clone());
            }
            map.remove(&key);
        }
        let conn =
            Connection::connect_with(host, port, user, credentials, policy, &self.options).await?;
        // Under first contact, later calls must pin the key seen now.
        let pinned = HostKeyPolicy::Pinned(conn.host_key().clone());
        map.insert(key.clone(), conn.clone());
        if key.policy == HostKeyPolicy::AcceptFirst {
            map.insert(
                Key {
                    policy: pinned,
                    ..key
                },
                conn.clone(),
            );
        }
        Ok(conn)
    }

    /// Closes and forgets every connection to `host:port`.
    pub async fn forget_host(&self, host: &str, port: u16) {
        let mut map = self.connections.lock().await;
        let gone: Vec<Key> = map
            .keys()
            .filter(|k| k.host == host && k.port == port)
            .cloned()
            .collect();
        for k in gone {
            if let Some(conn) = map.remove(&k) {
                conn.close().await;
            }
        }
    }

    /// Number of pooled entries (for tests and status output).
    pub async fn len(&self) -> usize {
        self.connections.lock().await.len()
    }

    /// Whether the pool is empty.
    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }
}
