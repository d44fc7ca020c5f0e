//! The account-wide audit log read from the database (`Store::audit_page`), on the reading
//! connection, and what retention may delete (`Store::prune_audit`; the writer deletes it). The writer thread appends events in one transaction per batch, in `seq` order,
//! and a read sees only committed batches: a page never skips an event a later page could
//! show, however events are appended meanwhile.

use leasehold_core::Timestamp;
use rusqlite::types::Value;
use rusqlite::OptionalExtension;

use super::read::Reader;
use crate::audit::{select_sql, AuditEntry, AuditParam, AuditQuery};
use crate::records::AuditEvent;
use crate::Origin;
use crate::StoreResult;

impl Reader {
    /// Retention: the greatest `seq` and the number of the events older than `before` among
    /// the oldest `batch` that both the usage fold and the webhook fan-out have read; `None`
    /// when the oldest event is not
    /// older than `before`.
    pub(super) fn prunable(
        &self,
        before: Timestamp,
        batch: usize,
    ) -> StoreResult<Option<(i64, usize)>> {
        self.read(|conn| {
            let oldest: Option<i64> = conn
                .prepare_cached("SELECT at FROM audit_events ORDER BY seq LIMIT 1")?
                .query_row([], |r| r.get(0))
                .optional()?;
            if oldest.is_none_or(|at| at >= before.millis()) {
                return Ok(None);
            }
            let (max_seq, count): (Option<i64>, i64) = conn
                .prepare_cached(
                    "SELECT max(seq), count(*) FROM
                       (SELECT seq, at FROM audit_events
                        WHERE seq <= min((SELECT seq FROM usage_watermark),
                                          (SELECT seq FROM webhook_cursor WHERE name = 'fanout'))
                        ORDER BY seq LIMIT ?1)
                     WHERE at < ?2",
                )?
                .query_row(
                    rusqlite::params![i64::try_from(batch).unwrap_or(i64::MAX), before.millis()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
            Ok(max_seq.map(|seq| (seq, usize::try_from(count).unwrap_or(0))))
        })
    }

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
                        origin: Origin {
                            actor: r.get(8)?,
                            request_id: r.get(9)?,
                            client_addr: r.get(10)?,
                        },
                    },
                })
            })?;
            rows.collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::sqlite::{open_connection, SqliteStore};
    use crate::testkit::{tenant, T0};
    use crate::{AuditQuery, Store};
    use leasehold_core::Timestamp;

    #[tokio::test]
    async fn retention_deletes_old_events_a_bounded_batch_at_a_time_and_keeps_newer_ones() {
        // Arrange: the license's creation and bob's (at T0), 2 more old events and 3 new ones.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leasehold.db");
        let store = SqliteStore::open(&path, T0).unwrap();
        tenant(&store, 5, &["bob"]).await;
        let late = T0.millis() + 10_000;
        let conn = open_connection(&path).unwrap();
        for (at, detail) in [
            (T0.millis(), "a"),
            (T0.millis(), "b"),
            (late, "c"),
            (late, "d"),
        ] {
            conn.execute(
                "INSERT INTO audit_events (at, account_id, license_id, event, detail)
                 VALUES (?1, 'acme', 'lic', 'license_updated', ?2)",
                rusqlite::params![at, detail],
            )
            .unwrap();
        }
        let before = Timestamp::from_millis(T0.millis() + 5_000);
        // Retention deletes only what the usage fold has read: it reads them all (the late
        // ones settle: a last event 20 s after them).
        conn.execute(
            "INSERT INTO audit_events (at, account_id, license_id, event, detail)
             VALUES (?1, 'acme', 'lic', 'license_updated', 'e')",
            rusqlite::params![late + 20_000],
        )
        .unwrap();
        store.usage_rollup().await.unwrap();
        // ... and what the webhook fan-out has read (no endpoint: it reads up to the horizon).
        conn.execute(
            "UPDATE webhook_cursor SET seq = (SELECT max(seq) FROM audit_events)",
            [],
        )
        .unwrap();

        // Act / Assert: the 4 old ones (the license's creation, bob's, a and b), two at a
        // time, then nothing is due.
        assert_eq!(store.prune_audit(before, 2).await.unwrap(), 2);
        assert_eq!(store.prune_audit(before, 2).await.unwrap(), 2);
        assert_eq!(store.prune_audit(before, 2).await.unwrap(), 0);
        let left = store
            .audit_page(&AuditQuery {
                limit: 10,
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        let details: Vec<_> = left.iter().map(|e| e.event.detail.as_deref()).collect();
        assert_eq!(details, [Some("c"), Some("d"), Some("e")]);
    }
}
