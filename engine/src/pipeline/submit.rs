//! The submit stage: execute each leg not yet filled (idempotent by its
//! signature), then hand over to `confirm`; a failed leg either fails the
//! order (permanent) or records the attempt and asks for a retry after the
//! backoff (transient). Records `submitted`, `execution-failed` and
//! `retry-pending`. Imports `domain` and the `venues` seam; never `api`,
//! `config` or an adapter.

use super::{
    Outcome, Pipeline, Stage,
    failure::{Failure, FailureCode},
    retry::random_unit,
};
use crate::{
    domain::{ErrorInfo, EventData, Order, OrderPatch, Route, progress},
    store::StoreError,
    telemetry,
    venues::{LegOrder, VenueError},
};
use swapline_abi::Units;
use tokio::time::Instant;

impl Pipeline {
    /// Submits attempt `attempt` of `route`: legs already filled are
    /// skipped, the others executed in order under the stage's timeout.
    pub(super) async fn submit(
        &self,
        order: &Order,
        stage: &Stage,
        mut route: Route,
        attempt: u32,
    ) -> Result<Outcome, StoreError> {
        let max = self.retry.max_attempts;
        let submitted_progress = progress::submitted(attempt);
        let submitted = EventData::Submitted {
            attempt,
            max_attempts: max,
            signatures: route.legs.iter().map(|l| l.signature.clone()).collect(),
        };
        let patch = OrderPatch {
            attempts: Some(attempt),
            ..OrderPatch::default()
        };
        let message = format!("Submitting transaction (attempt {attempt}/{max})...");
        self.emit(order.id, submitted_progress, message, submitted, patch)
            .await?;

        let started = Instant::now();
        for index in 0..route.legs.len() {
            let leg = &route.legs[index];
            if leg.filled_out.is_some() {
                continue;
            }
            let Some(venue) = self.venues.iter().find(|v| v.name() == leg.dex) else {
                let message = format!("venue {} is no longer configured", leg.dex);
                let failure = Failure::new(FailureCode::UnknownVenue, message);
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
                Err(_) => Err(VenueError::transient(
                    "execute_timeout",
                    format!("{} did not answer within {:?}", leg.dex, stage.execute_timeout),
                )),
            };
            self.tracker.executed(&leg.dex, result.is_ok());
            match result {
                Ok(fill) => {
                    // A leg that filled is progress: a long multi-leg route
                    // is never released by the stall rule between legs.
                    super::worker::progressed();
                    route.legs[index].filled_out = Some(Units(fill.amount_out));
                }
                Err(error) => {
                    return self
                        .failed_attempt(order, route, attempt, submitted_progress, error)
                        .await;
                }
            }
        }
        telemetry::event::stage("submit", started.elapsed());
        self.confirm(order, route, attempt).await
    }

    /// A leg failed: a permanent error fails the order; a transient one is
    /// recorded (`execution-failed`, with the route's filled legs) and then
    /// retried after the backoff (`retry-pending`), or fails the order when
    /// no attempts remain.
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
        let failure = Failure::new(FailureCode::Venue(info.code.clone()), info.message.clone());
        if !error.is_transient() {
            return self.fail(order, failure, attempt, Some(route)).await;
        }
        let failed = EventData::ExecutionFailed {
            error: info.message.clone(),
            code: info.code.clone(),
            transient: true,
            retries_remaining: self.retry.remaining(attempt),
            attempt,
        };
        let patch = OrderPatch {
            route: Some(route),
            last_error: Some(info),
            ..OrderPatch::default()
        };
        let message = format!("Attempt {attempt} failed: {error}");
        self.emit(order.id, progress, message, failed, patch).await?;
        let Some(delay) = self.retry.retry_after(attempt, random_unit()) else {
            return self.fail(order, failure.after_attempts(attempt), attempt, None).await;
        };
        let next = attempt + 1;
        let pending = EventData::RetryPending {
            delay: delay.as_millis() as u64,
            next_attempt: next,
        };
        let message = format!(
            "Retrying in {} ms (attempt {next}/{})",
            delay.as_millis(),
            self.retry.max_attempts
        );
        self.emit(order.id, progress, message, pending, OrderPatch::default())
            .await?;
        Ok(Outcome::RetryAfter(delay))
    }
}
