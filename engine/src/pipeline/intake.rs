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
        Caller, EventData, FieldError, NewIds, NewOrder, OrderId, OrderPatch, TokenRegistry, format_units, progress,
        validate_request,
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

    /// The order a JSON request body describes; `body` is the JSON as the
    /// client sent it, so numbers are read exactly (never through `f64`).
    ///
    /// # Errors
    /// The first [`FieldError`] of the request (its `code` is stable).
    pub fn order_from(&self, body: &serde_json::value::RawValue) -> Result<NewOrder, FieldError> {
        let ids = NewIds {
            order: OrderId::new(),
            job: uuid::Uuid::new_v4().to_string(),
        };
        let tradable = |a: &str, b: &str| self.pairs.contains(&(a.to_owned(), b.to_owned()));
        validate_request(body, &self.tokens, self.default_slippage_bps, tradable, ids)
    }

    /// Creates the order for `caller` (owned by its key) with its `pending` event, publishes it, enqueues
    /// its job. When the queue fails, the order is failed for good (a
    /// `failed` event with code `queue_unavailable`, stored and published,
    /// which also sets `lastError`), so the client may simply retry.
    ///
    /// # Errors
    /// [`SubmitError::Store`] when nothing could be stored;
    /// [`SubmitError::Queue`] when the stored order could not be queued.
    pub async fn submit(&self, mut order: NewOrder, caller: &Caller) -> Result<Accepted, SubmitError> {
        tracing::debug!(order_id = %order.id, client = caller.client_scope(), "order submitted");
        // The caller's key owns the order: only it (or an admin) sees it.
        order.owner = caller.owner();
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

#[cfg(test)]
mod tests {
    //! The POST use case with the embedded adapters: a temp-dir SQLite
    //! store, the in-memory queue, and scripted seams for the bus (it
    //! records what was published) and for a queue that refuses.

    use super::*;
    use crate::{
        bus::{Bus, BusError, Published, Subscribed},
        domain::{EventKind, Status},
        queue::{Depth, Lease, MemoryQueue},
        store::{SqliteStore, SqliteSync},
    };
    use async_trait::async_trait;
    use serde_json::{json, value::RawValue};
    use std::{sync::Mutex, time::Duration};

    fn raw(body: serde_json::Value) -> Box<RawValue> {
        serde_json::value::to_raw_value(&body).expect("a JSON value serialises")
    }

    /// A bus that keeps what was published.
    #[derive(Default)]
    struct RecordingBus(Mutex<Vec<Published>>);

    impl RecordingBus {
        fn published(&self) -> Vec<(u64, bool)> {
            self.0.lock().unwrap().iter().map(|p| (p.seq, p.terminal)).collect()
        }
    }

    #[async_trait]
    impl Bus for RecordingBus {
        async fn publish(&self, event: &Published) -> Result<(), BusError> {
            self.0.lock().unwrap().push(event.clone());
            Ok(())
        }
        fn subscribe(&self, _: OrderId) -> Subscribed {
            Box::pin(async { Ok(()) })
        }
        fn unsubscribe(&self, _: OrderId) {}
    }

    /// A queue whose backend is down.
    struct DownQueue;

    #[async_trait]
    impl Queue for DownQueue {
        async fn enqueue(&self, _: Job) -> Result<(), QueueError> {
            Err(QueueError::Unavailable("connection refused".into()))
        }
        async fn claim(&self, _: Duration) -> Result<Option<Lease>, QueueError> {
            Err(QueueError::Unavailable("connection refused".into()))
        }
        async fn heartbeat(&self, _: &Lease) -> Result<(), QueueError> {
            Ok(())
        }
        async fn ack(&self, _: &Lease) -> Result<(), QueueError> {
            Ok(())
        }
        async fn retry_after(&self, _: &Lease, _: Duration) -> Result<(), QueueError> {
            Ok(())
        }
        async fn recover_stalled(&self) -> Result<usize, QueueError> {
            Ok(0)
        }
        async fn depth(&self) -> Result<Depth, QueueError> {
            Err(QueueError::Unavailable("connection refused".into()))
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Arc<SqliteStore>,
        bus: Arc<RecordingBus>,
        intake: Intake,
    }

    async fn fixture(queue: Arc<dyn Queue>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(SqliteStore::open(&dir.path().join("t.db"), SqliteSync::Normal, Duration::from_secs(5)).unwrap());
        store.migrate().await.unwrap();
        let bus = Arc::new(RecordingBus::default());
        let tokens = TokenRegistry::new([
            ("SOL".into(), "So1".into(), 9, "10000".into()),
            ("USDC".into(), "EPj".into(), 6, "2000000".into()),
        ])
        .unwrap();
        let pairs = HashSet::from([("SOL".to_owned(), "USDC".to_owned())]);
        let recorder = Recorder::new(store.clone(), bus.clone());
        let intake = Intake::new(recorder, queue, Arc::new(tokens), pairs, 50);
        Fixture {
            _dir: dir,
            store,
            bus,
            intake,
        }
    }

    fn anyone() -> Caller {
        Caller::anonymous("127.0.0.1".parse().unwrap())
    }

    fn order(intake: &Intake) -> NewOrder {
        intake
            .order_from(&raw(json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1.5"})))
            .unwrap()
    }

    #[tokio::test]
    async fn an_order_is_owned_by_the_key_that_submitted_it() {
        let f = fixture(Arc::new(MemoryQueue::new(Duration::from_secs(30)))).await;
        let key = crate::domain::KeyGrant {
            id: crate::domain::KeyId::new(),
            name: "desk".into(),
            scopes: vec![crate::domain::Scope::Trade],
            orders_per_minute: None,
        };
        let caller = Caller {
            key: Some(key.clone()),
            ..anyone()
        };
        let keyed = order(&f.intake);
        f.intake.submit(keyed.clone(), &caller).await.unwrap();
        assert_eq!(f.store.order(keyed.id).await.unwrap().unwrap().owner, Some(key.id));
        let anonymous = order(&f.intake);
        f.intake.submit(anonymous.clone(), &anyone()).await.unwrap();
        assert_eq!(f.store.order(anonymous.id).await.unwrap().unwrap().owner, None);
    }

    #[tokio::test]
    async fn accepted_order_is_stored_published_and_queued() {
        let queue = Arc::new(MemoryQueue::new(Duration::from_secs(30)));
        let f = fixture(queue.clone()).await;
        let order = order(&f.intake);
        let accepted = f.intake.submit(order.clone(), &anyone()).await.unwrap();
        assert_eq!(
            (accepted.order_id, accepted.job_id.as_str()),
            (order.id, order.job_id.as_str())
        );

        let stored = f.store.order(order.id).await.unwrap().unwrap();
        assert_eq!(
            (stored.status, stored.amount_in, stored.slippage_bps),
            (Status::Pending, 1_500_000_000, 50)
        );
        let events = f.store.events(order.id, 0).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].seq, events[0].data.kind()), (1, EventKind::Pending));
        assert_eq!(f.bus.published(), [(1, false)]);
        let lease = queue.claim(Duration::ZERO).await.unwrap().expect("the job is queued");
        assert_eq!(lease.job.order_id, order.id);
    }

    #[tokio::test]
    async fn unqueued_order_is_failed_for_good_and_the_failure_is_published() {
        let f = fixture(Arc::new(DownQueue)).await;
        let order = order(&f.intake);
        let error = f.intake.submit(order.clone(), &anyone()).await.unwrap_err();
        assert!(
            matches!(error, SubmitError::Queue(QueueError::Unavailable(_))),
            "{error}"
        );

        let stored = f.store.order(order.id).await.unwrap().unwrap();
        assert_eq!(
            stored.status,
            Status::Failed,
            "a client retry must not run this order too"
        );
        let last_error = stored.last_error.expect("lastError is set");
        assert_eq!(last_error.code, "queue_unavailable");
        let kinds: Vec<_> = f
            .store
            .events(order.id, 0)
            .await
            .unwrap()
            .iter()
            .map(|e| e.data.kind())
            .collect();
        assert_eq!(kinds, [EventKind::Pending, EventKind::Failed]);
        assert_eq!(
            f.bus.published(),
            [(1, false), (2, true)],
            "watchers hear the failure too"
        );
    }

    #[tokio::test]
    async fn invalid_requests_are_refused_before_anything_is_stored() {
        let f = fixture(Arc::new(MemoryQueue::new(Duration::from_secs(30)))).await;
        for body in [
            json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": "0.0000000001"}),
            json!({"tokenIn": "USDC", "tokenOut": "SOL", "amount": "1"}),
            json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1", "extra": 1}),
        ] {
            assert!(f.intake.order_from(&raw(body.clone())).is_err(), "{body}");
        }
        assert!(f.bus.published().is_empty());
        assert_eq!(f.store.unfinished_orders().await.unwrap(), Vec::<OrderId>::new());
    }

    #[tokio::test]
    async fn requeue_unfinished_gives_every_unfinished_order_a_labelled_job() {
        let queue = Arc::new(MemoryQueue::new(Duration::from_secs(30)));
        let f = fixture(Arc::new(DownQueue)).await;
        // One order failed at intake (finished), one stored but never queued.
        let finished = order(&f.intake);
        f.intake.submit(finished.clone(), &anyone()).await.unwrap_err();
        let unfinished = order(&f.intake);
        f.store
            .create_order(&unfinished, f.intake.pending_event(&unfinished))
            .await
            .unwrap();

        let requeued = requeue_unfinished(f.store.as_ref(), queue.as_ref(), "recovered")
            .await
            .unwrap();
        assert_eq!(requeued, 1);
        let lease = queue.claim(Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(lease.job.order_id, unfinished.id);
        assert_eq!(lease.job.id, format!("recovered-{}", unfinished.id));
        assert!(
            queue.claim(Duration::ZERO).await.unwrap().is_none(),
            "the failed order gets no job"
        );

        let error = requeue_unfinished(f.store.as_ref(), &DownQueue, "reconciled")
            .await
            .unwrap_err();
        assert!(
            matches!(error, RequeueError::Queue { order_id, .. } if order_id == unfinished.id),
            "{error}"
        );
    }
}
