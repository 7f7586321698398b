//! The Redis bus: events are published on `<prefix>:order:<id>` and on the
//! firehose `<prefix>:events`. Each node holds one subscriber connection,
//! subscribed to exactly the orders its WebSocket clients watch; a command
//! task applies subscribe/unsubscribe in call order and reconnects (then
//! resubscribes, and tells every watched order to resync from the store,
//! since messages published meanwhile are gone).

use super::{Bus, BusError, Published, Subscribed};
use crate::domain::OrderId;
use async_trait::async_trait;
use bytes::Bytes;
use deadpool_redis::{Pool, redis};
use futures_util::StreamExt;
use std::{collections::HashSet, sync::Mutex, time::Duration};
use tokio::sync::{mpsc, oneshot};

fn unavailable(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(e.to_string())
}

enum Command {
    Subscribe(OrderId, oneshot::Sender<Result<(), BusError>>),
    Unsubscribe(OrderId),
}

/// The [`Bus`] on Redis pub/sub.
pub struct RedisBus {
    publisher: Pool,
    prefix: String,
    commands: mpsc::UnboundedSender<Command>,
    stream: Mutex<Option<mpsc::Receiver<Published>>>,
}

impl RedisBus {
    /// Starts the subscriber task on `client`; publishes through `publisher`
    /// (a pool of its own, apart from the queue's).
    pub fn new(client: redis::Client, publisher: Pool, prefix: &str, buffer: usize) -> Self {
        let (commands, rx) = mpsc::unbounded_channel();
        let (sender, stream) = mpsc::channel(buffer);
        tokio::spawn(subscriber(client, prefix.to_owned(), rx, sender));
        RedisBus {
            publisher,
            prefix: prefix.to_owned(),
            commands,
            stream: Mutex::new(Some(stream)),
        }
    }
}

fn channel(prefix: &str, order: OrderId) -> String {
    format!("{prefix}:order:{order}")
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(&self, event: &Published) -> Result<(), BusError> {
        let mut conn = self.publisher.get().await.map_err(unavailable)?;
        redis::pipe()
            .cmd("PUBLISH")
            .arg(channel(&self.prefix, event.order_id))
            .arg(event.payload.as_ref())
            .ignore()
            .cmd("PUBLISH")
            .arg(format!("{}:events", self.prefix))
            .arg(event.payload.as_ref())
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    fn subscribe(&self, order: OrderId) -> Subscribed {
        let (done, confirmed) = oneshot::channel();
        let sent = self.commands.send(Command::Subscribe(order, done));
        Box::pin(async move {
            sent.map_err(|_| BusError::Unavailable("the subscriber task stopped".into()))?;
            confirmed
                .await
                .map_err(|_| BusError::Unavailable("the subscriber task stopped".into()))?
        })
    }

    fn unsubscribe(&self, order: OrderId) {
        let _ = self.commands.send(Command::Unsubscribe(order));
    }

    fn take_stream(&self) -> Option<mpsc::Receiver<Published>> {
        self.stream.lock().unwrap_or_else(|p| p.into_inner()).take()
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
        terminal: matches!(head.kind.as_str(), "confirmed" | "failed"),
        payload: Bytes::copy_from_slice(payload),
    })
}

/// Owns the subscriber connection for the life of the process.
async fn subscriber(
    client: redis::Client,
    prefix: String,
    mut commands: mpsc::UnboundedReceiver<Command>,
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
                while let Ok(command) = commands.try_recv() {
                    match command {
                        Command::Subscribe(order, done) => {
                            watched.insert(order);
                            let _ = done.send(Err(unavailable(&e)));
                        }
                        Command::Unsubscribe(order) => {
                            watched.remove(&order);
                        }
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

    #[test]
    fn parses_the_head_of_an_event() {
        let id = OrderId::new();
        let payload = format!(r#"{{"orderId":"{id}","seq":7,"type":"failed","progress":0}}"#);
        let event = parse(payload.as_bytes()).unwrap();
        assert_eq!((event.order_id, event.seq, event.terminal), (id, 7, true));
        assert!(parse(b"not json").is_none());
    }
}
