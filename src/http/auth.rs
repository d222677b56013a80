//! `POST /auth`: the embedded application backend of the Scaledrone tutorial,
//! aware of login sessions (PROTOCOL.md §8, §11).
//!
//! Takes `clientID` (and an optional display `name`) as multipart form data,
//! urlencoded form or JSON, and answers with a token minted from the auth
//! channel's policy: the raw JWT as text by default (the tutorial calls
//! `res.text()`), or `{"token","expires_at"}` when JSON is asked for.
//!
//! With a valid `rookery_session` cookie the token is a member's: `data` is
//! `{"user","name","color"}` from the account (a `name` in the request is
//! ignored) and the policy's `{user}` rules are rendered, and its `{group}`
//! rules once per group of the member (§11.1). Without one the
//! request is a guest's, as in the tutorial, when the channel allows guests;
//! a guest's name must not be in use on the channel nor be a member's.

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use rand::seq::IndexedRandom;
use serde_json::json;

use super::account::session_cookie;
use super::body::{self, BodyError};
use super::form::{Form, Malformed};
use super::{Body, error_response, json_response, text_response};
use crate::accounts::names::{self, PALETTE};
use crate::accounts::{AccountError, UserRecord};
use crate::app::App;
use crate::auth::Minted;

/// Longest accepted client id, in bytes; real ids are about 25.
const MAX_CLIENT_ID_BYTES: usize = 256;
/// Random names tried for a guest before giving up on avoiding names in use.
const RANDOM_NAME_TRIES: usize = 8;

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
    #[error("{0}")]
    InvalidName(names::InvalidField),
    #[error("Malformed body: {0}")]
    Malformed(String),
    #[error("Request body too large")]
    TooLarge,
    /// No session, and the channel has `guests = false`.
    #[error("Not logged in")]
    NotLoggedIn,
    /// A guest asked for a name that is live on the channel or a member's.
    #[error("Name taken")]
    NameTaken,
    /// The accounts or groups store is down; the client may retry.
    #[error("Service unavailable")]
    Store,
    /// A cluster's Redis did not answer whether the name is live on another node.
    #[error("Service unavailable")]
    Unavailable,
}

impl AuthError {
    fn status(&self) -> StatusCode {
        match self {
            AuthError::NoClientId | AuthError::ClientIdTooLong | AuthError::InvalidName(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            AuthError::Malformed(_) => StatusCode::BAD_REQUEST,
            AuthError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AuthError::NotLoggedIn => StatusCode::UNAUTHORIZED,
            AuthError::NameTaken => StatusCode::CONFLICT,
            AuthError::Store | AuthError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<Malformed> for AuthError {
    fn from(error: Malformed) -> Self {
        AuthError::Malformed(error.0)
    }
}

impl From<AccountError> for AuthError {
    fn from(error: AccountError) -> Self {
        tracing::error!(%error, "accounts store failed during POST /auth");
        AuthError::Store
    }
}

/// Handles `POST /auth`.
pub async fn mint(request: Request<Incoming>, app: &App) -> Response<Body> {
    match mint_inner(request, app).await {
        Ok(response) => response,
        // The tutorial's errors are plain text (its page shows `res.text()`);
        // the members' errors are JSON `{"message"}` as PROTOCOL.md §11 writes
        // them, and so is a store failure, like every other `503` of the server.
        Err(error @ (AuthError::NotLoggedIn | AuthError::NameTaken | AuthError::Store | AuthError::Unavailable)) => {
            error_response(error.status(), &error.to_string())
        }
        Err(error) => text_response(error.status(), &error.to_string()),
    }
}

async fn mint_inner(request: Request<Incoming>, app: &App) -> Result<Response<Body>, AuthError> {
    let content_type = header(&request, CONTENT_TYPE);
    let wants_json = header(&request, ACCEPT).is_some_and(|a| a.contains("application/json"));
    let session = session_cookie(request.headers());
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

    let channel = app
        .credentials
        .channel(&app.config.auth_channel)
        .ok_or_else(|| AuthError::Malformed("no auth channel".into()))?;
    // An unknown, expired or revoked cookie is no session: the request is a guest's.
    let member = match &session {
        Some(session) => app.accounts.session_user(session)?,
        None => None,
    };
    let (data, user) = match &member {
        Some(member) => (member_data(member), Some(member.username.as_str())),
        None if !channel.config.guests => return Err(AuthError::NotLoggedIn),
        None => {
            let name = guest_name(app, &channel.config.id, parsed.name).await?;
            (json!({ "name": name, "color": random_color() }), None)
        }
    };
    // A member's groups become the policy's `{group}` rules (PROTOCOL.md §11.1).
    let groups = match user {
        Some(user) => app.groups.groups_of(&channel.config.id, user).map_err(|error| {
            tracing::error!(%error, "groups store failed during POST /auth");
            AuthError::Store
        })?,
        None => Vec::new(),
    };
    let Minted { token, expires_at } = channel.mint_for(Some(&client_id), user, &groups, Some(&data), None);
    crate::metrics::token_minted();
    Ok(if wants_json {
        json_response(StatusCode::OK, &json!({ "token": token, "expires_at": expires_at }))
    } else {
        text_response(StatusCode::OK, &token)
    })
}

/// A member's `authData`: who they are, their name and their stable colour.
fn member_data(member: &UserRecord) -> serde_json::Value {
    json!({
        "user": member.username,
        "name": member.display_name,
        "color": names::user_color(&member.username),
    })
}

/// A guest's display name: the asked-for one if it is free, else a random one.
async fn guest_name(app: &App, channel: &str, asked: Option<String>) -> Result<String, AuthError> {
    if let Some(name) = asked.filter(|n| !n.is_empty()) {
        let name = names::validate_display_name(&name).map_err(AuthError::InvalidName)?;
        if name_taken(app, channel, &name).await? {
            return Err(AuthError::NameTaken);
        }
        return Ok(name);
    }
    // A random name is nobody's choice: avoid names in use, and settle for a
    // taken one only when many tries fail (a name is not an identity) — or
    // when a cluster's Redis cannot say (guests can still come in).
    let mut name = random_name();
    for _ in 1..RANDOM_NAME_TRIES {
        match name_taken(app, channel, &name).await {
            Ok(true) => name = random_name(),
            Ok(false) | Err(AuthError::Store | AuthError::Unavailable) => break,
            Err(error) => return Err(error),
        }
    }
    Ok(name)
}

/// Whether a guest may not use `name`: a member's, live on this node (the
/// accounts know, at once), or live on another node of a cluster (Redis knows).
async fn name_taken(app: &App, channel: &str, name: &str) -> Result<bool, AuthError> {
    if app.accounts.guest_name_taken(channel, name)? {
        return Ok(true);
    }
    app.broker
        .name_live_in_deployment(channel, name)
        .await
        .map_err(|error| {
            tracing::warn!(%error, "could not check the deployment's live names during POST /auth");
            AuthError::Unavailable
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
    let form = Form::parse(content_type, bytes, &["clientID", "name"]).await?;
    Ok(AuthRequest {
        client_id: form.get("clientID").map(str::to_owned),
        name: form.get("name").map(str::to_owned),
    })
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

/// A random `#rrggbb` color from the readable palette members' colours come from.
pub fn random_color() -> String {
    PALETTE
        .choose(&mut rand::rng())
        .copied()
        .unwrap_or(PALETTE[0])
        .to_owned()
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
    fn random_names_and_colors_have_their_shapes() {
        let name = random_name();
        let (adjective, noun) = name.split_once('_').unwrap();
        assert!(ADJECTIVES.contains(&adjective) && NOUNS.contains(&noun));
        let color = random_color();
        assert_eq!(color.len(), 7);
        assert!(color.starts_with('#') && color[1..].chars().all(|c| c.is_ascii_hexdigit()));
        assert!(PALETTE.contains(&color.as_str()));
    }
}
