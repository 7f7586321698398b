//! The order-intake use case behind `POST /api/orders/execute`: check the
//! request against the tokens and pairs, create the order with its
//! `pending` event, publish it, enqueue its job, and, when the queue
//! refuses, record a final `failed` event so a client's retry can never
//! run the same order twice. With an `Idempotency-Key`
//! ([`Intake::submit_once`]) the same request is answered once and replayed
//! after; [`Intake::admit`] counts requests against the caller's limit.
//! Also [`requeue_unfinished`], the one way unfinished orders get their
//! job back (at start and by the reconciler), and [`sweep_keys`].
//! Imports `domain`, [`Recorder`] and the `store` and `queue` seams; never
//! `api` or an adapter.

use super::Recorder;
use crate::{
    domain::{
        Caller, EventData, FieldError, NewIds, NewOrder, OrderId, OrderPatch, Status, TokenRegistry, format_units,
        progress, validate_request,
    },
    queue::{Allowance, Job, Queue, QueueError, RequestLimit},
    store::{KeyedCreate, NewEvent, NewIdempotencyKey, Store, StoreError, StoredAnswer},
    telemetry::event,
};
use sha2::{Digest, Sha256};
use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, SystemTime},
};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

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
    /// The `Idempotency-Key` was first used with a different request
    /// (HTTP 422, `idempotency_key_reused`); nothing was stored.
    #[error("this Idempotency-Key was already used with a different request")]
    KeyReused,
    /// The key's first request is still being handled and did not finish
    /// within the wait (HTTP 409, `idempotency_key_in_use`); nothing was
    /// stored.
    #[error("a request with this Idempotency-Key is still being handled")]
    KeyInUse,
}

/// How [`Intake::submit_once`] keeps `Idempotency-Key`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdempotencySettings {
    /// How long a key and its answer are kept (`orders.idempotency_ttl`);
    /// after that the key is free again and makes a new order.
    pub ttl: Duration,
    /// How long a request whose key is held by a request still being
    /// handled waits for that request's answer (then replays it) before it
    /// is refused with 409 (`orders.idempotency_wait`).
    pub wait: Duration,
}

impl Default for IdempotencySettings {
    fn default() -> Self {
        IdempotencySettings {
            ttl: Duration::from_secs(24 * 3600),
            wait: Duration::from_secs(5),
        }
    }
}

/// A key whose request has been in flight this long belonged to a node that
/// stopped between storing the order and queueing its job: its order is
/// stored and unfinished, so the reconciler enqueues it, and the planned
/// `201` answer is replayed rather than holding the key (409) until it
/// expires.
pub const STALE_IN_FLIGHT: Duration = Duration::from_secs(60);

/// The error code of an order failed because its job could not be queued
/// (`failed` event and `lastError`).
const UNQUEUED: &str = "queue_unavailable";

/// An `Idempotency-Key` request, as [`Intake::submit_once`] takes it.
pub struct KeyedRequest<'a> {
    /// The header's value (already checked: 1–255 printable ASCII).
    pub key: &'a str,
    /// The answer when the order is stored and queued (the rendered 201);
    /// stored with the order, so it is replayed byte for byte.
    pub created: StoredAnswer,
    /// Renders the answer when the stored order could not be queued
    /// ([`SubmitError::Queue`]; the order was failed for good); it is stored
    /// and replayed like the 201.
    pub failed: &'a (dyn Fn(&SubmitError) -> StoredAnswer + Send + Sync),
}

impl std::fmt::Debug for KeyedRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedRequest")
            .field("key", &self.key)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// The answer to a request with an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyedAnswer {
    /// This request took the key: its own answer (now stored).
    First(StoredAnswer),
    /// An earlier request with the same key and the same request took it:
    /// that request's answer, replayed (no new order).
    Replayed(StoredAnswer),
}

/// The fingerprint of a parsed request: hex SHA-256 of what the order will
/// be (type, tokens, amount in base units, slippage in basis points), so
/// the same order written differently (`1.5` or `"1.5"`, slippage left
/// out or given as the default) is the same request.
///
/// An `expiresAt` the request gave is part of it (appended only when
/// present, so fingerprints of requests without one are unchanged); the
/// deadline `orders.default_ttl` adds is not (it is applied after the
/// fingerprint is taken, so a repeat of the same request is the same).
pub fn fingerprint(order: &NewOrder) -> String {
    let mut text = format!(
        "v1\n{}\n{}\n{}\n{}\n{}",
        order.order_type.as_str(),
        order.token_in,
        order.token_out,
        order.amount_in,
        order.slippage_bps
    );
    if let Some(at) = order.expires_at {
        text.push_str(&format!("\nexpires {at}"));
    }
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The intake use case and what it checks requests against.
#[derive(Clone)]
pub struct Intake {
    pub(super) recorder: Recorder,
    queue: Arc<dyn Queue>,
    tokens: Arc<TokenRegistry>,
    pairs: Arc<HashSet<(String, String)>>,
    default_slippage_bps: u32,
    idempotency: IdempotencySettings,
    /// The per-client request limit and its default size per minute.
    limit: Option<(Arc<dyn RequestLimit>, u32)>,
    /// Deadline of an order whose request gives none (`None`: no deadline).
    pub(super) default_ttl: Option<Duration>,
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
            idempotency: IdempotencySettings::default(),
            limit: None,
            default_ttl: None,
        }
    }

    /// This intake, giving an order whose request has no `expiresAt` the
    /// deadline `ttl` after it is accepted (`orders.default_ttl`; zero:
    /// none, the default).
    pub fn with_default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = Some(ttl).filter(|t| !t.is_zero());
        self
    }

    /// This intake, keeping `Idempotency-Key`s as `settings` say (default:
    /// 24 h, 5 s wait).
    pub fn with_idempotency(mut self, settings: IdempotencySettings) -> Self {
        self.idempotency = settings;
        self
    }

    /// This intake, counting each caller's requests against `limit`:
    /// `per_minute` a minute unless the caller's key has its own
    /// `orders_per_minute`; 0 turns the limit off (default: off).
    pub fn with_request_limit(mut self, limit: Arc<dyn RequestLimit>, per_minute: u32) -> Self {
        self.limit = Some((limit, per_minute));
        self
    }

    /// Counts one order request of `caller` against its limit (its key's
    /// `orders_per_minute`, else the default). `None` when no limit applies
    /// (off, or 0 for this key), and when the limiter's backend failed:
    /// that is logged and counted, and the request goes ahead.
    pub async fn admit(&self, caller: &Caller) -> Option<Allowance> {
        let (limit, default) = self.limit.as_ref()?;
        let per_minute = caller
            .key
            .as_ref()
            .and_then(|key| key.orders_per_minute)
            .unwrap_or(*default);
        if per_minute == 0 {
            return None;
        }
        match limit.check(&caller.client_scope(), per_minute).await {
            Ok(allowance) => {
                if !allowance.allowed {
                    event::orders_rate_limited();
                }
                Some(allowance)
            }
            Err(e) => {
                event::backend_error("queue");
                tracing::warn!(error = %e, "request limit unavailable; letting the request through");
                None
            }
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

    /// The order with `orders.default_ttl` applied when its request gave no
    /// `expiresAt` (after the fingerprint was taken: see [`fingerprint`]).
    fn with_default_deadline(&self, mut order: NewOrder) -> NewOrder {
        if order.expires_at.is_none()
            && let Some(ttl) = self.default_ttl
        {
            order.expires_at = Some(crate::domain::Timestamp(SystemTime::now() + ttl));
        }
        order
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
        self.store_and_enqueue(self.with_default_deadline(order)).await
    }

    /// Stores `order` with its `pending` event, publishes it and enqueues
    /// its job; a queue failure fails the order for good (see
    /// [`Intake::submit`]).
    pub(super) async fn store_and_enqueue(&self, order: NewOrder) -> Result<Accepted, SubmitError> {
        self.recorder
            .create(&order, self.pending_event(&order))
            .await
            .map_err(|e| {
                event::backend_error("store");
                SubmitError::Store(e)
            })?;
        event::order_created();
        self.enqueue_or_fail(&order).await.map_err(SubmitError::Queue)?;
        Ok(Accepted {
            order_id: order.id,
            job_id: order.job_id,
        })
    }

    /// [`Intake::submit`] at most once per `Idempotency-Key` of the caller
    /// (the semantics of Stripe's idempotent requests and of the IETF
    /// httpapi `Idempotency-Key` draft,
    /// <https://datatracker.ietf.org/doc/draft-ietf-httpapi-idempotency-key-header/>):
    ///
    /// - a free key (or an expired one): the order and the key record (with
    ///   the planned answer, `request.created`) are stored in one
    ///   transaction, then published and enqueued. Once the job is queued
    ///   the planned answer stands and nothing more is written. When the
    ///   queue fails and the order is failed for good, `request.failed`'s
    ///   answer replaces it ([`Store::settle_key`]) before it is sent (a
    ///   503: replays of the key answer that same 503, as Stripe replays
    ///   500s; a client retries with a new key). [`KeyedAnswer::First`].
    /// - a key taken by the same request (same [`fingerprint`]) whose answer
    ///   is known: that answer, [`KeyedAnswer::Replayed`], and nothing new.
    ///   A replaced answer is known from the record; the planned one once
    ///   the order's job is queued (see [`Intake::planned_answer_stands`]).
    /// - a key taken by the same request still in flight (its order stored,
    ///   its job not yet queued): waits up to [`IdempotencySettings::wait`]
    ///   for its answer, then [`SubmitError::KeyInUse`] (409); one in
    ///   flight for [`STALE_IN_FLIGHT`] is replayed as planned (its node
    ///   stopped).
    /// - a key taken by another request: [`SubmitError::KeyReused`] (422).
    ///
    /// Keys are scoped by [`Caller::client_scope`].
    ///
    /// # Errors
    /// [`SubmitError::Store`] when nothing could be stored or read;
    /// [`SubmitError::KeyReused`], [`SubmitError::KeyInUse`] as above.
    pub async fn submit_once(
        &self,
        mut order: NewOrder,
        caller: &Caller,
        request: KeyedRequest<'_>,
    ) -> Result<KeyedAnswer, SubmitError> {
        // The caller's key owns the order, as in `submit`.
        order.owner = caller.owner();
        let key = NewIdempotencyKey {
            scope: caller.client_scope(),
            key: request.key.to_owned(),
            fingerprint: fingerprint(&order),
            answer: request.created.clone(),
            expires_at: crate::domain::Timestamp(SystemTime::now() + self.idempotency.ttl),
        };
        let order = self.with_default_deadline(order);
        let store_error = |e| {
            event::backend_error("store");
            SubmitError::Store(e)
        };
        // A record that expires between the refused insert and the read is
        // gone; the second insert then takes the key.
        for _ in 0..2 {
            let created = self
                .recorder
                .create_keyed(&order, self.pending_event(&order), &key)
                .await
                .map_err(store_error)?;
            match created {
                KeyedCreate::Created(_) => {
                    event::order_created();
                    return Ok(KeyedAnswer::First(self.enqueue_keyed(&order, &key, &request).await));
                }
                KeyedCreate::Taken => {
                    if let Some(answer) = self.taken(&key).await? {
                        return Ok(answer);
                    }
                }
            }
        }
        Err(SubmitError::KeyInUse)
    }

    /// Enqueues a keyed order's job. Its answer is the planned one, which
    /// needs no write: a repeat sees the job (or the order's progress) and
    /// replays it. A failure replaces it in the record before it is sent.
    async fn enqueue_keyed(
        &self,
        order: &NewOrder,
        key: &NewIdempotencyKey,
        request: &KeyedRequest<'_>,
    ) -> StoredAnswer {
        let failed = match self.enqueue_or_fail(order).await {
            Ok(()) => return request.created.clone(),
            Err(e) => (request.failed)(&SubmitError::Queue(e)),
        };
        // The rare answer that replaces the planned one is stored before it
        // is sent, so no repeat can replay the planned 201 (repeats wait
        // while the order is failed `queue_unavailable` and the record not
        // yet settled). A passing store hiccup gets two more tries: until
        // the record is settled, repeats wait, then get 409, and only after
        // STALE_IN_FLIGHT the planned 201 (the order is stored either way).
        let store = self.recorder.store();
        for pause in [Duration::from_millis(50), Duration::from_millis(200), Duration::ZERO] {
            match store.settle_key(&key.scope, &key.key, &failed).await {
                Ok(()) => break,
                Err(e) => {
                    event::backend_error("store");
                    tracing::error!(order_id = %order.id, error = %e, "could not settle an idempotency key");
                    tokio::time::sleep(pause).await;
                }
            }
        }
        failed
    }

    /// The answer for a key another request holds: `None` when the record
    /// is gone (expired meanwhile).
    async fn taken(&self, key: &NewIdempotencyKey) -> Result<Option<KeyedAnswer>, SubmitError> {
        let deadline = tokio::time::Instant::now() + self.idempotency.wait;
        let mut pause = Duration::from_millis(10);
        loop {
            let record = self
                .recorder
                .store()
                .key_record(&key.scope, &key.key)
                .await
                .map_err(|e| {
                    event::backend_error("store");
                    SubmitError::Store(e)
                })?;
            let Some(record) = record else {
                return Ok(None);
            };
            if record.fingerprint != key.fingerprint {
                event::idempotency_conflict("reused");
                return Err(SubmitError::KeyReused);
            }
            if record.completed
                || record.created_at.elapsed() >= STALE_IN_FLIGHT
                || self.planned_answer_stands(record.order_id).await
            {
                event::idempotent_replay();
                return Ok(Some(KeyedAnswer::Replayed(record.answer)));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                event::idempotency_conflict("in_use");
                return Err(SubmitError::KeyInUse);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Enqueues `order`'s job. When the queue fails, the job may be queued
    /// all the same (the enqueue ran and its reply was lost, or the
    /// reconciler queued the order first): when the queue holds it, or the
    /// order has moved on, the order goes ahead as if nothing failed.
    /// Otherwise the order is failed for good ([`Intake::compensate`]) and
    /// the queue's error comes back.
    async fn enqueue_or_fail(&self, order: &NewOrder) -> Result<(), QueueError> {
        let job = Job {
            id: order.job_id.clone(),
            order_id: order.id,
        };
        let Err(e) = self.queue.enqueue(job).await else {
            return Ok(());
        };
        event::backend_error("queue");
        if matches!(self.queue.holds(order.id).await, Ok(true)) {
            tracing::warn!(order_id = %order.id, error = %e, "an enqueue failed, but the job is queued");
            return Ok(());
        }
        if self.compensate(order.id, &e).await {
            Err(e)
        } else {
            Ok(())
        }
    }

    /// Whether the planned answer of a record that was never settled
    /// stands, that is, whether the first request queued `order`'s job:
    /// the order has left `pending` (its job ran), other than by the failure
    /// that replaces the answer ([`UNQUEUED`]: never), or it is `pending`
    /// and the queue holds its job. `false` while that is unknown: the
    /// first request may still be between storing the order and queueing
    /// its job. A backend that does not answer counts as unknown (logged
    /// and counted): repeats then wait and may get 409 until the reconciler
    /// queues the order or [`STALE_IN_FLIGHT`] passes.
    async fn planned_answer_stands(&self, order: OrderId) -> bool {
        match self.recorder.store().order(order).await {
            Ok(Some(found)) if found.status == Status::Pending => {}
            Ok(Some(found)) => {
                let unqueued = found.status == Status::Failed && found.last_error.is_some_and(|e| e.code == UNQUEUED);
                return !unqueued;
            }
            Ok(None) => return false,
            Err(e) => {
                event::backend_error("store");
                tracing::warn!(order_id = %order, error = %e, "could not read a keyed order");
                return false;
            }
        }
        match self.queue.holds(order).await {
            Ok(held) => held,
            Err(e) => {
                event::backend_error("queue");
                tracing::warn!(order_id = %order, error = %e, "could not ask the queue about a keyed order");
                false
            }
        }
    }

    /// Fails an order whose job could not be queued, only while it is still
    /// `pending` at its first event (a compare-and-set on `seq` 1). Returns
    /// `false` when the order had moved on (its job was queued after all,
    /// by the reconciler) or ended (cancelled, expired): it is not failed,
    /// and its request answers as queued. A store that does not answer is logged
    /// and counts as failed: the order stays `pending` without a job until
    /// the reconciler queues it.
    async fn compensate(&self, id: OrderId, cause: &QueueError) -> bool {
        let code = UNQUEUED;
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
            after_seq: Some(1),
        };
        match self.recorder.record(id, failed).await {
            Ok(_) => true,
            Err(StoreError::Conflict(_) | StoreError::Finished(_)) => false,
            Err(e) => {
                tracing::error!(order_id = %id, error = %e, "could not mark an unqueued order failed");
                true
            }
        }
    }

    pub(super) fn pending_event(&self, order: &NewOrder) -> NewEvent {
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
            after_seq: None,
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

/// Deletes expired `Idempotency-Key` records every `interval` until
/// `shutdown` (keys are already ignored once expired; this keeps the table
/// small).
pub async fn sweep_keys(store: Arc<dyn Store>, interval: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store.sweep_keys().await {
            Ok(swept) => event::idempotency_keys_swept(swept),
            Err(e) => tracing::warn!(error = %e, "idempotency key sweep failed; the next one tries again"),
        }
    }
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
        store::StoredAnswer,
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
        async fn holds(&self, _: OrderId) -> Result<bool, QueueError> {
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

    /// A `trade` key and a caller that authenticated with it.
    fn desk() -> (crate::domain::KeyGrant, Caller) {
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
        (key, caller)
    }

    fn order(intake: &Intake) -> NewOrder {
        intake
            .order_from(&raw(json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1.5"})))
            .unwrap()
    }

    #[tokio::test]
    async fn an_order_is_owned_by_the_key_that_submitted_it() {
        let f = fixture(Arc::new(MemoryQueue::new(Duration::from_secs(30)))).await;
        let (key, caller) = desk();
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

    /// A memory queue with a scripted enqueue: `held()` waits until the
    /// test opens the gate (a request in flight between storing its order
    /// and queueing its job); `losing_replies()` stores the job and then
    /// fails to say so (a reply lost to a timeout or a dropped connection).
    struct ScriptedQueue {
        inner: MemoryQueue,
        gate: tokio::sync::Semaphore,
        lose_replies: bool,
    }

    impl ScriptedQueue {
        fn held() -> Self {
            ScriptedQueue {
                inner: MemoryQueue::new(Duration::from_secs(30)),
                gate: tokio::sync::Semaphore::new(0),
                lose_replies: false,
            }
        }
        fn losing_replies() -> Self {
            let queue = ScriptedQueue {
                lose_replies: true,
                ..Self::held()
            };
            queue.open();
            queue
        }
        fn open(&self) {
            self.gate.add_permits(1000);
        }
    }

    #[async_trait]
    impl Queue for ScriptedQueue {
        async fn enqueue(&self, job: Job) -> Result<(), QueueError> {
            let _pass = self.gate.acquire().await.unwrap();
            self.inner.enqueue(job).await?;
            if self.lose_replies {
                return Err(QueueError::Unavailable("timed out".into()));
            }
            Ok(())
        }
        async fn holds(&self, order: OrderId) -> Result<bool, QueueError> {
            self.inner.holds(order).await
        }
        async fn claim(&self, wait: Duration) -> Result<Option<Lease>, QueueError> {
            self.inner.claim(wait).await
        }
        async fn heartbeat(&self, lease: &Lease) -> Result<(), QueueError> {
            self.inner.heartbeat(lease).await
        }
        async fn ack(&self, lease: &Lease) -> Result<(), QueueError> {
            self.inner.ack(lease).await
        }
        async fn retry_after(&self, lease: &Lease, delay: Duration) -> Result<(), QueueError> {
            self.inner.retry_after(lease, delay).await
        }
        async fn recover_stalled(&self) -> Result<usize, QueueError> {
            self.inner.recover_stalled().await
        }
        async fn depth(&self) -> Result<Depth, QueueError> {
            self.inner.depth().await
        }
    }

    fn answer(status: u16, body: &str) -> StoredAnswer {
        StoredAnswer {
            status,
            body: body.into(),
        }
    }

    /// What the API stores when the queue fails.
    fn failed_answer(error: &SubmitError) -> StoredAnswer {
        answer(503, &format!(r#"{{"error":"{error}"}}"#))
    }

    fn keyed<'a>(key: &'a str, created: &str) -> KeyedRequest<'a> {
        KeyedRequest {
            key,
            created: answer(201, created),
            failed: &failed_answer,
        }
    }

    fn body(amount: &str) -> NewOrder {
        // As the API parses it: new ids every time.
        let tokens = TokenRegistry::new([
            ("SOL".into(), "So1".into(), 9, "10000".into()),
            ("USDC".into(), "EPj".into(), 6, "2000000".into()),
        ])
        .unwrap();
        let ids = NewIds {
            order: OrderId::new(),
            job: uuid::Uuid::new_v4().to_string(),
        };
        validate_request(
            &raw(json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": amount})),
            &tokens,
            50,
            |_, _| true,
            ids,
        )
        .unwrap()
    }

    async fn orders(store: &SqliteStore) -> usize {
        store
            .list_orders(&crate::store::ListQuery {
                status: None,
                limit: 100,
                cursor: None,
                owner: None,
                code: None,
            })
            .await
            .unwrap()
            .orders
            .len()
    }

    #[test]
    fn the_fingerprint_is_of_the_parsed_order_not_its_ids_or_spelling() {
        let (a, b) = (body("1.5"), body("1.50"));
        assert_ne!(a.id, b.id);
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&body("1.6")));
        assert_eq!(fingerprint(&a).len(), 64);
        let deadline = |at: &str| NewOrder {
            expires_at: crate::domain::Timestamp::parse(at),
            ..body("1.5")
        };
        assert_ne!(fingerprint(&a), fingerprint(&deadline("2030-01-01T00:00:00Z")));
        assert_eq!(
            fingerprint(&deadline("2030-01-01T00:00:00Z")),
            fingerprint(&deadline("2030-01-01T00:00:00.000Z"))
        );
    }

    #[tokio::test]
    async fn the_default_deadline_is_added_after_the_fingerprint_and_never_over_a_given_one() {
        let fixture = fixture(Arc::new(MemoryQueue::new(Duration::from_secs(30)))).await;
        let intake = fixture.intake.clone().with_default_ttl(Duration::from_secs(30));
        let plain = intake.with_default_deadline(body("1.5"));
        let at = plain.expires_at.expect("the default deadline");
        assert!(at.0 > SystemTime::now() + Duration::from_secs(20));
        let given = crate::domain::Timestamp::parse("2030-01-01T00:00:00Z");
        let kept = intake.with_default_deadline(NewOrder {
            expires_at: given,
            ..body("1.5")
        });
        assert_eq!(kept.expires_at, given);
        let off = intake
            .with_default_ttl(Duration::ZERO)
            .with_default_deadline(body("1.5"));
        assert_eq!(off.expires_at, None);
    }

    #[tokio::test]
    async fn an_order_created_with_an_idempotency_key_is_owned_by_the_caller_s_key() {
        let f = fixture(Arc::new(MemoryQueue::new(Duration::from_secs(30)))).await;
        let (key, caller) = desk();
        let order = body("1.5");
        f.intake
            .submit_once(order.clone(), &caller, keyed("k-owned", "{}"))
            .await
            .unwrap();
        assert_eq!(f.store.order(order.id).await.unwrap().unwrap().owner, Some(key.id));
    }

    #[tokio::test]
    async fn a_repeated_key_replays_the_first_answer_and_creates_nothing_more() {
        let queue = Arc::new(MemoryQueue::new(Duration::from_secs(30)));
        let f = fixture(queue.clone()).await;
        let first = f
            .intake
            .submit_once(body("1.5"), &anyone(), keyed("k1", r#"{"n":1}"#))
            .await
            .unwrap();
        assert_eq!(first, KeyedAnswer::First(answer(201, r#"{"n":1}"#)));
        for n in 2..5 {
            // A repeat renders its own would-be answer; the first one wins.
            let again = f
                .intake
                .submit_once(body("1.5"), &anyone(), keyed("k1", &format!(r#"{{"n":{n}}}"#)))
                .await
                .unwrap();
            assert_eq!(again, KeyedAnswer::Replayed(answer(201, r#"{"n":1}"#)));
        }
        assert_eq!(orders(&f.store).await, 1);
        assert_eq!(f.bus.published(), [(1, false)], "one pending event");
        assert!(queue.claim(Duration::ZERO).await.unwrap().is_some());
        assert!(queue.claim(Duration::ZERO).await.unwrap().is_none(), "one job");
        let elsewhere = Caller::anonymous("10.9.9.9".parse().unwrap());
        let other = f
            .intake
            .submit_once(body("1.5"), &elsewhere, keyed("k1", "{}"))
            .await
            .unwrap();
        assert!(matches!(other, KeyedAnswer::First(_)), "keys are per client");
        assert_eq!(orders(&f.store).await, 2);
    }

    #[tokio::test]
    async fn a_key_reused_for_another_order_is_refused_and_stores_nothing() {
        let f = fixture(Arc::new(MemoryQueue::new(Duration::from_secs(30)))).await;
        f.intake
            .submit_once(body("1.5"), &anyone(), keyed("k1", "{}"))
            .await
            .unwrap();
        let error = f
            .intake
            .submit_once(body("2"), &anyone(), keyed("k1", "{}"))
            .await
            .unwrap_err();
        assert!(matches!(error, SubmitError::KeyReused), "{error}");
        assert_eq!(orders(&f.store).await, 1);
    }

    #[tokio::test]
    async fn a_key_in_flight_is_refused_after_the_wait_then_replayed_once_answered() {
        let queue = Arc::new(ScriptedQueue::held());
        let f = fixture(queue.clone()).await;
        let intake = f.intake.clone().with_idempotency(IdempotencySettings {
            ttl: Duration::from_secs(60),
            wait: Duration::from_millis(100),
        });
        let first = tokio::spawn({
            let intake = intake.clone();
            async move { intake.submit_once(body("1.5"), &anyone(), keyed("k1", "created")).await }
        });
        while f.store.key_record("ip:127.0.0.1", "k1").await.unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let started = std::time::Instant::now();
        let error = intake
            .submit_once(body("1.5"), &anyone(), keyed("k1", "other"))
            .await
            .unwrap_err();
        assert!(matches!(error, SubmitError::KeyInUse), "{error}");
        assert!(started.elapsed() >= Duration::from_millis(100), "it waited first");
        // A repeat that arrives while the first is held waits for its answer.
        let waiting = tokio::spawn({
            let intake = f.intake.clone();
            async move { intake.submit_once(body("1.5"), &anyone(), keyed("k1", "other")).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        queue.open();
        assert_eq!(
            first.await.unwrap().unwrap(),
            KeyedAnswer::First(answer(201, "created"))
        );
        assert_eq!(
            waiting.await.unwrap().unwrap(),
            KeyedAnswer::Replayed(answer(201, "created"))
        );
        assert_eq!(orders(&f.store).await, 1);
    }

    /// The first event a worker records.
    fn routing() -> NewEvent {
        NewEvent {
            message: "Fetching quotes".into(),
            progress: progress::QUOTING,
            data: EventData::Routing {
                quotes_fetched: None,
                quotes: None,
            },
            patch: OrderPatch::default(),
            after_seq: None,
        }
    }

    /// An intake whose repeats do not wait: a repeat whose answer is not
    /// known at once is 409.
    fn impatient(intake: &Intake) -> Intake {
        intake.clone().with_idempotency(IdempotencySettings {
            ttl: Duration::from_secs(60),
            wait: Duration::ZERO,
        })
    }

    #[tokio::test]
    async fn a_planned_answer_is_never_written_again_and_is_replayed_while_queued_and_after_the_job_ran() {
        let queue = Arc::new(MemoryQueue::new(Duration::from_secs(30)));
        let f = fixture(queue.clone()).await;
        let intake = impatient(&f.intake);
        let order = body("1.5");
        let id = order.id;
        intake
            .submit_once(order, &anyone(), keyed("k1", "planned"))
            .await
            .unwrap();
        let record = f.store.key_record("ip:127.0.0.1", "k1").await.unwrap().unwrap();
        assert!(!record.completed, "nothing is written after the create");
        let caller = anyone();
        let repeat = || intake.submit_once(body("1.5"), &caller, keyed("k1", "other"));
        assert_eq!(
            repeat().await.unwrap(),
            KeyedAnswer::Replayed(answer(201, "planned")),
            "the job is queued"
        );
        // The job runs: the order leaves `pending`, the job is acked.
        let lease = queue.claim(Duration::ZERO).await.unwrap().unwrap();
        f.intake.recorder.record(id, routing()).await.unwrap();
        queue.ack(&lease).await.unwrap();
        assert!(!queue.holds(id).await.unwrap());
        assert_eq!(
            repeat().await.unwrap(),
            KeyedAnswer::Replayed(answer(201, "planned")),
            "the order moved on"
        );
        assert_eq!(orders(&f.store).await, 1);
        let record = f.store.key_record("ip:127.0.0.1", "k1").await.unwrap().unwrap();
        assert_eq!(
            (record.completed, record.answer),
            (false, answer(201, "planned")),
            "the record was never written again"
        );
    }

    #[tokio::test]
    async fn an_enqueue_that_failed_to_answer_but_queued_the_job_is_an_accepted_order() {
        let queue = Arc::new(ScriptedQueue::losing_replies());
        let f = fixture(queue.clone()).await;
        let plain = order(&f.intake);
        let accepted = f.intake.submit(plain.clone(), &anyone()).await.unwrap();
        assert_eq!(accepted.order_id, plain.id);
        let first = f
            .intake
            .submit_once(body("1.5"), &anyone(), keyed("k1", "planned"))
            .await
            .unwrap();
        assert_eq!(first, KeyedAnswer::First(answer(201, "planned")));
        let again = impatient(&f.intake)
            .submit_once(body("1.5"), &anyone(), keyed("k1", "other"))
            .await
            .unwrap();
        assert_eq!(again, KeyedAnswer::Replayed(answer(201, "planned")));
        for _ in 0..2 {
            let lease = queue.claim(Duration::ZERO).await.unwrap().expect("the job is queued");
            let order = f.store.order(lease.job.order_id).await.unwrap().unwrap();
            assert_eq!(order.status, Status::Pending, "not failed");
        }
        assert_eq!(f.bus.published(), [(1, false), (1, false)], "no failed event");
    }

    #[tokio::test]
    async fn compensation_never_fails_an_order_that_moved_on() {
        let f = fixture(Arc::new(MemoryQueue::new(Duration::from_secs(30)))).await;
        let plain = order(&f.intake);
        f.store
            .create_order(&plain, f.intake.pending_event(&plain))
            .await
            .unwrap();
        // The reconciler queued it and a worker took it.
        f.store.append_event(plain.id, routing()).await.unwrap();
        let failed = f
            .intake
            .compensate(plain.id, &QueueError::Unavailable("refused".into()))
            .await;
        assert!(!failed, "the order had moved on");
        let events = f.store.events(plain.id, 0).await.unwrap();
        assert_eq!(events.len(), 2, "nothing appended: {events:?}");
        assert_eq!(f.store.order(plain.id).await.unwrap().unwrap().last_error, None);
    }

    #[tokio::test]
    async fn an_unqueued_order_s_planned_answer_is_not_replayed_before_its_failure_replaces_it() {
        let f = fixture(Arc::new(MemoryQueue::new(Duration::from_secs(30)))).await;
        let intake = impatient(&f.intake);
        // The first request stored its order, the queue refused its job and
        // the order was failed; the failure is not yet in the record.
        let order = body("1.5");
        let key = NewIdempotencyKey {
            scope: "ip:127.0.0.1".into(),
            key: "k1".into(),
            fingerprint: fingerprint(&order),
            answer: answer(201, "planned"),
            expires_at: crate::domain::Timestamp(SystemTime::now() + Duration::from_secs(60)),
        };
        let created = f
            .store
            .create_order_keyed(&order, f.intake.pending_event(&order), &key)
            .await
            .unwrap();
        assert!(matches!(created, KeyedCreate::Created(_)));
        f.intake
            .compensate(order.id, &QueueError::Unavailable("refused".into()))
            .await;
        let error = intake
            .submit_once(body("1.5"), &anyone(), keyed("k1", "other"))
            .await
            .unwrap_err();
        assert!(matches!(error, SubmitError::KeyInUse), "{error}");
        let failed = answer(503, "queue unavailable");
        f.store.settle_key("ip:127.0.0.1", "k1", &failed).await.unwrap();
        assert_eq!(
            intake
                .submit_once(body("1.5"), &anyone(), keyed("k1", "other"))
                .await
                .unwrap(),
            KeyedAnswer::Replayed(failed)
        );
    }

    #[tokio::test]
    async fn a_key_in_flight_past_the_stale_age_replays_its_planned_answer() {
        let queue = Arc::new(ScriptedQueue::held());
        let f = fixture(queue.clone()).await;
        // A node that stored the order and stopped before queueing its job.
        let held = tokio::spawn({
            let intake = f.intake.clone();
            async move { intake.submit_once(body("1.5"), &anyone(), keyed("k1", "planned")).await }
        });
        while f.store.key_record("ip:127.0.0.1", "k1").await.unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        held.abort();
        let db = rusqlite::Connection::open(f._dir.path().join("t.db")).unwrap();
        let long_ago = crate::domain::Timestamp(SystemTime::now() - STALE_IN_FLIGHT - Duration::from_secs(1));
        db.execute("UPDATE idempotency_keys SET created_at = ?1", [long_ago.to_string()])
            .unwrap();
        let replayed = f
            .intake
            .submit_once(body("1.5"), &anyone(), keyed("k1", "other"))
            .await
            .unwrap();
        assert_eq!(replayed, KeyedAnswer::Replayed(answer(201, "planned")));
        assert_eq!(orders(&f.store).await, 1);
    }

    #[tokio::test]
    async fn a_key_whose_order_could_not_be_queued_replays_the_failure() {
        let f = fixture(Arc::new(DownQueue)).await;
        let first = f
            .intake
            .submit_once(body("1.5"), &anyone(), keyed("k1", "created"))
            .await
            .unwrap();
        let KeyedAnswer::First(failure) = first else {
            panic!("{first:?}")
        };
        assert_eq!(failure.status, 503);
        assert!(failure.body.contains("queue unavailable"), "{}", failure.body);
        let again = f
            .intake
            .submit_once(body("1.5"), &anyone(), keyed("k1", "created"))
            .await
            .unwrap();
        assert_eq!(
            again,
            KeyedAnswer::Replayed(failure),
            "the same 503, as Stripe replays errors"
        );
        let page = f
            .store
            .list_orders(&crate::store::ListQuery {
                status: None,
                limit: 10,
                cursor: None,
                owner: None,
                code: None,
            })
            .await
            .unwrap();
        assert_eq!(page.orders.len(), 1);
        assert_eq!(page.orders[0].status, Status::Failed, "the order never runs");
    }

    #[tokio::test]
    async fn requests_over_the_callers_limit_are_refused_and_a_keys_own_limit_wins() {
        use crate::domain::{KeyGrant, KeyId, Scope};
        let f = fixture(Arc::new(MemoryQueue::new(Duration::from_secs(30)))).await;
        let limit = Arc::new(crate::queue::MemoryRequestLimit::new());
        let intake = f.intake.clone().with_request_limit(limit.clone(), 2);
        assert!(f.intake.admit(&anyone()).await.is_none(), "no limit by default");
        assert!(intake.admit(&anyone()).await.unwrap().allowed);
        assert!(intake.admit(&anyone()).await.unwrap().allowed);
        let refused = intake.admit(&anyone()).await.unwrap();
        assert!(!refused.allowed && refused.retry_after > Duration::ZERO, "{refused:?}");
        let with_key = |per_minute| Caller {
            key: Some(KeyGrant {
                id: KeyId::new(),
                name: "k".into(),
                scopes: vec![Scope::Trade],
                orders_per_minute: per_minute,
            }),
            ip: "127.0.0.1".parse().unwrap(),
        };
        let generous = with_key(Some(5));
        for _ in 0..5 {
            assert!(intake.admit(&generous).await.unwrap().allowed);
        }
        assert!(!intake.admit(&generous).await.unwrap().allowed);
        assert!(
            intake.admit(&with_key(Some(0))).await.is_none(),
            "0: no limit for this key"
        );
        let off = f.intake.clone().with_request_limit(limit, 0);
        assert!(off.admit(&anyone()).await.is_none());
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
