//! Mounting engine storage onto environments.
//!
//! A dataset (a pool volume, or a subdirectory of one) appears on a host at
//! a path of the host's choosing: the engine opens an SSH exec channel that
//! runs `sshfs -o passive` on the host, and serves that SFTP session itself,
//! confined to the dataset's directory (`doppel-sftp`). The host needs sshfs
//! and FUSE, and no way back to the engine. The mount lives as long as the
//! channel, which a mount keeper holds (`keeper`) so that it outlives the
//! engine: every mount is recorded, so unmounting is exact, and at start
//! the engine adopts the keepers still serving and re-establishes the rest.

use doppel_model::{Mount, MountRequest};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use doppel_remote::Connection;
use doppel_store::{EnvironmentRecord, MountRecord};

use tokio::task::JoinHandle;

use crate::environments::sh_quote;
use crate::hosts::{ENVIRONMENT_PREFIX, USER_PREFIX};
use crate::{Engine, EngineError};

/// The wait before a lost mount is tried again after a failure, doubling
/// with each failure in a row up to the maximum.
const MOUNT_RETRY_FIRST: Duration = Duration::from_secs(2);
const MOUNT_RETRY_MAX: Duration = Duration::from_secs(60);

/// How long a new mount may take to appear on the host.
const MOUNT_READY: Duration = Duration::from_secs(20);

fn model(m: &MountRecord, active: bool) -> Mount {
    Mount {
        active,
        id: m.id,
        environment: format!("{ENVIRONMENT_PREFIX}{}", m.environment_id),
        user: format!("{USER_PREFIX}{}", m.user_id),
        volume: m.volume.clone(),
        subdirectory: m.subdirectory.clone(),
        mount_path: m.mount_path.clone(),
        kind: m.kind.clone(),
        read_only: m.read_only,
        uid: m.uid,
        gid: m.gid,
    }
}

/// A mount's key: its environment and mount path.
type MountKey = (i64, String);

/// The SFTP sessions serving live mounts, by mount path per environment,
/// and one lock per mount path, held while a mount is made, taken down or
/// re-established, so the watcher never races a job over the same mount.
#[derive(Default)]
pub(crate) struct Sessions {
    live: std::sync::Mutex<HashMap<MountKey, JoinHandle<doppel_remote::DuplexExit>>>,
    locks: std::sync::Mutex<HashMap<MountKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Re-establishing attempts that failed in a row, per mount, and when
    /// to try next: the first failure is logged loudly, the rest quietly,
    /// and the wait doubles up to a minute while the host stays away.
    failures: std::sync::Mutex<HashMap<MountKey, (u32, tokio::time::Instant)>>,
}

impl Sessions {
    fn lock_of(&self, key: &MountKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Forget locks nobody holds or waits for, so the map stays small.
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(key.clone()).or_default().clone()
    }

    /// Whether the session serving `key` has ended (or none runs).
    fn ended(&self, key: &MountKey) -> bool {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .is_none_or(|t| t.is_finished())
    }

    fn insert(&self, key: (i64, String), task: JoinHandle<doppel_remote::DuplexExit>) {
        if let Some(old) = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, task)
        {
            old.abort();
        }
    }

    fn take(&self, key: &(i64, String)) -> Option<JoinHandle<doppel_remote::DuplexExit>> {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key)
    }

    /// Ends every session: the hosts' sshfs processes see EOF and exit.
    pub(crate) fn abort_all(&self) {
        for (_, t) in self.live.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            t.abort();
        }
    }
}

fn check_mount_path(path: &str) -> Result<(), EngineError> {
    let bad = |reason: &str| EngineError::InvalidInput {
        field: "mount_path".into(),
        reason: reason.into(),
    };
    if !path.starts_with('/') || path == "/" {
        return Err(bad("must be an absolute path other than /"));
    }
    if path.contains(['\0', '\n']) || path.split('/').any(|c| c == "..") {
        return Err(bad("must not contain NUL, newlines or '..'"));
    }
    Ok(())
}

fn check_subdirectory(sub: &str) -> Result<(), EngineError> {
    if sub.starts_with('/') || sub.contains('\0') || sub.split('/').any(|c| c == "..") {
        return Err(EngineError::InvalidInput {
            field: "subdirectory".into(),
            reason: "must be a relative path inside the dataset".into(),
        });
    }
    Ok(())
}

async fn run(conn: &Connection, script: &str) -> Result<doppel_remote::ExecOutput, EngineError> {
    Ok(conn.run_bash(script, &Default::default(), false).await?)
}

impl Engine {
    /// The socket of the keeper serving a remote mount: one per
    /// environment and mount path (what identifies a mount).
    fn keeper_socket(&self, m: &MountRecord) -> PathBuf {
        // FNV-1a: stable across versions, and short enough for a socket path.
        let hash = m.mount_path.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        self.layout
            .mounts_dir()
            .join(format!("{}-{hash:016x}.sock", m.environment_id))
    }

    /// Keepers no mount record names any more (the mount was removed while
    /// its keeper was unreachable, or a V2P copy was cut short) are stopped.
    async fn stop_unknown_keepers(&self, mounts: &[MountRecord]) {
        let known: std::collections::HashSet<PathBuf> = mounts
            .iter()
            .filter(|m| m.kind != "bind")
            .map(|m| self.keeper_socket(m))
            .collect();
        let Ok(dir) = std::fs::read_dir(self.layout.mounts_dir()) else {
            return;
        };
        for entry in dir.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "sock") && !known.contains(&path) {
                tracing::warn!(socket = %path.display(), "stopping a mount keeper no mount record names");
                crate::keeper::stop(&path).await;
            }
        }
    }

    /// The directory a mount serves.
    fn mount_root(&self, volume: &str, subdirectory: &str) -> Result<PathBuf, EngineError> {
        let id = doppel_storage::VolumeId::new(volume)?;
        let path = self.pool.volume_path(&id);
        if !path.is_dir() {
            return Err(EngineError::NotFound {
                kind: "dataset",
                id: volume.to_owned(),
            });
        }
        Ok(if subdirectory.is_empty() {
            path
        } else {
            path.join(subdirectory)
        })
    }

    /// Mounts a dataset on a host and records it.
    pub async fn mount_volume(&self, req: MountRequest) -> Result<Mount, EngineError> {
        check_mount_path(&req.mount_path)?;
        check_subdirectory(&req.subdirectory)?;
        let env = self.find_environment(&req.environment)?;
        let user = self.env_user(&env, req.user.as_deref())?;
        let root = self.mount_root(&req.volume, &req.subdirectory)?;
        if let Some(m) = self.store.find_mount(env.id, &req.mount_path)? {
            return Err(EngineError::Conflict(format!(
                "{} on {} is in use by mount {} of dataset {}",
                req.mount_path, env.name, m.id, m.volume
            )));
        }
        std::fs::create_dir_all(&root)
            .map_err(EngineError::io(format!("creating {}", root.display())))?;
        let conn = self.hosts.connect(&env, &user).await?;
        let login = conn.login().await?;
        let (uid, gid) = req.owner.unwrap_or((login.uid, login.gid));
        if !req.read_only {
            std::os::unix::fs::chown(&root, Some(uid), Some(gid)).map_err(|e| {
                EngineError::Internal(format!(
                    "cannot give {} to {uid}:{gid}: {e}",
                    root.display()
                ))
            })?;
        }
        let record = MountRecord {
            id: 0,
            environment_id: env.id,
            user_id: user.id,
            volume: req.volume.clone(),
            subdirectory: req.subdirectory.clone(),
            mount_path: req.mount_path.clone(),
            kind: if shares_mount_namespace(login)? {
                "bind"
            } else {
                "sshfs"
            }
            .into(),
            read_only: req.read_only,
            uid: Some(uid),
            gid: Some(gid),
            created_at: crate::now(),
        };
        let lock = self
            .mount_sessions
            .lock_of(&(env.id, record.mount_path.clone()));
        let _held = lock.lock().await;
        self.start_mount(&env, &conn, &record, root).await?;
        match self.store.insert_mount(&record) {
            Ok(id) => {
                tracing::info!(mount = id, environment = %env.name, path = %req.mount_path, volume = %req.volume, "dataset mounted");
                Ok(model(&MountRecord { id, ..record }, true))
            }
            Err(e) => {
                let _ = self.stop_mount(&env, &conn, &record).await;
                Err(e.into())
            }
        }
    }

    async fn start_mount(
        &self,
        env: &EnvironmentRecord,
        conn: &Connection,
        m: &MountRecord,
        root: PathBuf,
    ) -> Result<(), EngineError> {
        match m.kind.as_str() {
            "bind" => self.start_bind(env, conn, m, root).await,
            _ => self.start_sshfs(env, conn, m, root).await,
        }
    }

    async fn stop_mount(
        &self,
        env: &EnvironmentRecord,
        conn: &Connection,
        m: &MountRecord,
    ) -> Result<(), EngineError> {
        match m.kind.as_str() {
            "bind" => self.stop_bind(env, conn, m).await,
            _ => self.stop_sshfs(env, conn, m).await,
        }
    }

    /// The host sees the engine's own mounts: the engine bind-mounts the
    /// dataset at the path itself (the host's user makes the directory, so
    /// it is a place that user may use).
    async fn start_bind(
        &self,
        env: &EnvironmentRecord,
        conn: &Connection,
        m: &MountRecord,
        root: PathBuf,
    ) -> Result<(), EngineError> {
        let path = sh_quote(&m.mount_path);
        let prep = run(conn, &format!("mkdir -p -- {path} && test -d {path}")).await?;
        if prep.exit_code != 0 {
            return Err(EngineError::InvalidInput {
                field: "mount_path".into(),
                reason: format!(
                    "cannot mount on {} at {}: {}",
                    env.name,
                    m.mount_path,
                    prep.stderr_str().trim()
                ),
            });
        }
        guard_here(&m.mount_path).await;
        let options = if m.read_only { "bind,ro" } else { "bind" };
        let out = tokio::process::Command::new("mount")
            .args(["-o", options, "--"])
            .arg(&root)
            .arg(&m.mount_path)
            .output()
            .await
            .map_err(EngineError::io("running mount"))?;
        if !out.status.success() {
            return Err(EngineError::Internal(format!(
                "cannot bind-mount {} at {} on {}: {}",
                root.display(),
                m.mount_path,
                env.name,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    async fn stop_bind(
        &self,
        env: &EnvironmentRecord,
        conn: &Connection,
        m: &MountRecord,
    ) -> Result<(), EngineError> {
        if is_mounted_here(&m.mount_path) {
            let out = tokio::process::Command::new("umount")
                .arg("--")
                .arg(&m.mount_path)
                .output()
                .await
                .map_err(EngineError::io("running umount"))?;
            if !out.status.success() {
                let why = String::from_utf8_lossy(&out.stderr).into_owned();
                if why.contains("busy") {
                    return Err(busy(env, m, &holders_here(&m.mount_path)));
                }
                return Err(cannot_unmount(env, m, &why));
            }
        }
        release_here(&m.mount_path).await;
        let _ = run(conn, &release_mount_point(&m.mount_path)).await;
        Ok(())
    }

    /// Runs sshfs on the host and serves it; returns once the mount is there.
    async fn start_sshfs(
        &self,
        env: &EnvironmentRecord,
        conn: &Connection,
        m: &MountRecord,
        root: PathBuf,
    ) -> Result<(), EngineError> {
        let path = sh_quote(&m.mount_path);
        let mut opts = String::from("passive");
        if m.read_only {
            opts.push_str(",ro");
        }
        let command = sshfs_command(&m.mount_path, &opts);
        let owner = m.uid.zip(m.gid);
        let label = format!("{}:{}", env.name, m.mount_path);
        let socket = self.keeper_socket(m);
        let task = match &self.mount_keeper {
            Some(program) => {
                let user = self.store.get_environment_user(m.user_id)?.ok_or_else(|| {
                    EngineError::Internal(format!("mount {} names a missing user", m.id))
                })?;
                let mut spec = crate::keeper::KeeperSpec {
                    host: env.host.clone(),
                    port: env.port,
                    user: user.name.clone(),
                    password: None,
                    private_key: None,
                    passphrase: None,
                    host_key: env.host_key.clone(),
                    root,
                    mount_path: m.mount_path.clone(),
                    command,
                    read_only: m.read_only,
                    owner,
                    label,
                    keep_free: self.pool.reserve(),
                };
                spec.set_credentials(&self.hosts.credentials_of(&user)?);
                let keeper_error = |why: String| {
                    EngineError::Internal(format!(
                        "cannot serve {} on {}: {why}",
                        m.mount_path, env.name
                    ))
                };
                crate::keeper::spawn(program, &socket, &spec)
                    .await
                    .map_err(keeper_error)?;
                crate::keeper::watch(&socket).await.map_err(keeper_error)?.1
            }
            None => {
                let options = crate::keeper::serve_options(m.read_only, owner, self.pool.reserve());
                crate::keeper::serve(conn, &command, root, options, label).await?
            }
        };
        let key = (env.id, m.mount_path.clone());
        let deadline = tokio::time::Instant::now() + MOUNT_READY;
        // One exec waits on the host for up to a second, so the mount is seen
        // as soon as it is there rather than one SSH round trip per poll;
        // in between, whether sshfs gave up is checked.
        let wait = format!(
            "{AWAIT_MOUNT_SH}; i=0; until mountpoint -q -- {path}; do i=$((i+1)); [ $i -ge 40 ] && exit 1; $await_mount >/dev/null 2>&1; done"
        );
        loop {
            let check = run(conn, &wait).await?;
            if check.exit_code == 0 {
                self.mount_sessions.insert(key, task);
                return Ok(());
            }
            if task.is_finished() {
                let exit = task
                    .await
                    .map_err(|e| EngineError::Internal(format!("mount session: {e}")))?;
                if matches!(exit.exit_code, Some(SSHFS_MISSING | NO_MOUNT_POINT)) {
                    return Err(EngineError::InvalidInput {
                        field: "mount_path".into(),
                        reason: format!(
                            "cannot mount on {} at {}: {}",
                            env.name,
                            m.mount_path,
                            exit.stderr.trim()
                        ),
                    });
                }
                return Err(EngineError::Internal(format!(
                    "sshfs could not mount {} on {} as {} (exit {:?}): {}",
                    m.mount_path,
                    env.name,
                    conn.target().user,
                    exit.exit_code,
                    exit.stderr.trim()
                )));
            }
            if tokio::time::Instant::now() > deadline {
                task.abort();
                crate::keeper::stop(&socket).await;
                return Err(EngineError::Internal(format!(
                    "sshfs did not mount {} on {} within {}s",
                    m.mount_path,
                    env.name,
                    MOUNT_READY.as_secs()
                )));
            }
        }
    }

    /// Unmounts on the host. A busy mount is refused, naming what holds it.
    async fn stop_sshfs(
        &self,
        env: &EnvironmentRecord,
        conn: &Connection,
        m: &MountRecord,
    ) -> Result<(), EngineError> {
        let path = sh_quote(&m.mount_path);
        // The mount point is given back in the same exec: one round trip
        // less per unmount.
        let out = run(
            conn,
            &format!(
                "if mountpoint -q -- {path}; then fusermount3 -u -- {path} 2>&1 || fusermount -u -- {path} 2>&1 || exit; fi; {}",
                release_mount_point(&m.mount_path)
            ),
        )
        .await?;
        if out.exit_code != 0 {
            let why = out.stdout_str();
            if why.contains("busy") {
                // Processes of this user whose working directory or open files are under the mount.
                let holders = run(
                    conn,
                    &format!(
                        "m={path}; for p in /proc/[0-9]*; do for f in \"$p\"/cwd \"$p\"/root \"$p\"/fd/*; do \
                         t=$(readlink \"$f\" 2>/dev/null) || continue; case \"$t\" in \"$m\"|\"$m\"/*) \
                         echo \"pid ${{p#/proc/}} ($(cat \"$p\"/comm 2>/dev/null))\"; break;; esac; done; done"
                    ),
                )
                .await?
                .stdout_str();
                let holders: Vec<String> = holders.lines().map(str::to_owned).collect();
                return Err(busy(env, m, &holders));
            }
            return Err(cannot_unmount(env, m, &why));
        }
        if let Some(task) = self.mount_sessions.take(&(env.id, m.mount_path.clone())) {
            // sshfs exits once unmounted, which ends the session.
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                tracing::warn!(path = %m.mount_path, "sftp session did not end after unmount");
            }
        }
        Ok(())
    }

    /// Unmounts a recorded mount and forgets it.
    pub async fn unmount(&self, id: i64) -> Result<Mount, EngineError> {
        let m = self
            .store
            .get_mount(id)?
            .ok_or_else(|| EngineError::NotFound {
                kind: "mount",
                id: id.to_string(),
            })?;
        let lock = self
            .mount_sessions
            .lock_of(&(m.environment_id, m.mount_path.clone()));
        let _held = lock.lock().await;
        let (env, conn) = self.mount_host(&m).await?;
        self.stop_mount(&env, &conn, &m).await?;
        self.store.delete_mount(id)?;
        tracing::info!(mount = id, environment = %env.name, path = %m.mount_path, "dataset unmounted");
        Ok(model(&m, false))
    }

    pub fn list_mounts(&self) -> Result<Vec<Mount>, EngineError> {
        Ok(self
            .store
            .list_mounts(None)?
            .iter()
            .map(|m| model(m, !self.is_lost(m)))
            .collect())
    }

    /// Whether a recorded mount is not in place: a remote mount whose
    /// session ended, or a bind mount that is gone.
    fn is_lost(&self, m: &MountRecord) -> bool {
        if m.kind == "bind" {
            !is_mounted_here(&m.mount_path)
        } else {
            self.mount_sessions
                .ended(&(m.environment_id, m.mount_path.clone()))
        }
    }

    /// Re-establishes every recorded mount (at start-up: the sessions that
    /// served them died with the previous engine), except those of V2P
    /// copies cut short, which are removed. Returns the failures.
    pub async fn restore_mounts(&self) -> Vec<(i64, EngineError)> {
        let mut failed = Vec::new();
        let (temporary, mounts): (Vec<_>, Vec<_>) = match self.store.list_mounts(None) {
            Ok(m) => m
                .into_iter()
                .partition(|m| crate::exports::is_temp_clone(&m.volume)),
            Err(e) => return vec![(0, e.into())],
        };
        self.remove_temp_clone_mounts(temporary).await;
        self.stop_unknown_keepers(&mounts).await;
        for m in mounts {
            let lock = self
                .mount_sessions
                .lock_of(&(m.environment_id, m.mount_path.clone()));
            let _held = lock.lock().await;
            if let Err(e) = self.restore_mount(&m).await {
                tracing::warn!(mount = m.id, path = %m.mount_path, error = %e, "cannot re-establish mount");
                failed.push((m.id, e));
            }
        }
        failed
    }

    /// Re-establishes every recorded mount that is not in place: a remote
    /// one whose SFTP session ended (sshfs killed, host rebooted, connection
    /// dropped) or never started (host away at start-up), or a bind mount
    /// someone took down. Mounts a job is working on are left to it.
    /// Returns how many came back.
    pub(crate) async fn heal_mounts(self: &Arc<Self>) -> usize {
        let Ok(mounts) = self.store.list_mounts(None) else {
            return 0;
        };
        // Each lost mount on its own, so a host that is away (each attempt
        // waits for its connection timeout) does not hold up the others.
        let mut attempts = tokio::task::JoinSet::new();
        for m in mounts.into_iter().filter(|m| self.is_lost(m)) {
            let engine = self.clone();
            attempts.spawn(async move { engine.heal_mount(m).await });
        }
        attempts
            .join_all()
            .await
            .into_iter()
            .filter(|healed| *healed)
            .count()
    }

    /// Re-establishes one lost mount; true if it did.
    async fn heal_mount(&self, m: MountRecord) -> bool {
        let key = (m.environment_id, m.mount_path.clone());
        let lock = self.mount_sessions.lock_of(&key);
        let Ok(_held) = lock.try_lock() else {
            return false;
        };
        // Under the lock: the record may have gone, or the mount come back.
        if !matches!(self.store.get_mount(m.id), Ok(Some(_))) || !self.is_lost(&m) {
            return false;
        }
        let not_yet = |(_, next): &(u32, tokio::time::Instant)| tokio::time::Instant::now() < *next;
        if self
            .mount_sessions
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .is_some_and(not_yet)
        {
            return false;
        }
        let attempt = self.restore_mount(&m).await;
        let mut failures = self
            .mount_sessions
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match attempt {
            Ok(()) => {
                failures.remove(&key);
                true
            }
            Err(e) => {
                let (n, next) = failures
                    .entry(key)
                    .or_insert((0, tokio::time::Instant::now()));
                *n += 1;
                let wait = MOUNT_RETRY_FIRST * 2u32.saturating_pow(*n - 1);
                *next = tokio::time::Instant::now() + wait.min(MOUNT_RETRY_MAX);
                if *n == 1 {
                    tracing::warn!(mount = m.id, path = %m.mount_path, error = %e, "a mount was lost and cannot be re-established yet; retrying");
                } else {
                    tracing::debug!(mount = m.id, path = %m.mount_path, error = %e, attempts = *n, "mount still not re-established");
                }
                false
            }
        }
    }

    /// The environment a recorded mount is on, and a connection as its user.
    async fn mount_host(
        &self,
        m: &MountRecord,
    ) -> Result<(EnvironmentRecord, Connection), EngineError> {
        let missing =
            |what: &str| EngineError::Internal(format!("mount {} names a missing {what}", m.id));
        let env = self
            .store
            .get_environment(m.environment_id)?
            .ok_or_else(|| missing("environment"))?;
        let user = self
            .store
            .get_environment_user(m.user_id)?
            .ok_or_else(|| missing("user"))?;
        let conn = self.hosts.connect(&env, &user).await?;
        Ok((env, conn))
    }

    /// Takes down a mount whose server may be gone (lazily, so a dead FUSE
    /// connection cannot block it) and forgets it.
    pub(crate) async fn drop_mount(&self, m: &MountRecord) -> Result<(), EngineError> {
        let (env, conn) = self.mount_host(m).await?;
        let path = sh_quote(&m.mount_path);
        if m.kind == "bind" {
            if is_mounted_here(&m.mount_path) {
                let out = tokio::process::Command::new("umount")
                    .args(["-l", "--", &m.mount_path])
                    .output()
                    .await
                    .map_err(EngineError::io("running umount"))?;
                if !out.status.success() {
                    return Err(cannot_unmount(
                        &env,
                        m,
                        &String::from_utf8_lossy(&out.stderr),
                    ));
                }
            }
            release_here(&m.mount_path).await;
        } else {
            run(&conn, &format!("fusermount3 -uz -- {path} 2>/dev/null || fusermount -uz -- {path} 2>/dev/null; true")).await?;
        }
        let _ = run(&conn, &release_mount_point(&m.mount_path)).await;
        self.store.delete_mount(m.id)?;
        Ok(())
    }

    async fn restore_mount(&self, m: &MountRecord) -> Result<(), EngineError> {
        let (env, conn) = self.mount_host(m).await?;
        if m.kind == "bind" {
            // Bind mounts outlive the engine; make one only where it is gone.
            if !is_mounted_here(&m.mount_path) {
                self.start_bind(&env, &conn, m, self.mount_root(&m.volume, &m.subdirectory)?)
                    .await?;
                tracing::info!(mount = m.id, environment = %env.name, path = %m.mount_path, "bind mount re-established");
            }
            return Ok(());
        }
        // A keeper that outlived the previous engine still serves it: adopt it.
        if self.mount_keeper.is_some() {
            let socket = self.keeper_socket(m);
            if let Ok((hello, task)) = crate::keeper::watch(&socket).await {
                let root = self.mount_root(&m.volume, &m.subdirectory)?;
                if hello.mount_path == m.mount_path && hello.root == root && !task.is_finished() {
                    self.mount_sessions
                        .insert((env.id, m.mount_path.clone()), task);
                    tracing::info!(mount = m.id, environment = %env.name, path = %m.mount_path, keeper = hello.pid, "mount still served by its keeper");
                    return Ok(());
                }
                task.abort();
                crate::keeper::stop(&socket).await;
            }
        }
        // A mount whose server died answers "transport endpoint is not connected": drop it first.
        let path = sh_quote(&m.mount_path);
        run(&conn, &format!("if ! ls -- {path} >/dev/null 2>&1; then fusermount3 -uz -- {path} 2>/dev/null || fusermount -uz -- {path} 2>/dev/null; fi; true")).await?;
        if run(&conn, &format!("mountpoint -q -- {path}"))
            .await?
            .exit_code
            == 0
            && self
                .mount_sessions
                .take(&(env.id, m.mount_path.clone()))
                .is_none()
        {
            // Mounted, but not served by this engine: someone else's mount is in the way.
            return Err(EngineError::Conflict(format!(
                "{} on {} is mounted by something else",
                m.mount_path, env.name
            )));
        }
        let root = self.mount_root(&m.volume, &m.subdirectory)?;
        self.start_sshfs(&env, &conn, m, root).await?;
        tracing::info!(mount = m.id, environment = %env.name, path = %m.mount_path, "mount re-established");
        Ok(())
    }
}

/// A busy mount's refusal, naming what holds it when that is known.
fn busy(env: &EnvironmentRecord, m: &MountRecord, holders: &[String]) -> EngineError {
    let held = if holders.is_empty() {
        String::new()
    } else {
        format!(", held by {}", holders.join(", "))
    };
    EngineError::Conflict(format!(
        "{} on {} is busy{held}; stop those processes and unmount again",
        m.mount_path, env.name
    ))
}

fn cannot_unmount(env: &EnvironmentRecord, m: &MountRecord, why: &str) -> EngineError {
    EngineError::Internal(format!(
        "cannot unmount {} on {}: {}",
        m.mount_path,
        env.name,
        why.trim()
    ))
}

/// Whether the host's SSH session runs in the engine's own mount namespace
/// (the engine's machine, not merely the same machine id).
fn shares_mount_namespace(login: &doppel_remote::Login) -> Result<bool, EngineError> {
    let remote = &login.mount_namespace;
    let local = std::fs::read_link("/proc/self/ns/mnt")
        .map_err(EngineError::io("reading the engine's mount namespace"))?;
    Ok(remote.trim() == local.to_string_lossy())
}

/// Whether `path` is a mount point in the engine's namespace.
fn is_mounted_here(path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| {
            m.lines()
                .any(|l| l.split(' ').nth(4).map(unescape_mountinfo).as_deref() == Some(path))
        })
        .unwrap_or(false)
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Processes whose working directory, root or open files are under `path`.
fn holders_here(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let name = p.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let dir = p.path();
        let mut links = vec![dir.join("cwd"), dir.join("root")];
        if let Ok(fds) = std::fs::read_dir(dir.join("fd")) {
            links.extend(fds.flatten().map(|f| f.path()));
        }
        let holds = links
            .iter()
            .filter_map(|l| std::fs::read_link(l).ok())
            .any(|t| t.starts_with(path));
        if holds {
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            out.push(format!("pid {name} ({})", comm.trim()));
        }
    }
    out
}

/// Shell that defines `chattr_priv`: chattr as root itself or through
/// passwordless sudo, silent when neither works. It is called only when a
/// plain chmod was refused (the directory is immutable) or to set the flag
/// once the mount is up, so a host with sudo pays for no sudo on the way
/// to a fresh mount or after an unmount.
const CHATTR_PRIV_SH: &str = "chattr_priv() { if [ \"$(id -u)\" = 0 ]; then chattr \"$@\"; \
     else sudo -n chattr \"$@\"; fi; } 2>/dev/null";

/// Shell that sets `$await_mount` to a command returning when the host's
/// mount table changes or after 25 ms, whichever is first: findmnt's poll
/// wakes on the mount itself instead of forking a probe every few
/// milliseconds, which on a busy host slowed the very sshfs being waited
/// for. The timeout covers a mount that lands between a caller's check and
/// findmnt's first read of the table; a host without findmnt sleeps.
const AWAIT_MOUNT_SH: &str = "if command -v findmnt >/dev/null; then \
     await_mount='findmnt --poll=mount --first-only --timeout=25'; else await_mount='sleep 0.025'; fi";

/// Exit codes of [`sshfs_command`] that mean the host cannot take the
/// mount (bad input, not an engine fault).
const SSHFS_MISSING: i32 = 3;
const NO_MOUNT_POINT: i32 = 4;

/// The command that mounts `path` with sshfs in passive mode (speaking
/// SFTP on its stdin and stdout), keeping the directory under the mount
/// unwritable so that nothing written while the mount is down can land on
/// the host's own disk and be hidden once it is back.
///
/// The directory is mode 0555 and, where this user is root or has
/// passwordless sudo, immutable (which stops root too). Root mounts over
/// it as it is. Anyone else must have write access to mount (fusermount
/// checks it), so it is opened for the moment sshfs takes to mount, and
/// closed again from underneath through a helper whose working directory
/// is the covered directory; anything written in that moment is moved into
/// the mount. The helper also closes it when sshfs ends without mounting,
/// and ends with sshfs (so that it never holds the session open after an
/// unmount it did not see coming).
///
/// The same command first checks that sshfs is there and makes the
/// directory (exiting [`SSHFS_MISSING`] or [`NO_MOUNT_POINT`]): one round
/// trip to the host less per mount than a separate preparation.
pub(crate) fn sshfs_command(mount_path: &str, options: &str) -> String {
    let p = sh_quote(mount_path);
    format!(
        "p={p}; command -v sshfs >/dev/null || {{ echo 'sshfs is not installed' >&2; exit {SSHFS_MISSING}; }}\n\
         mkdir -p -- \"$p\" && cd -- \"$p\" || exit {NO_MOUNT_POINT}; {CHATTR_PRIV_SH}; {AWAIT_MOUNT_SH}\n\
         if [ \"$(id -u)\" = 0 ]; then chmod a-w . 2>/dev/null; chattr +i . 2>/dev/null; cd /; exec sshfs -f -o {options} :/ \"$p\"; fi\n\
         was=$(ls -A . | head -c1)\n\
         chmod u+w . 2>/dev/null || {{ chattr_priv -i .; chmod u+w .; }} || exit {NO_MOUNT_POINT}\n\
         ( exec </dev/null >&2; i=0\n\
           until mountpoint -q -- \"$p\" || ! kill -0 $$ 2>/dev/null || [ $i -ge 800 ]; do i=$((i+1)); $await_mount >/dev/null 2>&1; done\n\
           if mountpoint -q -- \"$p\" && [ -z \"$was\" ] && [ -n \"$(ls -A . | head -c1)\" ]; then\n\
             find . -mindepth 1 -maxdepth 1 -exec mv -n -t \"$p\" -- {{}} + && echo \"doppel: moved what was written under $p while it was not mounted into the mount\"; fi\n\
           chmod a-w .; chattr_priv +i .; true ) &\n\
         cd /; exec sshfs -f -o {options} :/ \"$p\""
    )
}

/// After the last unmount: gives the mount point back to its owner
/// (writable, not immutable) and removes it if it is empty.
pub(crate) fn release_mount_point(mount_path: &str) -> String {
    let p = sh_quote(mount_path);
    format!(
        "p={p}; mountpoint -q -- \"$p\" && exit 0; {CHATTR_PRIV_SH}; \
         chmod u+w -- \"$p\" 2>/dev/null || {{ chattr_priv -i -- \"$p\"; chmod u+w -- \"$p\" 2>/dev/null; }}; \
         rmdir -- \"$p\" 2>/dev/null; true"
    )
}

/// Before a bind mount (the engine is root on its own machine): the
/// directory under it is made unwritable and immutable, so that while the
/// mount is down writes fail, even root's.
async fn guard_here(path: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & !0o222;
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
            tracing::warn!(path, error = %e, "cannot make the mount point read-only");
        }
    }
    chattr(path, "+i").await;
}

/// After a bind mount's last unmount: the directory is the owner's again.
async fn release_here(path: &str) {
    use std::os::unix::fs::PermissionsExt;
    if is_mounted_here(path) {
        return;
    }
    chattr(path, "-i").await;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() | 0o200;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
    }
}

/// Sets or clears the immutable flag; a file system without it (or an
/// engine without the right) keeps the mode's protection only.
async fn chattr(path: &str, flag: &str) {
    match tokio::process::Command::new("chattr")
        .args([flag, "--", path])
        .output()
        .await
    {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            tracing::debug!(path, flag, stderr = %String::from_utf8_lossy(&o.stderr).trim(), "chattr failed")
        }
        Err(e) => tracing::debug!(path, flag, error = %e, "cannot run chattr"),
    }
}
