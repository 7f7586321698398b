//! The reconciler: the store, not the queue, decides what must still run.
//! Every sweep enqueues each unfinished order; the queue ignores orders that
//! already have a job, so only orders whose job was lost (say, Redis
//! restarted empty) get one.

use crate::domain::Dur;
use crate::{queue::Queue, store::Store};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::{sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// The reconciler.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconcilerConfig {
    /// Run the sweep in worker processes.
    pub enabled: bool,
    /// Time between sweeps.
    pub interval: Dur,
}

impl ReconcilerConfig {
    /// Rule problems, each starting with `key` (the section's path).
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.interval.0.is_zero() {
            problems.push(format!("{key}.interval: must be greater than 0"));
        }
        problems
    }
}

/// Sweeps every `interval` until `shutdown`.
pub async fn reconcile(store: Arc<dyn Store>, queue: Arc<dyn Queue>, interval: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = super::requeue_unfinished(store.as_ref(), queue.as_ref(), "reconciled").await {
            tracing::warn!(error = %e, "reconciler: sweep stopped; the next one tries again");
        }
    }
}
