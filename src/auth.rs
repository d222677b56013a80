//! Channel credentials: each channel's settings, token verifier and token issuer,
//! and the one minting path shared by `POST /auth` and `rookery token`.
//!
//! The broker never sees a secret: sessions and the REST API look a channel's
//! credentials up here, decide, and hand the broker only what it needs.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::clock::Clock;
use crate::config::{ChannelConfig, Config};
use crate::policy::Subject;
use crate::token::{TokenIssuer, TokenVerifier};

/// Every channel's credentials, by channel id.
pub struct Credentials {
    channels: HashMap<String, Arc<ChannelAuth>>,
}

impl Credentials {
    pub fn new(config: &Config) -> Credentials {
        let channels = config
            .channels
            .iter()
            .map(|c| {
                (
                    c.id.clone(),
                    Arc::new(ChannelAuth::with_clock(c.clone(), config.clock.clone())),
                )
            })
            .collect();
        Credentials { channels }
    }

    pub fn channel(&self, id: &str) -> Option<&Arc<ChannelAuth>> {
        self.channels.get(id)
    }
}

/// One channel's settings and the keys to check and mint its tokens.
pub struct ChannelAuth {
    pub config: ChannelConfig,
    pub verifier: TokenVerifier,
    pub issuer: TokenIssuer,
    clock: Clock,
}

/// A freshly minted token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minted {
    pub token: String,
    /// Unix seconds.
    pub expires_at: u64,
}

impl ChannelAuth {
    /// Credentials on the system clock (the `rookery token` command).
    pub fn new(config: ChannelConfig) -> ChannelAuth {
        ChannelAuth::with_clock(config, Clock::default())
    }

    pub fn with_clock(config: ChannelConfig, clock: Clock) -> ChannelAuth {
        ChannelAuth {
            verifier: TokenVerifier::new(&config.id, config.secret.expose(), config.jwt_leeway_seconds),
            issuer: TokenIssuer::new(&config.id, config.secret.expose()),
            config,
            clock,
        }
    }

    /// Now, by the clock this channel's tokens are checked against.
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// Mints a token with the channel policy's rules rendered for `client` and,
    /// for a logged-in member, `user` (rules with `{user}` are left out for guests).
    ///
    /// `client` is `None` for REST tokens (no `client` claim; PROTOCOL.md §9);
    /// `ttl_seconds` defaults to the channel's token lifetime.
    pub fn mint(
        &self,
        client: Option<&str>,
        user: Option<&str>,
        data: Option<&Value>,
        ttl_seconds: Option<u64>,
    ) -> Minted {
        self.mint_for(client, user, &[], data, ttl_seconds)
    }

    /// [`ChannelAuth::mint`] for a member of `groups`: the policy's `{group}`
    /// rules are rendered once per group (PROTOCOL.md §11.1).
    pub fn mint_for(
        &self,
        client: Option<&str>,
        user: Option<&str>,
        groups: &[String],
        data: Option<&Value>,
        ttl_seconds: Option<u64>,
    ) -> Minted {
        let permissions = self.config.policy.render_for(&Subject {
            client: client.unwrap_or(""),
            user,
            groups,
        });
        let expires_at = self
            .clock
            .now()
            .saturating_add(ttl_seconds.unwrap_or(self.config.token_ttl_seconds));
        Minted {
            token: self.issuer.mint(client, data, &permissions, expires_at),
            expires_at,
        }
    }
}
