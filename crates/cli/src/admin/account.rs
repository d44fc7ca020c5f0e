//! `leasehold account`: create accounts (with the root admin token).

use clap::{Args, Subcommand};

use super::output::{key_values, print_json};
use super::{Admin, CmdResult, Common};

#[derive(Args, Debug)]
pub struct AccountArgs {
    #[command(flatten)]
    pub(super) common: Common,
    #[command(subcommand)]
    command: AccountCommand,
}

#[derive(Subcommand, Debug)]
enum AccountCommand {
    /// Create an account; its admin token is shown once.
    Create {
        /// The account's name.
        name: String,
    },
}

impl Admin {
    pub(super) async fn account_command(&self, args: AccountArgs) -> CmdResult {
        match args.command {
            AccountCommand::Create { name } => {
                let created = self.client()?.create_account(&name).await?;
                if self.json() {
                    print_json(&created);
                } else {
                    print!(
                        "{}",
                        key_values(&[
                            ("id", created.id.clone()),
                            ("name", created.name.clone()),
                            ("admin_token", created.admin_token.clone()),
                        ])
                    );
                }
                eprintln!("note: the admin token is shown only once: store it now.");
                Ok(())
            }
        }
    }
}
