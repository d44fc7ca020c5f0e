//! `leasehold delegation`: dark sites through files. On the local server (root admin token):
//! `request` (request.json), `import` (delegation.json), `report` (report.json), `return`
//! (receipt.json). On the cloud (account admin token): `create` (request.json in,
//! delegation.json out), `list`, `renew` (delegation.json out), `import-report` (report.json
//! in), `import-receipt` (receipt.json in).
//!
//! Files are the JSON the server answers, written as they came; reading one that is not
//! what the command expects is exit 2; a file that cannot be written is exit 74 (EX_IOERR),
//! after the server has answered (the command can be run again: `return` answers the same
//! receipt, `renew` a newer sequence).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use leasehold_proto::{
    CreateDelegation, DelegationFile, DelegationReceipt, DelegationReport, DelegationRequestFile,
    ImportDelegation, RenewDelegation,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use time::OffsetDateTime;

use super::output::{key_values, print_json, time, Table};
use super::{parse_time, Admin, CmdError, CmdResult, Common, EXIT_USAGE};
use crate::connect::Failure;

/// Exit code: an output file could not be written.
const EXIT_IO: u8 = 74;

#[derive(Args, Debug)]
pub struct DelegationArgs {
    #[command(flatten)]
    pub(super) common: Common,
    #[command(subcommand)]
    command: DelegationCommand,
}

#[derive(Subcommand, Debug)]
enum DelegationCommand {
    /// Local server: write this server's signed request for seats (its key, id and site).
    Request {
        /// A name for this site, shown on the cloud.
        #[arg(long, default_value = "local")]
        site: String,
        /// Where to write the request file [default: stdout].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Cloud: delegate seats of a license to the server that wrote the request file.
    Create {
        #[arg(long)]
        license: String,
        #[arg(long)]
        seats: i64,
        #[arg(long, value_parser = parse_time, value_name = "TIME")]
        expires_at: OffsetDateTime,
        /// From when the local server may use it [default: now].
        #[arg(long, value_parser = parse_time, value_name = "TIME")]
        not_before: Option<OffsetDateTime>,
        /// The local server's request.json.
        #[arg(long, value_name = "FILE")]
        request: PathBuf,
        /// Where to write the delegation file [default: stdout].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Cloud: the delegations of a license (active, returned, expired).
    List {
        #[arg(long)]
        license: String,
    },
    /// Cloud: renew a delegation (new seats and/or end; the next sequence).
    Renew {
        #[arg(long)]
        license: String,
        #[arg(long)]
        delegation: String,
        #[arg(long)]
        seats: Option<i64>,
        #[arg(long, value_parser = parse_time, value_name = "TIME")]
        expires_at: Option<OffsetDateTime>,
        /// Where to write the renewed delegation file [default: stdout].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Local server: import a delegation file (first import: --account names the local
    /// account that holds its license).
    Import {
        /// The delegation.json written by `create` or `renew`.
        file: PathBuf,
        /// The local account that holds the license (needed at the first import).
        #[arg(long)]
        account: Option<String>,
    },
    /// Local server: stop the delegated license at once and write the signed receipt.
    Return {
        /// The delegation id (the local license's id).
        #[arg(long)]
        delegation: String,
        /// Where to write the receipt [default: stdout].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Local server: write the signed usage report of a delegated license (per hour since the
    /// delegation began).
    Report {
        /// The delegation id (the local license's id).
        #[arg(long)]
        delegation: String,
        /// Where to write the report [default: stdout].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Cloud: import a usage report (the newest one is kept; the same one twice counts once).
    ImportReport {
        /// The report.json written by `report`.
        file: PathBuf,
        #[arg(long)]
        license: String,
    },
    /// Cloud: import a return receipt; the seats come back to the license.
    ImportReceipt {
        /// The receipt.json written by `return`.
        file: PathBuf,
        #[arg(long)]
        license: String,
    },
}

fn read_file<T: DeserializeOwned>(path: &Path, what: &str) -> Result<T, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| Failure {
        message: format!("cannot read {}: {e}", path.display()),
        code: EXIT_USAGE,
    })?;
    serde_json::from_str(&text).map_err(|e| Failure {
        message: format!("{} is not a {what} file: {e}", path.display()),
        code: EXIT_USAGE,
    })
}

/// Writes `value` to `out` (pretty JSON), or prints it when no file is named. Answers whether
/// it went to a file.
fn write_out<T: Serialize>(out: Option<&Path>, value: &T) -> Result<bool, Failure> {
    let Some(path) = out else {
        print_json(value);
        return Ok(false);
    };
    let text = serde_json::to_string_pretty(value).map_err(|e| Failure {
        message: format!("encoding {}: {e}", path.display()),
        code: EXIT_IO,
    })?;
    std::fs::write(path, text + "\n").map_err(|e| Failure {
        message: format!("cannot write {}: {e}", path.display()),
        code: EXIT_IO,
    })?;
    Ok(true)
}

impl Admin {
    pub(super) async fn delegation_command(&self, args: DelegationArgs) -> CmdResult {
        let client = self.client()?;
        match args.command {
            DelegationCommand::Request { site, out } => {
                let file: DelegationRequestFile = client.delegation_request(&site).await?;
                if write_out(out.as_deref(), &file)? && !self.json() {
                    self.summary(&[
                        ("server_id", file.server_id.clone()),
                        ("site", file.site.clone()),
                        ("written", out_name(out.as_deref())),
                    ]);
                }
            }
            DelegationCommand::Create {
                license,
                seats,
                expires_at,
                not_before,
                request,
                out,
            } => {
                let req: DelegationRequestFile = read_file(&request, "delegation request")?;
                let body = CreateDelegation {
                    request: req.request,
                    seats,
                    expires_at,
                    not_before,
                };
                let file = client.create_delegation(&license, &body).await?;
                self.delegation_written(&file, out.as_deref())?;
            }
            DelegationCommand::List { license } => {
                let list = client.list_delegations(&license).await?;
                if self.json() {
                    print_json(&list);
                    return Ok(());
                }
                let mut table = Table::new(&[
                    "ID",
                    "STATUS",
                    "SEATS",
                    "SEQ",
                    "SITE",
                    "SERVER",
                    "EXPIRES_AT",
                ]);
                for d in &list.delegations {
                    table.row(vec![
                        d.id.clone(),
                        d.status.clone(),
                        d.seats.to_string(),
                        d.sequence.to_string(),
                        d.site.clone(),
                        d.server_id.clone(),
                        time(d.expires_at),
                    ]);
                }
                print!("{}", table.render());
            }
            DelegationCommand::Renew {
                license,
                delegation,
                seats,
                expires_at,
                out,
            } => {
                let body = RenewDelegation { seats, expires_at };
                let file = client
                    .renew_delegation(&license, &delegation, &body)
                    .await?;
                self.delegation_written(&file, out.as_deref())?;
            }
            DelegationCommand::Import { file, account } => {
                let delegation: DelegationFile = read_file(&file, "delegation")?;
                let body = ImportDelegation {
                    delegation: delegation.delegation,
                    account_id: account,
                };
                let imported = client.import_delegation(&body).await?;
                if self.json() {
                    print_json(&imported);
                    return Ok(());
                }
                self.summary(&[
                    ("delegation", imported.delegation_id.clone()),
                    ("outcome", imported.outcome.clone()),
                    ("license", imported.license_id.clone()),
                    ("account", imported.account_id.clone()),
                    ("seats", imported.seats.to_string()),
                    ("sequence", imported.sequence.to_string()),
                    ("expires_at", time(imported.expires_at)),
                ]);
            }
            DelegationCommand::Return { delegation, out } => {
                let receipt: DelegationReceipt = client.return_delegation(&delegation).await?;
                if write_out(out.as_deref(), &receipt)? && !self.json() {
                    self.summary(&[
                        ("delegation", receipt.delegation_id.clone()),
                        ("returned_at", time(receipt.returned_at)),
                        ("written", out_name(out.as_deref())),
                    ]);
                }
            }
            DelegationCommand::Report { delegation, out } => {
                let report: DelegationReport = client.delegation_report(&delegation).await?;
                if write_out(out.as_deref(), &report)? && !self.json() {
                    self.summary(&[
                        ("delegation", report.delegation_id.clone()),
                        ("sequence", report.sequence.to_string()),
                        ("hours", report.hours.len().to_string()),
                        ("written", out_name(out.as_deref())),
                    ]);
                }
            }
            DelegationCommand::ImportReport { file, license } => {
                let report: DelegationReport = read_file(&file, "usage report")?;
                let kept = client
                    .import_report(&license, &report.delegation_id, &report.report)
                    .await?;
                if self.json() {
                    print_json(&kept);
                    return Ok(());
                }
                let site = &kept.site;
                self.summary(&[
                    ("delegation", site.delegation_id.clone()),
                    ("site", site.site.clone()),
                    (
                        "kept",
                        if kept.kept { "yes" } else { "no (not newer)" }.into(),
                    ),
                    (
                        "report_sequence",
                        site.report_sequence
                            .map(|s| s.to_string())
                            .unwrap_or_default(),
                    ),
                    ("opened", site.opened.to_string()),
                    ("peak", site.peak.to_string()),
                    ("denials", site.denials.to_string()),
                    ("queue_waits", site.queue_waits.to_string()),
                ]);
            }
            DelegationCommand::ImportReceipt { file, license } => {
                let receipt: DelegationReceipt = read_file(&file, "return receipt")?;
                let d = client
                    .import_receipt(&license, &receipt.delegation_id, &receipt.receipt)
                    .await?;
                if self.json() {
                    print_json(&d);
                    return Ok(());
                }
                self.summary(&[
                    ("delegation", d.id.clone()),
                    ("status", d.status.clone()),
                    ("seats", d.seats.to_string()),
                ]);
            }
        }
        Ok(())
    }

    fn delegation_written(
        &self,
        file: &DelegationFile,
        out: Option<&Path>,
    ) -> Result<(), CmdError> {
        if write_out(out, file)? && !self.json() {
            self.summary(&[
                ("delegation", file.delegation_id.clone()),
                ("sequence", file.sequence.to_string()),
                ("seats", file.seats.to_string()),
                ("expires_at", time(file.expires_at)),
                ("server_id", file.server_id.clone()),
                ("written", out_name(out)),
            ]);
        }
        Ok(())
    }

    fn summary(&self, pairs: &[(&str, String)]) {
        print!("{}", key_values(pairs));
    }
}

fn out_name(out: Option<&Path>) -> String {
    out.map(|p| p.display().to_string()).unwrap_or_default()
}
