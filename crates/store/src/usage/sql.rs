//! The SQL both backends run for the usage rows (`$n` parameters: SQLite numbers them in order
//! of appearance, as written here), and the query a series is read for.

use super::{Acc, Bucket};

/// What `Store::usage_series` reads: one subject's rows over `[from, to)` (bucket starts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesQuery {
    /// `license:<id>` or `account:<id>` (`super::license_subject`, `super::account_subject`).
    pub subject: String,
    pub bucket: Bucket,
    pub from: i64,
    pub to: i64,
    pub now: i64,
    /// The subject's seats now (for a subject with no row yet).
    pub seats_now: i64,
}

/// The number columns of a row after `subject, grain`, in `Acc` order (then `hist`).
pub const ROW_COLS: &str = "start, through, high, low, in_use_end, seats_end, seats_max, \
     in_use_ms, opens, denials, queued, overdraft_high, full_ms, full_entries, full_end, users";

/// The values of `ROW_COLS` for `acc`.
pub fn row_values(acc: &Acc) -> [i64; 16] {
    [
        acc.start,
        acc.through,
        acc.high,
        acc.low,
        acc.in_use_end,
        acc.seats_end,
        acc.seats_max,
        acc.in_use_ms,
        acc.opens,
        acc.denials,
        acc.queued,
        acc.overdraft_high,
        acc.full_ms,
        acc.full_entries,
        i64::from(acc.in_full_period),
        acc.user_count,
    ]
}

/// An `Acc` from the values of `ROW_COLS` (no histogram, no user names).
pub fn row_from(v: [i64; 16]) -> Acc {
    let [start, through, high, low, in_use_end, seats_end, seats_max, in_use_ms, opens, denials, queued, overdraft_high, full_ms, full_entries, full_end, users] =
        v;
    Acc {
        through,
        high,
        low,
        in_use_ms,
        opens,
        denials,
        queued,
        overdraft_high,
        full_ms,
        full_entries,
        in_full_period: full_end != 0,
        user_count: users,
        seats_max,
        ..Acc::new(start, in_use_end, seats_end)
    }
}

/// The time of the log's latest event at or below `$1`.
pub const LATEST_AT: &str = "SELECT at FROM audit_events WHERE seq <= $1 ORDER BY seq DESC LIMIT 1";
pub const EVENTS: &str =
    "SELECT seq, at, account_id, license_id, session_id, username, event, detail
     FROM audit_events WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3";
pub const WATERMARK: &str = "SELECT seq FROM usage_watermark WHERE id = 1";
pub const SET_WATERMARK: &str = "UPDATE usage_watermark SET seq = $1 WHERE id = 1";
pub const PENDING: &str = "SELECT session_id, at FROM usage_pending";
pub const ADD_PENDING: &str = "INSERT INTO usage_pending (session_id, license_id, account_id, at)
     VALUES ($1, $2, $3, $4) ON CONFLICT (session_id) DO UPDATE SET at = excluded.at";
pub const DEL_PENDING: &str = "DELETE FROM usage_pending WHERE session_id = $1";
pub const FORGET_PENDING: &str = "DELETE FROM usage_pending WHERE at < $1";
pub const STATE: &str = "SELECT in_use, seats, t FROM usage_state WHERE subject = $1";
pub const PUT_STATE: &str = "INSERT INTO usage_state (subject, in_use, seats, t) VALUES ($1, $2, $3, $4)
     ON CONFLICT (subject) DO UPDATE SET in_use = excluded.in_use, seats = excluded.seats, t = excluded.t";
pub const LICENSE_TERMS: &str = "SELECT terms FROM licenses WHERE id = $1";
pub const PUT_WAIT: &str = "INSERT INTO usage_waits (subject, at, wait_ms) VALUES ($1, $2, $3)";
pub const PUT_USER: &str =
    "INSERT INTO usage_users (subject, grain, start, username) VALUES ($1, $2, $3, $4)
     ON CONFLICT DO NOTHING";
pub const DEL_USERS: &str =
    "DELETE FROM usage_users WHERE subject = $1 AND grain = $2 AND start = $3";
pub const ROW_USERS: &str =
    "SELECT username FROM usage_users WHERE subject = $1 AND grain = $2 AND start = $3";
pub const SEED: &str = "SELECT start, in_use_end, seats_end FROM usage_rows
     WHERE subject = $1 AND grain = 0 AND start < $2 ORDER BY start DESC LIMIT 1";
pub const WAITS: &str = "SELECT at, wait_ms FROM usage_waits
     WHERE subject = $1 AND at >= $2 AND at < $3 ORDER BY at";
pub const DAY_USERS: &str = "SELECT start, username FROM usage_users
     WHERE subject = $1 AND grain = 2 AND start >= $2 AND start < $3";

/// The upsert of a row (`subject, grain`, then `ROW_COLS`, then `hist`).
pub fn put_row() -> String {
    let cols: Vec<&str> = ROW_COLS.split(", ").collect();
    let params: Vec<String> = (1..=19).map(|n| format!("${n}")).collect();
    let updates: Vec<String> = cols
        .iter()
        .skip(1)
        .chain(std::iter::once(&"hist"))
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO usage_rows (subject, grain, {ROW_COLS}, hist) VALUES ({})
         ON CONFLICT (subject, grain, start) DO UPDATE SET {}",
        params.join(", "),
        updates.join(", ")
    )
}

/// One row by its key.
pub fn row_at() -> String {
    format!(
        "SELECT {ROW_COLS}, hist FROM usage_rows WHERE subject = $1 AND grain = $2 AND start = $3"
    )
}

/// A subject's rows of one grain starting in `[$3, $4)`.
pub fn range_rows() -> String {
    format!(
        "SELECT {ROW_COLS}, hist FROM usage_rows
         WHERE subject = $1 AND grain = $2 AND start >= $3 AND start < $4 ORDER BY start"
    )
}

/// A row's histogram as stored: `in_use:ms` pairs, comma-separated, by number in use (one
/// column rather than a row per number: a year of hours is 8,760 rows to read, not 300,000).
pub fn encode_hist(hist: &std::collections::BTreeMap<i64, i64>) -> String {
    let mut out = String::with_capacity(hist.len() * 12);
    for (i, (level, ms)) in hist.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&level.to_string());
        out.push(':');
        out.push_str(&ms.to_string());
    }
    out
}

/// The histogram `encode_hist` wrote (pairs that do not parse are skipped).
pub fn decode_hist(text: &str) -> std::collections::BTreeMap<i64, i64> {
    text.split(',')
        .filter_map(|pair| {
            let (level, ms) = pair.split_once(':')?;
            Some((level.parse().ok()?, ms.parse().ok()?))
        })
        .collect()
}

/// What to do with the user names of a row being written: `Put` its new names (a day, or a
/// bucket still open), `Drop` the names written while it was open (a closed minute or hour
/// keeps its count only), or nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserNames {
    Put,
    Drop,
    Keep,
}

/// See `UserNames`.
pub fn user_names(grain: super::Grain, acc: &Acc, open: bool) -> UserNames {
    if open || grain == super::Grain::Day {
        UserNames::Put
    } else if acc.users_written {
        UserNames::Drop
    } else {
        UserNames::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_reads_back_as_written() {
        let hist = std::collections::BTreeMap::from([(0, 5), (3, 60_000), (12, 1)]);
        assert_eq!(encode_hist(&hist), "0:5,3:60000,12:1");
        assert_eq!(decode_hist(&encode_hist(&hist)), hist);
        assert!(decode_hist("").is_empty());
    }
}
