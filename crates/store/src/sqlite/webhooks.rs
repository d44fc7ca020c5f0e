//! Webhooks on SQLite (`crate::webhooks`): reads on the reading connection, writes through the
//! writer like every other change (`WriteOp::Webhook`), so they share its group commit and
//! never take the database's write lock beside it. One process holds the database, so one
//! dispatcher fans out and claims; the cursor's compare-and-set still guards the fan-out, and a
//! claim is kept in memory (`SqliteStore::webhook_claims`) rather than written: a claim only
//! has to outlive its sender, which dies with the process.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use leasehold_core::Timestamp;
use rusqlite::{params, OptionalExtension, Row};

use super::ops::WriteOp;
use super::store::SqliteStore;
use super::writer::acked;
use crate::webhooks::*;
use crate::{StoreError, StoreResult};

/// Where a write op leaves what it found (the writer applies it on its thread).
pub(super) type Slot<T> = Arc<Mutex<Option<T>>>;

/// A webhook write, applied by the writer in its batch's transaction.
#[derive(Debug)]
pub(super) enum WebhookOp {
    Create(WebhookEndpoint),
    /// Replaces what may change of an endpoint; the slot says whether it still existed.
    Update(WebhookEndpoint, Slot<bool>),
    Delete(String, Slot<bool>),
    Fanout(FanoutCursor, Fanout, Slot<bool>),
    Enqueue(Vec<NewDelivery>, Slot<Vec<i64>>),
    Attempt(Attempt),
    Prune(Timestamp, Slot<usize>),
}

fn fill<T>(slot: &Slot<T>, value: T) {
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
}

fn take<T>(slot: &Slot<T>) -> StoreResult<T> {
    slot.lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .ok_or_else(|| StoreError::Unavailable("the webhook write was not applied".into()))
}

fn insert_delivery(tx: &rusqlite::Transaction<'_>, d: &NewDelivery) -> rusqlite::Result<i64> {
    tx.prepare_cached(
        "INSERT INTO webhook_deliveries (endpoint_id, account_id, event_id, event_type, order_key,
             payload, status, attempts, next_attempt_at, lease_until, created_at, response_excerpt)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, 0, ?8, ?9)",
    )?
    .execute(params![
        d.endpoint_id,
        d.account_id,
        d.event_id,
        d.event_type,
        d.order_key,
        d.payload,
        d.status.as_str(),
        d.created_at.millis(),
        d.excerpt,
    ])?;
    Ok(tx.last_insert_rowid())
}

/// Applies one webhook op (called by `ops::apply_op`).
pub(super) fn apply(tx: &rusqlite::Transaction<'_>, op: &WebhookOp) -> rusqlite::Result<()> {
    match op {
        WebhookOp::Update(e, slot) => {
            let n = tx
                .prepare_cached(
                    "UPDATE webhook_endpoints SET url = ?3, events = ?4, description = ?5,
                         secret = ?6, enabled = ?7, updated_at = ?8
                     WHERE id = ?1 AND account_id = ?2",
                )?
                .execute(params![
                    e.id,
                    e.account_id,
                    e.url,
                    events_json(&e.events),
                    e.description,
                    e.secret,
                    e.enabled,
                    e.updated_at.millis()
                ])?;
            fill(slot, n > 0);
        }
        WebhookOp::Create(e) => {
            tx.prepare_cached(
                "INSERT INTO webhook_endpoints (id, account_id, url, events, description, secret,
                     enabled, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                e.id,
                e.account_id,
                e.url,
                events_json(&e.events),
                e.description,
                e.secret,
                e.enabled,
                e.created_at.millis(),
                e.updated_at.millis()
            ])?;
        }
        WebhookOp::Delete(id, slot) => {
            tx.prepare_cached("DELETE FROM webhook_deliveries WHERE endpoint_id = ?1")?
                .execute(params![id])?;
            let n = tx
                .prepare_cached("DELETE FROM webhook_endpoints WHERE id = ?1")?
                .execute(params![id])?;
            fill(slot, n > 0);
        }
        WebhookOp::Fanout(from, fanout, slot) => {
            let moved = tx
                .prepare_cached(
                    "UPDATE webhook_cursor SET seq = ?1, version = version + 1
                     WHERE name = 'fanout' AND version = ?2",
                )?
                .execute(params![fanout.seq, from.version])?;
            if moved == 1 {
                for d in &fanout.deliveries {
                    insert_delivery(tx, d)?;
                }
                for (license, kind, value) in &fanout.alert_states {
                    tx.prepare_cached(
                        "INSERT INTO webhook_alert_state (license_id, kind, value) VALUES (?1, ?2, ?3)
                         ON CONFLICT (license_id, kind) DO UPDATE SET value = excluded.value",
                    )?
                    .execute(params![license, kind, value])?;
                }
            }
            fill(slot, moved == 1);
        }
        WebhookOp::Enqueue(deliveries, slot) => {
            let mut ids = Vec::with_capacity(deliveries.len());
            for d in deliveries {
                ids.push(insert_delivery(tx, d)?);
            }
            fill(slot, ids);
        }
        WebhookOp::Attempt(a) => {
            tx.prepare_cached(
                "UPDATE webhook_deliveries SET status = ?1, attempts = attempts + 1,
                     next_attempt_at = ?2, lease_until = 0, last_attempt_at = ?3,
                     response_status = ?4, latency_ms = ?5, response_excerpt = ?6
                 WHERE id = ?7 AND status = 'pending'",
            )?
            .execute(params![
                a.status.as_str(),
                a.next_attempt_at.millis(),
                a.at.millis(),
                a.response_status,
                a.latency_ms,
                a.response_excerpt,
                a.delivery_id
            ])?;
        }
        WebhookOp::Prune(before, slot) => {
            let n = tx
                .prepare_cached(
                    "DELETE FROM webhook_deliveries WHERE status <> 'pending' AND created_at < ?1",
                )?
                .execute(params![before.millis()])?;
            fill(slot, n);
        }
    }
    Ok(())
}

fn endpoint_from(r: &Row<'_>) -> rusqlite::Result<WebhookEndpoint> {
    Ok(WebhookEndpoint {
        id: r.get(0)?,
        account_id: r.get(1)?,
        url: r.get(2)?,
        events: parse_events(&r.get::<_, String>(3)?),
        description: r.get(4)?,
        secret: r.get(5)?,
        enabled: r.get(6)?,
        created_at: Timestamp::from_millis(r.get(7)?),
        updated_at: Timestamp::from_millis(r.get(8)?),
    })
}

fn delivery_from(r: &Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: r.get(0)?,
        endpoint_id: r.get(1)?,
        account_id: r.get(2)?,
        event_id: r.get(3)?,
        event_type: r.get(4)?,
        order_key: r.get(5)?,
        payload: r.get(6)?,
        status: DeliveryStatus::parse(&r.get::<_, String>(7)?),
        attempts: count_u32(Some(r.get(8)?)).unwrap_or(0),
        next_attempt_at: Timestamp::from_millis(r.get(9)?),
        created_at: Timestamp::from_millis(r.get(10)?),
        last_attempt_at: r.get::<_, Option<i64>>(11)?.map(Timestamp::from_millis),
        response_status: r
            .get::<_, Option<i64>>(12)?
            .and_then(|s| u16::try_from(s).ok()),
        latency_ms: count_u32(r.get(13)?),
        response_excerpt: r.get(14)?,
    })
}

impl SqliteStore {
    async fn webhook_write(&self, op: WebhookOp) -> StoreResult<()> {
        let rx = self.write()?.send(vec![WriteOp::Webhook(Box::new(op))]);
        acked(rx).await
    }

    fn endpoints(&self, cond: &str, arg: Option<&str>) -> StoreResult<Vec<WebhookEndpoint>> {
        let sql =
            format!("SELECT {ENDPOINT_COLS} FROM webhook_endpoints {cond} ORDER BY created_at, id");
        self.reader().read(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = match arg {
                Some(a) => stmt.query_map(params![a], endpoint_from)?,
                None => stmt.query_map([], endpoint_from)?,
            };
            rows.collect()
        })
    }
}

#[async_trait]
impl WebhookStore for SqliteStore {
    async fn create_webhook(&self, endpoint: WebhookEndpoint) -> StoreResult<()> {
        self.webhook_write(WebhookOp::Create(endpoint)).await
    }

    async fn get_webhook(&self, id: &str) -> StoreResult<Option<WebhookEndpoint>> {
        Ok(self.endpoints("WHERE id = ?1", Some(id))?.pop())
    }

    async fn list_webhooks(&self, account_id: &str) -> StoreResult<Vec<WebhookEndpoint>> {
        self.endpoints("WHERE account_id = ?1", Some(account_id))
    }

    async fn enabled_webhooks(&self) -> StoreResult<Vec<WebhookEndpoint>> {
        self.endpoints("WHERE enabled = 1", None)
    }

    async fn update_webhook(&self, endpoint: WebhookEndpoint) -> StoreResult<()> {
        let slot = Slot::default();
        self.webhook_write(WebhookOp::Update(endpoint, slot.clone()))
            .await?;
        match take(&slot)? {
            true => Ok(()),
            false => Err(StoreError::NotFound("webhook")),
        }
    }

    async fn delete_webhook(&self, id: &str) -> StoreResult<bool> {
        let slot = Slot::default();
        self.webhook_write(WebhookOp::Delete(id.to_owned(), slot.clone()))
            .await?;
        take(&slot)
    }

    async fn fanout_cursor(&self) -> StoreResult<FanoutCursor> {
        self.reader().read(|conn| {
            conn.prepare_cached("SELECT seq, version FROM webhook_cursor WHERE name = 'fanout'")?
                .query_row([], |r| {
                    Ok(FanoutCursor {
                        seq: r.get(0)?,
                        version: r.get(1)?,
                    })
                })
        })
    }

    async fn audit_horizon(&self) -> StoreResult<i64> {
        // The writer commits events in `seq` order: the greatest committed is the horizon.
        self.reader().read(|conn| {
            conn.prepare_cached("SELECT coalesce(max(seq), 0) FROM audit_events")?
                .query_row([], |r| r.get(0))
        })
    }

    async fn commit_fanout(&self, from: FanoutCursor, fanout: Fanout) -> StoreResult<bool> {
        let slot = Slot::default();
        self.webhook_write(WebhookOp::Fanout(from, fanout, slot.clone()))
            .await?;
        take(&slot)
    }

    async fn alert_states(&self) -> StoreResult<Vec<(String, String, String)>> {
        self.reader().read(|conn| {
            conn.prepare_cached("SELECT license_id, kind, value FROM webhook_alert_state")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
    }

    async fn pending_per_endpoint(&self) -> StoreResult<Vec<(String, u64)>> {
        self.reader().read(|conn| {
            conn.prepare_cached(
                "SELECT endpoint_id, count(*) FROM webhook_deliveries WHERE status = 'pending'
                 GROUP BY endpoint_id",
            )?
            .query_map([], |r| {
                Ok((r.get(0)?, u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0)))
            })?
            .collect()
        })
    }

    async fn enqueue_deliveries(&self, deliveries: Vec<NewDelivery>) -> StoreResult<Vec<i64>> {
        let slot = Slot::default();
        self.webhook_write(WebhookOp::Enqueue(deliveries, slot.clone()))
            .await?;
        take(&slot)
    }

    async fn claim_deliveries(
        &self,
        now: Timestamp,
        _lease_until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        let sql = format!(
            "SELECT {} FROM {} ORDER BY d.id LIMIT ?2",
            DELIVERY_COLS
                .split(", ")
                .map(|c| format!("d.{}", c.trim()))
                .collect::<Vec<_>>()
                .join(", "),
            claim_from("?1")
        );
        // Heads in flight are read too (they stay pending until their outcome is written):
        // ask for as many more as are claimed.
        let mut claims = self
            .webhook_claims
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let wanted = limit.saturating_add(claims.len());
        let found = self.reader().read(|conn| {
            conn.prepare_cached(&sql)?
                .query_map(
                    params![now.millis(), i64::try_from(wanted).unwrap_or(i64::MAX)],
                    delivery_from,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let claimed: Vec<Delivery> = found
            .into_iter()
            .filter(|d| !claims.contains(&d.id))
            .take(limit)
            .collect();
        claims.extend(claimed.iter().map(|d| d.id));
        Ok(claimed)
    }

    async fn record_attempt(&self, attempt: Attempt) -> StoreResult<()> {
        let id = attempt.delivery_id;
        let written = self.webhook_write(WebhookOp::Attempt(attempt)).await;
        // Written or not, the claim ends: a failed write is sent again (at least once).
        self.webhook_claims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        written
    }

    async fn get_delivery(&self, id: i64) -> StoreResult<Option<Delivery>> {
        let sql = format!("SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE id = ?1");
        self.reader().read(|conn| {
            conn.prepare_cached(&sql)?
                .query_row(params![id], delivery_from)
                .optional()
        })
    }

    async fn list_deliveries(
        &self,
        endpoint_id: &str,
        before_id: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        let sql = format!(
            "SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE endpoint_id = ?1 AND id < ?2
             ORDER BY id DESC LIMIT ?3"
        );
        self.reader().read(|conn| {
            conn.prepare_cached(&sql)?
                .query_map(
                    params![
                        endpoint_id,
                        before_id.unwrap_or(i64::MAX),
                        i64::try_from(limit).unwrap_or(i64::MAX)
                    ],
                    delivery_from,
                )?
                .collect()
        })
    }

    async fn backlog(&self) -> StoreResult<Backlog> {
        self.reader().read(|conn| {
            conn.prepare_cached(
                "SELECT count(*), min(created_at) FROM webhook_deliveries WHERE status = 'pending'",
            )?
            .query_row([], |r| {
                Ok(Backlog {
                    pending: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                    oldest_created_at: r.get::<_, Option<i64>>(1)?.map(Timestamp::from_millis),
                })
            })
        })
    }

    async fn denials_since(&self, since: Timestamp) -> StoreResult<Vec<(String, u64)>> {
        self.reader().read(|conn| {
            conn.prepare_cached(
                "SELECT license_id, count(*) FROM audit_events
                 WHERE event = 'denied' AND at >= ?1 GROUP BY license_id",
            )?
            .query_map(params![since.millis()], |r| {
                Ok((r.get(0)?, u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0)))
            })?
            .collect()
        })
    }

    async fn prune_deliveries(&self, before: Timestamp) -> StoreResult<usize> {
        let slot = Slot::default();
        self.webhook_write(WebhookOp::Prune(before, slot.clone()))
            .await?;
        take(&slot)
    }
}
