//! The server's wall clock: Unix seconds, with a seam that tests use to move time.
//!
//! Token expiry is decided in whole seconds, so tests that mint `exp = now + 1`
//! and wait are flaky at a second boundary. Everything that compares a claim
//! with the time asks a [`Clock`] instead; a test advances it and sessions
//! waiting for an enforced expiry re-arm their timers at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// Unix seconds as this server sees them: the system clock plus a test offset.
#[derive(Clone, Default)]
pub struct Clock {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    offset_seconds: AtomicU64,
    changed: Notify,
}

impl Clock {
    /// Now, in Unix seconds.
    pub fn now(&self) -> u64 {
        crate::token::unix_now().saturating_add(self.inner.offset_seconds.load(Ordering::Relaxed))
    }

    /// Moves this clock forward (tests only need forward) and wakes whoever waits on it.
    pub fn advance(&self, seconds: u64) {
        self.inner.offset_seconds.fetch_add(seconds, Ordering::Relaxed);
        self.inner.changed.notify_waiters();
    }

    /// Resolves at the next [`Clock::advance`].
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.changed.notified()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock")
            .field("offset_seconds", &self.inner.offset_seconds.load(Ordering::Relaxed))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn advancing_moves_now_and_wakes_waiters() {
        let clock = Clock::default();
        let before = clock.now();
        let waiter = clock.changed();
        tokio::pin!(waiter);
        waiter.as_mut().enable();
        clock.clone().advance(100);
        waiter.await;
        assert!(clock.now() >= before + 100);
    }
}
