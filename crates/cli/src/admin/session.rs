//! `leasehold session`: list the live sessions of a license or a user, revoke sessions (by
//! id, or every session of a license at once), reclaim borrowed seats and list a license's
//! revoked borrow leases. Also the session table that `license sessions` and `user sessions`
//! print (a borrowed session is marked, its end is its EXPIRES).

use clap::{Args, Subcommand};
use leasehold_client::proto::Session;

use super::output::{print_json, time, Table};
use super::{AccountOpt, Admin, CmdResult, Common, EXIT_USAGE};
use crate::connect::Failure;

#[derive(Args, Debug)]
pub struct SessionArgs {
    #[command(flatten)]
    pub(super) common: Common,
    #[command(subcommand)]
    command: SessionCommand,
}

#[derive(Subcommand, Debug)]
enum SessionCommand {
    /// List live sessions of a license (--license) or of a user (--user).
    List {
        /// License id.
        #[arg(long, required_unless_present = "user", conflicts_with = "user")]
        license: Option<String>,
        /// Username (with --account or the config's account).
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        account: AccountOpt,
    },
    /// Revoke sessions (their seats are freed at once; their holders learn it on the next
    /// heartbeat): by id, or every session of a license with `--license ID --all`.
    Revoke {
        /// Session ids.
        #[arg(required_unless_present = "all", conflicts_with_all = ["license", "all"])]
        ids: Vec<String>,
        /// The license whose sessions `--all` revokes.
        #[arg(long, requires = "all")]
        license: Option<String>,
        /// Revoke every live session of `--license` at once (one durable decision: none of
        /// them is live once this answers; their audit events land in the background).
        #[arg(long, requires = "license")]
        all: bool,
    },
    /// Reclaim borrowed seats (a lost or stolen device): each seat is back in the pool at once,
    /// audited as `reclaimed`, and its lease is listed as revoked until it would have expired.
    Reclaim {
        /// Ids of borrowed sessions.
        #[arg(required = true)]
        ids: Vec<String>,
        /// The license they borrow from (checked: only its borrowed sessions are reclaimed).
        #[arg(long)]
        license: String,
    },
    /// List the borrow leases of a license that no longer hold a seat though they have not
    /// expired (reclaimed, returned, revoked).
    RevokedLeases {
        /// License id.
        #[arg(long)]
        license: String,
    },
}

impl Admin {
    pub(super) async fn session_command(&self, args: SessionArgs) -> CmdResult {
        let client = self.client()?;
        match args.command {
            SessionCommand::List {
                license,
                user,
                account,
            } => {
                let list = match (license, user) {
                    (Some(license), _) => client.list_sessions(&license).await?,
                    (None, Some(user)) => {
                        let account = self.account(&account)?;
                        client.list_user_sessions(&account, &user).await?
                    }
                    (None, None) => {
                        return Err(Failure {
                            message: "pass --license ID or --user NAME".into(),
                            code: EXIT_USAGE,
                        }
                        .into())
                    }
                };
                self.print_sessions(&list.sessions, &list);
            }
            SessionCommand::Revoke {
                license: Some(license),
                all: true,
                ..
            } => {
                let answer = client.revoke_license_sessions(&license).await?;
                if self.json() {
                    print_json(&answer);
                } else {
                    println!("revoked {} session(s) of license {license}", answer.revoked);
                }
            }
            SessionCommand::Reclaim { ids, license } => {
                let live = client.list_sessions(&license).await?;
                for id in &ids {
                    let borrowed = live
                        .sessions
                        .iter()
                        .any(|s| &s.id == id && s.borrow_until.is_some());
                    if !borrowed {
                        return Err(Failure {
                            message: format!(
                                "{id} is not a live borrowed session of license {license} \
                                 (`leasehold session list --license {license}` marks them)"
                            ),
                            code: EXIT_USAGE,
                        }
                        .into());
                    }
                }
                for id in &ids {
                    client.close_session(id).await?;
                    if !self.json() {
                        println!("reclaimed {id}");
                    }
                }
                if self.json() {
                    print_json(&serde_json::json!({ "reclaimed": ids }));
                }
            }
            SessionCommand::RevokedLeases { license } => {
                let list = client.revoked_leases(&license).await?;
                if self.json() {
                    print_json(&list);
                } else if list.leases.is_empty() {
                    println!("no revoked leases");
                } else {
                    let mut table = Table::new(&[
                        "SESSION",
                        "USER",
                        "DEVICE",
                        "REASON",
                        "ENDED",
                        "LEASE EXPIRES",
                    ]);
                    for l in &list.leases {
                        table.row(vec![
                            l.session_id.clone(),
                            l.username.clone(),
                            l.device_id.clone(),
                            l.reason.as_str().to_owned(),
                            time(l.ended_at),
                            time(l.lease_expires_at),
                        ]);
                    }
                    print!("{}", table.render());
                }
            }
            SessionCommand::Revoke { ids, .. } => {
                let mut revoked = Vec::new();
                for id in ids {
                    if let Err(err) = client.close_session(&id).await {
                        if !self.json() {
                            for done in &revoked {
                                println!("revoked {done}");
                            }
                        }
                        return Err(err.into());
                    }
                    revoked.push(id);
                }
                if self.json() {
                    print_json(&serde_json::json!({ "revoked": revoked }));
                } else {
                    for id in &revoked {
                        println!("revoked {id}");
                    }
                }
            }
        }
        Ok(())
    }

    /// Prints sessions as a table, or `whole` (the answer they came in) as JSON.
    pub(super) fn print_sessions<T: serde::Serialize>(&self, sessions: &[Session], whole: &T) {
        if self.json() {
            print_json(whole);
            return;
        }
        if sessions.is_empty() {
            println!("no live sessions");
            return;
        }
        let mut table = Table::new(&[
            "ID", "LICENSE", "USER", "KIND", "DEVICE", "INSTANCE", "OPENED", "EXPIRES",
        ]);
        for s in sessions {
            let mut user = s.username.clone();
            if s.overdraft {
                user.push_str(" (overdraft)");
            }
            if s.borrow_until.is_some() {
                user.push_str(" (borrowed)");
            }
            table.row(vec![
                s.id.clone(),
                s.license_id.clone(),
                user,
                s.kind.as_str().to_owned(),
                s.device_id.clone(),
                s.instance_id.clone(),
                time(s.opened_at),
                time(s.expires_at),
            ]);
        }
        print!("{}", table.render());
    }
}
