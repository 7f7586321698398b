//! The worker's pipeline: quote → route → build → submit → confirm, with
//! retries of transient failures and every step recorded as an event.
//!
//! The store decides where an order resumes: a job carries only the order
//! id, and `process` reads the order to know its next step, so a retried,
//! recovered or duplicated job does the right thing. A submission reuses the
//! route's signatures, which the venue deduplicates: an order never swaps
//! twice. Imports `domain`, `strategy` (the strategy chain) and the seams'
//! traits; never `api`, `config` or an adapter.

pub mod intake;
mod reconcile;
mod recorder;
mod retry;
mod stats;
mod worker;

use crate::{
    domain::{
        ErrorInfo, Event, EventData, EventKind, Order, OrderId, OrderPatch, QuoteView, Route, RouteLeg, Timestamp,
        TokenRegistry, format_price, format_units, progress,
    },
    queue::Job,
    store::{NewEvent, Store, StoreError},
    strategy::{Chain, ChainFailed, PluginError},
    telemetry,
    venues::{LegOrder, Venue, VenueError},
};
pub use intake::{Accepted, Intake, RequeueError, SubmitError, requeue_unfinished};
pub use reconcile::{ReconcilerConfig, reconcile};
pub use recorder::Recorder;
pub use retry::{Backoff, BackoffKind, InvalidBackoff, JitterKind, RetryConfig, RetryPolicy, random_unit};
use sha2::{Digest, Sha512};
pub use stats::VenueTracker;
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};
use swapline_abi::{OrderInfo, RouteInput, Units, VenueQuote};
use tokio::{task::JoinSet, time::Instant};
pub use worker::{Worker, WorkerConfig};

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
pub struct Stage {
    /// Routing strategies (a fallback chain) and their params.
    pub chain: Chain,
    /// Per-venue quote timeout.
    pub quote_timeout: Duration,
    /// Per-leg execution timeout.
    pub execute_timeout: Duration,
}

/// The settings a pipeline runs by, from `[retry]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSettings {
    /// Whether and when a failed submission is tried again.
    pub retry: RetryPolicy,
    /// Quotes older than this are fetched again before a retry (unless a
    /// leg of the route already executed).
    pub requote_after: Duration,
}

/// Everything a worker needs to run orders.
pub struct Pipeline {
    recorder: Recorder,
    venues: Vec<Arc<dyn Venue>>,
    stages: RwLock<HashMap<String, Arc<Stage>>>,
    tokens: Arc<TokenRegistry>,
    retry: RetryPolicy,
    requote_after: Duration,
    tracker: VenueTracker,
}

/// An order-ending failure: code and words.
struct Failure {
    code: String,
    message: String,
}

impl Failure {
    fn plugin(error: ChainFailed) -> Self {
        Failure {
            code: PluginError::CODE.into(),
            message: format!("{}: {error}", PluginError::CODE),
        }
    }
}

impl Pipeline {
    /// Assembles a pipeline; `stages` by order type (`market`).
    pub fn new(
        settings: PipelineSettings,
        recorder: Recorder,
        venues: Vec<Arc<dyn Venue>>,
        stages: HashMap<String, Stage>,
        tokens: Arc<TokenRegistry>,
    ) -> Self {
        Pipeline {
            recorder,
            venues,
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

    /// Records an event with its patch (stored, then published).
    async fn emit(
        &self,
        id: OrderId,
        progress: u8,
        message: String,
        data: EventData,
        patch: OrderPatch,
    ) -> Result<Event, StoreError> {
        let event = NewEvent {
            message,
            progress,
            data,
            patch,
        };
        self.recorder.record(id, event).await
    }

    /// Fails the order for good; `route` records legs that did execute.
    async fn fail(
        &self,
        order: &Order,
        failure: Failure,
        attempts: u32,
        route: Option<Route>,
    ) -> Result<Outcome, StoreError> {
        let patch = OrderPatch {
            last_error: Some(ErrorInfo {
                code: failure.code.clone(),
                message: failure.message.clone(),
            }),
            route,
            ..OrderPatch::default()
        };
        let data = EventData::Failed {
            error: failure.message.clone(),
            code: failure.code,
            is_final: true,
            total_attempts: attempts,
        };
        self.emit(
            order.id,
            progress::FAILED,
            format!("Order failed: {}", failure.message),
            data,
            patch,
        )
        .await?;
        telemetry::event::order_finished("failed", "", order.created_at.elapsed(), attempts);
        Ok(Outcome::Finished)
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
        if order.status.is_terminal() {
            return Ok(Outcome::Finished);
        }
        match self.run(&order).await {
            Err(StoreError::Finished(_)) => Ok(Outcome::Finished),
            other => other,
        }
    }

    async fn run(&self, order: &Order) -> Result<Outcome, StoreError> {
        let Some(stage) = self.stage(order.order_type.as_str()) else {
            let failure = Failure {
                code: "no_pipeline".into(),
                message: format!("no pipeline for order type {}", order.order_type.as_str()),
            };
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
            let last = order.last_error.clone().unwrap_or(ErrorInfo {
                code: "retries_exhausted".into(),
                message: "no attempts left".into(),
            });
            let failure = Failure {
                code: last.code,
                message: format!("{} (after {} attempts)", last.message, order.attempts),
            };
            return self.fail(order, failure, order.attempts, None).await;
        }
        let stale = order.quoted_at.is_none_or(|at| at.elapsed() > self.requote_after);
        let route = match &order.route {
            // Signatures of a route with an executed leg must not change.
            Some(route) if resuming || route.any_filled() || !stale => route.clone(),
            _ => match self.route(order, &stage).await? {
                Ok(route) => route,
                Err(failure) => return self.fail(order, failure, order.attempts, None).await,
            },
        };
        self.submit(order, &stage, route, attempt).await
    }

    async fn quotes(&self, order: &Order, stage: &Stage) -> Vec<VenueQuote> {
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for venue in self
            .venues
            .iter()
            .filter(|v| v.supports(&order.token_in, &order.token_out))
        {
            let (venue, timeout) = (venue.clone(), stage.quote_timeout);
            let (token_in, token_out, amount) = (order.token_in.clone(), order.token_out.clone(), order.amount_in);
            tasks.spawn(async move {
                let name = venue.name().to_owned();
                let started = std::time::Instant::now();
                match tokio::time::timeout(timeout, venue.quote(&token_in, &token_out, amount)).await {
                    Ok(result) => result
                        .map(|quote| (quote, started.elapsed()))
                        .map_err(|e| (name, e.to_string())),
                    Err(_) => Err((name, "quote timed out".into())),
                }
            });
        }
        let mut quotes = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok((quote, latency))) => {
                    self.tracker.quote_answered(&quote.venue, latency);
                    quotes.push(quote);
                }
                Ok(Err((venue, error))) => {
                    self.tracker.quote_failed(&venue);
                    tracing::warn!(order_id = %order.id, venue, error, "no quote")
                }
                Err(e) => tracing::warn!(order_id = %order.id, error = %e, "quote task failed"),
            }
        }
        // Venue order, not arrival order: strategies see a stable input.
        quotes.sort_by_key(|q| self.venues.iter().position(|v| v.name() == q.venue));
        for quote in &mut quotes {
            quote.stats = self.tracker.stats(&quote.venue);
            // Bins this order cannot reach change no leg's outcome: leaving
            // them out keeps the strategy's input (and its JSON parse) small.
            quote.pool = quote.pool.reachable(order.amount_in);
        }
        telemetry::event::stage("quote", started.elapsed());
        quotes
    }

    fn quote_view(&self, order: &Order, quote: &VenueQuote) -> QuoteView {
        let (din, dout) = (self.decimals(&order.token_in), self.decimals(&order.token_out));
        QuoteView {
            dex: quote.venue.clone(),
            amount_out: format_units(quote.amount_out.0, dout),
            amount_out_base_units: quote.amount_out,
            price: format_price(order.amount_in, din, quote.amount_out.0, dout),
            fee_bps: quote.fee_bps,
            price_impact_bps: quote.price_impact_bps,
            latency_ms: quote.latency_ms,
        }
    }

    /// Quote, let the strategy choose, check its answer, build the legs.
    async fn route(&self, order: &Order, stage: &Stage) -> Result<Result<Route, Failure>, StoreError> {
        let venues = self
            .venues
            .iter()
            .filter(|v| v.supports(&order.token_in, &order.token_out))
            .count();
        self.emit(
            order.id,
            progress::QUOTING,
            format!("Fetching quotes from {venues} DEXs..."),
            EventData::Routing {
                quotes_fetched: None,
                quotes: None,
            },
            OrderPatch::default(),
        )
        .await?;
        let quotes = self.quotes(order, stage).await;
        if quotes.is_empty() {
            return Ok(Err(Failure {
                code: "no_quotes".into(),
                message: format!(
                    "none of {venues} venues quoted {} → {}",
                    order.token_in, order.token_out
                ),
            }));
        }
        let views: Vec<QuoteView> = quotes.iter().map(|q| self.quote_view(order, q)).collect();
        self.emit(
            order.id,
            progress::QUOTED,
            format!("Received {} quotes", quotes.len()),
            EventData::Routing {
                quotes_fetched: Some(quotes.len() as u32),
                quotes: Some(views.clone()),
            },
            OrderPatch {
                quotes: Some((views.clone(), Timestamp::now())),
                ..OrderPatch::default()
            },
        )
        .await?;

        let input = RouteInput {
            order: OrderInfo {
                id: order.id.to_string(),
                token_in: order.token_in.clone(),
                token_out: order.token_out.clone(),
                amount_in: Units(order.amount_in),
                slippage_bps: order.slippage_bps,
            },
            quotes,
            params: Default::default(),
        };
        let started = Instant::now();
        let routed = stage.chain.route(input).await;
        telemetry::event::stage("route", started.elapsed());
        let routed = match routed {
            Ok(routed) => routed,
            Err(e) => return Ok(Err(Failure::plugin(e))),
        };
        let version = order.route.as_ref().map_or(1, |r| r.version + 1);
        let reason = match routed.failed.as_slice() {
            [] => routed.reason,
            failed => {
                let earlier: Vec<String> = failed
                    .iter()
                    .map(|(id, e)| format!("{} failed: {e}", id.name))
                    .collect();
                Some(format!(
                    "{} (fallback after {})",
                    routed.reason.unwrap_or_else(|| routed.by.name.clone()),
                    earlier.join("; ")
                ))
            }
        };
        let route = Route {
            version,
            reason,
            legs: routed
                .legs
                .into_iter()
                .enumerate()
                .map(|(index, leg)| RouteLeg {
                    signature: signature(order.id, version, index),
                    dex: leg.venue,
                    amount_in: Units(leg.amount_in),
                    expected_out: Units(leg.expected_out),
                    min_amount_out: Units(leg.min_amount_out),
                    filled_out: None,
                })
                .collect(),
        };
        let dex = route.dex();
        let strategy = routed.by;
        self.emit(
            order.id,
            progress::ROUTED,
            format!("Building transaction on {dex}..."),
            EventData::Building {
                chosen_dex: Some(dex.clone()),
                route: Some(route.clone()),
                quote: views.iter().find(|v| v.dex == route.legs[0].dex).cloned(),
                strategy: Some(strategy.name.clone()),
            },
            OrderPatch {
                route: Some(route.clone()),
                strategy: Some(strategy),
                ..OrderPatch::default()
            },
        )
        .await?;
        self.emit(
            order.id,
            progress::BUILT,
            "Transaction built, ready to submit".into(),
            EventData::Building {
                chosen_dex: None,
                route: None,
                quote: None,
                strategy: None,
            },
            OrderPatch::default(),
        )
        .await?;
        Ok(Ok(route))
    }

    async fn submit(
        &self,
        order: &Order,
        stage: &Stage,
        mut route: Route,
        attempt: u32,
    ) -> Result<Outcome, StoreError> {
        let max = self.retry.max_attempts;
        let submitted_progress = progress::submitted(attempt);
        self.emit(
            order.id,
            submitted_progress,
            format!("Submitting transaction (attempt {attempt}/{max})..."),
            EventData::Submitted {
                attempt,
                max_attempts: max,
                signatures: route.legs.iter().map(|l| l.signature.clone()).collect(),
            },
            OrderPatch {
                attempts: Some(attempt),
                ..OrderPatch::default()
            },
        )
        .await?;

        let started = Instant::now();
        for index in 0..route.legs.len() {
            if route.legs[index].filled_out.is_some() {
                continue;
            }
            let leg = &route.legs[index];
            let Some(venue) = self.venues.iter().find(|v| v.name() == leg.dex) else {
                let failure = Failure {
                    code: "unknown_venue".into(),
                    message: format!("venue {} is no longer configured", leg.dex),
                };
                return self.fail(order, failure, attempt, Some(route)).await;
            };
            let leg_order = LegOrder {
                order_id: order.id,
                signature: leg.signature.clone(),
                token_in: order.token_in.clone(),
                token_out: order.token_out.clone(),
                amount_in: leg.amount_in.0,
                min_amount_out: leg.min_amount_out.0,
                attempt,
            };
            let result = match tokio::time::timeout(stage.execute_timeout, venue.execute(&leg_order)).await {
                Ok(result) => result,
                Err(_) => Err(VenueError::Transient {
                    code: "execute_timeout".into(),
                    message: format!("{} did not answer within {:?}", leg.dex, stage.execute_timeout),
                }),
            };
            self.tracker.executed(&leg.dex, result.is_ok());
            match result {
                Ok(fill) => route.legs[index].filled_out = Some(Units(fill.amount_out)),
                Err(error) => {
                    return self
                        .failed_attempt(order, route, attempt, submitted_progress, error)
                        .await;
                }
            }
        }

        telemetry::event::stage("submit", started.elapsed());
        let amount_out: u128 = route.legs.iter().filter_map(|l| l.filled_out).map(|u| u.0).sum();
        let (din, dout) = (self.decimals(&order.token_in), self.decimals(&order.token_out));
        let price = format_price(order.amount_in, din, amount_out, dout);
        let dex = route.dex();
        let dex_label = dex.clone();
        let tx_hash = route.legs[0].signature.clone();
        self.emit(
            order.id,
            progress::CONFIRMED,
            "Order successfully executed".into(),
            EventData::Confirmed {
                tx_hash: tx_hash.clone(),
                dex: dex.clone(),
                amount_out: format_units(amount_out, dout),
                executed_price: price.clone(),
            },
            OrderPatch {
                route: Some(route),
                tx_hash: Some(tx_hash),
                dex: Some(dex),
                amount_out: Some(amount_out),
                executed_price: Some(price),
                ..OrderPatch::default()
            },
        )
        .await?;
        telemetry::event::order_finished("confirmed", &dex_label, order.created_at.elapsed(), attempt);
        Ok(Outcome::Finished)
    }

    async fn failed_attempt(
        &self,
        order: &Order,
        route: Route,
        attempt: u32,
        progress: u8,
        error: VenueError,
    ) -> Result<Outcome, StoreError> {
        let info = ErrorInfo {
            code: error.code().to_owned(),
            message: error.to_string(),
        };
        let failure = Failure {
            code: info.code.clone(),
            message: info.message.clone(),
        };
        if !error.is_transient() {
            return self.fail(order, failure, attempt, Some(route)).await;
        }
        let remaining = self.retry.remaining(attempt);
        self.emit(
            order.id,
            progress,
            format!("Attempt {attempt} failed: {error}"),
            EventData::ExecutionFailed {
                error: info.message.clone(),
                code: info.code.clone(),
                transient: true,
                retries_remaining: remaining,
                attempt,
            },
            OrderPatch {
                route: Some(route),
                last_error: Some(info),
                ..OrderPatch::default()
            },
        )
        .await?;
        let Some(delay) = self.retry.retry_after(attempt, random_unit()) else {
            let failure = Failure {
                message: format!("{} (after {attempt} attempts)", failure.message),
                ..failure
            };
            return self.fail(order, failure, attempt, None).await;
        };
        let next = attempt + 1;
        self.emit(
            order.id,
            progress,
            format!(
                "Retrying in {} ms (attempt {next}/{})",
                delay.as_millis(),
                self.retry.max_attempts
            ),
            EventData::RetryPending {
                delay: delay.as_millis() as u64,
                next_attempt: next,
            },
            OrderPatch::default(),
        )
        .await?;
        Ok(Outcome::RetryAfter(delay))
    }
}

/// A leg's deterministic transaction signature: the same order, route
/// version and leg always sign the same, so the venue can deduplicate.
pub fn signature(order: OrderId, route_version: u32, leg: usize) -> String {
    let digest = Sha512::digest(format!("swapline/v1|{order}|{route_version}|{leg}"));
    bs58::encode(digest).into_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_deterministic_and_distinct() {
        let id = OrderId::new();
        assert_eq!(signature(id, 1, 0), signature(id, 1, 0));
        assert_ne!(signature(id, 1, 0), signature(id, 1, 1));
        assert_ne!(signature(id, 1, 0), signature(id, 2, 0));
        assert!(
            signature(id, 1, 0).len() >= 86,
            "64 bytes in base58, like a Solana signature"
        );
    }
}
