//! `GET /api/stream`: one WebSocket for every order a key may see (its
//! own; every order for an `admin` key, or with auth off), each event
//! framed with its stream cursor (`store::stream`), resumable with
//! `?cursor=` with nothing lost and nothing repeated, and narrowed by
//! `subscribe` / `unsubscribe` messages.
//!
//! # Fan-out
//! One reader per API node ([`StreamHub::run`]) reads the store after the
//! node's position (one query per wake-up, in batches of [`BATCH`]) and
//! hands each event to every session whose key may see it. It is woken by
//! the bus's firehose (`Bus::firehose`: some event was published, on any
//! node), when a session joins, shortly after a read found events held
//! back behind a running transaction ([`HELD_BACK_RETRY`], doubling up to
//! the poll while they stay held back), and otherwise
//! polls every [`POLL`] ([`POLL_WITHOUT_FIREHOSE`] on a bus without one).
//! With no session open it reads nothing. The orders' path still pays for
//! the stream: migration 0008's trigger runs on every event insert, and the
//! Redis bus publishes one firehose message per event.
//!
//! # A session
//! It reads the store after its start (the `?cursor`, or the head when
//! none) until it is level, then joins the reader (so a long replay cannot
//! overflow its live buffer) and sends what the reader hands it. Each
//! handed event says where the reader's previous event for this session
//! was (`from`): when that is past the session's cursor (events committed
//! between the replay's end and the join, or the reader was ahead of the
//! replay), the store fills the gap first; events at or before the cursor are dropped, so no
//! event is sent twice (the cursor is a total order). Same close codes,
//! slow-consumer rule (1013 with the `?cursor=` to resume), ping and
//! quiet-session rules as an order's socket (`ws`).

use super::{
    ApiState,
    views::{StreamNotice, StreamNoticeKind},
    ws::{self, Beat, End, Flow, Heartbeat, Writer},
};
use crate::{
    domain::{KeyId, OrderId},
    store::{Store, StreamCursor, StreamItem},
    telemetry::event,
};
use bytes::Bytes;
use fastwebsockets::{WebSocket, WebSocketError};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Events read from the store at most per query.
pub const BATCH: u32 = 500;
/// The reader's poll when the bus has a firehose: a backstop for a lost
/// wake-up.
pub const POLL: Duration = Duration::from_secs(1);
/// The reader's poll when the bus has no firehose (a Redis Cluster).
pub const POLL_WITHOUT_FIREHOSE: Duration = Duration::from_millis(100);
/// After a read found committed events held back behind an older
/// transaction still running (PostgreSQL), the reader reads again this soon,
/// doubling while they stay held back, up to its poll ([`held_back_delay`]).
pub const HELD_BACK_RETRY: Duration = Duration::from_millis(10);

/// The reader's next wait after a read that found events held back, given
/// the wait before it: [`HELD_BACK_RETRY`], then doubled each time, at most
/// `poll` (one long transaction must not make the reader spin).
pub(super) fn held_back_delay(previous: Option<Duration>, poll: Duration) -> Duration {
    previous
        .map_or(HELD_BACK_RETRY, |previous| previous.saturating_mul(2))
        .clamp(HELD_BACK_RETRY.min(poll), poll)
}
/// Order ids a session's subscription (or its exclusions) may hold.
pub const MAX_SUBSCRIBED: usize = 10_000;

/// An event ready for stream sessions; its frame is built once for all.
#[derive(Debug, Clone)]
pub(super) struct Live {
    /// The place of the reader's previous event for this session (or the
    /// reader's position when the session joined): nothing for the session
    /// lies between `from` and `at`.
    from: StreamCursor,
    /// The event's place.
    at: StreamCursor,
    order_id: OrderId,
    /// `{"cursor": …, <the event's fields>}`.
    frame: Bytes,
}

struct Feed {
    id: u64,
    /// Only events of this key's orders; `None`: every event.
    owner: Option<KeyId>,
    /// Where the reader stands for this session (`None` until the reader
    /// has a position).
    covered: Option<StreamCursor>,
    sender: mpsc::Sender<Live>,
}

#[derive(Default)]
struct Feeds {
    next_id: u64,
    list: Vec<Feed>,
    /// The reader's position; `None` while no session is open (it starts
    /// at the store's head when one joins).
    position: Option<StreamCursor>,
}

/// This node's stream reader and its sessions.
pub struct StreamHub {
    store: Arc<dyn Store>,
    feeds: Mutex<Feeds>,
    joined: Notify,
}

impl std::fmt::Debug for StreamHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamHub").finish_non_exhaustive()
    }
}

/// A session's place at the reader; leaving is dropping it.
pub(super) struct Membership {
    hub: Arc<StreamHub>,
    id: u64,
    events: mpsc::Receiver<Live>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.hub.feeds().list.retain(|feed| feed.id != self.id);
    }
}

/// `{"cursor":"<at>",` followed by the event's own fields.
fn frame(item: &StreamItem) -> Bytes {
    let event = serde_json::to_vec(&item.event).expect("events serialise");
    let head = format!("{{\"cursor\":\"{}\",", item.at);
    let mut frame = Vec::with_capacity(head.len() + event.len());
    frame.extend_from_slice(head.as_bytes());
    frame.extend_from_slice(&event[1..]);
    Bytes::from(frame)
}

impl StreamHub {
    /// A reader over the store (started by [`StreamHub::run`]).
    pub fn new(store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(StreamHub {
            store,
            feeds: Mutex::new(Feeds::default()),
            joined: Notify::new(),
        })
    }

    fn feeds(&self) -> std::sync::MutexGuard<'_, Feeds> {
        self.feeds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open sessions.
    pub fn sessions(&self) -> usize {
        self.feeds().list.len()
    }

    /// Registers a session that sees `owner`'s orders (`None`: all), with
    /// room for `buffer` undelivered events; past that it is dropped (its
    /// receiver ends).
    pub(super) fn join(self: &Arc<Self>, owner: Option<KeyId>, buffer: usize) -> Membership {
        let (sender, events) = mpsc::channel(buffer.max(1));
        let id = {
            let mut feeds = self.feeds();
            feeds.next_id += 1;
            let id = feeds.next_id;
            let covered = feeds.position;
            feeds.list.push(Feed {
                id,
                owner,
                covered,
                sender,
            });
            id
        };
        self.joined.notify_one();
        Membership {
            hub: self.clone(),
            id,
            events,
        }
    }

    /// Reads and hands out events until `shutdown`, woken by `firehose`
    /// (see the module doc).
    pub async fn run(self: Arc<Self>, mut firehose: Option<watch::Receiver<u64>>, shutdown: CancellationToken) {
        let poll = if firehose.is_some() {
            POLL
        } else {
            POLL_WITHOUT_FIREHOSE
        };
        let mut delay = poll;
        // The last wait, while events stay held back.
        let mut held_back: Option<Duration> = None;
        loop {
            let woken = async {
                if let Some(firehose) = firehose.as_mut()
                    && firehose.changed().await.is_ok()
                {
                    return;
                }
                // No firehose, or its bus is gone: the poll alone wakes.
                std::future::pending::<()>().await
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = woken => {}
                _ = self.joined.notified() => {}
                _ = tokio::time::sleep(delay) => {}
            }
            delay = match self.catch_up().await {
                Ok(true) => *held_back.insert(held_back_delay(held_back, poll)),
                Ok(false) => {
                    held_back = None;
                    poll
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the stream reader could not read the store; trying again");
                    poll
                }
            };
        }
    }

    /// Reads everything settled after the node's position and hands it out;
    /// `Ok(true)` when events were held back (read again soon).
    async fn catch_up(&self) -> Result<bool, crate::store::StoreError> {
        loop {
            let position = {
                let mut feeds = self.feeds();
                if feeds.list.is_empty() {
                    feeds.position = None;
                    return Ok(false);
                }
                feeds.position
            };
            let from = match position {
                Some(position) => position,
                None => {
                    let head = self.store.stream_head().await?;
                    let mut feeds = self.feeds();
                    let position = *feeds.position.get_or_insert(head);
                    for feed in &mut feeds.list {
                        feed.covered.get_or_insert(position);
                    }
                    position
                }
            };
            let page = self.store.stream_events(from, None, BATCH).await?;
            let (more, empty) = (page.more, page.events.is_empty());
            self.hand_out(from, &page.events);
            if !more {
                return Ok(false);
            }
            if empty {
                return Ok(true);
            }
        }
    }

    /// Hands events read after `from` to the sessions that may see them;
    /// a session whose buffer is full is dropped (its socket closes 1013).
    fn hand_out(&self, from: StreamCursor, items: &[StreamItem]) {
        let frames: Vec<Bytes> = items.iter().map(frame).collect();
        let mut feeds = self.feeds();
        let mut last = from;
        for (item, frame) in items.iter().zip(frames) {
            feeds.list.retain_mut(|feed| {
                if feed.owner.is_some() && feed.owner != item.owner {
                    return true;
                }
                let live = Live {
                    from: feed.covered.unwrap_or(from),
                    at: item.at,
                    order_id: item.event.order_id,
                    frame: frame.clone(),
                };
                match feed.sender.try_send(live) {
                    Ok(()) => {
                        feed.covered = Some(item.at);
                        true
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(session = feed.id, "slow stream client dropped");
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            });
            last = item.at;
        }
        for feed in &mut feeds.list {
            feed.covered = Some(last);
        }
        if feeds.position.is_some_and(|p| p < last) || feeds.position.is_none() {
            feeds.position = Some(last);
        }
    }
}

/// Which orders a session streams, among those its key may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Filter {
    /// Every order but these (`unsubscribe` before any `subscribe`).
    All { except: HashSet<OrderId> },
    /// Only these (after a `subscribe`).
    Only(HashSet<OrderId>),
}

impl Default for Filter {
    fn default() -> Self {
        Filter::All { except: HashSet::new() }
    }
}

/// A client message.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum ClientOp {
    /// Stream only these orders (added to an earlier subscription).
    Subscribe {
        #[serde(rename = "orderIds")]
        order_ids: Vec<OrderId>,
    },
    /// Stop streaming these orders.
    Unsubscribe {
        #[serde(rename = "orderIds")]
        order_ids: Vec<OrderId>,
    },
}

impl Filter {
    /// Whether an event of `order` goes out.
    pub(super) fn allows(&self, order: OrderId) -> bool {
        match self {
            Filter::All { except } => !except.contains(&order),
            Filter::Only(only) => only.contains(&order),
        }
    }

    /// Applies a client message; answers the notice to send (an `error`
    /// one for a message that is not an op, leaving the filter as it was).
    pub(super) fn apply(&mut self, text: &[u8]) -> StreamNotice {
        let op: ClientOp = match serde_json::from_slice(text) {
            Ok(op) => op,
            Err(e) => {
                return StreamNotice::error(format!(
                    "not a stream message ({e}); send {{\"op\":\"subscribe\",\"orderIds\":[\"<uuid>\", …]}} or \
                     {{\"op\":\"unsubscribe\",\"orderIds\":[…]}}"
                ));
            }
        };
        let mut next = self.clone();
        let (kind, ids) = match op {
            ClientOp::Subscribe { order_ids } => {
                match &mut next {
                    Filter::All { .. } => next = Filter::Only(order_ids.iter().copied().collect()),
                    Filter::Only(only) => only.extend(order_ids.iter().copied()),
                }
                (StreamNoticeKind::Subscribed, order_ids)
            }
            ClientOp::Unsubscribe { order_ids } => {
                match &mut next {
                    Filter::All { except } => except.extend(order_ids.iter().copied()),
                    Filter::Only(only) => order_ids.iter().for_each(|id| {
                        only.remove(id);
                    }),
                }
                (StreamNoticeKind::Unsubscribed, order_ids)
            }
        };
        let held = match &next {
            Filter::All { except } => except.len(),
            Filter::Only(only) => only.len(),
        };
        if held > MAX_SUBSCRIBED {
            return StreamNotice::error(format!(
                "a stream holds at most {MAX_SUBSCRIBED} order ids in its subscription; nothing changed"
            ));
        }
        *self = next;
        let message = match self {
            Filter::All { except } if except.is_empty() => "streaming every order".to_owned(),
            Filter::All { except } => format!("streaming every order but {}", except.len()),
            Filter::Only(only) => format!("streaming {} orders", only.len()),
        };
        StreamNotice {
            order_ids: Some(ids.iter().map(ToString::to_string).collect()),
            ..StreamNotice::new(kind, message)
        }
    }
}

/// Who watches a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewer {
    /// Whose orders it shows: `None` for every order ([`audience`]).
    pub audience: Option<KeyId>,
    /// The key it opened with (by bearer or ticket), checked again at each
    /// ping: revoked, the stream closes 1008. `None`: opened without a key.
    pub key: Option<KeyId>,
}

/// Runs a stream session to its end: the viewer's orders, after `cursor`
/// (`None`: from now).
pub async fn session(
    ws: WebSocket<TokioIo<Upgraded>>,
    state: Arc<ApiState>,
    viewer: Viewer,
    cursor: Option<StreamCursor>,
) {
    event::ws_connection(1.0);
    event::ws_stream_session(1.0);
    ws::run_session(ws, "stream", state.settings.ping_timeout, async |writer, controls| {
        run(writer, controls, &state, viewer, cursor).await
    })
    .await;
    event::ws_stream_session(-1.0);
    event::ws_connection(-1.0);
}

fn notice_bytes(notice: &StreamNotice) -> Vec<u8> {
    serde_json::to_vec(notice).expect("notices serialise")
}

async fn run(
    writer: &mut Writer,
    controls: &mut mpsc::Receiver<ws::Control>,
    state: &Arc<ApiState>,
    viewer: Viewer,
    cursor: Option<StreamCursor>,
) -> Result<End, WebSocketError> {
    let settings = &state.settings;
    let owner = viewer.audience;
    let mut last = match cursor {
        Some(cursor) => cursor,
        None => match state.store.stream_head().await {
            Ok(head) => head,
            Err(e) => return Ok(End::StoreDown(e.to_string())),
        },
    };
    let greeting = StreamNotice {
        cursor: Some(last.to_string()),
        ..StreamNotice::new(
            StreamNoticeKind::Connection,
            "Connected to the event stream of every order this key may see".into(),
        )
    };
    ws::send(writer, &notice_bytes(&greeting), false).await?;
    let mut filter = Filter::default();
    // History first, joined second: a long replay (an old cursor) cannot
    // overflow the live buffer (1013). What commits between the end of the
    // replay and the join comes with a `from` past `last`: the store fills
    // that gap; what the reader hands over at or before `last` is dropped.
    if let Some(end) = replay(writer, &*state.store, owner, &filter, &mut last).await? {
        return Ok(end);
    }
    let mut membership = state.stream.join(owner, settings.client_buffer);
    let mut heartbeat = Heartbeat::new(settings.ping_interval, settings.ping_timeout);
    loop {
        tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => return Ok(End::Shutdown),
            control = controls.recv() => match ws::on_control(writer, &mut heartbeat, control).await? {
                Flow::Continue => {}
                Flow::Text(text) => {
                    let notice = filter.apply(&text);
                    ws::send(writer, &notice_bytes(&notice), false).await?;
                }
                Flow::End(end) => return Ok(end),
            },
            live = membership.events.recv() => { heartbeat.busy(); match live {
                Some(live) => {
                    if live.from > last
                        && let Some(end) = replay(writer, &*state.store, owner, &filter, &mut last).await?
                    {
                        return Ok(end);
                    }
                    if live.at > last {
                        if filter.allows(live.order_id) {
                            ws::send(writer, &live.frame, false).await?;
                        }
                        last = live.at;
                    }
                }
                None => {
                    event::ws_slow_close();
                    tracing::warn!(cursor = %last, "closing a slow stream client");
                    return Ok(End::TooSlow { resume: format!("cursor={last}") });
                }
            }},
            beat = heartbeat.beat() => match beat {
                Beat::Timeout => return Ok(End::PingTimeout),
                Beat::Ping { quiet } => {
                    ws::ping(writer).await?;
                    if let Some(key) = viewer.key {
                        match state.keys.is_active(key).await {
                            Ok(true) => {}
                            Ok(false) => {
                                tracing::info!(key_id = %key, "closing a stream: its key was revoked");
                                return Ok(End::Revoked);
                            }
                            // Asked again at the next tick.
                            Err(e) => tracing::debug!(error = %e, "could not check a stream's key"),
                        }
                    }
                    if !quiet {
                        continue;
                    }
                    match replay(writer, &*state.store, owner, &filter, &mut last).await? {
                        // Asked again at the next tick; the session is fine.
                        Some(End::StoreDown(e)) => tracing::debug!(error = %e, "quiet stream check failed"),
                        Some(end) => return Ok(end),
                        None => {}
                    }
                }
            },
        }
    }
}

/// Sends the stored events after `last` (of `owner`'s orders, through the
/// filter) until the store has no more settled ones, advancing `last`;
/// `Some(end)` when the store failed.
async fn replay(
    writer: &mut Writer,
    store: &dyn Store,
    owner: Option<KeyId>,
    filter: &Filter,
    last: &mut StreamCursor,
) -> Result<Option<End>, WebSocketError> {
    loop {
        let page = match store.stream_events(*last, owner, BATCH).await {
            Ok(page) => page,
            Err(e) => return Ok(Some(End::StoreDown(e.to_string()))),
        };
        for item in &page.events {
            if filter.allows(item.event.order_id) {
                ws::send(writer, &frame(item), true).await?;
            }
            *last = item.at;
        }
        if !page.more || page.events.is_empty() {
            return Ok(None);
        }
    }
}

/// Who a caller's stream shows: `None` for every order (an `admin` key, or
/// auth off), else the caller's key (a keyless caller that may not see
/// everything sees nothing: the nil key owns no order).
pub(super) fn audience(caller: &crate::domain::Caller) -> Option<KeyId> {
    if caller.sees_all() {
        None
    } else {
        Some(caller.owner().unwrap_or(KeyId(uuid::Uuid::nil())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::NewOrder,
        store::{NewEvent, SqliteStore, SqliteSync, conformance},
    };

    fn id() -> OrderId {
        OrderId::new()
    }

    #[test]
    fn subscribe_narrows_unsubscribe_removes_and_a_typo_changes_nothing() {
        let (a, b, c) = (id(), id(), id());
        let mut filter = Filter::default();
        assert!(filter.allows(a) && filter.allows(b));
        let notice = filter.apply(format!(r#"{{"op":"unsubscribe","orderIds":["{c}"]}}"#).as_bytes());
        assert_eq!(notice.kind, StreamNoticeKind::Unsubscribed);
        assert!(filter.allows(a) && !filter.allows(c), "all but c");
        filter.apply(format!(r#"{{"op":"subscribe","orderIds":["{a}"]}}"#).as_bytes());
        assert!(filter.allows(a) && !filter.allows(b), "only a");
        filter.apply(format!(r#"{{"op":"subscribe","orderIds":["{b}"]}}"#).as_bytes());
        assert!(filter.allows(a) && filter.allows(b));
        filter.apply(format!(r#"{{"op":"unsubscribe","orderIds":["{a}"]}}"#).as_bytes());
        assert!(!filter.allows(a) && filter.allows(b));
        let before = filter.clone();
        for typo in [
            &b"{\"op\":\"subscrbe\",\"orderIds\":[]}"[..],
            b"not json",
            b"{\"op\":\"subscribe\",\"orderIds\":[\"nope\"]}",
            b"{\"op\":\"subscribe\"}",
        ] {
            let notice = filter.apply(typo);
            assert_eq!(
                notice.kind,
                StreamNoticeKind::Error,
                "{}",
                String::from_utf8_lossy(typo)
            );
            assert!(
                notice.message.contains("subscribe"),
                "says what to send: {}",
                notice.message
            );
        }
        assert_eq!(filter, before, "a bad message changes nothing");
    }

    #[test]
    fn held_back_reads_back_off_from_10_ms_doubling_up_to_the_poll() {
        let mut delays = Vec::new();
        let mut last = None;
        for _ in 0..10 {
            let next = held_back_delay(last, POLL);
            delays.push(next.as_millis());
            last = Some(next);
        }
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        assert_eq!(
            held_back_delay(None, Duration::from_millis(5)),
            Duration::from_millis(5),
            "never past the poll"
        );
    }

    #[test]
    fn a_subscription_is_bounded() {
        let mut filter = Filter::default();
        let ids: Vec<String> = (0..=MAX_SUBSCRIBED).map(|_| format!("\"{}\"", id())).collect();
        let message = format!(r#"{{"op":"subscribe","orderIds":[{}]}}"#, ids.join(","));
        assert_eq!(filter.apply(message.as_bytes()).kind, StreamNoticeKind::Error);
        assert_eq!(filter, Filter::default());
    }

    fn new_order(owner: Option<KeyId>) -> NewOrder {
        NewOrder {
            owner,
            ..conformance::new_order()
        }
    }

    fn routing() -> NewEvent {
        conformance::event(conformance::routing())
    }

    async fn store() -> (tempfile::TempDir, Arc<SqliteStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db"), SqliteSync::Normal, Duration::from_secs(5)).unwrap();
        store.migrate().await.unwrap();
        (dir, Arc::new(store))
    }

    async fn drain(membership: &mut Membership) -> Vec<Live> {
        let mut got = Vec::new();
        while let Ok(live) = membership.events.try_recv() {
            got.push(live);
        }
        got
    }

    #[tokio::test]
    async fn the_reader_hands_each_session_only_what_its_key_may_see_and_says_where_it_was() {
        let (_dir, store) = store().await;
        let hub = StreamHub::new(store.clone());
        let (alice, bob) = (KeyId::new(), KeyId::new());
        let mut admin = hub.join(None, 64);
        let mut mine = hub.join(Some(alice), 64);
        assert_eq!(hub.sessions(), 2);
        assert!(!hub.catch_up().await.unwrap(), "the reader starts at the head");
        let ours = new_order(Some(alice));
        let theirs = new_order(Some(bob));
        store.create_order(&ours, routing()).await.unwrap();
        store.create_order(&theirs, routing()).await.unwrap();
        store.append_event(ours.id, routing()).await.unwrap();
        assert!(!hub.catch_up().await.unwrap());
        let all = drain(&mut admin).await;
        assert_eq!(
            all.iter().map(|l| l.order_id).collect::<Vec<_>>(),
            [ours.id, theirs.id, ours.id]
        );
        assert_eq!(all[0].from, StreamCursor::START, "the reader started at the head");
        assert_eq!(all[1].from, all[0].at, "each says where the previous one was");
        let alice_got = drain(&mut mine).await;
        assert_eq!(alice_got.len(), 2, "not bob's order");
        assert_eq!(
            alice_got[1].from, alice_got[0].at,
            "bob's event in between is not a gap"
        );
        let text: serde_json::Value = serde_json::from_slice(&alice_got[0].frame).unwrap();
        assert_eq!(text["cursor"], alice_got[0].at.to_string());
        assert_eq!(text["orderId"], ours.id.to_string());
        assert_eq!(text["seq"], 1);
        drop(admin);
        drop(mine);
        assert_eq!(hub.sessions(), 0);
        store.append_event(theirs.id, routing()).await.unwrap();
        assert!(!hub.catch_up().await.unwrap());
        assert_eq!(hub.feeds().position, None, "no session: nothing read, no position kept");
    }

    #[tokio::test]
    async fn a_session_that_falls_behind_is_dropped() {
        let (_dir, store) = store().await;
        let hub = StreamHub::new(store.clone());
        let mut slow = hub.join(None, 2);
        hub.catch_up().await.unwrap();
        for _ in 0..3 {
            store.create_order(&new_order(None), routing()).await.unwrap();
        }
        hub.catch_up().await.unwrap();
        assert_eq!(hub.sessions(), 0, "dropped at the third event");
        assert_eq!(drain(&mut slow).await.len(), 2);
        assert!(
            slow.events.recv().await.is_none(),
            "its receiver ends: the socket closes 1013"
        );
    }

    #[test]
    fn admins_see_everything_and_a_key_its_own() {
        use crate::domain::{Caller, KeyGrant, Scope};
        let ip = "127.0.0.1".parse().unwrap();
        let key = KeyId::new();
        let grant = |scopes: Vec<Scope>| KeyGrant {
            id: key,
            name: "k".into(),
            scopes,
            orders_per_minute: None,
        };
        let reader = Caller {
            key: Some(grant(vec![Scope::Read])),
            ip,
        };
        assert_eq!(audience(&reader), Some(key));
        let admin = Caller {
            key: Some(grant(vec![Scope::Admin])),
            ip,
        };
        assert_eq!(audience(&admin), None);
    }
}
