//! The Redis bus: events are published on `<prefix>:order:<id>`. Each node
//! holds one subscriber connection, subscribed to exactly the orders its
//! WebSocket clients watch; a command task applies subscribe/unsubscribe in
//! call order and reconnects (then resubscribes, and tells every watched
//! order to resync from the store, since messages published meanwhile are
//! gone). The task runs until the shutdown token given to [`RedisBus::new`]
//! is cancelled or the bus is dropped. Imports `domain` and its own seam
//! only; never `api`, `pipeline` or another adapter.

use super::{Bus, BusError, Published, Stream, Subscribed};
use crate::domain::{EventKind, OrderId};
use async_trait::async_trait;
use bytes::Bytes;
use deadpool_redis::{Pool, redis};
use futures_util::StreamExt;
use std::{collections::HashSet, time::Duration};
use tokio::sync::{mpsc, mpsc::error::TrySendError, oneshot};
use tokio_util::sync::CancellationToken;

/// Subscribe/unsubscribe commands waiting for the subscriber task at most;
/// past that, `subscribe` answers "unavailable" at once rather than queue
/// without bound behind a stuck connection.
const COMMAND_BUFFER: usize = 1024;

fn unavailable(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(e.to_string())
}

fn stopped() -> BusError {
    BusError::Stopped("the subscriber task stopped".into())
}

enum Command {
    Subscribe(OrderId, oneshot::Sender<Result<(), BusError>>),
    Unsubscribe(OrderId),
}

/// The [`Bus`] on Redis pub/sub.
pub struct RedisBus {
    publisher: Pool,
    prefix: String,
    commands: mpsc::Sender<Command>,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus").finish_non_exhaustive()
    }
}

impl RedisBus {
    /// Starts the subscriber task on `client`; publishes through `publisher`
    /// (a pool of its own, apart from the queue's). Returns the bus and this
    /// node's stream of incoming events (buffering up to `buffer`). The
    /// task stops when `shutdown` is cancelled or the bus is dropped; then
    /// `subscribe` answers [`BusError::Stopped`] and the stream ends.
    pub fn new(
        client: redis::Client,
        publisher: Pool,
        prefix: &str,
        buffer: usize,
        shutdown: CancellationToken,
    ) -> (Self, Stream) {
        let (commands, rx) = mpsc::channel(COMMAND_BUFFER);
        let (sender, stream) = mpsc::channel(buffer);
        tokio::spawn(subscriber(client, prefix.to_owned(), rx, sender, shutdown));
        let bus = RedisBus {
            publisher,
            prefix: prefix.to_owned(),
            commands,
        };
        (bus, stream)
    }
}

fn channel(prefix: &str, order: OrderId) -> String {
    format!("{prefix}:order:{order}")
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(&self, event: &Published) -> Result<(), BusError> {
        let mut conn = self.publisher.get().await.map_err(unavailable)?;
        redis::cmd("PUBLISH")
            .arg(channel(&self.prefix, event.order_id))
            .arg(event.payload.as_ref())
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    fn subscribe(&self, order: OrderId) -> Subscribed {
        let (done, confirmed) = oneshot::channel();
        // Sent now, not when the future is polled: commands keep call order.
        let sent = self.commands.try_send(Command::Subscribe(order, done));
        Box::pin(async move {
            sent.map_err(|e| match e {
                TrySendError::Full(_) => unavailable("the subscriber is behind"),
                TrySendError::Closed(_) => stopped(),
            })?;
            confirmed.await.map_err(|_| stopped())?
        })
    }

    fn unsubscribe(&self, order: OrderId) {
        if let Err(TrySendError::Full(_)) = self.commands.try_send(Command::Unsubscribe(order)) {
            // The subscription lingers until the next reconnect; the hub
            // drops events of orders nobody watches.
            tracing::warn!(%order, "Redis subscriber is behind; unsubscribe dropped");
        }
    }
}

/// Parses a message into what the hub needs.
fn parse(payload: &[u8]) -> Option<Published> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Head {
        order_id: OrderId,
        seq: u64,
        #[serde(rename = "type")]
        kind: String,
    }
    let head: Head = serde_json::from_slice(payload).ok()?;
    Some(Published {
        order_id: head.order_id,
        seq: head.seq,
        terminal: EventKind::parse(&head.kind).is_some_and(EventKind::is_terminal),
        payload: Bytes::copy_from_slice(payload),
    })
}

/// Owns the subscriber connection until `shutdown` is cancelled or the bus
/// (the command sender) is dropped.
async fn subscriber(
    client: redis::Client,
    prefix: String,
    commands: mpsc::Receiver<Command>,
    out: mpsc::Sender<Published>,
    shutdown: CancellationToken,
) {
    shutdown
        .run_until_cancelled(subscribe_loop(client, prefix, commands, out))
        .await;
}

async fn subscribe_loop(
    client: redis::Client,
    prefix: String,
    mut commands: mpsc::Receiver<Command>,
    out: mpsc::Sender<Published>,
) {
    let mut watched: HashSet<OrderId> = HashSet::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        let pubsub = match client.get_async_pubsub().await {
            Ok(pubsub) => pubsub,
            Err(e) => {
                tracing::warn!(error = %e, "Redis subscriber connection failed; retrying");
                // Refuse subscriptions while down so clients are told.
                loop {
                    match commands.try_recv() {
                        Ok(Command::Subscribe(order, done)) => {
                            watched.insert(order);
                            let _ = done.send(Err(unavailable(&e)));
                        }
                        Ok(Command::Unsubscribe(order)) => {
                            watched.remove(&order);
                        }
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        // The bus is gone: nobody is left to serve.
                        Err(mpsc::error::TryRecvError::Disconnected) => return,
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let (mut sink, mut messages) = pubsub.split();
        let mut healthy = true;
        for order in &watched {
            if let Err(e) = sink.subscribe(channel(&prefix, *order)).await {
                tracing::warn!(error = %e, "resubscribe failed");
                healthy = false;
                break;
            }
        }
        // Anything published while disconnected is lost: sessions resync
        // from the store.
        for order in &watched {
            let _ = out.send(Published::resync(*order)).await;
        }
        while healthy {
            tokio::select! {
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::Subscribe(order, done)) => {
                        let result = sink.subscribe(channel(&prefix, order)).await.map_err(unavailable);
                        healthy = result.is_ok();
                        watched.insert(order);
                        let _ = done.send(result);
                    }
                    Some(Command::Unsubscribe(order)) => {
                        watched.remove(&order);
                        healthy = sink.unsubscribe(channel(&prefix, order)).await.is_ok();
                    }
                },
                message = messages.next() => match message {
                    Some(message) => {
                        if let Some(event) = parse(message.get_payload_bytes()) {
                            let _ = out.send(event).await;
                        }
                    }
                    None => healthy = false,
                },
            }
        }
        tracing::warn!("Redis subscriber connection lost; reconnecting");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use tokio::time::timeout;

    fn published(order_id: OrderId, seq: u64, kind: &str) -> Published {
        let payload = format!(r#"{{"orderId":"{order_id}","seq":{seq},"type":"{kind}"}}"#);
        parse(payload.as_bytes()).expect("a well-formed event")
    }

    #[tokio::test]
    async fn delivers_subscribed_orders_and_stops_with_its_token() {
        testing::require_redis();
        let prefix = testing::unique_name();
        let client = redis::Client::open(testing::REDIS).unwrap();
        let pool = deadpool_redis::Config::from_url(testing::REDIS)
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .unwrap();
        let stop = CancellationToken::new();
        let (bus, mut stream) = RedisBus::new(client, pool, &prefix, 16, stop.clone());
        let (watched, other) = (OrderId::new(), OrderId::new());
        bus.subscribe(watched).await.unwrap();
        bus.publish(&published(other, 1, "routing")).await.unwrap();
        bus.publish(&published(watched, 2, "failed")).await.unwrap();
        let got = timeout(Duration::from_secs(5), stream.recv()).await.unwrap().unwrap();
        assert_eq!((got.order_id, got.seq, got.terminal), (watched, 2, true));
        stop.cancel();
        let end = timeout(Duration::from_secs(5), stream.recv()).await.unwrap();
        assert!(end.is_none(), "the stream ends with the task");
        let refused = bus.subscribe(other).await.unwrap_err();
        assert_eq!(refused, stopped());
        assert!(!refused.is_transient());
    }

    #[test]
    fn parses_the_head_of_an_event() {
        let id = OrderId::new();
        let payload = format!(r#"{{"orderId":"{id}","seq":7,"type":"failed","progress":0}}"#);
        let event = parse(payload.as_bytes()).unwrap();
        assert_eq!((event.order_id, event.seq, event.terminal), (id, 7, true));
        assert!(parse(b"not json").is_none());
    }
}
