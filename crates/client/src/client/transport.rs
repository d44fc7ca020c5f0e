//! Sending requests: a route's path and body become a [`Request`], which is sent with the
//! client's credentials (a refused service-user token is renewed once) and retried per the
//! [`RetryPolicy`](crate::RetryPolicy): on transport errors (any, for idempotent requests;
//! only failed connects otherwise) and on 503, with backoff. A 2xx answer comes back as its
//! status and body, anything else as a [`ClientError`].

use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::auth::Auth;
use super::Client;
use crate::error::{error_chain, ClientError, Result};

/// One request as the retry loop sees it: everything needed to send it again.
pub(super) struct Request {
    pub(super) method: Method,
    pub(super) url: Url,
    pub(super) body: Body,
    /// Sending it twice has the same effect as once, so it may be retried after any
    /// transport error (not only a failed connect).
    pub(super) idempotent: bool,
    /// Send the client's credentials.
    pub(super) authenticated: bool,
    pub(super) timeout: Duration,
}

/// The body of a request.
pub(super) enum Body {
    Empty,
    Json(Vec<u8>),
    Form(Vec<(&'static str, String)>),
}

impl Client {
    /// The URL of `segments` under the base URL, each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> Result<Url> {
        let mut url = self.inner.base.clone();
        {
            let mut path = url.path_segments_mut().map_err(|()| {
                ClientError::Config(format!("base URL {} cannot have a path", self.inner.base))
            })?;
            path.pop_if_empty().extend(segments);
        }
        Ok(url)
    }

    pub(super) fn request(&self, method: Method, segments: &[&str]) -> Result<Request> {
        let idempotent = method != Method::POST;
        Ok(Request {
            method,
            url: self.url(segments)?,
            body: Body::Empty,
            idempotent,
            authenticated: true,
            timeout: self.inner.timeout,
        })
    }

    pub(super) fn json_request<B: Serialize + ?Sized>(
        &self,
        method: Method,
        segments: &[&str],
        body: &B,
        idempotent: bool,
    ) -> Result<Request> {
        let json = serde_json::to_vec(body)
            .map_err(|e| ClientError::Config(format!("cannot encode the request body: {e}")))?;
        let mut request = self.request(method, segments)?;
        request.body = Body::Json(json);
        request.idempotent = idempotent;
        Ok(request)
    }

    /// Sends the request and decodes the JSON answer.
    pub(super) async fn call<T: DeserializeOwned>(&self, request: Request) -> Result<T> {
        self.call_with_status(request).await.map(|(_, value)| value)
    }

    /// [`Client::call`], also answering the (2xx) status, for routes where it carries meaning
    /// (201 created or 200 already there).
    pub(super) async fn call_with_status<T: DeserializeOwned>(
        &self,
        request: Request,
    ) -> Result<(StatusCode, T)> {
        let what = format!("{} {}", request.method, request.url.path());
        let answer = self.execute(request).await?;
        Ok((answer.status, decode(&what, &answer.body)?))
    }

    /// Sends the request with credentials; a service user whose token is refused (401) gets
    /// one new token and one more try.
    pub(super) async fn execute(&self, request: Request) -> Result<Answer> {
        if !request.authenticated {
            return self.execute_with(&request, None).await;
        }
        let token = self.access_token(None).await?;
        match self.execute_with(&request, token.as_deref()).await {
            Err(err @ ClientError::Api { status: 401, .. }) => {
                let Auth::ClientCredentials(_) = &self.inner.auth else {
                    return Err(err);
                };
                tracing::debug!("access token refused, obtaining a new one");
                let token = self.access_token(token.as_deref()).await?;
                self.execute_with(&request, token.as_deref()).await
            }
            other => other,
        }
    }

    /// Sends the request, retrying per the policy. Answers the status and body of a 2xx answer.
    pub(super) async fn execute_with(
        &self,
        request: &Request,
        token: Option<&str>,
    ) -> Result<Answer> {
        let policy = &self.inner.retry;
        let attempts = policy.attempts();
        let mut attempt = 1;
        loop {
            let failure = match self.send_once(request, token).await {
                Ok(answer) => return Ok(answer),
                Err(failure) => failure,
            };
            let retry_after = match &failure {
                Failure::Status {
                    status,
                    retry_after,
                    ..
                } if *status == StatusCode::SERVICE_UNAVAILABLE => *retry_after,
                Failure::Transport {
                    retryable: true, ..
                } => None,
                _ => return Err(failure.into_error()),
            };
            if attempt >= attempts {
                return Err(failure.into_error());
            }
            let wait = policy.backoff_after(attempt, retry_after);
            tracing::debug!(
                method = %request.method,
                path = request.url.path(),
                attempt,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                error = %failure,
                "retrying"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// One try: sends the request and reads the whole answer.
    async fn send_once(
        &self,
        request: &Request,
        token: Option<&str>,
    ) -> std::result::Result<Answer, Failure> {
        let mut builder = self
            .inner
            .http
            .request(request.method.clone(), request.url.clone())
            .timeout(request.timeout)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(token) = token {
            builder = builder.bearer_auth(token);
        }
        builder = match &request.body {
            Body::Empty => builder,
            Body::Json(json) => builder
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(json.clone()),
            Body::Form(pairs) => builder.form(pairs),
        };
        let response = builder.send().await.map_err(|e| Failure::Transport {
            // A connect error means the request never left; anything later may have reached
            // the server, so only idempotent requests are sent again.
            retryable: !e.is_builder()
                && !e.is_redirect()
                && (e.is_connect() || request.idempotent),
            message: error_chain(&e),
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response
            .bytes()
            .await
            .map_err(|e| Failure::Transport {
                retryable: request.idempotent,
                message: error_chain(&e),
            })?
            .to_vec();
        if status.is_success() {
            Ok(Answer { status, body })
        } else {
            Err(Failure::Status {
                status,
                body,
                retry_after,
            })
        }
    }
}

/// Decodes a JSON answer; `what` names the call in the error.
pub(super) fn decode<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| ClientError::Decode(format!("{what}: {e}")))
}

/// A 2xx answer: its status and body.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) body: Vec<u8>,
}

/// One failed try, before it becomes a [`ClientError`].
enum Failure {
    Transport {
        retryable: bool,
        message: String,
    },
    Status {
        status: StatusCode,
        body: Vec<u8>,
        retry_after: Option<Duration>,
    },
}

impl Failure {
    fn into_error(self) -> ClientError {
        match self {
            Failure::Transport { message, .. } => ClientError::Transport(message),
            Failure::Status { status, body, .. } => {
                ClientError::from_response(status.as_u16(), &body)
            }
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transport { message, .. } => f.write_str(message),
            Failure::Status { status, .. } => write!(f, "HTTP {status}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_joined_under_the_base_and_segments_are_encoded() {
        let client = Client::new("http://localhost:8080").unwrap();
        let url = client
            .url(&["v1", "licenses", "lic 1/../x", "sessions"])
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://localhost:8080/v1/licenses/lic%201%2F..%2Fx/sessions"
        );
        let client = Client::new("http://localhost:8080/lh/").unwrap();
        assert_eq!(
            client.url(&["healthz"]).unwrap().as_str(),
            "http://localhost:8080/lh/healthz"
        );
        let client = Client::new("http://localhost:8080/lh").unwrap();
        assert_eq!(
            client.url(&["healthz"]).unwrap().as_str(),
            "http://localhost:8080/lh/healthz"
        );
    }
}
