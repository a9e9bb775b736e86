//! `doppel login`, `doppel user add|list|delete` and `doppel grant add|list|delete`.

use std::io::{BufRead, IsTerminal};

use clap::{Args, Subcommand};
use doppel_client::config::Config;
use doppel_model::{AddUser, GrantRequest, Right, Role};

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
    #[command(
        after_help = "Roles:\n  admin     everything: users, plugins, every object\n  operator  adds environments, links dSources, provisions VDBs; acts on what it owns or was granted\n  auditor   reads everything, changes nothing\n\nExamples:\n  doppel user add alice --role operator\n  doppel user add root2 --role admin"
    )]
    Add {
        name: String,
        /// admin, operator or auditor.
        #[arg(long, default_value = "operator", value_parser = parse_role)]
        role: Role,
        /// The same as --role admin.
        #[arg(long, conflicts_with = "role")]
        admin: bool,
    },
    /// List users.
    List,
    /// Give a user another role (refused for the last administrator).
    SetRole {
        name: String,
        /// admin, operator or auditor.
        #[arg(value_parser = parse_role)]
        role: Role,
    },
    /// Delete a user and end all their sessions and tokens.
    Delete { name: String },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("{s:?} is not a role: use admin, operator or auditor"))
}

fn parse_right(s: &str) -> Result<Right, String> {
    Right::parse(s).ok_or_else(|| format!("{s:?} is not a right: use owner or provisioner"))
}

#[derive(Subcommand)]
pub enum GrantCommand {
    /// Give a user a right on an object (its owners and administrators may).
    Add {
        /// A reference (VDB-3, DSOURCE-1, UNIX_HOST_ENVIRONMENT-2, a plugin
        /// id) or KIND:NAME with KIND env, dsource, vdb or plugin.
        object: String,
        #[arg(long)]
        user: String,
        /// owner (everything) or provisioner (provision, link or export from it, or onto it).
        #[arg(long, value_parser = parse_right)]
        right: Right,
    },
    /// List rights, on one object and/or of one user.
    List {
        #[arg(long)]
        object: Option<String>,
        #[arg(long)]
        user: Option<String>,
    },
    /// Take a user's right on an object away.
    Delete {
        object: String,
        #[arg(long)]
        user: String,
    },
}

pub fn run_grant(ctx: &Ctx, cmd: GrantCommand) -> Result<(), CliError> {
    match cmd {
        GrantCommand::Add {
            object,
            user,
            right,
        } => {
            let g = ctx.client.grant(&GrantRequest {
                object,
                user,
                right: Some(right),
            })?;
            ctx.print(&g, |g| {
                println!(
                    "{} is now {} of {} ({}).",
                    g.user, g.right, g.object_name, g.object
                )
            });
        }
        GrantCommand::List { object, user } => {
            let gs = ctx.client.list_grants(object.as_deref(), user.as_deref())?;
            ctx.print(&gs, |gs| {
                table(
                    &["OBJECT", "NAME", "USER", "RIGHT", "GRANTED"],
                    gs.iter()
                        .map(|g| {
                            vec![
                                g.object.clone(),
                                g.object_name.clone(),
                                g.user.clone(),
                                g.right.to_string(),
                                g.granted_at.clone(),
                            ]
                        })
                        .collect(),
                )
            });
        }
        GrantCommand::Delete { object, user } => {
            let r = ctx.client.revoke(&GrantRequest {
                object,
                user,
                right: None,
            })?;
            ctx.print(&r, |r| {
                println!("{} has no right on {} any more.", r.user, r.object)
            });
        }
    }
    Ok(())
}

/// A password from the terminal (not echoed), or the first line of stdin
/// when stdin is not a terminal.
fn read_password(prompt: &str, confirm: bool) -> Result<String, CliError> {
    read_secret("password", prompt, confirm)
}

/// A secret (`what` names it in errors) from the terminal (not echoed), or
/// the first line of stdin when stdin is not a terminal: never from the
/// command line, where other users see it.
pub(super) fn read_secret(what: &str, prompt: &str, confirm: bool) -> Result<String, CliError> {
    if std::io::stdin().is_terminal() {
        let p = rpassword::prompt_password(prompt)
            .map_err(|e| CliError::Usage(format!("cannot read the {what}: {e}")))?;
        if confirm {
            let again = rpassword::prompt_password("Again: ")
                .map_err(|e| CliError::Usage(format!("cannot read the {what}: {e}")))?;
            if again != p {
                return Err(CliError::Usage(format!("the {what}s differ")));
            }
        }
        Ok(p)
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| CliError::Usage(format!("cannot read the {what} from stdin: {e}")))?;
        let p = line.strip_suffix('\n').unwrap_or(&line);
        let p = p.strip_suffix('\r').unwrap_or(p).to_owned();
        if p.is_empty() {
            return Err(CliError::Usage(format!("no {what} on stdin")));
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
        UserCommand::Add { name, role, admin } => {
            let password = read_password(&format!("Password for {name}: "), true)?;
            let user = ctx.client.add_user(&AddUser {
                name,
                password,
                role: Some(if admin { Role::Admin } else { role }),
                admin: false,
            })?;
            ctx.print(&user, |u| println!("Added user {} ({}).", u.name, u.role));
        }
        UserCommand::List => {
            let users = ctx.client.list_users()?;
            ctx.print(&users, |us| {
                table(
                    &["NAME", "ROLE", "CREATED"],
                    us.iter()
                        .map(|u| vec![u.name.clone(), u.role.to_string(), u.created_at.clone()])
                        .collect(),
                )
            });
        }
        UserCommand::SetRole { name, role } => {
            let user = ctx.client.set_user_role(&name, role)?;
            ctx.print(&user, |u| println!("{} is now {}.", u.name, u.role));
        }
        UserCommand::Delete { name } => {
            let v = ctx.client.delete_user(&name)?;
            ctx.print(&v, |_| println!("Deleted user {name}."));
        }
    }
    Ok(())
}
