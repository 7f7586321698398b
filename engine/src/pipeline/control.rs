//! Order control, the operator's use cases on an existing order: cancel one
//! that was not submitted yet, and retry a failed (or cancelled) one as a
//! new order linked to it both ways. The rules that race the worker (a
//! cancel against its submission) are decided by the store, in the
//! transaction that appends the event (see `Store::append_event`).
//! Imports `domain` and the `store` seam; never `api` or an adapter.

use super::intake::{Accepted, Intake, SubmitError};
use crate::{
    domain::{EventData, NewOrder, Order, OrderId, OrderPatch, Status, Timestamp, progress},
    store::{NewEvent, StoreError},
    telemetry::event,
};
use thiserror::Error;

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// The order is now `cancelled` (its `cancelled` event is stored and
    /// published).
    Now,
    /// It was cancelled before: nothing changed (a repeated cancel).
    Already,
}

/// Why an order was not cancelled.
#[derive(Debug, Error)]
pub enum CancelError {
    /// Its submission started (it may execute), or it is confirmed or
    /// failed (HTTP 409, `cannot_cancel`); the status it has.
    #[error("order {0} is {s} and can no longer be cancelled", s = .1.as_str())]
    Cannot(OrderId, Status),
    /// The store is unreachable or failed (HTTP 503).
    #[error(transparent)]
    Store(StoreError),
}

/// Why an order was not retried.
#[derive(Debug, Error)]
pub enum RetryError {
    /// Only `failed` and `cancelled` orders are retried (HTTP 409,
    /// `cannot_retry`); the status it has.
    #[error("order {0} is {s}; only failed or cancelled orders can be retried", s = .1.as_str())]
    NotFinishedBadly(OrderId, Status),
    /// Another order already retries it (HTTP 409, `already_retried`);
    /// that order.
    #[error("order {0} was already retried by order {1}")]
    AlreadyRetried(OrderId, OrderId),
    /// The new order could not be stored or queued.
    #[error(transparent)]
    Submit(SubmitError),
}

impl Intake {
    /// Cancels `order` unless its submission started: a `cancelled` event
    /// (terminal) is stored, then published. The store refuses it once a
    /// `submitted` event exists and refuses a `submitted` event once it is
    /// cancelled, so of a cancel and the worker's submission racing, exactly
    /// one wins; a worker that then finds the order cancelled acks its job
    /// and executes nothing. Cancelling a cancelled order is
    /// [`Cancelled::Already`] (idempotent).
    ///
    /// # Errors
    /// [`CancelError::Cannot`] after submission or another ending;
    /// [`CancelError::Store`] when the store fails.
    pub async fn cancel(&self, order: &Order) -> Result<Cancelled, CancelError> {
        let cancel = NewEvent {
            message: "Order cancelled before submission".into(),
            progress: progress::CANCELLED,
            data: EventData::Cancelled {},
            patch: OrderPatch::default(),
            after_seq: None,
        };
        match self.recorder.record(order.id, cancel).await {
            Ok(_) => {
                event::order_finished("cancelled", "", order.created_at.elapsed(), order.attempts);
                Ok(Cancelled::Now)
            }
            Err(StoreError::Submitted(id)) => Err(CancelError::Cannot(id, Status::Submitted)),
            Err(StoreError::Finished(id)) => {
                // Read again: the status it ended with decides the answer.
                let status = self
                    .recorder
                    .store()
                    .order(id)
                    .await
                    .map_err(CancelError::Store)?
                    .map_or(order.status, |o| o.status);
                match status {
                    Status::Cancelled => Ok(Cancelled::Already),
                    other => Err(CancelError::Cannot(id, other)),
                }
            }
            Err(e) => Err(CancelError::Store(e)),
        }
    }

    /// Retries a `failed` or `cancelled` order: a new order with the same
    /// request (pair, amount, slippage, type) and owner, `retryOf` the old
    /// one, whose `retriedBy` is set in the same transaction; it gets a
    /// fresh deadline from `orders.default_ttl` (the old one's has passed
    /// or no longer means anything). Stored, published and enqueued as
    /// [`Intake::submit`] does.
    ///
    /// # Errors
    /// [`RetryError::NotFinishedBadly`], [`RetryError::AlreadyRetried`]
    /// (one retry per order, so a double click makes one order), or the
    /// submit's error.
    pub async fn retry(&self, original: &Order) -> Result<Accepted, RetryError> {
        if !matches!(original.status, Status::Failed | Status::Cancelled) {
            return Err(RetryError::NotFinishedBadly(original.id, original.status));
        }
        if let Some(by) = original.retried_by {
            return Err(RetryError::AlreadyRetried(original.id, by));
        }
        let order = NewOrder {
            id: OrderId::new(),
            job_id: uuid::Uuid::new_v4().to_string(),
            order_type: original.order_type,
            token_in: original.token_in.clone(),
            token_out: original.token_out.clone(),
            amount_in: original.amount_in,
            slippage_bps: original.slippage_bps,
            owner: original.owner,
            expires_at: self
                .default_ttl
                .map(|ttl| Timestamp(std::time::SystemTime::now() + ttl)),
            retry_of: Some(original.id),
        };
        match self.store_and_enqueue(order).await {
            Err(SubmitError::Store(StoreError::AlreadyRetried(id))) => {
                // Lost a race with another retry: name the winner.
                let by = self
                    .recorder
                    .store()
                    .order(id)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|o| o.retried_by);
                Err(RetryError::AlreadyRetried(id, by.unwrap_or(id)))
            }
            other => other.map_err(RetryError::Submit),
        }
    }
}
