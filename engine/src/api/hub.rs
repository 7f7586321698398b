//! The hub: fans events from this node's bus stream out to the WebSockets
//! watching each order. It subscribes the bus to an order when its first
//! local client joins and unsubscribes when the last leaves, and it never
//! waits on a client: one whose buffer is full is dropped (and closed with
//! 1013 by its session). It also counts open WebSockets per client address
//! (`websocket.max_per_ip`), so one address cannot hold them all.
//!
//! Joining waits for the bus to confirm the order's subscription, never
//! longer than `websocket.subscribe_timeout`: a bus that does not answer
//! fails the join (the session closes with 1011 and the client may
//! reconnect) instead of holding the socket open with nothing coming.

use crate::{
    bus::{Bus, BusError, Published},
    domain::OrderId,
    telemetry::{self, event},
};
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

type Ready = Option<Result<(), BusError>>;

/// Local WebSocket clients by order.
pub struct Hub {
    bus: Arc<dyn Bus>,
    topics: Mutex<HashMap<OrderId, Topic>>,
    next_id: AtomicU64,
    /// Open WebSockets by client address (only addresses with at least one).
    peers: Mutex<HashMap<IpAddr, u32>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

/// Each client's channel carries the hub's one shared copy of an event
/// (a pointer, not the event: a channel's buffer is allocated in blocks of
/// 32 slots, so this is a quarter of a kibibyte per socket, not two).
///
/// Clients are kept by id, so one leaving is O(1) (10,000 clients of one
/// order leaving one by one was quadratic in a list).
struct Topic {
    clients: HashMap<u64, mpsc::Sender<Arc<Published>>>,
    ready: watch::Receiver<Ready>,
}

/// A client's place in the hub; leaving is dropping it.
pub struct Membership {
    hub: Arc<Hub>,
    order: OrderId,
    id: u64,
    /// Live events of the order, from the moment of joining.
    pub events: mpsc::Receiver<Arc<Published>>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership").finish_non_exhaustive()
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.hub.leave(self.order, self.id);
    }
}

/// One WebSocket's place in its client address's allowance
/// ([`Hub::claim_peer_slot`]); giving it back is dropping it.
pub struct PeerSlot {
    hub: Arc<Hub>,
    ip: IpAddr,
}

impl std::fmt::Debug for PeerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerSlot").field("ip", &self.ip).finish()
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut peers = self.hub.peers();
        if let Some(open) = peers.get_mut(&self.ip) {
            *open -= 1;
            if *open == 0 {
                peers.remove(&self.ip);
            }
        }
    }
}

/// Counts for `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubStats {
    /// Orders with at least one local client.
    pub orders: usize,
    /// Local clients.
    pub clients: usize,
}

impl Hub {
    /// A hub over a bus.
    pub fn new(bus: Arc<dyn Bus>) -> Arc<Self> {
        Arc::new(Hub {
            bus,
            topics: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            peers: Mutex::new(HashMap::new()),
        })
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims a WebSocket slot for a client at `ip`, which may hold at most
    /// `max` at once; `None` when it already holds `max` (the caller answers
    /// 429). The slot is held until the returned value is dropped.
    pub fn claim_peer_slot(self: &Arc<Self>, ip: IpAddr, max: u32) -> Option<PeerSlot> {
        let mut peers = self.peers();
        let open = peers.entry(ip).or_insert(0);
        if *open >= max {
            if *open == 0 {
                peers.remove(&ip);
            }
            return None;
        }
        *open += 1;
        Some(PeerSlot { hub: self.clone(), ip })
    }

    fn topics(&self) -> std::sync::MutexGuard<'_, HashMap<OrderId, Topic>> {
        self.topics.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a client; returns once the bus delivers the order's events,
    /// so history read afterwards cannot miss one.
    ///
    /// # Errors
    /// The bus's error when its subscription failed, or
    /// [`BusError::Unavailable`] when it was not confirmed within
    /// `subscribe_timeout` (`websocket.subscribe_timeout`). Every client
    /// waiting on the same subscription gets the same error and leaves, so
    /// the next join subscribes afresh.
    pub async fn join(
        self: &Arc<Self>,
        order: OrderId,
        buffer: usize,
        subscribe_timeout: Duration,
    ) -> Result<Membership, BusError> {
        let (sender, events) = mpsc::channel(buffer);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut ready = {
            let mut topics = self.topics();
            let topic = topics.entry(order).or_insert_with(|| {
                // Called under the lock: subscribe/unsubscribe keep their order.
                let subscribed = self.bus.subscribe(order);
                let (done, ready) = watch::channel(None);
                tokio::spawn(async move {
                    // Bounded, so a bus that never answers cannot hold the
                    // task (or its waiting clients) forever.
                    let outcome = tokio::time::timeout(subscribe_timeout, subscribed)
                        .await
                        .unwrap_or_else(|_| {
                            Err(BusError::Unavailable(format!(
                                "subscription not confirmed within {}",
                                humantime::format_duration(subscribe_timeout)
                            )))
                        });
                    let _ = done.send(Some(outcome));
                });
                Topic {
                    clients: HashMap::new(),
                    ready,
                }
            });
            topic.clients.insert(id, sender);
            let ready = topic.ready.clone();
            event::ws_orders_watched(topics.len());
            ready
        };
        let membership = Membership {
            hub: self.clone(),
            order,
            id,
            events,
        };
        let outcome = ready
            .wait_for(Option::is_some)
            .await
            .map(|r| r.clone().expect("waited for Some"))
            .unwrap_or_else(|_| Err(BusError::Unavailable("subscription task ended".into())));
        outcome.map(|()| membership)
    }

    fn leave(&self, order: OrderId, id: u64) {
        let mut topics = self.topics();
        if let Some(topic) = topics.get_mut(&order) {
            topic.clients.remove(&id);
            if topic.clients.is_empty() {
                topics.remove(&order);
                self.bus.unsubscribe(order);
                event::ws_orders_watched(topics.len());
            }
        }
    }

    /// Fans out the node's bus stream until it ends or `shutdown` fires.
    pub async fn run(self: Arc<Self>, mut stream: mpsc::Receiver<Published>, shutdown: CancellationToken) {
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                event = stream.recv() => match event {
                    Some(event) => event,
                    None => return,
                },
            };
            let mut topics = self.topics();
            let Some(topic) = topics.get_mut(&event.order_id) else {
                continue;
            };
            let event = Arc::new(event);
            topic.clients.retain(|id, client| match client.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(order_id = %event.order_id, client = id, "slow WebSocket client dropped");
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
            if topic.clients.is_empty() {
                topics.remove(&event.order_id);
                self.bus.unsubscribe(event.order_id);
                telemetry::event::ws_orders_watched(topics.len());
            }
        }
    }

    /// How many orders and clients are watched here.
    pub fn stats(&self) -> HubStats {
        let topics = self.topics();
        HubStats {
            orders: topics.len(),
            clients: topics.values().map(|t| t.clients.len()).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::MemoryBus;
    use bytes::Bytes;
    use std::sync::atomic::AtomicUsize;

    const WAIT: Duration = Duration::from_secs(5);

    /// A bus whose subscriptions never complete (a backend that accepted
    /// the connection and then went silent); counts `subscribe` calls.
    #[derive(Default)]
    struct SilentBus {
        subscribes: AtomicUsize,
        unsubscribes: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Bus for SilentBus {
        async fn publish(&self, _event: &Published) -> Result<(), BusError> {
            Ok(())
        }

        fn subscribe(&self, _order: OrderId) -> crate::bus::Subscribed {
            self.subscribes.fetch_add(1, Ordering::SeqCst);
            Box::pin(std::future::pending())
        }

        fn unsubscribe(&self, _order: OrderId) {
            self.unsubscribes.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_join_gives_up_at_the_subscribe_timeout_and_the_next_one_subscribes_afresh() {
        let bus = Arc::new(SilentBus::default());
        let hub = Hub::new(bus.clone());
        let order = OrderId::new();
        let started = tokio::time::Instant::now();
        let (first, second) = tokio::join!(hub.join(order, 8, WAIT), hub.join(order, 8, WAIT));
        assert_eq!(
            started.elapsed(),
            WAIT,
            "both waited exactly the timeout (paused clock)"
        );
        for outcome in [first, second] {
            let error = outcome.expect_err("no subscription, no membership");
            assert!(error.is_transient(), "the client may reconnect: {error}");
            assert_eq!(
                error.to_string(),
                "bus unavailable: subscription not confirmed within 5s"
            );
        }
        assert_eq!(bus.subscribes.load(Ordering::SeqCst), 1, "one subscription per order");
        assert_eq!(
            bus.unsubscribes.load(Ordering::SeqCst),
            1,
            "given up when the last waiter left"
        );
        assert_eq!(hub.stats(), HubStats { orders: 0, clients: 0 });

        let again = hub.join(order, 8, WAIT).await;
        assert!(again.is_err());
        assert_eq!(
            bus.subscribes.load(Ordering::SeqCst),
            2,
            "a later join tries the bus again"
        );
    }

    fn event(order_id: OrderId, seq: u64) -> Published {
        Published {
            order_id,
            seq,
            terminal: false,
            payload: Bytes::from_static(b"{}"),
        }
    }

    #[test]
    fn an_address_gets_at_most_max_slots_and_gets_one_back_when_one_is_dropped() {
        let (bus, _stream) = MemoryBus::new(4);
        let hub = Hub::new(Arc::new(bus));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = hub.claim_peer_slot(a, 2).expect("first slot");
        let _second = hub.claim_peer_slot(a, 2).expect("second slot");
        assert!(hub.claim_peer_slot(a, 2).is_none(), "a third is over the limit");
        assert!(
            hub.claim_peer_slot(b, 2).is_some(),
            "another address has its own allowance"
        );
        drop(first);
        assert!(hub.claim_peer_slot(a, 2).is_some(), "a dropped slot is free again");
    }

    #[test]
    fn addresses_without_open_sockets_are_forgotten() {
        let (bus, _stream) = MemoryBus::new(4);
        let hub = Hub::new(Arc::new(bus));
        let ip: IpAddr = "::1".parse().unwrap();
        drop(hub.claim_peer_slot(ip, 1).expect("a slot"));
        assert!(hub.claim_peer_slot(ip, 0).is_none());
        assert!(hub.peers().is_empty(), "no entry is kept for an address with no socket");
    }

    #[tokio::test]
    async fn fans_out_to_every_client_and_unsubscribes_when_empty() {
        let (bus, stream) = MemoryBus::new(64);
        let bus = Arc::new(bus);
        let hub = Hub::new(bus.clone());
        tokio::spawn(hub.clone().run(stream, CancellationToken::new()));
        let order = OrderId::new();
        let mut a = hub.join(order, 8, WAIT).await.unwrap();
        let mut b = hub.join(order, 8, WAIT).await.unwrap();
        assert_eq!(hub.stats(), HubStats { orders: 1, clients: 2 });
        bus.publish(&event(order, 1)).await.unwrap();
        assert_eq!(a.events.recv().await.unwrap().seq, 1);
        assert_eq!(b.events.recv().await.unwrap().seq, 1);
        drop(a);
        drop(b);
        assert_eq!(hub.stats(), HubStats { orders: 0, clients: 0 });
    }

    #[tokio::test]
    async fn a_full_client_is_dropped_without_slowing_others() {
        let (bus, stream) = MemoryBus::new(64);
        let bus = Arc::new(bus);
        let hub = Hub::new(bus.clone());
        tokio::spawn(hub.clone().run(stream, CancellationToken::new()));
        let order = OrderId::new();
        let mut slow = hub.join(order, 1, WAIT).await.unwrap();
        let mut fast = hub.join(order, 8, WAIT).await.unwrap();
        for seq in 1..=3 {
            bus.publish(&event(order, seq)).await.unwrap();
        }
        for seq in 1..=3 {
            assert_eq!(fast.events.recv().await.unwrap().seq, seq);
        }
        assert_eq!(slow.events.recv().await.unwrap().seq, 1);
        assert!(
            slow.events.recv().await.is_none(),
            "dropped after its buffer overflowed"
        );
    }
}
