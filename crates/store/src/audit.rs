//! The account-wide audit log as the store answers it: the kinds of events there are, a query
//! (filters and the cursor, a `seq`) and its entries. Both backends read it in `seq` order.

use leasehold_core::Timestamp;

use crate::records::AuditEvent;

/// Every kind of audit event the store writes (built in `crate::admission` and
/// `crate::admin_events`, or by the backends' mass ends, which write `ended` events).
pub const AUDIT_EVENT_KINDS: &[&str] = &[
    "opened",
    "ended",
    "denied",
    "queued",
    "license_created",
    "license_updated",
    "sessions_revoked",
    "device_activated",
    "device_deactivated",
    "user_created",
    "user_updated",
    "token_issued",
    "license_user_activated",
    "license_user_deactivated",
    "delegation_created",
    "delegation_renewed",
    "delegation_returned",
    "delegation_reported",
];

/// Which audit events to read: every filter that is set must match; `after_seq` is the
/// cursor (events after it, in `seq` order), `limit` how many at most.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub account_id: Option<String>,
    pub license_id: Option<String>,
    pub username: Option<String>,
    /// Event kinds (any of them); empty is every kind.
    pub events: Vec<String>,
    /// Events at or after this time.
    pub from: Option<Timestamp>,
    /// Events before this time.
    pub to: Option<Timestamp>,
    pub after_seq: Option<i64>,
    pub limit: usize,
}

/// One event of the log with its place in it (`seq`: increasing in the order events became
/// durable on SQLite; on PostgreSQL, every page stops below the events still being written, so
/// a later event never gets a smaller `seq` than one already read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub seq: i64,
    pub event: AuditEvent,
}

/// The columns of an `AuditEvent`, in the order both backends read them.
pub(crate) const AUDIT_COLS: &str =
    "at, account_id, license_id, session_id, username, event, detail, actor, request_id, client_addr";

/// A value bound to the query's SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuditParam {
    Text(String),
    Int(i64),
}

/// The `SELECT` of `query` (its filters, the cursor, `seq` order and the limit) with its
/// parameters in order; `placeholder(n)` spells the n-th (1-based) parameter for the backend
/// (`?n` for SQLite, `$n` for PostgreSQL). `below_seq` bounds the page from above (PostgreSQL's
/// horizon). The columns are `seq` then those of `AuditEvent` (`AUDIT_COLS`).
pub(crate) fn select_sql(
    query: &AuditQuery,
    below_seq: Option<i64>,
    placeholder: impl Fn(usize) -> String,
) -> (String, Vec<AuditParam>) {
    let mut conds: Vec<String> = Vec::new();
    let mut params: Vec<AuditParam> = Vec::new();
    let mut bind = |cond: &str, param: AuditParam, conds: &mut Vec<String>| {
        params.push(param);
        conds.push(format!("{cond} {}", placeholder(params.len())));
    };
    if let Some(a) = &query.account_id {
        bind("account_id =", AuditParam::Text(a.clone()), &mut conds);
    }
    if let Some(l) = &query.license_id {
        bind("license_id =", AuditParam::Text(l.clone()), &mut conds);
    }
    if let Some(u) = &query.username {
        bind("username =", AuditParam::Text(u.clone()), &mut conds);
    }
    if let Some(f) = query.from {
        bind("at >=", AuditParam::Int(f.millis()), &mut conds);
    }
    if let Some(t) = query.to {
        bind("at <", AuditParam::Int(t.millis()), &mut conds);
    }
    if let Some(s) = query.after_seq {
        bind("seq >", AuditParam::Int(s), &mut conds);
    }
    if let Some(s) = below_seq {
        bind("seq <=", AuditParam::Int(s), &mut conds);
    }
    if !query.events.is_empty() {
        let mut list = Vec::with_capacity(query.events.len());
        for e in &query.events {
            params.push(AuditParam::Text(e.clone()));
            list.push(placeholder(params.len()));
        }
        conds.push(format!("event IN ({})", list.join(", ")));
    }
    params.push(AuditParam::Int(
        i64::try_from(query.limit).unwrap_or(i64::MAX),
    ));
    let filter = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    let sql = format!(
        "SELECT seq, {AUDIT_COLS} FROM audit_events {filter} ORDER BY seq LIMIT {}",
        placeholder(params.len())
    );
    (sql, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_filter_becomes_one_bound_condition() {
        let q = AuditQuery {
            account_id: Some("a".into()),
            username: Some("bob".into()),
            events: vec!["opened".into(), "ended".into()],
            from: Some(Timestamp::from_millis(5)),
            after_seq: Some(9),
            limit: 10,
            ..AuditQuery::default()
        };
        let (sql, params) = select_sql(&q, Some(20), |n| format!("${n}"));
        assert!(sql.contains(
            "WHERE account_id = $1 AND username = $2 AND at >= $3 AND seq > $4 AND seq <= $5 AND event IN ($6, $7)"
        ));
        assert!(sql.ends_with("ORDER BY seq LIMIT $8"));
        assert_eq!(params.len(), 8);
        assert_eq!(params[7], AuditParam::Int(10));
    }

    #[test]
    fn no_filter_reads_the_whole_log_in_order() {
        let q = AuditQuery {
            limit: 3,
            ..AuditQuery::default()
        };
        let (sql, params) = select_sql(&q, None, |n| format!("?{n}"));
        assert!(sql.contains("FROM audit_events  ORDER BY seq LIMIT ?1"));
        assert_eq!(params, [AuditParam::Int(3)]);
    }
}
