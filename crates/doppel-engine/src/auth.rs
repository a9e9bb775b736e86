//! Who may use the engine: API users, their passwords (Argon2id, salted,
//! as PHC strings), their tokens (random, stored only as SHA-256 digests),
//! the first `admin`, and a brake on password guessing.
//!
//! Token kinds: `api` (bearer tokens of `/api/v1`), `session` (cookie
//! sessions of the Delphix-compatible API), and the single-use `upload` and
//! `download:<plugin id>` tokens of that API.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use base64::Engine as _;
use doppel_model::{AddUser, ApiUser, Role};
use doppel_store::{RoleChange, Store, UserDeletion, UserRecord};
use sha2::{Digest, Sha256};

use crate::layout::Layout;
use crate::{Engine, EngineError};

/// Name of the administrator made at first start.
pub const ADMIN_USER: &str = "admin";
/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 8;

/// How authentication behaves.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Password of the first `admin` user; generated (and written to
    /// [`Layout::admin_password_file`]) when absent. Used only when the
    /// engine has no user yet.
    pub admin_password: Option<String>,
    /// Lifetime of `doppel login` tokens.
    pub api_token_ttl: Duration,
    /// Lifetime of a Delphix-compatible cookie session.
    pub session_ttl: Duration,
    /// Lifetime of single-use upload and download tokens.
    pub single_use_ttl: Duration,
    /// Failed logins for one user from one address that are tolerated
    /// within `failure_window`; the next attempt is refused until the
    /// oldest of them leaves the window.
    pub max_failed_logins: usize,
    /// Failed logins from one address, whatever the user names, tolerated
    /// within `failure_window`: guessing across many names is braked too.
    pub max_failed_logins_per_client: usize,
    pub failure_window: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            admin_password: None,
            api_token_ttl: Duration::from_secs(30 * 24 * 3600),
            session_ttl: Duration::from_secs(3600),
            single_use_ttl: Duration::from_secs(600),
            max_failed_logins: 5,
            max_failed_logins_per_client: 20,
            failure_window: Duration::from_secs(300),
        }
    }
}

/// What a token is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    Api,
    Session,
    Upload,
    /// Downloads the logs of this plugin (by id).
    Download(String),
}

impl TokenKind {
    fn as_stored(&self) -> String {
        match self {
            TokenKind::Api => "api".into(),
            TokenKind::Session => "session".into(),
            TokenKind::Upload => "upload".into(),
            TokenKind::Download(plugin) => format!("download:{plugin}"),
        }
    }

    fn single_use(&self) -> bool {
        matches!(self, TokenKind::Upload | TokenKind::Download(_))
    }
}

/// An authenticated user.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub user_id: i64,
    pub name: String,
    pub role: Role,
    pub created_at: String,
}

impl Principal {
    fn of(u: &UserRecord) -> Principal {
        Principal {
            user_id: u.id,
            name: u.name.clone(),
            // A role this engine does not know gives the least power.
            role: Role::parse(&u.role).unwrap_or(Role::Auditor),
            created_at: u.created_at.clone(),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    pub fn to_api(&self) -> ApiUser {
        ApiUser {
            name: self.name.clone(),
            role: self.role,
            admin: self.is_admin(),
            created_at: self.created_at.clone(),
        }
    }
}

/// A token just issued: the only time its clear text exists on the engine.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub expires_at: String,
}

pub(crate) struct Auth {
    store: Arc<Store>,
    config: AuthConfig,
    /// Recent failed logins per (user name, peer address), and per peer
    /// address under the empty user name.
    failures: Mutex<HashMap<(String, String), VecDeque<Instant>>>,
}

fn random_token() -> Result<String, EngineError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| EngineError::Internal(format!("no randomness for a token: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn digest(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn hash_password(password: &str) -> Result<String, EngineError> {
    let hash: PasswordHash = Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|e| EngineError::Internal(format!("hashing a password: {e}")))?;
    Ok(hash.to_string())
}

fn password_matches(password: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// A hash no password matches cheaply, so that an unknown user name costs
/// as much time as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let mut seed = [0u8; 24];
        let _ = getrandom::fill(&mut seed);
        hash_password(&base64::engine::general_purpose::STANDARD.encode(seed)).unwrap_or_default()
    })
}

/// User names follow the rule of every other name (see
/// `environments::check_name`), with `@` allowed for e-mail addresses.
fn check_name(name: &str) -> Result<(), EngineError> {
    if name.len() > 64 {
        return Err(EngineError::InvalidInput {
            field: "name".into(),
            reason: "a user name has at most 64 characters".into(),
        });
    }
    crate::environments::check_name_with("name", name, "@")
}

fn check_password(password: &str) -> Result<(), EngineError> {
    if password.chars().count() < MIN_PASSWORD_LEN || password.len() > 1024 {
        return Err(EngineError::InvalidInput {
            field: "password".into(),
            reason: format!("a password has {MIN_PASSWORD_LEN} to 1024 characters"),
        });
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, EngineError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EngineError::Internal(format!("password task: {e}")))
}

fn unauthorized() -> EngineError {
    EngineError::Unauthorized("the token is missing, wrong, used or expired; log in again".into())
}

impl Auth {
    /// Makes the first `admin` user when the engine has none.
    pub(crate) async fn open(
        store: Arc<Store>,
        layout: &Layout,
        config: AuthConfig,
    ) -> Result<Auth, EngineError> {
        if store.count_users()? == 0 {
            let (password, generated) = match &config.admin_password {
                Some(p) => {
                    check_password(p).map_err(|e| EngineError::InvalidInput {
                        field: "admin password".into(),
                        reason: format!(
                            "{e} (from --admin-password-file or DOPPEL_ADMIN_PASSWORD)"
                        ),
                    })?;
                    (p.clone(), false)
                }
                None => (random_token()?[..24].to_owned(), true),
            };
            let p = password.clone();
            let hash = blocking(move || hash_password(&p)).await??;
            if generated {
                let path = layout.admin_password_file();
                let _ = std::fs::remove_file(&path);
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(EngineError::io(format!("creating {}", path.display())))?;
                f.write_all(format!("{password}\n").as_bytes())
                    .and_then(|_| f.sync_all())
                    .map_err(EngineError::io(format!("writing {}", path.display())))?;
                tracing::warn!(
                    file = %path.display(),
                    "created user {ADMIN_USER:?} with the generated password {password}; it is also in the file. \
                     Log in with `doppel login --user {ADMIN_USER}`"
                );
            } else {
                tracing::info!("created user {ADMIN_USER:?} with the given password");
            }
            store.create_user(ADMIN_USER, &hash, Role::Admin.as_str())?;
        }
        Ok(Auth {
            store,
            config,
            failures: Mutex::default(),
        })
    }

    /// Refuses when this user has failed too often from this peer lately,
    /// or this peer has, whatever names it tried.
    fn check_rate(&self, user: &str, peer: &str) -> Result<(), EngineError> {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let window = self.config.failure_window;
        let keys = [
            (
                (user.to_owned(), peer.to_owned()),
                self.config.max_failed_logins,
            ),
            (
                (String::new(), peer.to_owned()),
                self.config.max_failed_logins_per_client,
            ),
        ];
        for (key, limit) in keys {
            let Some(q) = f.get_mut(&key) else { continue };
            while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
                q.pop_front();
            }
            if let Some(oldest) = q.front().filter(|_| q.len() >= limit) {
                let retry_after = window
                    .saturating_sub(now.duration_since(*oldest))
                    .as_secs()
                    .max(1);
                return Err(EngineError::RateLimited {
                    user: if key.0.is_empty() {
                        format!("any user from {peer}")
                    } else {
                        user.to_owned()
                    },
                    retry_after,
                });
            }
        }
        Ok(())
    }

    fn record_failure(&self, user: &str, peer: &str) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let window = self.config.failure_window;
        if f.len() > 10_000 {
            f.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        for key in [
            (user.to_owned(), peer.to_owned()),
            (String::new(), peer.to_owned()),
        ] {
            f.entry(key).or_default().push_back(now);
        }
    }

    fn clear_failures(&self, user: &str, peer: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(user.to_owned(), peer.to_owned()));
    }

    fn ttl(&self, kind: &TokenKind) -> Duration {
        match kind {
            TokenKind::Api => self.config.api_token_ttl,
            TokenKind::Session => self.config.session_ttl,
            TokenKind::Upload | TokenKind::Download(_) => self.config.single_use_ttl,
        }
    }
}

/// Users, logins and tokens.
impl Engine {
    /// Checks a user's password. `peer` (the client's address) keys the
    /// brake on failed logins together with the user name.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        peer: &str,
    ) -> Result<Principal, EngineError> {
        let auth = &self.auth;
        auth.check_rate(user, peer)?;
        let record = auth.store.get_user(user)?;
        let hash = record.as_ref().map(|u| u.password_hash.clone());
        let pw = password.to_owned();
        let ok = blocking(move || match hash {
            Some(h) => password_matches(&pw, &h),
            None => {
                password_matches(&pw, decoy_hash());
                false
            }
        })
        .await?;
        match record {
            Some(u) if ok => {
                auth.clear_failures(user, peer);
                Ok(Principal::of(&u))
            }
            _ => {
                auth.record_failure(user, peer);
                tracing::warn!(user, peer, "failed login");
                Err(EngineError::Unauthorized(
                    "wrong user name or password".into(),
                ))
            }
        }
    }

    /// The user of this name, as if logged in: for engine-side callers
    /// (tests, tools) that act on behalf of a known user.
    pub fn principal(&self, name: &str) -> Result<Principal, EngineError> {
        self.auth
            .store
            .get_user(name)?
            .map(|u| Principal::of(&u))
            .ok_or_else(|| EngineError::NotFound {
                kind: "user",
                id: name.to_owned(),
            })
    }

    /// A new token of `kind` for this user.
    pub fn issue_token(
        &self,
        who: &Principal,
        kind: TokenKind,
    ) -> Result<IssuedToken, EngineError> {
        let token = random_token()?;
        let ttl = self.auth.ttl(&kind).as_secs() as i64;
        let expires_at =
            self.auth
                .store
                .put_token(&digest(&token), who.user_id, &kind.as_stored(), ttl)?;
        Ok(IssuedToken { token, expires_at })
    }

    /// Whose this live token of `kind` is. Single-use tokens are not used
    /// up here: see [`Engine::redeem_token`].
    pub fn authenticate(&self, token: &str, kind: &TokenKind) -> Result<Principal, EngineError> {
        match self.auth.store.find_token(&digest(token))? {
            Some(t) if t.kind == kind.as_stored() && !t.used => Ok(Principal::of(&t.user)),
            _ => Err(unauthorized()),
        }
    }

    /// Uses up a single-use token of `kind`, which must belong to `who`.
    pub fn redeem_token(
        &self,
        token: &str,
        kind: &TokenKind,
        who: &Principal,
    ) -> Result<(), EngineError> {
        debug_assert!(kind.single_use());
        let hash = digest(token);
        match self.auth.store.find_token(&hash)? {
            Some(t) if t.kind == kind.as_stored() && t.user.id == who.user_id => {}
            _ => return Err(unauthorized()),
        }
        if self.auth.store.consume_token(&hash, &kind.as_stored())? {
            Ok(())
        } else {
            Err(unauthorized())
        }
    }

    /// The plugin a live, unused download token is for.
    pub fn download_token_plugin(&self, token: &str) -> Result<String, EngineError> {
        match self.auth.store.find_token(&digest(token))? {
            Some(t) if !t.used => t
                .kind
                .strip_prefix("download:")
                .map(str::to_owned)
                .ok_or_else(unauthorized),
            _ => Err(unauthorized()),
        }
    }

    /// Ends a token (logout); unknown tokens are ignored.
    pub fn revoke_token(&self, token: &str) -> Result<(), EngineError> {
        self.auth.store.delete_token(&digest(token))?;
        Ok(())
    }

    fn require_admin(who: &Principal) -> Result<(), EngineError> {
        crate::access::require_role(who, Role::Admin, "manage users")
    }

    pub async fn add_user(&self, who: &Principal, req: AddUser) -> Result<ApiUser, EngineError> {
        Self::require_admin(who)?;
        check_name(&req.name)?;
        check_password(&req.password)?;
        let role = match (req.role, req.admin) {
            (Some(r), true) if r != Role::Admin => {
                return Err(EngineError::InvalidInput {
                    field: "admin".into(),
                    reason: format!("contradicts role {r}; give only the role"),
                })
            }
            (_, true) => Role::Admin,
            (Some(r), false) => r,
            (None, false) => Role::Operator,
        };
        let pw = req.password;
        let hash = blocking(move || hash_password(&pw)).await??;
        match self
            .auth
            .store
            .create_user(&req.name, &hash, role.as_str())?
        {
            Some(u) => {
                tracing::info!(user = %u.name, role = %u.role, by = %who.name, "user added");
                Ok(Principal::of(&u).to_api())
            }
            None => Err(EngineError::Conflict(format!("user {:?} exists", req.name))),
        }
    }

    pub fn list_users(&self, who: &Principal) -> Result<Vec<ApiUser>, EngineError> {
        Self::require_admin(who)?;
        Ok(self
            .auth
            .store
            .list_users()?
            .iter()
            .map(|u| Principal::of(u).to_api())
            .collect())
    }

    /// Gives a user another role; their tokens carry it from the next request.
    pub fn set_user_role(
        &self,
        who: &Principal,
        name: &str,
        role: Role,
    ) -> Result<ApiUser, EngineError> {
        Self::require_admin(who)?;
        match self.auth.store.set_user_role(name, role.as_str())? {
            RoleChange::Changed(u) => {
                tracing::info!(user = %u.name, role = %u.role, by = %who.name, "role changed");
                Ok(Principal::of(&u).to_api())
            }
            RoleChange::NotFound => Err(EngineError::NotFound {
                kind: "user",
                id: name.to_owned(),
            }),
            RoleChange::LastAdmin => Err(EngineError::Conflict(format!(
                "{name:?} is the last administrator; make another user an administrator first"
            ))),
            RoleChange::HoldsRights(n) => Err(EngineError::Conflict(format!(
                "{name:?} holds {n} right{} on objects and auditors hold none; revoke {} first",
                if n == 1 { "" } else { "s" },
                if n == 1 { "it" } else { "them" },
            ))),
        }
    }

    /// Deletes a user and ends all their tokens.
    pub fn delete_user(&self, who: &Principal, name: &str) -> Result<(), EngineError> {
        Self::require_admin(who)?;
        match self.auth.store.delete_user(name)? {
            UserDeletion::Deleted => {
                tracing::info!(user = %name, by = %who.name, "user deleted");
                Ok(())
            }
            UserDeletion::NotFound => Err(EngineError::NotFound {
                kind: "user",
                id: name.to_owned(),
            }),
            UserDeletion::LastAdmin => Err(EngineError::Conflict(format!(
                "{name:?} is the last administrator; add another administrator first"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_salted_and_verified() {
        let a = hash_password("correct horse").unwrap();
        let b = hash_password("correct horse").unwrap();
        assert_ne!(a, b, "salted");
        assert!(a.starts_with("$argon2id$"));
        assert!(password_matches("correct horse", &a));
        assert!(!password_matches("wrong horse", &a));
    }

    #[tokio::test]
    async fn the_first_start_makes_admin_with_a_generated_password_in_a_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let store = Arc::new(Store::open_in_memory().unwrap());
        Auth::open(store.clone(), &layout, AuthConfig::default())
            .await
            .unwrap();
        let file = layout.admin_password_file();
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let password = std::fs::read_to_string(&file).unwrap().trim().to_owned();
        let admin = store.get_user(ADMIN_USER).unwrap().unwrap();
        assert!(admin.is_admin && password_matches(&password, &admin.password_hash));
        assert!(!admin.password_hash.contains(&password));
        // Generated once: a second start changes nothing.
        Auth::open(
            store.clone(),
            &layout,
            AuthConfig {
                admin_password: Some("other-password".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(
            store.get_user(ADMIN_USER).unwrap().unwrap().password_hash,
            admin.password_hash
        );
        // A given password that is too short is refused, naming where it came from.
        let err = Auth::open(
            Arc::new(Store::open_in_memory().unwrap()),
            &layout,
            AuthConfig {
                admin_password: Some("short".into()),
                ..Default::default()
            },
        )
        .await
        .err()
        .unwrap();
        assert!(err.to_string().contains("--admin-password-file"), "{err}");
    }

    #[test]
    fn tokens_are_random_and_stored_as_digests() {
        let t = random_token().unwrap();
        assert_eq!(t.len(), 43);
        assert_ne!(t, random_token().unwrap());
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
