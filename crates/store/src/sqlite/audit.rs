//! The account-wide audit log read from the database (`Store::audit_page`), on the reading
//! connection. The writer thread appends events in one transaction per batch, in `seq` order,
//! and a read sees only committed batches: a page never skips an event a later page could
//! show, however events are appended meanwhile.

use leasehold_core::Timestamp;
use rusqlite::types::Value;

use super::read::Reader;
use crate::audit::{select_sql, AuditEntry, AuditParam, AuditQuery};
use crate::records::AuditEvent;
use crate::StoreResult;

impl Reader {
    /// The events `query` selects, in `seq` order.
    pub(super) fn audit_page(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        let (sql, params) = select_sql(query, None, |n| format!("?{n}"));
        let values: Vec<Value> = params
            .into_iter()
            .map(|p| match p {
                AuditParam::Text(s) => Value::Text(s),
                AuditParam::Int(i) => Value::Integer(i),
            })
            .collect();
        self.read(|conn| {
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(values), |r| {
                Ok(AuditEntry {
                    seq: r.get(0)?,
                    event: AuditEvent {
                        at: Timestamp::from_millis(r.get(1)?),
                        account_id: r.get(2)?,
                        license_id: r.get(3)?,
                        session_id: r.get(4)?,
                        username: r.get(5)?,
                        event: r.get(6)?,
                        detail: r.get(7)?,
                    },
                })
            })?;
            rows.collect()
        })
    }
}
