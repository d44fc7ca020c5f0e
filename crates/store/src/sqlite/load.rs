//! The live state read back from the database at start: settings, accounts, credentials,
//! users, licenses, live sessions (`ended_at IS NULL`) and the licensing-model registrations.

use std::sync::mpsc::Sender;

use leasehold_core::Timestamp;
use rusqlite::Connection;

use super::mem::Mem;
use super::slab::{parse_sid, Live};
use super::writer::Job;
use crate::codec::{
    hash_from, parse_kind, parse_model, parse_terms, principal_from, session_clock,
};
use crate::records::*;
use crate::StoreResult;

/// Memory as the database holds it: the state to start from.
pub(super) fn load(conn: &Connection, writer: Sender<Job>, now: Timestamp) -> StoreResult<Mem> {
    let mut mem = Mem::new(writer, now);
    let mut stmt = conn.prepare("SELECT key, value FROM settings")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (k, v) = row?;
        mem.settings.insert(k, v);
    }
    let mut stmt = conn.prepare("SELECT id, name, created_at FROM accounts")?;
    for row in stmt.query_map([], |r| {
        Ok(Account {
            id: r.get(0)?,
            name: r.get(1)?,
            created_at: Timestamp::from_millis(r.get(2)?),
        })
    })? {
        let a = row?;
        mem.accounts.insert(a.id.clone(), a);
    }
    let mut stmt =
        conn.prepare("SELECT hash, kind, account_id, username, expires_at FROM credentials")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, Option<i64>>(4)?,
        ))
    })?;
    for row in rows {
        let (hash, kind, account_id, username, expires_at) = row?;
        let Some(hash) = hash_from(hash) else {
            continue;
        };
        let Some(principal) = principal_from(&kind, account_id, username) else {
            continue;
        };
        let expires_at = expires_at.map(Timestamp::from_millis);
        if let Some(at) = expires_at {
            mem.credential_expiry.insert((at, hash));
        }
        mem.credentials.insert(
            hash,
            Credential {
                hash,
                principal,
                expires_at,
            },
        );
    }
    let mut stmt = conn.prepare(
        "SELECT account_id, username, kind, active, client_id, client_secret_hash, created_at FROM users",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(User {
            account_id: r.get(0)?,
            username: r.get(1)?,
            kind: parse_kind(&r.get::<_, String>(2)?),
            active: r.get(3)?,
            client_id: r.get(4)?,
            client_secret_hash: r.get::<_, Option<Vec<u8>>>(5)?.and_then(hash_from),
            created_at: Timestamp::from_millis(r.get(6)?),
        })
    })?;
    for row in rows {
        let u = row?;
        if let Some(cid) = &u.client_id {
            mem.client_ids
                .insert(cid.clone(), (u.account_id.clone(), u.username.clone()));
        }
        mem.users
            .insert((u.account_id.clone(), u.username.clone()), u);
    }
    let mut stmt = conn.prepare("SELECT id, account_id, model, terms, created_at FROM licenses")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    for row in rows {
        let (id, account_id, model, terms, created_at) = row?;
        let terms = parse_terms(&id, &terms)?;
        let model = parse_model(&id, &model)?;
        mem.add_license(License {
            id,
            account_id,
            model,
            terms,
            created_at: Timestamp::from_millis(created_at),
        });
    }
    let mut stmt = conn.prepare(
        "SELECT id, license_id, username, kind, device_id, instance_id, opened_at, expires_at, hard_end,
                overdraft, license_end
         FROM sessions WHERE ended_at IS NULL",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, i64>(6)?,
            r.get::<_, i64>(7)?,
            r.get::<_, Option<i64>>(8)?,
            r.get::<_, bool>(9)?,
            r.get::<_, Option<i64>>(10)?,
        ))
    })?;
    for row in rows {
        let (
            id,
            license_id,
            username,
            kind,
            device_id,
            instance_id,
            opened,
            expires,
            hard_end,
            overdraft,
            license_end,
        ) = row?;
        let Some(li) = mem.license_at(&license_id) else {
            continue;
        };
        let Some(sid) = parse_sid(&id) else {
            // Never written by this server (its ids are UUIDs): not held in memory.
            tracing::warn!(session = %id, "live session with a malformed id left out");
            continue;
        };
        let clock = session_clock(opened, expires, hard_end, license_end);
        let user = mem.names.intern(&username);
        // Its license is in memory (found above), so it is inserted.
        let _slot = mem.insert_live(Live::new(
            sid,
            li as u32,
            user,
            parse_kind(&kind),
            &device_id,
            &instance_id,
            &clock,
            overdraft,
        ));
    }
    let mut stmt =
        conn.prepare("SELECT license_id, username, active, updated_at FROM license_users")?;
    let rows = stmt.query_map([], |r| {
        Ok(LicenseUser {
            license_id: r.get(0)?,
            username: r.get(1)?,
            active: r.get(2)?,
            updated_at: Timestamp::from_millis(r.get(3)?),
        })
    })?;
    for row in rows {
        let u = row?;
        if let Some(lic) = mem.lic_mut(&u.license_id) {
            lic.active_users += u32::from(u.active);
            lic.users.insert(u.username.clone(), u);
        }
    }
    let mut stmt =
        conn.prepare("SELECT license_id, fingerprint, name, activated_at FROM license_devices")?;
    let rows = stmt.query_map([], |r| {
        Ok(DeviceActivation {
            license_id: r.get(0)?,
            fingerprint: r.get(1)?,
            name: r.get(2)?,
            activated_at: Timestamp::from_millis(r.get(3)?),
        })
    })?;
    for row in rows {
        let d = row?;
        if let Some(lic) = mem.lic_mut(&d.license_id) {
            lic.devices.insert(d.fingerprint.clone(), d);
        }
    }
    for lic in &mut mem.licenses {
        lic.high_water = lic.live;
        lic.low_water = lic.live;
    }
    Ok(mem)
}
