//! Migration 4 on PostgreSQL: a database made by an earlier version, with usernames that differ
//! only in case, is folded by `leasehold migrate` as SQLite's is (the store's unit test covers
//! SQLite): the lowercase one keeps the name, the others are renamed `name.N` and listed.

use std::process::Stdio;

use sqlx::{Connection, Row};

use crate::pg::TestDb;
use crate::support::BIN;

const BEFORE: [&str; 3] = [
    include_str!("../../../store/migrations/postgres/0001_init.sql"),
    include_str!("../../../store/migrations/postgres/0002_models.sql"),
    include_str!("../../../store/migrations/postgres/0003_queue.sql"),
];

#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: set LEASEHOLD_TEST_DATABASE_URL"
)]
#[tokio::test]
async fn migrating_postgresql_folds_usernames_and_renames_collisions() {
    let Some(db) = TestDb::create("username migration").await else {
        return;
    };
    // Arrange: schema version 3, as the previous version left it, with mixed-case names.
    let mut conn = db.at_version(&BEFORE).await;
    sqlx::raw_sql(
        "INSERT INTO accounts VALUES ('a1', 'Acme', 0);
         INSERT INTO users (account_id, username, kind, active, created_at) VALUES
           ('a1', 'Dave', 'interactive', true, 10),
           ('a1', 'dave', 'interactive', true, 30),
           ('a1', 'Erin', 'interactive', true, 40);
         INSERT INTO credentials (hash, kind, account_id, username) VALUES
           ('\\x01', 'user', 'a1', 'Dave'), ('\\x02', 'user', 'a1', 'Erin');
         INSERT INTO licenses VALUES ('l1', 'a1', 'concurrent_sessions', '{}', 0);
         INSERT INTO sessions (id, license_id, username, kind, device_id, instance_id, opened_at, expires_at)
           VALUES ('s1', 'l1', 'Erin', 'interactive', 'pc', 'x', 0, 100);",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    // Act
    let out = tokio::process::Command::new(BIN)
        .args(["migrate", "--database-url", &db.url])
        .env("LEASEHOLD_LOG", "off")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    // Assert
    let names = |sql: &'static str| {
        let conn = sqlx::PgConnection::connect(&db.url);
        async move {
            let rows = sqlx::query(sql)
                .fetch_all(&mut conn.await.unwrap())
                .await
                .unwrap();
            rows.iter()
                .map(|r| r.get::<String, _>(0))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        names("SELECT username FROM users ORDER BY created_at").await,
        ["dave.2", "dave", "erin"]
    );
    assert_eq!(
        names("SELECT username FROM credentials ORDER BY hash").await,
        ["dave.2", "erin"]
    );
    assert_eq!(names("SELECT username FROM sessions").await, ["erin"]);
    assert_eq!(
        names("SELECT old_name || '>' || new_name FROM username_renames ORDER BY 1").await,
        ["Dave>dave.2", "Erin>erin"]
    );
    conn.close().await.ok();
    db.drop_db().await;
}
