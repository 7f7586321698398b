//! The `Store` seam: orders and their numbered events, the source of truth.
//! A status change and its event commit in one transaction, which is also
//! where `seq` is assigned. Implementations: [`sqlite`] (embedded) and
//! [`postgres`] (production). Imports `domain`, `config` and the venue ledger
//! types only.

pub mod config;
pub mod postgres;
pub mod sqlite;

use crate::domain::{Event, EventData, NewOrder, Order, OrderId, OrderPatch, Status};
use crate::telemetry::PoolStatus;
use async_trait::async_trait;
pub use config::{PostgresConfig, SqliteSync, StoreBackend, StoreConfig};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
use std::time::Duration;
use thiserror::Error;

/// Store failures, classified once.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    /// No such order.
    #[error("order {0} not found")]
    NotFound(OrderId),
    /// The order already reached `confirmed` or `failed`.
    #[error("order {0} is already finished")]
    Finished(OrderId),
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
}

/// A page request of `list_orders`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Only orders in this status.
    pub status: Option<Status>,
    /// Page size.
    pub limit: u32,
    /// Continue after this position (exclusive), from a previous page.
    pub cursor: Option<i64>,
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

    /// Inserts the order with its first event (`seq` 1).
    async fn create_order(&self, order: &NewOrder, first: NewEvent) -> Result<Event, StoreError>;

    /// Appends the next event of an order and applies its patch and status,
    /// atomically. Refuses finished orders.
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

    /// The connection pool, for metrics (`None`: no pool).
    fn pool_status(&self) -> Option<PoolStatus> {
        None
    }
}

#[cfg(test)]
mod tests {
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
