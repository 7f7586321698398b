//! The one path by which any event of any order is written: stored first
//! (the store assigns its `seq`, atomically with the order's patch), then
//! published on the bus. A failed publish is logged and counted, never
//! fatal: the event is stored, and watchers recover it from history.
//! Imports `domain` and the `store` and `bus` seams only.

use crate::{
    bus::{Bus, Published},
    domain::{Event, NewOrder, OrderId},
    store::{KeyedCreate, NewEvent, NewIdempotencyKey, Store, StoreError},
    telemetry,
};
use std::sync::Arc;

/// Stores, then publishes, every event.
#[derive(Clone)]
pub struct Recorder {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Recorder {
    /// A recorder over a store (the source of truth) and a bus (transport).
    pub fn new(store: Arc<dyn Store>, bus: Arc<dyn Bus>) -> Self {
        Recorder { store, bus }
    }

    /// The store events go to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Creates an order with its first event (`seq` 1), then publishes it.
    ///
    /// # Errors
    /// The store's error; nothing was published.
    pub async fn create(&self, order: &NewOrder, first: NewEvent) -> Result<Event, StoreError> {
        let event = self.store.create_order(order, first).await?;
        self.published(event).await
    }

    /// Creates an order with its first event and its `Idempotency-Key`
    /// record in one transaction, then publishes the event; a key already
    /// held stores and publishes nothing.
    ///
    /// # Errors
    /// The store's error; nothing was published.
    pub async fn create_keyed(
        &self,
        order: &NewOrder,
        first: NewEvent,
        key: &NewIdempotencyKey,
    ) -> Result<KeyedCreate, StoreError> {
        match self.store.create_order_keyed(order, first, key).await? {
            KeyedCreate::Created(event) => Ok(KeyedCreate::Created(Box::new(self.published(*event).await?))),
            KeyedCreate::Taken => Ok(KeyedCreate::Taken),
        }
    }

    /// Appends the next event of an order (with its patch), then publishes
    /// it.
    ///
    /// # Errors
    /// The store's error (`Finished` for an order already confirmed or
    /// failed); nothing was published.
    pub async fn record(&self, id: OrderId, event: NewEvent) -> Result<Event, StoreError> {
        let event = self.store.append_event(id, event).await?;
        self.published(event).await
    }

    async fn published(&self, event: Event) -> Result<Event, StoreError> {
        tracing::info!(
            order_id = %event.order_id,
            seq = event.seq,
            event = event.data.kind().as_str(),
            progress = event.progress,
            "{}",
            event.message
        );
        if let Err(e) = self.bus.publish(&Published::new(&event)).await {
            telemetry::event::backend_error("bus");
            tracing::warn!(order_id = %event.order_id, seq = event.seq, error = %e, "publish failed");
        }
        Ok(event)
    }
}
