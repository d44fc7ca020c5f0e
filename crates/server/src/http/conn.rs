//! One connection, from accept to close: HTTP/1.1 or HTTP/2 (hyper's automatic choice, ALPN
//! under TLS), the request service in front of the router, and the watchdog that closes a
//! connection whose client is too slow or gone quiet.
//!
//! ```text
//!   accepted ──(first request's head within header_read_timeout, TLS handshake included)──┐
//!                                                                                          v
//!   idle ──(first byte of the next request)──> reading a head ──(head complete)──> busy (a handler runs:
//!     ^  \                                        \                                  no connection timeout;
//!     |   └─ idle_timeout: closed                  └─ header_read_timeout: closed    a body that does not
//!     |                                                                              come in body_read_timeout
//!     └───────────────────────────(every request answered)───────────────────────────  gets 408, see body.rs)
//! ```
//!
//! A *long-lived* answer (a response marked `LongLived`: a session's event stream) keeps its
//! request busy until its body ends, not only until its head is sent: the idle timeout never
//! cuts a stream, which sends keep-alive comments instead (`crate::events`).
//!
//! The watchdog is one timer per connection, re-armed only when it fires: a request costs two
//! clock reads and a few atomic operations, never an allocation or a timer registration (the
//! state lives in one `Arc` per connection). The reads it watches are counted below TLS, so
//! a handshake that trickles in is cut like a head that does.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::Response;
use axum::routing::future::RouteFuture;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::Service;

use crate::config::Limits;
use crate::http::body::TimedBody;
use crate::log_throttle::LogThrottle;
use crate::metrics as m;

/// "No head is being read."
const NONE: u64 = u64::MAX;

/// What the watchdog knows of a connection (see the module doc).
pub struct ConnWatch {
    accepted: Instant,
    /// Requests whose handler has not answered yet.
    busy: AtomicU32,
    /// No request has started yet.
    fresh: AtomicBool,
    /// Milliseconds since `accepted` when the last request was answered.
    idle_since: AtomicU64,
    /// Milliseconds since `accepted` of the first byte read while idle (`NONE`: none yet).
    head_started: AtomicU64,
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    HeaderTimeout,
    IdleTimeout,
}

impl Expiry {
    pub fn as_str(self) -> &'static str {
        match self {
            Expiry::HeaderTimeout => "header_timeout",
            Expiry::IdleTimeout => "idle_timeout",
        }
    }
}

impl ConnWatch {
    pub fn new() -> Arc<Self> {
        Arc::new(ConnWatch {
            accepted: Instant::now(),
            busy: AtomicU32::new(0),
            fresh: AtomicBool::new(true),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(NONE),
        })
    }

    fn ms(&self) -> u64 {
        self.accepted.elapsed().as_millis() as u64
    }

    pub fn accepted(&self) -> Instant {
        self.accepted
    }

    fn request_started(&self) {
        self.fresh.store(false, Ordering::Relaxed);
        self.busy.fetch_add(1, Ordering::Relaxed);
    }

    fn request_answered(&self) {
        if self.busy.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.head_started.store(NONE, Ordering::Relaxed);
            self.idle_since.store(self.ms(), Ordering::Relaxed);
        }
    }

    fn bytes_read(&self) {
        if self.busy.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == NONE
        {
            self.head_started.store(self.ms(), Ordering::Relaxed);
        }
    }

    /// When to look again, or why the connection must close now. Between two looks the state
    /// may change (a request ends, a head starts) and bring a deadline closer, so the watchdog
    /// looks at least every `min(header_read_timeout, idle_timeout)`: no deadline is ever
    /// enforced late.
    fn check(&self, limits: &Limits) -> Result<Instant, Expiry> {
        let header = limits.header_read_timeout.as_millis() as u64;
        let period = header.min(limits.idle_timeout.as_millis() as u64);
        let now = self.ms();
        let (deadline, expiry) = if self.busy.load(Ordering::Relaxed) > 0 {
            // A handler runs (it may wait for a seat for minutes): nothing to enforce now.
            (u64::MAX, Expiry::IdleTimeout)
        } else if self.fresh.load(Ordering::Relaxed) {
            (header, Expiry::HeaderTimeout)
        } else {
            match self.head_started.load(Ordering::Relaxed) {
                NONE => (
                    self.idle_since.load(Ordering::Relaxed)
                        + limits.idle_timeout.as_millis() as u64,
                    Expiry::IdleTimeout,
                ),
                started => (started + header, Expiry::HeaderTimeout),
            }
        };
        if now >= deadline {
            Err(expiry)
        } else {
            let next = deadline.min(now + period);
            Ok(self.accepted + Duration::from_millis(next))
        }
    }
}

pin_project! {
    /// The socket, with every read that brings bytes told to the watchdog.
    pub struct WatchedIo<T> {
        #[pin]
        inner: T,
        watch: Arc<ConnWatch>,
    }
}

impl<T> WatchedIo<T> {
    pub fn new(inner: T, watch: Arc<ConnWatch>) -> Self {
        WatchedIo { inner, watch }
    }
}

impl<T: AsyncRead> AsyncRead for WatchedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.watch.bytes_read();
        }
        result
    }
}

impl<T: AsyncWrite> AsyncWrite for WatchedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// The per-connection service in front of the router: counts the request for the watchdog,
/// puts the body-read timeout around the body and the client's address in the extensions.
#[derive(Clone)]
pub struct ConnService {
    router: Router,
    watch: Arc<ConnWatch>,
    peer: SocketAddr,
    body_read_timeout: Duration,
}

impl ConnService {
    pub fn new(
        router: Router,
        watch: Arc<ConnWatch>,
        peer: SocketAddr,
        body_read_timeout: Duration,
    ) -> Self {
        ConnService {
            router,
            watch,
            peer,
            body_read_timeout,
        }
    }
}

impl hyper::service::Service<hyper::Request<Incoming>> for ConnService {
    type Response = Response;
    type Error = Infallible;
    type Future = ConnFuture;

    fn call(&self, request: hyper::Request<Incoming>) -> ConnFuture {
        self.watch.request_started();
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(ConnectInfo(self.peer));
        let body = Body::new(TimedBody::new(body, self.body_read_timeout));
        // The router is always ready (axum documents it), so it is called without poll_ready,
        // as axum's own server does.
        let mut router = self.router.clone();
        ConnFuture {
            inner: router.call(hyper::Request::from_parts(parts, body)),
            answered: Some(Answered(self.watch.clone())),
        }
    }
}

/// Marks a response whose body is a long-lived stream: its request counts as busy until the
/// body ends (or the client goes away), so the idle timeout does not apply meanwhile.
#[derive(Debug, Clone, Copy)]
pub struct LongLived;

/// Tells the watchdog the request was answered, however its future ends (dropped included).
struct Answered(Arc<ConnWatch>);

impl Drop for Answered {
    fn drop(&mut self) {
        self.0.request_answered();
    }
}

pin_project! {
    /// The router's future, and the watchdog's note that ends with it (or, for a
    /// `LongLived` answer, with its body).
    pub struct ConnFuture {
        #[pin]
        inner: RouteFuture<Infallible>,
        answered: Option<Answered>,
    }
}

impl Future for ConnFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Poll::Ready(Ok(response)) = this.inner.poll(cx) else {
            return Poll::Pending;
        };
        if response.extensions().get::<LongLived>().is_none() {
            return Poll::Ready(Ok(response));
        }
        let Some(answered) = this.answered.take() else {
            return Poll::Ready(Ok(response));
        };
        let (parts, body) = response.into_parts();
        let body = Body::new(BusyBody {
            inner: body,
            _answered: answered,
        });
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}

pin_project! {
    /// A long-lived answer's body, holding its request busy until it is dropped.
    struct BusyBody {
        #[pin]
        inner: Body,
        _answered: Answered,
    }
}

impl http_body::Body for BusyBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves one connection until it ends, the watchdog closes it, or the server shuts down
/// (then in-flight requests finish and the connection closes).
pub async fn serve<I>(
    io: I,
    service: ConnService,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let watch = service.watch.clone();
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let first_look = watch.check(&limits).unwrap_or_else(|_| Instant::now());
    let timer = tokio::time::sleep_until(first_look);
    tokio::pin!(timer);
    let mut draining = *shutdown.borrow();
    if draining {
        connection.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = &mut timer => match watch.check(&limits) {
                Ok(next) => timer.as_mut().reset(next),
                Err(expiry) => {
                    note_expiry(expiry, &limits);
                    return;
                }
            },
            changed = shutdown.changed(), if !draining => {
                draining = true;
                if changed.is_ok() {
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Counts a connection the watchdog closed, and logs it (at most a line per period per kind):
/// header timeouts at warn (slow or abusive clients), idle timeouts at debug (routine).
pub fn note_expiry(expiry: Expiry, limits: &Limits) {
    static HEADER: LogThrottle = LogThrottle::new();
    static IDLE: LogThrottle = LogThrottle::new();
    m::connection_closed(expiry.as_str());
    match expiry {
        Expiry::HeaderTimeout => {
            if let Some(count) = HEADER.hit() {
                tracing::warn!(
                    count,
                    timeout_secs = limits.header_read_timeout.as_secs_f64(),
                    "closed connections that sent no complete request head in time (header_read_timeout; count since the last such line)"
                );
            }
        }
        Expiry::IdleTimeout => {
            if let Some(count) = IDLE.hit() {
                tracing::debug!(
                    count,
                    timeout_secs = limits.idle_timeout.as_secs_f64(),
                    "closed idle keep-alive connections (idle_timeout; count since the last such line)"
                );
            }
        }
    }
}

/// Counts a request whose body did not arrive in time, and logs it (throttled, at warn).
pub fn note_body_timeout() {
    static LOG: LogThrottle = LogThrottle::new();
    m::body_timeout();
    if let Some(count) = LOG.hit() {
        tracing::warn!(
            count,
            "answered 408 to requests whose body did not arrive in time (body_read_timeout; count since the last such line)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            ..Limits::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_has_the_header_timeout_from_accept() {
        let w = ConnWatch::new();
        let l = limits();
        assert_eq!(w.check(&l), Ok(w.accepted() + Duration::from_secs(10)));
        w.bytes_read();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(w.check(&l), Err(Expiry::HeaderTimeout));
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_is_never_expired_and_idles_once_answered() {
        let w = ConnWatch::new();
        let l = limits();
        w.request_started();
        tokio::time::advance(Duration::from_secs(300)).await;
        assert!(w.check(&l).is_ok(), "a handler may run for minutes");
        w.request_answered();
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(w.check(&l).is_ok());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(w.check(&l), Err(Expiry::IdleTimeout));
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_head_gets_the_header_timeout_from_its_first_byte() {
        let w = ConnWatch::new();
        let l = limits();
        w.request_started();
        w.request_answered();
        tokio::time::advance(Duration::from_secs(50)).await;
        w.bytes_read();
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(w.check(&l).is_ok());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(w.check(&l), Err(Expiry::HeaderTimeout));
    }
}
