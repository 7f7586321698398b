//! The order-intake use case behind `POST /api/orders/execute`: check the
//! request against the tokens and pairs, create the order with its
//! `pending` event, publish it, enqueue its job, and, when the queue
//! refuses, record a final `failed` event so a client's retry can never
//! run the same order twice. Also [`requeue_unfinished`], the one way
//! unfinished orders get their job back (at start and by the reconciler).
//! Imports `domain`, [`Recorder`] and the `store` and `queue` seams; never
//! `api` or an adapter.

use super::Recorder;
use crate::{
    domain::{
        EventData, FieldError, NewOrder, OrderId, OrderPatch, TokenRegistry, format_units, progress, validate_request,
    },
    queue::{Job, Queue, QueueError},
    store::{NewEvent, Store, StoreError},
    telemetry::event,
};
use std::{collections::HashSet, sync::Arc};
use thiserror::Error;

/// An order that was stored and enqueued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The new order.
    pub order_id: OrderId,
    /// Its job on the queue.
    pub job_id: String,
}

/// Why an order was not accepted.
#[derive(Debug, Error)]
pub enum SubmitError {
    /// The request breaks a rule (HTTP 400).
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// The store refused or is unreachable; nothing was created (HTTP 503).
    #[error("store unavailable: {0}")]
    Store(#[source] StoreError),
    /// The order was stored but could not be queued; it was marked failed
    /// so it never runs (HTTP 503).
    #[error("queue unavailable: {0}")]
    Queue(#[source] QueueError),
}

/// The intake use case and what it checks requests against.
#[derive(Clone)]
pub struct Intake {
    recorder: Recorder,
    queue: Arc<dyn Queue>,
    tokens: Arc<TokenRegistry>,
    pairs: Arc<HashSet<(String, String)>>,
    default_slippage_bps: u32,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake")
            .field("pairs", &self.pairs.len())
            .field("default_slippage_bps", &self.default_slippage_bps)
            .finish_non_exhaustive()
    }
}

impl Intake {
    /// An intake: `pairs` are the (token in, token out) symbols some venue
    /// trades; `default_slippage_bps` applies when a request gives none.
    pub fn new(
        recorder: Recorder,
        queue: Arc<dyn Queue>,
        tokens: Arc<TokenRegistry>,
        pairs: HashSet<(String, String)>,
        default_slippage_bps: u32,
    ) -> Self {
        Intake {
            recorder,
            queue,
            tokens,
            pairs: Arc::new(pairs),
            default_slippage_bps,
        }
    }

    /// The queue's depth (for health checks).
    ///
    /// # Errors
    /// The queue's error when it is unreachable.
    pub async fn queue_depth(&self) -> Result<crate::queue::Depth, QueueError> {
        self.queue.depth().await
    }

    /// The order a JSON request body describes.
    ///
    /// # Errors
    /// The first [`FieldError`] of the request (its `code` is stable).
    pub fn order_from(&self, body: &serde_json::Value) -> Result<NewOrder, FieldError> {
        validate_request(body, &self.tokens, self.default_slippage_bps, |a, b| {
            self.pairs.contains(&(a.to_owned(), b.to_owned()))
        })
    }

    /// Creates the order with its `pending` event, publishes it, enqueues
    /// its job. When the queue fails, the order is failed for good (a
    /// `failed` event with code `queue_unavailable`, stored and published,
    /// which also sets `lastError`), so the client may simply retry.
    ///
    /// # Errors
    /// [`SubmitError::Store`] when nothing could be stored;
    /// [`SubmitError::Queue`] when the stored order could not be queued.
    pub async fn submit(&self, order: NewOrder) -> Result<Accepted, SubmitError> {
        self.recorder
            .create(&order, self.pending_event(&order))
            .await
            .map_err(|e| {
                event::backend_error("store");
                SubmitError::Store(e)
            })?;
        event::order_created();
        let job = Job {
            id: order.job_id.clone(),
            order_id: order.id,
        };
        if let Err(e) = self.queue.enqueue(job).await {
            event::backend_error("queue");
            self.compensate(order.id, &e).await;
            return Err(SubmitError::Queue(e));
        }
        Ok(Accepted {
            order_id: order.id,
            job_id: order.job_id,
        })
    }

    /// Fails an order whose job could not be queued.
    async fn compensate(&self, id: OrderId, cause: &QueueError) {
        let code = "queue_unavailable";
        let error = format!("queue unavailable: {cause}");
        let failed = NewEvent {
            message: "Order failed: the queue was unavailable".into(),
            progress: progress::FAILED,
            data: EventData::Failed {
                error: error.clone(),
                code: code.into(),
                is_final: true,
                total_attempts: 0,
            },
            patch: OrderPatch {
                last_error: Some(crate::domain::ErrorInfo {
                    code: code.into(),
                    message: error,
                }),
                ..OrderPatch::default()
            },
        };
        if let Err(e) = self.recorder.record(id, failed).await {
            tracing::error!(order_id = %id, error = %e, "could not mark an unqueued order failed");
        }
    }

    fn pending_event(&self, order: &NewOrder) -> NewEvent {
        let decimals = self.tokens.get(&order.token_in).map_or(0, |t| t.decimals);
        let amount = format_units(order.amount_in, decimals);
        NewEvent {
            message: format!("Order received: {amount} {} → {}", order.token_in, order.token_out),
            progress: progress::PENDING,
            data: EventData::Pending {
                token_in: order.token_in.clone(),
                token_out: order.token_out.clone(),
                amount,
                slippage: f64::from(order.slippage_bps) / 100.0,
            },
            patch: OrderPatch::default(),
        }
    }
}

/// Why [`requeue_unfinished`] stopped.
#[derive(Debug, Error)]
pub enum RequeueError {
    /// The unfinished orders could not be listed.
    #[error("listing unfinished orders: {0}")]
    Store(#[from] StoreError),
    /// A job could not be enqueued; the rest were not tried.
    #[error("re-enqueueing {order_id}: {error}")]
    Queue {
        /// The order whose job was refused.
        order_id: OrderId,
        /// Why.
        #[source]
        error: QueueError,
    },
}

/// Enqueues a job for every unfinished order; the queue ignores orders that
/// already have one, so only orders whose job was lost get a new one.
/// `label` names the job ids (`recovered-…` at start, `reconciled-…` by the
/// reconciler). Returns how many orders were unfinished.
///
/// # Errors
/// [`RequeueError`]: the store could not list, or the queue refused (the
/// orders after it were not tried).
pub async fn requeue_unfinished(store: &dyn Store, queue: &dyn Queue, label: &str) -> Result<usize, RequeueError> {
    let unfinished = store.unfinished_orders().await?;
    for order_id in &unfinished {
        let job = Job {
            id: format!("{label}-{order_id}"),
            order_id: *order_id,
        };
        queue.enqueue(job).await.map_err(|error| RequeueError::Queue {
            order_id: *order_id,
            error,
        })?;
    }
    Ok(unfinished.len())
}
