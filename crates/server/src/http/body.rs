//! Request bodies: the body-read timeout (`TimedBody`, put around every request's body by the
//! accept loop) and reading a whole body under the size limit, with each failure named
//! (`BodyError`: too large, too slow, broken).
//!
//! The timeout costs nothing while the body is already there: its timer is only armed the first
//! time the body is polled and has no data ready, so a small body that came with the headers
//! (every request of the seat protocol) never touches the timer wheel. Armed, it bounds the
//! whole rest of the body (a client trickling a byte a second is cut just the same).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{sleep_until, Instant, Sleep};

use crate::error::ApiError;

/// The error a `TimedBody` ends with when its data did not come in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} s", .0.as_secs())]
pub struct BodyTimedOut(pub Duration);

pin_project! {
    /// A request body that fails with `BodyTimedOut` when the rest of it does not arrive within
    /// `timeout` of the first poll that found nothing to read.
    pub struct TimedBody<B> {
        #[pin]
        inner: B,
        timeout: Duration,
        #[pin]
        deadline: Option<Sleep>,
    }
}

impl<B> TimedBody<B> {
    pub fn new(inner: B, timeout: Duration) -> Self {
        TimedBody {
            inner,
            timeout,
            deadline: None,
        }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                if this.deadline.as_mut().as_pin_mut().is_none() {
                    this.deadline
                        .set(Some(sleep_until(Instant::now() + *this.timeout)));
                }
                let expired = this
                    .deadline
                    .as_pin_mut()
                    .is_some_and(|deadline| deadline.poll(cx).is_ready());
                if expired {
                    crate::http::conn::note_body_timeout();
                    Poll::Ready(Some(Err(Box::new(BodyTimedOut(*this.timeout)))))
                } else {
                    Poll::Pending
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    TooLarge(usize),
    TimedOut(Duration),
    /// The connection broke or sent something that is not HTTP body framing.
    Broken(String),
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge(limit) => ApiError::PayloadTooLarge(limit),
            BodyError::TimedOut(after) => ApiError::RequestTimeout(after.as_secs()),
            BodyError::Broken(why) => {
                ApiError::BadRequest(format!("the request body could not be read: {why}"))
            }
        }
    }
}

/// Reads the whole body, refusing more than `limit` bytes.
pub async fn read_limited(body: axum::body::Body, limit: usize) -> Result<Bytes, BodyError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let inner = e.into_inner();
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&*inner);
        while let Some(cause) = source {
            if cause
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return BodyError::TooLarge(limit);
            }
            if let Some(BodyTimedOut(after)) = cause.downcast_ref::<BodyTimedOut>() {
                return BodyError::TimedOut(*after);
            }
            source = cause.source();
        }
        BodyError::Broken(inner.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_that_is_there_is_read_without_a_timer() {
        let body = TimedBody::new(
            http_body_util::Full::new(Bytes::from_static(b"{}")),
            Duration::from_millis(1),
        );
        let body = axum::body::Body::new(body);
        assert_eq!(
            read_limited(body, 10).await.unwrap(),
            Bytes::from_static(b"{}")
        );
    }

    /// A body whose data never comes.
    struct Silent;

    impl Body for Silent {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_body_that_does_not_come_times_out() {
        let body = axum::body::Body::new(TimedBody::new(Silent, Duration::from_millis(20)));
        match read_limited(body, 10).await {
            Err(BodyError::TimedOut(after)) => assert_eq!(after, Duration::from_millis(20)),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn too_large_bodies_are_named() {
        let body = axum::body::Body::from(vec![b'x'; 11]);
        assert!(matches!(
            read_limited(body, 10).await,
            Err(BodyError::TooLarge(10))
        ));
    }
}
