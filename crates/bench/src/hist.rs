//! Latency histogram: log-linear buckets (64 per power of two, so under 1.6 % error) over
//! nanoseconds, cheap to record into and to merge across workers; the maximum is exact.

use std::time::Duration;

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = 64 * SUB as usize;

#[derive(Clone)]
pub struct Hist {
    counts: Vec<u64>,
    pub count: u64,
    pub max_ns: u64,
    sum_ns: u128,
}

impl Default for Hist {
    fn default() -> Self {
        Hist {
            counts: vec![0; BUCKETS],
            count: 0,
            max_ns: 0,
            sum_ns: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    let sub = (v >> shift) & (SUB - 1);
    ((((msb - SUB_BITS + 1) as u64) << SUB_BITS) | sub) as usize
}

/// The middle of a bucket's range.
fn value(idx: usize) -> u64 {
    let (bucket, sub) = ((idx as u64) >> SUB_BITS, (idx as u64) & (SUB - 1));
    if bucket == 0 {
        return sub;
    }
    let msb = bucket - 1 + u64::from(SUB_BITS);
    let shift = msb - u64::from(SUB_BITS);
    let low = (1u64 << msb) | (sub << shift);
    low + (1u64 << shift) / 2
}

impl Hist {
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[index(ns).min(BUCKETS - 1)] += 1;
        self.count += 1;
        self.max_ns = self.max_ns.max(ns);
        self.sum_ns += u128::from(ns);
    }

    pub fn merge(&mut self, other: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.max_ns = self.max_ns.max(other.max_ns);
        self.sum_ns += other.sum_ns;
    }

    /// The `q` quantile (0..=1), in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return value(i).min(self.max_ns) as f64 / 1e6;
            }
        }
        self.max_ns as f64 / 1e6
    }

    pub fn max_ms(&self) -> f64 {
        self.max_ns as f64 / 1e6
    }

    pub fn mean_ms(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum_ns as f64 / self.count as f64 / 1e6
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in [
            0u64,
            1,
            63,
            64,
            65,
            127,
            128,
            1000,
            123_456,
            9_999_999,
            1 << 40,
        ] {
            let i = index(v);
            assert!(i >= last);
            last = i;
            let mid = value(i);
            let err = (mid as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(err < 0.02, "{v} -> {mid}");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Hist::default();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        assert!((h.quantile_ms(0.5) - 0.5).abs() < 0.01);
        assert!((h.quantile_ms(0.99) - 0.99).abs() < 0.02);
        assert_eq!(h.max_ms(), 1.0);
    }
}
