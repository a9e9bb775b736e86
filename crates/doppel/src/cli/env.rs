//! `doppel env ...`, `doppel repository ...`, `doppel sourceconfig ...`

use std::path::PathBuf;

use clap::{Args, Subcommand};
use doppel_model::{
    AddEnvironment, AddEnvironmentUser, AddSourceConfig, Environment, SourceConfig, UserCredentials,
};

use super::job::run_job;
use super::{json_arg, table, CliError, Ctx};

/// How a user logs in: exactly one of the two.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct Secret {
    /// File holding the user's password (its first line).
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// File holding the user's private key (OpenSSH or PEM).
    #[arg(long)]
    key_file: Option<PathBuf>,
}

impl Secret {
    fn credentials(&self) -> Result<UserCredentials, CliError> {
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p)
                .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", p.display())))
        };
        match (&self.password_file, &self.key_file) {
            (Some(p), None) => Ok(UserCredentials::Password {
                password: read(p)?.lines().next().unwrap_or_default().to_owned(),
            }),
            (None, Some(k)) => Ok(UserCredentials::Key {
                private_key: read(k)?,
                passphrase: None,
            }),
            _ => Err(CliError::Usage(
                "give exactly one of --password-file and --key-file".into(),
            )),
        }
    }
}

#[derive(Subcommand)]
pub enum EnvCommand {
    /// Add a host: connect, pin its host key, prepare the toolkit directory, run discovery.
    #[command(
        after_help = "Example:\n  doppel env add --name source --host 10.0.0.5 --user delphix --password-file pw.txt"
    )]
    Add {
        #[arg(long)]
        name: String,
        #[arg(long)]
        host: String,
        #[arg(long, default_value_t = 22)]
        port: u16,
        #[arg(long)]
        user: String,
        #[command(flatten)]
        secret: Secret,
        /// Directory the engine owns on the host (default ~/.doppel/toolkit).
        #[arg(long)]
        toolkit_path: Option<String>,
        /// Return the job at once instead of waiting for it.
        #[arg(long)]
        no_wait: bool,
    },
    /// List environments.
    List,
    /// Show one environment (by name or reference).
    Show { env: String },
    /// Run discovery again: new repositories and source configs are added, vanished ones removed.
    Refresh {
        env: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Remove an environment and everything discovered on it.
    Delete { env: String },
    /// Manage the OS users of an environment.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user (its login is checked first).
    Add {
        env: String,
        #[arg(long)]
        name: String,
        #[command(flatten)]
        secret: Secret,
    },
    List {
        env: String,
    },
    Delete {
        env: String,
        user: String,
    },
}

#[derive(Subcommand)]
pub enum RepositoryCommand {
    /// List repositories found by discovery.
    List {
        #[arg(long)]
        env: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum SourceConfigCommand {
    /// Add a source config by hand, checked against the plugin's schema.
    #[command(
        after_help = "Example:\n  doppel sourceconfig add --env source --repository REPOSITORY-1 --params '{\"name\": \"data\", \"path\": \"/var/data\"}'"
    )]
    Add {
        #[arg(long)]
        env: String,
        /// Repository reference, or its name on that environment.
        #[arg(long)]
        repository: String,
        #[arg(long)]
        params: String,
    },
    List {
        #[arg(long)]
        env: Option<String>,
    },
    Show {
        sourceconfig: String,
    },
    /// Replace a hand-added or discovered source config's parameters.
    Update {
        sourceconfig: String,
        #[arg(long)]
        params: String,
    },
    Delete {
        sourceconfig: String,
    },
}

fn env_rows(envs: &[Environment]) {
    let rows = envs
        .iter()
        .map(|e| {
            let primary = e
                .users
                .iter()
                .find(|u| u.primary)
                .map(|u| u.name.clone())
                .unwrap_or_default();
            vec![
                e.name.clone(),
                e.reference.clone(),
                format!("{}:{}", e.host, e.port),
                primary,
                e.host_key_fingerprint.clone(),
            ]
        })
        .collect();
    table(&["NAME", "REFERENCE", "ADDRESS", "USER", "HOST KEY"], rows);
}

fn sc_rows(list: &[SourceConfig]) {
    let rows = list
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.reference.clone(),
                s.repository.clone(),
                s.environment.clone(),
                if s.discovered { "discovered" } else { "manual" }.into(),
            ]
        })
        .collect();
    table(
        &["NAME", "REFERENCE", "REPOSITORY", "ENVIRONMENT", "ORIGIN"],
        rows,
    );
}

fn show_environment(r: &serde_json::Value) {
    match serde_json::from_value::<Environment>(r.clone()) {
        Ok(e) => env_rows(&[e]),
        Err(_) => println!("{r}"),
    }
}

pub fn run(ctx: &Ctx, cmd: EnvCommand) -> Result<(), CliError> {
    let c = &ctx.client;
    match cmd {
        EnvCommand::Add {
            name,
            host,
            port,
            user,
            secret,
            toolkit_path,
            no_wait,
        } => {
            let req = AddEnvironment {
                name,
                host,
                port,
                user,
                credentials: secret.credentials()?,
                toolkit_path,
            };
            run_job(ctx, c.add_environment(&req)?, no_wait, show_environment)?;
        }
        EnvCommand::List => {
            let envs = c.list_environments()?;
            ctx.print(&envs, |e| env_rows(e));
        }
        EnvCommand::Show { env } => {
            let e = c.get_environment(&env)?;
            ctx.print(&e, |e| {
                env_rows(std::slice::from_ref(e));
                println!("toolkit: {}\nscratch: {}", e.toolkit_path, e.scratch_path);
            });
        }
        EnvCommand::Refresh { env, no_wait } => {
            run_job(ctx, c.refresh_environment(&env)?, no_wait, show_environment)?
        }
        EnvCommand::Delete { env } => {
            let e = c.delete_environment(&env)?;
            ctx.print(&e, |e| {
                println!("deleted environment {} ({})", e.name, e.reference)
            });
        }
        EnvCommand::User { command } => match command {
            UserCommand::Add { env, name, secret } => {
                let u = c.add_environment_user(
                    &env,
                    &AddEnvironmentUser {
                        name,
                        credentials: secret.credentials()?,
                    },
                )?;
                ctx.print(&u, |u| println!("added user {} ({})", u.name, u.reference));
            }
            UserCommand::List { env } => {
                let users = c.get_environment(&env)?.users;
                ctx.print(&users, |us| {
                    let rows = us
                        .iter()
                        .map(|u| {
                            vec![
                                u.name.clone(),
                                u.reference.clone(),
                                u.auth.clone(),
                                u.primary.to_string(),
                            ]
                        })
                        .collect();
                    table(&["NAME", "REFERENCE", "AUTH", "PRIMARY"], rows);
                });
            }
            UserCommand::Delete { env, user } => {
                c.delete_environment_user(&env, &user)?;
                ctx.print(&serde_json::json!({"deleted": user}), |_| {
                    println!("deleted user {user}")
                });
            }
        },
    }
    Ok(())
}

pub fn run_repository(ctx: &Ctx, cmd: RepositoryCommand) -> Result<(), CliError> {
    match cmd {
        RepositoryCommand::List { env } => {
            let repos = ctx.client.list_repositories(env.as_deref())?;
            ctx.print(&repos, |rs| {
                let rows = rs
                    .iter()
                    .map(|r| {
                        vec![
                            r.name.clone(),
                            r.reference.clone(),
                            r.environment.clone(),
                            r.plugin.clone(),
                        ]
                    })
                    .collect();
                table(&["NAME", "REFERENCE", "ENVIRONMENT", "PLUGIN"], rows);
            });
        }
    }
    Ok(())
}

pub fn run_source_config(ctx: &Ctx, cmd: SourceConfigCommand) -> Result<(), CliError> {
    let c = &ctx.client;
    match cmd {
        SourceConfigCommand::Add {
            env,
            repository,
            params,
        } => {
            let parameters = json_arg("--params", &params)?;
            let repository = if repository.starts_with("REPOSITORY-") {
                repository
            } else {
                let repos = c.list_repositories(Some(&env))?;
                let matching: Vec<_> = repos.into_iter().filter(|r| r.name == repository).collect();
                match matching.as_slice() {
                    [one] => one.reference.clone(),
                    [] => {
                        return Err(CliError::Usage(format!(
                            "no repository named {repository:?} on {env}"
                        )))
                    }
                    _ => {
                        return Err(CliError::Usage(format!(
                        "several repositories are named {repository:?} on {env}; use its reference"
                    )))
                    }
                }
            };
            let sc = c.add_source_config(&AddSourceConfig {
                repository,
                parameters,
            })?;
            ctx.print(&sc, |s| {
                println!("added source config {} ({})", s.name, s.reference)
            });
        }
        SourceConfigCommand::List { env } => {
            let list = c.list_source_configs(env.as_deref())?;
            ctx.print(&list, |l| sc_rows(l));
        }
        SourceConfigCommand::Show { sourceconfig } => {
            let s = c.get_source_config(&sourceconfig)?;
            ctx.print(&s, |s| {
                sc_rows(std::slice::from_ref(s));
                println!(
                    "{}",
                    serde_json::to_string_pretty(&s.parameters).expect("serialisable")
                );
            });
        }
        SourceConfigCommand::Update {
            sourceconfig,
            params,
        } => {
            let s = c.update_source_config(&sourceconfig, json_arg("--params", &params)?)?;
            ctx.print(&s, |s| {
                println!("updated source config {} ({})", s.name, s.reference)
            });
        }
        SourceConfigCommand::Delete { sourceconfig } => {
            let s = c.delete_source_config(&sourceconfig)?;
            ctx.print(&s, |s| {
                println!("deleted source config {} ({})", s.name, s.reference)
            });
        }
    }
    Ok(())
}
