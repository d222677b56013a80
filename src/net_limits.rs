//! Connection limiters: how many sockets the server holds, overall and per
//! source IP (PROTOCOL.md §10).
//!
//! Two layers use them:
//! - [`ConnectionLimits`] counts every accepted TCP connection, HTTP or
//!   WebSocket, so that one source (or all of them together) cannot exhaust the
//!   process's descriptors. The slot lives inside the connection's I/O object,
//!   so an upgraded WebSocket keeps holding the slot its HTTP connection took,
//!   and the slot is freed exactly when the socket is closed.
//! - [`IpLimiter`] counts WebSocket sessions per source IP
//!   (`max_connections_per_ip`), checked before the upgrade.
//!
//! Both are plain counters behind a mutex (per IP) or an atomic (overall); an
//! accept or upgrade takes them once, a close releases them once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

type Counts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// Counts connections per source IP against a limit (0 = unlimited).
pub struct IpLimiter {
    limit: usize,
    counts: Counts,
}

/// One counted connection; releases its slot when dropped.
pub struct IpSlot {
    ip: IpAddr,
    counts: Option<Counts>,
}

impl IpLimiter {
    pub fn new(limit: usize) -> Self {
        IpLimiter {
            limit,
            counts: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Takes a slot for `ip`, or `None` when it already has `limit` connections.
    pub fn acquire(&self, ip: IpAddr) -> Option<IpSlot> {
        if self.limit == 0 {
            return Some(IpSlot { ip, counts: None });
        }
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            ip,
            counts: Some(Arc::clone(&self.counts)),
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Some(counts) = &self.counts {
            let mut counts = counts.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(count) = counts.get_mut(&self.ip) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&self.ip);
                }
            }
        }
    }
}

/// Why an accepted connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The server holds `max_http_connections` already: `503`.
    Overall,
    /// This source IP holds `max_http_connections_per_ip` already: `429`.
    PerIp,
}

/// The caps on open TCP connections (HTTP and WebSocket alike); 0 = unlimited.
pub(crate) struct ConnectionLimits {
    max_total: usize,
    open: Arc<AtomicUsize>,
    per_ip: IpLimiter,
}

/// One open connection's place under [`ConnectionLimits`]; freed when dropped.
pub(crate) struct ConnectionSlot {
    open: Arc<AtomicUsize>,
    _ip: IpSlot,
}

impl ConnectionLimits {
    pub(crate) fn new(max_total: usize, max_per_ip: usize) -> Self {
        ConnectionLimits {
            max_total,
            open: Arc::new(AtomicUsize::new(0)),
            per_ip: IpLimiter::new(max_per_ip),
        }
    }

    /// Takes a slot for a connection from `ip`. The overall cap is checked
    /// first: when the server is full, the answer is 503 for everyone.
    pub(crate) fn acquire(&self, ip: IpAddr) -> Result<ConnectionSlot, Refusal> {
        let taken = self.open.fetch_add(1, Ordering::AcqRel);
        if self.max_total != 0 && taken >= self.max_total {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Overall);
        }
        match self.per_ip.acquire(ip) {
            Some(ip_slot) => {
                crate::metrics::http_connection_opened();
                Ok(ConnectionSlot {
                    open: Arc::clone(&self.open),
                    _ip: ip_slot,
                })
            }
            None => {
                self.open.fetch_sub(1, Ordering::AcqRel);
                Err(Refusal::PerIp)
            }
        }
    }

    /// Connections open now.
    #[cfg(test)]
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        crate::metrics::http_connection_closed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_limiter_counts_and_releases() {
        let limiter = IpLimiter::new(2);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = limiter.acquire(ip).unwrap();
        let _b = limiter.acquire(ip).unwrap();
        assert!(limiter.acquire(ip).is_none());
        assert!(limiter.acquire("127.0.0.2".parse().unwrap()).is_some());
        drop(a);
        assert!(limiter.acquire(ip).is_some());
        assert!(IpLimiter::new(0).acquire(ip).is_some());
    }

    #[test]
    fn connection_limits_cap_overall_then_per_ip() {
        let limits = ConnectionLimits::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = limits.acquire(a).unwrap();
        let _a2 = limits.acquire(a).unwrap();
        assert_eq!(limits.acquire(a).err(), Some(Refusal::PerIp));
        assert_eq!(limits.open(), 2, "a per-IP refusal gives its overall place back");
        let _b1 = limits.acquire(b).unwrap();
        assert_eq!(limits.acquire(b).err(), Some(Refusal::Overall));
        drop(a1);
        assert_eq!(limits.open(), 2);
        assert!(limits.acquire(b).is_ok());
    }

    #[test]
    fn zero_means_unlimited() {
        let limits = ConnectionLimits::new(0, 0);
        let ip: IpAddr = "::1".parse().unwrap();
        let slots: Vec<_> = (0..100).map(|_| limits.acquire(ip).unwrap()).collect();
        assert_eq!(limits.open(), 100);
        drop(slots);
        assert_eq!(limits.open(), 0);
    }
}
