//! The worker loop: claim a job (within the concurrency and the rate limit),
//! heartbeat its lease while the pipeline runs it, then ack or re-queue it.
//! A job waiting for its retry holds no slot.

use super::{Outcome, Pipeline};
use crate::queue::{Lease, Queue, RateLimit};
use std::{sync::Arc, time::Duration};
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Runs jobs from a queue through a pipeline.
pub struct Worker {
    /// The pipeline.
    pub pipeline: Arc<Pipeline>,
    /// Where jobs come from.
    pub queue: Arc<dyn Queue>,
    /// The claim rate limit.
    pub rate_limit: Arc<dyn RateLimit>,
    /// Jobs run at once.
    pub concurrency: usize,
    /// Lease length; heartbeats go out at a third of it.
    pub lease: Duration,
}

/// How long a claim waits before the loop looks at shutdown again.
const CLAIM_WAIT: Duration = Duration::from_secs(1);

impl Worker {
    /// Runs until `shutdown`, then lets running jobs finish for up to `grace`.
    pub async fn run(self, shutdown: CancellationToken, grace: Duration) {
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let tracker = TaskTracker::new();
        let recovery = tokio::spawn(recover_stalled(self.queue.clone(), self.lease, shutdown.clone()));
        tracing::info!(concurrency = self.concurrency, "worker started");
        loop {
            let slot = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            };
            let claimed = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                claimed = self.queue.claim(CLAIM_WAIT) => claimed,
            };
            let lease = match claimed {
                Ok(Some(lease)) => lease,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "claim failed; retrying in 1s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let (pipeline, queue, limit, lease_len) = (
                self.pipeline.clone(),
                self.queue.clone(),
                self.rate_limit.clone(),
                self.lease,
            );
            let shutdown = shutdown.clone();
            tracker.spawn(async move {
                run_job(pipeline, queue, limit, lease, lease_len, shutdown).await;
                drop(slot);
            });
        }
        tracker.close();
        recovery.abort();
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(
                running = tracker.len(),
                "shutdown grace ran out; unfinished orders resume at the next start"
            );
        }
        tracing::info!("worker stopped");
    }
}

async fn run_job(
    pipeline: Arc<Pipeline>,
    queue: Arc<dyn Queue>,
    limit: Arc<dyn RateLimit>,
    lease: Lease,
    lease_len: Duration,
    shutdown: CancellationToken,
) {
    // The heartbeat starts before the rate-limit wait, so a long wait never
    // lets the lease lapse and the job run twice.
    let heartbeat = {
        let (queue, lease) = (queue.clone(), lease.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease_len / 3).await;
                if let Err(e) = queue.heartbeat(&lease).await {
                    tracing::warn!(job = %lease.job.id, error = %e, "heartbeat failed");
                }
            }
        })
    };
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => {
            heartbeat.abort();
            // Not started: hand it back for the next run.
            let _ = queue.retry_after(&lease, Duration::ZERO).await;
            return;
        }
        limited = limit.acquire() => if let Err(e) = limited {
            tracing::warn!(error = %e, "rate limit unavailable; running the job anyway");
        },
    }
    let outcome = pipeline.process(&lease.job).await;
    heartbeat.abort();
    let settled = match outcome {
        Ok(Outcome::Finished) => queue.ack(&lease).await,
        Ok(Outcome::RetryAfter(delay)) => queue.retry_after(&lease, delay).await,
        Err(e) => {
            tracing::warn!(order_id = %lease.job.order_id, error = %e, "store error; the job runs again in 1s");
            queue.retry_after(&lease, Duration::from_secs(1)).await
        }
    };
    if let Err(e) = settled {
        tracing::warn!(job = %lease.job.id, error = %e, "could not settle the job");
    }
}

async fn recover_stalled(queue: Arc<dyn Queue>, lease: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(lease / 2);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => match queue.recover_stalled().await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(recovered = n, "re-queued jobs whose lease lapsed"),
                Err(e) => tracing::warn!(error = %e, "stalled-job recovery failed"),
            },
        }
    }
}
