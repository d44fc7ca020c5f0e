//! `leasehold token` and `leasehold oauth`: the two ways to get a token for a user. `token
//! create` issues an interactive user's personal token (with the admin token); `oauth token`
//! exchanges a service user's client credentials for an access token (OAuth2). Either token is
//! printed alone on stdout.

use clap::{Args, Subcommand};

use super::output::print_json;
use super::{AccountOpt, Admin, CmdResult, Common};
use crate::connect::Failure;

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(flatten)]
    pub(super) common: Common,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Issue a personal token for an interactive user (printed once, alone on stdout).
    Create {
        /// Username.
        username: String,
        #[command(flatten)]
        account: AccountOpt,
    },
}

#[derive(Args, Debug)]
pub struct OauthArgs {
    #[command(flatten)]
    pub(super) common: Common,
    #[command(subcommand)]
    command: OauthCommand,
}

#[derive(Subcommand, Debug)]
enum OauthCommand {
    /// Get an access token with a service user's client credentials (printed alone on stdout).
    Token {
        /// The service user's client id [config: client_id].
        #[arg(long)]
        client_id: Option<String>,
        /// Its client secret [config: client_secret]; visible to other local users in the
        /// process list, so prefer the config file.
        #[arg(long)]
        client_secret: Option<String>,
    },
}

impl Admin {
    pub(super) async fn token_command(&self, args: TokenArgs) -> CmdResult {
        match args.command {
            TokenCommand::Create { username, account } => {
                let account = self.account(&account)?;
                let token = self
                    .client()?
                    .create_user_token(&account, &username)
                    .await?;
                if self.json() {
                    print_json(&token);
                } else {
                    println!("{}", token.token);
                }
                eprintln!("note: the token is shown only once: store it now.");
                Ok(())
            }
        }
    }

    pub(super) async fn oauth_command(&self, args: OauthArgs) -> CmdResult {
        match args.command {
            OauthCommand::Token {
                client_id,
                client_secret,
            } => {
                let file = &self.settings.file;
                let client_id = client_id
                    .or_else(|| file.client_id.clone())
                    .ok_or_else(|| {
                        Failure::config("pass --client-id or put client_id in the CLI config file")
                    })?;
                let secret = client_secret
                    .or_else(|| file.client_secret.clone())
                    .ok_or_else(|| {
                        Failure::config(
                            "pass --client-secret or put client_secret in the CLI config file",
                        )
                    })?;
                // The exchange itself needs no bearer token.
                let client = self.settings.client(None)?;
                let token = client.oauth_token(&client_id, &secret).await?;
                if self.json() {
                    print_json(&token);
                } else {
                    println!("{}", token.access_token);
                    eprintln!(
                        "note: a {} token, valid for {} s",
                        token.token_type, token.expires_in
                    );
                }
                Ok(())
            }
        }
    }
}
