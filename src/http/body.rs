//! Reading request bodies under the configured size limit and the request deadline.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::StatusCode;
use hyper::body::Incoming;

use super::deadline;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("Request body too large")]
    TooLarge,
    /// Also what a body that misses the request deadline gives: the router
    /// then answers `408` instead of the handler's response (see [`deadline`]).
    #[error("Could not read the request body")]
    Unreadable,
}

impl BodyError {
    /// The status an endpoint answers it with.
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Unreadable => StatusCode::BAD_REQUEST,
        }
    }
}

/// Collects the whole body, refusing more than `limit` bytes or a body that
/// has not arrived by the request's deadline.
pub async fn read(body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    match deadline::read_body(Limited::new(body, limit).collect()).await {
        Some(Ok(collected)) => Ok(collected.to_bytes()),
        Some(Err(error)) if error.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Some(Err(_)) | None => Err(BodyError::Unreadable),
    }
}
