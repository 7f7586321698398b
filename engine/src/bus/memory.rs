//! In-process bus: publish hands the event to this process's stream when
//! its order is subscribed. Imports `domain` and its own seam only.

use super::{Bus, BusError, Published, Stream, Subscribed};
use crate::domain::OrderId;
use async_trait::async_trait;
use std::{collections::HashSet, sync::Mutex};
use tokio::sync::{mpsc, watch};

/// In-process [`Bus`].
pub struct MemoryBus {
    subscribed: Mutex<HashSet<OrderId>>,
    sender: mpsc::Sender<Published>,
    /// Moves on every publish ([`Bus::firehose`]).
    firehose: watch::Sender<u64>,
}

impl std::fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBus").finish_non_exhaustive()
    }
}

impl MemoryBus {
    /// A bus buffering up to `buffer` undelivered events, and this
    /// process's stream of them (the only one).
    pub fn new(buffer: usize) -> (Self, Stream) {
        let (sender, stream) = mpsc::channel(buffer);
        let bus = MemoryBus {
            subscribed: Mutex::new(HashSet::new()),
            sender,
            firehose: watch::Sender::new(0),
        };
        (bus, stream)
    }

    fn subscribed(&self) -> std::sync::MutexGuard<'_, HashSet<OrderId>> {
        self.subscribed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, event: &Published) -> Result<(), BusError> {
        self.firehose.send_modify(|n| *n = n.wrapping_add(1));
        if !self.subscribed().contains(&event.order_id) {
            return Ok(());
        }
        // Waits when the hub is behind rather than dropping: the hub never
        // blocks on clients, so this is brief.
        self.sender
            .send(event.clone())
            .await
            .map_err(|_| BusError::Stopped("the hub stopped listening".into()))
    }

    fn subscribe(&self, order: OrderId) -> Subscribed {
        self.subscribed().insert(order);
        Box::pin(async { Ok(()) })
    }

    fn unsubscribe(&self, order: OrderId) {
        self.subscribed().remove(&order);
    }

    /// In-process delivery cannot be cut off: healthy until the hub stops
    /// listening.
    fn health(&self) -> Result<(), BusError> {
        if self.sender.is_closed() {
            Err(BusError::Stopped("the hub stopped listening".into()))
        } else {
            Ok(())
        }
    }

    fn firehose(&self) -> Option<watch::Receiver<u64>> {
        Some(self.firehose.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn event(order_id: OrderId, seq: u64) -> Published {
        Published {
            order_id,
            seq,
            terminal: false,
            payload: Bytes::from_static(b"{}"),
        }
    }

    #[tokio::test]
    async fn delivers_only_subscribed_orders() {
        let (bus, mut stream) = MemoryBus::new(16);
        let (watched, other) = (OrderId::new(), OrderId::new());
        bus.subscribe(watched).await.unwrap();
        bus.publish(&event(other, 1)).await.unwrap();
        bus.publish(&event(watched, 1)).await.unwrap();
        assert_eq!(stream.recv().await.unwrap().order_id, watched);
        bus.unsubscribe(watched);
        bus.publish(&event(watched, 2)).await.unwrap();
        assert!(stream.try_recv().is_err());
    }

    #[tokio::test]
    async fn every_publish_moves_the_firehose_watched_or_not() {
        let (bus, _stream) = MemoryBus::new(16);
        let mut firehose = bus.firehose().expect("an in-process firehose");
        bus.publish(&event(OrderId::new(), 1)).await.unwrap();
        firehose.changed().await.unwrap();
        assert!(!firehose.has_changed().unwrap(), "one wake-up per change seen");
        bus.publish(&event(OrderId::new(), 1)).await.unwrap();
        bus.publish(&event(OrderId::new(), 2)).await.unwrap();
        assert!(firehose.has_changed().unwrap(), "wake-ups coalesce");
    }
}
