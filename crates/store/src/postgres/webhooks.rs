//! Webhooks on PostgreSQL (`crate::webhooks`), shared by every node: the fan-out's
//! compare-and-set on the cursor's version (nodes that plan the same events race; one commit
//! wins, the others write nothing), and claims with `FOR UPDATE SKIP LOCKED` that set a lease,
//! so each delivery is sent by one node at a time (another node takes it over only once the
//! lease has passed: its sender died). Times are the database's (`clock`), like sessions'.

use async_trait::async_trait;
use leasehold_core::Timestamp;
use sqlx::postgres::PgRow;
use sqlx::Row;

use super::errors::db_error;
use super::node::PgStore;
use super::retry::transaction;
use super::rows::fetch_rows;
use crate::webhooks::*;
use crate::{StoreError, StoreResult};

fn endpoint_from(r: &PgRow) -> Result<WebhookEndpoint, sqlx::Error> {
    Ok(WebhookEndpoint {
        id: r.try_get(0)?,
        account_id: r.try_get(1)?,
        url: r.try_get(2)?,
        events: parse_events(&r.try_get::<String, _>(3)?),
        description: r.try_get(4)?,
        secret: r.try_get(5)?,
        enabled: r.try_get(6)?,
        created_at: Timestamp::from_millis(r.try_get(7)?),
        updated_at: Timestamp::from_millis(r.try_get(8)?),
    })
}

fn delivery_from(r: &PgRow) -> Result<Delivery, sqlx::Error> {
    Ok(Delivery {
        id: r.try_get(0)?,
        endpoint_id: r.try_get(1)?,
        account_id: r.try_get(2)?,
        event_id: r.try_get(3)?,
        event_type: r.try_get(4)?,
        order_key: r.try_get(5)?,
        payload: r.try_get(6)?,
        status: DeliveryStatus::parse(&r.try_get::<String, _>(7)?),
        attempts: count_u32(Some(r.try_get(8)?)).unwrap_or(0),
        next_attempt_at: Timestamp::from_millis(r.try_get(9)?),
        created_at: Timestamp::from_millis(r.try_get(10)?),
        last_attempt_at: r.try_get::<Option<i64>, _>(11)?.map(Timestamp::from_millis),
        response_status: r
            .try_get::<Option<i64>, _>(12)?
            .and_then(|s| u16::try_from(s).ok()),
        latency_ms: count_u32(r.try_get(13)?),
        response_excerpt: r.try_get(14)?,
    })
}

const INSERT_DELIVERY: &str = "INSERT INTO webhook_deliveries (endpoint_id, account_id, event_id,
     event_type, order_key, payload, status, attempts, next_attempt_at, lease_until, created_at,
     response_excerpt)
     VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, 0, $8, $9) RETURNING id";

async fn insert_delivery(
    conn: &mut sqlx::PgConnection,
    d: &NewDelivery,
    at: Timestamp,
) -> StoreResult<i64> {
    sqlx::query_scalar(INSERT_DELIVERY)
        .bind(&d.endpoint_id)
        .bind(&d.account_id)
        .bind(&d.event_id)
        .bind(&d.event_type)
        .bind(&d.order_key)
        .bind(&d.payload)
        .bind(d.status.as_str())
        .bind(at.millis())
        .bind(&d.excerpt)
        .fetch_one(conn)
        .await
        .map_err(db_error)
}

fn limit_i64(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl PgStore {
    async fn endpoints(&self, cond: &str, arg: Option<&str>) -> StoreResult<Vec<WebhookEndpoint>> {
        let sql =
            format!("SELECT {ENDPOINT_COLS} FROM webhook_endpoints {cond} ORDER BY created_at, id");
        let query = sqlx::query(&sql);
        let query = match arg {
            Some(a) => query.bind(a.to_owned()),
            None => query,
        };
        fetch_rows(query, &self.pool, endpoint_from).await
    }

    /// Inserts the endpoint (`create`) or replaces what may change of it (`created_at`, the
    /// ninth parameter, only written by the insert).
    async fn put_endpoint(&self, e: &WebhookEndpoint, create: bool) -> StoreResult<u64> {
        let sql = if create {
            "INSERT INTO webhook_endpoints (id, account_id, url, events, description, secret,
                 enabled, updated_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        } else {
            "UPDATE webhook_endpoints SET url = $3, events = $4, description = $5, secret = $6,
                 enabled = $7, updated_at = $8 WHERE id = $1 AND account_id = $2"
        };
        let query = sqlx::query(sql)
            .bind(&e.id)
            .bind(&e.account_id)
            .bind(&e.url)
            .bind(events_json(&e.events))
            .bind(&e.description)
            .bind(&e.secret)
            .bind(e.enabled)
            .bind(e.updated_at.millis());
        let query = if create {
            query.bind(e.created_at.millis())
        } else {
            query
        };
        query
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())
            .map_err(db_error)
    }
}

#[async_trait]
impl WebhookStore for PgStore {
    async fn create_webhook(&self, endpoint: WebhookEndpoint) -> StoreResult<()> {
        self.put_endpoint(&endpoint, true).await.map(|_| ())
    }

    async fn get_webhook(&self, id: &str) -> StoreResult<Option<WebhookEndpoint>> {
        Ok(self.endpoints("WHERE id = $1", Some(id)).await?.pop())
    }

    async fn list_webhooks(&self, account_id: &str) -> StoreResult<Vec<WebhookEndpoint>> {
        self.endpoints("WHERE account_id = $1", Some(account_id))
            .await
    }

    async fn enabled_webhooks(&self) -> StoreResult<Vec<WebhookEndpoint>> {
        self.endpoints("WHERE enabled", None).await
    }

    async fn update_webhook(&self, endpoint: WebhookEndpoint) -> StoreResult<()> {
        match self.put_endpoint(&endpoint, false).await? {
            0 => Err(StoreError::NotFound("webhook")),
            _ => Ok(()),
        }
    }

    async fn delete_webhook(&self, id: &str) -> StoreResult<bool> {
        transaction!(&self.pool, |tx| {
            sqlx::query("DELETE FROM webhook_deliveries WHERE endpoint_id = $1")
                .bind(id)
                .execute(&mut **tx)
                .await
                .map_err(db_error)?;
            let n = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
                .bind(id)
                .execute(&mut **tx)
                .await
                .map_err(db_error)?
                .rows_affected();
            Ok(n > 0)
        })
    }

    async fn fanout_cursor(&self) -> StoreResult<FanoutCursor> {
        let (seq, version): (i64, i64) =
            sqlx::query_as("SELECT seq, version FROM webhook_cursor WHERE name = 'fanout'")
                .fetch_one(&self.pool)
                .await
                .map_err(db_error)?;
        Ok(FanoutCursor { seq, version })
    }

    async fn audit_horizon(&self) -> StoreResult<i64> {
        super::audit::horizon(&self.pool, &self.audit_horizon).await
    }

    async fn commit_fanout(&self, from: FanoutCursor, fanout: Fanout) -> StoreResult<bool> {
        transaction!(&self.pool, |tx| {
            // The row lock makes a racing commit wait and then find the version moved.
            let moved = sqlx::query(
                "UPDATE webhook_cursor SET seq = $1, version = version + 1
                 WHERE name = 'fanout' AND version = $2",
            )
            .bind(fanout.seq)
            .bind(from.version)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?
            .rows_affected();
            if moved != 1 {
                return Ok(false);
            }
            for d in &fanout.deliveries {
                insert_delivery(tx, d, self.clock.db(d.created_at)).await?;
            }
            for (license, kind, value) in &fanout.alert_states {
                sqlx::query(
                    "INSERT INTO webhook_alert_state (license_id, kind, value) VALUES ($1, $2, $3)
                     ON CONFLICT (license_id, kind) DO UPDATE SET value = excluded.value",
                )
                .bind(license)
                .bind(kind)
                .bind(value)
                .execute(&mut **tx)
                .await
                .map_err(db_error)?;
            }
            Ok(true)
        })
    }

    async fn alert_states(&self) -> StoreResult<Vec<(String, String, String)>> {
        let query = sqlx::query("SELECT license_id, kind, value FROM webhook_alert_state");
        fetch_rows(query, &self.pool, |r| {
            Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))
        })
        .await
    }

    async fn pending_per_endpoint(&self) -> StoreResult<Vec<(String, u64)>> {
        let query = sqlx::query(
            "SELECT endpoint_id, count(*) FROM webhook_deliveries WHERE status = 'pending'
             GROUP BY endpoint_id",
        );
        fetch_rows(query, &self.pool, |r| {
            Ok((
                r.try_get(0)?,
                u64::try_from(r.try_get::<i64, _>(1)?).unwrap_or(0),
            ))
        })
        .await
    }

    async fn enqueue_deliveries(&self, deliveries: Vec<NewDelivery>) -> StoreResult<Vec<i64>> {
        transaction!(&self.pool, |tx| {
            let mut ids = Vec::with_capacity(deliveries.len());
            for d in &deliveries {
                ids.push(insert_delivery(tx, d, self.clock.db(d.created_at)).await?);
            }
            Ok(ids)
        })
    }

    async fn claim_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        let sql = format!(
            "UPDATE webhook_deliveries SET lease_until = $2 WHERE id IN (
                 SELECT d.id FROM {}
                 ORDER BY d.id LIMIT $3 FOR UPDATE OF d SKIP LOCKED)
             RETURNING {DELIVERY_COLS}",
            claim_from("$1")
        );
        let query = sqlx::query(&sql)
            .bind(self.clock.db(now).millis())
            .bind(self.clock.db(lease_until).millis())
            .bind(limit_i64(limit));
        let mut found = fetch_rows(query, &self.pool, delivery_from).await?;
        found.sort_by_key(|d| d.id);
        Ok(found)
    }

    async fn record_attempt(&self, a: Attempt) -> StoreResult<()> {
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $1, attempts = attempts + 1,
                 next_attempt_at = $2, lease_until = 0, last_attempt_at = $3,
                 response_status = $4, latency_ms = $5, response_excerpt = $6
             WHERE id = $7 AND status = 'pending'",
        )
        .bind(a.status.as_str())
        .bind(self.clock.db(a.next_attempt_at).millis())
        .bind(self.clock.db(a.at).millis())
        .bind(a.response_status.map(i64::from))
        .bind(i64::from(a.latency_ms))
        .bind(&a.response_excerpt)
        .bind(a.delivery_id)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn get_delivery(&self, id: i64) -> StoreResult<Option<Delivery>> {
        let sql = format!("SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE id = $1");
        Ok(
            fetch_rows(sqlx::query(&sql).bind(id), &self.pool, delivery_from)
                .await?
                .pop(),
        )
    }

    async fn list_deliveries(
        &self,
        endpoint_id: &str,
        before_id: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        let sql = format!(
            "SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE endpoint_id = $1 AND id < $2
             ORDER BY id DESC LIMIT $3"
        );
        let query = sqlx::query(&sql)
            .bind(endpoint_id)
            .bind(before_id.unwrap_or(i64::MAX))
            .bind(limit_i64(limit));
        fetch_rows(query, &self.pool, delivery_from).await
    }

    async fn backlog(&self) -> StoreResult<Backlog> {
        let (pending, oldest): (i64, Option<i64>) = sqlx::query_as(
            "SELECT count(*), min(created_at) FROM webhook_deliveries WHERE status = 'pending'",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(Backlog {
            pending: u64::try_from(pending).unwrap_or(0),
            oldest_created_at: oldest.map(Timestamp::from_millis),
        })
    }

    async fn denials_since(&self, since: Timestamp) -> StoreResult<Vec<(String, u64)>> {
        let query = sqlx::query(
            "SELECT license_id, count(*) FROM audit_events
             WHERE event = 'denied' AND at >= $1 GROUP BY license_id",
        )
        .bind(self.clock.db(since).millis());
        fetch_rows(query, &self.pool, |r| {
            Ok((
                r.try_get(0)?,
                u64::try_from(r.try_get::<i64, _>(1)?).unwrap_or(0),
            ))
        })
        .await
    }

    async fn prune_deliveries(&self, before: Timestamp) -> StoreResult<usize> {
        let n = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE status <> 'pending' AND created_at < $1",
        )
        .bind(self.clock.db(before).millis())
        .execute(&self.pool)
        .await
        .map_err(db_error)?
        .rows_affected();
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}
