//! Session events for the streams of session owners (`GET /v1/sessions/{id}/events`): the
//! `EventHub` of one process, where a stream waits, and the `SessionEvent` a change raises.
//!
//! An event is a *hint*, not a record: it names a topic (one session, every session of a
//! license, every session of a user) and what may have changed (the session may have ended,
//! the license's terms changed, a queue the user waits in moved). A stream woken by one re-reads its own session from the
//! store, which stays the truth. So an end decided in bulk (a license revoked at once, a user
//! deactivated) is one event that every stream of that license or user filters on, never one
//! event per session; and an event lost on its way (a node's LISTEN connection dropped) is
//! made good by waking every stream of the process once (`wake_all`).
//!
//! ```text
//!   change committed ──► Store::publish ──► SQLite: this process's hub
//!                                      └──► PostgreSQL: NOTIFY leasehold_events ──► each node's
//!                                           listener ──► its hub
//!   hub ──(topic matches)──► a stream's Watch: flags set, task woken ──► stream re-reads
//! ```
//!
//! A stream costs no task and no timer of its own in the hub: a `Watch` is two flags and a
//! `Notify`, registered under at most three topic keys.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// What an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    /// One session.
    Session(String),
    /// Every session of a license.
    License(String),
    /// Every session of an account's user (on any of its licenses).
    User {
        account_id: String,
        username: String,
    },
}

/// What may have changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The session (or sessions) may have ended: logout, revoke, deactivation, mass end.
    Ended,
    /// The license's terms changed (seats, heartbeat cadence, end...); its sessions may have
    /// ended too.
    LicenseChanged,
    /// A queue the user waits in (or just stopped waiting in) changed: positions may have
    /// moved. Raised on the user's topic, for each user waiting in the license's queue.
    QueueChanged,
}

/// One event: a change on a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEvent {
    pub topic: Topic,
    pub change: Change,
}

impl SessionEvent {
    pub fn session_ended(session_id: &str) -> Self {
        SessionEvent {
            topic: Topic::Session(session_id.to_owned()),
            change: Change::Ended,
        }
    }

    pub fn license_ended(license_id: &str) -> Self {
        SessionEvent {
            topic: Topic::License(license_id.to_owned()),
            change: Change::Ended,
        }
    }

    pub fn license_changed(license_id: &str) -> Self {
        SessionEvent {
            topic: Topic::License(license_id.to_owned()),
            change: Change::LicenseChanged,
        }
    }

    pub fn queue_changed_for(account_id: &str, username: &str) -> Self {
        SessionEvent {
            topic: Topic::User {
                account_id: account_id.to_owned(),
                username: username.to_owned(),
            },
            change: Change::QueueChanged,
        }
    }

    pub fn user_ended(account_id: &str, username: &str) -> Self {
        SessionEvent {
            topic: Topic::User {
                account_id: account_id.to_owned(),
                username: username.to_owned(),
            },
            change: Change::Ended,
        }
    }

    /// The text form carried by a PostgreSQL NOTIFY: `<change>|<kind>|<id>`, the user topic's
    /// id being `<account_id>|<username>` (account ids are UUIDs: the first `|` after the
    /// kind splits them, whatever the username holds).
    pub fn encode(&self) -> String {
        let change = match self.change {
            Change::Ended => 'e',
            Change::LicenseChanged => 'c',
            Change::QueueChanged => 'q',
        };
        match &self.topic {
            Topic::Session(id) => format!("{change}|s|{id}"),
            Topic::License(id) => format!("{change}|l|{id}"),
            Topic::User {
                account_id,
                username,
            } => format!("{change}|u|{account_id}|{username}"),
        }
    }

    /// Reads `encode`'s form; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        let mut parts = text.splitn(3, '|');
        let change = match parts.next()? {
            "e" => Change::Ended,
            "c" => Change::LicenseChanged,
            "q" => Change::QueueChanged,
            _ => return None,
        };
        let kind = parts.next()?;
        let id = parts.next()?;
        let topic = match kind {
            "s" => Topic::Session(id.to_owned()),
            "l" => Topic::License(id.to_owned()),
            "u" => {
                let (account_id, username) = id.split_once('|')?;
                Topic::User {
                    account_id: account_id.to_owned(),
                    username: username.to_owned(),
                }
            }
            _ => return None,
        };
        Some(SessionEvent { topic, change })
    }
}

/// The key a topic is registered under in the hub.
fn key(topic: &Topic) -> String {
    match topic {
        Topic::Session(id) => format!("s|{id}"),
        Topic::License(id) => format!("l|{id}"),
        Topic::User {
            account_id,
            username,
        } => format!("u|{account_id}|{username}"),
    }
}

/// What a stream waits on: flags of what happened since it last looked, and its wake-up.
#[derive(Debug, Default)]
pub struct Watch {
    ended: AtomicBool,
    license_changed: AtomicBool,
    queue_changed: AtomicBool,
    closed: AtomicBool,
    notify: Notify,
}

/// What a stream learns when it wakes (`Subscription::changes`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// Its session may have ended: read it again.
    pub ended: bool,
    /// The license's terms changed.
    pub license_changed: bool,
    /// A queue the stream's user waits in changed.
    pub queue_changed: bool,
    /// The server is stopping: end the stream.
    pub closed: bool,
}

impl Watch {
    fn raise(&self, change: Change) {
        match change {
            Change::Ended => self.ended.store(true, Ordering::Release),
            Change::LicenseChanged => self.license_changed.store(true, Ordering::Release),
            Change::QueueChanged => self.queue_changed.store(true, Ordering::Release),
        }
        // A permit is kept when the stream is not waiting right now: no wake-up is lost.
        self.notify.notify_one();
    }
}

#[derive(Default)]
struct Topics {
    by_key: HashMap<String, HashMap<u64, Arc<Watch>>>,
}

/// The streams of this process, by topic.
#[derive(Default)]
pub struct EventHub {
    topics: Mutex<Topics>,
    next_id: AtomicU64,
    closed: AtomicBool,
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub")
            .field("streams", &self.streams())
            .finish_non_exhaustive()
    }
}

impl EventHub {
    pub fn new() -> Arc<Self> {
        Arc::new(EventHub::default())
    }

    fn lock(&self) -> MutexGuard<'_, Topics> {
        // A panic while holding the lock leaves the map consistent (each step is one insert
        // or remove): go on with it.
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a stream under the session's, its license's and its user's topics.
    pub fn subscribe(
        self: &Arc<Self>,
        session_id: &str,
        license_id: &str,
        account_id: &str,
        username: &str,
    ) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let watch = Arc::new(Watch::default());
        let keys = vec![
            key(&Topic::Session(session_id.to_owned())),
            key(&Topic::License(license_id.to_owned())),
            key(&Topic::User {
                account_id: account_id.to_owned(),
                username: username.to_owned(),
            }),
        ];
        {
            let mut topics = self.lock();
            for k in &keys {
                topics
                    .by_key
                    .entry(k.clone())
                    .or_default()
                    .insert(id, watch.clone());
            }
        }
        if self.closed.load(Ordering::Acquire) {
            watch.closed.store(true, Ordering::Release);
            watch.notify.notify_one();
        }
        Subscription {
            hub: self.clone(),
            id,
            keys,
            watch,
        }
    }

    /// Wakes the streams registered under the event's topic. Costs one map lookup, and one
    /// wake-up per stream of the topic (outside the lock).
    pub fn deliver(&self, event: &SessionEvent) {
        let watches: Vec<Arc<Watch>> = match self.lock().by_key.get(&key(&event.topic)) {
            Some(watches) => watches.values().cloned().collect(),
            None => return,
        };
        for watch in watches {
            watch.raise(event.change);
        }
    }

    /// Wakes every stream to re-read its session (events may have been missed).
    pub fn wake_all(&self) {
        for watch in self.all() {
            watch.raise(Change::Ended);
        }
    }

    /// The server is stopping: every stream ends, and streams subscribed from now on end at
    /// once.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for watch in self.all() {
            watch.closed.store(true, Ordering::Release);
            watch.notify.notify_one();
        }
    }

    fn all(&self) -> Vec<Arc<Watch>> {
        let topics = self.lock();
        let mut seen = HashMap::new();
        for watches in topics.by_key.values() {
            for (id, watch) in watches {
                seen.entry(*id).or_insert_with(|| watch.clone());
            }
        }
        seen.into_values().collect()
    }

    /// Streams registered now.
    pub fn streams(&self) -> usize {
        self.lock()
            .by_key
            .iter()
            .filter(|(k, _)| k.starts_with("s|"))
            .map(|(_, w)| w.len())
            .sum()
    }
}

/// A stream's registration; dropping it unregisters the stream.
pub struct Subscription {
    hub: Arc<EventHub>,
    id: u64,
    keys: Vec<String>,
    watch: Arc<Watch>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// Waits until something is raised for this stream (at once if something was raised since
    /// the last call).
    pub async fn woken(&self) {
        self.watch.notify.notified().await;
    }

    /// Takes what was raised since the last call.
    pub fn changes(&self) -> Changes {
        Changes {
            ended: self.watch.ended.swap(false, Ordering::AcqRel),
            license_changed: self.watch.license_changed.swap(false, Ordering::AcqRel),
            queue_changed: self.watch.queue_changed.swap(false, Ordering::AcqRel),
            closed: self.watch.closed.load(Ordering::Acquire),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut topics = self.hub.lock();
        for k in &self.keys {
            if let Some(watches) = topics.by_key.get_mut(k) {
                watches.remove(&self.id);
                if watches.is_empty() {
                    topics.by_key.remove(k);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn events_round_trip_through_their_text_form() {
        for event in [
            SessionEvent::session_ended("s-1"),
            SessionEvent::license_ended("l-1"),
            SessionEvent::license_changed("l-1"),
            SessionEvent::user_ended("acc", "bob|the|builder"),
            SessionEvent::queue_changed_for("acc", "bob"),
        ] {
            assert_eq!(SessionEvent::decode(&event.encode()), Some(event));
        }
        assert_eq!(SessionEvent::decode("x|s|1"), None);
        assert_eq!(SessionEvent::decode("e|q|1"), None);
        assert_eq!(SessionEvent::decode("e|u|no-user"), None);
        assert_eq!(SessionEvent::decode(""), None);
    }

    #[tokio::test]
    async fn a_stream_is_woken_by_its_own_topics_only() {
        let hub = EventHub::new();
        let sub = hub.subscribe("s-1", "l-1", "acc", "bob");
        let other = hub.subscribe("s-2", "l-2", "acc", "carol");
        assert_eq!(hub.streams(), 2);

        hub.deliver(&SessionEvent::session_ended("s-2"));
        hub.deliver(&SessionEvent::license_ended("l-2"));
        hub.deliver(&SessionEvent::user_ended("acc", "carol"));
        hub.deliver(&SessionEvent::user_ended("other-acc", "bob"));
        assert_eq!(sub.changes(), Changes::default());

        // Raised before the stream waits: the wake-up is kept.
        hub.deliver(&SessionEvent::license_changed("l-1"));
        tokio::time::timeout(Duration::from_secs(1), sub.woken())
            .await
            .unwrap();
        let changes = sub.changes();
        assert!(changes.license_changed && !changes.ended && !changes.closed);
        assert_eq!(sub.changes(), Changes::default(), "taken once");

        hub.deliver(&SessionEvent::user_ended("acc", "bob"));
        assert!(sub.changes().ended);
        hub.deliver(&SessionEvent::queue_changed_for("acc", "bob"));
        let changes = sub.changes();
        assert!(changes.queue_changed && !changes.ended);
        hub.deliver(&SessionEvent::session_ended("s-1"));
        assert!(sub.changes().ended);
        assert!(other.changes().ended);
        drop(other);
        assert_eq!(hub.streams(), 1);
    }

    #[tokio::test]
    async fn closing_the_hub_ends_every_stream_even_later_ones() {
        let hub = EventHub::new();
        let sub = hub.subscribe("s-1", "l-1", "acc", "bob");
        hub.wake_all();
        assert!(sub.changes().ended);
        hub.close();
        tokio::time::timeout(Duration::from_secs(1), sub.woken())
            .await
            .unwrap();
        assert!(sub.changes().closed);
        let late = hub.subscribe("s-3", "l-1", "acc", "dan");
        assert!(late.changes().closed);
        drop(sub);
        drop(late);
        assert_eq!(hub.streams(), 0);
        assert!(hub.lock().by_key.is_empty(), "nothing left behind");
    }
}
