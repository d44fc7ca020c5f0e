//! What a query reads, and the events not settled yet folded over it: the stored rows of the
//! subject (`SeriesRows`, read by a backend) overlaid with the buckets the in-memory fold of
//! the log's tail produced (`merge_tail`), so that a series is exact up to now without the
//! tail being folded for good before it has settled (see `fold`).

use super::fold::Writes;
use super::sql::SeriesQuery;
use super::{build_series, Acc, Bucket, Grain, SeriesInput, UsageSeries};

/// The stored rows a query needs.
#[derive(Debug, Default)]
pub struct SeriesRows {
    /// Rows of the bucket's grain starting in the period, in order.
    pub rows: Vec<Acc>,
    /// Hour rows of the period (day and month buckets: the heatmap).
    pub hour_rows: Vec<Acc>,
    /// The last minute row before the period: (start, in use, seats) at its end.
    pub seed: Option<(i64, i64, i64)>,
    /// Queue waits granted in the period, in order.
    pub waits: Vec<(i64, i64)>,
    /// Month buckets: (day start, user) of the period's days.
    pub day_users: Vec<(i64, String)>,
}

impl SeriesRows {
    /// Overlays the subject's buckets of the tail's fold: its rows replace the stored ones of
    /// the same start, its waits and day users add to the stored ones.
    pub fn merge_tail(&mut self, q: &SeriesQuery, tail: &Writes) {
        let mut accs: Vec<(Grain, &Acc)> = tail
            .closed
            .iter()
            .filter(|(s, _, _)| *s == q.subject)
            .map(|(_, g, a)| (*g, a))
            .collect();
        for st in tail.states.iter().filter(|s| s.subject == q.subject) {
            for (g, acc) in Grain::ALL.iter().zip(st.open.iter()) {
                if let Some(acc) = acc {
                    accs.push((*g, acc));
                }
            }
        }
        let grain = q.bucket.grain();
        for (g, acc) in &accs {
            let in_period = (q.from..q.to).contains(&acc.start);
            if *g == grain && in_period {
                put(&mut self.rows, acc);
            }
            if *g == Grain::Hour && in_period && matches!(q.bucket, Bucket::Day | Bucket::Month) {
                put(&mut self.hour_rows, acc);
            }
            if *g == Grain::Day && in_period && q.bucket == Bucket::Month {
                self.day_users
                    .extend(acc.users.iter().map(|u| (acc.start, u.clone())));
            }
            if *g == Grain::Minute
                && acc.start < q.from
                && self.seed.is_none_or(|(start, _, _)| start <= acc.start)
            {
                self.seed = Some((acc.start, acc.in_use_end, acc.seats_end));
            }
        }
        let before = self.waits.len();
        self.waits.extend(
            tail.waits
                .iter()
                .filter(|(s, at, _)| *s == q.subject && (q.from..q.to).contains(at))
                .map(|(_, at, ms)| (*at, *ms)),
        );
        if self.waits.len() > before {
            self.waits.sort_unstable();
        }
    }

    /// The series of `q` over these rows.
    pub fn series(&self, q: &SeriesQuery) -> UsageSeries {
        build_series(SeriesInput {
            bucket: q.bucket,
            from: q.from,
            to: q.to,
            now: q.now,
            rows: &self.rows,
            seed: self.seed.map(|(_, in_use, seats)| (in_use, seats)),
            seats_now: q.seats_now,
            hour_rows: &self.hour_rows,
            waits: &self.waits,
            day_users: &self.day_users,
        })
    }
}

/// Puts `acc` in `rows` (ordered by start), replacing the row of the same start.
fn put(rows: &mut Vec<Acc>, acc: &Acc) {
    match rows.binary_search_by_key(&acc.start, |r| r.start) {
        Ok(i) => {
            if let Some(r) = rows.get_mut(i) {
                *r = acc.clone();
            }
        }
        Err(i) => rows.insert(i, acc.clone()),
    }
}
