//! The accept loop: takes TCP connections (TLS on top when configured), holds at most
//! `max_connections` open, and hands each to `conn::serve`; on shutdown it stops accepting,
//! lets open connections finish their requests, and returns once all are closed.
//!
//! At the cap, a new connection is closed as soon as it is accepted (the client sees the
//! close at once instead of hanging in the kernel's backlog), counted and logged (throttled).
//! The cap is kept below the process's file descriptor limit, which is raised to its hard
//! limit at start: running out of descriptors would stop the server from opening files and
//! database connections too.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::Limits;
use crate::http::conn::{self, ConnService, ConnWatch, WatchedIo};
use crate::http::tls::Tls;
use crate::log_throttle::LogThrottle;
use crate::metrics as m;

/// File descriptors kept for everything but client connections (database, log, key files).
const RESERVED_FDS: usize = 256;

/// Serves `router` on `listener` until `shutdown` resolves and every connection has closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<Arc<Tls>>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let cap = u32::try_from(limits.max_connections).unwrap_or(u32::MAX >> 3);
    let permits = Arc::new(Semaphore::new(cap as usize));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refuse(cap);
            drop(stream);
            continue;
        };
        // Answers are written whole; do not hold their last segment back (Nagle).
        let _ = stream.set_nodelay(true);
        let watch = ConnWatch::new();
        let service = ConnService::new(
            router.clone(),
            watch.clone(),
            peer,
            limits.body_read_timeout,
        );
        let io = WatchedIo::new(stream, watch.clone());
        let tls = tls.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            m::connections_open(1.0);
            match tls {
                None => conn::serve(io, service, limits, stop).await,
                Some(tls) => {
                    let deadline = watch.accepted() + limits.header_read_timeout;
                    match tokio::time::timeout_at(deadline, tls.acceptor().accept(io)).await {
                        Ok(Ok(stream)) => conn::serve(stream, service, limits, stop).await,
                        Ok(Err(e)) => handshake_failed(&e),
                        Err(_) => conn::note_expiry(conn::Expiry::HeaderTimeout, &limits),
                    }
                }
            }
            m::connections_open(-1.0);
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a permit until it is closed.
    let _ = permits.acquire_many(cap).await;
}

fn refuse(cap: u32) {
    static LOG: LogThrottle = LogThrottle::new();
    m::connection_refused();
    if let Some(count) = LOG.hit() {
        tracing::warn!(
            count,
            max_connections = cap,
            "connection limit reached: closed new connections at once (count since the last such line)"
        );
    }
}

fn handshake_failed(e: &io::Error) {
    static LOG: LogThrottle = LogThrottle::new();
    m::connection_closed("tls_handshake");
    if let Some(count) = LOG.hit() {
        tracing::debug!(count, error = %e, "TLS handshakes failed (count since the last such line)");
    }
}

/// A failed accept: a connection reset before it was taken is nothing; anything else (out of
/// file descriptors) is logged and the loop pauses, so it does not spin.
async fn accept_error(e: io::Error) {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset | Interrupted
    ) {
        return;
    }
    static LOG: LogThrottle = LogThrottle::new();
    if let Some(count) = LOG.hit() {
        tracing::error!(count, error = %e, "accepting connections failed; pausing 100 ms");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Raises the soft limit of open files to the hard limit, and keeps `max_connections` below
/// it (with `RESERVED_FDS` to spare); says so when it has to lower it.
pub fn fit_to_descriptor_limit(limits: &mut Limits) {
    let Some(available) = raise_fd_limit() else {
        return;
    };
    let most = usize::try_from(available)
        .unwrap_or(usize::MAX)
        .saturating_sub(RESERVED_FDS)
        .max(1);
    if limits.max_connections > most {
        tracing::warn!(
            configured = limits.max_connections,
            used = most,
            fd_limit = available,
            "max_connections lowered to fit the open-file limit (raise it with ulimit -n or LimitNOFILE)"
        );
        limits.max_connections = most;
    }
}

/// The soft limit of open files after raising it to the hard limit (unix).
#[cfg(unix)]
fn raise_fd_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the plain struct given to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is u64 here, not on every unix
    Some(limit.rlim_cur as u64)
}

#[cfg(not(unix))]
fn raise_fd_limit() -> Option<u64> {
    None
}
