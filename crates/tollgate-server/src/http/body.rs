//! Request bodies: content type, the 64 KiB limit, the time allowed to send them, and JSON
//! parsing — replacing axum's plain-text rejections with the API's JSON errors.

use std::time::Duration;

use ::http::{HeaderMap, header};
use bytes::Bytes;
use bytes::BytesMut;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Deserialize;

use super::error::ApiError;
use crate::metrics::ErrorCode;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Time allowed for a request's body to arrive once its head has: a client that announces a
/// body and sends it slowly, or never, must not hold a connection and a task forever.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// An over-limit body up to this size is read and discarded before the 413 is sent: a server
/// that answers and closes while the client is still sending makes the client's kernel see a
/// reset, and the client often loses the 413 itself. Larger bodies are not worth the bandwidth.
const MAX_DRAIN_BYTES: u64 = 8 * 1024 * 1024;
/// And draining never takes longer than this.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Read a JSON request body: 415 unless the content type is JSON (or absent), 413 over
/// [`MAX_BODY_BYTES`], 408 when it takes longer than [`BODY_TIMEOUT`], 400 if the client stops
/// mid-body.
pub async fn read_json(headers: &HeaderMap, body: Incoming) -> Result<Bytes, ApiError> {
    if let Some(content_type) = headers.get(header::CONTENT_TYPE)
        && !is_json(content_type.as_bytes())
    {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "expected Content-Type: application/json, got {:?}",
                String::from_utf8_lossy(content_type.as_bytes())
            ),
        ));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        // A client waiting for `100 Continue` has sent nothing yet: answer without asking for
        // the body. Otherwise the body is on its way; take it off the wire if it is not huge.
        let expects_continue = headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if !expects_continue && declared.is_some_and(|n| n <= MAX_DRAIN_BYTES) {
            Box::pin(drain(body, 0)).await;
        }
        return Err(too_large());
    }
    tokio::time::timeout(BODY_TIMEOUT, collect(body))
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::RequestTimeout,
                format!(
                    "the request body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            )
        })?
}

/// Collect the body's data frames, without copying when it arrives in one frame (the usual
/// case for a small JSON body).
async fn collect(mut body: Incoming) -> Result<Bytes, ApiError> {
    let mut single: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    let mut total = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            ApiError::invalid(format!("could not read the request body: {error}"))
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        total += data.len();
        if total > MAX_BODY_BYTES {
            // Boxed: a cold path whose timer would otherwise enlarge every request's future.
            Box::pin(drain(body, total as u64)).await;
            return Err(too_large());
        }
        if single.is_none() && joined.is_empty() {
            single = Some(data);
        } else {
            if let Some(first) = single.take() {
                joined.extend_from_slice(&first);
            }
            joined.extend_from_slice(&data);
        }
    }
    Ok(single.unwrap_or_else(|| joined.freeze()))
}

/// Parse a JSON body into `T`, as a 400 on any error. Every body of this API is an object:
/// serde would also build a struct from an array of its fields in order, which no client means.
pub fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::invalid(
            "invalid JSON body: expected a JSON object",
        ));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
}

fn too_large() -> ApiError {
    ApiError::new(
        ErrorCode::BodyTooLarge,
        format!("request body is larger than {MAX_BODY_BYTES} bytes"),
    )
}

/// `application/json`, `application/<anything>+json`, with any parameters, any case.
fn is_json(content_type: &[u8]) -> bool {
    let mime = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let Some(subtype) = mime
        .get(..12)
        .filter(|prefix| prefix.eq_ignore_ascii_case(b"application/"))
        .map(|_| &mime[12..])
    else {
        return false;
    };
    subtype.eq_ignore_ascii_case(b"json")
        || subtype.len() > 5 && subtype[subtype.len() - 5..].eq_ignore_ascii_case(b"+json")
}

/// Read and drop the rest of `body` (of which `read` bytes were already read), bounded in
/// bytes and time.
async fn drain(mut body: Incoming, read: u64) {
    let read = async {
        let mut total = read;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                total += data.len() as u64;
                if total > MAX_DRAIN_BYTES {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, read).await;
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_content_types() {
        assert!(is_json(b"application/json"));
        assert!(is_json(b"Application/JSON; charset=utf-8"));
        assert!(is_json(b"application/vnd.api+json"));
        assert!(!is_json(b"text/plain"));
        assert!(!is_json(b"application/x-www-form-urlencoded"));
        assert!(!is_json(b"application/jsonx"));
        assert!(!is_json(b"application/+json"));
        assert!(!is_json(b""));
    }
}
