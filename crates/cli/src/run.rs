//! `leasehold run --license ID -- PROGRAM ARGS...`: runs any program while holding a seat, so
//! a legacy program is licensed without changing it. `leasehold run --lease seat.lease --
//! PROGRAM` runs it on a borrowed seat instead, with no network needed (see `borrow`).
//!
//! ```text
//!   checkout ──(no seat, no --wait)──────────────────────────► exit 75
//!      │  └──(no seat, --wait SECS: queue or ask again until SECS)──┘ (or seat)
//!      ▼
//!   spawn PROGRAM (env LEASEHOLD_SESSION_ID) ── heartbeats in the background
//!      │
//!      ├──(PROGRAM exits with N / dies of signal S)──► return seat ──► exit N / 128+S
//!      ├──(SIGINT, SIGTERM, SIGHUP, SIGQUIT to us)───► forwarded to PROGRAM, keep waiting
//!      └──(seat lost: revoked, expired...)──► message on stderr, SIGTERM to PROGRAM,
//!                                             SIGKILL after --kill-after SECS ──► exit 76
//! ```
//!
//! Exit codes: the program's own code; 128+S when it died of signal S; 75 no seat free (after
//! `--wait`, if given); 76 the seat was lost while the program ran; 77 the server refused the
//! checkout (bad token, unknown license, license not active...); 69 server unreachable; 78
//! configuration error (no token...); 126 the program cannot be executed; 127 not found; 71
//! signal handlers could not be installed. A signal that arrives before the seat is taken
//! (while waiting for one) ends `run` with 128+S.
//!
//! Signals: the program runs in our process group, so a Ctrl-C typed in the terminal reaches it
//! directly; SIGINT and SIGQUIT are forwarded only when they cannot have come from our
//! terminal (we are not its foreground group), so the program does not get Ctrl-C twice.
//! SIGTERM and SIGHUP are always forwarded. After the program exits, the seat is returned.
//! Defaults: device id = this machine's hostname, instance id = random per run.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use leasehold_client::{CheckoutOptions, Client, ClientError, ErrorCode, LeaseGuard};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::Instant;

use crate::connect::{is_unreachable, ConnectArgs, EXIT_UNAVAILABLE};

/// Exit code: no seat was free (sysexits `EX_TEMPFAIL`: try again later).
pub const EXIT_NO_SEAT: u8 = 75;
/// Exit code: the seat was lost while the program ran, and the program was stopped.
pub const EXIT_LEASE_LOST: u8 = 76;
/// Exit code: the server refused the checkout (sysexits `EX_NOPERM`).
pub const EXIT_REFUSED: u8 = 77;
/// Exit code: the operating system refused something we need, such as signal handlers
/// (sysexits `EX_OSERR`).
pub const EXIT_OS_ERROR: u8 = 71;
/// Exit code: the program exists but cannot be executed (as in shells).
pub const EXIT_CANNOT_EXECUTE: u8 = 126;
/// Exit code: the program was not found (as in shells).
pub const EXIT_NOT_FOUND: u8 = 127;

/// Longest pause between two tries of `--wait` on a license that does not queue.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);
/// How long returning the seat may take before we give up (it then frees at expiry).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Args, Debug)]
pub struct RunArgs {
    /// License to take a seat of.
    #[arg(
        long,
        value_name = "ID",
        required_unless_present = "lease",
        conflicts_with = "lease"
    )]
    license: Option<String>,
    /// Run on a borrowed seat (`leasehold borrow --out FILE`) instead of taking one: works
    /// with no network until the borrow ends; checks the revoked-lease list when the server
    /// can be reached.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["wait", "client_id", "instance_id"])]
    lease: Option<std::path::PathBuf>,
    #[command(flatten)]
    connect: ConnectArgs,
    /// Take the seat as this service user (OAuth2 client credentials) instead of with a token
    /// [config: client_id].
    #[arg(long)]
    client_id: Option<String>,
    /// The service user's secret [config: client_secret]; visible to other local users in the
    /// process list, so prefer the config file.
    #[arg(long)]
    client_secret: Option<String>,
    /// When no seat is free, wait up to SECS for one (in the server's queue when the license
    /// queues, else by asking again now and then).
    #[arg(long, value_name = "SECS")]
    wait: Option<u64>,
    /// Device id of the session [default: this machine's hostname].
    #[arg(long)]
    device_id: Option<String>,
    /// Instance id of the session [default: random per run].
    #[arg(long)]
    instance_id: Option<String>,
    /// When the seat is lost, how long the program has to exit after SIGTERM before SIGKILL.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    kill_after: u64,
    /// The program to run and its arguments (after `--`).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PROGRAM"
    )]
    command: Vec<OsString>,
}

pub(crate) fn say(message: impl std::fmt::Display) {
    eprintln!("leasehold run: {message}");
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    Ok(ExitCode::from(run_program(args).await))
}

async fn run_program(args: RunArgs) -> u8 {
    if let Some(path) = &args.lease {
        let device_id = args.device_id.clone().unwrap_or_else(default_device_id);
        let mut signals = match Signals::new() {
            Ok(signals) => signals,
            Err(e) => {
                say(format!("cannot listen for signals: {e}"));
                return EXIT_OS_ERROR;
            }
        };
        let on_lease = crate::borrow::OnLease {
            path,
            connect: &args.connect,
            device_id: &device_id,
        };
        return on_lease
            .run(
                &args.command,
                &mut signals,
                Duration::from_secs(args.kill_after),
            )
            .await;
    }
    let Some(license) = args.license.as_deref() else {
        say("give --license ID or --lease FILE");
        return crate::connect::EXIT_CONFIG;
    };
    let client = match args
        .connect
        .resolve(args.client_id.as_deref(), args.client_secret.as_deref())
        .and_then(|settings| {
            settings.client(Some("a user token or a service user's client credentials"))
        }) {
        Ok(client) => client,
        Err(failure) => {
            say(&failure.message);
            return failure.code;
        }
    };
    // Listen before anything else: from now on these signals no longer kill us by default.
    let mut signals = match Signals::new() {
        Ok(signals) => signals,
        Err(e) => {
            say(format!("cannot listen for signals: {e}"));
            return EXIT_OS_ERROR;
        }
    };
    let device_id = args.device_id.clone().unwrap_or_else(default_device_id);
    let instance_id = args.instance_id.clone().unwrap_or_else(random_instance_id);
    let checkout = Checkout {
        client: &client,
        license,
        device_id: &device_id,
        instance_id: &instance_id,
        wait: args.wait,
    };
    let guard = match checkout.run(&mut signals).await {
        Ok(guard) => guard,
        Err(code) => return code,
    };
    let lost = async { guard.lost().await.to_string() };
    let code = supervise(
        guard.session_id(),
        lost,
        &args.command,
        &mut signals,
        Duration::from_secs(args.kill_after),
    )
    .await;
    release(guard).await;
    code
}

/// Taking the seat, waiting for one with `--wait`.
struct Checkout<'a> {
    client: &'a Client,
    license: &'a str,
    device_id: &'a str,
    instance_id: &'a str,
    wait: Option<u64>,
}

impl Checkout<'_> {
    async fn run(&self, signals: &mut Signals) -> Result<LeaseGuard, u8> {
        let deadline = self
            .wait
            .map(|secs| Instant::now() + Duration::from_secs(secs));
        let mut pause = Duration::from_secs(1);
        let mut announced = false;
        loop {
            let remaining = deadline
                .map(|d| d.saturating_duration_since(Instant::now()))
                .unwrap_or_default();
            let mut options = CheckoutOptions::new();
            // The first try is immediate, so that a wait is announced before it starts (a
            // queueing license holds the request for the whole wait).
            if announced && remaining.as_secs() > 0 {
                options = options.wait_secs(remaining.as_secs());
            }
            let attempt = tokio::select! {
                attempt = self.client.checkout_with(self.license, self.device_id, self.instance_id, options) => attempt,
                signal = signals.recv() => {
                    say("interrupted before a seat was taken");
                    return Err(signal_exit(signal));
                }
            };
            let err = match attempt {
                Ok(guard) => return Ok(guard),
                Err(err) => err,
            };
            if !waitable(&err) || remaining.is_zero() {
                return Err(self.report(&err));
            }
            if !announced {
                say(format!(
                    "no seat of license {} is free ({}); waiting up to {} s",
                    self.license,
                    err,
                    self.wait.unwrap_or(0)
                ));
                announced = true;
                // At once: on a queueing license the next try waits in the server's queue.
                continue;
            }
            let nap = pause.min(remaining);
            pause = (pause * 2).min(MAX_RETRY_PAUSE);
            tokio::select! {
                () = tokio::time::sleep(nap) => {}
                signal = signals.recv() => {
                    say("interrupted while waiting for a seat");
                    return Err(signal_exit(signal));
                }
            }
        }
    }

    /// Prints why the checkout failed and answers the exit code.
    fn report(&self, err: &ClientError) -> u8 {
        if waitable(err) {
            let hint = match self.wait {
                Some(secs) => format!("none was freed within {secs} s"),
                None => "try again later, or wait for one with --wait SECS".to_owned(),
            };
            say(format!(
                "no seat of license {} is free: {err}; {hint}",
                self.license
            ));
            EXIT_NO_SEAT
        } else if is_unreachable(err) {
            say(format!("cannot reach the license server: {err}"));
            EXIT_UNAVAILABLE
        } else {
            say(format!(
                "the license server refused a seat of license {}: {err}",
                self.license
            ));
            EXIT_REFUSED
        }
    }
}

/// Errors that mean "full now, maybe free later".
fn waitable(err: &ClientError) -> bool {
    matches!(
        err.code(),
        Some(ErrorCode::NoSeatAvailable | ErrorCode::UserSessionLimit)
    )
}

/// Runs the program until it exits or the seat is lost (`lost` answers why); answers the exit
/// code.
pub(crate) async fn supervise(
    session_id: &str,
    lost: impl std::future::Future<Output = String>,
    command: &[OsString],
    signals: &mut Signals,
    kill_after: Duration,
) -> u8 {
    tokio::pin!(lost);
    let Some((program, program_args)) = command.split_first() else {
        say("no program given");
        return EXIT_CANNOT_EXECUTE;
    };
    let shown = program.to_string_lossy().into_owned();
    let mut child = match tokio::process::Command::new(program)
        .args(program_args)
        .env("LEASEHOLD_SESSION_ID", session_id)
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            say(format!("{shown}: command not found"));
            return EXIT_NOT_FOUND;
        }
        Err(e) => {
            say(format!("{shown}: cannot execute: {e}"));
            return EXIT_CANNOT_EXECUTE;
        }
    };
    // Set while the child runs: we hold its `Child` and reap it only through `wait`, so the
    // pid cannot be reused by another process before we have seen it exit.
    let pid = child.id().and_then(|id| i32::try_from(id).ok());
    loop {
        tokio::select! {
            status = child.wait() => return exit_code(status, &shown),
            signal = signals.recv() => {
                if should_forward(signal) {
                    send_signal(pid, signal);
                }
            }
            reason = &mut lost => {
                say(format!("the license seat was lost ({reason}); stopping {shown}"));
                send_signal(pid, libc::SIGTERM);
                let deadline = Instant::now() + kill_after;
                loop {
                    tokio::select! {
                        _ = child.wait() => break,
                        signal = signals.recv() => {
                            if should_forward(signal) {
                                send_signal(pid, signal);
                            }
                        }
                        () = tokio::time::sleep_until(deadline) => {
                            say(format!("{shown} did not exit within {} s; killing it", kill_after.as_secs()));
                            let _ = child.kill().await;
                            break;
                        }
                    }
                }
                return EXIT_LEASE_LOST;
            }
        }
    }
}

fn exit_code(status: std::io::Result<std::process::ExitStatus>, shown: &str) -> u8 {
    use std::os::unix::process::ExitStatusExt as _;
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
            (None, Some(signal)) => signal_exit(signal),
            (None, None) => 1,
        },
        Err(e) => {
            say(format!("lost track of {shown}: {e}"));
            1
        }
    }
}

/// The shell's exit code for "ended by signal N": 128 + N.
fn signal_exit(signal: i32) -> u8 {
    128u8.saturating_add(u8::try_from(signal).unwrap_or(0))
}

/// Gives the seat back; a failure only costs the seat until the session expires.
async fn release(guard: LeaseGuard) {
    match tokio::time::timeout(RELEASE_TIMEOUT, guard.release()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => say(format!(
            "could not return the seat ({err}); it frees when the session expires"
        )),
        Err(_) => say("could not return the seat in time; it frees when the session expires"),
    }
}

/// The signals `run` catches and forwards.
pub(crate) struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
    quit: Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    /// The next signal, as its number.
    async fn recv(&mut self) -> i32 {
        tokio::select! {
            _ = self.interrupt.recv() => libc::SIGINT,
            _ = self.terminate.recv() => libc::SIGTERM,
            _ = self.hangup.recv() => libc::SIGHUP,
            _ = self.quit.recv() => libc::SIGQUIT,
        }
    }
}

/// SIGINT and SIGQUIT typed in our terminal already went to the whole foreground process
/// group, the program included: forwarding them would deliver them twice.
fn should_forward(signal: i32) -> bool {
    if signal != libc::SIGINT && signal != libc::SIGQUIT {
        return true;
    }
    !in_terminal_foreground()
}

fn in_terminal_foreground() -> bool {
    for fd in [0, 1, 2] {
        // SAFETY: isatty, tcgetpgrp and getpgrp only read process and file-descriptor state.
        unsafe {
            if libc::isatty(fd) == 1 {
                return libc::tcgetpgrp(fd) == libc::getpgrp();
            }
        }
    }
    false
}

fn send_signal(pid: Option<i32>, signal: i32) {
    if let Some(pid) = pid.filter(|pid| *pid > 0) {
        // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our unreaped child.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// This machine's hostname, else its machine id, else a fixed name.
pub(crate) fn default_device_id() -> String {
    hostname()
        .or_else(|| {
            std::fs::read_to_string("/etc/machine-id")
                .ok()
                .map(|id| id.trim().to_owned())
                .filter(|id| !id.is_empty())
        })
        .unwrap_or_else(|| "unknown-host".to_owned())
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_owned();
    (!name.is_empty()).then_some(name)
}

fn random_instance_id() -> String {
    format!("run-{}-{:016x}", std::process::id(), rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_pass_through_and_signals_become_128_plus_n() {
        use std::os::unix::process::ExitStatusExt as _;
        let exited = std::process::ExitStatus::from_raw(7 << 8);
        assert_eq!(exit_code(Ok(exited), "x"), 7);
        let killed = std::process::ExitStatus::from_raw(libc::SIGKILL);
        assert_eq!(exit_code(Ok(killed), "x"), 137);
    }

    #[test]
    fn terminate_and_hangup_are_always_forwarded() {
        assert!(should_forward(libc::SIGTERM));
        assert!(should_forward(libc::SIGHUP));
    }

    #[test]
    fn default_ids_are_not_empty_and_instances_differ() {
        assert!(!default_device_id().is_empty());
        assert_ne!(random_instance_id(), random_instance_id());
    }
}
