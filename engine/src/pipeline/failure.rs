//! How an order ends badly: a [`Failure`] (stable code and words), the
//! [`StepError`] a stage returns, and the `failed` event that records it.
//! Imports `domain`, the `store` seam and `strategy`'s error types; never
//! `api`, `config` or an adapter.

use super::{Outcome, Pipeline};
use crate::{
    domain::{ErrorInfo, EventData, Order, OrderPatch, Route, progress},
    store::StoreError,
    strategy::{ChainFailed, PluginError},
    telemetry,
};
use std::fmt;

/// The stable code an order fails with, as written to its `failed` event
/// and its `lastError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureCode {
    /// `no_pipeline`: no stage is configured for the order's type.
    NoPipeline,
    /// `no_quotes`: no venue quoted the pair.
    NoQuotes,
    /// `unknown_venue`: the route names a venue no longer configured.
    UnknownVenue,
    /// `retries_exhausted`: no attempts left and no earlier error on record.
    RetriesExhausted,
    /// `plugin_error`: every strategy of the chain failed.
    Plugin,
    /// `deadline_exceeded`: the order's `expiresAt` passed before it was
    /// submitted; it never will be.
    DeadlineExceeded,
    /// `unknown_outcome`: resumed after a submission whose transactions
    /// were not recorded (an older version's): never sent again.
    UnknownOutcome,
    /// A venue's own code for an attempt that failed (`slippage_exceeded`,
    /// `execute_timeout`, …), kept as the venue or an earlier attempt
    /// recorded it.
    Venue(String),
}

impl FailureCode {
    /// The snake_case code.
    pub fn as_str(&self) -> &str {
        match self {
            FailureCode::NoPipeline => "no_pipeline",
            FailureCode::NoQuotes => "no_quotes",
            FailureCode::UnknownVenue => "unknown_venue",
            FailureCode::RetriesExhausted => "retries_exhausted",
            FailureCode::Plugin => PluginError::CODE,
            FailureCode::DeadlineExceeded => "deadline_exceeded",
            FailureCode::UnknownOutcome => "unknown_outcome",
            FailureCode::Venue(code) => code,
        }
    }
}

impl fmt::Display for FailureCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An order-ending failure: code and words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The stable code.
    pub code: FailureCode,
    /// Human words, shown in the `failed` event.
    pub message: String,
}

impl Failure {
    /// A failure with its code and words.
    pub fn new(code: FailureCode, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// Every strategy of the chain failed: `plugin_error: <last error> …`.
    pub fn plugin(error: ChainFailed) -> Self {
        Failure::new(FailureCode::Plugin, format!("{}: {error}", PluginError::CODE))
    }

    /// The order's deadline (`expires_at`) passed before its submission.
    pub fn deadline(order: &Order) -> Self {
        let at = order
            .expires_at
            .map_or_else(|| "its deadline".to_owned(), |t| t.to_string());
        Failure::new(
            FailureCode::DeadlineExceeded,
            format!("not submitted before {at}; it never will be"),
        )
    }

    /// The same failure, its words followed by how many attempts were made.
    pub fn after_attempts(self, attempts: u32) -> Self {
        Failure {
            message: format!("{} (after {attempts} attempts)", self.message),
            ..self
        }
    }
}

/// Why a stage stopped: the order fails, or the store failed under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepError {
    /// The order cannot go on; record it as failed.
    Fail(Failure),
    /// Recording a step failed; the job runs again later.
    Store(StoreError),
}

impl From<StoreError> for StepError {
    fn from(error: StoreError) -> Self {
        StepError::Store(error)
    }
}

impl From<Failure> for StepError {
    fn from(failure: Failure) -> Self {
        StepError::Fail(failure)
    }
}

impl Pipeline {
    /// Fails the order for good with a `failed` event; `route` records legs
    /// that did execute.
    pub(super) async fn fail(
        &self,
        order: &Order,
        failure: Failure,
        attempts: u32,
        route: Option<Route>,
    ) -> Result<Outcome, StoreError> {
        let code = failure.code.as_str().to_owned();
        let patch = OrderPatch {
            last_error: Some(ErrorInfo {
                code: code.clone(),
                message: failure.message.clone(),
            }),
            route,
            ..OrderPatch::default()
        };
        let data = EventData::Failed {
            error: failure.message.clone(),
            code,
            is_final: true,
            total_attempts: attempts,
        };
        let message = format!("Order failed: {}", failure.message);
        self.emit(order.id, progress::FAILED, message, data, patch).await?;
        telemetry::event::order_finished("failed", "", order.created_at.elapsed(), attempts);
        Ok(Outcome::Finished)
    }

    /// Settles a stage that stopped: a failure fails the order (with the
    /// attempts so far), a store error goes up to the worker.
    pub(super) async fn settle(&self, order: &Order, error: StepError) -> Result<Outcome, StoreError> {
        match error {
            StepError::Fail(failure) => self.fail(order, failure, order.attempts, None).await,
            StepError::Store(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_strings_orders_have_always_carried() {
        let table = [
            (FailureCode::NoPipeline, "no_pipeline"),
            (FailureCode::NoQuotes, "no_quotes"),
            (FailureCode::UnknownVenue, "unknown_venue"),
            (FailureCode::RetriesExhausted, "retries_exhausted"),
            (FailureCode::Plugin, "plugin_error"),
            (FailureCode::Venue("slippage_exceeded".into()), "slippage_exceeded"),
        ];
        for (code, text) in table {
            assert_eq!(code.as_str(), text);
            assert_eq!(code.to_string(), text);
        }
    }

    #[test]
    fn after_attempts_keeps_the_code_and_appends_the_count() {
        let failure = Failure::new(FailureCode::Venue("congested".into()), "busy").after_attempts(3);
        assert_eq!(failure.code, FailureCode::Venue("congested".into()));
        assert_eq!(failure.message, "busy (after 3 attempts)");
    }
}
