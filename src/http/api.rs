//! The REST API under `/api` (PROTOCOL.md §9): server-side publishing and
//! read-only views of rooms and members.
//!
//! Callers authenticate with HTTP Basic (channel id and secret), or with a
//! Bearer JWT that has no `client` claim and may only publish to rooms its
//! permissions allow. Channels without `require_auth` also accept anonymous
//! requests. Permission checks go through [`crate::permissions`] like the
//! WebSocket path.

use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Response, StatusCode};
use percent_encoding::percent_decode_str;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::body::{self, BodyError};
use super::caller::{ApiError, ApiResult, Caller, authenticate};
use super::{Body, json_response};
use crate::app::App;
use crate::broker::{Channel, MAX_HISTORY_PER_SUBSCRIBE};
use crate::engine::redis::Deployment;
use crate::engine::{Ack, Draft, EngineError};
use crate::ids::{ClientId, RoomName};

/// Handles any request under `/api`.
pub async fn handle(request: Request<Incoming>, app: &App) -> Response<Body> {
    route(request, app).await.unwrap_or_else(ApiError::into_response)
}

async fn route(request: Request<Incoming>, app: &App) -> ApiResult {
    let path = request
        .uri()
        .path()
        .trim_start_matches("/api")
        .trim_start_matches('/')
        .to_owned();
    let segments: Vec<String> = path
        .split('/')
        .map(|s| percent_decode_str(s).decode_utf8().map(|d| d.into_owned()))
        .collect::<Result<_, _>>()
        .map_err(|_| ApiError::bad_request("Path is not valid UTF-8"))?;
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let Some((&channel_id, rest)) = segments.split_first().filter(|(c, _)| !c.is_empty()) else {
        return Err(ApiError::not_found());
    };
    let (Some(channel), Some(credentials)) = (app.broker.channel(channel_id), app.credentials.channel(channel_id))
    else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "Unknown channel"));
    };
    // Groups take members' session cookies as well as Basic (PROTOCOL.md §11.1).
    // Their paths have 1, 3 or 4 segments, so a room called `groups` keeps its
    // two-segment routes (`groups/publish`, `groups/history`, …).
    if rest.first() == Some(&"groups") && rest.len() != 2 {
        return Ok(super::groups::handle(request, app, channel, credentials, rest).await);
    }
    let caller = authenticate(&request, credentials)?;
    let method = request.method().clone();
    let max_room = app.config.limits.max_room_name_bytes;
    match (&method, rest) {
        (&Method::POST, ["publish", "rooms"]) => {
            let rooms = query_rooms(request.uri().query().unwrap_or_default(), max_room)?;
            if rooms.is_empty() {
                return Err(ApiError::bad_request("Name at least one room with ?r=ROOM"));
            }
            allow_publish(&caller, &rooms)?;
            let message = read_message(request, app).await?;
            let mut ids = Map::new();
            for room in &rooms {
                let id = publish(app, channel, room, message.clone()).await?;
                ids.insert(room.to_string(), Value::String(id));
            }
            Ok(json_response(StatusCode::OK, &json!({ "ids": ids })))
        }
        (&Method::POST, [room, "publish"]) => {
            let room = parse_room(room, max_room)?;
            allow_publish(&caller, std::slice::from_ref(&room))?;
            let message = read_message(request, app).await?;
            let id = publish(app, channel, &room, message).await?;
            Ok(json_response(StatusCode::OK, &json!({ "id": id })))
        }
        // Before the GET arm, so that `GET …/publish` says how to publish instead of "not found".
        (_, ["publish", "rooms"] | [_, "publish"]) => Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Use POST")),
        (&Method::GET, rest) => {
            if matches!(caller, Caller::Token(_)) {
                return Err(ApiError::new(StatusCode::FORBIDDEN, "Bearer tokens may only publish"));
            }
            read_only(rest, app, channel, request.uri().query(), max_room).await
        }
        _ => Err(ApiError::not_found()),
    }
}

async fn read_only(rest: &[&str], app: &App, channel: &Channel, query: Option<&str>, max_room: usize) -> ApiResult {
    if matches!(rest, ["stats" | "members" | "rooms" | "room-members"] | [_, "members"])
        && let Some(deployment) = app.broker.engine().deployment(&channel.id).await
    {
        return deployment_view(rest, &deployment.map_err(unavailable)?, max_room);
    }
    match rest {
        ["stats"] => Ok(json_response(
            StatusCode::OK,
            &json!({ "users_count": channel.connection_count() }),
        )),
        ["members"] => Ok(json_response(StatusCode::OK, &channel.members())),
        ["rooms"] => {
            let rooms = channel.occupied_rooms();
            let names: Vec<&str> = rooms.iter().map(|r| r.name().as_str()).collect();
            Ok(json_response(StatusCode::OK, &names))
        }
        ["room-members"] => {
            let map: Map<String, Value> = channel
                .occupied_rooms()
                .iter()
                .map(|room| (room.name().to_string(), json!(room.member_ids())))
                .collect();
            Ok(json_response(StatusCode::OK, &map))
        }
        [room, "members"] => {
            let room = parse_room(room, max_room)?;
            Ok(json_response(StatusCode::OK, &channel.room_members(&room)))
        }
        [room, "history"] => {
            let room = parse_room(room, max_room)?;
            let count = history_count(query)?;
            let stored = app.broker.history(channel, &room, count).await.map_err(unavailable)?;
            let ids: Vec<String> = stored.iter().map(|m| m.id.to_string()).collect();
            let messages: Vec<HistoryEntry> = stored
                .iter()
                .zip(&ids)
                .map(|(m, id)| HistoryEntry {
                    id,
                    room: m.room.as_str(),
                    message: &m.message,
                    client_id: m.client_id.as_ref().map(|c| c.as_str()),
                    user: m.user.as_deref(),
                    timestamp: m.timestamp,
                })
                .collect();
            Ok(json_response(StatusCode::OK, &messages))
        }
        _ => Err(ApiError::not_found()),
    }
}

/// The read-only views answered from the whole deployment's presence (cluster engine).
fn deployment_view(rest: &[&str], deployment: &Deployment, max_room: usize) -> ApiResult {
    let body = match rest {
        ["stats"] => json!({ "users_count": deployment.connections }),
        ["members"] => {
            let mut ids: Vec<&ClientId> = deployment.rooms.values().flatten().collect();
            ids.sort();
            ids.dedup();
            json!(ids)
        }
        ["rooms"] => json!(deployment.rooms.keys().collect::<Vec<_>>()),
        ["room-members"] => json!(deployment.rooms),
        [room, "members"] => {
            let room = parse_room(room, max_room)?;
            json!(deployment.rooms.get(room.as_str()).cloned().unwrap_or_default())
        }
        _ => return Err(ApiError::not_found()),
    };
    Ok(json_response(StatusCode::OK, &body))
}

#[derive(Serialize)]
struct HistoryEntry<'a> {
    id: &'a str,
    room: &'a str,
    message: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    timestamp: u64,
}

/// Publishes one REST message and waits until it is durable (PROTOCOL.md §12).
async fn publish(app: &App, channel: &Channel, room: &RoomName, message: Box<RawValue>) -> ApiResult<String> {
    let draft = Draft {
        message,
        client_id: None,
        user: None,
    };
    let published = app
        .broker
        .publish(channel, room, draft, Ack::Durable)
        .await
        .map_err(unavailable)?;
    crate::metrics::published("rest");
    Ok(published.id.to_string())
}

/// The store failed: the caller may retry; nothing was acknowledged.
fn unavailable(error: EngineError) -> ApiError {
    tracing::warn!(%error, "REST request failed in the engine");
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable")
}

fn allow_publish(caller: &Caller, rooms: &[RoomName]) -> ApiResult<()> {
    match caller {
        Caller::Full => Ok(()),
        Caller::Token(permissions) => match rooms.iter().find(|room| !permissions.decide(room.as_str()).publish) {
            None => Ok(()),
            Some(room) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("Not permitted to publish to {room}"),
            )),
        },
    }
}

fn parse_room(room: &str, max_bytes: usize) -> ApiResult<RoomName> {
    RoomName::parse(room, max_bytes).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn query_rooms(query: &str, max_bytes: usize) -> ApiResult<Vec<RoomName>> {
    let mut rooms: Vec<RoomName> = Vec::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key == "r" {
            let room = parse_room(&value, max_bytes)?;
            if !rooms.contains(&room) {
                rooms.push(room);
            }
        }
    }
    Ok(rooms)
}

fn history_count(query: Option<&str>) -> ApiResult<usize> {
    let mut count = MAX_HISTORY_PER_SUBSCRIBE;
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if key == "count" {
            count = value
                .parse::<usize>()
                .map_err(|_| ApiError::bad_request("count must be a non-negative integer"))?;
        }
    }
    Ok(count.min(MAX_HISTORY_PER_SUBSCRIBE))
}

/// The message of a publish: parsed JSON for `application/json`, else the raw body as a string.
async fn read_message(request: Request<Incoming>, app: &App) -> ApiResult<Box<RawValue>> {
    let is_json = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
    let bytes = body::read(request.into_body(), app.config.limits.max_message_bytes)
        .await
        .map_err(|error| match error {
            BodyError::TooLarge => {
                crate::metrics::refused("too_large");
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, error.to_string())
            }
            BodyError::Unreadable => ApiError::bad_request(error.to_string()),
        })?;
    let malformed = ApiError::bad_request;
    if is_json {
        // The same nesting cap as for WebSocket messages (PROTOCOL.md §10), checked before parsing.
        let text = std::str::from_utf8(&bytes).map_err(|_| malformed("Body is not valid JSON"))?;
        if crate::protocol::nesting_exceeds(text, app.config.limits.max_json_depth) {
            crate::metrics::refused(crate::metrics::reason::TOO_DEEP);
            return Err(malformed("Message too deeply nested"));
        }
        serde_json::from_str::<Box<RawValue>>(text).map_err(|_| malformed("Body is not valid JSON"))
    } else {
        let text = std::str::from_utf8(&bytes).map_err(|_| malformed("Body is not valid UTF-8"))?;
        let encoded = serde_json::to_string(text).map_err(|_| malformed("Body could not be encoded"))?;
        RawValue::from_string(encoded).map_err(|_| malformed("Body could not be encoded"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_come_from_repeated_r_parameters() {
        let rooms = query_rooms("r=a&r=b%20c&x=1&r=a", 256).unwrap();
        let names: Vec<&str> = rooms.iter().map(RoomName::as_str).collect();
        assert_eq!(names, ["a", "b c"]);
        assert!(query_rooms("r=", 256).is_err());
    }

    #[test]
    fn history_count_is_bounded() {
        assert_eq!(history_count(None).unwrap(), 100);
        assert_eq!(history_count(Some("count=5")).unwrap(), 5);
        assert_eq!(history_count(Some("count=5000")).unwrap(), 100);
        assert!(history_count(Some("count=-1")).is_err());
    }
}
