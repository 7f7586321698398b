//! The Redis bus: events are published on `<prefix>:order:<id>`. Each node
//! holds one subscriber connection, subscribed to exactly the orders its
//! WebSocket clients watch; a command task applies subscribe/unsubscribe in
//! call order. It PINGs the connection every `bus.health_interval`; a PING
//! that misses `bus.health_timeout`, a SUBSCRIBE that does, or a dropped
//! connection marks the subscriber down ([`Bus::health`]) and it reconnects,
//! resubscribes every watched order in one command, and tells every watched
//! order to resync from the store, since messages published meanwhile are
//! gone. The task runs until the shutdown token given to [`RedisBus::new`]
//! is cancelled or the bus is dropped.
//!
//! Publishing takes a connection from a pool whose commands have deadlines
//! (`redis.command_timeout`); a connection whose PUBLISH timed out or broke
//! is closed, never reused.
//!
//! On a Redis Cluster ([`RedisBus::cluster`]) the bus uses sharded pub/sub
//! (Redis 7 `SPUBLISH`/`SSUBSCRIBE`): each order's channel lives on the
//! master of its slot, so publishing loads one shard, not the whole cluster.
//! The subscriber is one RESP3 cluster connection (one socket per node that
//! owns a watched channel's slot); its pushes carry the messages. When a
//! node's socket drops or a slot moves (Redis sends `sunsubscribe`, the
//! client follows `MOVED`), the channels are subscribed again where their
//! slot now lives and every watched order is resynced from the store.
//!
//! Imports `domain` and `telemetry` only; never `api`, `pipeline` or
//! another adapter.

use super::{Bus, BusError, Published, Stream, Subscribed};
use crate::domain::{EventKind, OrderId};
use crate::telemetry::connection_health;
use async_trait::async_trait;
use bytes::Bytes;
use deadpool_redis::{
    Connection, Pool,
    redis::{self, PushInfo, PushKind, cluster::ClusterClient, cluster_async::ClusterConnection},
};
use futures_util::StreamExt;
use std::{collections::HashSet, time::Duration};
use tokio::sync::{mpsc, mpsc::error::TrySendError, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// Subscribe/unsubscribe commands waiting for the subscriber task at most;
/// past that, `subscribe` answers "unavailable" at once rather than queue
/// without bound behind a stuck connection.
const COMMAND_BUFFER: usize = 1024;
/// The `backend` label of this adapter's connection-health metrics.
const BACKEND: &str = "bus";
/// First and longest pause between two failed subscriber connects.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));
/// A pool step (wait, connect, recycle) without a configured deadline gets
/// this one.
const DEFAULT_STEP: Duration = Duration::from_secs(5);

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

/// How the subscriber checks its connection (`bus.health_interval`,
/// `bus.health_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriberHealth {
    /// Time between PINGs.
    pub interval: Duration,
    /// Deadline of a PING, of connecting and of a SUBSCRIBE.
    pub timeout: Duration,
}

/// The subscriber's state: `Ok` while connected and answering, else why not.
type State = Result<(), String>;

/// Makes a RESP3 cluster client whose pushes go to the given sender; called
/// on every (re)connect of the cluster subscriber.
pub type PushClient = Box<dyn Fn(mpsc::UnboundedSender<PushInfo>) -> Result<ClusterClient, String> + Send + Sync>;

/// Where the subscriber connects.
enum Transport {
    /// One server: classic pub/sub on a dedicated connection.
    Standalone(redis::Client),
    /// A cluster: sharded pub/sub on a RESP3 cluster connection.
    Cluster(PushClient),
}

/// Where events are published.
enum Publisher {
    /// `PUBLISH` through a pool of single-server connections.
    Standalone(Pool),
    /// `SPUBLISH` through one multiplexed cluster connection (made on first
    /// use, dropped and made again after it broke).
    Cluster {
        client: Box<ClusterClient>,
        conn: tokio::sync::Mutex<Option<ClusterConnection>>,
        connect_timeout: Duration,
    },
}

/// The [`Bus`] on Redis pub/sub.
pub struct RedisBus {
    publisher: Publisher,
    prefix: String,
    commands: mpsc::Sender<Command>,
    state: watch::Receiver<State>,
    /// The firehose's wake-ups (single server only; see [`Bus::firehose`]).
    firehose: Option<watch::Receiver<u64>>,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus").finish_non_exhaustive()
    }
}

impl RedisBus {
    /// Starts the subscriber task on `client` (checked as `health` says);
    /// publishes through `publisher` (a pool of its own, apart from the
    /// queue's). Returns the bus and this node's stream of incoming events
    /// (buffering up to `buffer`). The subscriber counts as down until its
    /// first connection answers. The task stops when `shutdown` is cancelled
    /// or the bus is dropped; then `subscribe` answers [`BusError::Stopped`]
    /// and the stream ends.
    pub fn new(
        client: redis::Client,
        publisher: Pool,
        prefix: &str,
        buffer: usize,
        health: SubscriberHealth,
        shutdown: CancellationToken,
    ) -> (Self, Stream) {
        Self::start(
            Transport::Standalone(client),
            Publisher::Standalone(publisher),
            prefix,
            buffer,
            health,
            shutdown,
        )
    }

    /// The bus on a Redis Cluster (sharded pub/sub, Redis 7): subscribes
    /// through clients made by `subscriber` (RESP3, pushes to the given
    /// sender) and publishes with `SPUBLISH` through `publisher` (its
    /// response timeout is each publish's deadline; connecting waits
    /// `connect_timeout` at most). Otherwise as [`RedisBus::new`].
    pub fn cluster(
        subscriber: PushClient,
        publisher: ClusterClient,
        connect_timeout: Duration,
        prefix: &str,
        buffer: usize,
        health: SubscriberHealth,
        shutdown: CancellationToken,
    ) -> (Self, Stream) {
        let publisher = Publisher::Cluster {
            client: Box::new(publisher),
            conn: tokio::sync::Mutex::new(None),
            connect_timeout,
        };
        Self::start(
            Transport::Cluster(subscriber),
            publisher,
            prefix,
            buffer,
            health,
            shutdown,
        )
    }

    fn start(
        transport: Transport,
        publisher: Publisher,
        prefix: &str,
        buffer: usize,
        health: SubscriberHealth,
        shutdown: CancellationToken,
    ) -> (Self, Stream) {
        let (commands, rx) = mpsc::channel(COMMAND_BUFFER);
        let (sender, stream) = mpsc::channel(buffer);
        let (state_tx, state) = watch::channel(Err("connecting".to_owned()));
        connection_health::bus_subscriber(false);
        let firehose = matches!(transport, Transport::Standalone(_)).then(|| watch::Sender::new(0u64));
        let firehose_rx = firehose.as_ref().map(watch::Sender::subscribe);
        let subscriber = Subscriber {
            transport,
            prefix: prefix.to_owned(),
            health,
            out: sender,
            state: state_tx,
            watched: HashSet::new(),
            firehose,
        };
        tokio::spawn(subscriber.run(rx, shutdown));
        let bus = RedisBus {
            publisher,
            prefix: prefix.to_owned(),
            commands,
            state,
            firehose: firehose_rx,
        };
        (bus, stream)
    }
}

fn channel(prefix: &str, order: OrderId) -> String {
    format!("{prefix}:order:{order}")
}

/// The firehose channel: an empty message after every event published
/// (single server only), heard by every node's subscriber.
fn firehose_channel(prefix: &str) -> String {
    format!("{prefix}:firehose")
}

/// Closes every idle connection of `pool`: once one missed a deadline its
/// idle siblings, on the same path, are most likely dead too.
fn flush_idle(pool: &Pool) {
    let _closed = pool.retain(|_, _| false);
}

/// A connection from `pool` within the sum of its wait, connect and recycle
/// deadlines (deadpool applies them one step at a time).
async fn checkout(pool: &Pool) -> Result<Connection, BusError> {
    let timeouts = pool.timeouts();
    let within: Duration = [timeouts.wait, timeouts.create, timeouts.recycle]
        .into_iter()
        .map(|step| step.unwrap_or(DEFAULT_STEP))
        .sum();
    match tokio::time::timeout(within, pool.get()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => {
            if matches!(e, deadpool_redis::PoolError::Timeout(_)) {
                connection_health::timed_out(BACKEND, "connect");
                flush_idle(pool);
            }
            Err(unavailable(e))
        }
        Err(_) => {
            connection_health::timed_out(BACKEND, "connect");
            flush_idle(pool);
            Err(unavailable(format!(
                "no Redis connection within {} ms",
                within.as_millis()
            )))
        }
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(&self, event: &Published) -> Result<(), BusError> {
        let publisher = match &self.publisher {
            Publisher::Standalone(pool) => pool,
            Publisher::Cluster {
                client,
                conn,
                connect_timeout,
            } => {
                return spublish(
                    client,
                    conn,
                    *connect_timeout,
                    &channel(&self.prefix, event.order_id),
                    event,
                )
                .await;
            }
        };
        let mut conn = checkout(publisher).await?;
        // The event on its order's channel and a wake-up on the firehose,
        // in one round trip.
        let sent = redis::pipe()
            .cmd("PUBLISH")
            .arg(channel(&self.prefix, event.order_id))
            .arg(event.payload.as_ref())
            .ignore()
            .cmd("PUBLISH")
            .arg(firehose_channel(&self.prefix))
            .arg("")
            .ignore()
            .query_async::<()>(&mut conn)
            .await;
        if let Err(e) = &sent {
            if e.is_timeout() {
                connection_health::timed_out(BACKEND, "publish");
            }
            // Its answer may still come and be read as the next command's:
            // close it rather than hand it out again.
            if e.is_timeout() || e.is_connection_dropped() || e.is_io_error() || e.is_unrecoverable_error() {
                drop(Connection::take(conn));
                flush_idle(publisher);
                connection_health::reconnect(BACKEND);
            }
        }
        sent.map_err(unavailable)
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

    fn health(&self) -> Result<(), BusError> {
        if self.commands.is_closed() {
            return Err(stopped());
        }
        self.state
            .borrow()
            .clone()
            .map_err(|reason| unavailable(format!("the subscriber is down: {reason}")))
    }

    /// On a single server: every node's subscriber hears the firehose
    /// channel. On a cluster: none (a sharded firehose would put every
    /// event's wake-up on one shard); stream readers poll the store.
    fn firehose(&self) -> Option<watch::Receiver<u64>> {
        self.firehose.clone()
    }
}

/// `SPUBLISH` of `event` on `channel` through the shared cluster connection
/// (made within `connect_timeout` if there is none); a connection whose
/// command timed out or broke is dropped, the next publish makes a new one.
async fn spublish(
    client: &ClusterClient,
    shared: &tokio::sync::Mutex<Option<ClusterConnection>>,
    connect_timeout: Duration,
    channel: &str,
    event: &Published,
) -> Result<(), BusError> {
    let mut conn = {
        let mut held = shared.lock().await;
        match held.as_ref() {
            Some(conn) => conn.clone(),
            None => {
                let made = tokio::time::timeout(connect_timeout, client.get_async_connection())
                    .await
                    .map_err(|_| {
                        connection_health::timed_out(BACKEND, "connect");
                        unavailable(format!(
                            "no Redis Cluster connection within {} ms",
                            connect_timeout.as_millis()
                        ))
                    })?
                    .map_err(unavailable)?;
                *held = Some(made.clone());
                made
            }
        }
    };
    let sent = redis::cmd("SPUBLISH")
        .arg(channel)
        .arg(event.payload.as_ref())
        .query_async::<()>(&mut conn)
        .await;
    if let Err(e) = &sent {
        if e.is_timeout() {
            connection_health::timed_out(BACKEND, "publish");
        }
        if e.is_timeout() || e.is_connection_dropped() || e.is_io_error() || e.is_unrecoverable_error() {
            *shared.lock().await = None;
            connection_health::reconnect(BACKEND);
        }
    }
    sent.map_err(unavailable)
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

/// What the bus is no longer told: the command channel closed.
struct Gone;

/// A live subscriber connection of either transport.
enum Live {
    Standalone((redis::aio::PubSubSink, redis::aio::PubSubStream)),
    Cluster((ClusterConnection, mpsc::UnboundedReceiver<PushInfo>)),
}

/// The subscriber task's state: the orders this node watches survive every
/// reconnect.
struct Subscriber {
    transport: Transport,
    prefix: String,
    health: SubscriberHealth,
    out: mpsc::Sender<Published>,
    state: watch::Sender<State>,
    watched: HashSet<OrderId>,
    /// Moved by each firehose message, and on every (re)connect (wake-ups
    /// sent meanwhile are lost); `None` on a cluster.
    firehose: Option<watch::Sender<u64>>,
}

impl Subscriber {
    /// Owns the subscriber connection until `shutdown` is cancelled or the
    /// bus (the command sender) is dropped.
    async fn run(mut self, mut commands: mpsc::Receiver<Command>, shutdown: CancellationToken) {
        let state = self.state.clone();
        shutdown
            .run_until_cancelled(async {
                let mut backoff = BACKOFF.0;
                let mut connected_before = false;
                let mut outage_logged = false;
                loop {
                    let live = match &self.transport {
                        Transport::Standalone(_) => self.connect().await.map(Live::Standalone),
                        Transport::Cluster(_) => self.connect_cluster().await.map(Live::Cluster),
                    };
                    let reason = match live {
                        Ok(live) => {
                            backoff = BACKOFF.0;
                            if connected_before {
                                connection_health::reconnect(BACKEND);
                                tracing::info!(watched = self.watched.len(), "Redis subscriber reconnected");
                            }
                            connected_before = true;
                            outage_logged = false;
                            self.set(Ok(()));
                            let served = match live {
                                Live::Standalone((sink, messages)) => self.serve(sink, messages, &mut commands).await,
                                Live::Cluster((conn, pushes)) => self.serve_cluster(conn, pushes, &mut commands).await,
                            };
                            match served {
                                Ok(reason) => reason,
                                Err(Gone) => return,
                            }
                        }
                        Err(reason) => reason,
                    };
                    // One warning per outage; each further failed attempt at debug.
                    if outage_logged {
                        tracing::debug!(%reason, "Redis subscriber still down");
                    } else {
                        tracing::warn!(%reason, "Redis subscriber down; reconnecting");
                        outage_logged = true;
                    }
                    self.set(Err(reason.clone()));
                    if self.refuse_for(backoff, &reason, &mut commands).await.is_err() {
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF.1);
                }
            })
            .await;
        let _previous = state.send_replace(Err("stopped".into()));
        connection_health::bus_subscriber(false);
    }

    /// Moves the firehose (wakes this node's stream reader).
    fn wake(&self) {
        if let Some(firehose) = &self.firehose {
            firehose.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn set(&self, state: State) {
        connection_health::bus_subscriber(state.is_ok());
        let _previous = self.state.send_replace(state);
    }

    /// A new subscriber connection, subscribed to every watched order and
    /// answering a PING, each step within `bus.health_timeout`.
    async fn connect(&self) -> Result<(redis::aio::PubSubSink, redis::aio::PubSubStream), String> {
        let limit = self.health.timeout;
        let within = |what: &'static str| {
            move |_| {
                connection_health::timed_out(BACKEND, what);
                format!("{what} took longer than {} ms", limit.as_millis())
            }
        };
        let Transport::Standalone(client) = &self.transport else {
            return Err("a cluster transport has no single-server connection".into());
        };
        let pubsub = tokio::time::timeout(limit, client.get_async_pubsub())
            .await
            .map_err(within("connect"))?
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sink, messages) = pubsub.split();
        let mut channels: Vec<String> = self.watched.iter().map(|o| channel(&self.prefix, *o)).collect();
        channels.push(firehose_channel(&self.prefix));
        tokio::time::timeout(limit, sink.subscribe(channels))
            .await
            .map_err(within("subscribe"))?
            .map_err(|e| format!("resubscribe: {e}"))?;
        tokio::time::timeout(limit, sink.ping::<redis::Value>())
            .await
            .map_err(within("ping"))?
            .map_err(|e| format!("ping: {e}"))?;
        // Anything published while disconnected is lost: sessions resync
        // from the store.
        for order in &self.watched {
            let _ = self.out.send(Published::resync(*order)).await;
        }
        self.wake();
        Ok((sink, messages))
    }

    /// Serves commands and messages on a live connection, PINGing it every
    /// `bus.health_interval`, until it fails (returns why) or the bus is
    /// gone.
    async fn serve(
        &mut self,
        mut sink: redis::aio::PubSubSink,
        mut messages: redis::aio::PubSubStream,
        commands: &mut mpsc::Receiver<Command>,
    ) -> Result<String, Gone> {
        let limit = self.health.timeout;
        let late = |what: &'static str| {
            connection_health::timed_out(BACKEND, what);
            format!("{what} took longer than {} ms", limit.as_millis())
        };
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + self.health.interval, self.health.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    None => return Err(Gone),
                    Some(Command::Subscribe(order, done)) => {
                        self.watched.insert(order);
                        let subscribed = tokio::time::timeout(limit, sink.subscribe(channel(&self.prefix, order))).await;
                        match subscribed {
                            Ok(Ok(())) => {
                                let _ = done.send(Ok(()));
                            }
                            Ok(Err(e)) => {
                                let _ = done.send(Err(unavailable(&e)));
                                return Ok(format!("subscribe: {e}"));
                            }
                            Err(_) => {
                                let reason = late("subscribe");
                                let _ = done.send(Err(unavailable(&reason)));
                                return Ok(reason);
                            }
                        }
                    }
                    Some(Command::Unsubscribe(order)) => {
                        self.watched.remove(&order);
                        match tokio::time::timeout(limit, sink.unsubscribe(channel(&self.prefix, order))).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => return Ok(format!("unsubscribe: {e}")),
                            Err(_) => return Ok(late("unsubscribe")),
                        }
                    }
                },
                message = messages.next() => match message {
                    Some(message) => {
                        if let Some(event) = parse(message.get_payload_bytes()) {
                            let _ = self.out.send(event).await;
                        } else if message.get_channel_name().ends_with(":firehose") {
                            self.wake();
                        }
                    }
                    None => return Ok("the connection closed".into()),
                },
                _ = tick.tick() => {
                    match tokio::time::timeout(limit, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Ok(format!("ping: {e}")),
                        Err(_) => return Ok(late("ping")),
                    }
                }
            }
        }
    }

    /// A new RESP3 cluster connection whose pushes come on the returned
    /// receiver, subscribed (sharded) to every watched order and answering
    /// a PING, each step within `bus.health_timeout`; then every watched
    /// order is resynced.
    async fn connect_cluster(&self) -> Result<(ClusterConnection, mpsc::UnboundedReceiver<PushInfo>), String> {
        let Transport::Cluster(make) = &self.transport else {
            return Err("a single-server transport has no cluster connection".into());
        };
        let limit = self.health.timeout;
        let within = |what: &'static str| {
            move |_| {
                connection_health::timed_out(BACKEND, what);
                format!("{what} took longer than {} ms", limit.as_millis())
            }
        };
        let (pushes_tx, pushes) = mpsc::unbounded_channel();
        let client = make(pushes_tx)?;
        let mut conn = tokio::time::timeout(limit, client.get_async_connection())
            .await
            .map_err(within("connect"))?
            .map_err(|e| format!("connect: {e}"))?;
        // One SSUBSCRIBE per channel: a command's channels must share a slot.
        for order in &self.watched {
            tokio::time::timeout(limit, conn.ssubscribe(channel(&self.prefix, *order)))
                .await
                .map_err(within("subscribe"))?
                .map_err(|e| format!("resubscribe: {e}"))?;
        }
        tokio::time::timeout(limit, redis::cmd("PING").query_async::<redis::Value>(&mut conn))
            .await
            .map_err(within("ping"))?
            .map_err(|e| format!("ping: {e}"))?;
        for order in &self.watched {
            let _ = self.out.send(Published::resync(*order)).await;
        }
        Ok((conn, pushes))
    }

    /// The order of a sharded channel of ours, if it is one.
    fn order_of(&self, channel_name: &[u8]) -> Option<OrderId> {
        let name = std::str::from_utf8(channel_name).ok()?;
        name.strip_prefix(&self.prefix)?.strip_prefix(":order:")?.parse().ok()
    }

    /// Serves commands and pushes on a live cluster connection, PINGing it
    /// every `bus.health_interval`, until it fails (returns why) or the bus
    /// is gone. A node's socket that dropped (a `disconnection` push) ends
    /// the connection: the subscriber reconnects from a fresh slot map (see
    /// [`Subscriber::connect_cluster`]). A slot that moved (an `sunsubscribe`
    /// Redis sent on its own, for a watched order) is subscribed again where
    /// it lives now and its watchers resync.
    async fn serve_cluster(
        &mut self,
        mut conn: ClusterConnection,
        mut pushes: mpsc::UnboundedReceiver<PushInfo>,
        commands: &mut mpsc::Receiver<Command>,
    ) -> Result<String, Gone> {
        let limit = self.health.timeout;
        let late = |what: &'static str| {
            connection_health::timed_out(BACKEND, what);
            format!("{what} took longer than {} ms", limit.as_millis())
        };
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + self.health.interval, self.health.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Channels we asked to leave: their `sunsubscribe` push is expected.
        let mut leaving: HashSet<OrderId> = HashSet::new();
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    None => return Err(Gone),
                    Some(Command::Subscribe(order, done)) => {
                        self.watched.insert(order);
                        leaving.remove(&order);
                        match tokio::time::timeout(limit, conn.ssubscribe(channel(&self.prefix, order))).await {
                            Ok(Ok(())) => {
                                let _ = done.send(Ok(()));
                            }
                            Ok(Err(e)) => {
                                let _ = done.send(Err(unavailable(&e)));
                                return Ok(format!("subscribe: {e}"));
                            }
                            Err(_) => {
                                let reason = late("subscribe");
                                let _ = done.send(Err(unavailable(&reason)));
                                return Ok(reason);
                            }
                        }
                    }
                    Some(Command::Unsubscribe(order)) => {
                        self.watched.remove(&order);
                        leaving.insert(order);
                        match tokio::time::timeout(limit, conn.sunsubscribe(channel(&self.prefix, order))).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => return Ok(format!("unsubscribe: {e}")),
                            Err(_) => return Ok(late("unsubscribe")),
                        }
                    }
                },
                push = pushes.recv() => {
                    let Some(push) = push else {
                        return Ok("the cluster connection closed".into());
                    };
                    match push.kind {
                        PushKind::SMessage => {
                            if let Some(redis::Value::BulkString(payload)) = push.data.get(1)
                                && let Some(event) = parse(payload)
                            {
                                let _ = self.out.send(event).await;
                            }
                        }
                        PushKind::Disconnection => {
                            // A node's socket dropped: whatever was published
                            // meanwhile is gone, and if the node failed its
                            // slots move to a replica the client would not
                            // follow for pushes. Reconnect from a fresh slot
                            // map, subscribe every watched order where its
                            // slot lives now, and resync them all.
                            return Ok("a Redis Cluster node's connection dropped".into());
                        }
                        PushKind::SUnsubscribe => {
                            let order = match push.data.first() {
                                Some(redis::Value::BulkString(name)) => self.order_of(name),
                                _ => None,
                            };
                            let Some(order) = order else { continue };
                            if leaving.remove(&order) || !self.watched.contains(&order) {
                                continue;
                            }
                            // Redis dropped it: its slot moved or its master
                            // changed. Subscribe where the slot lives now.
                            tracing::info!(%order, "sharded channel unsubscribed by Redis (slot moved); resubscribing");
                            match tokio::time::timeout(limit, conn.ssubscribe(channel(&self.prefix, order))).await {
                                Ok(Ok(())) => {}
                                Ok(Err(e)) => return Ok(format!("resubscribe: {e}")),
                                Err(_) => return Ok(late("subscribe")),
                            }
                            let _ = self.out.send(Published::resync(order)).await;
                        }
                        _ => {}
                    }
                },
                _ = tick.tick() => {
                    match tokio::time::timeout(limit, redis::cmd("PING").query_async::<redis::Value>(&mut conn)).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Ok(format!("ping: {e}")),
                        Err(_) => return Ok(late("ping")),
                    }
                }
            }
        }
    }

    /// Waits `pause` before the next connect, answering subscriptions at
    /// once with "unavailable" (the orders stay watched, so they are
    /// subscribed and resynced on reconnect).
    async fn refuse_for(
        &mut self,
        pause: Duration,
        reason: &str,
        commands: &mut mpsc::Receiver<Command>,
    ) -> Result<(), Gone> {
        let until = tokio::time::sleep(pause);
        tokio::pin!(until);
        loop {
            tokio::select! {
                _ = &mut until => return Ok(()),
                command = commands.recv() => match command {
                    None => return Err(Gone),
                    Some(Command::Subscribe(order, done)) => {
                        self.watched.insert(order);
                        let _ = done.send(Err(unavailable(format!("the bus subscriber is down: {reason}"))));
                    }
                    Some(Command::Unsubscribe(order)) => {
                        self.watched.remove(&order);
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use tokio::time::timeout;

    const HEALTH: SubscriberHealth = SubscriberHealth {
        interval: Duration::from_millis(200),
        timeout: Duration::from_millis(500),
    };

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
        let (bus, mut stream) = RedisBus::new(client, pool, &prefix, 16, HEALTH, stop.clone());
        let (watched, other) = (OrderId::new(), OrderId::new());
        bus.subscribe(watched).await.unwrap();
        assert_eq!(bus.health(), Ok(()), "subscribed: the subscriber is up");
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

    #[tokio::test]
    async fn every_publish_wakes_every_node_on_the_firehose() {
        testing::require_redis();
        let prefix = testing::unique_name();
        let node = || {
            let client = redis::Client::open(testing::REDIS).unwrap();
            let pool = deadpool_redis::Config::from_url(testing::REDIS)
                .create_pool(Some(deadpool_redis::Runtime::Tokio1))
                .unwrap();
            RedisBus::new(client, pool, &prefix, 16, HEALTH, CancellationToken::new())
        };
        let ((publisher, _), (listener, _)) = (node(), node());
        let mut firehose = listener.firehose().expect("a single server has a firehose");
        // Subscribed once the subscriber is up (its connect wakes it once).
        timeout(Duration::from_secs(5), async {
            while listener.health().is_err() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        firehose.mark_unchanged();
        publisher
            .publish(&published(OrderId::new(), 1, "routing"))
            .await
            .unwrap();
        timeout(Duration::from_secs(5), firehose.changed())
            .await
            .expect("a wake-up for an order nobody here watches")
            .unwrap();
    }

    #[tokio::test]
    async fn a_silent_redis_keeps_the_subscriber_down_and_refuses_subscriptions_promptly() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let client = redis::Client::open(url.as_str()).unwrap();
        let pool = deadpool_redis::Config::from_url(url)
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .unwrap();
        let stop = CancellationToken::new();
        let (bus, _stream) = RedisBus::new(client, pool, "unused", 16, HEALTH, stop.clone());
        let refused = timeout(Duration::from_secs(10), bus.subscribe(OrderId::new()))
            .await
            .expect("subscribe answers within its deadlines")
            .unwrap_err();
        assert!(refused.is_transient(), "{refused:?}");
        assert!(bus.health().unwrap_err().is_transient(), "down while Redis is silent");
        stop.cancel();
        holder.abort();
    }

    /// Sharded pub/sub on a real 3-master cluster: each order's events come
    /// from the master of its channel's slot; orders spread over the
    /// masters all arrive; an unsubscribed order's events no longer do.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sharded_pub_sub_on_a_cluster_delivers_each_watched_order() {
        use crate::queue::{RedisConfig, RedisMode, pool::cluster_client, test_cluster::RedisCluster};
        let cluster = RedisCluster::start(3, 0, Duration::from_secs(2));
        let settings: RedisConfig = serde_json::from_value(serde_json::json!({
            "mode": "cluster", "url": "", "urls": cluster.urls(), "key_prefix": "bus",
            "pool_size": 2, "pool_wait_timeout": "2s", "command_timeout": "2s",
            "connect_timeout": "2s", "tcp_keepalive": "10s",
        }))
        .unwrap();
        assert_eq!(settings.mode, RedisMode::Cluster);
        let publisher = cluster_client(&settings, None).unwrap();
        let subscriber_settings = settings.clone();
        let subscriber: PushClient = Box::new(move |tx| cluster_client(&subscriber_settings, Some(tx)));
        let stop = CancellationToken::new();
        let (bus, mut stream) = RedisBus::cluster(
            subscriber,
            publisher,
            Duration::from_secs(2),
            "bus",
            64,
            HEALTH,
            stop.clone(),
        );
        let orders: Vec<OrderId> = (0..12).map(|_| OrderId::new()).collect();
        for order in &orders {
            timeout(Duration::from_secs(10), bus.subscribe(*order))
                .await
                .unwrap()
                .unwrap();
        }
        assert_eq!(bus.health(), Ok(()));
        for (n, order) in orders.iter().enumerate() {
            bus.publish(&published(*order, n as u64 + 1, "routing")).await.unwrap();
        }
        let mut got = HashSet::new();
        while got.len() < orders.len() {
            let event = timeout(Duration::from_secs(10), stream.recv()).await.unwrap().unwrap();
            if !event.is_resync() {
                got.insert(event.order_id);
            }
        }
        assert_eq!(got, orders.iter().copied().collect::<HashSet<_>>());
        bus.unsubscribe(orders[0]);
        // Commands apply in call order: once a later subscribe is confirmed,
        // the unsubscribe was applied.
        timeout(Duration::from_secs(10), bus.subscribe(OrderId::new()))
            .await
            .unwrap()
            .unwrap();
        bus.publish(&published(orders[0], 99, "routing")).await.unwrap();
        bus.publish(&published(orders[1], 99, "failed")).await.unwrap();
        let next = timeout(Duration::from_secs(10), stream.recv()).await.unwrap().unwrap();
        assert_eq!(
            (next.order_id, next.seq),
            (orders[1], 99),
            "the unsubscribed order's event is not delivered"
        );
        stop.cancel();
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
