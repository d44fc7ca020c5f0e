//! The cap on the request target: a path and query longer than `max_uri_bytes` is answered
//! 414 `uri_too_long` with the JSON error body, before any handler runs. (The head as a whole
//! is bounded by hyper's read buffer; bodies by `max_body_bytes`, see `body.rs`.)
//!
//! A tower layer with its own future type: no allocation per request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::error::ApiError;

/// Answers 414 for request targets longer than `max_bytes`.
#[derive(Debug, Clone, Copy)]
pub struct UriLimitLayer {
    pub max_bytes: usize,
}

impl<S> Layer<S> for UriLimitLayer {
    type Service = UriLimit<S>;

    fn layer(&self, inner: S) -> UriLimit<S> {
        UriLimit {
            inner,
            max_bytes: self.max_bytes,
        }
    }
}

#[derive(Debug, Clone)]
pub struct UriLimit<S> {
    inner: S,
    max_bytes: usize,
}

impl<S> Service<Request> for UriLimit<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = UriLimitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let target = request
            .uri()
            .path_and_query()
            .map_or(0, |pq| pq.as_str().len());
        if target > self.max_bytes {
            UriLimitFuture::Refused {
                response: Some(ApiError::UriTooLong(self.max_bytes).into_response()),
            }
        } else {
            UriLimitFuture::Inner {
                future: self.inner.call(request),
            }
        }
    }
}

pin_project! {
    #[project = UriLimitProj]
    pub enum UriLimitFuture<F> {
        Inner { #[pin] future: F },
        Refused { response: Option<Response> },
    }
}

impl<F, E> Future for UriLimitFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            UriLimitProj::Inner { future } => future.poll(cx),
            UriLimitProj::Refused { response } => {
                Poll::Ready(Ok(response.take().unwrap_or_default()))
            }
        }
    }
}
