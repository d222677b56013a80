//! Limits on failed logins, per username and per source address (§11).
//!
//! Each key keeps the times of its recent failures (at most `limit` of them, so
//! memory per key is bounded). An attempt counts as a failure from the moment
//! it starts ([`LoginThrottle::begin`]: check and count under one lock) until
//! it is known to have succeeded ([`LoginThrottle::succeeded`]). Checking
//! first and counting after the slow password verification would let many
//! concurrent guesses all pass the check. A key with `limit` failures inside the window is
//! locked until the oldest of them leaves the window; that wait is the
//! `Retry-After` of the 429. Keys whose failures have all aged out are dropped
//! whenever the table grows past [`PRUNE_AT`], so a spray of usernames or
//! addresses cannot grow it without bound.
//!
//! IPv6 addresses are counted per /64: one host usually holds a whole /64, so
//! counting single addresses would let it rotate freely.
//!
//! The counters live in this process. Behind a proxy every request comes from
//! the proxy's address and shares one per-IP budget; several nodes each keep
//! their own counters (a Redis-backed counter is a later step).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Table size beyond which stale keys are swept on the next failure. After a
/// sweep the next one waits until the table has doubled, so a table full of
/// fresh keys costs amortized O(1) per failure, not a sweep each time.
const PRUNE_AT: usize = 10_000;

/// The key is locked; try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds for the `Retry-After` header, rounded up and at least 1.
    pub fn seconds(self) -> u64 {
        let whole = self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0);
        whole.max(1)
    }
}

/// Failed-login limits.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleLimits {
    pub per_username: u32,
    pub per_ip: u32,
    pub window: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Ip(IpAddr),
}

/// Sliding-window counters of failed logins.
pub struct LoginThrottle {
    limits: ThrottleLimits,
    failures: Mutex<Failures>,
}

/// Failure times per key, and when to sweep next.
#[derive(Default)]
struct Failures {
    times: HashMap<Key, VecDeque<Instant>>,
    sweep_at: usize,
}

impl LoginThrottle {
    pub fn new(limits: ThrottleLimits) -> LoginThrottle {
        LoginThrottle {
            limits,
            failures: Mutex::new(Failures {
                times: HashMap::new(),
                sweep_at: PRUNE_AT,
            }),
        }
    }

    /// Starts a login attempt: `Err` when the username or the address is
    /// locked at `now`; else the attempt is counted as a failure until
    /// [`succeeded`](Self::succeeded) says otherwise.
    pub fn begin(&self, username: &str, ip: IpAddr, now: Instant) -> Result<(), RetryAfter> {
        let mut failures = self.lock();
        self.check(&failures, username, ip, now)?;
        self.record(&mut failures, username, ip, now);
        Ok(())
    }

    /// The attempt begun at `now` succeeded: the username's failures are
    /// forgotten, and the address loses this attempt's count (only this one:
    /// one correct password does not excuse guessing others).
    pub fn succeeded(&self, username: &str, ip: IpAddr, now: Instant) {
        let mut failures = self.lock();
        failures.times.remove(&Key::User(username.to_owned()));
        if let Some(times) = failures.times.get_mut(&Key::Ip(bucket(ip)))
            && let Some(index) = times.iter().rposition(|t| *t == now)
        {
            times.remove(index);
        }
    }

    /// `Err` when either the username or the address is locked at `now`.
    fn check(&self, failures: &Failures, username: &str, ip: IpAddr, now: Instant) -> Result<(), RetryAfter> {
        let user = Key::User(username.to_owned());
        let waits = [
            self.wait(&failures.times, &user, self.limits.per_username, now),
            self.wait(&failures.times, &Key::Ip(bucket(ip)), self.limits.per_ip, now),
        ];
        match waits.into_iter().flatten().max() {
            Some(wait) => Err(RetryAfter(wait)),
            None => Ok(()),
        }
    }

    /// Counts one failure for both keys.
    fn record(&self, failures: &mut Failures, username: &str, ip: IpAddr, now: Instant) {
        if failures.times.len() >= failures.sweep_at {
            let window = self.limits.window;
            failures
                .times
                .retain(|_, times| times.back().is_some_and(|last| now.duration_since(*last) < window));
            failures.sweep_at = (2 * failures.times.len()).max(PRUNE_AT);
        }
        for (key, limit) in [
            (Key::User(username.to_owned()), self.limits.per_username),
            (Key::Ip(bucket(ip)), self.limits.per_ip),
        ] {
            let times = failures.times.entry(key).or_default();
            times.push_back(now);
            // Only the newest `limit` failures can ever lock the key.
            while times.len() > limit as usize {
                times.pop_front();
            }
        }
    }

    /// How long `key` stays locked, if it is.
    fn wait(
        &self,
        failures: &HashMap<Key, VecDeque<Instant>>,
        key: &Key,
        limit: u32,
        now: Instant,
    ) -> Option<Duration> {
        let times = failures.get(key)?;
        let in_window = times
            .iter()
            .filter(|t| now.duration_since(**t) < self.limits.window)
            .count();
        if in_window < limit as usize {
            return None;
        }
        // `limit` failures in the window: the key opens when the oldest of the
        // newest `limit` leaves it.
        let oldest = times.get(times.len() - limit as usize)?;
        Some((*oldest + self.limits.window).saturating_duration_since(now))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Failures> {
        // A panic while holding the lock cannot leave the counters inconsistent
        // in a way that matters; keep serving.
        self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The address a failure is counted against: IPv4 as is, IPv6 by /64.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(900);

    fn throttle(per_username: u32, per_ip: u32) -> LoginThrottle {
        LoginThrottle::new(ThrottleLimits {
            per_username,
            per_ip,
            window: WINDOW,
        })
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    impl LoginThrottle {
        /// Whether an attempt could begin, without counting one.
        fn would_allow(&self, username: &str, ip: IpAddr, now: Instant) -> Result<(), RetryAfter> {
            self.check(&self.lock(), username, ip, now)
        }

        /// One failed attempt.
        fn fail(&self, username: &str, ip: IpAddr, now: Instant) {
            self.begin(username, ip, now).expect("not locked");
        }
    }

    #[test]
    fn a_username_locks_after_its_limit_until_the_oldest_failure_ages_out() {
        let t = throttle(3, 100);
        let start = Instant::now();
        let a = ip("10.0.0.1");
        for i in 0..3 {
            assert_eq!(t.begin("alice", a, start + Duration::from_secs(i * 10)), Ok(()));
        }
        // Locked, from any address, for the rest of the first failure's window.
        let now = start + Duration::from_secs(30);
        assert_eq!(
            t.begin("alice", ip("10.9.9.9"), now),
            Err(RetryAfter(WINDOW - Duration::from_secs(30)))
        );
        assert_eq!(t.would_allow("bob", a, now), Ok(()));
        assert_eq!(t.would_allow("alice", a, start + WINDOW), Ok(()));
    }

    #[test]
    fn attempts_count_from_their_start_until_they_succeed() {
        let t = throttle(2, 2);
        let now = Instant::now();
        let a = ip("10.0.0.1");
        // Two attempts in flight at once use up the username's budget…
        t.begin("alice", a, now).unwrap();
        t.begin("alice", a, now).unwrap();
        assert!(t.would_allow("alice", a, now).is_err());
        // …until one succeeds: the username is forgiven, and the address
        // loses exactly that one attempt's count.
        t.succeeded("alice", a, now);
        assert_eq!(t.would_allow("alice", a, now), Ok(()));
        t.fail("bob", a, now);
        assert!(
            t.would_allow("carol", a, now).is_err(),
            "the other alice attempt and bob's count"
        );
    }

    #[test]
    fn an_address_locks_across_usernames() {
        let t = throttle(100, 2);
        let now = Instant::now();
        t.fail("alice", ip("10.0.0.1"), now);
        t.fail("bob", ip("10.0.0.1"), now);
        assert!(t.would_allow("carol", ip("10.0.0.1"), now).is_err());
        assert_eq!(t.would_allow("carol", ip("10.0.0.2"), now), Ok(()));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let t = throttle(100, 2);
        let now = Instant::now();
        t.fail("a", ip("2001:db8:1:2::1"), now);
        t.fail("b", ip("2001:db8:1:2:ffff::9"), now);
        assert!(t.would_allow("c", ip("2001:db8:1:2::77"), now).is_err());
        assert_eq!(t.would_allow("c", ip("2001:db8:1:3::1"), now), Ok(()));
        t.fail("a", ip("::ffff:10.0.0.5"), now);
        t.fail("b", ip("10.0.0.5"), now);
        assert!(t.would_allow("c", ip("10.0.0.5"), now).is_err());
    }

    #[test]
    fn memory_per_key_is_bounded_and_stale_keys_are_swept() {
        let t = throttle(2, 2);
        let start = Instant::now();
        for _ in 0..50 {
            let _ = t.begin("alice", ip("10.0.0.1"), start);
        }
        assert!(t.lock().times.values().all(|times| times.len() <= 2));
        // One username and one address per failure: the table fills with fresh keys.
        for i in 0..(PRUNE_AT / 2) as u32 {
            t.fail(&format!("u{i}"), IpAddr::V4(i.into()), start);
        }
        assert!(t.lock().times.len() >= PRUNE_AT);
        t.fail("now", ip("10.0.0.3"), start);
        // Nothing was stale, so the next sweep waits for the table to double.
        assert!(t.lock().sweep_at >= 2 * PRUNE_AT);
        t.lock().sweep_at = PRUNE_AT;
        t.fail("late", ip("10.0.0.2"), start + WINDOW);
        assert_eq!(t.lock().times.len(), 2, "only the fresh keys remain");
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(RetryAfter(Duration::from_millis(1500)).seconds(), 2);
        assert_eq!(RetryAfter(Duration::from_secs(3)).seconds(), 3);
        assert_eq!(RetryAfter(Duration::ZERO).seconds(), 1);
    }
}
