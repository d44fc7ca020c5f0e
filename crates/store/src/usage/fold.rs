//! Folding the audit log's session events, in `seq` order, into bucket rows (`Acc`) per subject
//! and grain. Pure: a backend loads the states of the subjects a chunk of events touches
//! (`Folder::missing`, `Folder::insert`), folds the chunk, and writes what `Folder::take_writes`
//! answers, with the new watermark, in one transaction.
//!
//! The seats in use follow the events: `opened` +1, `ended` −1 (never below zero: the opening
//! of a session may have been pruned before the fold first ran), each counted at the time
//! `in_time_order` gives it: the log's order (`seq`) is the order of the decisions, but their
//! times were read before them, and the ends a server decides in memory and writes in the
//! background (expiries found by SQLite's reaper, the ends of a mass end: a revoke of every
//! session, the license's end, a deactivation) land after events that came later, stamped
//! with the time of their decision. An open counts no earlier than the log's order allows, an
//! end at its own time when earlier (never before its own open): the seats in use are never
//! counted above what the log's order gives. The fold folds for good only a *settled* prefix
//! (`settled`: allowing `SETTLE_MS` for a decided end to be written); what is not settled yet
//! is folded at query time in memory (`Folder::fork`), so that answers are exact up to now.
//! Times are still clamped so that they never go back within a subject.
//!
//! ```text
//!   event at t ─► advance every grain's open bucket to t (a bucket left behind is closed,
//!                 its integral run to its end) ─► apply: in use ±1, opens, denials, queued,
//!                 seats; high/low/overdraft/full follow
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{account_subject, license_subject, parse_seats_detail, Grain};

/// One event of the audit log, as the fold reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageEvent {
    pub seq: i64,
    pub at: i64,
    pub account_id: String,
    pub license_id: String,
    pub session_id: Option<String>,
    pub username: Option<String>,
    pub event: String,
    pub detail: Option<String>,
}

/// How long after the time it was decided an end may land in the log (the drain of a mass
/// end of a million sessions takes about a second; a node's clock is followed within
/// milliseconds of the database's).
pub const SETTLE_MS: i64 = 10_000;

/// The times the fold counts `events` (read in `seq` order) at. The log's order is the order
/// of the decisions, but the times were read before them (a request reads the time, then
/// waits for its turn; nodes' clocks differ by milliseconds), and ends decided in memory and
/// written in the background land late. So an open (or any event but an end) counts at the
/// latest time of the log up to it (never before an event that precedes it), and an end at
/// its own time if that is earlier (a late end goes back to its decision) but never before
/// its own session's open. Ends only ever move earlier, before opens: the seats in use are
/// never counted above what the log's order gives.
///
/// Answers each event's time and its rank among the events of that time: ends first (0), then
/// the others (1), then an end at the very time of its own session's open (2: after it).
fn effective_times(events: &[UsageEvent]) -> Vec<(i64, u8)> {
    let mut run = i64::MIN;
    let mut opened: HashMap<&str, i64> = HashMap::new();
    events
        .iter()
        .map(|e| {
            run = run.max(e.at);
            let session = e.session_id.as_deref().unwrap_or("");
            match e.event.as_str() {
                "ended" => match opened.get(session) {
                    Some(&open) if open >= e.at => (open, 2),
                    _ => (e.at, 0),
                },
                "opened" => {
                    opened.insert(session, run);
                    (run, 1)
                }
                _ => (run, 1),
            }
        })
        .collect()
}

/// How many of `events` (read in `seq` order, the log's latest time being `latest_at`) can be
/// folded for good: the longest prefix whose counted times (`effective_times`) are all at or
/// before every later event's, and at least `SETTLE_MS` before `latest_at` (an end still to
/// land is stamped no earlier than that).
pub fn settled(events: &[UsageEvent], latest_at: i64) -> usize {
    let cutoff = latest_at.saturating_sub(SETTLE_MS);
    let times: Vec<i64> = effective_times(events)
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    let mut suffix_min = vec![i64::MAX; times.len() + 1];
    let mut min = i64::MAX;
    for (slot, t) in suffix_min.iter_mut().rev().skip(1).zip(times.iter().rev()) {
        min = min.min(*t);
        *slot = min;
    }
    let mut prefix_max = i64::MIN;
    let mut k = 0;
    for (i, (t, after)) in times.iter().zip(suffix_min.iter().skip(1)).enumerate() {
        prefix_max = prefix_max.max(*t);
        if prefix_max > cutoff {
            break;
        }
        if prefix_max <= *after {
            k = i + 1;
        }
    }
    k
}

/// `events` (read in `seq` order) in the order the fold counts them, each stamped with the
/// time it counts at (`effective_times`); at one time, ends first (but after their own open).
pub fn in_time_order(events: &[UsageEvent]) -> Vec<UsageEvent> {
    let mut v: Vec<(u8, UsageEvent)> = events
        .iter()
        .zip(effective_times(events))
        .map(|(e, (at, rank))| (rank, UsageEvent { at, ..e.clone() }))
        .collect();
    v.sort_by_key(|(rank, e)| (e.at, *rank, e.seq));
    v.into_iter().map(|(_, e)| e).collect()
}

/// The event kinds the fold reads (the others leave the series unchanged).
pub const FOLDED_KINDS: &[&str] = &[
    "opened",
    "ended",
    "denied",
    "queued",
    "license_created",
    "license_updated",
];

/// One bucket of one subject at one grain: the figures over `[start, through)`, and the state
/// at `through` (`in_use_end`, `seats_end`), which holds until the next event.
///
/// High and low water, the overdraft's high water and the full periods count the states that
/// held for some time, and the state now (`mark_now`): several events at one instant (a seat
/// freed and taken again at once, as a queue grant does, or an end that landed in the log after
/// an open of the same instant) pass through states that held for none, and those are not
/// counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acc {
    pub start: i64,
    /// The integrals (`in_use_ms`, `hist`, `full_ms`) cover `[start, through)`.
    pub through: i64,
    /// Most seats in use in a state that held for some time (−1: none yet).
    pub high: i64,
    /// Fewest (`i64::MAX`: none yet).
    pub low: i64,
    pub in_use_end: i64,
    pub seats_end: i64,
    pub seats_max: i64,
    /// Seats in use × milliseconds.
    pub in_use_ms: i64,
    pub opens: i64,
    /// Opens refused because the license was full (`denied` with `no_seat_available`).
    pub denials: i64,
    /// Waits begun.
    pub queued: i64,
    /// Most sessions in use beyond the seats at once.
    pub overdraft_high: i64,
    /// Milliseconds with every seat in use (`in_use >= seats`).
    pub full_ms: i64,
    /// Times the subject became full within the bucket.
    pub full_entries: i64,
    /// Whether the full period under way (if any) is counted already (in this bucket or, for
    /// one carried in, before it). Stored in the `full_end` column.
    pub in_full_period: bool,
    /// Milliseconds at each number of seats in use.
    pub hist: BTreeMap<i64, i64>,
    /// Users who opened a session in the bucket (loaded only to resume a fold).
    pub users: BTreeSet<String>,
    /// How many: `users.len()` as folded, the stored count as read for a query.
    pub user_count: i64,
    /// Users of `users` not written yet.
    pub new_users: Vec<String>,
    /// Whether some of `users` were written (while the bucket was open). The names are kept
    /// for good for days (a month's distinct users are a union of days); a closed minute or
    /// hour keeps only its count, and its names are deleted.
    pub users_written: bool,
}

impl Acc {
    /// A bucket starting at `start` with the state carried into it.
    pub fn new(start: i64, in_use: i64, seats: i64) -> Acc {
        Acc {
            start,
            through: start,
            high: -1,
            low: i64::MAX,
            in_use_end: in_use,
            seats_end: seats,
            seats_max: seats,
            in_use_ms: 0,
            opens: 0,
            denials: 0,
            queued: 0,
            overdraft_high: 0,
            full_ms: 0,
            full_entries: 0,
            in_full_period: in_use >= seats,
            hist: BTreeMap::new(),
            users: BTreeSet::new(),
            user_count: 0,
            new_users: Vec::new(),
            users_written: false,
        }
    }

    /// The high and low water marks, once a state has counted (none for a bucket before its
    /// subject existed, or one no state has held in yet).
    pub fn water(&self) -> Option<(i64, i64)> {
        (self.high >= 0).then_some((self.high, self.low))
    }

    /// Whether every seat is in use in the current state.
    pub fn is_full(&self) -> bool {
        self.in_use_end >= self.seats_end
    }

    /// Runs the current state up to `t`: the integrals, and the marks of a state that held.
    pub fn run_to(&mut self, t: i64) {
        let dt = t - self.through;
        if dt <= 0 {
            return;
        }
        let u = self.in_use_end;
        self.in_use_ms += u * dt;
        *self.hist.entry(u).or_insert(0) += dt;
        self.high = self.high.max(u);
        self.low = self.low.min(u);
        self.overdraft_high = self.overdraft_high.max(u - self.seats_end);
        if self.is_full() {
            self.full_ms += dt;
            if !self.in_full_period {
                self.full_entries += 1;
                self.in_full_period = true;
            }
        } else {
            self.in_full_period = false;
        }
        self.through = t;
    }

    /// The marks of the bucket holding now: the state now counts, however briefly it has held
    /// so far (it is no passing state of one instant: it holds on).
    pub fn mark_now(&mut self) {
        self.high = self.high.max(self.in_use_end);
        self.low = self.low.min(self.in_use_end);
        self.overdraft_high = self.overdraft_high.max(self.in_use_end - self.seats_end);
    }

    /// The state changes (at `through`).
    fn set(&mut self, in_use: i64, seats: i64) {
        self.in_use_end = in_use;
        self.seats_end = seats;
        self.seats_max = self.seats_max.max(seats);
    }

    fn add_user(&mut self, user: &str) {
        if self.users.insert(user.to_owned()) {
            self.user_count += 1;
            self.new_users.push(user.to_owned());
        }
    }
}

/// The fold's state of one subject: its figures now, and the open bucket of each grain (the one
/// holding `t`, when it has a row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectState {
    pub subject: String,
    pub in_use: i64,
    pub seats: i64,
    /// Time of the last event folded.
    pub t: i64,
    /// Open buckets: minute, hour, day.
    pub open: [Option<Acc>; 3],
}

impl SubjectState {
    pub fn fresh(subject: String, seats: i64, t: i64) -> SubjectState {
        SubjectState {
            subject,
            in_use: 0,
            seats,
            t,
            open: [None, None, None],
        }
    }

    /// Moves time to `t` (never back): buckets left behind are closed into `closed`.
    fn advance(&mut self, t: i64, closed: &mut Vec<(String, Grain, Acc)>) -> i64 {
        let t = t.max(self.t);
        for (g, slot) in Grain::ALL.into_iter().zip(self.open.iter_mut()) {
            let start = g.start_of(t);
            match slot {
                Some(acc) if acc.start == start => acc.run_to(t),
                _ => {
                    if let Some(mut old) = slot.take() {
                        old.run_to(old.start + g.len_ms());
                        closed.push((self.subject.clone(), g, old));
                    }
                    let mut acc = Acc::new(start, self.in_use, self.seats);
                    if self.t > start {
                        // A subject born within this bucket (its first event): nothing held
                        // before its birth, so the time before counts neither as 0 seats in
                        // use nor as full (0 of 0 seats), and a license born full (0 seats)
                        // enters a full period.
                        acc.through = self.t;
                        acc.in_full_period = false;
                    }
                    acc.run_to(t);
                    *slot = Some(acc);
                }
            }
        }
        self.t = t;
        t
    }

    fn each(&mut self, f: impl Fn(&mut Acc)) {
        for acc in self.open.iter_mut().flatten() {
            f(acc);
        }
    }

    fn set(&mut self, in_use: i64, seats: i64) {
        self.in_use = in_use.max(0);
        self.seats = seats.max(0);
        let (u, s) = (self.in_use, self.seats);
        self.each(|a| a.set(u, s));
    }
}

/// What a chunk's fold changed, to be written with the watermark in one transaction.
#[derive(Debug, Default)]
pub struct Writes {
    /// The new watermark: the greatest `seq` folded.
    pub watermark: i64,
    /// States of the subjects touched (their open buckets are written as rows too).
    pub states: Vec<SubjectState>,
    /// Buckets closed by this chunk: (subject, grain, row).
    pub closed: Vec<(String, Grain, Acc)>,
    /// Queue waits ended by a grant: (subject, granted at, wait in ms).
    pub waits: Vec<(String, i64, i64)>,
    /// Waits begun: (session id, license id, account id, at).
    pub pending_added: Vec<(String, String, String, i64)>,
    /// Waits ended (their session ids).
    pub pending_removed: Vec<String>,
}

/// The fold over chunks of events; it keeps the states of the subjects it touched (valid while
/// this process is the only one folding: a backend rebuilds it when the stored watermark is not
/// the one it left).
#[derive(Debug, Default)]
pub struct Folder {
    pub watermark: i64,
    states: HashMap<String, SubjectState>,
    /// Waits begun and not yet granted: session id → time.
    pending: HashMap<String, i64>,
    touched: BTreeSet<String>,
    writes: Writes,
    /// What the last chunk read and could not fold yet (dropped with the folder).
    pub ahead: super::ReadAhead,
}

impl Folder {
    /// A fold resuming after `watermark`, with the waits that were pending then.
    pub fn resume(watermark: i64, pending: HashMap<String, i64>) -> Folder {
        Folder {
            watermark,
            pending,
            ..Folder::default()
        }
    }

    /// The subjects `events` touch whose state is not loaded, with their license id (for a
    /// license subject) — to be read from the store and given to `insert`.
    pub fn missing(&self, events: &[UsageEvent]) -> Vec<String> {
        subjects(events)
            .into_iter()
            .filter(|s| !self.states.contains_key(s))
            .collect()
    }

    /// A subject's state as the store kept it.
    pub fn insert(&mut self, state: SubjectState) {
        self.states.insert(state.subject.clone(), state);
    }

    /// Folds one event. `current_seats` answers a license's seats now, for a license first seen
    /// without a `license_created` carrying its seats (history pruned, or written before the
    /// seats were recorded in the event).
    pub fn fold(&mut self, e: &UsageEvent, current_seats: &impl Fn(&str) -> Option<i64>) {
        self.watermark = self.watermark.max(e.seq);
        self.writes.watermark = self.watermark;
        if !folded(e) {
            return;
        }
        let ls = license_subject(&e.license_id);
        let accs = account_subject(&e.account_id);
        if !self.states.contains_key(&ls) {
            let seats = match (e.event.as_str(), parse_seats_detail(e.detail.as_deref())) {
                ("license_created", Some(_)) => 0,
                _ => current_seats(&e.license_id).unwrap_or(0),
            };
            self.state(&accs, e.at).seats += seats;
            self.states
                .insert(ls.clone(), SubjectState::fresh(ls.clone(), seats, e.at));
        }
        self.state(&accs, e.at);
        let mut grant_wait = None;
        let mut seats_delta = 0;
        for subject in [&ls, &accs] {
            let Some(st) = self.states.get_mut(subject.as_str()) else {
                continue;
            };
            let t = st.advance(e.at, &mut self.writes.closed);
            let (in_use, seats) = (st.in_use, st.seats);
            match e.event.as_str() {
                "opened" => {
                    st.set(in_use + 1, seats);
                    let user = e.username.clone().unwrap_or_default();
                    st.each(|a| {
                        a.opens += 1;
                        a.add_user(&user);
                    });
                    if subject == &ls && has_word(e.detail.as_deref(), "queued") {
                        let id = e.session_id.clone().unwrap_or_default();
                        if let Some(since) = self.pending.remove(&id) {
                            grant_wait = Some((t, (t - since).max(0)));
                            self.writes.pending_removed.push(id);
                        }
                    }
                }
                "ended" => st.set(in_use - 1, seats),
                "denied" => {
                    if e.detail.as_deref() == Some("no_seat_available") {
                        st.each(|a| a.denials += 1);
                    }
                }
                "queued" => {
                    st.each(|a| a.queued += 1);
                    if subject == &ls {
                        let id = e.session_id.clone().unwrap_or_default();
                        self.pending.insert(id.clone(), t);
                        self.writes.pending_added.push((
                            id,
                            e.license_id.clone(),
                            e.account_id.clone(),
                            t,
                        ));
                    }
                }
                _ if subject == &ls => {
                    // license_created, license_updated: the capacity.
                    let new = parse_seats_detail(e.detail.as_deref())
                        .or_else(|| current_seats(&e.license_id))
                        .unwrap_or(seats);
                    seats_delta = new - seats;
                    st.set(in_use, new);
                }
                _ => st.set(in_use, seats + seats_delta),
            }
            if let Some((at, wait)) = grant_wait {
                self.writes.waits.push((subject.clone(), at, wait));
            }
            self.touched.insert(subject.clone());
        }
    }

    fn state(&mut self, subject: &str, t: i64) -> &mut SubjectState {
        self.states
            .entry(subject.to_owned())
            .or_insert_with(|| SubjectState::fresh(subject.to_owned(), 0, t))
    }

    /// What the events folded since the last call changed; `new_users` of the open buckets are
    /// handed over (written once).
    pub fn take_writes(&mut self) -> Writes {
        let mut writes = std::mem::take(&mut self.writes);
        writes.watermark = self.watermark;
        self.writes.watermark = self.watermark;
        for s in std::mem::take(&mut self.touched) {
            if let Some(st) = self.states.get_mut(&s) {
                writes.states.push(st.clone());
                for acc in st.open.iter_mut().flatten() {
                    if !acc.new_users.is_empty() {
                        acc.users_written = true;
                        acc.new_users.clear();
                    }
                }
            }
        }
        writes
    }

    /// A fold of the events not settled yet, for one query: starts from this fold's states of
    /// `subjects` (the others are loaded as usual) and its pending waits; never written.
    pub fn fork(&self, subjects: &[String]) -> Folder {
        let mut f = Folder::resume(self.watermark, self.pending.clone());
        for s in subjects {
            if let Some(st) = self.states.get(s) {
                f.insert(st.clone());
            }
        }
        f
    }

    /// Forgets the waits begun before `before` and never granted (their clients gave up).
    pub fn forget_pending_before(&mut self, before: i64) {
        self.pending.retain(|_, at| *at >= before);
    }

    /// The latest event time folded, over the loaded subjects.
    pub fn latest(&self) -> i64 {
        self.states.values().map(|s| s.t).max().unwrap_or(0)
    }

    /// The state of a loaded subject.
    pub fn get(&self, subject: &str) -> Option<&SubjectState> {
        self.states.get(subject)
    }
}

/// The subjects `events` touch.
pub fn subjects(events: &[UsageEvent]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for e in events.iter().filter(|e| folded(e)) {
        out.insert(license_subject(&e.license_id));
        out.insert(account_subject(&e.account_id));
    }
    out.into_iter().collect()
}

fn folded(e: &UsageEvent) -> bool {
    !e.license_id.is_empty() && FOLDED_KINDS.contains(&e.event.as_str())
}

fn has_word(detail: Option<&str>, word: &str) -> bool {
    detail.is_some_and(|d| d.split(' ').any(|w| w == word))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::{seats_detail, MINUTE_MS};

    const T: i64 = 1_700_000_040_000; // a minute's start (…:14:00 UTC)

    struct Log {
        seq: i64,
        events: Vec<UsageEvent>,
    }

    impl Log {
        fn new() -> Log {
            Log {
                seq: 0,
                events: Vec::new(),
            }
        }
        fn push(&mut self, at: i64, event: &str, session: &str, user: &str, detail: &str) {
            self.seq += 1;
            self.events.push(UsageEvent {
                seq: self.seq,
                at,
                account_id: "acme".into(),
                license_id: "lic".into(),
                session_id: (!session.is_empty()).then(|| session.to_owned()),
                username: (!user.is_empty()).then(|| user.to_owned()),
                event: event.into(),
                detail: (!detail.is_empty()).then(|| detail.to_owned()),
            });
        }
    }

    fn fold_all(log: &Log) -> (Folder, Writes) {
        let mut f = Folder::default();
        for e in &log.events {
            f.fold(e, &|_| None);
        }
        let w = f.take_writes();
        (f, w)
    }

    fn minute_rows(f: &Folder, w: &Writes, subject: &str) -> Vec<Acc> {
        let mut rows: Vec<Acc> = w
            .closed
            .iter()
            .filter(|(s, g, _)| s == subject && *g == Grain::Minute)
            .map(|(_, _, a)| a.clone())
            .collect();
        if let Some(Some(open)) = f.get(subject).map(|s| s.open[0].clone()) {
            rows.push(open);
        }
        rows
    }

    #[test]
    fn a_session_of_two_seconds_counts_in_its_minutes_high_water_and_the_average() {
        // Arrange: 2 seats; bob holds a seat from 0 s to 30 s; amy for 2 s at 40 s.
        let mut log = Log::new();
        log.push(T, "license_created", "", "", &seats_detail(2));
        log.push(T, "opened", "s1", "bob", "interactive");
        log.push(T + 30_000, "ended", "s1", "bob", "logout");
        log.push(T + 40_000, "opened", "s2", "amy", "interactive");
        log.push(T + 42_000, "ended", "s2", "amy", "logout");
        log.push(
            T + MINUTE_MS + 5_000,
            "denied",
            "",
            "eve",
            "no_seat_available",
        );

        // Act
        let (f, w) = fold_all(&log);
        let rows = minute_rows(&f, &w, "license:lic");

        // Assert: minute 0 closed with high 1, low 0, 32 seat-seconds; minute 1 open.
        assert_eq!(rows.len(), 2);
        let m0 = &rows[0];
        assert_eq!((m0.start, m0.through), (T, T + MINUTE_MS));
        assert_eq!((m0.high, m0.low, m0.in_use_end), (1, 0, 0));
        assert_eq!(m0.in_use_ms, 32_000);
        assert_eq!(m0.hist, BTreeMap::from([(0, 28_000), (1, 32_000)]));
        assert_eq!((m0.opens, m0.denials, m0.full_ms), (2, 0, 0));
        assert_eq!(m0.users.len(), 2);
        let m1 = &rows[1];
        assert_eq!(
            (m1.high, m1.low, m1.denials, m1.through),
            (0, 0, 1, T + MINUTE_MS + 5_000)
        );
        assert_eq!(w.watermark, 6);
    }

    #[test]
    fn full_periods_overdraft_and_a_capacity_change_are_followed() {
        // Arrange: 1 seat; two sessions (the second an overdraft) for 10 s, then seats go to 3.
        let mut log = Log::new();
        log.push(T, "license_created", "", "", &seats_detail(1));
        log.push(T + 1_000, "opened", "a", "bob", "interactive");
        log.push(T + 2_000, "opened", "b", "amy", "interactive overdraft");
        log.push(T + 12_000, "ended", "b", "amy", "logout");
        log.push(T + 20_000, "license_updated", "", "", &seats_detail(3));

        // Act
        let (f, w) = fold_all(&log);
        let m0 = minute_rows(&f, &w, "license:lic").remove(0);

        // Assert: full from 1 s to 20 s (one entry), overdraft high 1, seats 1 → 3.
        assert_eq!(m0.full_entries, 1);
        assert_eq!(m0.full_ms, 19_000);
        assert!(!m0.is_full());
        assert_eq!(m0.overdraft_high, 1);
        assert_eq!((m0.seats_end, m0.seats_max, m0.high), (3, 3, 2));
        // The account follows its license.
        let acc = minute_rows(&f, &w, "account:acme").remove(0);
        assert_eq!((acc.seats_end, acc.high, acc.full_ms), (3, 2, 19_000));
    }

    #[test]
    fn the_time_before_a_license_exists_is_neither_in_use_nor_full() {
        // Arrange: 2 seats, created 34 min into its hour (20 s into its minute); bob holds a
        // seat for 10 s. Then a license of 0 seats, full from its birth.
        let born = T + 34 * MINUTE_MS + 20_000;
        let mut log = Log::new();
        log.push(born, "license_created", "", "", &seats_detail(2));
        log.push(born + 5_000, "opened", "a", "bob", "interactive");
        log.push(born + 15_000, "ended", "a", "bob", "logout");
        let mut empty = Log::new();
        empty.push(born, "license_created", "", "", &seats_detail(0));
        empty.push(born + 10_000, "denied", "", "eve", "no_seat_available");

        // Act
        let (f, w) = fold_all(&log);
        let (g, v) = fold_all(&empty);

        // Assert: every grain's bucket counts from the birth: never full, 5 s at 0 then 10 s
        // at 1 (the 20 s of the minute before the birth are not "0 in use").
        for grain in [0, 1, 2] {
            let open = f.get("license:lic").and_then(|s| s.open[grain].clone());
            let acc = open.expect("an open bucket");
            assert_eq!((acc.full_ms, acc.full_entries), (0, 0), "grain {grain}");
            assert_eq!(acc.hist, BTreeMap::from([(0, 5_000), (1, 10_000)]));
            assert_eq!((acc.high, acc.low, acc.in_use_ms), (1, 0, 10_000));
        }
        assert!(w.closed.is_empty());
        // A license of 0 seats became full once, at its birth, for the 10 s that followed.
        let m0 = minute_rows(&g, &v, "license:lic").remove(0);
        assert_eq!((m0.full_entries, m0.full_ms, m0.denials), (1, 10_000, 1));
    }

    #[test]
    fn a_queue_wait_is_measured_from_queued_to_the_grant() {
        // Arrange
        let mut log = Log::new();
        log.push(T, "license_created", "", "", &seats_detail(1));
        log.push(T, "opened", "a", "bob", "interactive");
        log.push(T + 1_000, "queued", "b", "amy", "");
        log.push(T + 4_500, "ended", "a", "bob", "logout");
        log.push(T + 4_500, "opened", "b", "amy", "interactive queued");

        // Act
        let (f, w) = fold_all(&log);

        // Assert: one wait of 3.5 s on the license and on the account; nothing left pending.
        assert_eq!(
            w.waits,
            [
                ("license:lic".to_owned(), T + 4_500, 3_500),
                ("account:acme".to_owned(), T + 4_500, 3_500)
            ]
        );
        assert_eq!(w.pending_removed, ["b"]);
        let m0 = minute_rows(&f, &w, "license:lic").remove(0);
        // (The instant at 4.5 s with bob's seat free and amy's not taken yet held no time.)
        assert_eq!((m0.queued, m0.opens, m0.high, m0.low), (1, 2, 1, 1));
    }

    #[test]
    fn time_never_goes_back_and_quiet_minutes_are_not_rows() {
        // Arrange: an event stamped before its predecessor, then an hour of quiet.
        let mut log = Log::new();
        log.push(T, "license_created", "", "", &seats_detail(5));
        log.push(T + 10_000, "opened", "a", "bob", "interactive");
        log.push(T + 9_000, "opened", "b", "amy", "interactive");
        log.push(T + 3_600_000 + 1_000, "ended", "a", "bob", "logout");

        // Act
        let (f, w) = fold_all(&log);
        let rows = minute_rows(&f, &w, "license:lic");

        // Assert: the late event counts at 10 s; the first minute closes; the next row is an
        // hour later, its state carried (2 in use until the end at 1 s).
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].in_use_ms, 2 * 50_000);
        assert_eq!(rows[1].in_use_ms, 2_000);
        let mut last = rows[1].clone();
        last.run_to(last.start + MINUTE_MS);
        assert_eq!((last.start, last.high, last.low), (T + 3_600_000, 2, 1));
    }

    #[test]
    fn only_a_prefix_no_later_event_can_precede_is_settled() {
        let mut log = Log::new();
        for (at, event, session) in [
            (0, "opened", "a"),
            (5_000, "opened", "b"),
            (3_000, "ended", "a"),
            (30_000, "opened", "c"),
        ] {
            log.push(T + at, event, session, "bob", "interactive");
        }
        // The log's latest time is 30 s: up to 20 s is settled; the end stamped 3 s (landed
        // after the open of 5 s) must be folded with it.
        assert_eq!(settled(&log.events, T + 30_000), 3);
        assert_eq!(settled(&log.events, T + 12_000), 1);
        assert_eq!(settled(&log.events[1..], T + 14_000), 0);
        let order: Vec<i64> = in_time_order(&log.events[..3])
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(order, [1, 3, 2]);
    }

    #[test]
    fn an_open_never_counts_before_what_precedes_it_and_an_end_never_before_its_open() {
        // Arrange: a logout stamped 10.005 s, then (in the log) an open stamped 10.002 s by a
        // node whose clock is behind; then the end of that open stamped before it.
        let mut log = Log::new();
        log.push(T + 10_005, "ended", "a", "bob", "logout");
        log.push(T + 10_002, "opened", "b", "amy", "interactive");
        log.push(T + 10_001, "ended", "b", "amy", "logout");

        // Act
        let got: Vec<(i64, i64)> = in_time_order(&log.events)
            .iter()
            .map(|e| (e.seq, e.at - T))
            .collect();

        // Assert: the open counts at 10.005 s, after the logout; its end not before it.
        assert_eq!(got, [(1, 10_005), (2, 10_005), (3, 10_005)]);
    }

    #[test]
    fn an_end_below_zero_is_ignored() {
        let mut log = Log::new();
        log.push(T, "ended", "old", "bob", "inactivity");
        let mut f = Folder::default();
        f.fold(&log.events[0], &|_| Some(4));
        let w = f.take_writes();
        let st = &w.states[0];
        assert_eq!((st.in_use, st.seats), (0, 4));
    }
}
