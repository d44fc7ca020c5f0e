//! `leasehold license`: create, list, show and change licenses; list their sessions,
//! registered users and queue. The license terms flags that `create` and `set` share, and the
//! text form of a license.

use clap::{Args, Subcommand, ValueEnum};
use leasehold_client::proto::{CreateLicense, License, LicenseModel, OnFull, PatchLicense};
use time::OffsetDateTime;

use super::output::{key_values, list_or_dash, opt, opt_time, print_json, time, yes_no, Table};
use super::{parse_time, AccountOpt, Admin, CmdResult, Common, EXIT_USAGE};
use crate::connect::Failure;

#[derive(Args, Debug)]
pub struct LicenseArgs {
    #[command(flatten)]
    pub(super) common: Common,
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
    /// The license's exact usage series: high and low water, average, denials and queue waits
    /// per bucket, and the utilization (text, `-o json`, or `--csv`).
    Usage(super::SeriesArgs),
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
    /// How often clients heartbeat, shorter than the inactivity timeout (default: a third of
    /// it, at most 60 s; 0 on `set`: back to the default).
    #[arg(long, value_name = "SECS")]
    heartbeat_interval: Option<i64>,
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
    /// Offline borrowing: the longest borrow in days (off unless set; 0 on `set`: off).
    #[arg(long, value_name = "DAYS")]
    max_borrow_days: Option<i64>,
    /// Most seats borrowed at once (0 on `set`: no limit of its own).
    #[arg(long, value_name = "N")]
    max_borrowed_seats: Option<i64>,
    /// Seats that must stay online, never borrowed (like FlexNet's BORROW_LOWWATER).
    #[arg(long, value_name = "N")]
    borrow_lowwater: Option<i64>,
    /// Alert (webhook `license.threshold`, `/metrics`) when this percentage of the seats is in
    /// use; 0 removes it (update).
    #[arg(long, value_name = "PERCENT")]
    alert_threshold_percent: Option<i64>,
    /// Alert (webhook `license.denials`, `/metrics`) at this many denials within an hour; 0
    /// removes it (update).
    #[arg(long, value_name = "N")]
    alert_denials_per_hour: Option<i64>,
}

impl Terms {
    /// The alerts the flags name, if any.
    fn alerts(&self) -> Option<leasehold_client::proto::LicenseAlerts> {
        (self.alert_threshold_percent.is_some() || self.alert_denials_per_hour.is_some()).then_some(
            leasehold_client::proto::LicenseAlerts {
                threshold_percent: self.alert_threshold_percent,
                denials_per_hour: self.alert_denials_per_hour,
            },
        )
    }
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

impl Admin {
    pub(super) async fn license_command(&self, args: LicenseArgs) -> CmdResult {
        let client = self.client()?;
        match args.command {
            LicenseCommand::Create(create) => {
                let create = *create;
                let t = create.terms;
                let alerts = t.alerts();
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
                    heartbeat_interval_secs: t.heartbeat_interval,
                    service_session_lifetime_secs: t.service_session_lifetime,
                    interactive_session_lifetime_secs: t.interactive_session_lifetime,
                    on_full: t.on_full.map(Into::into),
                    max_queue_wait_secs: t.max_queue_wait,
                    max_sessions_per_user: t.max_sessions_per_user,
                    overdraft_seats: t.overdraft_seats,
                    overdraft_percent: t.overdraft_percent,
                    starts_at: t.starts_at,
                    expires_at: t.expires_at,
                    max_borrow_days: t.max_borrow_days,
                    max_borrowed_seats: t.max_borrowed_seats,
                    borrow_lowwater: t.borrow_lowwater,
                    alerts,
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
            LicenseCommand::Usage(args) => return self.usage(args).await,
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
            if usage.borrowed > 0 {
                in_use.push_str(&format!(", {} borrowed", usage.borrowed));
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
                "heartbeat_interval",
                format!("{} s", license.heartbeat_interval_secs),
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
            (
                "borrowing",
                match license.max_borrow_days {
                    None => "off".to_owned(),
                    Some(days) => {
                        let mut text = format!("up to {days} days");
                        if let Some(n) = license.max_borrowed_seats {
                            text.push_str(&format!(", at most {n} away at once"));
                        }
                        if let Some(n) = license.borrow_lowwater.filter(|&n| n > 0) {
                            text.push_str(&format!(", {n} stay online"));
                        }
                        text
                    }
                },
            ),
            (
                "alerts",
                match license.alerts {
                    None => "-".to_owned(),
                    Some(a) => {
                        let mut parts = Vec::new();
                        if let Some(p) = a.threshold_percent {
                            parts.push(format!("at {p} % of the seats"));
                        }
                        if let Some(n) = a.denials_per_hour {
                            parts.push(format!("at {n} denials an hour"));
                        }
                        parts.join(", ")
                    }
                },
            ),
            ("created_at", time(license.created_at)),
        ]);
        print!("{}", key_values(&pairs));
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
    let alerts = t.alerts();
    let patch = PatchLicense {
        product: set.product,
        seats: t.seats,
        plan: t.plan,
        extra_seats: t.extra_seats,
        reserved,
        inactivity_timeout_secs: t.inactivity_timeout,
        heartbeat_interval_secs: t.heartbeat_interval,
        service_session_lifetime_secs: t.service_session_lifetime,
        interactive_session_lifetime_secs: t.interactive_session_lifetime,
        on_full: t.on_full.map(Into::into),
        max_queue_wait_secs: t.max_queue_wait,
        max_sessions_per_user: t.max_sessions_per_user,
        overdraft_seats: t.overdraft_seats,
        overdraft_percent: t.overdraft_percent,
        starts_at: t.starts_at,
        expires_at: t.expires_at,
        max_borrow_days: t.max_borrow_days,
        max_borrowed_seats: t.max_borrowed_seats,
        borrow_lowwater: t.borrow_lowwater,
        alerts,
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

fn on_full_str(on_full: OnFull) -> &'static str {
    match on_full {
        OnFull::Deny => "deny",
        OnFull::Queue => "queue",
    }
}
