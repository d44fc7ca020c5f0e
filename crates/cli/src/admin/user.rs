//! `leasehold user`: add, list and show the users of an account; activate and deactivate
//! them, account-wide or on one `registered_users` license; list their sessions.

use clap::{Args, Subcommand};
use leasehold_client::proto::{PutUser, User, UserKind};
use leasehold_client::Client;

use super::output::{key_values, opt, print_json, time, yes_no, Table};
use super::{AccountOpt, Admin, CmdResult, Common};

#[derive(Args, Debug)]
pub struct UserArgs {
    #[command(flatten)]
    pub(super) common: Common,
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Add a user (interactive by default; a service user's client secret is shown once).
    Add {
        /// Username.
        username: String,
        #[command(flatten)]
        account: AccountOpt,
        /// A service (system) user: authenticates with OAuth2 client credentials.
        #[arg(long)]
        service: bool,
        /// Create the user inactive.
        #[arg(long)]
        inactive: bool,
    },
    /// List the users of an account.
    List {
        #[command(flatten)]
        account: AccountOpt,
    },
    /// Show a user: kind, whether active, client id of a service user.
    Show {
        /// Username.
        username: String,
        #[command(flatten)]
        account: AccountOpt,
    },
    /// Let a user open sessions again (with --license: on that registered_users license).
    Activate {
        /// Username.
        username: String,
        #[command(flatten)]
        account: AccountOpt,
        /// Activate on this `registered_users` license instead of account-wide.
        #[arg(long)]
        license: Option<String>,
    },
    /// Stop a user from opening sessions and end its live ones (with --license: only on that
    /// registered_users license, freeing an active-user slot).
    Deactivate {
        /// Username.
        username: String,
        #[command(flatten)]
        account: AccountOpt,
        /// Deactivate on this `registered_users` license instead of account-wide.
        #[arg(long)]
        license: Option<String>,
    },
    /// List a user's live sessions on every license of the account.
    Sessions {
        /// Username.
        username: String,
        #[command(flatten)]
        account: AccountOpt,
    },
}

impl Admin {
    pub(super) async fn user_command(&self, args: UserArgs) -> CmdResult {
        let client = self.client()?;
        match args.command {
            UserCommand::Add {
                username,
                account,
                service,
                inactive,
            } => {
                let account = self.account(&account)?;
                let kind = if service {
                    UserKind::Service
                } else {
                    UserKind::Interactive
                };
                let user = client
                    .put_user(
                        &account,
                        &username,
                        &PutUser {
                            kind,
                            active: Some(!inactive),
                        },
                    )
                    .await?;
                self.print_user(&user);
                if user.client_secret.is_some() {
                    eprintln!("note: the client secret is shown only once: store it now.");
                }
            }
            UserCommand::List { account } => {
                let account = self.account(&account)?;
                let list = client.list_users(&account).await?;
                if self.json() {
                    print_json(&list);
                } else if list.users.is_empty() {
                    println!("no users");
                } else {
                    let mut table = Table::new(&["USER", "KIND", "ACTIVE", "CLIENT ID", "CREATED"]);
                    for user in &list.users {
                        table.row(vec![
                            user.username.clone(),
                            user.kind.as_str().to_owned(),
                            yes_no(user.active),
                            opt(user.client_id.as_deref()),
                            time(user.created_at),
                        ]);
                    }
                    print!("{}", table.render());
                }
            }
            UserCommand::Show { username, account } => {
                let account = self.account(&account)?;
                let user = client.get_user(&account, &username).await?;
                self.print_user(&user);
            }
            UserCommand::Activate {
                username,
                account,
                license,
            } => {
                self.set_active(&client, &account, &username, license, true)
                    .await?
            }
            UserCommand::Deactivate {
                username,
                account,
                license,
            } => {
                self.set_active(&client, &account, &username, license, false)
                    .await?
            }
            UserCommand::Sessions { username, account } => {
                let account = self.account(&account)?;
                let list = client.list_user_sessions(&account, &username).await?;
                self.print_sessions(&list.sessions, &list);
            }
        }
        Ok(())
    }

    /// Activates or deactivates a user account-wide, or on one `registered_users` license.
    async fn set_active(
        &self,
        client: &Client,
        account: &AccountOpt,
        username: &str,
        license: Option<String>,
        active: bool,
    ) -> CmdResult {
        let word = if active { "active" } else { "inactive" };
        if let Some(license) = license {
            let user = client.put_license_user(&license, username, active).await?;
            if self.json() {
                print_json(&user);
            } else {
                println!("{username} is now {word} on license {license}");
            }
            return Ok(());
        }
        let account = self.account(account)?;
        // PUT creates missing users and needs the kind: read the user first (404 when there
        // is none), and count the sessions a deactivation ends.
        let existing = client.get_user(&account, username).await?;
        let ended = if active {
            0
        } else {
            client
                .list_user_sessions(&account, username)
                .await?
                .sessions
                .len()
        };
        let put = PutUser {
            kind: existing.kind,
            active: Some(active),
        };
        let user = client.put_user(&account, username, &put).await?;
        if self.json() {
            print_json(&user);
        } else {
            println!("{username} is now {word} on account {account}");
            if ended > 0 {
                println!("{ended} live session(s) ended");
            }
        }
        Ok(())
    }

    fn print_user(&self, user: &User) {
        if self.json() {
            print_json(user);
            return;
        }
        let mut pairs = vec![
            ("account", user.account_id.clone()),
            ("username", user.username.clone()),
            ("kind", user.kind.as_str().to_owned()),
            ("active", yes_no(user.active)),
            ("created_at", time(user.created_at)),
        ];
        if let Some(id) = &user.client_id {
            pairs.push(("client_id", id.clone()));
        }
        if let Some(secret) = &user.client_secret {
            pairs.push(("client_secret", secret.clone()));
        }
        print!("{}", key_values(&pairs));
    }
}
