//! One WebSocket connection: handshake, authentication state, the per-room
//! decision cache, the publish rate limit, and its single `select!` loop.
//!
//! A session has two tasks. This one reads client frames and acts on them; a
//! writer task drains the connection's [`Outbox`] in batches (one flush per
//! batch) and sends keep-alive pings. Everything the session says — replies,
//! errors, deliveries — goes through the outbox, so frames reach the client in
//! the order they were queued. Cleanup (leaving every room, with presence
//! events) lives in [`Subscriptions`]' `Drop`, which runs on every exit path.
//!
//! Group rooms (PROTOCOL.md §11.1) need the server's membership on top of the
//! token, checked in [`Handshaken::decide`] and [`Handshaken::decide_once`].
//! A member removed from a group is evicted from the room by the broker, not
//! by this task: the session's map may then still hold the room's handle, and
//! treats a handle whose room no longer [holds](Room::holds) this connection
//! as gone ([`Subscriptions::forget_evicted`]) before it subscribes, counts
//! subscriptions or re-checks rooms on authenticate.

mod rate_limit;
mod writer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use hyper_tungstenite::HyperWebsocketStream;
use hyper_tungstenite::tungstenite::Message;
use hyper_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use serde_json::Value;
use tokio::time::{Instant, sleep_until};
use tracing::{Instrument, debug, info_span};

use self::rate_limit::TokenBucket;
use self::writer::Writer;
use crate::accounts::NameClaim;
use crate::app::App;
use crate::auth::ChannelAuth;
use crate::broker::{Channel, ConnId, ConnectionCount, Joined, Outbox, Room, SubscribeRequest, Subscriber};
use crate::config::ExpiryMode;
use crate::engine::{Ack, Draft, EngineError};
use crate::groups::Groups;
use crate::ids::{ClientId, RoomName};
use crate::permissions::{Decision, DecisionCache, Permissions};
use crate::protocol::{self, DecodeError, Frame, Member, Request};
use crate::token::Bearer;

/// A deadline that never comes in practice (about 30 years).
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// Error texts of PROTOCOL.md that the session sends.
mod texts {
    pub const HANDSHAKE_REQUIRED: &str = "Handshake required";
    pub const HANDSHAKE_DONE: &str = "Handshake already done";
    pub const UNKNOWN_CHANNEL: &str = "Unknown channel";
    pub const UNAUTHORIZED: &str = "Unauthorized";
    pub const INVALID_ROOM: &str = "Invalid room name";
    pub const TOO_MANY_SUBSCRIPTIONS: &str = "Too many subscriptions";
    pub const RATE_LIMITED: &str = "Rate limit exceeded";
    pub const TOO_LARGE: &str = "Message too large";
    pub const CLIENT_DATA_TOO_LARGE: &str = "Client data too large";
    pub const JWT_EXPIRED: &str = "JWT expired";
    pub const UNAVAILABLE: &str = "Service unavailable";
}

/// Serves one upgraded WebSocket until it ends; `guard` is dropped with the session.
///
/// A plain function, not an `async fn`: the arguments of an `async fn` stay in
/// its future for the whole session, and a WebSocket stream is a few hundred
/// bytes that every idle connection would carry twice. Splitting here moves it
/// into the shared halves once.
pub fn run(
    ws: HyperWebsocketStream,
    app: Arc<App>,
    peer: SocketAddr,
    guard: impl Send + 'static,
) -> impl Future<Output = ()> + Send {
    let span = info_span!("session", %peer, client_id = tracing::field::Empty);
    let (sink, stream) = ws.split();
    Session::serve(sink, stream, app, guard).instrument(span)
}

/// How the read loop ended, which decides how the socket is closed.
enum Ending {
    /// The socket failed: nothing more can be said.
    Gone,
    /// The client sent a close frame: flush what is queued and answer it.
    ClosedByPeer,
    /// Flush what is queued, then send a close frame (no automatic reconnect).
    Close(CloseCode, &'static str),
    /// Drop the TCP connection at once, without a close frame, so that
    /// official clients see 1006 and reconnect (slow consumer, shutdown, dead peer).
    Drop,
}

/// What the session's one timer waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    /// The handshake must arrive in time.
    Handshake,
    /// An enforced token expiry takes effect at this Unix second.
    Expiry(u64),
    None,
}

/// What the session knows after a successful handshake.
struct Handshaken {
    /// The channel's rooms on this node.
    channel: Arc<Channel>,
    /// The channel's settings and token verifier.
    credentials: Arc<ChannelAuth>,
    /// Group membership, for group rooms (PROTOCOL.md §11.1).
    groups: Arc<Groups>,
    client_id: ClientId,
    client_data: Option<Value>,
    auth: Option<Auth>,
    member: Arc<Member>,
    decisions: DecisionCache,
    subscriptions: Subscriptions,
    publish_rate: TokenBucket,
    /// Subscribe, unsubscribe and authenticate share this one limit (PROTOCOL.md §10).
    control_rate: TokenBucket,
    _counted: ConnectionCount,
}

struct Auth {
    permissions: Permissions,
    exp: u64,
    /// Holds this connection's display name in the channel's live names, so
    /// that `POST /auth` refuses it to a guest while it is online (PROTOCOL.md §11).
    _name: Option<NameClaim>,
    /// `data.user` of the token: the account behind this connection (PROTOCOL.md §11).
    user: Option<Arc<str>>,
}

struct Session {
    app: Arc<App>,
    conn: ConnId,
    outbox: Outbox,
    state: Option<Handshaken>,
}

impl Session {
    async fn serve(sink: writer::Sink, mut stream: SplitStream<HyperWebsocketStream>, app: Arc<App>, guard: impl Send) {
        crate::metrics::connection_opened();
        let limits = &app.config.limits;
        let (outbox, reader) = Outbox::new(limits.outbox_frames, limits.outbox_bytes);
        let alive = Arc::new(AtomicBool::new(true));
        let ping_interval = Duration::from_secs(limits.ping_interval_seconds);
        let writer = Writer::spawn(sink, reader, Arc::clone(&alive), ping_interval);
        let mut session = Session {
            conn: app.broker.next_conn_id(),
            outbox: outbox.clone(),
            state: None,
            app: Arc::clone(&app),
        };

        // The stop signals and timers live across iterations, so reading a
        // frame does not re-register them. The outbox is stopped by a slow
        // consumer or a peer that stopped answering pings.
        let stopped = outbox.stopped();
        let shutdown = app.shutdown.cancelled();
        // One timer serves both deadlines a session can have: the handshake
        // deadline before the handshake, an enforced token expiry after it.
        let timer = sleep_until(Instant::now() + Duration::from_secs(limits.handshake_timeout_seconds));
        // A test moving the server's clock must move token expiry too.
        let clock_moved = app.config.clock.changed();
        tokio::pin!(stopped, shutdown, timer, clock_moved);
        let mut armed = Deadline::Handshake;

        let ending = loop {
            tokio::select! {
                biased;
                _ = &mut stopped => break Ending::Drop,
                _ = &mut shutdown => break Ending::Drop,
                _ = &mut timer, if armed != Deadline::None => match armed {
                    Deadline::Handshake => {
                        crate::metrics::refused(crate::metrics::reason::HANDSHAKE_TIMEOUT);
                        break Ending::Close(CloseCode::Policy, "Handshake deadline exceeded");
                    }
                    Deadline::Expiry(_) | Deadline::None => session.expire(),
                },
                _ = &mut clock_moved => {
                    clock_moved.set(app.config.clock.changed());
                    // Forget the armed deadline so that it is computed again below.
                    if matches!(armed, Deadline::Expiry(_)) {
                        armed = Deadline::None;
                    }
                }
                incoming = stream.next() => {
                    alive.store(true, Ordering::Relaxed);
                    let ending = match incoming {
                        None | Some(Err(_)) if session.outbox.is_stopped() => Some(Ending::Drop),
                        None => Some(Ending::Gone),
                        Some(Err(error)) => Some(session.on_socket_error(error)),
                        // Boxed: handling a frame (subscribe, authenticate, publish)
                        // has large states, which inline would be carried by every
                        // idle connection's task; one allocation per frame is cheaper.
                        Some(Ok(message)) => Box::pin(session.on_message(message)).await,
                    };
                    if let Some(ending) = ending {
                        break ending;
                    }
                }
            }
            // Re-arm the timer only when what it waits for changed.
            let wanted = session.deadline();
            if wanted != armed {
                if let Deadline::Expiry(at) = wanted {
                    let wait = Duration::from_secs(at.saturating_sub(app.config.clock.now()));
                    // An `exp` centuries away must not overflow the clock: such a token never expires here.
                    let now = Instant::now();
                    timer.as_mut().reset(now.checked_add(wait).unwrap_or(now + FAR_FUTURE));
                }
                armed = wanted;
            }
        };
        if outbox.is_stopped() {
            debug!("connection dropped: slow consumer or unresponsive peer");
        }
        // Leave every room (presence events go out) before the socket closes.
        session.state = None;
        // Boxed, as `on_message` is: a future held once, at the end, should not
        // add its size to every idle connection's task.
        Box::pin(writer.finish(ending, &session.outbox)).await;
        drop(guard);
        crate::metrics::connection_closed();
    }

    /// What the session's timer should wait for now.
    fn deadline(&self) -> Deadline {
        let Some(state) = &self.state else {
            return Deadline::Handshake;
        };
        match &state.auth {
            Some(auth) if state.credentials.config.expiry == ExpiryMode::Enforce => {
                Deadline::Expiry(auth.exp.saturating_add(state.credentials.config.expiry_grace_seconds))
            }
            _ => Deadline::None,
        }
    }

    fn send(&self, frame: Frame) {
        // A failed push means the connection is already ending; the loop sees it.
        let _ = self.outbox.push(frame);
    }

    /// Replies to a request: correlated with a callback, else an uncorrelated error (or nothing).
    fn answer(&self, callback: Option<i64>, error: Option<&str>) {
        if let Some(frame) = protocol::outcome(callback, error) {
            self.send(frame);
        }
    }

    fn on_socket_error(&self, error: hyper_tungstenite::tungstenite::Error) -> Ending {
        use hyper_tungstenite::tungstenite::error::{CapacityError, Error};
        match error {
            // Beyond the hard cap the frame cannot be skipped: say why, then close.
            Error::Capacity(CapacityError::MessageTooLong { .. }) => {
                crate::metrics::refused("too_large");
                self.send(protocol::error(texts::TOO_LARGE));
                Ending::Close(CloseCode::Size, "Message size limit exceeded")
            }
            other => {
                debug!(error = %other, "socket error");
                Ending::Gone
            }
        }
    }

    async fn on_message(&mut self, message: Message) -> Option<Ending> {
        let text = match &message {
            Message::Text(text) => text.as_str(),
            Message::Binary(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => text,
                Err(_) => {
                    self.send(protocol::error(DecodeError::Malformed { callback: None }.text()));
                    return None;
                }
            },
            Message::Close(_) => return Some(Ending::ClosedByPeer),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return None,
        };
        self.on_text(text).await
    }

    async fn on_text(&mut self, text: &str) -> Option<Ending> {
        let limits = protocol::FrameLimits {
            max_bytes: self.app.config.limits.max_message_bytes,
            max_depth: self.app.config.limits.max_json_depth,
        };
        let inbound = match protocol::decode_within(text, limits) {
            Ok(inbound) => inbound,
            Err(DecodeError::UnknownType { .. }) if self.state.is_none() => {
                self.send(protocol::error(texts::HANDSHAKE_REQUIRED));
                return Some(Ending::Close(CloseCode::Policy, texts::HANDSHAKE_REQUIRED));
            }
            Err(error) => {
                if let Some(reason) = error.refusal() {
                    crate::metrics::refused(reason);
                }
                self.answer(error.callback(), Some(error.text()));
                return None;
            }
        };
        let callback = inbound.callback;
        match (inbound.request, self.state.is_some()) {
            (Request::Handshake { channel, client_data }, false) => self.handshake(callback, &channel, client_data),
            (Request::Handshake { .. }, true) => {
                self.answer(callback, Some(texts::HANDSHAKE_DONE));
                None
            }
            (_, false) => {
                self.send(protocol::error(texts::HANDSHAKE_REQUIRED));
                Some(Ending::Close(CloseCode::Policy, texts::HANDSHAKE_REQUIRED))
            }
            (Request::Authenticate { token }, true) => {
                self.authenticate(callback, &token).await;
                None
            }
            (
                Request::Subscribe {
                    room,
                    history_count,
                    history_since,
                },
                true,
            ) => {
                self.subscribe(callback, &room, history_count, history_since.as_deref())
                    .await;
                None
            }
            (Request::Unsubscribe { room }, true) => {
                self.unsubscribe(callback, &room);
                None
            }
            (Request::Publish { room, message }, true) => {
                self.publish(callback, &room, message).await;
                None
            }
        }
    }

    fn handshake(&mut self, callback: Option<i64>, channel_id: &str, client_data: Option<Value>) -> Option<Ending> {
        let Some(callback) = callback else {
            // The reply must carry the callback; a handshake without one cannot be answered.
            self.send(protocol::error(DecodeError::Malformed { callback: None }.text()));
            return None;
        };
        let max_client_data = self.app.config.limits.max_client_data_bytes;
        if client_data
            .as_ref()
            .is_some_and(|data| !protocol::fits_serialized(data, max_client_data))
        {
            crate::metrics::refused(crate::metrics::reason::CLIENT_DATA_TOO_LARGE);
            self.send(protocol::handshake_error(callback, texts::CLIENT_DATA_TOO_LARGE));
            return Some(Ending::Close(CloseCode::Policy, "Client data size limit exceeded"));
        }
        let found = self.app.broker.channel(channel_id).cloned();
        let credentials = self.app.credentials.channel(channel_id).cloned();
        let (Some(channel), Some(credentials)) = (found, credentials) else {
            crate::metrics::handshake("unknown_channel");
            self.send(protocol::handshake_error(callback, texts::UNKNOWN_CHANNEL));
            return Some(Ending::Close(CloseCode::Policy, texts::UNKNOWN_CHANNEL));
        };
        crate::metrics::handshake("ok");
        let client_id = ClientId::generate(&self.app.config.node_id);
        tracing::Span::current().record("client_id", tracing::field::display(&client_id));
        let limits = &self.app.config.limits;
        let member = Arc::new(Member {
            id: client_id.clone(),
            auth_data: None,
            client_data: client_data.clone(),
        });
        self.send(protocol::handshake_ok(
            callback,
            &client_id,
            credentials.config.require_auth,
        ));
        self.state = Some(Handshaken {
            _counted: channel.connect(),
            subscriptions: Subscriptions {
                app: Arc::clone(&self.app),
                channel: Arc::clone(&channel),
                conn: self.conn,
                rooms: HashMap::new(),
            },
            channel,
            credentials,
            groups: Arc::clone(&self.app.groups),
            client_id,
            client_data,
            auth: None,
            member,
            decisions: DecisionCache::new(limits.decision_cache_entries),
            publish_rate: TokenBucket::new(limits.publish_rate_per_second, limits.publish_burst),
            control_rate: TokenBucket::new(limits.control_rate_per_second, limits.control_burst),
        });
        None
    }

    /// Takes a token of the control rate limit, or refuses the request (which is then not applied).
    fn control_allowed(&mut self, callback: Option<i64>) -> bool {
        // Before the handshake there is no bucket, and the handlers refuse the request anyway.
        let allowed = self.state.as_mut().is_none_or(|state| state.control_rate.try_take());
        if !allowed {
            crate::metrics::refused("rate_limit");
            self.answer(callback, Some(texts::RATE_LIMITED));
        }
        allowed
    }

    async fn authenticate(&mut self, callback: Option<i64>, token: &str) {
        if !self.control_allowed(callback) {
            return;
        }
        let Some(state) = self.state.as_mut() else { return };
        let verified =
            state
                .credentials
                .verifier
                .verify(token, Bearer::Socket(state.client_id.as_str()), state.credentials.now());
        let verified = match verified {
            Ok(verified) => verified,
            Err(error) => {
                // A failed authenticate leaves the earlier authentication in force.
                crate::metrics::authentication(error.label());
                self.answer(callback, Some(&error.to_string()));
                return;
            }
        };
        crate::metrics::authentication("ok");
        if state.auth.is_none() {
            crate::metrics::authenticated_changed(1.0);
        }
        let user = verified
            .data
            .as_ref()
            .and_then(|data| data.get("user"))
            .and_then(Value::as_str)
            .map(Arc::from);
        let name = verified
            .data
            .as_ref()
            .and_then(|data| data.get("name"))
            .and_then(Value::as_str)
            .zip(self.app.accounts.live_names(&state.credentials.config.id))
            .map(|(name, live)| live.claim(name));
        if name.is_some() {
            // In a cluster, other nodes' `POST /auth` see the name once this answers.
            self.app.broker.names_written().await;
        }
        state.auth = Some(Auth {
            permissions: verified.permissions,
            exp: verified.exp,
            user,
            _name: name,
        });
        state.member = Arc::new(Member {
            id: state.client_id.clone(),
            auth_data: verified.data,
            client_data: state.client_data.clone(),
        });
        state.decisions.clear();
        // Rooms a group removal took are gone already (and were told so).
        state.subscriptions.forget_evicted(None);
        // Re-authentication: drop rooms the new token no longer allows.
        let rooms: Vec<RoomName> = state.subscriptions.rooms.keys().cloned().collect();
        let mut lost = Vec::new();
        for room in rooms {
            if state.decide_once(&room).subscribe {
                if let Some(handle) = state.subscriptions.rooms.get(&room) {
                    handle.update_member(self.conn, Arc::clone(&state.member));
                }
            } else {
                state.subscriptions.leave(&room);
                lost.push(room);
            }
        }
        for room in &lost {
            self.send(protocol::room_error(texts::UNAUTHORIZED, room));
        }
        self.answer(callback, None);
    }

    /// Enforced expiry: the token ran out without a fresh authenticate.
    fn expire(&mut self) {
        let Some(state) = self.state.as_mut() else { return };
        if state.auth.take().is_some() {
            crate::metrics::authenticated_changed(-1.0);
        }
        state.decisions.clear();
        state.subscriptions.leave_all();
        self.send(protocol::error(texts::JWT_EXPIRED));
    }

    async fn subscribe(&mut self, callback: Option<i64>, room: &str, history_count: u32, history_since: Option<&str>) {
        if !self.control_allowed(callback) {
            return;
        }
        let limits = &self.app.config.limits;
        let Ok(room) = RoomName::parse(room, limits.max_room_name_bytes) else {
            crate::metrics::refused(crate::metrics::reason::INVALID_ROOM);
            return self.answer(callback, Some(texts::INVALID_ROOM));
        };
        let Some(state) = self.state.as_mut() else { return };
        let decision = state.decide_once(&room);
        if !decision.subscribe {
            return self.answer(callback, Some(texts::UNAUTHORIZED));
        }
        state.subscriptions.forget_evicted(Some(&room));
        let already = state.subscriptions.rooms.contains_key(&room);
        if !already && state.subscriptions.rooms.len() >= limits.max_subscriptions {
            state.subscriptions.forget_evicted(None);
            if state.subscriptions.rooms.len() >= limits.max_subscriptions {
                crate::metrics::refused(crate::metrics::reason::TOO_MANY_SUBSCRIPTIONS);
                return self.answer(callback, Some(texts::TOO_MANY_SUBSCRIPTIONS));
            }
        }
        let subscriber = Subscriber {
            outbox: self.outbox.clone(),
            member: Arc::clone(&state.member),
        };
        let request = SubscribeRequest {
            conn: self.conn,
            callback,
            history_count,
            history_since,
            allowance: decision.history,
        };
        match self
            .app
            .broker
            .subscribe(&state.channel, &room, subscriber, request)
            .await
        {
            Ok(subscription) => {
                if subscription.joined == Joined::New {
                    crate::metrics::subscriptions_changed(1.0);
                    state.subscriptions.rooms.insert(room.clone(), subscription.room);
                }
                // A group removal that landed between the check and the join
                // found nothing to evict: check again, now that we are in.
                if crate::groups::group_of_room(room.as_str()).is_some()
                    && !state.decide_once(&room).subscribe
                    && state.subscriptions.leave(&room)
                {
                    self.send(protocol::room_error(texts::UNAUTHORIZED, &room));
                }
            }
            Err(error) => {
                debug!(%error, "subscribe failed");
                self.answer(callback, Some(texts::UNAVAILABLE));
            }
        }
    }

    fn unsubscribe(&mut self, callback: Option<i64>, room: &str) {
        if !self.control_allowed(callback) {
            return;
        }
        let Ok(room) = RoomName::parse(room, self.app.config.limits.max_room_name_bytes) else {
            crate::metrics::refused(crate::metrics::reason::INVALID_ROOM);
            return self.answer(callback, Some(texts::INVALID_ROOM));
        };
        if let Some(state) = self.state.as_mut() {
            state.subscriptions.leave(&room);
        }
        if let Some(callback) = callback {
            self.send(protocol::reply(callback, None));
        }
    }

    async fn publish(&mut self, callback: Option<i64>, room: &str, message: &serde_json::value::RawValue) {
        let limits = &self.app.config.limits;
        let Ok(room) = RoomName::parse(room, limits.max_room_name_bytes) else {
            crate::metrics::refused(crate::metrics::reason::INVALID_ROOM);
            return self.answer(callback, Some(texts::INVALID_ROOM));
        };
        let Some(state) = self.state.as_mut() else { return };
        if !state.publish_rate.try_take() {
            crate::metrics::refused("rate_limit");
            return self.answer(callback, Some(texts::RATE_LIMITED));
        }
        if !state.decide(&room).publish {
            crate::metrics::refused("unauthorized");
            return self.answer(callback, Some(texts::UNAUTHORIZED));
        }
        let draft = Draft {
            message: message.to_owned(),
            client_id: Some(state.client_id.clone()),
            user: state.auth.as_ref().and_then(|auth| auth.user.clone()),
        };
        let published = self
            .app
            .broker
            .publish(&state.channel, &room, draft, Ack::Delivered)
            .await;
        match published {
            Ok(_) => {
                crate::metrics::published("websocket");
                if let Some(callback) = callback {
                    self.send(protocol::reply(callback, None));
                }
            }
            Err(error) => {
                crate::metrics::refused(crate::metrics::reason::UNAVAILABLE);
                debug!(%error, "publish failed");
                let text = match error {
                    EngineError::UnknownChannel => texts::UNKNOWN_CHANNEL,
                    EngineError::Store(_) | EngineError::Unavailable(_) => texts::UNAVAILABLE,
                };
                self.answer(callback, Some(text));
            }
        }
    }
}

impl Handshaken {
    /// The decision for publishing to `room`: the token's, computed once per
    /// (connection, room) and cached, then the group membership (not cached).
    fn decide(&mut self, room: &RoomName) -> Decision {
        let decision = if !self.credentials.config.require_auth {
            Decision::OPEN
        } else {
            match &self.auth {
                Some(auth) => self.decisions.decide(&auth.permissions, room.as_str()),
                None => Decision::DENY,
            }
        };
        self.in_group(room, decision)
    }

    /// The decision for a subscribe: not cached, because a subscribe happens once per
    /// room, and an idle subscriber should not carry a cache it never reads.
    fn decide_once(&self, room: &RoomName) -> Decision {
        let decision = if !self.credentials.config.require_auth {
            Decision::OPEN
        } else {
            match &self.auth {
                Some(auth) => auth.permissions.decide(room.as_str()),
                None => Decision::DENY,
            }
        };
        self.in_group(room, decision)
    }

    /// `decision` for a room that is no group's; for a group room, `decision`
    /// only while the connection's user is a member now (PROTOCOL.md §11.1),
    /// whatever the token says.
    fn in_group(&self, room: &RoomName, decision: Decision) -> Decision {
        let Some(group) = crate::groups::group_of_room(room.as_str()) else {
            return decision;
        };
        let user = self.auth.as_ref().and_then(|auth| auth.user.as_deref());
        match user {
            Some(user) if self.groups.is_member(&self.channel.id, group, user) => decision,
            _ => Decision::DENY,
        }
    }
}

impl Drop for Handshaken {
    fn drop(&mut self) {
        if self.auth.is_some() {
            crate::metrics::authenticated_changed(-1.0);
        }
    }
}

/// The rooms one connection is subscribed to; leaves them all when dropped.
struct Subscriptions {
    app: Arc<App>,
    channel: Arc<Channel>,
    conn: ConnId,
    rooms: HashMap<RoomName, Arc<Room>>,
}

impl Subscriptions {
    /// Leaves `room`; returns whether this connection was still in it.
    fn leave(&mut self, room: &RoomName) -> bool {
        let Some(handle) = self.rooms.remove(room) else {
            return false;
        };
        // An evicted subscription was counted out by the broker already.
        let was = self.app.broker.leave(&self.channel, &handle, self.conn);
        if was {
            crate::metrics::subscriptions_changed(-1.0);
        }
        was
    }

    fn leave_all(&mut self) {
        for (_, handle) in self.rooms.drain() {
            if self.app.broker.leave(&self.channel, &handle, self.conn) {
                crate::metrics::subscriptions_changed(-1.0);
            }
        }
    }

    /// Forgets `room` (or, with `None`, every room) whose room no longer holds
    /// this connection: the broker evicted it (a group removal) and has told
    /// the client and the room's other members.
    fn forget_evicted(&mut self, room: Option<&RoomName>) {
        let conn = self.conn;
        match room {
            Some(room) => {
                if self.rooms.get(room).is_some_and(|handle| !handle.holds(conn)) {
                    self.rooms.remove(room);
                }
            }
            None => self.rooms.retain(|_, handle| handle.holds(conn)),
        }
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        self.leave_all();
    }
}
