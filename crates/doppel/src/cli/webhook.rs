//! `doppel webhook`: URLs that receive the engine's events.

use std::path::PathBuf;

use clap::Subcommand;
use doppel_model::{AddWebhook, Webhook, WebhookDelivery};

use super::{table, CliError, Ctx};

#[derive(Subcommand)]
pub enum WebhookCommand {
    /// Add a webhook. Its secret (the HMAC key of the signatures, at least
    /// 16 characters) comes from --secret-file, else from the terminal or
    /// the first line of stdin; never from the command line.
    #[command(
        after_help = "Examples:\n  doppel webhook add ops https://hooks.example.com/doppel --secret-file secret.txt\n  doppel webhook add failures http://10.0.0.9:8080/in --event job.failed --event capacity.warning < secret.txt\n\nEvent kinds: job.started, job.succeeded, job.failed, job.canceled, capacity.warning, vdb.expiring (default: all)."
    )]
    Add {
        name: String,
        /// Where events are POSTed (http or https, no credentials in it).
        /// Not `url`: that names the engine's URL, a global flag.
        #[arg(value_name = "URL")]
        endpoint: String,
        /// File holding the secret (its first line).
        #[arg(long)]
        secret_file: Option<PathBuf>,
        /// An event kind to send; repeatable (default: every kind).
        #[arg(long = "event")]
        events: Vec<String>,
        /// PEM CA certificate(s) trusted for an https receiver, besides the usual roots.
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
    List,
    /// Show a webhook and its last deliveries.
    Show {
        webhook: String,
    },
    Delete {
        webhook: String,
    },
    /// Send a `ping` event now and report how the receiver answered.
    Test {
        webhook: String,
    },
}

fn read_file(flag: &str, p: &PathBuf) -> Result<String, CliError> {
    std::fs::read_to_string(p)
        .map_err(|e| CliError::Usage(format!("{flag}: cannot read {}: {e}", p.display())))
}

fn rows(list: &[Webhook]) {
    let rows = list
        .iter()
        .map(|w| {
            vec![
                w.reference.clone(),
                w.name.clone(),
                w.url.clone(),
                if w.events.is_empty() {
                    "all".into()
                } else {
                    w.events.join(", ")
                },
            ]
        })
        .collect();
    table(&["WEBHOOK", "NAME", "URL", "EVENTS"], rows);
}

fn delivery_rows(list: &[WebhookDelivery]) {
    let rows = list
        .iter()
        .map(|d| {
            vec![
                d.updated_at.clone(),
                d.event.clone(),
                d.state.clone(),
                d.attempts.to_string(),
                d.status.map(|s| s.to_string()).unwrap_or_default(),
                d.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &["UPDATED", "EVENT", "STATE", "TRIES", "STATUS", "ERROR"],
        rows,
    );
}

pub fn run(ctx: &Ctx, cmd: WebhookCommand) -> Result<(), CliError> {
    let c = &ctx.client;
    match cmd {
        WebhookCommand::Add {
            name,
            endpoint,
            secret_file,
            events,
            ca_file,
        } => {
            let secret = match &secret_file {
                Some(p) => read_file("--secret-file", p)?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
                None => super::login::read_secret("secret", "Secret: ", true)?,
            };
            let ca_cert = ca_file
                .as_ref()
                .map(|p| read_file("--ca-file", p))
                .transpose()?;
            let w = c.add_webhook(&AddWebhook {
                name,
                url: endpoint,
                secret,
                events,
                ca_cert,
            })?;
            ctx.print(&w, |w| rows(std::slice::from_ref(w)));
        }
        WebhookCommand::List => {
            let l = c.list_webhooks()?;
            ctx.print(&l, |l| rows(l));
        }
        WebhookCommand::Show { webhook } => {
            let w = c.get_webhook(&webhook)?;
            ctx.print(&w, |w| {
                rows(std::slice::from_ref(w));
                println!();
                if w.deliveries.is_empty() {
                    println!("no deliveries yet");
                } else {
                    delivery_rows(&w.deliveries);
                }
            });
        }
        WebhookCommand::Delete { webhook } => {
            let w = c.delete_webhook(&webhook)?;
            ctx.print(&w, |w| println!("deleted {} ({})", w.name, w.reference));
        }
        WebhookCommand::Test { webhook } => {
            let d = c.test_webhook(&webhook)?;
            ctx.print(&d, |d| match (d.state.as_str(), d.status) {
                ("delivered", Some(s)) => println!("delivered: the receiver answered {s}"),
                (_, Some(s)) => println!("not delivered: the receiver answered {s}"),
                _ => println!(
                    "not delivered: {}",
                    d.error.as_deref().unwrap_or("no answer")
                ),
            });
            if d.state != "delivered" {
                return Err(CliError::Failed(format!(
                    "the ping to {webhook} was not delivered"
                )));
            }
        }
    }
    Ok(())
}
