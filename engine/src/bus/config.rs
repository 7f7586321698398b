//! Settings of the event bus. A leaf: imports nothing of ours.

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
}

impl BusConfig {
    /// Rule problems, each starting with `key` (the section's path).
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.buffer < 1 {
            problems.push(format!("{key}.buffer: must be at least 1"));
        }
        problems
    }
}
