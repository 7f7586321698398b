//! The worker loop: claim a job (within the concurrency and the rate limit),
//! heartbeat its lease while the pipeline runs it and makes progress, then
//! ack or re-queue it. A job waiting for its retry holds no slot. Imports
//! the `queue` seam and the pipeline; never `api`, `config` or an adapter.
//!
//! **Progress.** A running job makes progress when its pipeline starts,
//! each time it stores an event of its order (every stage ends with one:
//! `quoted`, `routed`, `submitted`, `execution-failed`, `confirmed`, …;
//! [`progressed`] is called by `Pipeline::emit` once the store has the
//! event), and each time the chain answers a call (a transaction that takes
//! many slots to land is polled with no event in between). The lease is
//! renewed only while the last progress is less than `stall_timeout` ago
//! (the rate-limit wait before the pipeline starts counts as progress: it
//! waits on us, not on a backend). A job with no progress for
//! `stall_timeout` (its store or chain calls keep failing or never answer)
//! is released: its run is dropped, as a crash would, and the job is
//! re-queued after [`STALL_RETRY`]; the store's state decides where it
//! resumes, and the transactions recorded on the order keep a resumed
//! submission polling them rather than signing new ones.

use super::{Outcome, Pipeline};
use crate::domain::Dur;
use crate::queue::{Lease, Queue, RateLimit};
use crate::telemetry::event;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use tokio::{sync::Semaphore, time::Instant};
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
    /// A running job that stores no event of its order and gets no chain
    /// answer for this long is released (re-queued after a 1 s pause) and
    /// its lease no longer renewed. Keep it above the longest single call a
    /// stage makes (`execute_timeout`, plus the store's `query_timeout`),
    /// or a slow but healthy call is cut and retried.
    pub stall_timeout: Dur,
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
        if self.stall_timeout.0.is_zero() {
            problems.push(format!("{key}.stall_timeout: must be greater than 0"));
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
    /// A job with no progress for this long is released (module doc).
    pub stall_timeout: Duration,
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
/// When a job released for making no progress runs again.
pub(super) const STALL_RETRY: Duration = Duration::from_secs(1);

/// When the running job last made progress (`None`: its pipeline has not
/// started yet).
#[derive(Debug, Clone, Default)]
struct Progress(Arc<Mutex<Option<Instant>>>);

impl Progress {
    fn note(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    fn last(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the lease may be renewed: not started yet, or progress within
    /// `stall_timeout`.
    fn alive(&self, stall_timeout: Duration) -> bool {
        self.last().is_none_or(|at| at.elapsed() < stall_timeout)
    }

    /// Resolves once the job has made no progress for `stall_timeout`.
    async fn stalled(&self, stall_timeout: Duration) {
        loop {
            let since = self.last().unwrap_or_else(Instant::now);
            if since.elapsed() >= stall_timeout {
                return;
            }
            tokio::time::sleep_until(since + stall_timeout).await;
        }
    }
}

tokio::task_local! {
    /// The progress of the job whose pipeline runs in this task.
    static PROGRESS: Progress;
}

/// Notes that the job running in this task made progress; outside a
/// worker's job (a test calling `process` directly) it does nothing.
pub(super) fn progressed() {
    let _ = PROGRESS.try_with(Progress::note);
}

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
            let (pipeline, queue, limit) = (self.pipeline.clone(), self.queue.clone(), self.rate_limit.clone());
            let timing = Timing {
                lease: self.lease,
                stall_timeout: self.stall_timeout,
            };
            let (shutdown, store_down) = (shutdown.clone(), store_down.clone());
            tracker.spawn(async move {
                if run_job(pipeline, queue, limit, lease, timing, shutdown).await == JobRun::StoreDown {
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

/// The lease and stall settings of a job's run.
#[derive(Debug, Clone, Copy)]
struct Timing {
    lease: Duration,
    stall_timeout: Duration,
}

/// Runs one claimed job: heartbeat, rate limit, the pipeline, then ack or
/// re-queue it; releases it when it stalls (module doc).
async fn run_job(
    pipeline: Arc<Pipeline>,
    queue: Arc<dyn Queue>,
    limit: Arc<dyn RateLimit>,
    lease: Lease,
    timing: Timing,
    shutdown: CancellationToken,
) -> JobRun {
    let progress = Progress::default();
    // The heartbeat starts before the rate-limit wait, so a long wait never
    // lets the lease lapse and the job run twice.
    let heartbeat = {
        let (queue, lease, progress) = (queue.clone(), lease.clone(), progress.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(timing.lease / 3).await;
                if !progress.alive(timing.stall_timeout) {
                    // The run is being released; a lapsed lease is the
                    // backstop if that release never reaches the queue.
                    return;
                }
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
    progress.note();
    let run = PROGRESS.scope(progress.clone(), pipeline.process(&lease.job));
    let outcome = tokio::select! {
        outcome = run => outcome,
        () = progress.stalled(timing.stall_timeout) => {
            heartbeat.abort();
            event::job_stalled();
            event::job_retried();
            tracing::warn!(
                order_id = %lease.job.order_id,
                stall_timeout = ?timing.stall_timeout,
                retry_in = ?STALL_RETRY,
                "no progress; the job is released and runs again"
            );
            if let Err(e) = queue.retry_after(&lease, STALL_RETRY).await {
                tracing::warn!(job = %lease.job.id, error = %e, "could not release the job");
            }
            return JobRun::StoreOk;
        }
    };
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
