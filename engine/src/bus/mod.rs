//! The `Bus` seam: events published after commit, delivered to every node
//! that subscribed to their order. A node has one stream of incoming events,
//! handed out once by the bus's constructor (to its WebSocket hub), and
//! subscribes per order. Implementations: [`memory`] (in-process) and
//! [`redis`] (pub/sub; sharded pub/sub on a Redis Cluster).
//!
//! May import: `domain`, `telemetry`.

pub mod config;
pub mod memory;
pub mod redis;

use crate::domain::{Event, OrderId};
use async_trait::async_trait;
use bytes::Bytes;
pub use config::{BusBackend, BusConfig};
pub use memory::MemoryBus;
pub use redis::{PushClient, RedisBus, SubscriberHealth};
use std::{future::Future, pin::Pin};
use thiserror::Error;
use tokio::sync::{mpsc, watch};

/// An event as it travels: its identity plus its JSON, serialised once. A
/// `seq` of 0 is a resync marker: the bus may have lost events of the order,
/// so its watchers re-read the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The order.
    pub order_id: OrderId,
    /// The event's seq.
    pub seq: u64,
    /// Whether the event is `confirmed` or `failed`.
    pub terminal: bool,
    /// The event's JSON, as sent to clients.
    pub payload: Bytes,
}

impl Published {
    /// A resync marker for an order.
    pub fn resync(order_id: OrderId) -> Self {
        Published {
            order_id,
            seq: 0,
            terminal: false,
            payload: Bytes::new(),
        }
    }

    /// Whether this is a resync marker rather than an event.
    pub fn is_resync(&self) -> bool {
        self.seq == 0
    }

    /// Serialises an event.
    pub fn new(event: &Event) -> Self {
        Published {
            order_id: event.order_id,
            seq: event.seq,
            terminal: event.data.kind().is_terminal(),
            payload: Bytes::from(serde_json::to_vec(event).expect("events serialise")),
        }
    }
}

/// Bus failures, classified once, by the adapter that saw them.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BusError {
    /// The backend is unreachable or the subscriber is behind; retry later.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// The node's subscriber was stopped (the node is shutting down).
    #[error("bus stopped: {0}")]
    Stopped(String),
}

impl BusError {
    /// Whether the same call may succeed later: only when the backend was
    /// unavailable, never once the bus was stopped.
    pub fn is_transient(&self) -> bool {
        matches!(self, BusError::Unavailable(_))
    }
}

/// Resolves once a subscription delivers.
pub type Subscribed = Pin<Box<dyn Future<Output = Result<(), BusError>> + Send>>;

/// Pub/sub of order events.
#[async_trait]
pub trait Bus: Send + Sync {
    /// Publishes an event (after it was committed to the store).
    async fn publish(&self, event: &Published) -> Result<(), BusError>;

    /// Starts delivering an order's events to this node's stream. Calls take
    /// effect in call order (with `unsubscribe`); the future resolves when
    /// delivery is guaranteed.
    fn subscribe(&self, order: OrderId) -> Subscribed;

    /// Stops delivering an order's events to this node.
    fn unsubscribe(&self, order: OrderId);

    /// Whether this node hears the bus now: `Ok` while its subscriber is
    /// connected and answers its health check, else
    /// [`BusError::Unavailable`] with the reason (or [`BusError::Stopped`]
    /// once shut down). `/ready` and `/health` report it; it never waits.
    /// The default (always `Ok`) suits a bus with no connection to lose,
    /// such as a test double.
    fn health(&self) -> Result<(), BusError> {
        Ok(())
    }

    /// The firehose: a counter that moves (wake-ups coalesce) after an
    /// event of any order was published, on any node. It carries no event:
    /// it wakes this node's stream reader (`GET /api/stream`), which reads
    /// the store. `None`: this bus has none (a Redis Cluster, a test
    /// double), and the reader polls the store instead.
    fn firehose(&self) -> Option<watch::Receiver<u64>> {
        None
    }
}

/// This node's stream of incoming events (subscribed orders' events and
/// resync markers), returned once, beside the bus, by each constructor.
pub type Stream = mpsc::Receiver<Published>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unavailable_bus_is_worth_retrying() {
        assert!(BusError::Unavailable("down".into()).is_transient());
        assert!(!BusError::Stopped("shutdown".into()).is_transient());
    }
}
