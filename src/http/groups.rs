//! The group endpoints of the REST API (PROTOCOL.md §11.1):
//! `POST/GET /api/{c}/groups`, `POST /api/{c}/groups/{id}/members` and
//! `DELETE /api/{c}/groups/{id}/members/{user}`.
//!
//! Callers are members with the session cookie or the operator with HTTP
//! Basic (channel id and secret); a Bearer token is refused (`403`), no
//! credentials at all is `401 Not logged in`. Answers are JSON, errors
//! `{"message":"…"}`. Changes run on the blocking pool (they fsync), and then
//! act on live connections: an added member's inbox is told
//! (`group_added`), a removed member's connections leave the group room at
//! once, on every node, and their inbox is told (`group_removed`); see
//! [`crate::groups`]. A removal whose eviction cannot be published (a
//! cluster's Redis is down) answers `503` with the removal kept; its retry
//! evicts (docs/cluster.md).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{ALLOW, AUTHORIZATION, CACHE_CONTROL, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::account::session_cookie;
use super::body;
use super::caller::{self, ApiError, Caller};
use super::{Body, error_response, json_response};
use crate::app::App;
use crate::auth::ChannelAuth;
use crate::broker::Channel;
use crate::engine::{Ack, Draft};
use crate::groups::{self, Actor, GroupError, GroupRecord, Groups};
use crate::ids::RoomName;

/// Who is calling, owned so that it can move to the blocking pool.
enum Who {
    Operator,
    Member(String),
}

impl Who {
    fn actor(&self) -> Actor<'_> {
        match self {
            Who::Operator => Actor::Operator,
            Who::Member(user) => Actor::Member(user),
        }
    }
}

/// A group as the API shows it.
#[derive(Serialize)]
struct GroupView<'a> {
    id: &'a str,
    title: &'a str,
    /// Who may remove others (besides the operator); absent for operator-made groups.
    #[serde(skip_serializing_if = "Option::is_none")]
    creator: Option<&'a str>,
    members: &'a [String],
}

impl<'a> From<&'a GroupRecord> for GroupView<'a> {
    fn from(group: &'a GroupRecord) -> Self {
        GroupView {
            id: &group.id,
            title: &group.title,
            creator: group.creator.as_deref(),
            members: &group.members,
        }
    }
}

/// Handles `/api/{c}/groups…`; `rest` is the path after the channel.
pub(super) async fn handle(
    request: Request<Incoming>,
    app: &App,
    channel: &Arc<Channel>,
    credentials: &ChannelAuth,
    rest: &[&str],
) -> Response<Body> {
    let allow = match rest {
        ["groups"] => "GET, POST",
        ["groups", _, "members"] => "POST",
        ["groups", _, "members", _] => "DELETE",
        _ => return error_response(StatusCode::NOT_FOUND, "Not found"),
    };
    let who = match caller(&request, app, credentials) {
        Ok(who) => who,
        Err(error) => return error.into_response(),
    };
    let channel_id = channel.id.clone();
    let response = match (request.method().clone(), rest) {
        (Method::GET, ["groups"]) => {
            let listed = blocking(app, move |groups| groups.list(&channel_id, who.actor())).await;
            listed.map(|list| {
                let views: Vec<GroupView<'_>> = list.iter().map(GroupView::from).collect();
                json_response(StatusCode::OK, &views)
            })
        }
        (Method::POST, ["groups"]) => create(request, app, channel, who).await,
        (Method::POST, ["groups", id, "members"]) => add(request, app, channel, who, id).await,
        (Method::DELETE, ["groups", id, "members", user]) => remove(app, channel, who, id, user).await,
        _ => {
            let mut response = error_response(StatusCode::METHOD_NOT_ALLOWED, &format!("Use {allow}"));
            response.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
            return response;
        }
    };
    let mut response = response.unwrap_or_else(group_error);
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn create(
    request: Request<Incoming>,
    app: &App,
    channel: &Channel,
    who: Who,
) -> Result<Response<Body>, GroupError> {
    let body = match read_object(request, app).await {
        Ok(body) => body,
        Err(response) => return Ok(response),
    };
    let text = |name: &str| match body.get(name) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) if name == "id" => Err(GroupError::InvalidId),
        Some(_) => Err(GroupError::InvalidTitle(app.config.groups.max_title_chars)),
    };
    let (id, title) = (text("id")?, text("title")?);
    let members: Vec<String> = match body.get("members") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or(GroupError::InvalidMembers))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(GroupError::InvalidMembers),
    };
    let channel_id = channel.id.clone();
    let group = blocking(app, move |groups| {
        groups.create(&channel_id, who.actor(), &id, &title, &members)
    })
    .await?;
    let notice = groups::added_notice(&group);
    for member in &group.members {
        notify(app, channel, member, &notice).await;
    }
    Ok(json_response(StatusCode::CREATED, &GroupView::from(&group)))
}

async fn add(
    request: Request<Incoming>,
    app: &App,
    channel: &Channel,
    who: Who,
    id: &str,
) -> Result<Response<Body>, GroupError> {
    let body = match read_object(request, app).await {
        Ok(body) => body,
        Err(response) => return Ok(response),
    };
    let user = match body.get("user") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(user)) => user.clone(),
        Some(_) => return Err(GroupError::InvalidUser),
    };
    let (channel_id, id) = (channel.id.clone(), id.to_owned());
    let added = blocking(app, move |groups| {
        groups.add_member(&channel_id, who.actor(), &id, &user)
    })
    .await?;
    if added.new
        && let Some(user) = added.group.members.last()
    {
        notify(app, channel, user, &groups::added_notice(&added.group)).await;
    }
    Ok(no_content())
}

async fn remove(app: &App, channel: &Channel, who: Who, id: &str, user: &str) -> Result<Response<Body>, GroupError> {
    let (channel_id, group_id, removed) = (channel.id.clone(), id.to_owned(), user.to_owned());
    let stored = blocking(app, move |groups| {
        groups.remove_member(&channel_id, who.actor(), &group_id, &removed)
    })
    .await;
    match stored {
        // The store says no already, so nothing can re-enter; now take the
        // room from the connections that are in it, on every node.
        Ok(group) => {
            if let Err(response) = evict(app, channel, &group.id, user).await {
                return Ok(response);
            }
            tracing::debug!(group = %group.id, user, "member removed from a group");
            notify(app, channel, user, &groups::removed_notice(&group.id)).await;
            Ok(no_content())
        }
        // Already not a member: perhaps an earlier removal whose eviction
        // failed (503), so evict again and the retry finishes the job. The
        // caller was allowed to remove, or this would be a 403.
        Err(error @ GroupError::NotAMember(_)) => match evict(app, channel, id, user).await {
            Ok(()) => Err(error),
            Err(response) => Ok(response),
        },
        Err(error) => Err(error),
    }
}

/// Takes group `id`'s room from `user`'s connections on every node. Redis
/// down: `503`, while the removal stays stored (a retry evicts; see [`remove`]).
async fn evict(app: &App, channel: &Channel, id: &str, user: &str) -> Result<(), Response<Body>> {
    let Ok(room) = RoomName::parse(&groups::room_name(id), usize::MAX) else {
        return Ok(());
    };
    let notice = crate::protocol::room_error("Unauthorized", &room);
    app.broker
        .evict_user(channel, &room, user, &notice)
        .await
        .map_err(|error| {
            tracing::warn!(%error, group = id, user, "member removed from a group but not evicted");
            error_response(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable")
        })
}

/// Tells `user`'s connections through their `inbox-<user>` room, like a REST
/// publish. The group change is done whatever happens here, so a failure is
/// logged, not answered.
async fn notify(app: &App, channel: &Channel, user: &str, notice: &RawValue) {
    let Ok(room) = RoomName::parse(&format!("inbox-{user}"), usize::MAX) else {
        return;
    };
    let draft = Draft {
        message: notice.to_owned(),
        client_id: None,
        user: None,
    };
    if let Err(error) = app.broker.publish(channel, &room, draft, Ack::Delivered).await {
        tracing::warn!(%error, %room, "group notice not published");
    }
}

/// The member behind the session cookie, or the operator behind HTTP Basic.
fn caller(request: &Request<Incoming>, app: &App, credentials: &ChannelAuth) -> Result<Who, ApiError> {
    if request.headers().contains_key(AUTHORIZATION) {
        return match caller::authenticate(request, credentials)? {
            Caller::Full => Ok(Who::Operator),
            Caller::Token(_) => Err(ApiError::new(StatusCode::FORBIDDEN, "Bearer tokens may only publish")),
        };
    }
    let user = match session_cookie(request.headers()).map(|s| app.accounts.session_user(&s)) {
        Some(Ok(user)) => user,
        Some(Err(error)) => {
            tracing::error!(%error, "accounts store failed during a group request");
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable"));
        }
        None => None,
    };
    match user {
        Some(user) => Ok(Who::Member(user.username)),
        None => Err(ApiError::new(StatusCode::UNAUTHORIZED, "Not logged in")),
    }
}

/// The body as a JSON object.
async fn read_object(request: Request<Incoming>, app: &App) -> Result<serde_json::Map<String, Value>, Response<Body>> {
    let bytes = body::read(request.into_body(), app.config.limits.max_message_bytes)
        .await
        .map_err(|error| error_response(error.status(), &error.to_string()))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(error_response(StatusCode::BAD_REQUEST, "Body must be a JSON object")),
    }
}

/// Runs a groups call on the blocking pool.
async fn blocking<T: Send + 'static>(
    app: &App,
    call: impl FnOnce(&Groups) -> Result<T, GroupError> + Send + 'static,
) -> Result<T, GroupError> {
    let groups = Arc::clone(&app.groups);
    match tokio::task::spawn_blocking(move || call(&groups)).await {
        Ok(result) => result,
        Err(error) => Err(GroupError::Store(groups::GroupStoreError::Backend(format!(
            "group task failed: {error}"
        )))),
    }
}

fn no_content() -> Response<Body> {
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// The one mapping of group errors to HTTP answers.
fn group_error(error: GroupError) -> Response<Body> {
    use GroupError::*;
    let status = match &error {
        MissingId
        | InvalidId
        | MissingTitle
        | InvalidTitle(_)
        | InvalidMembers
        | MissingUser
        | InvalidUser
        | TooManyMembers(_)
        | TooManyGroups { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Taken => StatusCode::CONFLICT,
        UnknownGroup | UnknownUser(_) | NotAMember(_) => StatusCode::NOT_FOUND,
        Forbidden | NotCreator => StatusCode::FORBIDDEN,
        Store(_) | Users(_) => {
            tracing::error!(%error, "group request failed");
            return error_response(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable");
        }
    };
    error_response(status, &error.to_string())
}
