//! What the unit tests share: a temporary directory, an in-memory database,
//! and a Redis server (a `redis-server` child process on a loopback port,
//! without persistence, killed on drop; it panics, never skips, when
//! `redis-server` is not installed — `scripts/test.sh` installs it).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ids::random_alphanumeric;

/// A fresh directory under the system's temporary directory, removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("rookery-test-{}", random_alphanumeric(10)));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Where the embedded store's file would be in this directory.
    pub(crate) fn store(&self) -> PathBuf {
        self.0.join("store.redb")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An empty redb database in memory.
pub(crate) fn in_memory_database() -> Arc<redb::Database> {
    let db = redb::Database::builder()
        .create_with_backend(redb::backends::InMemoryBackend::new())
        .expect("an in-memory database");
    Arc::new(db)
}

/// A `redis://` URL on a loopback port nothing listens on.
pub(crate) fn unreachable_redis_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port();
    format!("redis://127.0.0.1:{port}")
}

pub(crate) struct TestRedis {
    child: Child,
    pub(crate) port: u16,
    /// `redis://127.0.0.1:<port>`.
    pub(crate) url: String,
}

impl TestRedis {
    /// On a free port.
    pub(crate) fn start() -> TestRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        TestRedis::start_on(port)
    }

    /// On `port` (e.g. again where a stopped one was); returns once it answers `PING`.
    pub(crate) fn start_on(port: u16) -> TestRedis {
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
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server must be installed for the Redis tests: {e}"));
        let redis = TestRedis {
            child,
            port,
            url: format!("redis://127.0.0.1:{port}"),
        };
        let client = redis::Client::open(redis.url.as_str()).expect("a valid url");
        let deadline = Instant::now() + Duration::from_secs(10);
        while client
            .get_connection_with_timeout(Duration::from_millis(200))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_err()
        {
            assert!(Instant::now() < deadline, "redis-server did not come up on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    /// A plain async connection, for looking at (and tampering with) what the code wrote.
    pub(crate) async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
