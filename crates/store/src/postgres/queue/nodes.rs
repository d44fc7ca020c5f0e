//! The `nodes` table: this node's row (seen by the database's clock), and forgetting nodes
//! that stopped or have been gone for long, with their queue entries. Whether a node is alive
//! is the SQL condition `LIVE_NODE`.

use sqlx::postgres::PgPool;

/// Nodes unseen this long are forgotten, with their queue entries.
const NODE_FORGET: &str = "10 minutes";

/// Records this node as seen now (database clock).
pub(in crate::postgres) async fn beat(pool: &PgPool, node_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO nodes (node_id, seen_at) VALUES ($1, clock_timestamp())
         ON CONFLICT (node_id) DO UPDATE SET seen_at = excluded.seen_at",
    )
    .bind(node_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Removes a node and its queue entries.
pub(in crate::postgres) async fn forget_node(
    pool: &PgPool,
    node_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH entries AS (DELETE FROM queue_entries WHERE node_id = $1)
         DELETE FROM nodes WHERE node_id = $1",
    )
    .bind(node_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Forgets nodes unseen for long, and the queue entries of nodes that are gone.
pub(super) async fn forget_gone_nodes(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "WITH gone AS (
             DELETE FROM nodes WHERE seen_at < now() - interval '{NODE_FORGET}'
             RETURNING node_id
         )
         DELETE FROM queue_entries q
         WHERE q.node_id IN (SELECT node_id FROM gone)
            OR NOT EXISTS (SELECT 1 FROM nodes n WHERE n.node_id = q.node_id)"
    ))
    .execute(pool)
    .await?;
    Ok(())
}
