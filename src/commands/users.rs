//! `shoplake users` and `shoplake tokens`: who may reach the servers (DATA_DIR/auth.redb).
//! A token is printed once, when it is created; only its hash is stored. Both work while the
//! servers run: they see a new, revoked or expired token within `[auth] refresh`.

use std::io::BufRead;
use std::time::Duration;

use anyhow::Context;
use shoplake_server::auth::{AuthStore, Role};

use crate::config::DataArgs;

#[derive(Debug, clap::Args)]
pub struct UsersArgs {
    #[command(subcommand)]
    command: UsersCommand,
}

#[derive(Debug, clap::Subcommand)]
enum UsersCommand {
    /// Create a user with a role: analyst (SQL over everything), marketing (reports, dashboards,
    /// SQL without personal data), storefront (the live endpoints), admin (everything).
    Create {
        name: String,
        #[arg(long)]
        role: Role,
        /// Read a password (for the dashboards and Postgres clients; 12 characters or more) from the first line of
        /// standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a user's password from the first line of standard input.
    Password { name: String },
    /// List the users (names, roles, when created and disabled).
    List {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Disable a user: their tokens and password stop working.
    Disable { name: String },
}

#[derive(Debug, clap::Args)]
pub struct TokensArgs {
    #[command(subcommand)]
    command: TokensCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TokensCommand {
    /// Create an API token for a user and print it (only now).
    Create {
        #[arg(long)]
        user: String,
        /// How long the token works ("90days", "12h").
        #[arg(long, default_value = "90days", value_parser = humantime_serde::re::humantime::parse_duration, conflicts_with = "no_expiry")]
        expires_in: Duration,
        /// The token works until revoked.
        #[arg(long)]
        no_expiry: bool,
    },
    /// List the tokens (ids, users, expiry; never the tokens themselves).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its id (from `tokens list`).
    Revoke { token_id: String },
}

fn open(data: &DataArgs) -> anyhow::Result<AuthStore> {
    let path = data.auth_path();
    AuthStore::open(&path)
        .with_context(|| format!("opening the users and tokens at {}", path.display()))
}

fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

pub fn users(args: UsersArgs, data: DataArgs) -> anyhow::Result<()> {
    let store = open(&data)?;
    match args.command {
        UsersCommand::Create {
            name,
            role,
            password_stdin,
        } => {
            let password = password_stdin.then(read_password).transpose()?;
            let user = store.create_user(&name, role, password.as_deref())?;
            eprintln!(
                "created user {} with role {}{}; make a token with `shoplake tokens create --user {}`",
                user.name,
                user.role,
                if user.scram.is_some() {
                    " and a password"
                } else {
                    ""
                },
                user.name
            );
        }
        UsersCommand::Password { name } => {
            store.set_password(&name, &read_password()?)?;
            eprintln!("password of {name} set");
        }
        UsersCommand::List { json } => {
            let users = store.users()?;
            if json {
                for u in &users {
                    let mut value = serde_json::to_value(u)?;
                    if let Some(o) = value.as_object_mut() {
                        o.remove("scram");
                        o.insert("has_password".into(), u.scram.is_some().into());
                    }
                    println!("{value}");
                }
            } else {
                println!(
                    "{:<24} {:<11} {:<22} disabled_at",
                    "name", "role", "created_at"
                );
                for u in &users {
                    println!(
                        "{:<24} {:<11} {:<22} {}",
                        u.name,
                        u.role,
                        u.created_at,
                        u.disabled_at.as_deref().unwrap_or("-")
                    );
                }
            }
        }
        UsersCommand::Disable { name } => {
            let user = store.disable_user(&name)?;
            eprintln!(
                "disabled user {} at {}",
                user.name,
                user.disabled_at.as_deref().unwrap_or_default()
            );
        }
    }
    Ok(())
}

pub fn tokens(args: TokensArgs, data: DataArgs) -> anyhow::Result<()> {
    let store = open(&data)?;
    match args.command {
        TokensCommand::Create {
            user,
            expires_in,
            no_expiry,
        } => {
            let new = store.create_token(&user, (!no_expiry).then_some(expires_in))?;
            eprintln!(
                "created token {} for {} (expires {}); it is shown only now, keep it:",
                new.info.token_id,
                new.info.user,
                new.info.expires_at.as_deref().unwrap_or("never")
            );
            println!("{}", new.token);
        }
        TokensCommand::List { json } => {
            let tokens = store.tokens()?;
            if json {
                for t in &tokens {
                    println!("{}", serde_json::to_string(t)?);
                }
            } else {
                println!(
                    "{:<18} {:<24} {:<22} {:<22} revoked_at",
                    "token_id", "user", "created_at", "expires_at"
                );
                for t in &tokens {
                    println!(
                        "{:<18} {:<24} {:<22} {:<22} {}",
                        t.token_id,
                        t.user,
                        t.created_at,
                        t.expires_at.as_deref().unwrap_or("never"),
                        t.revoked_at.as_deref().unwrap_or("-")
                    );
                }
            }
        }
        TokensCommand::Revoke { token_id } => {
            let info = store.revoke_token(&token_id)?;
            eprintln!(
                "revoked token {} of {} at {}",
                info.token_id,
                info.user,
                info.revoked_at.as_deref().unwrap_or_default()
            );
        }
    }
    Ok(())
}
