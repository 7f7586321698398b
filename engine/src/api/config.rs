//! Settings of the HTTP API: the server, authentication, WebSocket streams,
//! order intake and per-client request limits.
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
    /// Time a client has to send a request's headers, counted from the
    /// connection's accept (first request) or from the first byte of the
    /// next request (keep-alive); a connection that is still short of its
    /// headers is closed. Bounds slow-header ("slowloris") clients. A
    /// `POST` body gets as long again after its headers (else 408
    /// `request_timeout`).
    pub header_read_timeout: Dur,
    /// A keep-alive connection with no request for this long is closed.
    pub keep_alive_timeout: Dur,
    /// Most TCP connections open at once on this node (HTTP and WebSocket
    /// alike); a new one beyond it is accepted and closed at once, and
    /// counted in `swapline_http_connections_refused_total`.
    pub max_connections: u32,
    /// Browser origins allowed to call the API, exactly as a browser sends
    /// them in `Origin` (`https://app.example.com`, no path); empty: none.
    /// REST answers CORS headers to these; a WebSocket upgrade from any
    /// other origin gets 403, except from the engine's own (`http://` or
    /// `https://` plus the request's `Host`: the `/console` page).
    /// Requests without `Origin` (not from a browser) are not affected.
    pub allowed_origins: Vec<String>,
}

/// Authentication: API keys (`Authorization: Bearer <secret>`, RFC 6750)
/// and WebSocket tickets.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Every API request needs a key (`SWAPLINE_AUTH__REQUIRED`); without
    /// one it gets 401. `/health`, `/ready` and `/metrics` stay open. When
    /// false, a request without a key may do anything, and one with a key
    /// acts as that key.
    pub required: bool,
    /// How long a WebSocket ticket from `POST /api/ws-tickets` (or in the
    /// `wsUrl` of a new order) stays usable; it is single-use.
    pub ticket_ttl: Dur,
    /// How long a node remembers what an API key's secret authenticated
    /// as (active, revoked, its scopes and limit), so a busy key costs one
    /// store lookup per this time per node instead of one per request.
    /// A revocation takes effect within it. `0s`: every request asks the
    /// store. At most `5m`.
    pub key_cache_ttl: Dur,
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
    /// Most WebSockets open at once from one client IP address on this
    /// node; one more upgrade gets HTTP 429 `too_many_connections`.
    pub max_per_ip: u32,
    /// Longest wait, after the upgrade, for the event bus to confirm the
    /// order's subscription; past it the socket closes with 1011 `bus
    /// unavailable` (no greeting is sent) and the client may reconnect.
    pub subscribe_timeout: Dur,
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
    /// Deadline of an order whose request has no `expiresAt`: it is never
    /// submitted later than this after it was accepted, and fails with
    /// `deadline_exceeded` instead. `0s` turns it off (no deadline).
    pub default_ttl: Dur,
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
        for (field, value) in [
            ("header_read_timeout", self.header_read_timeout),
            ("keep_alive_timeout", self.keep_alive_timeout),
        ] {
            if value.0.is_zero() {
                problems.push(format!("{key}.{field}: must be greater than 0"));
            }
        }
        if self.max_connections < 1 {
            problems.push(format!("{key}.max_connections: must be at least 1"));
        }
        for origin in &self.allowed_origins {
            if let Some(problem) = origin_problem(origin) {
                problems.push(format!("{key}.allowed_origins: {origin:?} {problem}"));
            }
        }
        problems
    }
}

/// What is wrong with an origin, if anything: it must be
/// `scheme://host[:port]`, as RFC 6454 serialises one.
fn origin_problem(origin: &str) -> Option<&'static str> {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Some("must look like https://host[:port]");
    };
    if !["http", "https"].contains(&scheme) {
        return Some("must start with http:// or https://");
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ']) {
        return Some("must be scheme://host[:port], with no path and no trailing slash");
    }
    None
}

impl AuthConfig {
    /// Rule problems, each starting with `key`.
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.ticket_ttl.0.is_zero() {
            problems.push(format!("{key}.ticket_ttl: must be greater than 0"));
        }
        if self.key_cache_ttl.0 > std::time::Duration::from_secs(300) {
            problems.push(format!(
                "{key}.key_cache_ttl: at most 5m (a revoked key must stop working soon)"
            ));
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
        if self.max_per_ip < 1 {
            problems.push(format!("{key}.max_per_ip: must be at least 1"));
        }
        for (field, value) in [
            ("ping_interval", self.ping_interval),
            ("ping_timeout", self.ping_timeout),
            ("subscribe_timeout", self.subscribe_timeout),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn zero_abuse_limits_are_each_reported() {
        let server = ServerConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            public_url: String::new(),
            body_limit_bytes: 65_536,
            shutdown_grace: Dur(Duration::from_secs(10)),
            header_read_timeout: Dur(Duration::ZERO),
            keep_alive_timeout: Dur(Duration::ZERO),
            max_connections: 0,
            allowed_origins: Vec::new(),
        };
        let websocket = WebSocketConfig {
            ping_interval: Dur(Duration::from_secs(20)),
            ping_timeout: Dur(Duration::from_secs(10)),
            client_buffer: 1024,
            max_per_ip: 0,
            subscribe_timeout: Dur(Duration::ZERO),
        };
        let problems = [server.problems("server"), websocket.problems("websocket")].concat();
        for key in [
            "server.header_read_timeout",
            "server.keep_alive_timeout",
            "server.max_connections",
            "websocket.max_per_ip",
            "websocket.subscribe_timeout",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "{key} missing from {problems:?}"
            );
        }
        assert_eq!(problems.len(), 5, "{problems:?}");
    }

    #[test]
    fn origins_must_be_scheme_and_host_without_a_path() {
        assert_eq!(origin_problem("https://app.example.com"), None);
        assert_eq!(origin_problem("http://localhost:5173"), None);
        for bad in ["app.example.com", "https://app.example.com/", "ftp://x", "https://"] {
            assert!(origin_problem(bad).is_some(), "{bad}");
        }
    }
}
