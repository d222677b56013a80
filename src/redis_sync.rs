//! Synchronous Redis access for the blocking stores (accounts, sessions,
//! groups) in cluster mode.
//!
//! The store traits are synchronous (`AccountStore`, `GroupStore`): the redb
//! backend is a function call, and the callers are the blocking pool, the
//! `rookery user` CLI and a few async handlers that call a store directly
//! (`Accounts::session_user` in `POST /auth`, `Groups::is_member` on every
//! subscribe and publish to a group room). [`RedisPool`] gives those callers
//! plain `redis::Connection`s:
//!
//! - a few idle connections are kept and reused; a connection that failed
//!   with anything but a server error reply (I/O, timeout, protocol) is
//!   dropped, never handed out again: after a timed-out read its reply may
//!   still arrive and would answer the next command;
//! - an idle connection the server closed meanwhile (a Redis restart) is
//!   noticed by the call that takes it, which then runs once more on a fresh
//!   connection;
//! - connecting, reading and writing are each bounded by [`TIMEOUT`], so an
//!   unreachable Redis costs a caller at most a few seconds, never a hang;
//! - on a multi-thread Tokio runtime (the server) the call runs inside
//!   [`tokio::task::block_in_place`], so a worker that blocks hands its other
//!   tasks to another thread first; elsewhere (the CLI, `#[tokio::test]`'s
//!   current-thread runtime, plain threads) it simply runs.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use redis::{Connection, ConnectionLike, ErrorKind, RedisError, RedisResult};
use tokio::runtime::{Handle, RuntimeFlavor};

/// Bound on connecting, and on each read and write of a command.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(2);

/// Idle connections kept for reuse; more may be open at once under load,
/// the surplus is closed when returned.
const MAX_IDLE: usize = 8;

/// A small pool of synchronous connections to one Redis.
pub(crate) struct RedisPool {
    client: redis::Client,
    idle: Mutex<Vec<Connection>>,
}

impl RedisPool {
    /// A pool for `url` (`redis://…`). Only parses: no connection is made
    /// until the first call, so a node starts while Redis is down.
    pub(crate) fn new(url: &str) -> RedisResult<RedisPool> {
        Ok(RedisPool {
            client: redis::Client::open(url)?,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Runs `call` on a pooled connection, blocking-aware (see the module docs).
    ///
    /// An idle connection may have died unnoticed (Redis restarted, an idle
    /// timeout): when `call` finds one closed by the peer (end of file, reset,
    /// broken pipe; not a timeout, after which the command may have run), it
    /// runs once more on a fresh connection, so the first requests after a
    /// Redis restart do not fail for nothing.
    pub(crate) fn run<T>(&self, mut call: impl FnMut(&mut Connection) -> RedisResult<T>) -> RedisResult<T> {
        blocking(|| {
            let pooled = self.lock().pop();
            let was_pooled = pooled.is_some();
            let result = self.run_on(pooled, &mut call);
            match result {
                Err(error) if was_pooled && error.is_connection_dropped() && !error.is_timeout() => {
                    self.run_on(None, &mut call)
                }
                result => result,
            }
        })
    }

    /// Runs `call` on `connection` (a new one if `None`) and keeps the
    /// connection for reuse if it is still in step.
    fn run_on<T>(
        &self,
        connection: Option<Connection>,
        call: &mut impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let mut connection = match connection {
            Some(connection) => connection,
            None => self.connect()?,
        };
        let result = call(&mut connection);
        if reusable(&result) && connection.is_open() {
            let mut idle = self.lock();
            if idle.len() < MAX_IDLE {
                idle.push(connection);
            }
        }
        result
    }

    fn connect(&self) -> RedisResult<Connection> {
        let connection = self.client.get_connection_with_timeout(TIMEOUT)?;
        connection.set_read_timeout(Some(TIMEOUT))?;
        connection.set_write_timeout(Some(TIMEOUT))?;
        Ok(connection)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Whether a connection is still in step with the server after `result`: a
/// success or an error reply the server sent (the reply was read whole).
fn reusable<T>(result: &RedisResult<T>) -> bool {
    match result {
        Ok(_) => true,
        Err(error) => is_server_reply(error),
    }
}

fn is_server_reply(error: &RedisError) -> bool {
    matches!(error.kind(), ErrorKind::Server(_))
}

/// Runs blocking `work`: through `block_in_place` on a multi-thread runtime's
/// thread, directly everywhere else (`block_in_place` panics on a
/// current-thread runtime).
pub(crate) fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(work),
        _ => work(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TestRedis;

    #[test]
    fn connections_are_reused_and_broken_ones_dropped() {
        let redis = TestRedis::start();
        let pool = RedisPool::new(&redis.url).unwrap();
        let id = |pool: &RedisPool| pool.run(|c| redis::cmd("CLIENT").arg("ID").query::<i64>(c)).unwrap();
        let first = id(&pool);
        assert_eq!(id(&pool), first, "the idle connection is reused");
        // A server error reply leaves the connection in step: kept.
        let error = pool.run(|c| redis::cmd("NOSUCHCOMMAND").query::<()>(c)).unwrap_err();
        assert!(is_server_reply(&error), "{error}");
        assert_eq!(id(&pool), first);
        // The server closes it while idle: the call notices, drops it and
        // runs again on a new connection.
        let mut other = redis::Client::open(redis.url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(first)
            .query(&mut other)
            .unwrap();
        assert_eq!(killed, 1);
        let mut attempts = 0;
        let second = pool
            .run(|c| {
                attempts += 1;
                redis::cmd("CLIENT").arg("ID").query::<i64>(c)
            })
            .unwrap();
        assert_ne!(second, first);
        assert_eq!(attempts, 2, "the dead connection was tried, then a new one");
        assert_eq!(id(&pool), second, "the new one is kept");
    }

    #[test]
    fn a_connection_that_timed_out_is_dropped_and_not_retried() {
        let redis = TestRedis::start();
        let pool = RedisPool::new(&redis.url).unwrap();
        let first: i64 = pool.run(|c| redis::cmd("CLIENT").arg("ID").query(c)).unwrap();
        let mut attempts = 0;
        // The reply comes after the read timeout: the command may
        // have run, so it is not sent again, and the late reply must not
        // answer the next command.
        let error = pool
            .run(|c| {
                attempts += 1;
                redis::cmd("BLPOP")
                    .arg("never-pushed")
                    .arg(TIMEOUT.as_secs() + 1)
                    .query::<()>(c)
            })
            .unwrap_err();
        assert!(error.is_timeout(), "{error}");
        assert_eq!(attempts, 1);
        let next: i64 = pool.run(|c| redis::cmd("CLIENT").arg("ID").query(c)).unwrap();
        assert_ne!(next, first);
    }

    #[test]
    fn an_unreachable_redis_fails_fast() {
        let pool = RedisPool::new(&crate::test_support::unreachable_redis_url()).unwrap();
        let error = pool.run(|c| redis::cmd("PING").query::<String>(c)).unwrap_err();
        assert!(error.is_io_error() || error.is_connection_refusal(), "{error}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_from_a_multi_thread_runtime_run_in_place() {
        let redis = TestRedis::start();
        let pool = RedisPool::new(&redis.url).unwrap();
        let pong: String = pool.run(|c| redis::cmd("PING").query(c)).unwrap();
        assert_eq!(pong, "PONG");
    }

    #[tokio::test]
    async fn calls_from_a_current_thread_runtime_run_directly() {
        let redis = TestRedis::start();
        let pool = RedisPool::new(&redis.url).unwrap();
        let pong: String = pool.run(|c| redis::cmd("PING").query(c)).unwrap();
        assert_eq!(pong, "PONG");
    }
}
