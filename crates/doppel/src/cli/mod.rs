//! Client subcommands. Each talks to the engine through `doppel-client`
//! only, prints a table (or JSON with `-o json`) and exits non-zero with the
//! error's code on stderr when something fails.

mod bookmark;
mod dataset;
mod env;
mod job;
mod login;
mod plugin;
mod policy;
mod pool;
mod webhook;

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use doppel_client::tls::{Fingerprint, Trust};
use doppel_client::{Client, ClientError, DEFAULT_URL};
use doppel_model::ErrorCode;

#[derive(Args)]
pub struct Global {
    /// URL of the engine's API [default: the URL of the last `doppel login`, else http://127.0.0.1:7878].
    #[arg(long, global = true, env = "DOPPEL_URL")]
    url: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// For an https URL: also trust this PEM CA file (or the engine's
    /// self-signed certificate, tls-cert.pem in its data directory).
    #[arg(long, global = true, env = "DOPPEL_CA_CERT")]
    ca_cert: Option<std::path::PathBuf>,
    /// For an https URL: accept exactly the certificate with this SHA-256
    /// fingerprint (SHA256:<hex>, as the engine logs it), whatever its names.
    #[arg(long, global = true, env = "DOPPEL_TLS_FINGERPRINT")]
    tls_fingerprint: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Linked sources: a dataset kept as a line of snapshots.
    #[command(
        after_help = "Examples:\n  doppel dsource link --name tree --sourceconfig SOURCE_CONFIG-1 --staging-env staging --params @linked.json\n  doppel dsource sync tree\n  doppel dsource list -o json"
    )]
    Dsource {
        #[command(flatten)]
        global: Global,
        #[command(subcommand)]
        command: dataset::DSourceCommand,
    },
    /// Snapshots of dSources and VDBs.
    #[command(
        after_help = "Examples:\n  doppel snapshot list --dataset tree\n  doppel snapshot delete SNAPSHOT-3"
    )]
    Snapshot {
        #[command(flatten)]
        global: Global,
        #[command(subcommand)]
        command: dataset::SnapshotCommand,
    },
    /// Bookmarks: names on snapshots, usable wherever a snapshot is and
    /// pinning it against retention.
    #[command(
        after_help = "Examples:\n  doppel bookmark add before-migration --snapshot tree\n  doppel bookmark list --dataset tree\n  doppel vdb rewind dev --to before-upgrade"
    )]
    Bookmark {
        #[command(flatten)]
        global: Global,
        #[command(subcommand)]
        command: bookmark::BookmarkCommand,
    },
    /// Virtual databases: writable thin copies of snapshots on target hosts.
    #[command(
        after_help = "Examples:\n  doppel vdb provision --name dev --from tree --env target --params '{\"mountPath\": \"/srv/vdbs/dev\"}'\n  doppel vdb refresh dev\n  doppel vdb rewind dev --to SNAPSHOT-2"
    )]
    Vdb {
        #[command(flatten)]
        global: Global,
        #[command(subcommand)]
        command: dataset::VdbCommand,
    },
    /// Engine datasets mounted on environments.
    #[command(after_help = "Examples:\n  doppel mount list")]
    Mount {
        #[command(flatten)]
        global: Global,
        #[command(subcommand)]
        command: dataset::MountCommand,
    },
    /// Hosts the engine manages over SSH, and their users.
    #[command(
        after_help = "Examples:\n  doppel env add --name source --host 10.0.0.5 --user delphix --password-file pw.txt\n  doppel env refresh source\n  doppel env user add source --name alice --key-file alice.key"
    )]
    Env {
        #[command(flatten)]
        global: Global,
        #[command(subcommand)]
        command: env::EnvCommand,
    },
    /// Repositories that discovery found on environments.
    #[command(after_help = "Examples:\n  doppel repository list --env source")]
    Repository {
        #[command(flatten)]
        global: Global,
        #[command(subcommand)]
        command: env::RepositoryCommand,
    },
    /// Datasets on hosts: discovered, or added by hand.
    #[command(
        name = "sourceconfig",
        after_help = "Examples:\n  doppel sourceconfig add --env source --repository REPOSITORY-1 --params '{\"name\": \"data\", \"path\": \"/srv/data\"}'\n  doppel sourceconfig list --env source"
    )]
    SourceConfig {
        #[command(flatten)]
        global: Global,
        #[command(subcommand)]
        command: env::SourceConfigCommand,
    },
    /// The storage pool where datasets, snapshots and clones live.
    #[command(after_help = "Examples:\n  doppel pool status\n  doppel pool status -o json")]
    Pool {
        #[command(flatten)]
        global: Global,
        #[command(subcommand)]
        command: pool::PoolCommand,
    },
    /// Policies: sync, snapshot and refresh schedules and retention, applied
    /// to dSources and VDBs and run by the engine's scheduler.
    #[command(
        after_help = "Examples:\n  doppel policy add nightly --snapsync-cron '30 3 * * *' --keep-last 7\n  doppel policy apply nightly --to dsource:tree\n  doppel policy apply nightly --dry-run\n  doppel policy runs --object dsource:tree"
    )]
    Policy {
        #[command(flatten)]
        global: Global,
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// Webhooks: URLs that receive the engine's events (jobs started and
    /// ended, capacity warnings, VDB expiry warnings) as signed JSON POSTs
    /// (administrators only).
    #[command(
        after_help = "Examples:\n  doppel webhook add ops https://hooks.example.com/doppel --secret-file secret.txt --event job.failed\n  doppel webhook test ops\n  doppel webhook show ops\n  doppel webhook delete ops"
    )]
    Webhook {
        #[command(flatten)]
        global: Global,
        #[command(subcommand)]
        command: webhook::WebhookCommand,
    },
    /// Follow and manage jobs: every long operation runs as one.
    #[command(
        after_help = "Examples:\n  doppel job list --state running\n  doppel job wait JOB-12\n  doppel job cancel JOB-12"
    )]
    Job {
        #[command(flatten)]
        global: Global,
        #[command(subcommand)]
        command: job::JobCommand,
    },
    /// Install, inspect and exercise plugins (artifacts built by `dvp build`).
    #[command(
        after_help = "Examples:\n  doppel plugin install artifact.json\n  doppel plugin logs myplugin --level error\n  doppel plugin invoke myplugin discovery.repository --request @request.json"
    )]
    Plugin {
        #[command(flatten)]
        global: Global,
        #[command(subcommand)]
        command: plugin::PluginCommand,
    },
    /// Log in: asks for the password (read from stdin when it is not a
    /// terminal) and saves a token in ~/.config/doppel/config.json (0600).
    #[command(
        after_help = "Examples:\n  doppel login --url http://engine:7878 --user admin\n  doppel login --user admin < password-file\n\nDOPPEL_TOKEN, when set, is used instead of the saved token."
    )]
    Login {
        #[command(flatten)]
        global: Global,
        #[command(flatten)]
        args: login::LoginArgs,
    },
    /// Users of the engine's API and their roles (administrators only).
    #[command(
        after_help = "Examples:\n  doppel user add alice --role operator\n  doppel user list\n  doppel user delete alice"
    )]
    User {
        #[command(flatten)]
        global: Global,
        #[command(subcommand)]
        command: login::UserCommand,
    },
    /// Rights of users on objects: whoever creates an object owns it; its
    /// owners (and administrators) grant owner or provisioner to others.
    #[command(
        after_help = "Examples:\n  doppel grant add dsource:tree --user bob --right provisioner\n  doppel grant add env:target --user bob --right provisioner\n  doppel grant list --user bob\n  doppel grant delete vdb:dev --user bob"
    )]
    Grant {
        #[command(flatten)]
        global: Global,
        #[command(subcommand)]
        command: login::GrantCommand,
    },
}

pub fn run(cmd: ClientCommand) -> ExitCode {
    match run_command(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(e),
    }
}

fn run_command(cmd: ClientCommand) -> Result<(), CliError> {
    match cmd {
        ClientCommand::Env { global, command } => env::run(&Ctx::new(&global)?, command),
        ClientCommand::Dsource { global, command } => {
            dataset::run_dsource(&Ctx::new(&global)?, command)
        }
        ClientCommand::Snapshot { global, command } => {
            dataset::run_snapshot(&Ctx::new(&global)?, command)
        }
        ClientCommand::Vdb { global, command } => dataset::run_vdb(&Ctx::new(&global)?, command),
        ClientCommand::Bookmark { global, command } => bookmark::run(&Ctx::new(&global)?, command),
        ClientCommand::Mount { global, command } => {
            dataset::run_mount(&Ctx::new(&global)?, command)
        }
        ClientCommand::Repository { global, command } => {
            env::run_repository(&Ctx::new(&global)?, command)
        }
        ClientCommand::SourceConfig { global, command } => {
            env::run_source_config(&Ctx::new(&global)?, command)
        }
        ClientCommand::Pool { global, command } => {
            let ctx = Ctx::new(&global)?;
            pool::run(&ctx, command)
        }
        ClientCommand::Policy { global, command } => policy::run(&Ctx::new(&global)?, command),
        ClientCommand::Webhook { global, command } => webhook::run(&Ctx::new(&global)?, command),
        ClientCommand::Job { global, command } => {
            let ctx = Ctx::new(&global)?;
            job::run(&ctx, command)
        }
        ClientCommand::Plugin { global, command } => {
            let ctx = Ctx::new(&global)?;
            plugin::run(&ctx, command)
        }
        ClientCommand::Login { global, args } => login::login(&Ctx::new(&global)?, args),
        ClientCommand::User { global, command } => login::run_user(&Ctx::new(&global)?, command),
        ClientCommand::Grant { global, command } => login::run_grant(&Ctx::new(&global)?, command),
    }
}

pub struct Ctx {
    pub client: Client,
    pub output: Output,
    /// How the engine's certificate is trusted, for `doppel login` to keep.
    pub trust: Trust,
}

impl Ctx {
    fn new(global: &Global) -> Result<Ctx, CliError> {
        let config = doppel_client::config::Config::load();
        let url = global
            .url
            .clone()
            .or_else(|| config.url.clone())
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        let token = config.token_for(&url);
        let fingerprint = match &global.tls_fingerprint {
            Some(f) => Some(
                Fingerprint::parse(f)
                    .map_err(|e| CliError::Usage(format!("--tls-fingerprint: {e}")))?,
            ),
            None => None,
        };
        // A relative path would mean something else from another directory.
        let ca_cert = match &global.ca_cert {
            Some(p) => Some(
                std::path::absolute(p)
                    .map_err(|e| CliError::Usage(format!("--ca-cert {}: {e}", p.display())))?,
            ),
            None => None,
        };
        let trust = config.trust_for(
            &url,
            Trust {
                ca_cert,
                fingerprint,
            },
        );
        let client =
            Client::with_trust(&url, token, &trust).map_err(|e| CliError::Usage(e.to_string()))?;
        Ok(Ctx {
            client,
            output: global.output,
            trust,
        })
    }

    /// Prints JSON for scripts, or calls `table` for humans.
    pub fn print<T: serde::Serialize>(&self, value: &T, table: impl FnOnce(&T)) {
        match self.output {
            Output::Json => println!(
                "{}",
                serde_json::to_string_pretty(value).expect("serialisable")
            ),
            Output::Table => table(value),
        }
    }
}

/// Errors from the CLI itself (bad files, bad JSON) or from the engine.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Usage(String),
    /// The request was fine and answered, but what it tried did not work
    /// (a webhook ping the receiver refused): exit 1.
    #[error("{0}")]
    Failed(String),
}

/// Exit codes scripts can rely on.
fn exit_code(code: Option<ErrorCode>) -> u8 {
    match code {
        None => 1,
        // A body over the size limit or a method an endpoint does not take
        // is a request the engine refused as given, like invalid input.
        Some(
            ErrorCode::InvalidInput
            | ErrorCode::InvalidArtifact
            | ErrorCode::InvalidParameters
            | ErrorCode::PayloadTooLarge
            | ErrorCode::MethodNotAllowed,
        ) => 3,
        Some(ErrorCode::NotFound) => 4,
        Some(ErrorCode::Conflict) => 5,
        Some(ErrorCode::PluginUserError | ErrorCode::PluginFailed | ErrorCode::HookFailed) => 6,
        Some(ErrorCode::PluginTimeout) => 7,
        Some(ErrorCode::PoolFull) => 8,
        Some(ErrorCode::HostFailed) => 10,
        Some(ErrorCode::Internal) => 9,
        Some(ErrorCode::Unauthorized) => 11,
        Some(ErrorCode::Forbidden) => 12,
        Some(ErrorCode::RateLimited) => 13,
    }
}

fn report(e: CliError) -> ExitCode {
    match &e {
        CliError::Client(ClientError::Api(api)) => {
            eprintln!("error[{}]: {}", api.code.as_str(), api.message);
            for d in &api.details {
                eprintln!("  - {d}");
            }
            if let Some(a) = &api.action {
                eprintln!("action: {a}");
            }
            if let Some(o) = &api.output {
                eprintln!("output:\n{o}");
            }
            ExitCode::from(exit_code(Some(api.code)))
        }
        CliError::Client(ClientError::Untrusted { message, .. }) => {
            eprintln!("error[untrusted_certificate]: {message}");
            ExitCode::from(10)
        }
        CliError::Client(other) => {
            eprintln!("error: {other}");
            ExitCode::from(exit_code(None))
        }
        CliError::Usage(msg) => {
            eprintln!("error[invalid_input]: {msg}");
            ExitCode::from(2)
        }
        CliError::Failed(msg) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    }
}

/// Reads `JSON` inline or `@file`.
pub fn json_arg(name: &str, raw: &str) -> Result<serde_json::Value, CliError> {
    let text = match raw.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("{name}: cannot read {path}: {e}")))?,
        None => raw.to_owned(),
    };
    serde_json::from_str(&text)
        .map_err(|e| CliError::Usage(format!("{name}: not valid JSON ({e})")))
}

pub fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING)
        .set_header(header.to_vec());
    for r in rows {
        t.add_row(r);
    }
    println!("{t}");
}
