//! Seat callbacks: a C function called once, when a seat leaves the active state (lost, with
//! its reason, or released).
//!
//! Callbacks never run on a runtime thread or under a lock of the library: a watcher task per
//! registration waits for the seat's status to become final and sends an event to one
//! dispatcher thread per runtime, which calls the function with no lock held. So a callback may
//! call any function of the library, the seat's own `leasehold_seat_release` and
//! `leasehold_seat_free` included. A [`CallbackSlot`] holds the registration; cancelling it
//! (when the seat is freed) waits for a callback that is running on another thread, so that
//! none runs after `leasehold_seat_free` returns.

use std::ffi::{c_char, c_void, CString};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;

use leasehold_client::LeaseStatus;
use tokio::sync::watch;

use crate::error::{c_string_lossy, Failure, LeaseholdResult};
use crate::seat::LeaseholdSeatState;

/// Called once when the seat leaves the active state: `state` is `LEASEHOLD_SEAT_STATE_LOST` or
/// `LEASEHOLD_SEAT_STATE_RELEASED`; `reason` says why a seat was lost (NULL when it was
/// released) and is valid only during the call (copy it to keep it). Runs on a thread of the
/// library, never on the thread that registered it.
pub type LeaseholdSeatCallback = Option<
    unsafe extern "C" fn(user_data: *mut c_void, state: LeaseholdSeatState, reason: *const c_char),
>;

/// The caller's `user_data`, handed back on the callback thread. The caller promises it may be
/// used from that thread.
#[derive(Clone, Copy)]
struct UserData(*mut c_void);
// SAFETY: the documentation of `leasehold_seat_set_callback` makes it the caller's promise.
unsafe impl Send for UserData {}

#[derive(Clone, Copy)]
struct Registered {
    function: unsafe extern "C" fn(*mut c_void, LeaseholdSeatState, *const c_char),
    user_data: UserData,
}

#[derive(Default)]
struct SlotState {
    callback: Option<Registered>,
    /// Bumped by each registration; an event of an older one is dropped.
    generation: u64,
    /// A callback of this slot is running on the dispatcher thread.
    running: bool,
    /// The seat is being freed: no callback may start any more.
    cancelled: bool,
}

/// The callback registration of one seat.
#[derive(Default)]
pub(crate) struct CallbackSlot {
    state: Mutex<SlotState>,
    idle: Condvar,
}

impl CallbackSlot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers `callback` (or removes the registration with `None`); answers the generation
    /// the watcher of a new registration must carry.
    fn set(
        &self,
        callback: LeaseholdSeatCallback,
        user_data: *mut c_void,
    ) -> Result<Option<u64>, Failure> {
        let mut state = self.lock();
        if state.cancelled {
            return Err(Failure::invalid("the seat is being freed"));
        }
        state.generation = state.generation.wrapping_add(1);
        state.callback = callback.map(|function| Registered {
            function,
            user_data: UserData(user_data),
        });
        Ok(state.callback.is_some().then_some(state.generation))
    }

    /// No callback starts after this returns, and none is running on another thread.
    pub(crate) fn cancel(&self, dispatcher_thread: Option<ThreadId>) {
        let mut state = self.lock();
        state.cancelled = true;
        state.callback = None;
        if dispatcher_thread == Some(std::thread::current().id()) {
            // Called from a callback: the one running is up this thread's stack.
            return;
        }
        while state.running {
            state = self
                .idle
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

/// A final status on its way to the dispatcher thread.
struct Event {
    slot: Arc<CallbackSlot>,
    generation: u64,
    state: LeaseholdSeatState,
    reason: Option<CString>,
}

/// The thread that calls the callbacks of one runtime's seats, one at a time.
#[derive(Clone)]
pub(crate) struct Dispatcher {
    events: mpsc::Sender<Event>,
    thread: ThreadId,
}

impl Dispatcher {
    /// Starts the thread; it ends when the runtime and every watcher are gone.
    pub(crate) fn start() -> Result<Dispatcher, Failure> {
        let (events, inbox) = mpsc::channel::<Event>();
        let thread = std::thread::Builder::new()
            .name("leasehold-callbacks".into())
            .spawn(move || {
                for event in inbox {
                    dispatch(event);
                }
            })
            .map_err(|e| {
                Failure::new(
                    LeaseholdResult::Internal,
                    format!("cannot start the callback thread: {e}"),
                )
            })?;
        Ok(Dispatcher {
            events,
            thread: thread.thread().id(),
        })
    }

    pub(crate) fn thread(&self) -> ThreadId {
        self.thread
    }

    /// Registers `callback` on `slot` and, if there is one, starts the task that waits for
    /// `status` to become final (at once when it already is).
    pub(crate) fn register(
        &self,
        runtime: &tokio::runtime::Handle,
        slot: &Arc<CallbackSlot>,
        status: watch::Receiver<LeaseStatus>,
        callback: LeaseholdSeatCallback,
        user_data: *mut c_void,
    ) -> Result<(), Failure> {
        let Some(generation) = slot.set(callback, user_data)? else {
            return Ok(());
        };
        let events = self.events.clone();
        let slot = slot.clone();
        runtime.spawn(async move {
            let status = final_status(status).await;
            let (state, reason) = crate::seat::describe(&status);
            let event = Event {
                slot,
                generation,
                state,
                reason: reason.map(|r| c_string_lossy(&r)),
            };
            // The dispatcher only stops once every sender is gone, this one included.
            let _ = events.send(event);
        });
        Ok(())
    }
}

/// Waits until the status is no longer `Active` and answers it.
async fn final_status(mut status: watch::Receiver<LeaseStatus>) -> LeaseStatus {
    loop {
        let now = status.borrow_and_update().clone();
        if !now.is_active() {
            return now;
        }
        if status.changed().await.is_err() {
            // The guard is gone; it always publishes a final status first.
            let last = status.borrow().clone();
            return if last.is_active() {
                LeaseStatus::Released
            } else {
                last
            };
        }
    }
}

fn dispatch(event: Event) {
    let registered = {
        let mut state = event.slot.lock();
        if state.cancelled || state.generation != event.generation {
            return;
        }
        let Some(registered) = state.callback.take() else {
            return;
        };
        state.running = true;
        registered
    };
    let reason = event
        .reason
        .as_ref()
        .map_or(std::ptr::null(), |r| r.as_ptr());
    // SAFETY: the function and its user data were registered by the caller for this call;
    // `reason` outlives the call.
    unsafe { (registered.function)(registered.user_data.0, event.state, reason) };
    event.slot.lock().running = false;
    event.slot.idle.notify_all();
}
