//! The admin commands of the `leasehold` binary, all through the Rust SDK: `account`,
//! `license`, `user`, `device`, `token`, `oauth`, `session`, `usage`, `plans`, `webhook` and
//! `delegation`.
//!
//! The server URL and token come from flags, `LEASEHOLD_URL`/`LEASEHOLD_TOKEN` or the CLI
//! config file (see [`crate::connect`]). `--output text` (the default) prints aligned tables
//! and `key  value` blocks; `--output json` prints the server's JSON. Secrets shown once (an
//! account's admin token, a service user's client secret, a new user token) go to stdout with
//! a reminder on stderr, so `TOKEN=$(leasehold token create ...)` captures just the token.
//!
//! Exit codes: 0 done; 1 the server refused the request (its code and message are printed on
//! stderr: `error: 409 no_seat_available: ...`, or the error body with `--output json`);
//! 2 bad command line; 69 the server could not be reached; 78 the CLI is configured wrongly
//! (no token, unreadable config file).
//!
//! This module holds the command tree, [`run`] and the plumbing every command shares
//! ([`Common`] flags, `CmdError`, the `Admin` context); each resource's flags and command
//! live in its own submodule, and [`output`] renders the results.

mod account;
mod delegation;
mod device;
mod license;
mod output;
mod plans;
mod session;
mod token;
mod usage;
mod user;
mod webhook;

use std::process::ExitCode;

use clap::{Args, Subcommand};
use leasehold_client::{Client, ClientError};
use time::OffsetDateTime;

use crate::connect::{is_unreachable, ConnectArgs, Failure, OutputFormat, Settings};
use account::AccountArgs;
use delegation::DelegationArgs;
use device::DeviceArgs;
use license::LicenseArgs;
use output::{print_error, print_failure};
use plans::PlansArgs;
use session::SessionArgs;
use token::{OauthArgs, TokenArgs};
use usage::{SeriesArgs, UsageArgs};
use user::UserArgs;
use webhook::WebhookArgs;

/// Exit code: the server refused the request.
pub const EXIT_REFUSED: u8 = 1;
/// Exit code: the command line asks for nothing or for something contradictory.
pub const EXIT_USAGE: u8 = 2;

/// Flags every admin command takes (also after the subcommand: they are global).
#[derive(Args, Debug, Clone)]
pub struct Common {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Output format [config: output; default: text].
    #[arg(long, short = 'o', value_enum, global = true)]
    pub output: Option<OutputFormat>,
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Create accounts (root admin token).
    #[command(visible_alias = "accounts")]
    Account(AccountArgs),
    /// Create, list, show and change licenses; list their sessions, registered users and queue.
    #[command(visible_alias = "licenses")]
    License(LicenseArgs),
    /// Add, list and show the users of an account; activate and deactivate them.
    #[command(visible_alias = "users")]
    User(UserArgs),
    /// Activate, list and deactivate the devices of a node_locked license.
    #[command(visible_alias = "devices")]
    Device(DeviceArgs),
    /// Issue personal tokens for interactive users.
    #[command(visible_alias = "tokens")]
    Token(TokenArgs),
    /// Exchange a service user's client credentials for an access token (OAuth2).
    Oauth(OauthArgs),
    /// List and revoke sessions.
    #[command(visible_alias = "sessions")]
    Session(SessionArgs),
    /// A license's usage series (the same as `license usage`).
    Usage(UsageArgs),
    /// The plans the server offers (base and maximum seats).
    Plans(PlansArgs),
    /// Webhook endpoints: create, list, update, delete, ping; their delivery log, redelivery.
    #[command(visible_alias = "webhooks")]
    Webhook(WebhookArgs),
    /// Dark sites: seats delegated to a local server through signed files (request, create,
    /// import, renew, return, import-receipt, list).
    #[command(visible_alias = "delegations")]
    Delegation(DelegationArgs),
}

/// The value parser of the RFC 3339 time flags (`--starts-at`, `--from`...).
pub(crate) fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("not an RFC 3339 time (like 2027-01-31T00:00:00Z): {e}"))
}

/// The `--account` flag of the commands that act within one account.
#[derive(Args, Debug)]
struct AccountOpt {
    /// Account id [config: account].
    #[arg(long)]
    account: Option<String>,
}

impl AdminCommand {
    /// The flags shared by every command, wherever on the command line they were given.
    fn common(&self) -> &Common {
        match self {
            AdminCommand::Account(a) => &a.common,
            AdminCommand::License(a) => &a.common,
            AdminCommand::User(a) => &a.common,
            AdminCommand::Device(a) => &a.common,
            AdminCommand::Token(a) => &a.common,
            AdminCommand::Oauth(a) => &a.common,
            AdminCommand::Session(a) => &a.common,
            AdminCommand::Usage(a) => &a.common,
            AdminCommand::Plans(a) => &a.common,
            AdminCommand::Webhook(a) => &a.common,
            AdminCommand::Delegation(a) => &a.common,
        }
    }
}

/// Why a command failed.
enum CmdError {
    /// The request failed (refused by the server, or the server unreachable).
    Client(ClientError),
    /// Nothing was sent: bad configuration or command line.
    Failure(Failure),
}

impl From<ClientError> for CmdError {
    fn from(err: ClientError) -> Self {
        CmdError::Client(err)
    }
}

impl From<Failure> for CmdError {
    fn from(failure: Failure) -> Self {
        CmdError::Failure(failure)
    }
}

type CmdResult = Result<(), CmdError>;

/// Runs an admin command; every failure is printed here and becomes the exit code.
pub async fn run(command: AdminCommand) -> anyhow::Result<ExitCode> {
    let common = command.common().clone();
    let settings = match common.connect.resolve(None, None) {
        Ok(settings) => settings,
        Err(failure) => {
            print_failure(
                common.output.unwrap_or(OutputFormat::Text),
                &failure.message,
            );
            return Ok(failure.exit_code());
        }
    };
    let format = common
        .output
        .or(settings.file.output)
        .unwrap_or(OutputFormat::Text);
    let admin = Admin { settings, format };
    Ok(match admin.dispatch(command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(CmdError::Client(err)) => {
            print_error(format, &admin.settings.url, &err);
            ExitCode::from(if is_unreachable(&err) {
                crate::connect::EXIT_UNAVAILABLE
            } else {
                EXIT_REFUSED
            })
        }
        Err(CmdError::Failure(failure)) => {
            print_failure(format, &failure.message);
            failure.exit_code()
        }
    })
}

/// What a command runs with: the resolved connection settings and the output format.
struct Admin {
    settings: Settings,
    format: OutputFormat,
}

impl Admin {
    /// A client authenticated with the admin token.
    fn client(&self) -> Result<Client, Failure> {
        self.settings.client(Some("an admin token"))
    }

    /// The account a command acts within: `--account`, else the config file's.
    fn account(&self, given: &AccountOpt) -> Result<String, Failure> {
        given
            .account
            .clone()
            .or_else(|| self.settings.file.account.clone())
            .ok_or_else(|| {
                Failure::config(
                    "which account? pass --account ID or put account = \"ID\" in the CLI config file",
                )
            })
    }

    fn json(&self) -> bool {
        self.format == OutputFormat::Json
    }

    async fn dispatch(&self, command: AdminCommand) -> CmdResult {
        match command {
            AdminCommand::Account(args) => self.account_command(args).await,
            AdminCommand::License(args) => self.license_command(args).await,
            AdminCommand::User(args) => self.user_command(args).await,
            AdminCommand::Device(args) => self.device_command(args).await,
            AdminCommand::Token(args) => self.token_command(args).await,
            AdminCommand::Oauth(args) => self.oauth_command(args).await,
            AdminCommand::Session(args) => self.session_command(args).await,
            AdminCommand::Usage(args) => self.usage(args.series).await,
            AdminCommand::Plans(_) => self.plans().await,
            AdminCommand::Webhook(args) => self.webhook_command(args).await,
            AdminCommand::Delegation(args) => self.delegation_command(args).await,
        }
    }
}
