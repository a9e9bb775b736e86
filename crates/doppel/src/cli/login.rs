//! `doppel login` and `doppel user add|list|delete`.

use std::io::{BufRead, IsTerminal};

use clap::{Args, Subcommand};
use doppel_client::config::Config;
use doppel_model::AddUser;

use super::{table, CliError, Ctx};

#[derive(Args)]
pub struct LoginArgs {
    /// User name.
    #[arg(long, short = 'u')]
    user: String,
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user; asks for the password (read from stdin when it is not a terminal).
    #[command(after_help = "Example:\n  doppel user add alice --admin")]
    Add {
        name: String,
        /// May manage users.
        #[arg(long)]
        admin: bool,
    },
    /// List users.
    List,
    /// Delete a user and end all their sessions and tokens.
    Delete { name: String },
}

/// A password from the terminal (not echoed), or the first line of stdin
/// when stdin is not a terminal.
fn read_password(prompt: &str, confirm: bool) -> Result<String, CliError> {
    if std::io::stdin().is_terminal() {
        let p = rpassword::prompt_password(prompt)
            .map_err(|e| CliError::Usage(format!("cannot read the password: {e}")))?;
        if confirm {
            let again = rpassword::prompt_password("Again: ")
                .map_err(|e| CliError::Usage(format!("cannot read the password: {e}")))?;
            if again != p {
                return Err(CliError::Usage("the passwords differ".into()));
            }
        }
        Ok(p)
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| CliError::Usage(format!("cannot read the password from stdin: {e}")))?;
        let p = line.strip_suffix('\n').unwrap_or(&line);
        let p = p.strip_suffix('\r').unwrap_or(p).to_owned();
        if p.is_empty() {
            return Err(CliError::Usage("no password on stdin".into()));
        }
        Ok(p)
    }
}

pub fn login(ctx: &Ctx, args: LoginArgs) -> Result<(), CliError> {
    let password = read_password("Password: ", false)?;
    let answer = ctx.client.login(&args.user, &password)?;
    let config = Config {
        url: Some(ctx.client.url_base().to_owned()),
        token: Some(answer.token.clone()),
        user: Some(answer.user.name.clone()),
        ca_cert: ctx.trust.ca_cert.clone(),
        tls_fingerprint: ctx.trust.fingerprint.map(|f| f.to_string()),
    };
    let path = config
        .save()
        .map_err(|e| CliError::Usage(format!("cannot save the token: {e}")))?;
    ctx.print(&serde_json::json!({"user": answer.user, "url": config.url, "expires_at": answer.expires_at}), |_| {
        println!(
            "Logged in to {} as {}; the token (until {}) is saved in {}.",
            ctx.client.url_base(),
            answer.user.name,
            answer.expires_at,
            path.display()
        );
    });
    Ok(())
}

pub fn run_user(ctx: &Ctx, cmd: UserCommand) -> Result<(), CliError> {
    match cmd {
        UserCommand::Add { name, admin } => {
            let password = read_password(&format!("Password for {name}: "), true)?;
            let user = ctx.client.add_user(&AddUser {
                name,
                password,
                admin,
            })?;
            ctx.print(&user, |u| {
                println!(
                    "Added user {}{}.",
                    u.name,
                    if u.admin { " (administrator)" } else { "" }
                )
            });
        }
        UserCommand::List => {
            let users = ctx.client.list_users()?;
            ctx.print(&users, |us| {
                table(
                    &["NAME", "ADMIN", "CREATED"],
                    us.iter()
                        .map(|u| {
                            vec![
                                u.name.clone(),
                                if u.admin { "yes" } else { "no" }.into(),
                                u.created_at.clone(),
                            ]
                        })
                        .collect(),
                )
            });
        }
        UserCommand::Delete { name } => {
            let v = ctx.client.delete_user(&name)?;
            ctx.print(&v, |_| println!("Deleted user {name}."));
        }
    }
    Ok(())
}
