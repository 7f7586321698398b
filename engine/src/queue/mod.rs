//! The `Queue` seam: jobs to run, claimed with a lease, retried at a time,
//! and the engine-wide claim rate limit. Implementations: [`memory`]
//! (in-process) and [`redis`] (a Stream with a consumer group).
//!
//! May import: `domain`, `telemetry`.

pub mod config;
#[cfg(test)]
pub(crate) mod conformance;
pub mod memory;
pub mod redis;

use crate::domain::OrderId;
use crate::telemetry::PoolStatus;
use async_trait::async_trait;
pub use config::{QueueBackend, QueueConfig, RedisConfig};
pub use memory::{MemoryQueue, MemoryRateLimit};
pub use redis::{RedisQueue, RedisRateLimit};
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
