//! Session events across nodes: `publish` NOTIFYs an event on `EVENTS_CHANNEL`, and every
//! node's queue listener (`queue/listener.rs`, the one LISTEN connection of a node, which
//! listens on this channel too) hands what it hears to its own `EventHub`. A node that lost
//! its LISTEN connection may have missed events: once listening again it wakes every stream
//! of its hub to re-read its session (`EventHub::wake_all`), so no end is missed for good.

use sqlx::postgres::PgPool;

use super::errors::db_error;
use crate::events::SessionEvent;
use crate::StoreResult;

/// The NOTIFY channel of session events; a payload is `SessionEvent::encode`'s text.
pub(super) const EVENTS_CHANNEL: &str = "leasehold_events";

/// NOTIFYs `event` to every node (this one included: its listener hears its own NOTIFYs).
/// One statement on a pooled connection, after the change it reports was committed.
pub(super) async fn publish(pool: &PgPool, event: &SessionEvent) -> StoreResult<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(EVENTS_CHANNEL)
        .bind(event.encode())
        .execute(pool)
        .await
        .map(drop)
        .map_err(db_error)
}
