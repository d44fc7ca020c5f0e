//! The admin commands of the `leasehold` binary, all through the Rust SDK: `account`,
//! `license`, `user`, `device`, `token`, `oauth`, `session`, `usage` and `plans`.
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

mod output;

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use leasehold_client::proto::{
    CreateLicense, Device, License, LicenseModel, OnFull, PatchLicense, PutUser, Session, User,
    UserKind,
};
use leasehold_client::{Client, ClientError, UsageQuery};
use time::OffsetDateTime;

use crate::connect::{is_unreachable, ConnectArgs, Failure, OutputFormat, Settings};
use output::{key_values, opt, opt_time, print_error, print_failure, print_json, time, Table};

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
    /// Seats in use, high and low water marks and denials of a license.
    Usage(UsageArgs),
    /// The plans the server offers (base and maximum seats).
    Plans(PlansArgs),
}

#[derive(Args, Debug)]
pub struct AccountArgs {
    #[command(flatten)]
    common: Common,
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

#[derive(Args, Debug)]
pub struct LicenseArgs {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: LicenseCommand,
}

#[derive(Subcommand, Debug)]
enum LicenseCommand {
    /// Create a license: give --seats, or --plan (and --extra-seats).
    Create(Box<LicenseCreate>),
    /// List the licenses of an account.
    List {
        #[command(flatten)]
        account: AccountOpt,
    },
    /// Show a license and its seats in use.
    Show {
        /// License id.
        id: String,
    },
    /// Change a license: seats, plan, extra seats, reserved users, timeouts...
    Set(Box<LicenseSet>),
    /// List the live sessions of a license.
    Sessions {
        /// License id.
        id: String,
    },
    /// List the users registered on a `registered_users` license.
    Users {
        /// License id.
        id: String,
    },
    /// List the clients waiting for a seat of a queueing license.
    Queue {
        /// License id.
        id: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModelArg {
    #[value(alias = "concurrent_sessions")]
    ConcurrentSessions,
    #[value(alias = "registered_users")]
    RegisteredUsers,
    #[value(alias = "node_locked")]
    NodeLocked,
}

impl From<ModelArg> for LicenseModel {
    fn from(model: ModelArg) -> Self {
        match model {
            ModelArg::ConcurrentSessions => LicenseModel::ConcurrentSessions,
            ModelArg::RegisteredUsers => LicenseModel::RegisteredUsers,
            ModelArg::NodeLocked => LicenseModel::NodeLocked,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OnFullArg {
    Deny,
    Queue,
}

impl From<OnFullArg> for OnFull {
    fn from(on_full: OnFullArg) -> Self {
        match on_full {
            OnFullArg::Deny => OnFull::Deny,
            OnFullArg::Queue => OnFull::Queue,
        }
    }
}

fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("not an RFC 3339 time (like 2027-01-31T00:00:00Z): {e}"))
}

/// License terms that `create` and `set` share.
#[derive(Args, Debug)]
struct Terms {
    /// Number of seats, set directly.
    #[arg(long)]
    seats: Option<i64>,
    /// A plan (base seats and cap come from the server's configuration; see `leasehold plans`).
    #[arg(long)]
    plan: Option<String>,
    /// Seats bought on top of the plan's base seats.
    #[arg(long)]
    extra_seats: Option<i64>,
    /// Sessions end after this long without a heartbeat.
    #[arg(long, value_name = "SECS")]
    inactivity_timeout: Option<i64>,
    /// Absolute lifetime of service sessions.
    #[arg(long, value_name = "SECS")]
    service_session_lifetime: Option<i64>,
    /// Absolute lifetime of interactive sessions (none by default).
    #[arg(long, value_name = "SECS")]
    interactive_session_lifetime: Option<i64>,
    /// What opening a session on a full license does.
    #[arg(long, value_enum)]
    on_full: Option<OnFullArg>,
    /// Longest wait in the queue (with --on-full queue).
    #[arg(long, value_name = "SECS")]
    max_queue_wait: Option<i64>,
    /// Most live sessions one user may hold (0 on `set`: no limit).
    #[arg(long, value_name = "N")]
    max_sessions_per_user: Option<i64>,
    /// Sessions allowed beyond the seats, as a count (0 on `set`: none).
    #[arg(long, value_name = "N")]
    overdraft_seats: Option<i64>,
    /// Sessions allowed beyond the seats, as a percentage of them.
    #[arg(long, value_name = "PERCENT")]
    overdraft_percent: Option<i64>,
    /// Start of the validity window (RFC 3339).
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    starts_at: Option<OffsetDateTime>,
    /// End of the validity window (RFC 3339); live sessions end then.
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    expires_at: Option<OffsetDateTime>,
}

#[derive(Args, Debug)]
struct LicenseCreate {
    /// Account id [config: account].
    #[arg(long)]
    account: Option<String>,
    /// Product name.
    #[arg(long)]
    product: String,
    /// Licensing model.
    #[arg(long, value_enum, default_value = "concurrent-sessions")]
    model: ModelArg,
    /// Users each guaranteed one seat (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "USERS")]
    reserved: Vec<String>,
    #[command(flatten)]
    terms: Terms,
}

#[derive(Args, Debug)]
struct LicenseSet {
    /// License id.
    id: String,
    /// New product name.
    #[arg(long)]
    product: Option<String>,
    /// Users each guaranteed one seat (comma-separated; replaces the list).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "USERS",
        conflicts_with = "no_reserved"
    )]
    reserved: Option<Vec<String>>,
    /// Remove every reservation.
    #[arg(long)]
    no_reserved: bool,
    /// Refuse new sessions (live ones run to their end).
    #[arg(long, conflicts_with = "resume")]
    suspend: bool,
    /// Accept new sessions again after --suspend.
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    terms: Terms,
}

#[derive(Args, Debug)]
pub struct UserArgs {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(Args, Debug)]
struct AccountOpt {
    /// Account id [config: account].
    #[arg(long)]
    account: Option<String>,
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

#[derive(Args, Debug)]
pub struct DeviceArgs {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: DeviceCommand,
}

#[derive(Subcommand, Debug)]
enum DeviceCommand {
    /// Activate a device on a node_locked license.
    ///
    /// Fails with activations_exhausted when all activations are taken; activating a device
    /// that already is changes nothing (not even its name).
    Activate {
        /// License id.
        #[arg(long)]
        license: String,
        /// The device's fingerprint (the device_id its sessions give).
        fingerprint: String,
        /// A name to recognize the device by.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List the devices activated on a license.
    List {
        /// License id.
        #[arg(long)]
        license: String,
    },
    /// Deactivate a device: frees its activation and ends its live sessions.
    Deactivate {
        /// License id.
        #[arg(long)]
        license: String,
        /// The device's fingerprint.
        fingerprint: String,
    },
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(flatten)]
    common: Common,
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
    common: Common,
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

#[derive(Args, Debug)]
pub struct SessionArgs {
    #[command(flatten)]
    common: Common,
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
    /// heartbeat).
    Revoke {
        /// Session ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(Args, Debug)]
pub struct UsageArgs {
    #[command(flatten)]
    common: Common,
    /// License id.
    license: String,
    /// Start of the period (RFC 3339).
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    from: Option<OffsetDateTime>,
    /// End of the period (RFC 3339).
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    to: Option<OffsetDateTime>,
    /// Bucket of the series: hour, day or month.
    #[arg(long)]
    bucket: Option<String>,
}

#[derive(Args, Debug)]
pub struct PlansArgs {
    #[command(flatten)]
    common: Common,
}

impl AdminCommand {
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

struct Admin {
    settings: Settings,
    format: OutputFormat,
}

impl Admin {
    fn client(&self) -> Result<Client, Failure> {
        self.settings.client(Some("an admin token"))
    }

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
            AdminCommand::Account(args) => self.account_command(args.command).await,
            AdminCommand::License(args) => self.license_command(args.command).await,
            AdminCommand::User(args) => self.user_command(args.command).await,
            AdminCommand::Device(args) => self.device_command(args.command).await,
            AdminCommand::Token(args) => self.token_command(args.command).await,
            AdminCommand::Oauth(args) => self.oauth_command(args.command).await,
            AdminCommand::Session(args) => self.session_command(args.command).await,
            AdminCommand::Usage(args) => self.usage(args).await,
            AdminCommand::Plans(_) => self.plans().await,
        }
    }

    // ----- accounts ---------------------------------------------------------------------------

    async fn account_command(&self, command: AccountCommand) -> CmdResult {
        match command {
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

    // ----- licenses ---------------------------------------------------------------------------

    async fn license_command(&self, command: LicenseCommand) -> CmdResult {
        let client = self.client()?;
        match command {
            LicenseCommand::Create(create) => {
                let create = *create;
                let t = create.terms;
                let body = CreateLicense {
                    account_id: self.account(&AccountOpt {
                        account: create.account,
                    })?,
                    product: create.product,
                    model: create.model.into(),
                    seats: t.seats,
                    plan: t.plan,
                    extra_seats: t.extra_seats,
                    reserved: create.reserved,
                    inactivity_timeout_secs: t.inactivity_timeout,
                    service_session_lifetime_secs: t.service_session_lifetime,
                    interactive_session_lifetime_secs: t.interactive_session_lifetime,
                    on_full: t.on_full.map(Into::into),
                    max_queue_wait_secs: t.max_queue_wait,
                    max_sessions_per_user: t.max_sessions_per_user,
                    overdraft_seats: t.overdraft_seats,
                    overdraft_percent: t.overdraft_percent,
                    starts_at: t.starts_at,
                    expires_at: t.expires_at,
                };
                let license = client.create_license(&body).await?;
                self.print_license(&license);
            }
            LicenseCommand::List { account } => {
                let account = self.account(&account)?;
                let list = client.list_licenses(&account).await?;
                if self.json() {
                    print_json(&list);
                } else if list.licenses.is_empty() {
                    println!("no licenses");
                } else {
                    let mut table = Table::new(&[
                        "ID",
                        "PRODUCT",
                        "MODEL",
                        "SEATS",
                        "PLAN",
                        "ON FULL",
                        "EXPIRES",
                        "SUSPENDED",
                    ]);
                    for license in &list.licenses {
                        table.row(vec![
                            license.id.clone(),
                            license.product.clone(),
                            license.model.as_str().to_owned(),
                            license.seats.to_string(),
                            opt(license.plan.as_deref()),
                            on_full_str(license.on_full).to_owned(),
                            opt_time(license.expires_at),
                            yes_no(license.suspended),
                        ]);
                    }
                    print!("{}", table.render());
                }
            }
            LicenseCommand::Show { id } => {
                let license = client.get_license(&id).await?;
                self.print_license(&license);
            }
            LicenseCommand::Set(set) => {
                let id = set.id.clone();
                let patch = license_patch(*set)?;
                let license = client.patch_license(&id, &patch).await?;
                // PATCH answers without usage; show the license as `show` does.
                let license = match license.usage {
                    Some(_) => license,
                    None => client.get_license(&license.id).await.unwrap_or(license),
                };
                self.print_license(&license);
            }
            LicenseCommand::Sessions { id } => {
                let list = client.list_sessions(&id).await?;
                self.print_sessions(&list.sessions, &list);
            }
            LicenseCommand::Users { id } => {
                let list = client.list_license_users(&id).await?;
                if self.json() {
                    print_json(&list);
                } else {
                    let mut table = Table::new(&["USER", "ACTIVE", "UPDATED"]);
                    for user in &list.users {
                        table.row(vec![
                            user.username.clone(),
                            yes_no(user.active),
                            time(user.updated_at),
                        ]);
                    }
                    print!("{}", table.render());
                    println!("{} of {} active", list.active, list.max_active);
                }
            }
            LicenseCommand::Queue { id } => {
                let queue = client.license_queue(&id).await?;
                if self.json() {
                    print_json(&queue);
                } else if queue.waiting.is_empty() {
                    println!("nobody is waiting");
                } else {
                    let mut table =
                        Table::new(&["POS", "USER", "DEVICE", "INSTANCE", "WAITING SINCE"]);
                    for w in &queue.waiting {
                        table.row(vec![
                            w.position.to_string(),
                            w.username.clone(),
                            w.device_id.clone(),
                            w.instance_id.clone(),
                            format!("{} ({} s)", time(w.waiting_since), w.waited_secs),
                        ]);
                    }
                    print!("{}", table.render());
                }
            }
        }
        Ok(())
    }

    fn print_license(&self, license: &License) {
        if self.json() {
            print_json(license);
            return;
        }
        let seats = match &license.plan {
            Some(plan) => format!(
                "{} (plan {plan}, {} extra)",
                license.seats, license.extra_seats
            ),
            None => license.seats.to_string(),
        };
        let mut pairs = vec![
            ("id", license.id.clone()),
            ("account", license.account_id.clone()),
            ("product", license.product.clone()),
            ("model", license.model.as_str().to_owned()),
            ("seats", seats),
        ];
        if let Some(usage) = &license.usage {
            let mut in_use = format!(
                "{} of {} ({} available)",
                usage.in_use, usage.seats, usage.available
            );
            if usage.overdraft_in_use > 0 {
                in_use.push_str(&format!(", {} in overdraft", usage.overdraft_in_use));
            }
            pairs.push(("in_use", in_use));
            if let Some(activations) = usage.activations {
                pairs.push(("activations", activations.to_string()));
            }
        }
        pairs.extend([
            ("reserved", list_or_dash(&license.reserved)),
            (
                "inactivity_timeout",
                format!("{} s", license.inactivity_timeout_secs),
            ),
            (
                "service_lifetime",
                format!("{} s", license.service_session_lifetime_secs),
            ),
            (
                "interactive_lifetime",
                opt(license
                    .interactive_session_lifetime_secs
                    .map(|s| format!("{s} s"))),
            ),
            ("on_full", on_full_str(license.on_full).to_owned()),
            (
                "max_queue_wait",
                format!("{} s", license.max_queue_wait_secs),
            ),
            ("max_per_user", opt(license.max_sessions_per_user)),
            ("overdraft", license.overdraft.to_string()),
            ("starts_at", opt_time(license.starts_at)),
            ("expires_at", opt_time(license.expires_at)),
            ("suspended", yes_no(license.suspended)),
            ("created_at", time(license.created_at)),
        ]);
        print!("{}", key_values(&pairs));
    }

    fn print_sessions<T: serde::Serialize>(&self, sessions: &[Session], whole: &T) {
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

    // ----- users and tokens -------------------------------------------------------------------

    async fn user_command(&self, command: UserCommand) -> CmdResult {
        let client = self.client()?;
        match command {
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

    // ----- devices ------------------------------------------------------------------------------

    async fn device_command(&self, command: DeviceCommand) -> CmdResult {
        let client = self.client()?;
        match command {
            DeviceCommand::Activate {
                license,
                fingerprint,
                name,
            } => {
                let activation = client
                    .activate_device(&license, &fingerprint, &name)
                    .await?;
                self.print_device(&activation.device);
                if !activation.created {
                    eprintln!("note: the device was already activated: nothing changed.");
                }
            }
            DeviceCommand::List { license } => {
                let list = client.list_devices(&license).await?;
                if self.json() {
                    print_json(&list);
                    return Ok(());
                }
                if !list.devices.is_empty() {
                    let mut table = Table::new(&["FINGERPRINT", "NAME", "ACTIVATED"]);
                    for device in &list.devices {
                        table.row(vec![
                            device.fingerprint.clone(),
                            dash_if_empty(&device.name),
                            time(device.activated_at),
                        ]);
                    }
                    print!("{}", table.render());
                }
                println!(
                    "{} of {} devices activated",
                    list.devices.len(),
                    list.max_devices
                );
            }
            DeviceCommand::Deactivate {
                license,
                fingerprint,
            } => {
                // Count the sessions the deactivation ends (the DELETE answers no body).
                let live = client.list_sessions(&license).await?;
                let ended: Vec<String> = live
                    .sessions
                    .into_iter()
                    .filter(|s| s.device_id == fingerprint)
                    .map(|s| s.id)
                    .collect();
                client.deactivate_device(&license, &fingerprint).await?;
                if self.json() {
                    print_json(&serde_json::json!({
                        "license_id": license,
                        "fingerprint": fingerprint,
                        "deactivated": true,
                        "ended_sessions": ended,
                    }));
                } else {
                    println!("{fingerprint} is now deactivated on license {license}");
                    if !ended.is_empty() {
                        println!("{} live session(s) ended", ended.len());
                    }
                }
            }
        }
        Ok(())
    }

    fn print_device(&self, device: &Device) {
        if self.json() {
            print_json(device);
            return;
        }
        print!(
            "{}",
            key_values(&[
                ("license", device.license_id.clone()),
                ("fingerprint", device.fingerprint.clone()),
                ("name", dash_if_empty(&device.name)),
                ("activated_at", time(device.activated_at)),
            ])
        );
    }

    async fn token_command(&self, command: TokenCommand) -> CmdResult {
        match command {
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

    async fn oauth_command(&self, command: OauthCommand) -> CmdResult {
        match command {
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

    // ----- sessions, usage, plans -----------------------------------------------------------

    async fn session_command(&self, command: SessionCommand) -> CmdResult {
        let client = self.client()?;
        match command {
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
            SessionCommand::Revoke { ids } => {
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

    async fn usage(&self, args: UsageArgs) -> CmdResult {
        let query = UsageQuery {
            from: args.from,
            to: args.to,
            bucket: args.bucket,
        };
        let report = self.client()?.usage_with(&args.license, &query).await?;
        if self.json() {
            print_json(&report);
            return Ok(());
        }
        print!(
            "{}",
            key_values(&[
                ("license", report.license_id.clone()),
                ("seats", report.now.seats.to_string()),
                ("in_use", report.now.in_use.to_string()),
                ("available", report.now.available.to_string()),
                ("overdraft_in_use", report.now.overdraft_in_use.to_string()),
                ("high_water", report.high_water.to_string()),
                ("low_water", report.low_water.to_string()),
                ("denials", report.denials.to_string()),
                ("since", time(report.since)),
            ])
        );
        Ok(())
    }

    async fn plans(&self) -> CmdResult {
        let plans = self.client()?.list_plans().await?;
        if self.json() {
            print_json(&plans);
        } else if plans.is_empty() {
            println!("no plans configured");
        } else {
            let mut table = Table::new(&["PLAN", "BASE SEATS", "MAX SEATS"]);
            for plan in &plans {
                table.row(vec![
                    plan.name.clone(),
                    plan.base_seats.to_string(),
                    plan.max_seats.to_string(),
                ]);
            }
            print!("{}", table.render());
        }
        Ok(())
    }
}

/// The PATCH body of `license set`; refuses a command line that changes nothing.
fn license_patch(set: LicenseSet) -> Result<PatchLicense, Failure> {
    let t = set.terms;
    let reserved = if set.no_reserved {
        Some(Vec::new())
    } else {
        set.reserved
    };
    let suspended = match (set.suspend, set.resume) {
        (true, _) => Some(true),
        (false, true) => Some(false),
        (false, false) => None,
    };
    let patch = PatchLicense {
        product: set.product,
        seats: t.seats,
        plan: t.plan,
        extra_seats: t.extra_seats,
        reserved,
        inactivity_timeout_secs: t.inactivity_timeout,
        service_session_lifetime_secs: t.service_session_lifetime,
        interactive_session_lifetime_secs: t.interactive_session_lifetime,
        on_full: t.on_full.map(Into::into),
        max_queue_wait_secs: t.max_queue_wait,
        max_sessions_per_user: t.max_sessions_per_user,
        overdraft_seats: t.overdraft_seats,
        overdraft_percent: t.overdraft_percent,
        starts_at: t.starts_at,
        expires_at: t.expires_at,
        suspended,
    };
    let changes = serde_json::to_value(&patch)
        .ok()
        .and_then(|v| v.as_object().map(|o| o.len()))
        .unwrap_or(0);
    if changes == 0 {
        return Err(Failure {
            message:
                "nothing to change: give at least one option (see `leasehold license set --help`)"
                    .into(),
            code: EXIT_USAGE,
        });
    }
    Ok(patch)
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}

fn dash_if_empty(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

fn list_or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(", ")
    }
}

fn on_full_str(on_full: OnFull) -> &'static str {
    match on_full {
        OnFull::Deny => "deny",
        OnFull::Queue => "queue",
    }
}
