//! The `Store` seam: orders and their numbered events, the source of truth;
//! also the API keys (as digests) and the WebSocket tickets every API node
//! must see alike.
//! A status change and its event commit in one transaction, which is also
//! where `seq` is assigned. Implementations: [`sqlite`] (embedded) and
//! [`postgres`] (production); both also keep the simulated [`chain`]'s
//! durable state. Holds what the
//! backends share (page cutting, the unfinished SQL predicate, the pool
//! status).
//!
//! May import: `chain` (its types, for the chain's durable state), `domain`, `telemetry`.

pub mod chain;
pub mod config;
#[cfg(test)]
pub(crate) mod conformance;
pub mod postgres;
pub mod sqlite;
pub mod stream;

use crate::domain::{
    ApiKey, Event, EventData, KeyId, NewKey, NewOrder, Order, OrderId, OrderPatch, SecretHash, Status, Ticket,
    Timestamp,
};
use crate::telemetry::PoolStatus;
use async_trait::async_trait;
pub use chain::{Advance, Advanced, Broadcast, ChainHead, ChainStore, ChainTx, Lander, Landing, PoolRow, TxState};
pub use config::{PostgresConfig, SqliteSync, StoreBackend, StoreConfig};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
use std::{sync::LazyLock, time::Duration};
pub use stream::{BadCursor, StreamCursor, StreamItem, StreamPage};
use thiserror::Error;

/// Store failures, classified once.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    /// No such order.
    #[error("order {0} not found")]
    NotFound(OrderId),
    /// The order already reached `confirmed`, `failed` or `cancelled`.
    #[error("order {0} is already finished")]
    Finished(OrderId),
    /// A `cancelled` event for an order whose submission started: it may
    /// execute, so it can no longer be cancelled.
    #[error("order {0} was submitted and can no longer be cancelled")]
    Submitted(OrderId),
    /// The first `submitted` event of an order whose `expires_at` passed:
    /// it must never be submitted now.
    #[error("order {0} passed its deadline before it was submitted")]
    Expired(OrderId),
    /// A retry of an order that another order already retries.
    #[error("order {0} was already retried")]
    AlreadyRetried(OrderId),
    /// An event appended with [`NewEvent::after_seq`] found the order moved
    /// on meanwhile (another worker's run wrote to it): nothing stored.
    #[error("order {0} changed since it was read")]
    Conflict(OrderId),
    /// The backend is unreachable or failed; retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data cannot be read back (a bug or a hand edit).
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// An event to append, with the order fields it sets.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Human words.
    pub message: String,
    /// 0–100.
    pub progress: u8,
    /// Kind and fields.
    pub data: EventData,
    /// Order fields to set in the same transaction.
    pub patch: OrderPatch,
    /// Append only if the order's latest event is still this `seq`
    /// ([`StoreError::Conflict`] otherwise): a compare-and-set for writers
    /// that decided on what they read, such as a worker about to send a
    /// transaction it signed.
    pub after_seq: Option<u64>,
}

/// An answer kept for an `Idempotency-Key`: the HTTP status and the exact
/// body bytes sent, so a replay on any node is the first answer byte for
/// byte (the body holds node-specific parts such as `wsUrl`, so it is
/// stored rendered, never rendered again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    /// HTTP status code (201, or the 5xx of a compensated failure).
    pub status: u16,
    /// The JSON body as sent.
    pub body: String,
}

/// An `Idempotency-Key` to store in the transaction that creates its order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIdempotencyKey {
    /// Whose key it is: the caller's client scope (`key:<id>` or
    /// `ip:<address>`); keys of different scopes never meet.
    pub scope: String,
    /// The header's value (1–255 printable ASCII characters).
    pub key: String,
    /// Fingerprint of the parsed request (hex SHA-256).
    pub fingerprint: String,
    /// The answer to give when the request completes as planned (the 201).
    /// It stands once the order's job is queued; only an answer that
    /// replaces it is written later ([`Store::settle_key`]).
    pub answer: StoredAnswer,
    /// When the key may be forgotten (`orders.idempotency_ttl` after now).
    pub expires_at: Timestamp,
}

/// A stored, unexpired `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Fingerprint of the request that took the key.
    pub fingerprint: String,
    /// The order that request created.
    pub order_id: OrderId,
    /// The answer to replay: the planned one, or the one that replaced it
    /// (then `completed`).
    pub answer: StoredAnswer,
    /// Whether [`Store::settle_key`] made the answer final. `false` for a
    /// planned answer, which the intake proves from the order and its job
    /// (see `pipeline::intake`).
    pub completed: bool,
    /// When the key was taken.
    pub created_at: Timestamp,
}

/// What [`Store::create_order_keyed`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyedCreate {
    /// The key was free (or expired): the order, its first event and the
    /// key were stored together.
    Created(Box<Event>),
    /// An unexpired record holds the key; nothing was stored.
    Taken,
}

/// A page request of `list_orders`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Only orders in this status.
    pub status: Option<Status>,
    /// Only orders whose latest error (`lastError.code`) has this code,
    /// e.g. the dead letters `status=failed&code=deadline_exceeded`.
    pub code: Option<String>,
    /// Page size.
    pub limit: u32,
    /// Continue after this position (exclusive), from a previous page.
    pub cursor: Option<i64>,
    /// Only orders this key owns; `None`: every order.
    pub owner: Option<KeyId>,
}

/// A page of orders, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderPage {
    /// The orders.
    pub orders: Vec<Order>,
    /// Cursor of the next page, if there is one.
    pub next_cursor: Option<i64>,
}

/// Orders and events, durably.
#[async_trait]
pub trait Store: Send + Sync {
    /// Applies pending migrations; returns the versions applied now.
    async fn migrate(&self) -> Result<Vec<u32>, StoreError>;

    /// Versions not applied yet.
    async fn pending_migrations(&self) -> Result<Vec<u32>, StoreError>;

    /// Inserts the order with its first event (`seq` 1). With
    /// `order.retry_of`, also sets `retried_by` of that order, in the same
    /// transaction; [`StoreError::AlreadyRetried`] (nothing stored) when
    /// it already has a retry, [`StoreError::NotFound`] when it is gone.
    async fn create_order(&self, order: &NewOrder, first: NewEvent) -> Result<Event, StoreError>;

    /// Inserts the order with its first event and the `Idempotency-Key`
    /// record (not settled, holding the planned answer `key.answer`), in
    /// one transaction, unless an unexpired record holds the key (then
    /// nothing is stored: two requests racing with one key make one order,
    /// on any number of nodes). An expired record is replaced.
    async fn create_order_keyed(
        &self,
        order: &NewOrder,
        first: NewEvent,
        key: &NewIdempotencyKey,
    ) -> Result<KeyedCreate, StoreError>;

    /// The unexpired record of `key` in `scope`.
    async fn key_record(&self, scope: &str, key: &str) -> Result<Option<KeyRecord>, StoreError>;

    /// Replaces the key's planned answer with `answer` (a compensated
    /// failure) and marks it final (`completed`); an unknown key is
    /// skipped.
    async fn settle_key(&self, scope: &str, key: &str, answer: &StoredAnswer) -> Result<(), StoreError>;

    /// Deletes expired key records; returns how many.
    async fn sweep_keys(&self) -> Result<u64, StoreError>;

    /// Appends the next event of an order and applies its patch and status,
    /// atomically. Refuses finished orders ([`StoreError::Finished`]), so a
    /// cancelled order is never submitted; refuses a `cancelled` event once
    /// a submission started ([`StoreError::Submitted`]: attempts > 0 or
    /// status `submitted`), and the first `submitted` event at or after the
    /// order's `expires_at` ([`StoreError::Expired`]). Each rule is decided
    /// in the transaction that appends, so a cancel and the worker's
    /// submission racing each other cannot both win.
    async fn append_event(&self, id: OrderId, event: NewEvent) -> Result<Event, StoreError>;

    /// One order.
    async fn order(&self, id: OrderId) -> Result<Option<Order>, StoreError>;

    /// Events of an order with `seq > after`, in order.
    async fn events(&self, id: OrderId, after: u64) -> Result<Vec<Event>, StoreError>;

    /// Orders, newest first.
    async fn list_orders(&self, query: &ListQuery) -> Result<OrderPage, StoreError>;

    /// Ids of orders not yet confirmed or failed, oldest first.
    async fn unfinished_orders(&self) -> Result<Vec<OrderId>, StoreError>;

    /// Answers when the store is reachable.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Unfinished orders whose last event is older than `older_than`: how
    /// many, and how long ago the oldest of them last moved.
    async fn stuck_orders(&self, older_than: Duration) -> Result<(u64, Option<Duration>), StoreError>;

    /// Stores a new API key; answers it as stored.
    async fn create_key(&self, key: &NewKey) -> Result<ApiKey, StoreError>;

    /// The key whose secret has this digest (revoked ones too: the caller
    /// decides), or `None`.
    async fn key_by_secret(&self, hash: &SecretHash) -> Result<Option<ApiKey>, StoreError>;

    /// Every key, oldest first.
    async fn keys(&self) -> Result<Vec<ApiKey>, StoreError>;

    /// Revokes a key (a second revoke keeps the first time); answers the key,
    /// or `None` when there is no such key.
    async fn revoke_key(&self, id: KeyId) -> Result<Option<ApiKey>, StoreError>;

    /// Records that a WebSocket ticket was used, and forgets used tickets
    /// that expired (they can no longer open anything). Answers `false`
    /// when the ticket was used before, on any node: a ticket opens one
    /// stream once. Tickets are stateless until used (signed, see
    /// `pipeline::Keys`), so this is the only ticket write.
    async fn use_ticket(&self, ticket: &Ticket) -> Result<bool, StoreError>;

    /// The 32-byte secret named `name` that every node shares (e.g. the
    /// key that signs WebSocket tickets): `candidate` is stored when there
    /// is none yet, and the stored one is answered (the first writer wins,
    /// on any number of nodes).
    async fn signing_secret(&self, name: &str, candidate: [u8; 32]) -> Result<[u8; 32], StoreError>;

    /// The stream of events (`GET /api/stream`): events after `after` in
    /// stream order, at most `limit`, of every order (`owner` `None`) or of
    /// the orders `owner` owns. Commit-order safe: an event not returned
    /// now never later appears at or before the last one returned (see
    /// [`stream`]); `more` says to ask again (a full page, or events held
    /// back behind a transaction still running).
    async fn stream_events(
        &self,
        after: StreamCursor,
        owner: Option<KeyId>,
        limit: u32,
    ) -> Result<StreamPage, StoreError>;

    /// The stream's head now: the place of the last event a
    /// [`Store::stream_events`] from [`StreamCursor::START`] would return
    /// ([`StreamCursor::START`] when there is none). A stream that starts
    /// "from now" starts here.
    async fn stream_head(&self) -> Result<StreamCursor, StoreError>;

    /// The connection pool, for metrics (`None`: no pool).
    fn pool_status(&self) -> Option<PoolStatus> {
        None
    }
}

/// Rows a backend fetches for a page of `limit`: one more than the page,
/// so the extra row tells whether another page follows.
pub(crate) fn rows_for_page(limit: u32) -> i64 {
    i64::from(limit) + 1
}

/// Cuts the rows fetched for a page (at most [`rows_for_page`] of them,
/// newest first) to `limit` orders; the next cursor is the `created_seq` of
/// the last order kept, and `None` when no row was left over.
pub(crate) fn cut_page(mut orders: Vec<Order>, limit: u32) -> OrderPage {
    let limit = limit as usize;
    let next_cursor = if orders.len() > limit {
        orders.truncate(limit);
        orders.last().map(|o| o.created_seq)
    } else {
        None
    };
    OrderPage { orders, next_cursor }
}

/// The SQL predicate "the order is not finished" over the `status` column,
/// generated from the domain's terminal statuses:
/// `status NOT IN ('confirmed', 'failed', 'cancelled')`. It is textually the
/// predicate of the `orders_unfinished_updated` partial index (rebuilt by
/// migration 0006), so the
/// planners can use that index.
pub(crate) fn unfinished_sql() -> &'static str {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        let terminal: Vec<String> = Status::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        format!("status NOT IN ({})", terminal.join(", "))
    });
    &SQL
}

/// A deadpool pool's state under the pool's name (`"postgres"`, `"redis"`):
/// both deadpool-postgres and deadpool-redis report `deadpool::Status`.
impl From<(&'static str, deadpool_postgres::Status)> for PoolStatus {
    fn from((pool, status): (&'static str, deadpool_postgres::Status)) -> Self {
        PoolStatus {
            pool,
            connections: status.size,
            idle: status.available,
            waiting: status.waiting,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfinished_predicate_names_the_terminal_statuses_like_the_partial_index() {
        assert_eq!(unfinished_sql(), "status NOT IN ('confirmed', 'failed', 'cancelled')");
        for migration in [sqlite::MIGRATIONS[5].2, postgres::MIGRATIONS[5].2] {
            assert!(migration.contains(unfinished_sql()), "{migration}");
        }
    }

    #[test]
    fn a_page_keeps_limit_orders_and_points_past_the_last_one() {
        let order = |created_seq| Order {
            created_seq,
            ..conformance::sample_order()
        };
        let page = cut_page(vec![order(5), order(4), order(3)], 2);
        assert_eq!(page.orders.iter().map(|o| o.created_seq).collect::<Vec<_>>(), [5, 4]);
        assert_eq!(page.next_cursor, Some(4));
        let last = cut_page(vec![order(2), order(1)], 2);
        assert_eq!(last.orders.len(), 2);
        assert_eq!(last.next_cursor, None);
        assert_eq!(rows_for_page(2), 3);
    }

    #[test]
    fn pool_status_carries_its_pool_name() {
        let status = deadpool_postgres::Status {
            max_size: 8,
            size: 3,
            available: 2,
            waiting: 1,
        };
        assert_eq!(
            PoolStatus::from(("postgres", status)),
            PoolStatus {
                pool: "postgres",
                connections: 3,
                idle: 2,
                waiting: 1
            }
        );
    }

    #[test]
    fn migration_0009_drops_the_execution_ledger_on_every_backend() {
        for list in [sqlite::MIGRATIONS, postgres::MIGRATIONS] {
            let (_, name, sql) = list.iter().find(|(version, _, _)| *version == 9).unwrap();
            assert_eq!(*name, "drop_executions");
            assert!(sql.contains("DROP TABLE IF EXISTS executions;"), "{sql}");
        }
    }

    #[test]
    fn every_backend_has_the_same_migration_versions() {
        let versions = |list: &[(u32, &str, &str)]| {
            list.iter()
                .map(|(v, name, _)| (*v, name.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            versions(super::sqlite::MIGRATIONS),
            versions(super::postgres::MIGRATIONS)
        );
    }
}
