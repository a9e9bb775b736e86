//! `doppel serve`: starts the engine with its embedded defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use doppel_engine::{Deadlines, Engine, EngineConfig};

#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  DOPPEL_PYTHON=.venv/worker/bin/python doppel serve --data-dir /var/lib/doppel --listen 127.0.0.1:7878"
)]
pub struct ServeArgs {
    /// Where metadata, plugins and the storage pool live.
    #[arg(long, env = "DOPPEL_DATA_DIR", default_value = "/var/lib/doppel")]
    data_dir: PathBuf,
    /// Address of the HTTP API.
    #[arg(long, env = "DOPPEL_LISTEN", default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
    /// CPython 3.11 with protobuf>=6.31.1,<7 and six==1.17.0, for plugin workers.
    #[arg(long, env = "DOPPEL_PYTHON", default_value = "python3.11")]
    python: PathBuf,
    /// CPython 2.7, for PYTHON27 plugins (dvp 0.3 to 3.x); scripts/setup.sh
    /// installs one as .venv/python27/bin/python, the default when present
    /// in the working directory or beside this binary's checkout.
    #[arg(long, env = "DOPPEL_PYTHON27")]
    python27: Option<PathBuf>,
    /// Seconds a quick plugin operation (mount specification, status, size) may take.
    #[arg(long, env = "DOPPEL_DEADLINE_SHORT", default_value_t = 120.0)]
    deadline_short: f64,
    /// Seconds an ordinary plugin operation (discovery, configure, start...) may take.
    #[arg(long, env = "DOPPEL_DEADLINE_NORMAL", default_value_t = 1800.0)]
    deadline_normal: f64,
    /// Seconds a data-moving plugin operation (pre/post snapshot, V2P) may take.
    #[arg(long, env = "DOPPEL_DEADLINE_LONG", default_value_t = 86400.0)]
    deadline_long: f64,
    /// Plugin workers (CPython processes) one plugin version may run at once;
    /// more calls of that plugin wait for a free one.
    #[arg(long, env = "DOPPEL_PLUGIN_WORKERS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    plugin_workers: u16,
    /// Seconds an extra plugin worker may stay idle before it is stopped;
    /// the most recently used worker of each plugin version stays.
    #[arg(long, env = "DOPPEL_PLUGIN_WORKER_IDLE", default_value_t = 300.0)]
    plugin_worker_idle: f64,
    /// Size of the embedded pool file (sparse), created on first start when the
    /// data directory is not on btrfs.
    #[arg(long, env = "DOPPEL_POOL_SIZE", default_value = "20GiB", value_parser = parse_bytes)]
    pool_size: u64,
    /// Free space the pool keeps: writes that would eat into it are refused.
    #[arg(long, env = "DOPPEL_POOL_RESERVE", default_value = "1GiB", value_parser = parse_bytes)]
    pool_reserve: u64,
    /// Pool usage (percent of its size not free) past which `pool status`
    /// warns that the pool is filling up.
    #[arg(long, env = "DOPPEL_POOL_WARN_PERCENT", default_value_t = 78.0)]
    pool_warn_percent: f64,
    /// Pool usage (percent) past which new syncs, provisions and snapshots
    /// are refused; running jobs go on.
    #[arg(long, env = "DOPPEL_POOL_REFUSE_PERCENT", default_value_t = 85.0)]
    pool_refuse_percent: f64,
    /// Tries per webhook delivery before it is recorded failed.
    #[arg(long, env = "DOPPEL_WEBHOOK_TRIES", default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=20))]
    webhook_tries: u32,
    /// Seconds before a webhook delivery's second try; each later wait doubles.
    #[arg(long, env = "DOPPEL_WEBHOOK_FIRST_RETRY", default_value_t = 2.0)]
    webhook_first_retry: f64,
    /// Seconds one webhook try may take before it counts as failed.
    #[arg(long, env = "DOPPEL_WEBHOOK_TIMEOUT", default_value_t = 10.0)]
    webhook_timeout: f64,
    /// Force a storage driver (btrfs, reflink or copy) instead of the best available.
    #[arg(long, env = "DOPPEL_POOL_DRIVER", value_parser = parse_driver)]
    pool_driver: Option<doppel_engine::DriverKind>,
    /// File holding the password of the `admin` user made at first start
    /// (DOPPEL_ADMIN_PASSWORD may hold it instead). Without either, one is
    /// generated, logged once and written to <data-dir>/admin-password (0600).
    #[arg(long, env = "DOPPEL_ADMIN_PASSWORD_FILE")]
    admin_password_file: Option<PathBuf>,
    /// Seconds a Delphix-compatible cookie session lasts.
    #[arg(
        long,
        env = "DOPPEL_SESSION_TTL",
        default_value_t = 3600.0,
        hide = true
    )]
    session_ttl: f64,
    /// Seconds a single-use upload or download token lasts.
    #[arg(
        long,
        env = "DOPPEL_SINGLE_USE_TOKEN_TTL",
        default_value_t = 600.0,
        hide = true
    )]
    single_use_token_ttl: f64,
    #[command(flatten)]
    transport: crate::transport::TransportArgs,
    /// Log format: text or json.
    #[arg(long, env = "DOPPEL_LOG_FORMAT", default_value = "text")]
    log_format: String,
    #[command(flatten)]
    sandbox: SandboxArgs,
    /// Seconds before a VDB's expiry that a warning is recorded (an
    /// `expiry_warning` run of the scheduler).
    #[arg(long, env = "DOPPEL_VDB_EXPIRY_WARNING", default_value_t = 86_400.0)]
    vdb_expiry_warning: f64,
    /// For tests only: the scheduler's clock stands still at this RFC 3339
    /// time until an administrator sets it (`POST /api/v1/test-clock`,
    /// which runs one scheduling pass), and no pass runs by itself. Hidden,
    /// with no environment variable (a stray one cannot turn it on), and
    /// refused unless `--listen` is a loopback address.
    #[arg(long, hide = true, value_name = "RFC3339")]
    test_clock: Option<String>,
}

fn parse_bytes(s: &str) -> Result<u64, String> {
    parse_size::parse_size(s).map_err(|e| format!("{s:?} is not a size like 20GiB ({e})"))
}

fn parse_driver(s: &str) -> Result<doppel_engine::DriverKind, String> {
    use doppel_engine::DriverKind;
    match s {
        "btrfs" => Ok(DriverKind::Btrfs),
        "reflink" => Ok(DriverKind::Reflink),
        "copy" => Ok(DriverKind::Copy),
        _ => Err(format!(
            "{s:?} is not a storage driver: use btrfs, reflink or copy"
        )),
    }
}

fn secs(name: &str, v: f64) -> Result<Duration, String> {
    if v.is_finite() && v > 0.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!(
            "--{name} must be a positive number of seconds, not {v}"
        ))
    }
}

pub fn run(args: ServeArgs) -> ExitCode {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("DOPPEL_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if args.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    let deadlines = (|| {
        Ok::<_, String>(Deadlines {
            start: Duration::from_secs(60),
            short: secs("deadline-short", args.deadline_short)?,
            normal: secs("deadline-normal", args.deadline_normal)?,
            long: secs("deadline-long", args.deadline_long)?,
        })
    })();
    let expiry_warning = match secs("vdb-expiry-warning", args.vdb_expiry_warning) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let plugin_worker_idle = match secs("plugin-worker-idle", args.plugin_worker_idle) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let webhooks = (|| {
        Ok::<_, String>(doppel_engine::webhooks::DeliveryConfig {
            tries: args.webhook_tries,
            first_retry: secs("webhook-first-retry", args.webhook_first_retry)?,
            timeout: secs("webhook-timeout", args.webhook_timeout)?,
            ..Default::default()
        })
    })();
    let webhooks = match webhooks {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let deadlines = match deadlines {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let auth = match auth_config(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let capacity = doppel_engine::capacity::Capacity {
        warn_percent: args.pool_warn_percent,
        refuse_percent: args.pool_refuse_percent,
    };
    if let Err(e) = capacity.validate() {
        eprintln!("error: --{e}");
        return ExitCode::from(2);
    }
    let test_clock = match &args.test_clock {
        None => None,
        Some(_) if !args.listen.ip().is_loopback() => {
            eprintln!("error: --test-clock: only on a loopback --listen address (it is for tests)");
            return ExitCode::from(2);
        }
        Some(t) => match chrono::DateTime::parse_from_rfc3339(t) {
            Ok(t) => Some(t.with_timezone(&chrono::Utc)),
            Err(e) => {
                eprintln!("error: --test-clock: {t:?} is not an RFC 3339 time ({e})");
                return ExitCode::from(2);
            }
        },
    };
    if let Err(e) = args.transport.check() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let pool = doppel_engine::PoolOptions {
        size: args.pool_size,
        reserve: args.pool_reserve,
        driver: args.pool_driver,
        ..Default::default()
    };
    let config = EngineConfig {
        data_dir: args.data_dir,
        pool,
        python: args.python,
        python27: args.python27.or_else(default_python27),
        deadlines,
        plugin_workers: args.plugin_workers.into(),
        plugin_worker_idle,
        plugin_sandbox: args.sandbox.config(),
        auth,
        // Remote mounts are served by this binary's `mount-keeper`, so they outlive the engine.
        mount_keeper: std::env::current_exe().ok(),
        capacity,
        webhooks,
    };
    match runtime.block_on(serve(
        config,
        args.listen,
        args.transport,
        test_clock,
        expiry_warning,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The first admin's password (file, else environment) and token lifetimes.
fn auth_config(args: &ServeArgs) -> Result<doppel_engine::auth::AuthConfig, String> {
    let admin_password = match &args.admin_password_file {
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| format!("--admin-password-file {}: {e}", f.display()))?;
            Some(text.trim_end_matches(['\n', '\r']).to_owned())
        }
        None => std::env::var("DOPPEL_ADMIN_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty()),
    };
    Ok(doppel_engine::auth::AuthConfig {
        admin_password,
        session_ttl: secs("session-ttl", args.session_ttl)?,
        single_use_ttl: secs("single-use-token-ttl", args.single_use_token_ttl)?,
        ..Default::default()
    })
}

async fn serve(
    config: EngineConfig,
    listen: SocketAddr,
    transport: crate::transport::TransportArgs,
    test_clock: Option<chrono::DateTime<chrono::Utc>>,
    expiry_warning: Duration,
) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let engine = Engine::open(config).await?;
    engine.set_expiry_warning(expiry_warning);
    match test_clock {
        Some(t) => {
            tracing::warn!(now = %t, "TEST CLOCK: schedules run only when an administrator sets the time; never use this in production");
            engine.use_test_clock(t);
        }
        None => engine.start_scheduler(),
    }
    let (listeners, url) = transport.listeners(listen, engine.layout()).await?;
    tracing::info!(url = %url, data_dir = %data_dir.display(), "doppel engine ready");
    doppel_api::serve_listeners(listeners, engine.clone(), shutdown_signal()).await?;
    tracing::info!("stopping plugin workers");
    engine.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutdown requested");
}

/// How plugin workers are confined (ARCHITECTURE.md, plugin host).
#[derive(clap::Args)]
struct SandboxArgs {
    /// Confine each plugin worker (own uid, mount, PID and network
    /// namespaces, limits; needs bubblewrap). `off` runs plugin code
    /// unconfined as the engine's user: only to diagnose the sandbox.
    #[arg(long, env = "DOPPEL_PLUGIN_SANDBOX", default_value = "on", value_parser = ["on", "off"])]
    plugin_sandbox: String,
    /// Memory one plugin worker may use, with everything it starts.
    #[arg(long, env = "DOPPEL_PLUGIN_MEMORY", default_value = "2GiB", value_parser = parse_bytes)]
    plugin_memory: u64,
    /// Processes and threads one plugin worker may run.
    #[arg(long, env = "DOPPEL_PLUGIN_MAX_PROCESSES", default_value_t = 256, value_parser = clap::value_parser!(u64).range(16..))]
    plugin_max_processes: u64,
}

impl SandboxArgs {
    fn config(&self) -> doppel_engine::SandboxConfig {
        doppel_engine::SandboxConfig {
            enabled: self.plugin_sandbox == "on",
            memory: self.plugin_memory,
            max_processes: self.plugin_max_processes,
            ..Default::default()
        }
    }
}

/// The 2.7 runtime scripts/setup.sh installs, looked for in the working
/// directory and above this binary (target/release/doppel in a checkout).
fn default_python27() -> Option<PathBuf> {
    let rel = std::path::Path::new(".venv/python27/bin/python");
    let cwd = std::env::current_dir().ok();
    let exe = std::env::current_exe().ok();
    cwd.iter()
        .map(|d| d.join(rel))
        .chain(
            exe.iter()
                .flat_map(|e| e.ancestors().skip(1).take(4).map(|d| d.join(rel))),
        )
        .find(|p| p.is_file())
}
