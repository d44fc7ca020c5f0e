//! The live state read back from the database at start: settings, accounts, credentials,
//! users, licenses, the licensing-model registrations, the floors of mass ends, and live
//! sessions (`ended_at IS NULL`): those under a floor are ending again (`mem::ending`).

use std::sync::mpsc::Sender;

use leasehold_core::Timestamp;
use rusqlite::Connection;

use super::mem::{Floor, Mem};
use super::slab::{parse_sid, Live};
use super::writer::Job;
use crate::codec::{
    hash_from, parse_end_reason, parse_kind, parse_model, parse_terms, principal_from,
    session_clock,
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
        "SELECT account_id, username, kind, active, client_id, client_secret_hash, created_at,
                end_below, end_at
         FROM users",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            User {
                account_id: r.get(0)?,
                username: r.get(1)?,
                kind: parse_kind(&r.get::<_, String>(2)?),
                active: r.get(3)?,
                client_id: r.get(4)?,
                client_secret_hash: r.get::<_, Option<Vec<u8>>>(5)?.and_then(hash_from),
                created_at: Timestamp::from_millis(r.get(6)?),
            },
            floor(r.get(7)?, Some("user_deactivated".into()), r.get(8)?),
        ))
    })?;
    // Deactivations whose ends may not all be on disk: applied to the licenses below.
    let mut user_floors = Vec::new();
    for row in rows {
        let (u, floor) = row?;
        if let Some(f) = floor {
            user_floors.push((u.account_id.clone(), u.username.clone(), f));
        }
        if let Some(cid) = &u.client_id {
            mem.client_ids
                .insert(cid.clone(), (u.account_id.clone(), u.username.clone()));
        }
        mem.users
            .insert((u.account_id.clone(), u.username.clone()), u);
    }
    let mut stmt = conn.prepare(
        "SELECT id, account_id, model, terms, created_at, end_below, end_reason, end_at
         FROM licenses",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
            floor(r.get(5)?, r.get(6)?, r.get(7)?),
        ))
    })?;
    for row in rows {
        let (id, account_id, model, terms, created_at, floor) = row?;
        let terms = parse_terms(&id, &terms)?;
        let model = parse_model(&id, &model)?;
        let li = mem.licenses.len();
        mem.add_license(License {
            id,
            account_id,
            model,
            terms,
            created_at: Timestamp::from_millis(created_at),
        });
        if let (Some(f), Some(lic)) = (floor, mem.licenses.get_mut(li)) {
            lic.floors.push(f);
        }
    }
    for (account_id, username, f) in user_floors {
        let user = mem.names.intern(&username);
        for lic in &mut mem.licenses {
            if lic.license.account_id == account_id {
                lic.user_floors.entry(user).or_default().push(f);
            }
        }
    }
    let mut stmt = conn.prepare(
        "SELECT license_id, username, active, updated_at, end_below, end_at FROM license_users",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            LicenseUser {
                license_id: r.get(0)?,
                username: r.get(1)?,
                active: r.get(2)?,
                updated_at: Timestamp::from_millis(r.get(3)?),
            },
            floor(r.get(4)?, Some("user_deactivated".into()), r.get(5)?),
        ))
    })?;
    for row in rows {
        let (u, floor) = row?;
        let user = floor.map(|_| mem.names.intern(&u.username));
        if let Some(lic) = mem.lic_mut(&u.license_id) {
            if let (Some(f), Some(user)) = (floor, user) {
                let floors = lic.user_floors.entry(user).or_default();
                floors.push(f);
                floors.sort_by_key(|f| f.below);
            }
            lic.active_users += u32::from(u.active);
            lic.users.insert(u.username.clone(), u);
        }
    }
    let mut stmt = conn.prepare(
        "SELECT id, license_id, username, kind, device_id, instance_id, opened_at, expires_at, hard_end,
                overdraft, seq, borrow_until
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
            r.get::<_, i64>(10)?,
            r.get::<_, Option<i64>>(11)?,
        ))
    })?;
    let mut next_seq = mem.next_seq;
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
            seq,
            borrow_until,
        ) = row?;
        let Some(li) = mem.license_at(&license_id) else {
            continue;
        };
        let Some(sid) = parse_sid(&id) else {
            // Never written by this server (its ids are UUIDs): not held in memory.
            tracing::warn!(session = %id, "live session with a malformed id left out");
            continue;
        };
        // The license's end caps it when it is read (`Mem::clock`), whatever the row says.
        let clock = session_clock(opened, expires, hard_end, None, borrow_until);
        let seq = u64::try_from(seq).unwrap_or(0);
        next_seq = next_seq.max(seq + 1);
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
            seq,
        ));
    }
    load_revoked_leases(conn, &mut mem)?;
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
    // New sessions come after every one on disk, and above every floor (never under one).
    for lic in &mem.licenses {
        let floors = lic.floors.iter().chain(lic.user_floors.values().flatten());
        for f in floors {
            next_seq = next_seq.max(f.below);
        }
    }
    mem.next_seq = next_seq;
    for lic in &mut mem.licenses {
        lic.high_water = lic.live;
        lic.low_water = lic.live;
    }
    Ok(mem)
}

/// Borrowed sessions on disk that ended before their `borrow_until`, which has not passed yet
/// (by the last time memory saw: the listing filters by its own `now`): the revoked leases
/// memory lists (`Mem::revoked_leases`). Those still live under a floor are ending, and listed
/// from the slab.
fn load_revoked_leases(conn: &Connection, mem: &mut Mem) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(
        "SELECT id, license_id, username, device_id, end_reason, ended_at, borrow_until
         FROM sessions
         WHERE borrow_until IS NOT NULL AND ended_at IS NOT NULL AND ended_at < borrow_until
           AND borrow_until > ?1",
    )?;
    let rows = stmt.query_map([mem.last_now().millis()], |r| {
        Ok((
            r.get::<_, String>(1)?,
            RevokedLease {
                session_id: r.get(0)?,
                username: r.get(2)?,
                device_id: r.get(3)?,
                reason: r
                    .get::<_, Option<String>>(4)?
                    .as_deref()
                    .map_or(leasehold_proto::EndReason::Unknown, parse_end_reason),
                ended_at: Timestamp::from_millis(r.get(5)?),
                borrow_until: Timestamp::from_millis(r.get(6)?),
            },
        ))
    })?;
    for row in rows {
        let (license_id, lease) = row?;
        if let Some(lic) = mem.lic_mut(&license_id) {
            lic.revoked.push(lease);
        }
    }
    Ok(())
}

/// The floor of a row (`end_below` above 0), with its reason and time.
fn floor(below: i64, reason: Option<String>, at: Option<i64>) -> Option<Floor> {
    let below = u64::try_from(below).ok().filter(|&b| b > 0)?;
    Some(Floor {
        below,
        reason: reason
            .as_deref()
            .map_or(leasehold_proto::EndReason::Unknown, parse_end_reason),
        at: Timestamp::from_millis(at.unwrap_or(0)),
        decided: 0,
    })
}
