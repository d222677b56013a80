//! `POST /auth`: the embedded application backend of the Scaledrone tutorial.
//!
//! Takes `clientID` (and an optional display `name`) as multipart form data,
//! urlencoded form or JSON, and answers with a token minted from the auth
//! channel's policy: the raw JWT as text by default (the tutorial calls
//! `res.text()`), or `{"token","expires_at"}` when JSON is asked for.

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use rand::RngExt;
use rand::seq::IndexedRandom;
use serde_json::{Value, json};

use super::body::{self, BodyError};
use super::{Body, json_response, text_response};
use crate::app::App;
use crate::auth::Minted;

/// Longest accepted client id, in bytes; real ids are about 25.
const MAX_CLIENT_ID_BYTES: usize = 256;
/// Display names are 1–32 characters.
const MAX_NAME_CHARS: usize = 32;

/// What the request asks for.
#[derive(Debug, Default, PartialEq)]
pub struct AuthRequest {
    pub client_id: Option<String>,
    pub name: Option<String>,
}

/// Why a request was refused, with its status and text.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum AuthError {
    #[error("No clientID defined")]
    NoClientId,
    #[error("clientID is too long")]
    ClientIdTooLong,
    #[error("Invalid name: use 1 to 32 characters, no control characters")]
    InvalidName,
    #[error("Malformed body: {0}")]
    Malformed(String),
    #[error("Request body too large")]
    TooLarge,
}

impl AuthError {
    fn status(&self) -> StatusCode {
        match self {
            AuthError::NoClientId | AuthError::ClientIdTooLong | AuthError::InvalidName => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            AuthError::Malformed(_) => StatusCode::BAD_REQUEST,
            AuthError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }
}

/// Handles `POST /auth`.
pub async fn mint(request: Request<Incoming>, app: &App) -> Response<Body> {
    match mint_inner(request, app).await {
        Ok(response) => response,
        Err(error) => text_response(error.status(), &error.to_string()),
    }
}

async fn mint_inner(request: Request<Incoming>, app: &App) -> Result<Response<Body>, AuthError> {
    let content_type = header(&request, CONTENT_TYPE);
    let wants_json = header(&request, ACCEPT).is_some_and(|a| a.contains("application/json"));
    let bytes = body::read(request.into_body(), app.config.limits.max_message_bytes)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => AuthError::TooLarge,
            BodyError::Unreadable => AuthError::Malformed(e.to_string()),
        })?;
    let parsed = parse_body(content_type.as_deref(), bytes).await?;
    let client_id = parsed
        .client_id
        .filter(|id| !id.is_empty())
        .ok_or(AuthError::NoClientId)?;
    if client_id.len() > MAX_CLIENT_ID_BYTES {
        return Err(AuthError::ClientIdTooLong);
    }
    let name = match parsed.name.filter(|n| !n.is_empty()) {
        Some(name) => validate_name(name)?,
        None => random_name(),
    };

    let channel = app
        .credentials
        .channel(&app.config.auth_channel)
        .ok_or_else(|| AuthError::Malformed("no auth channel".into()))?;
    let data = json!({ "name": name, "color": random_color() });
    let Minted { token, expires_at } = channel.mint(Some(&client_id), Some(&data), None);
    crate::metrics::token_minted();
    Ok(if wants_json {
        json_response(StatusCode::OK, &json!({ "token": token, "expires_at": expires_at }))
    } else {
        text_response(StatusCode::OK, &token)
    })
}

fn header(request: &Request<Incoming>, name: hyper::header::HeaderName) -> Option<String> {
    request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Reads `clientID` and `name` from a multipart, urlencoded or JSON body.
pub async fn parse_body(content_type: Option<&str>, bytes: Bytes) -> Result<AuthRequest, AuthError> {
    let essence = content_type
        .and_then(|ct| ct.split(';').next())
        .map(|ct| ct.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match essence.as_str() {
        "multipart/form-data" => parse_multipart(content_type.unwrap_or_default(), bytes).await,
        "application/json" => parse_json(&bytes),
        // Form encoding is what `fetch` sends for URLSearchParams, and curl -d by default.
        "application/x-www-form-urlencoded" | "" => Ok(parse_urlencoded(&bytes)),
        other => Err(AuthError::Malformed(format!("unsupported content type {other}"))),
    }
}

fn parse_urlencoded(bytes: &[u8]) -> AuthRequest {
    let mut request = AuthRequest::default();
    for (key, value) in form_urlencoded::parse(bytes) {
        match key.as_ref() {
            "clientID" => request.client_id = Some(value.into_owned()),
            "name" => request.name = Some(value.into_owned()),
            _ => {}
        }
    }
    request
}

fn parse_json(bytes: &[u8]) -> Result<AuthRequest, AuthError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| AuthError::Malformed(e.to_string()))?;
    let object = value
        .as_object()
        .ok_or_else(|| AuthError::Malformed("expected a JSON object".into()))?;
    let text = |key: &str| -> Result<Option<String>, AuthError> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(AuthError::Malformed(format!("{key} must be a string"))),
        }
    };
    Ok(AuthRequest {
        client_id: text("clientID")?,
        name: text("name")?,
    })
}

async fn parse_multipart(content_type: &str, bytes: Bytes) -> Result<AuthRequest, AuthError> {
    let boundary = multer::parse_boundary(content_type).map_err(|e| AuthError::Malformed(e.to_string()))?;
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(bytes) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut request = AuthRequest::default();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(error) => return Err(AuthError::Malformed(error.to_string())),
        };
        let name = field.name().map(str::to_owned);
        let value = field.text().await.map_err(|e| AuthError::Malformed(e.to_string()))?;
        match name.as_deref() {
            Some("clientID") => request.client_id = Some(value),
            Some("name") => request.name = Some(value),
            _ => {}
        }
    }
    Ok(request)
}

fn validate_name(name: String) -> Result<String, AuthError> {
    let name = name.trim().to_owned();
    let count = name.chars().count();
    if count == 0 || count > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(AuthError::InvalidName);
    }
    Ok(name)
}

const ADJECTIVES: &[&str] = &[
    "autumn",
    "hidden",
    "bitter",
    "misty",
    "silent",
    "empty",
    "dry",
    "dark",
    "summer",
    "icy",
    "delicate",
    "quiet",
    "white",
    "cool",
    "spring",
    "winter",
    "patient",
    "twilight",
    "dawn",
    "crimson",
    "wispy",
    "weathered",
    "blue",
    "billowing",
    "broken",
    "cold",
    "damp",
    "falling",
    "frosty",
    "green",
    "long",
    "late",
    "bold",
    "little",
    "morning",
    "muddy",
    "old",
    "red",
    "rough",
    "still",
    "small",
    "sparkling",
    "shy",
    "wandering",
    "withered",
    "wild",
    "black",
    "young",
    "holy",
    "solitary",
    "fragrant",
    "aged",
    "snowy",
    "proud",
    "floral",
    "restless",
    "divine",
    "polished",
    "ancient",
    "purple",
    "lively",
    "nameless",
];

const NOUNS: &[&str] = &[
    "waterfall",
    "river",
    "breeze",
    "moon",
    "rain",
    "wind",
    "sea",
    "morning",
    "snow",
    "lake",
    "sunset",
    "pine",
    "shadow",
    "leaf",
    "dawn",
    "glitter",
    "forest",
    "hill",
    "cloud",
    "meadow",
    "sun",
    "glade",
    "bird",
    "brook",
    "butterfly",
    "bush",
    "dew",
    "dust",
    "field",
    "fire",
    "flower",
    "firefly",
    "feather",
    "grass",
    "haze",
    "mountain",
    "night",
    "pond",
    "darkness",
    "snowflake",
    "silence",
    "sound",
    "sky",
    "shape",
    "surf",
    "thunder",
    "violet",
    "water",
    "wildflower",
    "wave",
    "resonance",
    "wood",
    "dream",
    "cherry",
    "tree",
    "fog",
    "frost",
    "voice",
    "paper",
    "frog",
    "smoke",
    "star",
];

/// A random `adjective_noun` display name.
pub fn random_name() -> String {
    let mut rng = rand::rng();
    let adjective = ADJECTIVES.choose(&mut rng).copied().unwrap_or("quiet");
    let noun = NOUNS.choose(&mut rng).copied().unwrap_or("rook");
    format!("{adjective}_{noun}")
}

/// A random `#rrggbb` color.
pub fn random_color() -> String {
    format!("#{:06x}", rand::rng().random_range(0..0x100_0000u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn reads_all_three_body_kinds() {
        let expected = AuthRequest {
            client_id: Some("r3k:a".into()),
            name: Some("Ann".into()),
        };
        let form = run(parse_body(
            Some("application/x-www-form-urlencoded"),
            Bytes::from("clientID=r3k%3Aa&name=Ann"),
        ));
        assert_eq!(form.unwrap(), expected);
        let json = run(parse_body(
            Some("application/json; charset=utf-8"),
            Bytes::from(r#"{"clientID":"r3k:a","name":"Ann"}"#),
        ));
        assert_eq!(json.unwrap(), expected);
        let multipart = "--XyZ\r\nContent-Disposition: form-data; name=\"clientID\"\r\n\r\nr3k:a\r\n\
                         --XyZ\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nAnn\r\n--XyZ--\r\n";
        let parsed = run(parse_body(
            Some("multipart/form-data; boundary=XyZ"),
            Bytes::from(multipart),
        ));
        assert_eq!(parsed.unwrap(), expected);
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(matches!(
            run(parse_body(Some("application/json"), Bytes::from("{nope"))),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            run(parse_body(Some("multipart/form-data"), Bytes::from("x"))),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            run(parse_body(Some("application/json"), Bytes::from(r#"{"clientID":5}"#))),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn names_are_validated() {
        assert_eq!(validate_name(" Ann ".into()), Ok("Ann".into()));
        assert_eq!(validate_name("x".repeat(33)), Err(AuthError::InvalidName));
        assert_eq!(validate_name("a\u{7}b".into()), Err(AuthError::InvalidName));
        assert_eq!(validate_name("名".repeat(32)), Ok("名".repeat(32)));
    }

    #[test]
    fn random_names_and_colors_have_their_shapes() {
        let name = random_name();
        let (adjective, noun) = name.split_once('_').unwrap();
        assert!(ADJECTIVES.contains(&adjective) && NOUNS.contains(&noun));
        let color = random_color();
        assert_eq!(color.len(), 7);
        assert!(color.starts_with('#') && color[1..].chars().all(|c| c.is_ascii_hexdigit()));
    }
}
