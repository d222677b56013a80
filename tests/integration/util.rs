//! Test support: start the real server on an ephemeral port and talk to it over
//! real sockets. Every receive has a timeout so that a broken server fails a
//! test instead of hanging it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use rookery::config::{Config, Overrides};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// How long a test waits for a frame it expects.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// The channel that requires auth and that `/auth` mints for.
pub const CHAT: &str = "chat";
pub const CHAT_SECRET: &str = "chat-secret";
/// A channel without `require_auth`.
pub const OPEN: &str = "open";
pub const OPEN_SECRET: &str = "open-secret";

/// A running server.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The server's clock: tests move it instead of sleeping across second boundaries.
    pub clock: rookery::clock::Clock,
    pub shutdown: CancellationToken,
    pub task: Option<JoinHandle<std::io::Result<()>>>,
    _dir: TempDir,
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("rookery-it-{}", rookery::ids::random_alphanumeric(10)));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

impl TestServer {
    /// Starts a server with the `chat` and `open` channels; `extra` is
    /// appended to the config file (e.g. a `[limits]` table or more channels),
    /// and `chat_extra` to the chat channel's table.
    pub async fn start_with(extra: &str, chat_extra: &str) -> TestServer {
        let dir = TempDir::new();
        let file = dir.0.join("rookery.toml");
        let text = format!(
            "listen = \"127.0.0.1:0\"\nauth_channel = \"{CHAT}\"\nshutdown_timeout_seconds = 5\n{extra}\n\
             [[channel]]\nid = \"{CHAT}\"\nsecret = \"{CHAT_SECRET}\"\nrequire_auth = true\n{chat_extra}\n\
             [[channel]]\nid = \"{OPEN}\"\nsecret = \"{OPEN_SECRET}\"\nrequire_auth = false\n"
        );
        std::fs::write(&file, text).unwrap();
        let overrides = Overrides {
            policies_dir: Some(repo().join("policies")),
            static_dir: Some(repo().join("static")),
            data_dir: Some(dir.0.clone()),
            ..Overrides::default()
        };
        let mut config = Config::load(Some(&file), &overrides).expect("test config loads");
        let clock = rookery::clock::Clock::default();
        config.clock = clock.clone();
        let listener = rookery::server::bind(config.listen).unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(rookery::server::run(listener, config, shutdown.clone()));
        TestServer {
            addr,
            clock,
            shutdown,
            task: Some(task),
            _dir: dir,
        }
    }

    pub async fn start() -> TestServer {
        Self::start_with("", "").await
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v3/websocket", self.addr)
    }

    /// A connected WebSocket client that has not handshaken yet.
    pub async fn connect(&self) -> Client {
        Client::connect(&self.ws_url()).await
    }

    /// A client handshaken on `channel`.
    pub async fn client(&self, channel: &str) -> Client {
        let mut client = self.connect().await;
        client.handshake(channel).await;
        client
    }

    /// A client handshaken on `chat` and authenticated with a token from `POST /auth`.
    pub async fn chat_user(&self, name: &str) -> Client {
        let mut client = self.client(CHAT).await;
        let token = self.auth_token(client.id(), Some(name)).await;
        let reply = client.request(json!({"type": "authenticate", "token": token})).await;
        assert_eq!(reply.get("error"), None, "authenticate failed: {reply}");
        client
    }

    /// A token minted by `POST /auth` (urlencoded form).
    pub async fn auth_token(&self, client_id: &str, name: Option<&str>) -> String {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("clientID", client_id);
        if let Some(name) = name {
            form.append_pair("name", name);
        }
        let response = self
            .http(
                "POST",
                "/auth",
                &[("content-type", "application/x-www-form-urlencoded")],
                form.finish().into_bytes(),
            )
            .await;
        assert_eq!(response.status, 200, "{}", response.text());
        response.text()
    }

    /// One HTTP/1.1 request on a fresh connection.
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> HttpResponse {
        http_request(self.addr, method, path, headers, body.into()).await
    }

    /// Cancels the server and waits for `run` to return.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server stops within its deadline")
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A response, fully read.
pub struct HttpResponse {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl HttpResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> HttpResponse {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(body)).unwrap();
    let response = tokio::time::timeout(RECV_TIMEOUT, sender.send_request(request))
        .await
        .expect("HTTP response in time")
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    HttpResponse { status, headers, body }
}

/// A WebSocket client speaking JSON frames.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub client_id: Option<String>,
    next_callback: i64,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("WebSocket connects");
        Client {
            ws,
            client_id: None,
            next_callback: 100,
        }
    }

    pub fn id(&self) -> &str {
        self.client_id.as_deref().expect("handshaken")
    }

    pub async fn send(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// The next JSON frame; panics on timeout, close or a non-text frame.
    pub async fn recv(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(RECV_TIMEOUT, self.ws.next())
                .await
                .expect("a frame within the timeout")
                .expect("the connection is open")
                .expect("no socket error");
            match message {
                Message::Text(text) => return serde_json::from_str(&text).expect("frames are JSON"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Asserts that no data frame arrives for `wait` (keep-alive pings are fine).
    pub async fn expect_silence(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(frame) => panic!("expected no frame, got {frame:?}"),
            }
        }
    }

    /// Waits for the server to end the connection; returns the close frame, if one was sent.
    pub async fn expect_closed(&mut self) -> Option<tokio_tungstenite::tungstenite::protocol::CloseFrame> {
        loop {
            match tokio::time::timeout(RECV_TIMEOUT, self.ws.next())
                .await
                .expect("the connection ends within the timeout")
            {
                None | Some(Err(_)) => return None,
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Sends `frame` with a fresh callback and returns the frame carrying it,
    /// failing if any other frame arrives first.
    pub async fn request(&mut self, mut frame: Value) -> Value {
        let callback = self.next_callback;
        self.next_callback += 1;
        frame["callback"] = json!(callback);
        self.send(frame).await;
        let reply = self.recv().await;
        assert_eq!(
            reply["callback"],
            json!(callback),
            "expected the reply first, got {reply}"
        );
        reply
    }

    pub async fn handshake(&mut self, channel: &str) -> Value {
        let reply = self.request(json!({"type": "handshake", "channel": channel})).await;
        if let Some(id) = reply["client_id"].as_str().filter(|id| !id.is_empty()) {
            self.client_id = Some(id.to_owned());
        }
        reply
    }

    /// Authenticates and asserts that the server accepted the token.
    pub async fn authenticate(&mut self, token: &str) -> Value {
        let reply = self.try_authenticate(token).await;
        assert_eq!(reply.get("error"), None, "authenticate failed: {reply}");
        reply
    }

    /// Authenticates and returns the reply, whatever it says.
    pub async fn try_authenticate(&mut self, token: &str) -> Value {
        self.request(json!({"type": "authenticate", "token": token})).await
    }

    /// Subscribes and returns the reply (members and history frames follow).
    pub async fn subscribe(&mut self, room: &str) -> Value {
        self.request(json!({"type": "subscribe", "room": room})).await
    }

    pub async fn publish(&mut self, room: &str, message: Value) {
        self.send(json!({"type": "publish", "room": room, "message": message}))
            .await;
    }
}

/// Mints a token for `chat` directly, with any permissions and expiry.
pub fn chat_token(client: Option<&str>, permissions: Value, exp: u64, data: Option<Value>) -> String {
    let issuer = rookery::token::TokenIssuer::new(CHAT, CHAT_SECRET);
    let permissions = permissions.as_object().expect("permissions object").clone();
    issuer.mint(client, data.as_ref(), &permissions, exp)
}

pub fn now() -> u64 {
    rookery::token::unix_now()
}

pub fn basic_auth(channel: &str, secret: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{channel}:{secret}"))
    )
}

// ---------------------------------------------------------------------------
// Hostile clients (tests/integration/hostile.rs).

/// The most a TCP socket's send buffer may grow to on this machine (the
/// maximum of `net.ipv4.tcp_wmem`): what the kernel can hold for a peer that
/// does not read, on top of the server's own queue. 4 MiB when unknown.
pub fn kernel_send_buffer_max() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|text| text.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20)
}

impl TestServer {
    /// A client (not handshaken) whose socket has a small, fixed receive buffer,
    /// so that once it stops reading, the server can hand the kernel little
    /// more than its own send buffer before its writes stall.
    pub async fn connect_with_small_receive_buffer(&self) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        // Setting it also turns off receive-buffer autotuning for this socket.
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(self.addr).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(self.ws_url(), MaybeTlsStream::Plain(stream))
            .await
            .expect("WebSocket connects");
        Client {
            ws,
            client_id: None,
            next_callback: 100,
        }
    }

    /// One sample of `/metrics`, e.g. `rookery_refusals_total{limit="too_deep"}`; 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let response = self.http("GET", "/metrics", &[], "").await;
        assert_eq!(response.status, 200);
        response
            .text()
            .lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// The client ids subscribed to `room` of the `open` channel, from the REST API.
    pub async fn open_room_members(&self, room: &str) -> Vec<String> {
        let response = self.http("GET", &format!("/api/{OPEN}/{room}/members"), &[], "").await;
        assert_eq!(response.status, 200, "{}", response.text());
        serde_json::from_value(response.json()).expect("a list of client ids")
    }

    /// Waits (polling the REST API, at most [`RECV_TIMEOUT`]) until `client_id`
    /// is no longer subscribed to `room` of `open`; returns whether it left.
    pub async fn left_open_room(&self, room: &str, client_id: &str) -> bool {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            if !self.open_room_members(room).await.iter().any(|id| id == client_id) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

impl Client {
    /// Handshakes on `channel` with `client_data`; returns the reply.
    pub async fn handshake_with(&mut self, channel: &str, client_data: Value) -> Value {
        let reply = self
            .request(json!({"type": "handshake", "channel": channel, "client_data": client_data}))
            .await;
        if let Some(id) = reply["client_id"].as_str().filter(|id| !id.is_empty()) {
            self.client_id = Some(id.to_owned());
        }
        reply
    }

    /// Reads until the server ends the connection; returns the data frames that
    /// came first and whether it sent a close frame.
    pub async fn drain_until_closed(&mut self) -> (Vec<Value>, bool) {
        let mut frames = Vec::new();
        loop {
            match tokio::time::timeout(RECV_TIMEOUT, self.ws.next())
                .await
                .expect("the connection ends within the timeout")
            {
                None | Some(Err(_)) => return (frames, false),
                Some(Ok(Message::Close(_))) => return (frames, true),
                Some(Ok(Message::Text(text))) => frames.push(serde_json::from_str(&text).expect("frames are JSON")),
                Some(Ok(_)) => continue,
            }
        }
    }
}

// ---- Members (PROTOCOL.md §11) ----

/// `[accounts]` settings with the cheapest Argon2 parameters, so tests that
/// hash passwords stay fast. Pass as (the start of) `extra` to `start_with`.
pub const CHEAP_HASHING: &str = "[accounts]\nargon2_memory_kib = 8\nargon2_iterations = 1\n";

impl TestServer {
    /// `POST path` with an urlencoded form, and the session cookie when given.
    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)], session: Option<&str>) -> HttpResponse {
        let mut form = form_urlencoded::Serializer::new(String::new());
        for (key, value) in fields {
            form.append_pair(key, value);
        }
        let cookie = session.map(|s| format!("rookery_session={s}"));
        let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
        if let Some(cookie) = &cookie {
            headers.push(("cookie", cookie));
        }
        self.http("POST", path, &headers, form.finish().into_bytes()).await
    }

    /// Registers `username` with `password` and display `name`; asserts 201.
    pub async fn register(&self, username: &str, password: &str, name: &str) {
        let response = self
            .post_form(
                "/register",
                &[("username", username), ("password", password), ("name", name)],
                None,
            )
            .await;
        assert_eq!(response.status, 201, "{}", response.text());
    }

    /// Logs in and returns the session cookie's value; asserts 200.
    pub async fn login(&self, username: &str, password: &str) -> String {
        let response = self
            .post_form("/login", &[("username", username), ("password", password)], None)
            .await;
        assert_eq!(response.status, 200, "{}", response.text());
        session_cookie_value(&response).expect("a session cookie")
    }

    /// `POST /auth` for `client_id` with an optional session cookie and name.
    pub async fn auth_as(&self, client_id: &str, session: Option<&str>, name: Option<&str>) -> HttpResponse {
        let mut fields = vec![("clientID", client_id)];
        if let Some(name) = name {
            fields.push(("name", name));
        }
        self.post_form("/auth", &fields, session).await
    }
}

/// The `Set-Cookie` header of a response, if any.
pub fn set_cookie(response: &HttpResponse) -> Option<String> {
    response
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The value `rookery_session` is set to by a response.
pub fn session_cookie_value(response: &HttpResponse) -> Option<String> {
    let cookie = set_cookie(response)?;
    let first = cookie.split(';').next()?;
    let value = first.strip_prefix("rookery_session=")?;
    Some(value.to_owned()).filter(|v| !v.is_empty())
}

/// The claims of a JWT, decoded without checking the signature.
pub fn jwt_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.trim().split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// Starts `rookery serve` as a child process with `config` and the data directory
/// `data_dir` (the repository's policies and static files), and waits for the
/// stdout line that says where it listens. The child is killed when dropped.
pub async fn spawn_rookery(
    config: &Path,
    data_dir: &Path,
    tune: impl FnOnce(&mut tokio::process::Command),
) -> (tokio::process::Child, SocketAddr) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_rookery"));
    command
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--policies-dir")
        .arg(repo().join("policies"))
        .arg("--static-dir")
        .arg(repo().join("static"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    tune(&mut command);
    let mut child = command.spawn().expect("rookery starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("rookery prints its address in time")
        .unwrap()
        .expect("a line on stdout");
    let addr = line
        .rsplit("http://")
        .next()
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (child, addr)
}
