//! The monitor: a periodic task in every process that samples what no
//! single request sees — queue depth and the oldest waiting job, stuck orders
//! (from the store, so across all nodes), pool usage — into gauges, and runs
//! the metrics recorder's upkeep — and this node's bus subscriber state
//! (`swapline_bus_subscriber_up`, also set by the subscriber as it changes).
//!
//! May import: `domain`, `bus`, `queue`, `store`, `telemetry`.

use crate::domain::Dur;
use crate::{
    bus::Bus,
    queue::Queue,
    store::Store,
    telemetry::{self, connection_health, event},
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::{sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// The monitor.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// Time between samples.
    pub interval: Dur,
    /// An unfinished order with no new event for this long counts as stuck.
    pub stuck_after: Dur,
}

impl MonitorConfig {
    /// Rule problems, each starting with `key` (the section's path).
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.interval.0.is_zero() {
            problems.push(format!("{key}.interval: must be greater than 0"));
        }
        if self.stuck_after.0.is_zero() {
            problems.push(format!("{key}.stuck_after: must be greater than 0"));
        }
        problems
    }
}

/// What to sample and how often.
pub struct Monitor {
    /// Source of truth for stuck orders.
    pub store: Arc<dyn Store>,
    /// Queue to sample.
    pub queue: Arc<dyn Queue>,
    /// Bus whose subscriber state to sample.
    pub bus: Arc<dyn Bus>,
    /// Time between samples.
    pub interval: Duration,
    /// An unfinished order with no event for this long is stuck.
    pub stuck_after: Duration,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor").finish_non_exhaustive()
    }
}

impl Monitor {
    /// Samples until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => self.sample().await,
            }
        }
    }

    /// One round of sampling.
    pub async fn sample(&self) {
        telemetry::metrics().run_upkeep();
        connection_health::bus_subscriber(self.bus.health().is_ok());
        match self.queue.depth().await {
            Ok(depth) => event::queue_sampled(depth.waiting, depth.active, depth.delayed, depth.oldest_waiting),
            Err(e) => {
                event::backend_error("queue");
                tracing::debug!(error = %e, "monitor: queue depth unavailable");
            }
        }
        match self.store.stuck_orders(self.stuck_after).await {
            Ok((count, oldest)) => event::stuck_sampled(count, oldest),
            Err(e) => {
                event::backend_error("store");
                tracing::debug!(error = %e, "monitor: store unavailable");
            }
        }
        for pool in [self.store.pool_status(), self.queue.pool_status()]
            .into_iter()
            .flatten()
        {
            event::pool_sampled(pool.pool, pool.connections, pool.idle, pool.waiting);
        }
    }
}
