//! The worker loop: claim a job (within the concurrency and the rate limit),
//! heartbeat its lease while the pipeline runs it, then ack or re-queue it.
//! A job waiting for its retry holds no slot. Imports the `queue` seam and
//! the pipeline; never `api`, `config` or an adapter.

use super::{Outcome, Pipeline};
use crate::domain::Dur;
use crate::queue::{Lease, Queue, RateLimit};
use crate::telemetry::event;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// The worker that runs orders.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Whether `swapline serve` also runs a worker in-process.
    pub enabled: bool,
    /// Orders processed at once.
    pub concurrency: usize,
    /// Orders claimed per minute across the engine; 0 disables the limit.
    pub rate_limit_per_minute: u32,
    /// A claimed job not heartbeated for this long is given to another worker.
    pub lease: Dur,
}

impl WorkerConfig {
    /// Rule problems, each starting with `key` (the section's path).
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.concurrency < 1 {
            problems.push(format!("{key}.concurrency: must be at least 1"));
        }
        if self.lease.0.is_zero() {
            problems.push(format!("{key}.lease: must be greater than 0"));
        }
        problems
    }
}

/// Runs jobs from a queue through a pipeline. While the store is down it
/// stops claiming, and resumes when a ping answers.
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

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").finish_non_exhaustive()
    }
}

/// How long a claim waits before the loop looks at shutdown again.
const CLAIM_WAIT: Duration = Duration::from_secs(1);
/// How long the loop waits before pinging a store that was down again.
const STORE_PING_PAUSE: Duration = Duration::from_secs(1);
/// How long the loop waits after a failed claim before claiming again.
const CLAIM_ERROR_PAUSE: Duration = Duration::from_secs(1);
/// When a job whose order hit a store error runs again.
const STORE_ERROR_RETRY: Duration = Duration::from_secs(1);

/// How a job's run left the store, as far as the worker loop cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobRun {
    /// The store answered (or was not needed): keep claiming.
    StoreOk,
    /// The store was unreachable: stop claiming until a ping answers.
    StoreDown,
}

impl Worker {
    /// Runs until `shutdown`, then lets running jobs finish for up to `grace`.
    pub async fn run(self, shutdown: CancellationToken, grace: Duration) {
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let tracker = TaskTracker::new();
        let store_down = Arc::new(AtomicBool::new(false));
        let recovery = tokio::spawn(recover_stalled(self.queue.clone(), self.lease, shutdown.clone()));
        tracing::info!(concurrency = self.concurrency, "worker started");
        event::worker_running(1.0);
        loop {
            let slot = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            };
            // Claiming while the store is down would only bounce jobs.
            if store_down.load(Ordering::Relaxed) {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    up = self.pipeline.store().ping() => match up {
                        Ok(()) => {
                            tracing::info!("store reachable again; claiming jobs");
                            store_down.store(false, Ordering::Relaxed);
                        }
                        Err(_) => {
                            tokio::time::sleep(STORE_PING_PAUSE).await;
                            continue;
                        }
                    },
                }
            }
            let claimed = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                claimed = self.queue.claim(CLAIM_WAIT) => claimed,
            };
            let lease = match claimed {
                Ok(Some(lease)) => {
                    event::job_claimed();
                    lease
                }
                Ok(None) => continue,
                Err(e) => {
                    event::backend_error("queue");
                    tracing::warn!(error = %e, pause = ?CLAIM_ERROR_PAUSE, "claim failed; retrying");
                    tokio::time::sleep(CLAIM_ERROR_PAUSE).await;
                    continue;
                }
            };
            let (pipeline, queue, limit, lease_len) = (
                self.pipeline.clone(),
                self.queue.clone(),
                self.rate_limit.clone(),
                self.lease,
            );
            let (shutdown, store_down) = (shutdown.clone(), store_down.clone());
            tracker.spawn(async move {
                if run_job(pipeline, queue, limit, lease, lease_len, shutdown).await == JobRun::StoreDown {
                    store_down.store(true, Ordering::Relaxed);
                }
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
        event::worker_running(-1.0);
        tracing::info!("worker stopped");
    }
}

/// Runs one claimed job: heartbeat, rate limit, the pipeline, then ack or
/// re-queue it.
async fn run_job(
    pipeline: Arc<Pipeline>,
    queue: Arc<dyn Queue>,
    limit: Arc<dyn RateLimit>,
    lease: Lease,
    lease_len: Duration,
    shutdown: CancellationToken,
) -> JobRun {
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
            return JobRun::StoreOk;
        }
        limited = timed(limit.acquire()) => match limited {
            (Err(e), _) => tracing::warn!(error = %e, "rate limit unavailable; running the job anyway"),
            (Ok(()), waited) if waited > Duration::from_millis(1) => event::rate_limited(),
            (Ok(()), _) => {}
        },
    }
    let outcome = pipeline.process(&lease.job).await;
    heartbeat.abort();
    let run = match &outcome {
        Err(e) if e.is_transient() => JobRun::StoreDown,
        _ => JobRun::StoreOk,
    };
    let settled = match outcome {
        Ok(Outcome::Finished) => {
            event::job_acked();
            queue.ack(&lease).await
        }
        Ok(Outcome::RetryAfter(delay)) => {
            event::job_retried();
            queue.retry_after(&lease, delay).await
        }
        Err(e) => {
            event::backend_error("store");
            event::job_retried();
            tracing::warn!(order_id = %lease.job.order_id, error = %e, retry_in = ?STORE_ERROR_RETRY, "store error; the job runs again");
            queue.retry_after(&lease, STORE_ERROR_RETRY).await
        }
    };
    if let Err(e) = settled {
        tracing::warn!(job = %lease.job.id, error = %e, "could not settle the job");
    }
    run
}

/// Runs a future and measures it.
async fn timed<T>(future: impl std::future::Future<Output = T>) -> (T, Duration) {
    let started = tokio::time::Instant::now();
    let output = future.await;
    (output, started.elapsed())
}

async fn recover_stalled(queue: Arc<dyn Queue>, lease: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(lease / 2);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => match queue.recover_stalled().await {
                Ok(0) => {}
                Ok(n) => {
                    event::jobs_recovered(n);
                    tracing::warn!(recovered = n, "re-queued jobs whose lease lapsed");
                }
                Err(e) => tracing::warn!(error = %e, "stalled-job recovery failed"),
            },
        }
    }
}
