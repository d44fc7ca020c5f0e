//! The tokio runtime behind a client handle. The SDK is async; C callers are not, so each
//! `leasehold_client` owns a small multi-threaded runtime (one worker: heartbeats and timers
//! are all it runs) and every blocking entry point drives its future with [`Runtime::block_on`]
//! on the caller's thread. Seats share the runtime (an `Arc`), so a seat keeps heartbeating
//! after its client handle was freed, and the runtime stops with the last handle.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;

use crate::callback::Dispatcher;
use crate::error::{Failure, LeaseholdResult};

/// A runtime shared by a client handle and its seats, and the thread that runs their
/// callbacks (started on first use).
pub(crate) struct Runtime {
    /// `None` only while dropping.
    rt: Option<tokio::runtime::Runtime>,
    dispatcher: Mutex<Option<Dispatcher>>,
}

impl Runtime {
    pub(crate) fn new() -> Result<Arc<Runtime>, Failure> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("leasehold-runtime")
            .enable_all()
            .build()
            .map_err(|e| {
                Failure::new(
                    LeaseholdResult::Internal,
                    format!("cannot start the library's runtime: {e}"),
                )
            })?;
        Ok(Arc::new(Runtime {
            rt: Some(rt),
            dispatcher: Mutex::new(None),
        }))
    }

    fn rt(&self) -> Result<&tokio::runtime::Runtime, Failure> {
        self.rt
            .as_ref()
            .ok_or_else(|| Failure::new(LeaseholdResult::Internal, "the runtime has stopped"))
    }

    pub(crate) fn handle(&self) -> Result<&Handle, Failure> {
        Ok(self.rt()?.handle())
    }

    /// Runs `future` to completion, blocking the calling thread.
    ///
    /// From a thread that is already inside a tokio runtime (a Rust caller's own, say),
    /// `Runtime::block_on` would panic; the future then runs on a short-lived helper thread
    /// while this one waits.
    pub(crate) fn block_on<F>(&self, future: F) -> Result<F::Output, Failure>
    where
        F: Future + Send,
        F::Output: Send,
    {
        let rt = self.rt()?;
        if Handle::try_current().is_err() {
            return Ok(rt.block_on(future));
        }
        std::thread::scope(|scope| {
            let helper = std::thread::Builder::new()
                .name("leasehold-block-on".into())
                .spawn_scoped(scope, || rt.block_on(future))
                .map_err(|e| {
                    Failure::new(
                        LeaseholdResult::Internal,
                        format!("cannot start a thread: {e}"),
                    )
                })?;
            match helper.join() {
                Ok(output) => Ok(output),
                // Re-raised here, caught by the entry point's `boundary`.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// The callback thread's id, if it was started.
    pub(crate) fn dispatcher_thread(&self) -> Option<std::thread::ThreadId> {
        self.dispatcher
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .map(Dispatcher::thread)
    }

    /// The callback thread, started on first use.
    pub(crate) fn dispatcher(&self) -> Result<Dispatcher, Failure> {
        let mut slot = self
            .dispatcher
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(dispatcher) = slot.as_ref() {
            return Ok(dispatcher.clone());
        }
        let dispatcher = Dispatcher::start()?;
        *slot = Some(dispatcher.clone());
        Ok(dispatcher)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            if Handle::try_current().is_ok() {
                // Dropping a runtime from inside a runtime panics; let it wind down alone.
                rt.shutdown_background();
            } else {
                drop(rt);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_on_works_from_plain_threads_and_from_inside_another_runtime() {
        let runtime = Runtime::new().unwrap();
        assert_eq!(runtime.block_on(async { 1 + 1 }).unwrap(), 2);
        let outer = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let inner = runtime.clone();
        let answer = outer.block_on(async move { inner.block_on(async { 40 + 2 }).unwrap() });
        assert_eq!(answer, 42);
        // The last handle dropped inside a runtime does not panic.
        outer.block_on(async move { drop(runtime) });
    }
}
