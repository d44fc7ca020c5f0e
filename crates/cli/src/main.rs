//! The `leasehold` binary: `serve` runs the license server; further subcommands administer a
//! server, run a program with a seat, and benchmark.

mod admin;
mod borrow;
mod connect;
mod copy_to_postgres;
mod run;
mod serve;

use clap::{Parser, Subcommand};

/// mimalloc, not glibc's malloc: a checkout cycle spent ~10 % of the server's CPU in glibc's
/// `malloc`/`free`/`malloc_consolidate`; with mimalloc the same cycle costs ~13 % less CPU and a
/// million opens run ~35 % faster at the same peak RSS (`BENCHMARKS.md`). Without transparent
/// huge pages (`no_thp`): with them the million-session RSS rose ~25 MB. Only the binary sets it:
/// the libraries (SDK, C library) leave the allocator to their host program.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "leasehold",
    version,
    about = "Leasehold license server and tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the license server (embedded SQLite in the data folder by default).
    Serve(serve::ServeArgs),
    /// Create or upgrade the database schema, then exit.
    Migrate(serve::ServeArgs),
    /// Copy a SQLite data folder into PostgreSQL (stop the SQLite server first).
    CopyToPostgres(copy_to_postgres::CopyArgs),
    /// Benchmark a server over HTTP (see BENCHMARKS.md).
    Bench(Box<leasehold_bench::BenchArgs>),
    /// Run a program while holding a license seat (returned when it exits), or on a borrowed
    /// seat with --lease (no network needed).
    Run(run::RunArgs),
    /// Borrow a seat for offline use for days, saved to a file (`run --lease FILE`).
    Borrow(borrow::BorrowArgs),
    /// Give a borrowed seat back early (the file is removed).
    Return(borrow::ReturnArgs),
    #[command(flatten)]
    Admin(admin::AdminCommand),
    /// Exit 0 when the server at URL is ready (/healthz: it can write), 1 otherwise.
    Healthcheck {
        #[arg(long, env = "LEASEHOLD_URL", default_value = "http://127.0.0.1:8470")]
        url: String,
        /// Only check that the process is up (/livez), whatever its store does.
        #[arg(long)]
        live: bool,
        /// HTTPS: trust this PEM CA bundle instead of the system's roots.
        #[arg(long, env = "LEASEHOLD_CA_FILE", value_name = "PATH")]
        ca_file: Option<std::path::PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::serve(args).await,
            Command::Migrate(args) => serve::migrate(args).await,
            Command::CopyToPostgres(args) => copy_to_postgres::run(args).await,
            Command::Bench(args) => leasehold_bench::run(*args).await,
            Command::Run(args) => run::run(args).await,
            Command::Borrow(args) => borrow::borrow(args).await,
            Command::Return(args) => borrow::return_seat(args).await,
            Command::Admin(command) => admin::run(command).await,
            Command::Healthcheck { url, live, ca_file } => {
                serve::healthcheck(&url, live, ca_file.as_deref()).await
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
