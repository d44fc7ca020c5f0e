//! A session's event stream (`GET /v1/sessions/{id}/events`, Server-Sent Events): the request,
//! the reading of `text/event-stream`, and the events as types. [`LeaseGuard`](crate::LeaseGuard)
//! subscribes by itself; this is the route for applications that drive sessions by hand.

use std::time::Duration;

use leasehold_proto::{stream_events, LicenseChanged, QueueList, StreamEnded, StreamOpened};
use reqwest::{Method, StatusCode};

use super::Client;
use crate::error::{error_chain, ClientError, Result};

/// An event of a session's stream.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionStreamEvent {
    /// The stream is live and watching the session.
    Opened(StreamOpened),
    /// The license's terms changed (heartbeat cadence, seats, validity...).
    LicenseChanged(LicenseChanged),
    /// The session owner's own waiting requests in the license's queue moved (positions, and
    /// the queue's length); an empty list once none waits any more.
    Queue(QueueList),
    /// The session ended (`reason` is `revoked` for an admin's revoke). The last event.
    Ended(StreamEnded),
}

/// An open event stream of one session. Read it with [`SessionEvents::next`].
#[derive(Debug)]
pub struct SessionEvents {
    response: reqwest::Response,
    parser: SseParser,
    /// Events read but not yet returned.
    ready: std::collections::VecDeque<(String, String)>,
}

impl Client {
    /// `GET /v1/sessions/{id}/events`: opens the session's event stream (the session owner's
    /// credentials). Fails with 410 [`session_ended`](leasehold_proto::ErrorCode::SessionEnded)
    /// when the session has already ended, and with [`ClientError::Decode`] when the answer is
    /// not an event stream (a proxy that does not pass streams through, say). Not retried:
    /// the caller decides when to try again.
    pub async fn session_events(&self, session_id: &str) -> Result<SessionEvents> {
        let token = self.access_token(None).await?;
        match self.open_events(session_id, token.as_deref()).await {
            // A service user's access token refused: one new token, one more try (as every
            // other call does).
            Err(ClientError::Api { status: 401, .. })
                if matches!(self.inner.auth, super::auth::Auth::ClientCredentials(_)) =>
            {
                let token = self.access_token(token.as_deref()).await?;
                self.open_events(session_id, token.as_deref()).await
            }
            other => other,
        }
    }

    async fn open_events(&self, session_id: &str, token: Option<&str>) -> Result<SessionEvents> {
        let request = self.request(Method::GET, &["v1", "sessions", session_id, "events"])?;
        // No total timeout: the answer lasts as long as the session. Only the connect is
        // bounded (the client's connect timeout); the caller bounds the gaps between reads.
        let mut builder = self
            .inner
            .http
            .request(request.method.clone(), request.url.clone())
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(token) = token {
            builder = builder.bearer_auth(token);
        }
        let response = tokio::time::timeout(self.inner.timeout, builder.send())
            .await
            .map_err(|_| ClientError::Transport("no answer to the event stream request".into()))?
            .map_err(|e| ClientError::Transport(error_chain(&e)))?;
        let status = response.status();
        if status != StatusCode::OK {
            let body = tokio::time::timeout(self.inner.timeout, response.bytes())
                .await
                .ok()
                .and_then(|b| b.ok())
                .unwrap_or_default();
            return Err(ClientError::from_response(status.as_u16(), &body));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !content_type.starts_with("text/event-stream") {
            return Err(ClientError::Decode(format!(
                "GET {}: not an event stream (content type {content_type:?})",
                request.url.path()
            )));
        }
        Ok(SessionEvents {
            response,
            parser: SseParser::default(),
            ready: Default::default(),
        })
    }
}

impl SessionEvents {
    /// The next event; `None` when the server ended the stream. Keep-alive comments are read
    /// and skipped; unknown events are skipped. Waits as long as the stream is quiet: bound
    /// the wait with a timeout longer than the server's keep-alive period (15 s by default).
    pub async fn next(&mut self) -> Result<Option<SessionStreamEvent>> {
        loop {
            while let Some((name, data)) = self.ready.pop_front() {
                if let Some(event) = decode_event(&name, &data)? {
                    return Ok(Some(event));
                }
            }
            let chunk = self
                .response
                .chunk()
                .await
                .map_err(|e| ClientError::Transport(error_chain(&e)))?;
            match chunk {
                Some(bytes) => self.ready.extend(self.parser.push(&bytes)),
                None => return Ok(None),
            }
        }
    }

    /// [`SessionEvents::next`], failing with a transport error when nothing at all (not even a
    /// keep-alive comment) arrives within `quiet`.
    pub async fn next_within(&mut self, quiet: Duration) -> Result<Option<SessionStreamEvent>> {
        loop {
            if let Some((name, data)) = self.ready.pop_front() {
                if let Some(event) = decode_event(&name, &data)? {
                    return Ok(Some(event));
                }
                continue;
            }
            let chunk = tokio::time::timeout(quiet, self.response.chunk())
                .await
                .map_err(|_| {
                    ClientError::Transport(format!(
                        "the event stream was quiet for {} s",
                        quiet.as_secs()
                    ))
                })?
                .map_err(|e| ClientError::Transport(error_chain(&e)))?;
            match chunk {
                Some(bytes) => self.ready.extend(self.parser.push(&bytes)),
                None => return Ok(None),
            }
        }
    }
}

/// An event by its name; `None` for names this version does not know.
fn decode_event(name: &str, data: &str) -> Result<Option<SessionStreamEvent>> {
    let bad = |e: serde_json::Error| ClientError::Decode(format!("event {name}: {e}"));
    Ok(Some(match name {
        stream_events::OPEN => SessionStreamEvent::Opened(serde_json::from_str(data).map_err(bad)?),
        stream_events::LICENSE_CHANGED => {
            SessionStreamEvent::LicenseChanged(serde_json::from_str(data).map_err(bad)?)
        }
        stream_events::QUEUE => SessionStreamEvent::Queue(serde_json::from_str(data).map_err(bad)?),
        stream_events::REVOKED | stream_events::ENDED => {
            SessionStreamEvent::Ended(serde_json::from_str(data).map_err(bad)?)
        }
        _ => return Ok(None),
    }))
}

/// Reads `text/event-stream` (the WHATWG rules this protocol needs: `event` and `data` fields,
/// comments, events dispatched by a blank line, LF or CRLF line ends, chunks split anywhere).
#[derive(Debug, Default)]
struct SseParser {
    /// Bytes of a line not complete yet.
    partial: Vec<u8>,
    event: String,
    data: Vec<String>,
}

impl SseParser {
    /// Feeds a chunk; answers the events (name, data) it completed.
    fn push(&mut self, chunk: &[u8]) -> Vec<(String, String)> {
        let mut done = Vec::new();
        self.partial.extend_from_slice(chunk);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.partial.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                if !self.data.is_empty() {
                    let name = match std::mem::take(&mut self.event) {
                        name if name.is_empty() => "message".to_owned(),
                        name => name,
                    };
                    done.push((name, std::mem::take(&mut self.data).join("\n")));
                }
                self.event.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (&*line, ""),
            };
            match field {
                "event" => self.event = value.to_owned(),
                "data" => self.data.push(value.to_owned()),
                _ => {}
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_across_chunks_comments_and_line_ends() {
        let mut p = SseParser::default();
        assert!(p.push(b": keep-alive\n\nevent: op").is_empty());
        assert!(p.push(b"en\r\ndata: {\"a\":").is_empty());
        assert_eq!(
            p.push(b"1}\r\n\r\ndata:x\ndata: y\n\n"),
            vec![
                ("open".to_owned(), "{\"a\":1}".to_owned()),
                ("message".to_owned(), "x\ny".to_owned())
            ]
        );
        // A name without data dispatches nothing; the next event starts clean.
        assert!(p.push(b"event: lonely\n\ndata: z\n\n") == vec![("message".into(), "z".into())]);
    }

    #[test]
    fn events_decode_by_name_and_unknown_ones_are_skipped() {
        let ended = decode_event("revoked", r#"{"session_id":"s","reason":"revoked"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            ended,
            SessionStreamEvent::Ended(StreamEnded {
                session_id: "s".into(),
                reason: leasehold_proto::EndReason::Revoked
            })
        );
        assert_eq!(decode_event("a_later_event", "{}").unwrap(), None);
        assert_eq!(
            decode_event("queue", r#"{"waiting":[],"length":2}"#).unwrap(),
            Some(SessionStreamEvent::Queue(QueueList {
                waiting: vec![],
                length: 2
            }))
        );
        assert!(matches!(
            decode_event("ended", "{"),
            Err(ClientError::Decode(_))
        ));
    }
}
