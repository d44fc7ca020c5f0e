//! Offline borrowing from the command line: `leasehold borrow` takes a seat for days and saves
//! it to a file, `leasehold return` gives it back early, and `leasehold run --lease FILE --
//! PROGRAM` runs a program on it with no network.
//!
//! ```text
//!   borrow --license ID --days N --out seat.lease ──► seat.lease (lease + the server's keys)
//!   run --lease seat.lease -- PROGRAM
//!      ├─ the lease does not verify (signature, device, expired) ──► exit 77, PROGRAM not run
//!      ├─ server reachable and lists it revoked (reclaimed...) ────► exit 77, PROGRAM not run
//!      ├─ server unreachable, or no credentials ──► offline: the lease alone decides
//!      └─ PROGRAM runs ── until it exits (its code), or the borrow ends: SIGTERM, then SIGKILL
//!                         after --kill-after ──► exit 76
//!   return --lease seat.lease ──► the seat is free at once; the file is removed
//! ```
//!
//! The device id defaults to this machine's hostname, as for `run`: a lease borrowed here runs
//! here. The borrow's end is judged by this machine's wall clock, as the lease's `exp` is.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use leasehold_client::clock::{Clock, SystemClock};
use leasehold_client::{BorrowedSeat, ClientError, ErrorCode};
use time::OffsetDateTime;

use crate::connect::{is_unreachable, ConnectArgs, EXIT_CONFIG, EXIT_UNAVAILABLE};
use crate::run::{default_device_id, say, supervise, Signals, EXIT_LEASE_LOST, EXIT_REFUSED};

/// How long `run --lease` tries to reach the server for the revoked-lease list before it goes
/// on offline.
const ONLINE_CHECK: Duration = Duration::from_secs(5);

#[derive(Args, Debug)]
pub struct BorrowArgs {
    /// License to borrow a seat of.
    #[arg(long, value_name = "ID")]
    license: String,
    /// Borrow for this many days (within the license's max_borrow_days).
    #[arg(
        long,
        value_name = "N",
        required_unless_present = "until",
        conflicts_with = "until"
    )]
    days: Option<u32>,
    /// Borrow until this instant (RFC 3339) instead of --days.
    #[arg(long, value_parser = crate::admin::parse_time, value_name = "TIME")]
    until: Option<OffsetDateTime>,
    /// Where to save the borrowed seat.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Device id the seat is bound to [default: this machine's hostname].
    #[arg(long)]
    device_id: Option<String>,
    /// Instance id of the borrowed session [default: random].
    #[arg(long)]
    instance_id: Option<String>,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Args, Debug)]
pub struct ReturnArgs {
    /// The borrowed seat to give back (`leasehold borrow --out FILE`); removed once returned.
    #[arg(long, value_name = "FILE")]
    lease: PathBuf,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// `leasehold borrow`.
pub async fn borrow(args: BorrowArgs) -> anyhow::Result<ExitCode> {
    Ok(ExitCode::from(borrow_seat(args).await))
}

async fn borrow_seat(args: BorrowArgs) -> u8 {
    let client = match args
        .connect
        .resolve(None, None)
        .and_then(|settings| settings.client(Some("a user token")))
    {
        Ok(client) => client,
        Err(failure) => {
            say_borrow(&failure.message);
            return failure.code;
        }
    };
    let until = match (args.until, args.days) {
        (Some(until), _) => until,
        (None, Some(days)) => SystemClock.now() + time::Duration::days(i64::from(days)),
        (None, None) => {
            say_borrow("give --days N or --until TIME");
            return EXIT_CONFIG;
        }
    };
    let device_id = args.device_id.unwrap_or_else(default_device_id);
    let instance_id = args
        .instance_id
        .unwrap_or_else(|| format!("borrow-{:016x}", rand::random::<u64>()));
    let seat = match client
        .borrow(&args.license, &device_id, &instance_id, until)
        .await
    {
        Ok(seat) => seat,
        Err(err) => {
            say_borrow(format!(
                "no seat of license {} was lent: {err}",
                args.license
            ));
            return if is_unreachable(&err) {
                EXIT_UNAVAILABLE
            } else if err.code() == Some(ErrorCode::NoSeatAvailable) {
                crate::run::EXIT_NO_SEAT
            } else {
                EXIT_REFUSED
            };
        }
    };
    if let Err(err) = seat.save(&args.out) {
        // A seat nobody can use must not stay taken: give it back.
        let _ = client.return_borrowed(&seat).await;
        say_borrow(format!("{err}; the seat was given back"));
        return EXIT_CONFIG;
    }
    println!(
        "borrowed session {} of license {} until {} (device {}), saved to {}",
        seat.session_id,
        seat.license_id,
        rfc3339(seat.borrow_until),
        seat.device_id,
        args.out.display()
    );
    0
}

/// `leasehold return`.
pub async fn return_seat(args: ReturnArgs) -> anyhow::Result<ExitCode> {
    let code = match give_back(&args).await {
        Ok(()) => 0,
        Err(code) => code,
    };
    Ok(ExitCode::from(code))
}

async fn give_back(args: &ReturnArgs) -> Result<(), u8> {
    let seat = BorrowedSeat::load(&args.lease).map_err(|err| {
        say_return(&err);
        EXIT_CONFIG
    })?;
    let client = args
        .connect
        .resolve(None, None)
        .and_then(|settings| settings.client(Some("the token of the user who borrowed")))
        .map_err(|failure| {
            say_return(&failure.message);
            failure.code
        })?;
    match client.return_borrowed(&seat).await {
        Ok(()) => println!(
            "returned session {} of license {}",
            seat.session_id, seat.license_id
        ),
        // Ended already (reclaimed, expired, returned): the seat is not held; the file goes.
        Err(err) if err.is_session_ended() => println!(
            "session {} had ended already ({}); nothing to return",
            seat.session_id,
            err.end_reason().map_or("unknown", |r| r.as_str())
        ),
        Err(err) => {
            say_return(format!("the seat was not returned: {err}"));
            return Err(if is_unreachable(&err) {
                EXIT_UNAVAILABLE
            } else {
                EXIT_REFUSED
            });
        }
    }
    remove(&args.lease);
    Ok(())
}

fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        say_return(format!("could not remove {}: {e}", path.display()));
    }
}

/// `leasehold run --lease FILE -- PROGRAM`: a program run on a borrowed seat.
pub(crate) struct OnLease<'a> {
    pub(crate) path: &'a Path,
    pub(crate) connect: &'a ConnectArgs,
    pub(crate) device_id: &'a str,
}

impl OnLease<'_> {
    /// Checks the lease (offline, then online when the server answers) and runs the program
    /// until it exits or the borrow ends; answers the exit code.
    pub(crate) async fn run(
        &self,
        command: &[OsString],
        signals: &mut Signals,
        kill_after: Duration,
    ) -> u8 {
        let seat = match BorrowedSeat::load(self.path) {
            Ok(seat) => seat,
            Err(err) => {
                say(&err);
                return EXIT_REFUSED;
            }
        };
        let now = SystemClock.now();
        if let Err(err) = seat.verify_offline(self.device_id, now.unix_timestamp()) {
            say(format!("the borrowed seat cannot be used: {err}"));
            return EXIT_REFUSED;
        }
        if let Err(err) = self.check_online(&seat, now.unix_timestamp()).await {
            say(format!("the borrowed seat cannot be used: {err}"));
            return EXIT_REFUSED;
        }
        // The borrow ends at the lease's `exp`, by this machine's wall clock.
        let left = (seat.borrow_until - now).max(time::Duration::ZERO);
        let left = Duration::try_from(left).unwrap_or(Duration::ZERO);
        let ends = async move {
            tokio::time::sleep(left).await;
            "the borrow ended".to_owned()
        };
        let code = supervise(&seat.session_id, ends, command, signals, kill_after).await;
        if code == EXIT_LEASE_LOST {
            say(format!(
                "the borrowed seat ended at {}; borrow again with `leasehold borrow`",
                rfc3339(seat.borrow_until)
            ));
        }
        code
    }

    /// The revoked-lease list, when a server and credentials are configured and the server
    /// answers within `ONLINE_CHECK`; otherwise the offline check stands.
    async fn check_online(&self, seat: &BorrowedSeat, now: i64) -> Result<(), ClientError> {
        let Ok(client) = self
            .connect
            .resolve(None, None)
            .and_then(|settings| settings.client(Some("a user token")))
        else {
            say("no credentials to reach the server: running on the lease alone (offline)");
            return Ok(());
        };
        match tokio::time::timeout(
            ONLINE_CHECK,
            client.check_borrowed(seat, self.device_id, now),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) if err.is_retryable() || is_unreachable(&err) => {
                say("the license server cannot be reached: running on the lease alone (offline)");
                Ok(())
            }
            Ok(Err(err)) => Err(err),
            Err(_) => {
                say("the license server did not answer: running on the lease alone (offline)");
                Ok(())
            }
        }
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.to_string())
}

fn say_borrow(message: impl std::fmt::Display) {
    eprintln!("leasehold borrow: {message}");
}

fn say_return(message: impl std::fmt::Display) {
    eprintln!("leasehold return: {message}");
}
