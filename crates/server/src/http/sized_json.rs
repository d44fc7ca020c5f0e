//! A JSON answer serialized into one buffer allocated at the size the caller expects, for the
//! seat path's answers: axum's `Json` starts at 128 bytes and grows the buffer as it writes
//! (an opened session with its lease is ~700 bytes: three reallocations and copies per open).
//! The body and its `content-type` are the ones `Json` gives.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::ApiError;

/// `value` as JSON; `capacity` is the expected size in bytes (a guess: a larger body grows).
pub struct SizedJson<T> {
    pub value: T,
    pub capacity: usize,
}

impl<T: Serialize> IntoResponse for SizedJson<T> {
    fn into_response(self) -> Response {
        let mut body = Vec::with_capacity(self.capacity);
        match serde_json::to_writer(&mut body, &self.value) {
            Ok(()) => (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response(),
            Err(e) => ApiError::Internal(format!("serializing the answer: {e}")).into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_body_and_type_as_json() {
        let value = serde_json::json!({"a": "x".repeat(300), "b": [1, 2, 3]});
        let sized = SizedJson {
            value: &value,
            capacity: 16,
        }
        .into_response();
        let plain = axum::Json(&value).into_response();
        assert_eq!(
            sized.headers().get(header::CONTENT_TYPE),
            plain.headers().get(header::CONTENT_TYPE)
        );
        let sized = axum::body::to_bytes(sized.into_body(), usize::MAX)
            .await
            .unwrap();
        let plain = axum::body::to_bytes(plain.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(sized, plain);
    }
}
