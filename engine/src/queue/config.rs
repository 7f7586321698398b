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
    /// Redis queue: streams the jobs are split over, each with its delayed
    /// set and order markers under one hash tag (`<prefix>:{q<n>}:…`, one
    /// Redis Cluster hash slot), the stream of an order chosen by a hash of
    /// its id. 1 in standalone mode; e.g. 16 in cluster mode, so the load
    /// spreads over the masters. Workers claim from every partition in turn.
    /// Changing it strands the jobs of the partitions that go away: drain
    /// the queue first.
    pub partitions: u16,
}

/// Most `queue.partitions`.
pub const MAX_PARTITIONS: u16 = 1024;

impl QueueConfig {
    /// Rule problems, each starting with `key` (the section's path).
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            problems.push(format!("{key}.partitions: must be between 1 and {MAX_PARTITIONS}"));
        }
        problems
    }
}

/// How the engine reaches Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RedisMode {
    /// One server at `redis.url`.
    Standalone,
    /// A Redis Cluster (Redis 7 or later, for sharded pub/sub) found through
    /// the seed nodes `redis.urls`; commands follow `MOVED`/`ASK` redirects
    /// and the slot map is refreshed after a failover.
    Cluster,
}

/// The smallest `redis.command_timeout`: a blocking read waits up to 200 ms
/// and needs a margin on top.
pub const MIN_COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// Redis connection settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `standalone` (one server, `redis.url`) or `cluster` (seed nodes
    /// `redis.urls`).
    pub mode: RedisMode,
    /// Standalone mode: connection URL, e.g. `redis://127.0.0.1:6379`.
    pub url: String,
    /// Cluster mode: seed nodes, e.g. `["redis://10.0.0.1:7000",
    /// "redis://10.0.0.2:7000"]`; any one that answers gives the slot map.
    /// Ignored in standalone mode.
    pub urls: Vec<String>,
    /// Prefix of every key and channel; isolates deployments and tests.
    pub key_prefix: String,
    /// Connections in each pool (the queue's and the publisher's).
    pub pool_size: usize,
    /// Time to wait for a free pooled connection.
    pub pool_wait_timeout: Dur,
    /// Client-side deadline of every Redis command (a script, a pipeline, a
    /// PUBLISH, the pool's recycling PING). A blocking `XREADGROUP` blocks
    /// for at most 200 ms of it, so its margin is the rest. A connection
    /// that misses it is closed, never handed out again; the caller gets a
    /// transient error (`POST` answers 503).
    pub command_timeout: Dur,
    /// Deadline of opening a connection (TCP connect and handshake), for
    /// pooled connections and the bus subscriber alike.
    pub connect_timeout: Dur,
    /// TCP keepalive on every Redis socket: idle time before the first
    /// probe and time between probes; a peer that misses 3 probes (or leaves
    /// sent data unacknowledged that long, `TCP_USER_TIMEOUT`) is dropped by
    /// the kernel. `0s` leaves the system default (off).
    pub tcp_keepalive: Dur,
}

impl RedisConfig {
    /// Rule problems, each starting with `key` (the section's path).
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.pool_size < 1 {
            problems.push(format!("{key}.pool_size: must be at least 1"));
        }
        if self.command_timeout.0 < MIN_COMMAND_TIMEOUT {
            problems.push(format!(
                "{key}.command_timeout: must be at least {} ms (a blocking read waits up to 200 ms of it)",
                MIN_COMMAND_TIMEOUT.as_millis()
            ));
        }
        if self.connect_timeout.0.is_zero() {
            problems.push(format!("{key}.connect_timeout: must be greater than 0"));
        }
        if self.pool_wait_timeout.0.is_zero() {
            problems.push(format!("{key}.pool_wait_timeout: must be greater than 0"));
        }
        if self.key_prefix.is_empty()
            || self
                .key_prefix
                .contains(|c: char| c.is_whitespace() || c == '{' || c == '}')
        {
            problems.push(format!(
                "{key}.key_prefix: must be non-empty without spaces or braces (braces would change the Redis Cluster hash tags)"
            ));
        }
        if self.mode == RedisMode::Cluster && self.urls.is_empty() {
            problems.push(format!("{key}.urls: cluster mode needs at least one seed node"));
        }
        problems
    }
}
