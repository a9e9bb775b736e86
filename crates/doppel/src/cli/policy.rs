//! `doppel policy`: schedules and retention applied to dSources and VDBs.

use clap::{Args, Subcommand};
use doppel_model::{ApplyPolicy, Policy, PolicySpec, Retention, Schedule, SnapSync};

use super::{json_arg, table, CliError, Ctx};

/// A policy's sections on the command line.
#[derive(Args, Default)]
pub struct SpecArgs {
    /// IANA time zone of the cron expressions (default UTC).
    #[arg(long)]
    time_zone: Option<String>,
    /// dSource sync schedule as a cron expression ("30 3 * * *").
    #[arg(long)]
    snapsync_cron: Option<String>,
    /// dSource sync schedule as an interval (15m, 6h, 1d).
    #[arg(long)]
    snapsync_every: Option<String>,
    /// How late after its slot a sync may still start (4h).
    #[arg(long)]
    snapsync_window: Option<String>,
    /// Snapshot parameters of scheduled syncs, inline JSON or @file.
    #[arg(long)]
    snapsync_params: Option<String>,
    /// VDB snapshot schedule as a cron expression.
    #[arg(long)]
    snapshot_cron: Option<String>,
    /// VDB snapshot schedule as an interval.
    #[arg(long)]
    snapshot_every: Option<String>,
    /// VDB refresh schedule as a cron expression.
    #[arg(long)]
    refresh_cron: Option<String>,
    /// VDB refresh schedule as an interval.
    #[arg(long)]
    refresh_every: Option<String>,
    /// Retention: keep the newest N snapshots.
    #[arg(long)]
    keep_last: Option<u32>,
    /// Retention: keep snapshots younger than this (7d).
    #[arg(long)]
    keep_younger_than: Option<String>,
}

fn schedule(cron: Option<String>, every: Option<String>) -> Option<Schedule> {
    (cron.is_some() || every.is_some()).then_some(Schedule { cron, every })
}

impl SpecArgs {
    /// Lays these flags over `spec`: a section named on the command line
    /// replaces that section.
    fn apply_to(self, spec: &mut PolicySpec) -> Result<(), CliError> {
        if self.time_zone.is_some() {
            spec.time_zone = self.time_zone;
        }
        if self.snapsync_cron.is_some()
            || self.snapsync_every.is_some()
            || self.snapsync_window.is_some()
            || self.snapsync_params.is_some()
        {
            let old = spec.snapsync.take().unwrap_or_default();
            let replaced = self.snapsync_cron.is_some() || self.snapsync_every.is_some();
            spec.snapsync = Some(SnapSync {
                cron: if replaced {
                    self.snapsync_cron
                } else {
                    old.cron
                },
                every: if replaced {
                    self.snapsync_every
                } else {
                    old.every
                },
                window: self.snapsync_window.or(old.window),
                parameters: match self.snapsync_params {
                    Some(p) => Some(json_arg("--snapsync-params", &p)?),
                    None => old.parameters,
                },
            });
        }
        if let Some(s) = schedule(self.snapshot_cron, self.snapshot_every) {
            spec.vdb_snapshot = Some(s);
        }
        if let Some(s) = schedule(self.refresh_cron, self.refresh_every) {
            spec.refresh = Some(s);
        }
        if self.keep_last.is_some() || self.keep_younger_than.is_some() {
            spec.retention = Some(Retention {
                keep_last: self.keep_last,
                max_age: self.keep_younger_than,
            });
        }
        Ok(())
    }
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Add a policy (it applies to nothing until applied).
    #[command(
        after_help = "Examples:\n  doppel policy add nightly --snapsync-cron '30 3 * * *' --snapsync-window 4h --keep-last 7\n  doppel policy add dev-vdbs --snapshot-every 6h --refresh-cron '0 6 * * 1' --time-zone Europe/Paris"
    )]
    Add {
        name: String,
        #[command(flatten)]
        spec: SpecArgs,
    },
    List,
    Show {
        policy: String,
    },
    /// Change a policy: the sections named here are replaced, the others kept.
    #[command(
        after_help = "Example:\n  doppel policy update nightly --keep-last 14 --keep-younger-than 30d"
    )]
    Update {
        policy: String,
        /// A new name.
        #[arg(long)]
        rename: Option<String>,
        /// Remove the retention section.
        #[arg(long)]
        no_retention: bool,
        #[command(flatten)]
        spec: SpecArgs,
    },
    /// Delete a policy; its objects keep their other one.
    Delete {
        policy: String,
    },
    /// Apply a policy to dSources and VDBs, and enforce its retention there
    /// now; --dry-run says what retention would delete and changes nothing.
    #[command(
        after_help = "Examples:\n  doppel policy apply nightly --to dsource:tree --to dsource:db\n  doppel policy apply keep-2 --to vdb:dev --override\n  doppel policy apply nightly --dry-run"
    )]
    Apply {
        policy: String,
        /// An object (`dsource:NAME`, `vdb:NAME`, `DSOURCE-<n>`, `VDB-<n>`); repeatable.
        #[arg(long = "to")]
        to: Vec<String>,
        /// Apply as the objects' override: its sections win over their base policy.
        #[arg(long = "override")]
        is_override: bool,
        #[arg(long)]
        dry_run: bool,
    },
    /// Take a policy off an object.
    Unapply {
        policy: String,
        #[arg(long)]
        from: String,
    },
    /// What the scheduler did with each slot (started, skipped and why), newest first.
    #[command(after_help = "Example:\n  doppel policy runs --object dsource:tree")]
    Runs {
        #[arg(long)]
        object: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
    },
}

fn sections(p: &PolicySpec) -> String {
    let mut out = Vec::new();
    let sched = |s: &Schedule| {
        s.cron
            .as_ref()
            .map(|c| format!("cron {c:?}"))
            .or(s.every.as_ref().map(|e| format!("every {e}")))
            .unwrap_or_default()
    };
    if let Some(s) = &p.snapsync {
        let mut t = format!("snapsync {}", sched(&s.schedule()));
        if let Some(w) = &s.window {
            t.push_str(&format!(" within {w}"));
        }
        out.push(t);
    }
    if let Some(s) = &p.vdb_snapshot {
        out.push(format!("vdb snapshot {}", sched(s)));
    }
    if let Some(s) = &p.refresh {
        out.push(format!("refresh {}", sched(s)));
    }
    if let Some(r) = &p.retention {
        let mut t = Vec::new();
        if let Some(k) = r.keep_last {
            t.push(format!("last {k}"));
        }
        if let Some(a) = &r.max_age {
            t.push(format!("younger than {a}"));
        }
        out.push(format!("keep {}", t.join(" or ")));
    }
    if let Some(tz) = &p.time_zone {
        out.push(format!("in {tz}"));
    }
    out.join("; ")
}

fn policy_rows(list: &[Policy]) {
    let rows = list
        .iter()
        .map(|p| {
            vec![
                p.reference.clone(),
                p.spec.name.clone(),
                sections(&p.spec),
                p.applied_to
                    .iter()
                    .map(|a| {
                        if a.is_override {
                            format!("{} (override)", a.name)
                        } else {
                            a.name.clone()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            ]
        })
        .collect();
    table(&["POLICY", "NAME", "SECTIONS", "APPLIED TO"], rows);
}

pub fn run(ctx: &Ctx, cmd: PolicyCommand) -> Result<(), CliError> {
    let c = &ctx.client;
    match cmd {
        PolicyCommand::Add { name, spec } => {
            let mut s = PolicySpec {
                name,
                ..Default::default()
            };
            spec.apply_to(&mut s)?;
            let p = c.add_policy(&s)?;
            ctx.print(&p, |p| policy_rows(std::slice::from_ref(p)));
        }
        PolicyCommand::List => {
            let l = c.list_policies()?;
            ctx.print(&l, |l| policy_rows(l));
        }
        PolicyCommand::Show { policy } => {
            let p = c.get_policy(&policy)?;
            ctx.print(&p, |p| policy_rows(std::slice::from_ref(p)));
        }
        PolicyCommand::Update {
            policy,
            rename,
            no_retention,
            spec,
        } => {
            let mut s = c.get_policy(&policy)?.spec;
            if let Some(n) = rename {
                s.name = n;
            }
            if no_retention {
                s.retention = None;
            }
            spec.apply_to(&mut s)?;
            let p = c.update_policy(&policy, &s)?;
            ctx.print(&p, |p| policy_rows(std::slice::from_ref(p)));
        }
        PolicyCommand::Delete { policy } => {
            let p = c.delete_policy(&policy)?;
            ctx.print(&p, |p| {
                println!("deleted {} ({})", p.spec.name, p.reference)
            });
        }
        PolicyCommand::Apply {
            policy,
            to,
            is_override,
            dry_run,
        } => {
            let o = c.apply_policy(
                &policy,
                &ApplyPolicy {
                    objects: to,
                    is_override,
                    dry_run,
                },
            )?;
            ctx.print(&o, |o| {
                let verb = if o.dry_run { "would delete" } else { "deletes" };
                println!(
                    "{} {} on {}",
                    o.policy,
                    if o.dry_run { "(dry run)" } else { "applied" },
                    o.objects.join(", ")
                );
                let rows = o
                    .deletes
                    .iter()
                    .map(|d| {
                        vec![
                            d.snapshot.clone(),
                            d.object.clone(),
                            d.created_at.clone(),
                            d.unique_bytes.map(|b| b.to_string()).unwrap_or_default(),
                        ]
                    })
                    .collect();
                table(&["SNAPSHOT", "OBJECT", "CREATED", "UNIQUE BYTES"], rows);
                println!(
                    "retention {verb} {} snapshot(s), freeing at least {} bytes",
                    o.deletes.len(),
                    o.bytes_freed
                );
                for j in &o.jobs {
                    println!("started {j}");
                }
            });
        }
        PolicyCommand::Unapply { policy, from } => {
            let p = c.unapply_policy(&policy, &from)?;
            ctx.print(&p, |p| policy_rows(std::slice::from_ref(p)));
        }
        PolicyCommand::Runs { object, limit } => {
            let l = c.schedule_runs(object.as_deref(), limit)?;
            ctx.print(&l, |l| {
                let rows = l
                    .iter()
                    .map(|r| {
                        vec![
                            r.slot.clone(),
                            r.object.clone(),
                            r.kind.clone(),
                            r.policy.clone().unwrap_or_default(),
                            r.outcome.clone(),
                            r.job.clone().unwrap_or_default(),
                            r.reason.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "SLOT", "OBJECT", "KIND", "POLICY", "OUTCOME", "JOB", "REASON",
                    ],
                    rows,
                );
            });
        }
    }
    Ok(())
}
