//! Settings, credentials, accounts and users: the plain records around the licenses, one
//! statement (or one short transaction) each. Credential and user lookups by key are batched
//! point reads (`read`).

use leasehold_core::Timestamp;
use sqlx::postgres::PgPool;
use sqlx::Row;

use leasehold_proto::EndReason;

use super::end::end_sessions;
use super::errors::{db_error, is_foreign_key_violation};
use super::retry::{again, transaction};
use super::rows::{
    fetch_rows, insert_audit, user_from, AuditRows, TermsCache, INSERT_CREDENTIAL, USER_COLS,
};
use crate::admin_events;
use crate::codec::principal_columns;
use crate::records::*;
use crate::{StoreError, StoreResult};

// ---- settings ----

pub(super) async fn get_setting(pool: &PgPool, key: &str) -> StoreResult<Option<String>> {
    sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
        .bind(key)
        .fetch_optional(pool)
        .await
        .map_err(db_error)
}

pub(super) async fn put_setting(pool: &PgPool, key: &str, value: &str) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO settings (key, value) VALUES ($1, $2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(key)
    .bind(value)
    .execute(pool)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Stores `value` under `key` unless the key is set already; answers the value stored. Nodes
/// starting at once race here: exactly one insert wins, all read the winner.
pub(super) async fn put_setting_if_absent(
    pool: &PgPool,
    key: &str,
    value: &str,
) -> StoreResult<String> {
    // Under `SERIALIZABLE` the losers of that race get `40001`: they insert again (and find
    // the key set).
    again(|| async {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(pool)
        .await
        .map_err(db_error)
    })
    .await?;
    get_setting(pool, key)
        .await?
        .ok_or_else(|| StoreError::Unavailable(format!("setting {key} vanished")))
}

// ---- credentials ----

/// Stores `credential` (replacing one with the same hash) through `conn`.
async fn insert_credential<'c>(
    conn: impl sqlx::PgExecutor<'c>,
    credential: &Credential,
) -> StoreResult<()> {
    let (account_id, username) = principal_columns(&credential.principal);
    sqlx::query(INSERT_CREDENTIAL)
        .bind(credential.hash.as_slice())
        .bind(credential.principal.kind_str())
        .bind(account_id)
        .bind(username)
        .bind(credential.expires_at.map(Timestamp::millis))
        .execute(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Stores a credential with its `token_issued` event (if it has one), in one transaction.
pub(super) async fn put_credential(
    pool: &PgPool,
    credential: Credential,
    now: Timestamp,
) -> StoreResult<()> {
    let Some(event) = admin_events::token_issued(&credential, now) else {
        return insert_credential(pool, &credential).await;
    };
    transaction!(pool, |tx| {
        insert_credential(&mut **tx, &credential).await?;
        insert_audit(tx, AuditRows::of(event.clone()))
            .await
            .map_err(db_error)
    })
}

// ---- accounts ----

/// Creates an account with its admin credential, in one transaction.
pub(super) async fn create_account(
    pool: &PgPool,
    account: Account,
    admin: Credential,
) -> StoreResult<()> {
    transaction!(pool, |tx| {
        let inserted = sqlx::query(
            "INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&account.id)
        .bind(&account.name)
        .bind(account.created_at.millis())
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "account {} exists",
                account.id
            )));
        }
        insert_credential(&mut **tx, &admin).await
    })
}

pub(super) async fn get_account(pool: &PgPool, id: &str) -> StoreResult<Option<Account>> {
    let row = sqlx::query("SELECT id, name, created_at FROM accounts WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(db_error)?;
    row.map(|r| {
        Ok(Account {
            id: r.try_get(0)?,
            name: r.try_get(1)?,
            created_at: Timestamp::from_millis(r.try_get(2)?),
        })
    })
    .transpose()
    .map_err(db_error)
}

// ---- users ----

/// Creates or replaces a user; answers whether it was created.
/// Creates or replaces a user; an inactive one's live sessions end in the same transaction.
/// Open batches read the user's flag `FOR SHARE`, so they serialize with this update.
pub(super) async fn put_user(
    pool: &PgPool,
    cache: &TermsCache,
    user: User,
    now: Timestamp,
) -> StoreResult<(UserPut, Vec<Session>)> {
    let (created, ended) = transaction!(pool, |tx| {
        let result = sqlx::query_scalar::<_, bool>(
            "INSERT INTO users
                 (account_id, username, kind, active, client_id, client_secret_hash, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (account_id, username) DO UPDATE SET
                 kind = excluded.kind, active = excluded.active, client_id = excluded.client_id,
                 client_secret_hash = excluded.client_secret_hash
             RETURNING (xmax = 0)",
        )
        .bind(&user.account_id)
        .bind(&user.username)
        .bind(user.kind.as_str())
        .bind(user.active)
        .bind(&user.client_id)
        .bind(user.client_secret_hash.map(|h| h.to_vec()))
        .bind(user.created_at.millis())
        .fetch_one(&mut **tx)
        .await;
        let created = match result {
            Ok(created) => created,
            Err(e) if is_foreign_key_violation(&e) => return Err(StoreError::NotFound("account")),
            Err(e) => return Err(db_error(e)),
        };
        insert_audit(
            tx,
            AuditRows::of(admin_events::user_put(&user, created, now)),
        )
        .await
        .map_err(db_error)?;
        let ended = if user.active {
            Vec::new()
        } else {
            end_sessions(
                tx,
                cache,
                "l.account_id = $3 AND s.username = $4",
                &[&user.account_id, &user.username],
                EndReason::UserDeactivated,
                now,
            )
            .await?
        };
        Ok((created, ended))
    })?;
    let put = UserPut {
        created,
        ended: u32::try_from(ended.len()).unwrap_or(u32::MAX),
    };
    Ok((put, ended))
}

pub(super) async fn find_user_by_client_id(
    pool: &PgPool,
    client_id: &str,
) -> StoreResult<Option<User>> {
    let row = sqlx::query(&format!(
        "SELECT {USER_COLS} FROM users WHERE client_id = $1"
    ))
    .bind(client_id)
    .fetch_optional(pool)
    .await
    .map_err(db_error)?;
    row.map(|r| user_from(&r)).transpose().map_err(db_error)
}

/// The account's users, by username.
pub(super) async fn list_users(pool: &PgPool, account_id: &str) -> StoreResult<Vec<User>> {
    let sql = format!("SELECT {USER_COLS} FROM users WHERE account_id = $1 ORDER BY username");
    fetch_rows(sqlx::query(&sql).bind(account_id), pool, user_from).await
}
