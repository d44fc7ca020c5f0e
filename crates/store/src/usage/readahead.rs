//! The events a fold has read past its watermark but could not fold yet (not settled: see
//! `fold::settled`), kept for the next chunk: each event is read from the log once, not once a
//! second for as long as it takes to settle (`SETTLE_MS`: at 2,000 events a second, a fold
//! that re-read its unsettled tail read ten times the log).

use super::fold::UsageEvent;
use super::CHUNK;

/// The unsettled events of the last chunk, and how far the log has been read.
#[derive(Debug, Default)]
pub struct ReadAhead {
    /// Events read and not folded, in `seq` order.
    tail: Vec<UsageEvent>,
    /// Every event with a `seq` up to here is folded or in `tail`.
    read_upto: i64,
}

impl ReadAhead {
    /// Where the next read starts (the fold being at `watermark`), and how many events it may
    /// read: a chunk holds at most `CHUNK`, the kept ones included.
    pub fn next_read(&self, watermark: i64) -> (i64, usize) {
        (
            self.read_upto.max(watermark),
            CHUNK.saturating_sub(self.tail.len()),
        )
    }

    /// A chunk's events: the kept ones, then `read` (`asked` were asked for; when fewer came
    /// back, every event up to `complete` has been read).
    pub fn chunk(&mut self, read: Vec<UsageEvent>, asked: usize, complete: i64) -> Vec<UsageEvent> {
        if let Some(last) = read.last() {
            self.read_upto = self.read_upto.max(last.seq);
        }
        if read.len() < asked {
            self.read_upto = self.read_upto.max(complete);
        }
        let mut events = std::mem::take(&mut self.tail);
        events.extend(read);
        events
    }

    /// Keeps the events of a chunk the fold did not take, for the next one.
    pub fn keep(&mut self, rest: Vec<UsageEvent>) {
        self.tail = rest;
    }

    /// The kept events, for a query's in-memory fold of what has not settled.
    pub fn tail(&self) -> &[UsageEvent] {
        &self.tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: i64) -> UsageEvent {
        UsageEvent {
            seq,
            at: seq * 1_000,
            account_id: "acc".into(),
            license_id: "lic".into(),
            session_id: Some(format!("s{seq}")),
            username: Some("amy".into()),
            event: "opened".into(),
            detail: None,
        }
    }

    /// The log's events after `after` up to `upto`, at most `limit` (a backend's read).
    fn read(log: &[UsageEvent], after: i64, upto: i64, limit: usize) -> Vec<UsageEvent> {
        log.iter()
            .filter(|e| e.seq > after && e.seq <= upto)
            .take(limit)
            .cloned()
            .collect()
    }

    #[test]
    fn each_event_is_read_once_and_a_chunk_is_what_a_fresh_read_would_give() {
        // Arrange: a log that grows; the fold folds two events a chunk.
        let log: Vec<UsageEvent> = (1..=12).map(event).collect();
        let mut ahead = ReadAhead::default();
        let mut watermark = 0;
        let mut reads = 0;
        for upto in [3, 6, 9, 12, 12, 12, 12] {
            // Act
            let (after, room) = ahead.next_read(watermark);
            let got = read(&log, after, upto, room);
            reads += got.len();
            let events = ahead.chunk(got, room, upto);
            // Assert: the chunk is every event after the watermark the log holds now.
            assert_eq!(events, read(&log, watermark, upto, CHUNK));
            let take = events.len().min(2);
            if let Some(last) = events.get(..take).and_then(<[_]>::last) {
                watermark = last.seq;
            }
            ahead.keep(events.get(take..).unwrap_or_default().to_vec());
        }
        assert_eq!(reads, 12, "each event read once");
        assert_eq!(watermark, 12);
    }

    #[test]
    fn a_full_tail_reads_nothing_more_until_the_fold_takes_some() {
        let mut ahead = ReadAhead::default();
        ahead.keep((1..=CHUNK as i64).map(event).collect());
        assert_eq!(ahead.next_read(0).1, 0);
        let events = ahead.chunk(Vec::new(), 0, 1_000_000);
        assert_eq!(events.len(), CHUNK);
        // Nothing was read: the log is not known to be read beyond what came back.
        assert_eq!(ahead.next_read(0).0, 0);
    }
}
