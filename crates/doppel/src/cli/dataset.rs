//! `doppel dsource ...`, `doppel snapshot ...`, `doppel vdb ...`, `doppel mount ...`

use clap::Subcommand;
use doppel_model::{DSource, LinkDSource, ProvisionVdb, Vdb};
use serde_json::Value;

use super::job::run_job;
use super::{json_arg, table, CliError, Ctx};

#[derive(Subcommand)]
pub enum DSourceCommand {
    /// Link a source config: create its dataset, mount it on the staging
    /// host (staged plugins), and run the first sync.
    #[command(
        after_help = "Example:\n  doppel dsource link --name tree --sourceconfig SOURCE_CONFIG-1 --staging-env staging \\\n    --params '{\"sourceHost\": \"10.0.0.5\", \"sourceUser\": \"delphix\"}'"
    )]
    Link {
        /// Default: the source config's name.
        #[arg(long)]
        name: Option<String>,
        #[arg(long = "sourceconfig")]
        source_config: String,
        /// The staging environment (staged plugins only).
        #[arg(long = "staging-env")]
        staging_env: Option<String>,
        #[arg(long)]
        staging_user: Option<String>,
        /// Linked source parameters, inline JSON or @file.
        #[arg(long, default_value = "{}")]
        params: String,
        /// A hook script, e.g. `pre-sync=@pre.sh` (repeatable).
        #[arg(long = "hook", value_name = "POINT=SCRIPT|@FILE")]
        hooks: Vec<String>,
        #[arg(long)]
        no_wait: bool,
    },
    /// Take a snapshot now; --params are the plugin's snapshot parameters.
    Sync {
        dsource: String,
        #[arg(long)]
        params: Option<String>,
        #[arg(long)]
        no_wait: bool,
    },
    /// Re-ingest everything, then snapshot.
    Resync {
        dsource: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Copy a snapshot (default: the latest) into a directory of a host (V2P).
    #[command(
        after_help = "Example:\n  doppel dsource export NAME --env restore --target /srv/restore"
    )]
    Export {
        dsource: String,
        #[command(flatten)]
        export: ExportArgs,
    },
    /// Mount the staging dataset and start staging again.
    Enable {
        dsource: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Stop staging and unmount; syncs are refused until enabled.
    Disable {
        dsource: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Show hooks, or set them with --set (an empty script removes one).
    #[command(
        after_help = "Example:\n  doppel dsource hooks tree --set pre-sync=@quiesce.sh --set post-sync="
    )]
    Hooks {
        dsource: String,
        #[arg(long = "set", value_name = "POINT=SCRIPT|@FILE")]
        set: Vec<String>,
    },
    List,
    Show {
        dsource: String,
    },
    /// Unmount and destroy a dSource, its snapshots and bookmarks (refused while VDBs use it).
    Delete {
        dsource: String,
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Snapshots, oldest first, with their timeflow, plugin metadata and
    /// why retention keeps each (nothing listed: the next pass deletes it).
    List {
        /// A dSource or VDB.
        #[arg(long)]
        dataset: Option<String>,
    },
    /// Delete a snapshot (refused while a VDB's current state starts at it).
    Delete { snapshot: String },
}

#[derive(Subcommand)]
pub enum VdbCommand {
    /// Provision a writable thin copy of a snapshot onto a target environment.
    #[command(
        after_help = "Example:\n  doppel vdb provision --name dev --from tree --env target --params '{\"mountPath\": \"/srv/vdbs/dev\"}'\n  doppel vdb provision --name old --from tree@SNAPSHOT-1 --env target --params @vdb.json"
    )]
    Provision {
        #[arg(long)]
        name: String,
        /// A dSource or VDB, optionally @SNAPSHOT-<n> or @BOOKMARK-NAME (default: its latest snapshot).
        #[arg(long)]
        from: String,
        #[arg(long)]
        env: String,
        #[arg(long)]
        user: Option<String>,
        /// Virtual source parameters, inline JSON or @file.
        #[arg(long)]
        params: String,
        /// A hook script, e.g. `configure-clone=@mask.sh` (repeatable).
        #[arg(long = "hook", value_name = "POINT=SCRIPT|@FILE")]
        hooks: Vec<String>,
        #[arg(long)]
        no_wait: bool,
    },
    Snapshot {
        vdb: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Re-point to a snapshot of the parent (default: its latest); starts a new timeflow.
    Refresh {
        vdb: String,
        /// SNAPSHOT-<n> of the parent or one of its bookmarks.
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        no_wait: bool,
    },
    /// Return to one of the VDB's own snapshots; starts a new timeflow.
    Rewind {
        vdb: String,
        /// SNAPSHOT-<n> or one of the VDB's bookmarks.
        #[arg(long)]
        to: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Copy a snapshot (default: the latest) into a directory of a host (V2P).
    #[command(
        after_help = "Example:\n  doppel vdb export NAME --env restore --target /srv/restore"
    )]
    Export {
        vdb: String,
        #[command(flatten)]
        export: ExportArgs,
    },
    /// Create a VDB with no data, initialized by the plugin.
    #[command(
        name = "create-empty",
        after_help = "Example:\n  doppel vdb create-empty --name scratch --plugin myplugin --env target --params @vdb.json"
    )]
    CreateEmpty {
        #[arg(long)]
        name: String,
        /// Plugin id or name.
        #[arg(long)]
        plugin: String,
        #[arg(long)]
        env: String,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        params: String,
        #[arg(long = "hook", value_name = "POINT=SCRIPT|@FILE")]
        hooks: Vec<String>,
        #[arg(long)]
        no_wait: bool,
    },
    /// Run the plugin's start (with the Pre/Post-Start hooks).
    Start {
        vdb: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Run the plugin's stop (with the Pre/Post-Stop hooks).
    Stop {
        vdb: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Mount and reconfigure a disabled VDB.
    Enable {
        vdb: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Unconfigure and unmount; the data stays.
    Disable {
        vdb: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Show hooks, or set them with --set (an empty script removes one).
    #[command(after_help = "Example:\n  doppel vdb hooks dev --set configure-clone=@mask.sh")]
    Hooks {
        vdb: String,
        #[arg(long = "set", value_name = "POINT=SCRIPT|@FILE")]
        set: Vec<String>,
    },
    /// Protect against deletion (by anyone) until a time or until unprotected.
    #[command(
        after_help = "Examples:\n  doppel vdb protect dev\n  doppel vdb protect dev --for 7d"
    )]
    Protect {
        vdb: String,
        /// RFC 3339.
        #[arg(long, conflicts_with = "for_")]
        until: Option<String>,
        /// A duration from now (1d).
        #[arg(long = "for")]
        for_: Option<String>,
    },
    Unprotect {
        vdb: String,
    },
    /// Have the scheduler delete the VDB at a time (a warning is recorded
    /// 24 h before); --never removes the expiry.
    #[command(
        after_help = "Examples:\n  doppel vdb expire dev --in 8h\n  doppel vdb expire dev --at 2026-03-01T18:00:00Z\n  doppel vdb expire dev --never"
    )]
    Expire {
        vdb: String,
        /// RFC 3339.
        #[arg(long, conflicts_with_all = ["in_", "never"])]
        at: Option<String>,
        /// A duration from now (2h).
        #[arg(long = "in", conflicts_with = "never")]
        in_: Option<String>,
        #[arg(long)]
        never: bool,
    },
    List,
    Show {
        vdb: String,
    },
    /// Delete a VDB (refused while it is protected or has child VDBs).
    Delete {
        vdb: String,
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Subcommand)]
pub enum MountCommand {
    /// Where engine datasets are mounted on environments.
    List,
}

fn ds_rows(list: &[DSource]) {
    let rows = list
        .iter()
        .map(|d| {
            vec![
                d.name.clone(),
                d.reference.clone(),
                d.source_config.clone(),
                d.staging_environment.clone().unwrap_or_else(|| "-".into()),
                d.snapshots.to_string(),
                d.latest_snapshot.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "REFERENCE",
            "SOURCE CONFIG",
            "STAGING",
            "SNAPSHOTS",
            "LATEST",
        ],
        rows,
    );
}

fn vdb_rows(list: &[Vdb]) {
    let rows = list
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                v.reference.clone(),
                v.environment.clone(),
                v.parent_dataset.clone(),
                v.timeflows.to_string(),
                v.snapshots.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "REFERENCE",
            "ENVIRONMENT",
            "PARENT",
            "TIMEFLOWS",
            "SNAPSHOTS",
        ],
        rows,
    );
}

fn show_as<T: serde::de::DeserializeOwned>(rows: impl Fn(&[T])) -> impl FnOnce(&Value) {
    move |v| match serde_json::from_value::<T>(v.clone()) {
        Ok(x) => rows(std::slice::from_ref(&x)),
        Err(_) => println!("{}", serde_json::to_string_pretty(v).expect("serialisable")),
    }
}

/// Where and how a snapshot is exported (V2P).
#[derive(clap::Args)]
pub struct ExportArgs {
    /// SNAPSHOT-<n> or one of the dataset's bookmarks (default: the latest).
    #[arg(long)]
    snapshot: Option<String>,
    #[arg(long)]
    env: String,
    #[arg(long)]
    user: Option<String>,
    /// Absolute directory on that host.
    #[arg(long)]
    target: String,
    /// V2P parameters, inline JSON or @file.
    #[arg(long, default_value = "{}")]
    params: String,
    #[arg(long)]
    no_wait: bool,
}

/// V2P of a dSource's or VDB's snapshot (default: its latest).
fn export(ctx: &Ctx, dataset: &str, args: ExportArgs) -> Result<(), CliError> {
    let snapshot = match args.snapshot {
        // A bare name is one of this dataset's bookmarks.
        Some(s) if !s.starts_with("SNAPSHOT-") && !s.contains('@') => format!("{dataset}@{s}"),
        Some(s) => s,
        None => ctx
            .client
            .list_snapshots(Some(dataset))?
            .pop()
            .map(|s| s.reference)
            .ok_or_else(|| CliError::Usage(format!("{dataset} has no snapshot to export")))?,
    };
    let req = doppel_model::ExportSnapshot {
        snapshot,
        environment: args.env,
        user: args.user,
        target_directory: args.target,
        parameters: json_arg("--params", &args.params)?,
    };
    run_job(
        ctx,
        ctx.client.export_snapshot(&req)?,
        args.no_wait,
        show_json,
    )
}

/// Shows an object's hooks, after setting those given.
fn hooks(ctx: &Ctx, object: &str, set: &[String]) -> Result<(), CliError> {
    let current = if set.is_empty() {
        ctx.client.hooks(object)?
    } else {
        ctx.client.set_hooks(object, &hook_args(set)?)?
    };
    ctx.print(&current, |h| {
        let rows = h
            .iter()
            .map(|(p, s)| vec![p.clone(), s.lines().next().unwrap_or_default().to_owned()])
            .collect();
        table(&["POINT", "SCRIPT (first line)"], rows);
    });
    Ok(())
}

/// `point=script` or `point=@file`, repeated.
fn hook_args(args: &[String]) -> Result<std::collections::BTreeMap<String, String>, CliError> {
    args.iter()
        .map(|a| {
            let (point, script) = a.split_once('=').ok_or_else(|| {
                CliError::Usage(format!(
                    "--hook {a:?}: expected POINT=SCRIPT or POINT=@FILE"
                ))
            })?;
            let script = match script.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path).map_err(|e| {
                    CliError::Usage(format!("--hook {point}: cannot read {path}: {e}"))
                })?,
                None => script.to_owned(),
            };
            Ok((point.to_owned(), script))
        })
        .collect()
}

fn show_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("serialisable"));
}

pub fn run_dsource(ctx: &Ctx, cmd: DSourceCommand) -> Result<(), CliError> {
    let c = &ctx.client;
    match cmd {
        DSourceCommand::Link {
            name,
            source_config,
            staging_env,
            staging_user,
            params,
            hooks,
            no_wait,
        } => {
            let name = match name {
                Some(n) => n,
                None => c.get_source_config(&source_config)?.name,
            };
            let req = LinkDSource {
                name,
                source_config,
                staging_environment: staging_env,
                staging_user,
                parameters: json_arg("--params", &params)?,
                hooks: hook_args(&hooks)?,
            };
            run_job(ctx, c.link_dsource(&req)?, no_wait, show_as(ds_rows))?;
        }
        DSourceCommand::Sync {
            dsource,
            params,
            no_wait,
        } => {
            let params = params.map(|p| json_arg("--params", &p)).transpose()?;
            run_job(
                ctx,
                c.sync_dsource(&dsource, params, false)?,
                no_wait,
                show_json,
            )?;
        }
        DSourceCommand::Resync { dsource, no_wait } => run_job(
            ctx,
            c.sync_dsource(&dsource, None, true)?,
            no_wait,
            show_json,
        )?,
        DSourceCommand::Export {
            dsource,
            export: args,
        } => export(ctx, &dsource, args)?,
        DSourceCommand::Enable { dsource, no_wait } => run_job(
            ctx,
            c.dsource_power(&dsource, "enable")?,
            no_wait,
            show_as(ds_rows),
        )?,
        DSourceCommand::Disable { dsource, no_wait } => run_job(
            ctx,
            c.dsource_power(&dsource, "disable")?,
            no_wait,
            show_as(ds_rows),
        )?,
        DSourceCommand::Hooks { dsource, set } => hooks(ctx, &dsource, &set)?,
        DSourceCommand::List => {
            let l = c.list_dsources()?;
            ctx.print(&l, |l| ds_rows(l));
        }
        DSourceCommand::Show { dsource } => {
            let d = c.get_dsource(&dsource)?;
            ctx.print(&d, |d| {
                ds_rows(std::slice::from_ref(d));
                println!("dataset: {}\nparameters: {}", d.dataset, d.parameters);
                if let Some(m) = &d.staging_mount {
                    println!("staging mount: {m}");
                }
                if let Some(s) = &d.status {
                    println!("status: {s}");
                }
                if let Some(b) = d.size_bytes {
                    println!("source size: {b} bytes");
                }
            });
        }
        DSourceCommand::Delete { dsource, no_wait } => {
            run_job(ctx, c.delete_dsource(&dsource)?, no_wait, |_| {
                println!("deleted {dsource}")
            })?
        }
    }
    Ok(())
}

pub fn run_snapshot(ctx: &Ctx, cmd: SnapshotCommand) -> Result<(), CliError> {
    match cmd {
        SnapshotCommand::Delete { snapshot } => {
            let s = ctx.client.delete_snapshot(&snapshot)?;
            ctx.print(&s, |s| println!("deleted {} of {}", s.reference, s.dataset));
        }
        SnapshotCommand::List { dataset } => {
            let l = ctx.client.list_snapshots(dataset.as_deref())?;
            ctx.print(&l, |l| {
                let rows = l
                    .iter()
                    .map(|s| {
                        vec![
                            s.reference.clone(),
                            s.dataset.clone(),
                            s.timeflow.clone(),
                            s.created_at.clone(),
                            s.unique_bytes.map(|b| b.to_string()).unwrap_or_default(),
                            s.kept_because.join("; "),
                            s.metadata.to_string(),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "SNAPSHOT",
                        "DATASET",
                        "TIMEFLOW",
                        "CREATED",
                        "UNIQUE BYTES",
                        "KEPT BECAUSE",
                        "METADATA",
                    ],
                    rows,
                );
            });
        }
    }
    Ok(())
}

pub fn run_vdb(ctx: &Ctx, cmd: VdbCommand) -> Result<(), CliError> {
    let c = &ctx.client;
    match cmd {
        VdbCommand::Provision {
            name,
            from,
            env,
            user,
            params,
            hooks,
            no_wait,
        } => {
            let (from, snapshot) = match from.split_once('@') {
                Some((f, s)) => (f.to_owned(), Some(s.to_owned())),
                None => (from, None),
            };
            let req = ProvisionVdb {
                name,
                from,
                snapshot,
                environment: env,
                user,
                parameters: json_arg("--params", &params)?,
                hooks: hook_args(&hooks)?,
            };
            run_job(ctx, c.provision_vdb(&req)?, no_wait, show_as(vdb_rows))?;
        }
        VdbCommand::Snapshot { vdb, no_wait } => run_job(
            ctx,
            c.vdb_action(&vdb, "snapshot", None)?,
            no_wait,
            show_json,
        )?,
        VdbCommand::Refresh { vdb, to, no_wait } => run_job(
            ctx,
            c.vdb_action(&vdb, "refresh", to.as_deref())?,
            no_wait,
            show_as(vdb_rows),
        )?,
        VdbCommand::Rewind { vdb, to, no_wait } => run_job(
            ctx,
            c.vdb_action(&vdb, "rewind", Some(&to))?,
            no_wait,
            show_as(vdb_rows),
        )?,
        VdbCommand::Export { vdb, export: args } => export(ctx, &vdb, args)?,
        VdbCommand::CreateEmpty {
            name,
            plugin,
            env,
            user,
            params,
            hooks,
            no_wait,
        } => {
            let req = doppel_model::CreateEmptyVdb {
                name,
                plugin,
                environment: env,
                user,
                parameters: json_arg("--params", &params)?,
                hooks: hook_args(&hooks)?,
            };
            run_job(ctx, c.create_empty_vdb(&req)?, no_wait, show_as(vdb_rows))?;
        }
        VdbCommand::Start { vdb, no_wait } => {
            run_job(ctx, c.vdb_power(&vdb, "start")?, no_wait, show_as(vdb_rows))?
        }
        VdbCommand::Stop { vdb, no_wait } => {
            run_job(ctx, c.vdb_power(&vdb, "stop")?, no_wait, show_as(vdb_rows))?
        }
        VdbCommand::Enable { vdb, no_wait } => run_job(
            ctx,
            c.vdb_power(&vdb, "enable")?,
            no_wait,
            show_as(vdb_rows),
        )?,
        VdbCommand::Disable { vdb, no_wait } => run_job(
            ctx,
            c.vdb_power(&vdb, "disable")?,
            no_wait,
            show_as(vdb_rows),
        )?,
        VdbCommand::Hooks { vdb, set } => hooks(ctx, &vdb, &set)?,
        VdbCommand::List => {
            let l = c.list_vdbs()?;
            ctx.print(&l, |l| vdb_rows(l));
        }
        VdbCommand::Show { vdb } => {
            let v = c.get_vdb(&vdb)?;
            ctx.print(&v, |v| {
                vdb_rows(std::slice::from_ref(v));
                println!(
                    "dataset: {}\nsource config: {}",
                    v.dataset,
                    v.source_config.clone().unwrap_or_default()
                );
                lifecycle(v);
            });
        }
        VdbCommand::Protect { vdb, until, for_ } => {
            let v = c.protect_vdb(&vdb, &doppel_model::ProtectVdb { until, for_ })?;
            ctx.print(&v, lifecycle);
        }
        VdbCommand::Unprotect { vdb } => {
            let v = c.unprotect_vdb(&vdb)?;
            ctx.print(&v, lifecycle);
        }
        VdbCommand::Expire {
            vdb,
            at,
            in_,
            never,
        } => {
            if at.is_none() && in_.is_none() && !never {
                return Err(CliError::Usage(
                    "vdb expire: give --at TIME, --in DURATION or --never".into(),
                ));
            }
            let v = c.expire_vdb(&vdb, &doppel_model::ExpireVdb { at, after: in_ })?;
            ctx.print(&v, lifecycle);
        }
        VdbCommand::Delete { vdb, no_wait } => run_job(ctx, c.delete_vdb(&vdb)?, no_wait, |_| {
            println!("deleted {vdb}")
        })?,
    }
    Ok(())
}

/// A VDB's protection and expiry, as `vdb show` prints them.
fn lifecycle(v: &Vdb) {
    println!(
        "{}: protected {}, expires {}",
        v.name,
        match &v.protection {
            None => "no".to_owned(),
            Some(p) => match &p.until {
                Some(t) => format!("until {t}"),
                None => "until unprotected".to_owned(),
            },
        },
        v.expires_at.as_deref().unwrap_or("never")
    );
}

pub fn run_mount(ctx: &Ctx, cmd: MountCommand) -> Result<(), CliError> {
    match cmd {
        MountCommand::List => {
            let l = ctx.client.list_mounts()?;
            ctx.print(&l, |l| {
                let rows = l
                    .iter()
                    .map(|m| {
                        vec![
                            m.id.to_string(),
                            m.environment.clone(),
                            m.mount_path.clone(),
                            m.volume.clone(),
                            m.kind.clone(),
                            m.read_only.to_string(),
                            if m.active {
                                "active"
                            } else {
                                "lost (re-mounting)"
                            }
                            .to_owned(),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "ID",
                        "ENVIRONMENT",
                        "PATH",
                        "DATASET",
                        "KIND",
                        "READ ONLY",
                        "STATE",
                    ],
                    rows,
                );
            });
        }
    }
    Ok(())
}
