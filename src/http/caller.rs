//! Who is calling the REST API, and how its failures are answered.
//!
//! Shared by the REST API (`api`) and the group endpoints (`groups`): HTTP Basic
//! with the channel secret, a Bearer JWT without a `client` claim, or nobody on
//! a channel without `require_auth`; and [`ApiError`], the one place REST
//! errors become `{"message":"…"}` responses.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Request, Response, StatusCode};

use super::{Body, error_response};
use crate::auth::ChannelAuth;
use crate::permissions::Permissions;
use crate::token::Bearer;

/// Who is calling.
pub(super) enum Caller {
    /// Basic auth with the channel secret, or anonymous on a channel without auth.
    Full,
    /// A Bearer token: may publish where its permissions allow, nothing else.
    Token(Permissions),
}

/// A REST failure: its status and the `message` of the `{"message":"…"}` body.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub(super) fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }

    pub(super) fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "Not found")
    }

    /// The one place REST errors become responses.
    pub(super) fn into_response(self) -> Response<Body> {
        let mut response = error_response(self.status, &self.message);
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Basic realm=\"rookery\""),
            );
        }
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            // Only the publish endpoints answer 405.
            response
                .headers_mut()
                .insert(hyper::header::ALLOW, hyper::header::HeaderValue::from_static("POST"));
        }
        response
    }
}

pub(super) type ApiResult<T = Response<Body>> = Result<T, ApiError>;

pub(super) fn authenticate(request: &Request<Incoming>, channel: &ChannelAuth) -> ApiResult<Caller> {
    let Some(header) = request.headers().get(AUTHORIZATION) else {
        return if channel.config.require_auth {
            Err(ApiError::unauthorized("Missing credentials"))
        } else {
            Ok(Caller::Full)
        };
    };
    let header = header
        .to_str()
        .map_err(|_| ApiError::unauthorized("Malformed Authorization header"))?;
    let (scheme, credentials) = header
        .split_once(' ')
        .ok_or_else(|| ApiError::unauthorized("Malformed Authorization header"))?;
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD
            .decode(credentials.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| ApiError::unauthorized("Malformed Basic credentials"))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| ApiError::unauthorized("Malformed Basic credentials"))?;
        let user_ok = user == channel.config.id;
        let password_ok = constant_time_eq(password.as_bytes(), channel.config.secret.expose().as_bytes());
        if user_ok && password_ok {
            Ok(Caller::Full)
        } else {
            Err(ApiError::unauthorized("Invalid credentials"))
        }
    } else if scheme.eq_ignore_ascii_case("bearer") {
        let verified = channel
            .verifier
            .verify(credentials.trim(), Bearer::Rest, channel.now())
            .map_err(|error| ApiError::unauthorized(error.to_string()))?;
        Ok(Caller::Token(verified.permissions))
    } else {
        Err(ApiError::unauthorized("Unsupported authorization scheme"))
    }
}

/// Compares secrets without leaking where they differ through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_contents_and_lengths() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret!"));
    }
}
