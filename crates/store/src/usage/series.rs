//! The usage series a query answers, built from the stored bucket rows of one subject: each
//! bucket of the period (minute, hour, day or month, UTC), the utilization over the whole period
//! (a histogram of the time spent at each number of seats in use, how often and how long every
//! seat was in use, the weekday × hour high water), and the period's totals. Pure.
//!
//! A bucket with no row had no event: its state is the one carried from before (the end state
//! of the last row, or of the seed before the period). A row still open (its last event before
//! the end of its bucket) is run at its end state up to the end of the bucket or `now`, which
//! makes the answer exact up to `now`. A subject with no row before the period was born in it
//! (its first event, the license's creation, always makes a row): the buckets before its first
//! row show no seats and nothing in use, and count in neither the histogram, the full periods
//! nor the period's low water (the same period answers the same utilization, whatever the
//! bucket).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{Acc, Grain, DAY_MS, HOUR_MS};

/// The bucket of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Minute,
    Hour,
    Day,
    Month,
}

impl Bucket {
    pub fn parse(s: &str) -> Option<Bucket> {
        Some(match s {
            "minute" => Bucket::Minute,
            "hour" => Bucket::Hour,
            "day" => Bucket::Day,
            "month" => Bucket::Month,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Minute => "minute",
            Bucket::Hour => "hour",
            Bucket::Day => "day",
            Bucket::Month => "month",
        }
    }

    /// The grain of the rows this bucket is made of (a month is a run of days).
    pub fn grain(self) -> Grain {
        match self {
            Bucket::Minute => Grain::Minute,
            Bucket::Hour => Grain::Hour,
            Bucket::Day | Bucket::Month => Grain::Day,
        }
    }

    /// The start of the bucket holding `t`.
    pub fn floor(self, t: i64) -> i64 {
        match self {
            Bucket::Month => {
                let (y, m) = year_month(t);
                month_start(y, m)
            }
            b => b.grain().start_of(t),
        }
    }

    /// The start of the bucket after the one starting at `start`.
    pub fn next(self, start: i64) -> i64 {
        match self {
            Bucket::Month => {
                let (y, m) = year_month(start);
                if m == 12 {
                    month_start(y + 1, 1)
                } else {
                    month_start(y, m + 1)
                }
            }
            b => start + b.grain().len_ms(),
        }
    }

    /// The start of the first bucket at or after `t`.
    pub fn ceil(self, t: i64) -> i64 {
        let f = self.floor(t);
        if f == t {
            t
        } else {
            self.next(f)
        }
    }

    /// How many buckets `[from, to)` holds (both bucket starts), counting at most `cap + 1`.
    pub fn count(self, from: i64, to: i64, cap: i64) -> i64 {
        match self {
            Bucket::Month => {
                let mut n = 0;
                let mut s = from;
                while s < to && n <= cap {
                    s = self.next(s);
                    n += 1;
                }
                n
            }
            b => (to - from).div_euclid(b.grain().len_ms()),
        }
    }
}

/// Days since 1970-01-01 → (year, month), proleptic Gregorian (Howard Hinnant's algorithm).
fn year_month(t: i64) -> (i64, i64) {
    let z = t.div_euclid(DAY_MS) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m)
}

/// Milliseconds of the first instant of month `m` of year `y`.
fn month_start(y: i64, m: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) * DAY_MS
}

/// One bucket of the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageBucket {
    pub start: i64,
    pub end: i64,
    pub high_water: i64,
    pub low_water: i64,
    pub average_in_use: f64,
    /// Seats at the bucket's end (or now).
    pub seats: i64,
    pub seats_max: i64,
    pub opens: i64,
    pub denials: i64,
    pub queued: i64,
    pub queue_wait_median_secs: Option<f64>,
    pub queue_wait_max_secs: Option<f64>,
    pub distinct_users: i64,
    pub overdraft_high_water: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HistBin {
    pub in_use: i64,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FullStats {
    /// Times every seat came into use (a period already full at the start counts once).
    pub times: i64,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeatCell {
    /// 0 = Monday … 6 = Sunday (UTC).
    pub weekday: i64,
    /// 0 … 23 (UTC).
    pub hour: i64,
    pub high_water: i64,
}

/// The answer of a query.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageSeries {
    pub from: i64,
    pub to: i64,
    pub bucket: Bucket,
    pub buckets: Vec<UsageBucket>,
    pub high_water: i64,
    pub low_water: i64,
    pub denials: i64,
    pub histogram: Vec<HistBin>,
    pub full: FullStats,
    /// Every weekday × hour (168 cells, Monday 00h first).
    pub heatmap: Vec<HeatCell>,
}

/// What a query reads from the store.
#[derive(Debug, Clone, Copy)]
pub struct SeriesInput<'a> {
    pub bucket: Bucket,
    /// Bucket starts (`from` aligned down, `to` aligned up and at most the bucket after now).
    pub from: i64,
    pub to: i64,
    /// The buckets end with the one holding `now` (its figures up to `now`).
    pub now: i64,
    /// Rows of `bucket.grain()` starting in `[from, to)`, in order.
    pub rows: &'a [Acc],
    /// The state before `from`: (in use, seats) at the end of the last row before it, or no
    /// row at all (`None`: nothing in use, `seats_now` seats).
    pub seed: Option<(i64, i64)>,
    pub seats_now: i64,
    /// Hour rows of `[from, to)` for the heatmap (read for day and month buckets only).
    pub hour_rows: &'a [Acc],
    /// Queue waits granted in `[from, to)`: (granted at, wait in ms), in order.
    pub waits: &'a [(i64, i64)],
    /// For month buckets: (day start, user) of the days of `[from, to)`.
    pub day_users: &'a [(i64, String)],
}

/// Builds the series (see the module doc).
pub fn build_series(input: SeriesInput<'_>) -> UsageSeries {
    let (carry_in_use, carry_seats) = input.seed.unwrap_or((0, input.seats_now));
    let grain = input.bucket.grain();
    let end = input.to.min(grain.start_of(input.now) + grain.len_ms());
    let starts = (input.from..end).step_by(usize::try_from(grain.len_ms()).unwrap_or(1));
    let born_in_period = input.seed.is_none();
    let walked = walk(
        starts,
        grain,
        input.rows,
        (carry_in_use, carry_seats),
        input.now,
        born_in_period,
    );

    // Buckets: a month merges its days.
    let mut accs: Vec<(i64, i64, Acc)> = Vec::new();
    match input.bucket {
        Bucket::Month => {
            for a in walked.iter() {
                let m = Bucket::Month.floor(a.start);
                match accs.last_mut() {
                    Some((s, _, acc)) if *s == m => merge(acc, a),
                    _ => accs.push((m, Bucket::Month.next(m), a.clone())),
                }
            }
            let mut users: HashMap<i64, HashSet<&str>> = HashMap::new();
            for (day, user) in input.day_users {
                users
                    .entry(Bucket::Month.floor(*day))
                    .or_default()
                    .insert(user);
            }
            for (s, _, acc) in &mut accs {
                acc.user_count = users.get(s).map_or(0, |u| u.len() as i64);
            }
        }
        _ => accs.extend(
            walked
                .iter()
                .map(|a| (a.start, a.start + grain.len_ms(), a.clone())),
        ),
    }

    let mut waits = input.waits.iter().peekable();
    let mut buckets = Vec::with_capacity(accs.len());
    for (start, bucket_end, acc) in &accs {
        let (high_water, low_water) = acc.water().unwrap_or((0, 0));
        let mut w: Vec<i64> = Vec::new();
        while let Some((_, ms)) = waits.next_if(|(at, _)| at < bucket_end) {
            w.push(*ms);
        }
        w.sort_unstable();
        let elapsed = (*bucket_end).min(input.now) - start;
        buckets.push(UsageBucket {
            start: *start,
            end: *bucket_end,
            high_water,
            low_water,
            average_in_use: if elapsed > 0 {
                acc.in_use_ms as f64 / elapsed as f64
            } else {
                acc.in_use_end as f64
            },
            seats: acc.seats_end,
            seats_max: acc.seats_max,
            opens: acc.opens,
            denials: acc.denials,
            queued: acc.queued,
            queue_wait_median_secs: median(&w).map(|ms| ms / 1000.0),
            queue_wait_max_secs: w.last().map(|ms| *ms as f64 / 1000.0),
            distinct_users: acc.user_count,
            overdraft_high_water: acc.overdraft_high.max(0),
        });
    }

    // Utilization over the whole period.
    let mut hist: BTreeMap<i64, i64> = BTreeMap::new();
    let mut full_ms = 0;
    let mut times = i64::from(input.seed.is_some() && carry_in_use >= carry_seats);
    for a in &walked {
        for (level, ms) in &a.hist {
            *hist.entry(*level).or_insert(0) += ms;
        }
        full_ms += a.full_ms;
        times += a.full_entries;
    }
    let hours: Vec<Acc> = match input.bucket {
        Bucket::Minute => {
            let mut out: Vec<Acc> = Vec::new();
            for a in &walked {
                let h = Grain::Hour.start_of(a.start);
                match out.last_mut() {
                    Some(acc) if acc.start == h => merge(acc, a),
                    _ => out.push(Acc {
                        start: h,
                        ..a.clone()
                    }),
                }
            }
            out
        }
        Bucket::Hour => walked.clone(),
        Bucket::Day | Bucket::Month => {
            let end = input.to.min(Grain::Hour.start_of(input.now) + HOUR_MS);
            let starts = (input.from..end).step_by(usize::try_from(HOUR_MS).unwrap_or(1));
            walk(
                starts,
                Grain::Hour,
                input.hour_rows,
                (carry_in_use, carry_seats),
                input.now,
                born_in_period,
            )
        }
    };
    let mut heat = [[0i64; 24]; 7];
    for h in &hours {
        let weekday = (h.start.div_euclid(DAY_MS) + 3).rem_euclid(7);
        let hour = h.start.rem_euclid(DAY_MS) / HOUR_MS;
        if let Some(cell) = heat
            .get_mut(weekday as usize)
            .and_then(|d| d.get_mut(hour as usize))
        {
            *cell = (*cell).max(h.high);
        }
    }
    let heatmap = (0..7)
        .flat_map(|d| (0..24).map(move |h| (d, h)))
        .map(|(weekday, hour)| HeatCell {
            weekday,
            hour,
            high_water: heat
                .get(weekday as usize)
                .and_then(|d| d.get(hour as usize))
                .copied()
                .unwrap_or(0),
        })
        .collect();

    UsageSeries {
        from: input.from,
        to: input.to,
        bucket: input.bucket,
        // Over the buckets the subject existed in (`walk`).
        high_water: accs
            .iter()
            .filter_map(|(_, _, a)| a.water())
            .map(|(high, _)| high)
            .max()
            .unwrap_or(carry_in_use),
        low_water: accs
            .iter()
            .filter_map(|(_, _, a)| a.water())
            .map(|(_, low)| low)
            .min()
            .unwrap_or(carry_in_use),
        denials: buckets.iter().map(|b| b.denials).sum(),
        buckets,
        histogram: hist
            .into_iter()
            .map(|(in_use, ms)| HistBin {
                in_use,
                seconds: ms as f64 / 1000.0,
            })
            .collect(),
        full: FullStats {
            times,
            seconds: full_ms as f64 / 1000.0,
        },
        heatmap,
    }
}

/// One `Acc` per grain bucket starting at `starts`: the bucket's row run up to its end (or
/// `now`), or the carried state where there is no row. `unborn`: the subject has no row before
/// the first start, so the buckets before its first row are before it existed: no seats,
/// nothing run, and no marks (`Acc::water` is none; merges and maxima skip them).
fn walk(
    starts: impl Iterator<Item = i64>,
    grain: Grain,
    rows: &[Acc],
    mut carry: (i64, i64),
    now: i64,
    mut unborn: bool,
) -> Vec<Acc> {
    let mut rows = rows.iter().peekable();
    let mut out = Vec::new();
    for start in starts {
        let end = (start + grain.len_ms()).min(now).max(start);
        while rows.next_if(|r| r.start < start).is_some() {
            unborn = false;
        }
        let mut acc = match rows.next_if(|r| r.start == start) {
            Some(r) => {
                unborn = false;
                r.clone()
            }
            None if unborn => {
                let mut before = Acc::new(start, 0, 0);
                before.through = end;
                out.push(before);
                continue;
            }
            None => Acc::new(start, carry.0, carry.1),
        };
        acc.run_to(end);
        if end == now || acc.water().is_none() {
            acc.mark_now();
        }
        carry = (acc.in_use_end, acc.seats_end);
        out.push(acc);
    }
    out
}

/// Adds bucket `b` (which follows `a`) into `a`.
fn merge(a: &mut Acc, b: &Acc) {
    a.through = b.through;
    a.high = a.high.max(b.high);
    a.low = a.low.min(b.low);
    a.in_use_end = b.in_use_end;
    a.seats_end = b.seats_end;
    a.seats_max = a.seats_max.max(b.seats_max);
    a.in_use_ms += b.in_use_ms;
    a.opens += b.opens;
    a.denials += b.denials;
    a.queued += b.queued;
    a.overdraft_high = a.overdraft_high.max(b.overdraft_high);
    a.full_ms += b.full_ms;
    a.full_entries += b.full_entries;
    a.in_full_period = b.in_full_period;
    for (level, ms) in &b.hist {
        *a.hist.entry(*level).or_insert(0) += ms;
    }
}

fn median(sorted: &[i64]) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let mid = sorted.get(n / 2).copied().unwrap_or(0) as f64;
    if n % 2 == 1 {
        Some(mid)
    } else {
        let low = sorted.get(n / 2 - 1).copied().unwrap_or(0) as f64;
        Some((low + mid) / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::fold::{Folder, UsageEvent};
    use crate::usage::{seats_detail, MINUTE_MS};

    /// 2023-11-14 22:00 UTC, a Tuesday.
    const H: i64 = 1_700_000_000_000 / HOUR_MS * HOUR_MS;

    fn ev(seq: i64, at: i64, event: &str, session: &str, detail: &str) -> UsageEvent {
        UsageEvent {
            seq,
            at,
            account_id: "acme".into(),
            license_id: "lic".into(),
            session_id: Some(session.into()),
            username: Some(format!("u{session}")),
            event: event.into(),
            detail: Some(detail.into()),
        }
    }

    /// The rows the fold leaves for `grain` (closed, then open).
    fn rows(events: &[UsageEvent], grain: Grain) -> Vec<Acc> {
        let mut f = Folder::default();
        for e in events {
            f.fold(e, &|_| None);
        }
        let w = f.take_writes();
        let mut out: Vec<Acc> = w
            .closed
            .into_iter()
            .filter(|(s, g, _)| s == "license:lic" && *g == grain)
            .map(|(_, _, a)| a)
            .collect();
        let st = w
            .states
            .iter()
            .find(|s| s.subject == "license:lic")
            .unwrap();
        out.extend(st.open[grain.index()].clone());
        out
    }

    #[test]
    fn before_its_first_row_a_license_did_not_exist_whatever_the_bucket() {
        // Arrange: created 2 min 30 s into the hour with 2 seats; a holds a seat from 3 min to
        // 3 min 20 s. Now: 5 min.
        let born = H + 2 * MINUTE_MS + 30_000;
        let events = [
            ev(1, born, "license_created", "", &seats_detail(2)),
            ev(2, H + 3 * MINUTE_MS, "opened", "a", "interactive"),
            ev(3, H + 3 * MINUTE_MS + 20_000, "ended", "a", "logout"),
        ];
        let query = |bucket: Bucket, rows: &[Acc]| {
            build_series(SeriesInput {
                bucket,
                from: H,
                to: H + HOUR_MS,
                now: H + 5 * MINUTE_MS,
                rows,
                seed: None,
                seats_now: 2,
                hour_rows: &[],
                waits: &[],
                day_users: &[],
            })
        };

        // Act
        let by_minute = query(Bucket::Minute, &rows(&events, Grain::Minute));
        let by_hour = query(Bucket::Hour, &rows(&events, Grain::Hour));

        // Assert: minutes 0 and 1 had no license: no seats, nothing in use, no marks.
        let seats: Vec<_> = by_minute.buckets.iter().map(|b| b.seats).collect();
        assert_eq!(seats, [0, 0, 2, 2, 2, 2]);
        // Both answer the same utilization: 2 min 10 s at 0 (from the birth on), 20 s at 1,
        // never full; the low water is the license's (0 after a left), the high 1.
        for s in [&by_minute, &by_hour] {
            assert_eq!(
                s.histogram,
                [
                    HistBin {
                        in_use: 0,
                        seconds: 130.0
                    },
                    HistBin {
                        in_use: 1,
                        seconds: 20.0
                    }
                ]
            );
            assert_eq!(
                s.full,
                FullStats {
                    times: 0,
                    seconds: 0.0
                }
            );
            assert_eq!((s.high_water, s.low_water), (1, 0));
        }
        assert_eq!(by_hour.buckets[0].seats, 2);
    }

    #[test]
    fn month_arithmetic_is_calendar_months() {
        let jan_2024 = 1_704_067_200_000;
        assert_eq!(Bucket::Month.floor(jan_2024 + 5 * DAY_MS), jan_2024);
        let feb = Bucket::Month.next(jan_2024);
        assert_eq!(feb, jan_2024 + 31 * DAY_MS);
        assert_eq!(Bucket::Month.next(feb), feb + 29 * DAY_MS); // 2024 is a leap year
        assert_eq!(
            Bucket::Month.count(jan_2024, Bucket::Month.next(Bucket::Month.next(feb)), 10),
            3
        );
        assert_eq!(Bucket::Hour.ceil(H + 1), H + HOUR_MS);
    }

    #[test]
    fn a_known_sequence_gives_every_minute_its_exact_figures() {
        // Arrange: 2 seats. Minute 0: a opens at 10 s, b at 20 s (full), c denied at 30 s,
        // a ends at 40 s. Minute 1: quiet. Minute 2: b ends at 15 s.
        let events = [
            ev(1, H, "license_created", "", &seats_detail(2)),
            ev(2, H + 10_000, "opened", "a", "interactive"),
            ev(3, H + 20_000, "opened", "b", "interactive"),
            ev(4, H + 30_000, "denied", "", "no_seat_available"),
            ev(5, H + 40_000, "ended", "a", "logout"),
            ev(6, H + 2 * MINUTE_MS + 15_000, "ended", "b", "logout"),
        ];
        let rows = rows(&events, Grain::Minute);

        // Act: minutes 0–3, now at 3 min 30 s.
        let s = build_series(SeriesInput {
            bucket: Bucket::Minute,
            from: H,
            to: H + 4 * MINUTE_MS,
            now: H + 3 * MINUTE_MS + 30_000,
            rows: &rows,
            seed: None,
            seats_now: 2,
            hour_rows: &[],
            waits: &[],
            day_users: &[],
        });

        // Assert
        let got: Vec<_> = s
            .buckets
            .iter()
            .map(|b| {
                (
                    b.high_water,
                    b.low_water,
                    b.average_in_use,
                    b.denials,
                    b.opens,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (2, 0, (30.0 + 40.0) / 60.0, 1, 2),
                (1, 1, 1.0, 0, 0),
                (1, 0, 15.0 / 60.0, 0, 0),
                (0, 0, 0.0, 0, 0),
            ]
        );
        assert_eq!((s.high_water, s.low_water, s.denials), (2, 0, 1));
        // Histogram: 0 in use 10 s + 45 s + 30 s; 1: 10 s + 20 s + 60 s + 15 s; 2: 20 s.
        assert_eq!(
            s.histogram,
            [
                HistBin {
                    in_use: 0,
                    seconds: 85.0
                },
                HistBin {
                    in_use: 1,
                    seconds: 105.0
                },
                HistBin {
                    in_use: 2,
                    seconds: 20.0
                },
            ]
        );
        assert_eq!(
            s.full,
            FullStats {
                times: 1,
                seconds: 20.0
            }
        );
        // Tuesday (1) 22 h: high water 2; every other cell 0.
        let cell = s.heatmap.iter().find(|c| c.high_water > 0).unwrap();
        assert_eq!((cell.weekday, cell.hour, cell.high_water), (1, 22, 2));
        assert_eq!(s.heatmap.len(), 168);
    }

    #[test]
    fn waits_give_each_bucket_its_median_and_longest() {
        let s = build_series(SeriesInput {
            bucket: Bucket::Hour,
            from: H,
            to: H + 2 * HOUR_MS,
            now: H + 2 * HOUR_MS,
            rows: &[],
            seed: Some((1, 1)),
            seats_now: 1,
            hour_rows: &[],
            waits: &[
                (H + 5, 1_000),
                (H + 6, 3_000),
                (H + 7, 10_000),
                (H + HOUR_MS, 2_000),
                (H + HOUR_MS + 1, 4_000),
            ],
            day_users: &[],
        });
        let w: Vec<_> = s
            .buckets
            .iter()
            .map(|b| {
                (
                    b.queue_wait_median_secs,
                    b.queue_wait_max_secs,
                    b.high_water,
                )
            })
            .collect();
        assert_eq!(w, [(Some(3.0), Some(10.0), 1), (Some(3.0), Some(4.0), 1)]);
        // Full for the whole period, counted once.
        assert_eq!(
            s.full,
            FullStats {
                times: 1,
                seconds: 7200.0
            }
        );
    }

    #[test]
    fn a_day_query_reads_day_rows_and_months_merge_days() {
        // Arrange: one session for 2 h on 31 January, another on 1 February.
        let jan31 = 1_706_659_200_000;
        let feb1 = jan31 + DAY_MS;
        let events = [
            ev(1, jan31, "license_created", "", &seats_detail(3)),
            ev(2, jan31 + HOUR_MS, "opened", "a", "interactive"),
            ev(3, jan31 + 3 * HOUR_MS, "ended", "a", "logout"),
            ev(4, feb1 + HOUR_MS, "opened", "b", "interactive"),
        ];
        let days = rows(&events, Grain::Day);
        let hours = rows(&events, Grain::Hour);
        let users = [(jan31, "ua".to_owned()), (feb1, "ub".to_owned())];

        // Act
        let s = build_series(SeriesInput {
            bucket: Bucket::Month,
            from: Bucket::Month.floor(jan31),
            to: Bucket::Month.next(feb1),
            now: feb1 + 2 * HOUR_MS,
            rows: &days,
            seed: None,
            seats_now: 3,
            hour_rows: &hours,
            waits: &[],
            day_users: &users,
        });

        // Assert: January: high 1, 2 h in use over the month; February: 1 h so far of 2 h.
        assert_eq!(s.buckets.len(), 2);
        let (jan, feb) = (&s.buckets[0], &s.buckets[1]);
        assert_eq!(
            (jan.high_water, jan.low_water, jan.distinct_users, jan.opens),
            (1, 0, 1, 1)
        );
        assert!((jan.average_in_use - 2.0 / (31.0 * 24.0)).abs() < 1e-12);
        assert_eq!((feb.high_water, feb.distinct_users), (1, 1));
        assert!((feb.average_in_use - 0.5).abs() < 1e-12);
        // Wednesday 31 Jan 2024, 01 and 02 h UTC.
        let hot: Vec<_> = s
            .heatmap
            .iter()
            .filter(|c| c.high_water > 0)
            .map(|c| (c.weekday, c.hour))
            .collect();
        // The hour holding now (02h, none of it passed yet) shows the state now.
        assert_eq!(hot, [(2, 1), (2, 2), (3, 1), (3, 2)]);
    }
}
