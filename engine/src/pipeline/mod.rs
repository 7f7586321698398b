//! The worker's pipeline: quote → route → build → submit → confirm, with
//! retries of transient failures and every step recorded as an event.
//!
//! The store decides where an order resumes: a job carries only the order
//! id, and `process` reads the order to know its next step, so a retried,
//! recovered or duplicated job does the right thing. Each leg's transaction
//! is recorded on the order before it is sent, and a leg is signed again
//! only once its last transaction provably expired: an order never swaps
//! twice.
//!
//! One file per stage: `quote` (venues' quotes), `route` (strategy and
//! build), `submit` (sign, record, send; retry), `confirm` (poll until
//! landed or expired; the `confirmed` event), and `failure` (codes and
//! the `failed` event); `intake` (the POST use case), `control` (cancel
//! and retry), `keys` (API keys and
//! WebSocket tickets) and `recorder` (every event stored, then published). Never `api`, `config`, `plugins`
//! (wasmtime) or an adapter: only seams.
//!
//! May import: `domain`, `bus`, `chain`, `queue`, `store`, `strategy`, `telemetry`, `venues`.

mod confirm;
pub mod control;
mod failure;
pub mod intake;
pub mod keys;
mod quote;
mod reconcile;
mod recorder;
mod retry;
mod route;
mod stats;
mod submit;
#[cfg(test)]
mod tests;
mod worker;

pub use crate::queue::{Allowance, QueueError};
use crate::{
    chain::{ChainConfig, ChainRpc},
    domain::{Event, EventData, EventKind, Order, OrderId, OrderPatch, Route, TokenRegistry},
    queue::Job,
    store::{NewEvent, Store, StoreError},
    strategy::Chain,
    venues::Venue,
};
pub use control::{CancelError, Cancelled, RetryError};
pub use failure::{Failure, FailureCode, StepError};
pub use intake::{
    Accepted, IdempotencySettings, Intake, KeyedAnswer, KeyedRequest, RequeueError, STALE_IN_FLIGHT, SubmitError,
    fingerprint, requeue_unfinished, sweep_keys,
};
pub use keys::{CreatedKey, IssuedTicket, KeyError, Keys, Rejection};
pub use reconcile::{ReconcilerConfig, reconcile};
pub use recorder::Recorder;
pub use retry::{Backoff, BackoffKind, InvalidBackoff, JitterKind, RetryConfig, RetryPolicy, random_unit};
pub use stats::VenueTracker;
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};
use submit::Mode;
pub use worker::{Worker, WorkerConfig};

/// Timeout of each chain call made to settle the transactions of an order
/// whose pipeline is no longer configured (no stage to take it from).
const SETTLE_RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// What the worker does with a job after `process`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The order is terminal (or gone): ack the job.
    Finished,
    /// A retry is scheduled: put the job back for this long.
    RetryAfter(Duration),
}

/// Per-order-type settings and strategy. An order holds its stage for the
/// whole run, so a reload never changes the strategy under an order.
#[derive(Debug)]
pub struct Stage {
    /// Routing strategies (a fallback chain) and their params.
    pub chain: Chain,
    /// Per-venue quote timeout.
    pub quote_timeout: Duration,
    /// Timeout of each chain RPC call (slot, blockhash, send, statuses).
    pub execute_timeout: Duration,
}

/// The settings a pipeline runs by, from `[retry]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSettings {
    /// Whether and when a failed submission is tried again.
    pub retry: RetryPolicy,
    /// Quotes older than this are fetched again before a retry (unless a
    /// leg of the route already landed).
    pub requote_after: Duration,
    /// How transactions are landed: priority fee estimate, status polling,
    /// rebroadcasts (the engine's keys of `[chain]`).
    pub landing: ChainConfig,
}

/// Everything a worker needs to run orders.
pub struct Pipeline {
    recorder: Recorder,
    venues: Vec<Arc<dyn Venue>>,
    chain: Arc<dyn ChainRpc>,
    landing: ChainConfig,
    stages: RwLock<HashMap<String, Arc<Stage>>>,
    tokens: Arc<TokenRegistry>,
    retry: RetryPolicy,
    requote_after: Duration,
    tracker: VenueTracker,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let venues: Vec<&str> = self.venues.iter().map(|v| v.name()).collect();
        f.debug_struct("Pipeline")
            .field("venues", &venues)
            .field("retry", &self.retry)
            .field("requote_after", &self.requote_after)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Assembles a pipeline: `venues` quote, `chain` lands; `stages` by
    /// order type (`market`).
    pub fn new(
        settings: PipelineSettings,
        recorder: Recorder,
        venues: Vec<Arc<dyn Venue>>,
        chain: Arc<dyn ChainRpc>,
        stages: HashMap<String, Stage>,
        tokens: Arc<TokenRegistry>,
    ) -> Self {
        Pipeline {
            recorder,
            venues,
            chain,
            landing: settings.landing,
            stages: RwLock::new(stages.into_iter().map(|(k, v)| (k, Arc::new(v))).collect()),
            tokens,
            retry: settings.retry,
            requote_after: settings.requote_after,
            tracker: VenueTracker::new(),
        }
    }

    /// The store this pipeline records into.
    pub fn store(&self) -> &Arc<dyn Store> {
        self.recorder.store()
    }

    /// Swaps in new stages (a reload). Orders already running keep the
    /// stage they started with.
    pub fn replace_stages(&self, stages: HashMap<String, Stage>) {
        let stages = stages.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        *self.stages.write().unwrap_or_else(|e| e.into_inner()) = stages;
    }

    /// The current stage of an order type.
    pub fn stage(&self, order_type: &str) -> Option<Arc<Stage>> {
        self.stages
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(order_type)
            .cloned()
    }

    /// Records an event with its patch (stored, then published); a stored
    /// event is progress for the worker's lease.
    async fn emit(
        &self,
        id: OrderId,
        progress: u8,
        message: String,
        data: EventData,
        patch: OrderPatch,
    ) -> Result<Event, StoreError> {
        self.emit_after(id, progress, message, data, patch, None).await
    }

    /// As [`Pipeline::emit`], only if the order's latest event is still
    /// `after_seq` ([`StoreError::Conflict`] otherwise).
    async fn emit_after(
        &self,
        id: OrderId,
        progress: u8,
        message: String,
        data: EventData,
        patch: OrderPatch,
        after_seq: Option<u64>,
    ) -> Result<Event, StoreError> {
        let event = NewEvent {
            message,
            progress,
            data,
            patch,
            after_seq,
        };
        let event = self.recorder.record(id, event).await?;
        worker::progressed();
        Ok(event)
    }

    fn decimals(&self, symbol: &str) -> u8 {
        self.tokens.get(symbol).map_or(0, |t| t.decimals)
    }

    /// Runs an order from wherever the store says it is.
    pub async fn process(&self, job: &Job) -> Result<Outcome, StoreError> {
        let Some(order) = self.store().order(job.order_id).await? else {
            tracing::warn!(order_id = %job.order_id, "job for an unknown order dropped");
            return Ok(Outcome::Finished);
        };
        // A cancelled order is terminal: its job is acked, nothing runs.
        if order.status.is_terminal() {
            return Ok(Outcome::Finished);
        }
        // Past its deadline and never submitted: fail it now rather than
        // route it (the store refuses its submission anyway).
        if !order.was_submitted() && order.expires_at.is_some_and(|at| at.0 <= std::time::SystemTime::now()) {
            return self.finish(self.fail(&order, Failure::deadline(&order), 0, None).await);
        }
        match self.run(&order).await {
            // The store refused the first submission: the deadline passed
            // meanwhile.
            Err(StoreError::Expired(_)) => self.finish(self.fail(&order, Failure::deadline(&order), 0, None).await),
            other => self.finish(other),
        }
    }

    /// An order finished under the run (a cancel won the race, or another
    /// worker ended it): the job is done.
    fn finish(&self, run: Result<Outcome, StoreError>) -> Result<Outcome, StoreError> {
        match run {
            Err(StoreError::Finished(_)) => Ok(Outcome::Finished),
            other => other,
        }
    }

    /// The resume rules: which attempt this is, whether a verdict is owed,
    /// and whether the stored route is kept or the order is routed again.
    async fn run(&self, order: &Order) -> Result<Outcome, StoreError> {
        let Some(stage) = self.stage(order.order_type.as_str()) else {
            let message = format!("no pipeline for order type {}", order.order_type.as_str());
            let failure = Failure::new(FailureCode::NoPipeline, message);
            // A transaction out there may still land: settle it first.
            if let Some(route) = order.route.clone().filter(Route::outstanding) {
                let settle = Mode::Settle(failure);
                let attempt = order.attempts.max(1);
                return self
                    .submit(order, SETTLE_RPC_TIMEOUT, route, attempt, order.last_seq, settle)
                    .await;
            }
            return self.fail(order, failure, order.attempts, None).await;
        };
        // A crash during a submission resumes that same attempt.
        let resuming = order.last_kind == EventKind::Submitted;
        let attempt = if resuming {
            order.attempts.max(1)
        } else {
            order.attempts + 1
        };
        if attempt > self.retry.max_attempts {
            // The process stopped between the last failed attempt and its
            // verdict: give the verdict now.
            let failure = match order.last_error.clone() {
                Some(last) => Failure::new(FailureCode::Venue(last.code), last.message),
                None => Failure::new(FailureCode::RetriesExhausted, "no attempts left"),
            };
            let failure = failure.after_attempts(order.attempts);
            return self.fail(order, failure, order.attempts, None).await;
        }
        if resuming
            && let Some(route) = &order.route
            && route
                .legs
                .iter()
                .any(|l| l.filled_out.is_none() && l.transaction.is_none())
        {
            // Submitted by a version that recorded no transaction per leg:
            // what it sent cannot be polled, so it is never sent again.
            let message = "submitted before transactions were recorded on the order; its outcome cannot be known here";
            let failure = Failure::new(FailureCode::UnknownOutcome, message);
            return self.fail(order, failure, order.attempts, Some(route.clone())).await;
        }
        let stale = order.quoted_at.is_none_or(|at| at.elapsed() > self.requote_after);
        let (route, seq) = match &order.route {
            // A route with a landed leg must not change; neither may one
            // whose transactions may still land (a resumed submission).
            Some(route) if resuming || route.any_filled() || !stale => (route.clone(), order.last_seq),
            _ => match self.route(order, &stage).await {
                Ok(routed) => routed,
                Err(stopped) => return self.settle(order, stopped).await,
            },
        };
        self.submit(order, stage.execute_timeout, route, attempt, seq, Mode::Sign)
            .await
    }
}
