//! The `Queue` seam: jobs to run, claimed with a lease, retried at a time,
//! the engine-wide claim rate limit, and the per-client request limit
//! ([`RequestLimit`]), shared like the queue by every node. Implementations:
//! [`memory`] (in-process) and [`redis`] (a Stream with a consumer group,
//! token buckets in hashes).
//!
//! May import: `domain`, `telemetry`.

pub mod config;
#[cfg(test)]
pub(crate) mod conformance;
pub mod memory;
pub mod pool;
pub mod redis;
#[cfg(test)]
pub(crate) mod test_cluster;

use crate::domain::OrderId;
use crate::telemetry::PoolStatus;
use async_trait::async_trait;
pub use config::{QueueBackend, QueueConfig, RedisConfig, RedisMode};
pub use memory::{MemoryQueue, MemoryRateLimit, MemoryRequestLimit};
pub use redis::{RedisQueue, RedisRateLimit, RedisRequestLimit};
use serde::Serialize;
use std::time::Duration;
use thiserror::Error;

/// A unit of work: run (or resume) one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Job id (given at order creation, kept across retries).
    pub id: String,
    /// The order to run.
    pub order_id: OrderId,
}

/// A claimed job; the holder must heartbeat, then ack or retry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The job.
    pub job: Job,
    /// Distinguishes this claim from later claims of the same job (the
    /// stream entry id with Redis).
    pub token: String,
}

/// Queue depth by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Depth {
    /// Ready to be claimed.
    pub waiting: u64,
    /// Claimed and running.
    pub active: u64,
    /// Waiting for their retry time.
    pub delayed: u64,
    /// Age of the oldest job waiting to be claimed.
    #[serde(skip)]
    pub oldest_waiting: Option<Duration>,
}

/// Queue failures, classified once, by the adapter that saw them.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QueueError {
    /// The backend is unreachable, timed out or busy; retry later.
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// The lease expired and the job went to someone else.
    #[error("lease of job {0} was lost")]
    LeaseLost(String),
    /// The backend refused the command itself (a wrong key type, a missing
    /// permission, a script error): the same call will fail again.
    #[error("queue refused the command: {0}")]
    Rejected(String),
}

impl QueueError {
    /// Whether the same call may succeed later: only when the backend was
    /// unavailable. A lost lease stays lost; a refused command stays
    /// refused.
    pub fn is_transient(&self) -> bool {
        matches!(self, QueueError::Unavailable(_))
    }
}

/// Jobs, durably enough for the backend at hand.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Adds a job; a job for an order already queued or running is ignored.
    async fn enqueue(&self, job: Job) -> Result<(), QueueError>;

    /// Whether `order` has a job here now: waiting, delayed or leased (the
    /// mark [`Queue::enqueue`] checks). `false` before its job is enqueued
    /// and again once the job is acked. Read-only.
    async fn holds(&self, order: OrderId) -> Result<bool, QueueError>;

    /// Claims the next ready job, waiting up to `wait` for one.
    async fn claim(&self, wait: Duration) -> Result<Option<Lease>, QueueError>;

    /// Extends a lease.
    async fn heartbeat(&self, lease: &Lease) -> Result<(), QueueError>;

    /// Finishes a job.
    async fn ack(&self, lease: &Lease) -> Result<(), QueueError>;

    /// Puts a job back, claimable again after `delay`; frees the claim.
    async fn retry_after(&self, lease: &Lease, delay: Duration) -> Result<(), QueueError>;

    /// Hands jobs whose lease lapsed back to the waiting list; returns how many.
    async fn recover_stalled(&self) -> Result<usize, QueueError>;

    /// Depth by state.
    async fn depth(&self) -> Result<Depth, QueueError>;

    /// The connection pool, for metrics (`None`: no pool).
    fn pool_status(&self) -> Option<PoolStatus> {
        None
    }
}

/// The engine-wide limit on claims per minute.
#[async_trait]
pub trait RateLimit: Send + Sync {
    /// Waits until one more claim is allowed.
    async fn acquire(&self) -> Result<(), QueueError>;
}

/// One request counted against a client's limit: whether it may go ahead,
/// and what the `RateLimit` header fields report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// Whether the request may go ahead (a token was taken).
    pub allowed: bool,
    /// The limit applied: requests per minute (the bucket's capacity).
    pub limit: u32,
    /// Requests the client may still send at once (whole tokens left).
    pub remaining: u32,
    /// Time until the next request would be allowed (zero while tokens
    /// are left): the `Retry-After` of a refusal.
    pub retry_after: Duration,
    /// Time until the bucket is full again (the limit fully restored).
    pub reset: Duration,
}

/// A per-client limit on requests: a token bucket per client of
/// `per_minute` tokens, refilled at `per_minute / 60` a second, so a client
/// may burst up to its limit and then goes at the limit's pace. Shared by
/// every API node that uses the same backend.
#[async_trait]
pub trait RequestLimit: Send + Sync {
    /// Counts one request of `client` (a client scope such as `ip:10.0.0.7`
    /// or `key:<id>`) against `per_minute` (at least 1): takes a token if
    /// there is one.
    ///
    /// # Errors
    /// [`QueueError`] when the backend is unreachable (callers let the
    /// request through: a limiter outage is not an API outage).
    async fn check(&self, client: &str, per_minute: u32) -> Result<Allowance, QueueError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unavailable_backend_is_worth_retrying() {
        assert!(QueueError::Unavailable("down".into()).is_transient());
        assert!(!QueueError::LeaseLost("job".into()).is_transient());
        assert!(!QueueError::Rejected("WRONGTYPE".into()).is_transient());
    }
}
