//! Usage reports of dark sites. The local server rebuilds its delegated license's use per hour
//! since the delegation began from the license's audit events (`opened`, `ended`, `denied`),
//! signs it with a report sequence that rises with each report, and the cloud keeps the newest
//! (a report is cumulative: the same one twice, or an older one after a newer one, changes
//! nothing).
//!
//! The hourly figures are a pure function of the events (`hourly`): the number in use starts
//! at 0 when the license was created, each `opened` adds one and each `ended` takes one off,
//! in the order of their times; an hour's peak and low include the number in use when it
//! began. Ends decided in bulk (the license's end) are written in the background: a report
//! read meanwhile still counts those sessions, the next report does not.
//!
//! The report sequence is a setting of the local server, read and raised per report: two
//! reports asked at the very same moment (the operator and the online sync) may share one;
//! the cloud then keeps the first it imports and the next report supersedes both. Either way
//! nothing is counted twice: a report carries totals since the delegation began, never a
//! difference.

use leasehold_core::delegation::ReportSummary;
use leasehold_core::Timestamp;
use leasehold_proto as proto;
use leasehold_store::{origin, AuditEvent, AuditQuery, DelegationChange, License};

use super::verify_site_file;
use crate::access;
use crate::auth::Auth;
use crate::clock::to_offset;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

const HOUR_MS: i64 = 3600 * 1000;
/// Audit events read per page while building a report.
const PAGE: usize = 5000;
/// The setting that holds the last report sequence of a delegation (local server).
fn sequence_key(delegation_id: &str) -> String {
    format!("delegation_report_sequence:{delegation_id}")
}
/// The setting that holds a kept report's hours (cloud), under its sequence.
fn hours_key(delegation_id: &str, sequence: u64) -> String {
    format!("delegation_report:{delegation_id}:{sequence}")
}

/// What an audit event does to the count in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Opened { queued: bool },
    Ended,
    Denied,
}

/// The step of an audit event, if it is one the report counts (denials: for want of a seat).
pub fn step_of(event: &AuditEvent) -> Option<Step> {
    let detail = event.detail.as_deref().unwrap_or("");
    match event.event.as_str() {
        "opened" => Some(Step::Opened {
            queued: detail.split(' ').any(|w| w == "queued"),
        }),
        "ended" => Some(Step::Ended),
        "denied" if detail == proto::ErrorCode::NoSeatAvailable.as_str() => Some(Step::Denied),
        _ => None,
    }
}

/// The use per hour from `from` to `to` (each hour that began by `to`), from the events'
/// steps in the log's order: they are sorted by time, and steps at the same instant keep that
/// order (a session's end is always logged after its open).
pub fn hourly(
    mut steps: Vec<(Timestamp, Step)>,
    from: Timestamp,
    to: Timestamp,
) -> Vec<proto::HourUsage> {
    steps.sort_by_key(|(at, _)| *at);
    let first_hour = from.millis().div_euclid(HOUR_MS) * HOUR_MS;
    let mut hours = Vec::new();
    let mut in_use: u32 = 0;
    let mut steps = steps.into_iter().peekable();
    let mut start = first_hour;
    while start <= to.millis() {
        let end = start + HOUR_MS;
        let mut h = proto::HourUsage {
            hour: to_offset(Timestamp::from_millis(start)),
            opened: 0,
            peak: in_use,
            low: in_use,
            denials: 0,
            queue_waits: 0,
        };
        while let Some((_, step)) = steps.next_if(|(at, _)| at.millis() < end) {
            match step {
                Step::Opened { queued } => {
                    in_use = in_use.saturating_add(1);
                    h.opened += 1;
                    if queued {
                        h.queue_waits += 1;
                    }
                }
                Step::Ended => in_use = in_use.saturating_sub(1),
                Step::Denied => h.denials += 1,
            }
            h.peak = h.peak.max(in_use);
            h.low = h.low.min(in_use);
        }
        hours.push(h);
        start = end;
    }
    hours
}

/// The totals of a report's hours.
pub fn summary(
    sequence: u64,
    generated_at: Timestamp,
    hours: &[proto::HourUsage],
) -> ReportSummary {
    ReportSummary {
        sequence,
        generated_at,
        opened: hours.iter().map(|h| h.opened).sum(),
        peak: hours.iter().map(|h| h.peak).max().unwrap_or(0),
        denials: hours.iter().map(|h| h.denials).sum(),
        queue_waits: hours.iter().map(|h| h.queue_waits).sum(),
    }
}

/// `GET /v1/delegations/{id}/report` (local, root admin): the signed usage report of a
/// delegated license since its delegation began, with the next report sequence.
#[tracing::instrument(skip(state, auth))]
pub async fn local_report(
    state: &AppState,
    auth: &Auth,
    delegation_id: &str,
) -> ApiResult<proto::DelegationReport> {
    auth.require_root()?;
    build_report(state, delegation_id).await
}

/// The signed report of the delegated license `delegation_id`, with the next sequence.
pub(super) async fn build_report(
    state: &AppState,
    delegation_id: &str,
) -> ApiResult<proto::DelegationReport> {
    let license = state
        .store
        .get_license(delegation_id)
        .await?
        .filter(|l| l.terms.delegated_from.is_some())
        .ok_or_else(|| ApiError::NotFound("delegation".into()))?;
    let Some(from) = license.terms.delegated_from.clone() else {
        return Err(ApiError::NotFound("delegation".into()));
    };
    let now = state.clock.now();
    let steps = read_steps(state, &license, now).await?;
    let hours = hourly(steps, license.created_at, now);
    let key = sequence_key(delegation_id);
    let last: u64 = state
        .store
        .get_setting(&key)
        .await?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let sequence = last + 1;
    state.store.put_setting(&key, &sequence.to_string()).await?;
    let claims = proto::ReportClaims {
        typ: proto::REPORT_TYP.into(),
        delegation_id: from.delegation_id.clone(),
        license_id: from.license_id.clone(),
        server_id: state.signer.server_id(),
        sequence,
        generated_at: to_offset(now),
        hours,
    };
    Ok(proto::DelegationReport {
        report: state.signer.sign_json(&claims),
        delegation_id: claims.delegation_id,
        license_id: claims.license_id,
        server_id: claims.server_id,
        sequence: claims.sequence,
        generated_at: claims.generated_at,
        hours: claims.hours,
    })
}

/// The license's counted events up to `now`, every page of its audit log.
async fn read_steps(
    state: &AppState,
    license: &License,
    now: Timestamp,
) -> ApiResult<Vec<(Timestamp, Step)>> {
    let mut steps = Vec::new();
    let mut after_seq = None;
    loop {
        let query = AuditQuery {
            license_id: Some(license.id.clone()),
            events: vec!["opened".into(), "ended".into(), "denied".into()],
            // Events at or before `now`.
            to: Some(now.plus_millis(1)),
            after_seq,
            limit: PAGE,
            ..AuditQuery::default()
        };
        let page = state.store.audit_page(&query).await?;
        for entry in &page {
            if let Some(step) = step_of(&entry.event) {
                steps.push((entry.event.at, step));
            }
        }
        if page.len() < PAGE {
            return Ok(steps);
        }
        after_seq = page.last().map(|e| e.seq);
    }
}

/// The site's figures as the cloud keeps them.
pub fn site_usage(d: &leasehold_core::delegation::Delegated, now: Timestamp) -> proto::SiteUsage {
    let r = d.report;
    proto::SiteUsage {
        delegation_id: d.id.clone(),
        site: d.site.clone(),
        seats: d.seats,
        status: d.status(now).as_str().into(),
        report_sequence: r.map(|r| r.sequence),
        reported_at: r.map(|r| to_offset(r.generated_at)),
        opened: r.map_or(0, |r| r.opened),
        peak: r.map_or(0, |r| r.peak),
        denials: r.map_or(0, |r| r.denials),
        queue_waits: r.map_or(0, |r| r.queue_waits),
    }
}

/// `POST /v1/licenses/{id}/delegations/{delegation_id}/reports` (cloud, account admin):
/// keeps the report when it is newer than the one kept; refused unless signed by the
/// delegation's server.
#[tracing::instrument(skip(state, auth, req))]
pub async fn import_report(
    state: &AppState,
    auth: &Auth,
    license_id: &str,
    delegation_id: &str,
    req: proto::ImportReport,
) -> ApiResult<proto::ImportedReport> {
    let license = access::admin_license(state, auth, license_id).await?;
    let (d, claims) =
        verify_site_file::<proto::ReportClaims>(&license, delegation_id, &req.report)?;
    let report = summary(
        claims.sequence,
        leasehold_core::Timestamp::from_offset(claims.generated_at),
        &claims.hours,
    );
    // The hours first, under the report's own sequence (the same report writes the same
    // value): the summary kept in the terms then always has its hours.
    let hours_json = serde_json::to_string(&claims.hours)
        .map_err(|e| ApiError::Internal(format!("encoding a report: {e}")))?;
    state
        .store
        .put_setting_if_absent(&hours_key(delegation_id, claims.sequence), &hours_json)
        .await?;
    let before = d.report.map(|r| r.sequence);
    let change = DelegationChange::Report {
        id: delegation_id.to_owned(),
        report,
    };
    let license = state
        .with_now(|now| {
            origin::scope(
                auth.origin(),
                state.store.change_delegations(license_id, change, now),
            )
        })
        .await?;
    let Some(d) = license.terms.delegation(delegation_id) else {
        return Err(ApiError::Internal(format!(
            "delegation {delegation_id} missing"
        )));
    };
    let kept = d.report.map(|r| r.sequence);
    let hours = match kept {
        Some(seq) => state
            .store
            .get_setting(&hours_key(delegation_id, seq))
            .await?
            .and_then(|v| serde_json::from_str(&v).ok())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    Ok(proto::ImportedReport {
        site: site_usage(d, state.clock.now()),
        kept: kept != before && kept == Some(claims.sequence),
        hours,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_secs(1_800_000_000); // 08:00:00, on the hour

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_secs(T0.secs() + secs)
    }

    #[test]
    fn hours_carry_the_count_in_use_with_peaks_lows_denials_and_queue_waits() {
        let steps = vec![
            (at(10), Step::Opened { queued: false }),
            (at(20), Step::Opened { queued: false }),
            (at(30), Step::Denied),
            (at(40), Step::Ended),
            (at(50), Step::Opened { queued: true }),
            // Second hour: one ends, then the rest.
            (at(3600 + 5), Step::Ended),
            (at(3600 + 6), Step::Ended),
        ];
        let hours = hourly(steps, at(1), at(3 * 3600 - 1));
        assert_eq!(hours.len(), 3);
        let h = &hours[0];
        assert_eq!(
            (h.opened, h.peak, h.low, h.denials, h.queue_waits),
            (3, 2, 0, 1, 1)
        );
        let h = &hours[1];
        assert_eq!((h.opened, h.peak, h.low), (0, 2, 0));
        let h = &hours[2];
        assert_eq!((h.opened, h.peak, h.low), (0, 0, 0));
        let s = summary(1, at(0), &hours);
        assert_eq!((s.opened, s.peak, s.denials, s.queue_waits), (3, 2, 1, 1));
    }

    #[test]
    fn steps_at_the_same_instant_keep_the_logs_order() {
        // Opened, opened, ended, all in the same millisecond: 2 at the peak, 1 left.
        let steps = vec![
            (at(10), Step::Opened { queued: false }),
            (at(10), Step::Opened { queued: false }),
            (at(10), Step::Ended),
        ];
        let hours = hourly(steps, at(0), at(3600 + 60));
        assert_eq!((hours[0].peak, hours[0].low), (2, 0));
        assert_eq!((hours[1].peak, hours[1].low), (1, 1));
    }
}
