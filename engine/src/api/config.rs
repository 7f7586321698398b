//! Settings of the HTTP API: the server, WebSocket streams, order intake
//! and per-client request limits.
//! A leaf: imports nothing of ours but `domain`.

use crate::domain::Dur;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// HTTP server settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on (`SWAPLINE_SERVER__BIND`).
    #[schemars(with = "String")]
    pub bind: SocketAddr,
    /// Base URL clients reach this node at, e.g. `https://swap.example.com`;
    /// empty: built from the request's `Host` header.
    pub public_url: String,
    /// Largest request body accepted, bytes (larger: 413).
    pub body_limit_bytes: u64,
    /// Time allowed for in-flight work to finish on shutdown.
    pub shutdown_grace: Dur,
}

/// WebSocket settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebSocketConfig {
    /// How often the server pings each client.
    pub ping_interval: Dur,
    /// A client that has not answered a ping within this time is closed.
    pub ping_timeout: Dur,
    /// Events buffered per client; a client that falls this far behind is
    /// closed with 1013 and can reconnect with `?since`.
    pub client_buffer: usize,
}

/// Order intake rules.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrdersConfig {
    /// Slippage in percent used when a request gives none.
    pub default_slippage: f64,
    /// Largest page of `GET /api/orders`.
    pub max_page_size: u32,
    /// How long an `Idempotency-Key` and its answer are kept; a repeat
    /// within this time is answered from the store, after it the key makes
    /// a new order. Expired keys are swept periodically.
    pub idempotency_ttl: Dur,
    /// How long a request waits for the answer of an earlier request with
    /// the same `Idempotency-Key` that is still being handled (then replays
    /// it), before it is refused with 409 `idempotency_key_in_use`.
    pub idempotency_wait: Dur,
    /// Refuse `POST /api/orders/execute` without an `Idempotency-Key` (400
    /// `missing_idempotency_key`).
    pub require_idempotency_key: bool,
}

/// Per-client request limits of the API, shared by every API node (in Redis
/// when `queue.backend = "redis"`, else in this process).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// `POST /api/orders/execute` requests a minute per client (per API key,
    /// or per client address without one), as a token bucket: a client may
    /// send this many at once, then this many a minute. More get 429
    /// `rate_limited` with `Retry-After`. A key's own `orders_per_minute`
    /// overrides it. 0 turns the limit off.
    pub orders_per_minute: u32,
}

impl LimitsConfig {
    /// Rule problems, each starting with `key` (none yet: every value is
    /// valid).
    pub fn problems(&self, _key: &str) -> Vec<String> {
        Vec::new()
    }
}

impl ServerConfig {
    /// Rule problems, each starting with `key` (the section's path).
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let url = &self.public_url;
        if !(url.is_empty()
            || ["http://", "https://", "ws://", "wss://"]
                .iter()
                .any(|s| url.starts_with(s)))
        {
            problems.push(format!(
                "{key}.public_url: {url:?} must start with http://, https://, ws:// or wss://"
            ));
        }
        if self.body_limit_bytes < 256 {
            problems.push(format!("{key}.body_limit_bytes: must be at least 256"));
        }
        problems
    }
}

impl WebSocketConfig {
    /// Rule problems, each starting with `key`.
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.client_buffer < 1 {
            problems.push(format!("{key}.client_buffer: must be at least 1"));
        }
        for (field, value) in [
            ("ping_interval", self.ping_interval),
            ("ping_timeout", self.ping_timeout),
        ] {
            if value.0.is_zero() {
                problems.push(format!("{key}.{field}: must be greater than 0"));
            }
        }
        problems
    }
}

impl OrdersConfig {
    /// `default_slippage` in basis points.
    ///
    /// # Errors
    /// The problem, as [`OrdersConfig::problems`] words it, when the value
    /// is outside (0, 50] or has more than 2 decimals.
    pub fn default_slippage_bps(&self, key: &str) -> Result<u32, String> {
        let slippage = self.default_slippage;
        if !(slippage > 0.0 && slippage <= 50.0) {
            return Err(format!("{key}.default_slippage: {slippage} is outside (0, 50]"));
        }
        crate::domain::slippage_bps(&slippage.to_string())
            .map_err(|_| format!("{key}.default_slippage: {slippage} must have at most 2 decimals"))
    }

    /// Rule problems, each starting with `key`.
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut problems: Vec<String> = self.default_slippage_bps(key).err().into_iter().collect();
        if self.max_page_size < 1 {
            problems.push(format!("{key}.max_page_size: must be at least 1"));
        }
        if self.idempotency_ttl.0 < std::time::Duration::from_secs(1) {
            problems.push(format!("{key}.idempotency_ttl: must be at least 1s"));
        }
        if self.idempotency_wait.0 > std::time::Duration::from_secs(60) {
            problems.push(format!(
                "{key}.idempotency_wait: must be at most 60s (a client waiting longer has likely given up)"
            ));
        }
        problems
    }
}
