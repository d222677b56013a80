//! HTTP: routing on (method, path) to the WebSocket upgrade, `/auth`, the
//! REST API, health, metrics and static files.
//!
//! Handlers never reach into broker internals; they call its API. All error
//! responses are built by [`error_response`] (REST, JSON `{"message"}`) or
//! [`text_response`] (plain text, as the tutorial page expects from `/auth`).
//!
//! # Layout
//! - [`auth`]: `POST /auth`, token minting for the chat page and app backends.
//! - [`account`]: `POST /register`, `/login`, `/logout`, `GET /me` and the session cookie.
//! - [`form`]: named fields from JSON, urlencoded and multipart bodies.
//! - [`api`]: the REST API under `/api`.
//! - [`groups`]: the group endpoints under `/api/{c}/groups` (§11.1).
//! - [`assets`]: the chat page and files under `static/`.
//! - [`body`]: reading request bodies under the size limit.
//! - [`deadline`]: the whole-request deadline (`408`) and the socket wrapper
//!   that carries it and the connection's slot.

pub mod account;
pub mod api;
pub mod assets;
pub mod auth;
pub mod body;
mod caller;
pub(crate) mod deadline;
pub mod form;
pub mod groups;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue, ORIGIN};
use hyper::{Method, Request, Response, StatusCode};
use hyper_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::debug;

use self::deadline::RequestClock;
use crate::app::App;

/// Every response body is a complete buffer.
pub type Body = Full<Bytes>;

/// The path of the WebSocket endpoint.
pub const WEBSOCKET_PATH: &str = "/v3/websocket";

/// Answers one request of a connection whose deadline `clock` keeps: routes
/// it, replaces the answer with `408` when its body came too late, and counts
/// the response by status.
pub(crate) async fn handle(
    request: Request<Incoming>,
    app: Arc<App>,
    peer: SocketAddr,
    clock: Arc<RequestClock>,
) -> Result<Response<Body>, Infallible> {
    let deadline = clock.begin_request();
    let (mut response, late) = deadline::scope(deadline, route(request, app, peer)).await;
    if late {
        crate::metrics::refused(crate::metrics::reason::HTTP_DEADLINE);
        response = text_response(StatusCode::REQUEST_TIMEOUT, deadline::REQUEST_TIMEOUT_TEXT);
        // hyper closes the connection after a response that says so.
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    clock.end_request(response.status() == StatusCode::SWITCHING_PROTOCOLS);
    crate::metrics::http_response(response.status().as_u16());
    Ok(response)
}

/// Routes one request on (method, path).
async fn route(request: Request<Incoming>, app: Arc<App>, peer: SocketAddr) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, WEBSOCKET_PATH) => websocket(request, app, peer),
        (&Method::POST, "/auth") => auth::mint(request, &app).await,
        (_, "/auth") => text_response(StatusCode::METHOD_NOT_ALLOWED, "Use POST /auth"),
        (&Method::POST, "/register") => account::register(request, &app).await,
        (&Method::POST, "/login") => account::login(request, &app, peer).await,
        (&Method::POST, "/logout") => account::logout(&request, &app),
        (&Method::GET, "/me") => account::me(&request, &app),
        (_, "/register" | "/login" | "/logout") => {
            error_response(StatusCode::METHOD_NOT_ALLOWED, &format!("Use POST {path}"))
        }
        (_, "/me") => error_response(StatusCode::METHOD_NOT_ALLOWED, "Use GET /me"),
        (_, p) if p == "/api" || p.starts_with("/api/") => api::handle(request, &app).await,
        (&Method::GET, "/healthz") => text_response(StatusCode::OK, "ok"),
        (&Method::GET, "/metrics") => metrics(),
        (&Method::GET, "/config.json") => json_response(
            StatusCode::OK,
            &serde_json::json!({ "channel": app.config.auth_channel }),
        ),
        (&Method::GET | &Method::HEAD, _) => assets::serve(&app.config.static_dir, &path, method == Method::HEAD).await,
        _ => text_response(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
    }
}

/// Upgrades `GET /v3/websocket` and hands the socket to a session task.
fn websocket(mut request: Request<Incoming>, app: Arc<App>, peer: SocketAddr) -> Response<Body> {
    if !hyper_tungstenite::is_upgrade_request(&request) {
        return text_response(StatusCode::BAD_REQUEST, "Expected a WebSocket upgrade");
    }
    // The allow-list guards browsers, which always send `Origin`. Native clients
    // may send none, and PROTOCOL.md §2 says not to require it.
    if let Some(origin) = request.headers().get(ORIGIN)
        && !app.config.allowed_origins.is_empty()
        && !app
            .config
            .allowed_origins
            .iter()
            .any(|allowed| allowed.as_bytes() == origin.as_bytes())
    {
        return text_response(StatusCode::FORBIDDEN, "Origin not allowed");
    }
    if app.shutdown.is_cancelled() {
        return text_response(StatusCode::SERVICE_UNAVAILABLE, "Shutting down");
    }
    let Some(ip_slot) = app.ip_limiter.acquire(peer.ip()) else {
        crate::metrics::refused(crate::metrics::reason::WEBSOCKET_CONNECTIONS_PER_IP);
        return text_response(StatusCode::TOO_MANY_REQUESTS, "Too many connections from this address");
    };
    let limits = &app.config.limits;
    // Frames between the configured limit and this hard cap are refused with an
    // error frame and the connection stays; beyond it tungstenite cannot skip
    // the frame, so the connection is closed.
    let hard_cap = (limits.max_message_bytes * 4).max(1 << 20);
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(16 * 1024)
        .max_message_size(Some(hard_cap))
        .max_frame_size(Some(hard_cap));
    let (response, websocket) = match hyper_tungstenite::upgrade(&mut request, Some(ws_config)) {
        Ok(upgrade) => upgrade,
        Err(error) => return text_response(StatusCode::BAD_REQUEST, &format!("Bad WebSocket upgrade: {error}")),
    };
    let sessions = app.sessions.clone();
    sessions.clone().spawn(async move {
        // The socket is ready only after the 101 response has been sent. The
        // session then runs in a task of its own: this one's future also holds
        // the upgrade machinery (several KB), which an idle connection should
        // not keep for its whole life.
        match websocket.await {
            Ok(ws) => {
                sessions.spawn(crate::session::run(ws, app, peer, ip_slot));
            }
            Err(error) => debug!(%error, "WebSocket upgrade failed"),
        }
    });
    response
}

fn metrics() -> Response<Body> {
    let mut response = Response::new(Body::from(crate::metrics::render()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    response
}

/// A plain-text response.
pub fn text_response(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(Body::from(text.to_owned()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// A complete plain-text HTTP/1.1 response that closes the connection, as
/// bytes, for the places that answer on the socket without hyper (connection
/// caps, a request whose headers are late).
pub(crate) fn raw_closing_response(status: StatusCode, text: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        text.len()
    )
    .into_bytes()
}

/// A JSON response.
pub fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A REST error: `{"message":"…"}` with the given status.
pub fn error_response(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, &serde_json::json!({ "message": message }))
}
