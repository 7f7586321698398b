//! Settings of the event bus. A leaf: imports nothing of ours but `domain`.

use crate::domain::Dur;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Bus backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BusBackend {
    /// In-process.
    Memory,
    /// Redis pub/sub, shared by every node.
    Redis,
}

/// The event bus.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// Which bus.
    pub backend: BusBackend,
    /// Events buffered between the bus and the WebSocket hub.
    pub buffer: usize,
    /// Time between PINGs on the Redis subscriber connection. A PING that
    /// misses `health_timeout` (or a dropped connection) marks the
    /// subscriber down (`/ready` 503, `/health` `bus.status` `down`), then
    /// it reconnects, resubscribes every watched order and tells their
    /// watchers to re-read the store.
    pub health_interval: Dur,
    /// Deadline of each subscriber PING, of connecting, and of each
    /// SUBSCRIBE on the subscriber connection.
    pub health_timeout: Dur,
}

impl BusConfig {
    /// Rule problems, each starting with `key` (the section's path).
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.buffer < 1 {
            problems.push(format!("{key}.buffer: must be at least 1"));
        }
        if self.health_interval.0.is_zero() {
            problems.push(format!("{key}.health_interval: must be greater than 0"));
        }
        if self.health_timeout.0.is_zero() {
            problems.push(format!("{key}.health_timeout: must be greater than 0"));
        }
        problems
    }
}
