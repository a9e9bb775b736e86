//! `doppel pool ...`

use clap::Subcommand;
use serde_json::Value;

use super::{table, CliError, Ctx};

#[derive(Subcommand)]
pub enum PoolCommand {
    /// Show the storage pool: driver, whether clones are thin and instant, space,
    /// capacity thresholds, space per dSource and VDB (and what deleting it frees), notices.
    Status,
}

fn bytes(v: &Value) -> String {
    let b = v.as_u64().unwrap_or(0) as f64;
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = b;
    let mut i = 0;
    while x >= 1024.0 && i + 1 < units.len() {
        x /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{x:.1} {}", units[i])
    }
}

fn yes(v: &Value) -> String {
    if v.as_bool().unwrap_or(false) {
        "yes"
    } else {
        "no"
    }
    .into()
}

pub fn run(ctx: &Ctx, cmd: PoolCommand) -> Result<(), CliError> {
    match cmd {
        PoolCommand::Status => {
            let s = ctx.client.pool_status()?;
            ctx.print(&s, |s| {
                let mut rows = vec![
                    vec![
                        "driver".into(),
                        s["driver"].as_str().unwrap_or_default().to_owned(),
                    ],
                    vec![
                        "root".into(),
                        s["root"].as_str().unwrap_or_default().to_owned(),
                    ],
                    vec!["thin clones".into(), yes(&s["thin_clone"])],
                    vec!["instant snapshots".into(), yes(&s["instant_snapshot"])],
                    vec!["atomic snapshots".into(), yes(&s["atomic_snapshot"])],
                    vec!["size".into(), bytes(&s["size"])],
                    vec!["used".into(), bytes(&s["used"])],
                    vec!["free".into(), bytes(&s["free"])],
                    vec!["reclaiming".into(), bytes(&s["reclaiming"])],
                    vec!["reserve".into(), bytes(&s["reserve"])],
                    vec![
                        "usage".into(),
                        format!(
                            "{} % ({}; warn at {} %, refuse new work at {} %)",
                            s["capacity"]["usage_percent"],
                            s["capacity"]["state"].as_str().unwrap_or_default(),
                            s["capacity"]["warn_percent"],
                            s["capacity"]["refuse_percent"]
                        ),
                    ],
                    vec!["datasets".into(), s["volumes"].to_string()],
                    vec!["snapshots".into(), s["snapshots"].to_string()],
                ];
                for n in s["notices"].as_array().into_iter().flatten() {
                    rows.push(vec![
                        n["level"].as_str().unwrap_or("notice").to_owned(),
                        n["message"].as_str().unwrap_or_default().to_owned(),
                    ]);
                }
                table(&["", ""], rows);
                let objects: Vec<Vec<String>> = s["objects"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|o| {
                        vec![
                            o["kind"].as_str().unwrap_or_default().to_owned(),
                            o["name"].as_str().unwrap_or_default().to_owned(),
                            bytes(&o["used"]),
                            bytes(&o["frees"]),
                        ]
                    })
                    .collect();
                if !objects.is_empty() {
                    println!();
                    table(&["KIND", "NAME", "USED", "DELETING FREES"], objects);
                }
            });
        }
    }
    Ok(())
}
