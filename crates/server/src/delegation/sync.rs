//! Online mode of a local server (`upstream`): every `upstream_interval`, for each delegation
//! it holds (not returned), it fetches the delegation's current file from the cloud and
//! imports it like a file (a newer sequence renews the local license; the same one changes
//! nothing), then writes a usage report and pushes it (the cloud keeps the newest). When the
//! cloud cannot be reached it logs (at most once a minute) and tries again next time: the file
//! commands keep working meanwhile, and both ways share the sequences (the delegation's, the
//! reports'), so nothing is lost or counted twice whichever way a file or report travels.

use std::time::Duration;

use leasehold_proto as proto;
use leasehold_store::{License, Origin};

use super::{local, report};
use crate::state::AppState;

/// What the sync needs from the configuration.
#[derive(Clone)]
pub struct Upstream {
    pub url: String,
    pub token: String,
    pub interval: Duration,
}

/// Why one delegation's sync failed.
#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("the cloud cannot be reached: {0}")]
    Unreachable(String),
    #[error("the cloud answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("{0}")]
    Local(String),
}

/// Runs until the server stops.
pub async fn run(state: AppState, upstream: Upstream) {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
    {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(error = %e, "online mode off: cannot build an HTTP client");
            return;
        }
    };
    let mut tick = tokio::time::interval(upstream.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        tick.tick().await;
        let licenses = match state.store.delegated_licenses().await {
            Ok(licenses) => licenses,
            Err(e) => {
                tracing::warn!(error = %e, "online mode: reading the delegated licenses failed");
                continue;
            }
        };
        for license in &licenses {
            if let Err(e) = sync_one(&state, &http, &upstream, license).await {
                let quiet = last_warning.is_some_and(|at| at.elapsed() < Duration::from_secs(60));
                if !quiet {
                    last_warning = Some(std::time::Instant::now());
                    tracing::warn!(
                        license_id = %license.id, error = %e,
                        "online mode: sync failed; files still work (delegation import, report)"
                    );
                }
            }
        }
    }
}

fn url(upstream: &Upstream, license_id: &str, delegation_id: &str, tail: &str) -> String {
    format!(
        "{}/v1/licenses/{license_id}/delegations/{delegation_id}{tail}",
        upstream.url.trim_end_matches('/')
    )
}

async fn send(request: reqwest::RequestBuilder) -> Result<reqwest::Response, SyncError> {
    let response = request
        .send()
        .await
        .map_err(|e| SyncError::Unreachable(e.to_string()))?;
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    Err(SyncError::Refused { status, body })
}

/// Fetches and imports the delegation's current file, then pushes a usage report.
async fn sync_one(
    state: &AppState,
    http: &reqwest::Client,
    upstream: &Upstream,
    license: &License,
) -> Result<(), SyncError> {
    let Some(from) = &license.terms.delegated_from else {
        return Ok(());
    };
    if from.returned_at.is_some() {
        return Ok(());
    }
    let file: proto::DelegationFile = send(
        http.get(url(upstream, &from.license_id, &from.delegation_id, ""))
            .bearer_auth(&upstream.token),
    )
    .await?
    .json()
    .await
    .map_err(|e| SyncError::Unreachable(e.to_string()))?;
    if file.sequence > from.sequence {
        let req = proto::ImportDelegation {
            delegation: file.delegation,
            account_id: None,
        };
        let (_, imported) = local::apply_import(state, None, Origin::default(), req)
            .await
            .map_err(|e| SyncError::Local(e.to_string()))?;
        tracing::info!(
            delegation_id = %imported.delegation_id, sequence = imported.sequence,
            "online mode: imported a renewal"
        );
    }
    let report = report::build_report(state, &license.id)
        .await
        .map_err(|e| SyncError::Local(e.to_string()))?;
    send(
        http.post(url(
            upstream,
            &from.license_id,
            &from.delegation_id,
            "/reports",
        ))
        .bearer_auth(&upstream.token)
        .json(&proto::ImportReport {
            report: report.report,
        }),
    )
    .await?;
    Ok(())
}
