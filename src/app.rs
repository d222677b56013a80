//! The state shared by every connection and request of one running server.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::config::Config;
use crate::net_limits::IpLimiter;

/// One running server: configuration, broker and lifecycle handles.
pub struct App {
    pub config: Config,
    pub broker: Broker,
    /// Cancelled when the server shuts down; sessions end when they see it.
    pub shutdown: CancellationToken,
    /// Tracks WebSocket sessions, which hyper's graceful shutdown does not see.
    pub sessions: TaskTracker,
    pub ip_limiter: IpLimiter,
}

impl App {
    pub fn new(config: Config, shutdown: CancellationToken) -> Arc<App> {
        let ip_limiter = IpLimiter::new(config.limits.max_connections_per_ip);
        Arc::new(App {
            broker: Broker::new(&config),
            config,
            shutdown,
            sessions: TaskTracker::new(),
            ip_limiter,
        })
    }
}
