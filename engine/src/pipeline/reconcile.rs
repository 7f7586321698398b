//! The reconciler: the store, not the queue, decides what must still run.
//! Every sweep enqueues each unfinished order; the queue ignores orders that
//! already have a job, so only orders whose job was lost (say, Redis
//! restarted empty) get one.

use crate::{
    queue::{Job, Queue},
    store::Store,
};
use std::{sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// Sweeps every `interval` until `shutdown`.
pub async fn reconcile(store: Arc<dyn Store>, queue: Arc<dyn Queue>, interval: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let unfinished = match store.unfinished_orders().await {
            Ok(unfinished) => unfinished,
            Err(e) => {
                tracing::warn!(error = %e, "reconciler: store unavailable");
                continue;
            }
        };
        for order_id in unfinished {
            let job = Job {
                id: format!("reconciled-{order_id}"),
                order_id,
            };
            if let Err(e) = queue.enqueue(job).await {
                tracing::warn!(error = %e, "reconciler: queue unavailable");
                break;
            }
        }
    }
}
