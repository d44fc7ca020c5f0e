//! The writer's bulk lane: the ends memory has decided (a mass end, expiries; see
//! `mem::ending`) are written in chunks, each its own transaction, one chunk between two
//! batches of acknowledged writes. Opens, logouts and heartbeat touches thus never wait for
//! more than one chunk, and no transaction holds more than one chunk of ends, whatever the
//! number of sessions that ended at once.
//!
//! A chunk is taken from memory (`Mem::drain_chunk`, at most `LOCK_CHUNK` ends per lock hold,
//! so heartbeats are not held up either), then every write queued before it is committed
//! first (an insert among them may be of a session the chunk ends), then the chunk. Its size
//! adapts so that writing one takes about `TARGET`. Memory holds the taken ends as ended
//! sessions from the moment it hands them over, and answers for them until they commit; if
//! the chunk fails, memory is rebuilt from the disk, where they are still under their floor (or
//! past their expiry), so they are ending again and written later.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::mem::Mem;
use super::writer::{apply, injected_full, Writer, MAX_BATCH};

/// How long writing one chunk should take: what an open may wait behind it.
const TARGET: Duration = Duration::from_millis(8);
/// Bounds of a chunk, in ends (each is a row update and an audit row).
const MIN_CHUNK: usize = 256;
const MAX_CHUNK: usize = 16_384;
const FIRST_CHUNK: usize = 1024;
/// Most ends taken from memory per lock hold.
const LOCK_CHUNK: usize = 1024;

/// The drain's state in the writer.
pub(super) struct Drain {
    /// Memory has decided ends waiting (it said so, and the last chunk found more).
    pub(super) wanted: bool,
    /// Ends per chunk, adapted to `TARGET`.
    size: usize,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            wanted: false,
            size: FIRST_CHUNK,
        }
    }
}

impl Drain {
    /// A chunk of `n` ends took `took` to write: the next one is sized for `TARGET`.
    fn adapt(&mut self, n: usize, took: Duration) {
        if n < self.size {
            return;
        }
        if took < TARGET / 2 {
            self.size = (self.size * 2).min(MAX_CHUNK);
        } else if took > TARGET * 3 / 2 {
            self.size = (self.size / 2).max(MIN_CHUNK);
        }
    }
}

fn lock(mem: &Mutex<Mem>) -> MutexGuard<'_, Mem> {
    mem.lock().unwrap_or_else(|e| e.into_inner())
}

impl Writer {
    /// Writes one chunk of decided ends (see the module doc).
    pub(super) fn drain_once(&mut self) {
        let Some(mem) = self.mem.upgrade() else {
            self.drain.wanted = false;
            return;
        };
        let mut ops = Vec::new();
        let mut more = true;
        while more && ops.len() < self.drain.size {
            let want = (self.drain.size - ops.len()).min(LOCK_CHUNK);
            let (mut part, still) = lock(&mem).drain_chunk(want);
            more = still;
            if part.is_empty() {
                // A whole scan found none (they are elsewhere in the slab): next round.
                break;
            }
            ops.append(&mut part);
        }
        drop(mem);
        self.drain.wanted = more;
        if ops.is_empty() {
            return;
        }
        // What memory queued before the chunk was taken goes first, acknowledged.
        loop {
            match self.write(Vec::new(), false) {
                // Memory was rebuilt from the disk: these ends are decided there again.
                _ if self.broken.is_some() => return,
                None => return,
                Some(n) if n < MAX_BATCH => break,
                Some(_) => {}
            }
        }
        let started = Instant::now();
        let applied = if self.faulty() {
            Err(injected_full())
        } else {
            apply(&mut self.conn, ops.iter())
        };
        match applied {
            Ok(()) => self.drain.adapt(ops.len(), started.elapsed()),
            Err(e) => self.failed(Vec::new(), &e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_grow_when_quick_and_shrink_when_slow() {
        let mut d = Drain::default();
        d.adapt(FIRST_CHUNK, Duration::from_millis(1));
        assert_eq!(d.size, FIRST_CHUNK * 2);
        d.adapt(10, Duration::from_millis(100));
        assert_eq!(d.size, FIRST_CHUNK * 2, "a short chunk says nothing");
        d.adapt(FIRST_CHUNK * 2, Duration::from_millis(100));
        assert_eq!(d.size, FIRST_CHUNK);
        for _ in 0..20 {
            d.adapt(d.size, Duration::from_secs(1));
        }
        assert_eq!(d.size, MIN_CHUNK);
    }
}
