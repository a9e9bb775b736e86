//! `doppel plugin ...`

use clap::Subcommand;
use doppel_model::PluginSummary;
use serde_json::Value;

use super::{json_arg, table, CliError, Ctx};

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Install a plugin artifact (artifact.json from `dvp build`); a higher
    /// buildNumber of an installed plugin upgrades it.
    #[command(after_help = "Example:\n  dvp build && doppel plugin install artifact.json")]
    Install { file: std::path::PathBuf },
    /// List installed plugins.
    List,
    /// Show one plugin (by id or name).
    Show { plugin: String },
    /// Delete a plugin, its code and its logs.
    Delete { plugin: String },
    /// Show a plugin's log (debug, info or error stream), newest lines last.
    #[command(
        after_help = "Example:\n  doppel plugin logs my-plugin --level debug --tail 50\n  doppel plugin logs my-plugin --before CURSOR   # the page before, as the last one said"
    )]
    Logs {
        plugin: String,
        #[arg(long, default_value = "info")]
        level: String,
        /// How many of the last lines (default 1000, at most 10000).
        #[arg(long)]
        tail: Option<usize>,
        /// Only lines before this cursor (printed after a page that has
        /// older lines before it).
        #[arg(long)]
        before: Option<String>,
    },
    /// Call one plugin operation with a hand-built request (for plugin authors).
    #[command(
        after_help = "Example:\n  doppel plugin invoke my-plugin virtual.status --request @request.json"
    )]
    Invoke {
        plugin: String,
        /// `group.method`, e.g. linked.staged_pre_snapshot.
        operation: String,
        /// The request as proto JSON, inline or @file.
        #[arg(long, default_value = "{}")]
        request: String,
        /// Override the operation's deadline, in seconds.
        #[arg(long)]
        deadline: Option<f64>,
    },
    /// Check parameters against one of a plugin's schemas.
    #[command(
        after_help = "Example:\n  doppel plugin validate my-plugin linkedSource --params '{\"path\": \"/data\"}'"
    )]
    Validate {
        plugin: String,
        /// linkedSource, virtualSource, snapshotParameters, sourceConfig, repository, virtualToPhysical or snapshot.
        definition: String,
        /// The parameters, inline JSON or @file.
        #[arg(long)]
        params: String,
    },
}

fn summary_rows(list: &[PluginSummary]) {
    let rows = list
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.build_number.clone(),
                p.kind.as_str().to_owned(),
                p.language.clone(),
                p.id.clone(),
                p.installed_at.clone(),
            ]
        })
        .collect();
    table(
        &["NAME", "BUILD", "KIND", "LANGUAGE", "ID", "INSTALLED"],
        rows,
    );
}

fn show(p: &PluginSummary) {
    let rows = vec![
        vec!["name".into(), p.name.clone()],
        vec!["id".into(), p.id.clone()],
        vec!["build".into(), p.build_number.clone()],
        vec![
            "version".into(),
            p.external_version.clone().unwrap_or_default(),
        ],
        vec!["kind".into(), p.kind.as_str().into()],
        vec!["language".into(), p.language.clone()],
        vec!["host types".into(), p.host_types.join(", ")],
        vec!["entry point".into(), p.entry_point.clone()],
        vec!["installed".into(), p.installed_at.clone()],
        vec!["operations".into(), p.operations.join("\n")],
        vec!["migrations".into(), p.migration_ids.join(", ")],
    ];
    table(&["", ""], rows);
}

pub fn run(ctx: &Ctx, cmd: PluginCommand) -> Result<(), CliError> {
    let c = &ctx.client;
    match cmd {
        PluginCommand::Install { file } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", file.display())))?;
            let p = c.install_plugin(bytes)?;
            ctx.print(&p, |p| {
                println!(
                    "installed plugin {} build {} ({})",
                    p.name, p.build_number, p.id
                )
            });
        }
        PluginCommand::List => {
            let list = c.list_plugins()?;
            ctx.print(&list, |l| summary_rows(l));
        }
        PluginCommand::Show { plugin } => {
            let p = c.get_plugin(&plugin)?;
            ctx.print(&p, show);
        }
        PluginCommand::Delete { plugin } => {
            let p = c.delete_plugin(&plugin)?;
            ctx.print(&p, |p| println!("deleted plugin {} ({})", p.name, p.id));
        }
        PluginCommand::Logs {
            plugin,
            level,
            tail,
            before,
        } => {
            let v = c.plugin_logs(&plugin, &level, tail, before.as_deref())?;
            ctx.print(&v, |v| {
                for line in v["lines"].as_array().into_iter().flatten() {
                    println!("{}", line.as_str().unwrap_or_default());
                }
                // On stderr, so the lines themselves stay clean for a pipe.
                if let Some(cursor) = v["before"].as_str() {
                    eprintln!(
                        "older lines: doppel plugin logs {plugin} --level {level} --before {cursor}"
                    );
                }
            });
        }
        PluginCommand::Invoke {
            plugin,
            operation,
            request,
            deadline,
        } => {
            let request = json_arg("--request", &request)?;
            let result = c.invoke(&plugin, &operation, request, deadline)?;
            // A result is already JSON; both formats print it as such.
            println!(
                "{}",
                serde_json::to_string_pretty(&result).expect("serialisable")
            );
        }
        PluginCommand::Validate {
            plugin,
            definition,
            params,
        } => {
            let params = json_arg("--params", &params)?;
            let v: Value = c.validate(&plugin, &definition, params)?;
            ctx.print(&v, |_| println!("valid {definition} parameters"));
        }
    }
    Ok(())
}
