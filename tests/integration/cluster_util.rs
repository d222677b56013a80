//! What the cluster tests share: a `redis-server` child process on a free
//! loopback port and `rookery` nodes (child processes) pointed at it, killed
//! when the test ends. Without `redis-server` on the PATH these fail, loudly.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::util::{
    CHAT, CHAT_SECRET, Client, HttpResponse, OPEN, OPEN_SECRET, RECV_TIMEOUT, TempDir, basic_auth, http_request,
    spawn_rookery,
};

/// A `redis-server` child process without persistence.
pub(crate) struct Redis {
    child: Child,
    pub(crate) port: u16,
}

impl Redis {
    pub(crate) async fn start() -> Redis {
        let port = free_port();
        Redis::start_on(port).await
    }

    pub(crate) async fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("redis-server must be installed for the cluster tests (scripts/test.sh installs it): {e}")
            });
        let redis = Redis { child, port };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !redis.answers().await {
            assert!(tokio::time::Instant::now() < deadline, "redis-server did not come up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        redis
    }

    /// Whether it answers `PING`.
    pub(crate) async fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").await.is_ok()
            && tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut reply))
                .await
                .is_ok_and(|r| r.is_ok())
            && &reply == b"+PONG\r\n"
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The URL of an ACL user's connection (see [`Redis::command`] to create one).
    pub(crate) fn url_as(&self, user: &str, password: &str) -> String {
        format!("redis://{user}:{password}@127.0.0.1:{}", self.port)
    }

    /// Runs one command as the default user and returns the first line of the
    /// reply (`+OK`, `:2`, …); panics on an error reply. Enough for the
    /// administrative commands the fault tests need (`ACL SETUSER`, `CLIENT KILL`).
    pub(crate) async fn command(&self, args: &[&str]) -> String {
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("redis-server is up");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while !reply.ends_with(b"\r\n") {
            let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut byte))
                .await
                .expect("redis-server answers in time")
                .unwrap();
            assert_eq!(read, 1, "redis-server closed the connection after {args:?}");
            reply.push(byte[0]);
        }
        let reply = String::from_utf8_lossy(&reply).trim_end().to_owned();
        assert!(!reply.starts_with('-'), "{args:?} failed: {reply}");
        reply
    }

    pub(crate) async fn stop(mut self) -> u16 {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
        self.port
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `history_size` of the `open` channel on every node.
pub(crate) const OPEN_HISTORY: usize = 50;

/// A `rookery` node of the deployment.
pub(crate) struct Node {
    child: Child,
    pub(crate) addr: SocketAddr,
    _dir: TempDir,
}

impl Node {
    pub(crate) async fn start(redis: &Redis) -> Node {
        Node::start_with(redis, "").await
    }

    /// A node whose configuration has `extra` (top-level keys) besides the usual.
    pub(crate) async fn start_with(redis: &Redis, extra: &str) -> Node {
        Node::start_configured(redis, extra, "").await
    }

    /// A node with `extra` at the top of its configuration and `chat_extra`
    /// in the `chat` channel's table (e.g. `policy = "chat"`).
    pub(crate) async fn start_configured(redis: &Redis, extra: &str, chat_extra: &str) -> Node {
        Node::start_at(&redis.url(), extra, chat_extra).await
    }

    /// A node reaching Redis at `redis_url` (e.g. [`Redis::url_as`] an ACL user).
    pub(crate) async fn start_at(redis_url: &str, extra: &str, chat_extra: &str) -> Node {
        let dir = TempDir::new();
        let config = dir.0.join("rookery.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\nauth_channel = \"{CHAT}\"\nhistory_store = \"memory\"\n\
                 shutdown_timeout_seconds = 2\n{extra}\n\
                 [cluster]\nredis_url = \"{redis_url}\"\nnode_lease_seconds = 2\n\
                 [[channel]]\nid = \"{CHAT}\"\nsecret = \"{CHAT_SECRET}\"\nrequire_auth = true\n{chat_extra}\n\
                 [[channel]]\nid = \"{OPEN}\"\nsecret = \"{OPEN_SECRET}\"\nrequire_auth = false\nhistory_size = {OPEN_HISTORY}\n",
            ),
        )
        .unwrap();
        let (child, addr) = spawn_rookery(&config, &dir.0.join("data"), |command| {
            command.env_remove("ROOKERY_REDIS_URL");
        })
        .await;
        Node { child, addr, _dir: dir }
    }

    /// One HTTP request to the node.
    pub(crate) async fn http(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> HttpResponse {
        http_request(self.addr, method, path, headers, Bytes::from(body.to_owned())).await
    }

    pub(crate) async fn kill9(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    pub(crate) async fn client(&self) -> Client {
        let mut client = Client::connect(&format!("ws://{}/v3/websocket", self.addr)).await;
        client.handshake(OPEN).await;
        client
    }

    /// One sample of the node's `/metrics`, e.g. `rookery_cluster_gap_fills_total`; 0 when absent.
    pub(crate) async fn metric(&self, series: &str) -> f64 {
        let response = http_request(self.addr, "GET", "/metrics", &[], Bytes::new()).await;
        assert_eq!(response.status, 200);
        response
            .text()
            .lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        let auth = basic_auth(OPEN, OPEN_SECRET);
        let path = format!("/api/{OPEN}/{path}");
        let response = http_request(self.addr, "GET", &path, &[("authorization", &auth)], Bytes::new()).await;
        let status = response.status;
        (status, serde_json::from_str(&response.text()).unwrap_or(Value::Null))
    }

    pub(crate) async fn rest_publish(&self, room: &str, message: Value) -> (u16, Value) {
        let auth = basic_auth(OPEN, OPEN_SECRET);
        let path = format!("/api/{OPEN}/{room}/publish");
        let response = http_request(
            self.addr,
            "POST",
            &path,
            &[("authorization", &auth), ("content-type", "application/json")],
            Bytes::from(message.to_string()),
        )
        .await;
        (
            response.status,
            serde_json::from_str(&response.text()).unwrap_or(Value::Null),
        )
    }

    /// Polls `path` until `check` accepts its body (at most [`RECV_TIMEOUT`]).
    pub(crate) async fn eventually(&self, path: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        loop {
            let (status, body) = self.get(path).await;
            if status == 200 && check(&body) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path} never matched; last {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Subscribes and reads the reply; returns it.
pub(crate) async fn subscribe(client: &mut Client, frame: Value) -> Value {
    let mut frame = frame;
    frame["type"] = json!("subscribe");
    client.request(frame).await
}

/// Reads `n` publish frames of `room`.
pub(crate) async fn publishes(client: &mut Client, n: usize) -> Vec<Value> {
    let mut seen = Vec::with_capacity(n);
    while seen.len() < n {
        let frame = client.recv().await;
        if frame["type"] == "publish" {
            seen.push(frame);
        }
    }
    seen
}
