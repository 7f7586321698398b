//! Settings of the job queue and of the Redis connection it (and the Redis
//! bus) use. A leaf: imports nothing of ours but `domain`.

use crate::domain::Dur;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Queue backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum QueueBackend {
    /// In-process; jobs are rebuilt from the store on restart.
    Memory,
    /// A Redis Stream shared by every node.
    Redis,
}

/// The job queue.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Which queue.
    pub backend: QueueBackend,
}

/// Redis connection settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// Connection URL, e.g. `redis://127.0.0.1:6379`.
    pub url: String,
    /// Prefix of every key and channel; isolates deployments and tests.
    pub key_prefix: String,
    /// Connections in each pool (the queue's and the publisher's).
    pub pool_size: usize,
    /// Time to wait for a free pooled connection.
    pub pool_wait_timeout: Dur,
}

impl RedisConfig {
    /// Rule problems, each starting with `key` (the section's path).
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.pool_size < 1 {
            problems.push(format!("{key}.pool_size: must be at least 1"));
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(char::is_whitespace) {
            problems.push(format!("{key}.key_prefix: must be non-empty without spaces"));
        }
        problems
    }
}
