//! One WebSocket session: greetings, history from the store, then live
//! events from the hub, without gap or duplicate; pings; closes.
//!
//! fastwebsockets' `read_frame` is not cancellation-safe, so it is never
//! raced in a `select!`: a reader task owns the read half and reports
//! control frames to the writer over a channel; the writer owns the write
//! half and is the only task that selects.

use super::{
    ApiState,
    hub::Membership,
    views::{Greeting, GreetingKind},
};
use crate::{
    bus::Published,
    domain::{OrderId, Timestamp},
    telemetry::event,
};
use fastwebsockets::{Frame, OpCode, Payload, WebSocket, WebSocketError, WebSocketWrite};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::{sync::Arc, time::Duration};
use tokio::{
    io::WriteHalf,
    sync::mpsc,
    time::{Instant, sleep_until},
};

type Writer = WebSocketWrite<WriteHalf<TokioIo<Upgraded>>>;

/// Close codes used by the server.
pub mod close {
    /// Finished: the order reached its terminal event.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down, or the client stopped answering pings.
    pub const GOING_AWAY: u16 = 1001;
    /// A backend failed.
    pub const INTERNAL: u16 = 1011;
    /// The client fell too far behind; reconnect with `?since`.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// Where a session stands in its order's history: the `seq` of the last
/// event it sent. Pure (no I/O), so the no-gap, no-duplicate rule is tested
/// apart from framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    last: u64,
}

/// What to do with a live event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Already sent (from history or an earlier delivery): drop it.
    Skip,
    /// The next one: send it.
    Send,
    /// Events between the cursor and this one are missing (the bus lost
    /// them): send the stored ones before `seq` first, then this one.
    FillGap,
}

impl Cursor {
    /// A cursor after `since` (0: nothing sent yet).
    fn new(since: u64) -> Self {
        Cursor { last: since }
    }

    /// The step for a live event numbered `seq`.
    fn step(self, seq: u64) -> Step {
        if seq <= self.last {
            Step::Skip
        } else if seq == self.last + 1 {
            Step::Send
        } else {
            Step::FillGap
        }
    }

    /// Records that event `seq` was sent.
    fn sent(&mut self, seq: u64) {
        self.last = seq;
    }
}

enum Control {
    Ping(Vec<u8>),
    Pong,
    Closed,
}

/// Runs a session to its end.
pub async fn session(ws: WebSocket<TokioIo<Upgraded>>, state: Arc<ApiState>, order: OrderId, since: u64) {
    event::ws_connection(1.0);
    run_session(ws, state, order, since).await;
    event::ws_connection(-1.0);
}

async fn run_session(ws: WebSocket<TokioIo<Upgraded>>, state: Arc<ApiState>, order: OrderId, since: u64) {
    let (mut reader, mut writer) = ws.split(tokio::io::split);
    reader.set_auto_close(false);
    reader.set_auto_pong(false);
    reader.set_max_message_size(64 * 1024);
    let (control, mut controls) = mpsc::channel(8);
    let reading = tokio::spawn(async move {
        loop {
            let frame = reader.read_frame(&mut |_| async { Ok::<(), std::io::Error>(()) }).await;
            let message = match frame {
                Ok(frame) => match frame.opcode {
                    OpCode::Ping => Control::Ping(frame.payload.to_vec()),
                    OpCode::Pong => Control::Pong,
                    OpCode::Close => Control::Closed,
                    // Clients have nothing to say; text and binary are ignored.
                    _ => continue,
                },
                Err(_) => Control::Closed,
            };
            let closed = matches!(message, Control::Closed);
            if control.send(message).await.is_err() || closed {
                return;
            }
        }
    });

    let result = stream(&mut writer, &mut controls, &state, order, since).await;
    let end = match result {
        Ok(end) => end,
        Err(e) => {
            tracing::debug!(order_id = %order, error = %e, "WebSocket write failed");
            reading.abort();
            return;
        }
    };
    if let End::Close(code, reason) = end {
        let _ = writer.write_frame(Frame::close(code, reason.as_bytes())).await;
        // Give the client a moment to answer the close, then hang up.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(message) = controls.recv().await {
                if matches!(message, Control::Closed) {
                    break;
                }
            }
        })
        .await;
    }
    reading.abort();
}

/// Sends one text message; `replayed` marks events read from the store.
async fn send(writer: &mut Writer, payload: &[u8], replayed: bool) -> Result<(), WebSocketError> {
    writer.write_frame(Frame::text(Payload::Borrowed(payload))).await?;
    event::ws_sent(payload.len(), replayed);
    Ok(())
}

/// How a session ends.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// Send a close frame with this code and reason, then hang up.
    Close(u16, String),
    /// The peer closed (or vanished) first: nothing more to send.
    PeerGone,
}

impl End {
    fn finished() -> Self {
        End::Close(close::NORMAL, "order finished".into())
    }

    fn store_down(error: impl std::fmt::Display) -> Self {
        End::Close(close::INTERNAL, format!("store unavailable: {error}"))
    }
}

/// Streams until the session should close; returns how it ends.
async fn stream(
    writer: &mut Writer,
    controls: &mut mpsc::Receiver<Control>,
    state: &Arc<ApiState>,
    order: OrderId,
    since: u64,
) -> Result<End, WebSocketError> {
    let mut membership: Membership = match state.hub.join(order, state.settings.client_buffer).await {
        Ok(membership) => membership,
        Err(e) => return Ok(End::Close(close::INTERNAL, format!("event bus unavailable: {e}"))),
    };
    let greeting = |kind, message: String| {
        let greeting = Greeting {
            kind,
            order_id: order.to_string(),
            message,
            timestamp: Timestamp::now(),
        };
        serde_json::to_vec(&greeting).expect("greetings serialise")
    };
    send(
        writer,
        &greeting(GreetingKind::Connection, "Connected to order status stream".into()),
        false,
    )
    .await?;
    let subscribed = format!("Subscribed to real-time updates for order {order}");
    send(writer, &greeting(GreetingKind::Subscribed, subscribed), false).await?;

    // Joined first, history second: any event committed after this read is
    // already queued in `membership.events`; duplicates are dropped by seq.
    let mut cursor = Cursor::new(since);
    if let Some(end) = replay(writer, state, order, &mut cursor, u64::MAX).await? {
        return Ok(end);
    }
    // `?since` at or past the terminal event replays nothing, yet the order
    // may be finished all the same. (When something was replayed and none of
    // it was terminal, the order is still running: no need to ask.)
    if cursor == Cursor::new(since) {
        match state.store.order(order).await {
            Ok(Some(current)) if current.status.is_terminal() && cursor.last >= current.last_seq => {
                return Ok(End::finished());
            }
            Ok(_) => {}
            Err(e) => return Ok(End::store_down(e)),
        }
    }

    let ping_interval = state.settings.ping_interval;
    let mut pinger = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    let mut pong_due: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => return Ok(End::Close(close::GOING_AWAY, "server shutting down".into())),
            control = controls.recv() => match control {
                Some(Control::Ping(payload)) => writer.write_frame(Frame::pong(Payload::Owned(payload))).await?,
                Some(Control::Pong) => pong_due = None,
                Some(Control::Closed) | None => {
                    let _ = writer.write_frame(Frame::close(close::NORMAL, b"")).await;
                    return Ok(End::PeerGone);
                }
            },
            event = membership.events.recv() => match event {
                Some(event) if event.is_resync() => {
                    // The bus may have dropped events: the store has them all.
                    if let Some(end) = replay(writer, state, order, &mut cursor, u64::MAX).await? {
                        return Ok(end);
                    }
                }
                Some(event) => {
                    match cursor.step(event.seq) {
                        Step::Skip => continue,
                        Step::Send => {}
                        Step::FillGap => {
                            // The bus lost something: the store has it.
                            if let Some(end) = replay(writer, state, order, &mut cursor, event.seq).await? {
                                return Ok(end);
                            }
                        }
                    }
                    send(writer, &event.payload, false).await?;
                    cursor.sent(event.seq);
                    if event.terminal {
                        return Ok(End::finished());
                    }
                }
                None => {
                    event::ws_slow_close();
                    let last = cursor.last;
                    tracing::warn!(order_id = %order, last, "closing a slow WebSocket client");
                    return Ok(End::Close(close::TRY_AGAIN_LATER, format!("too slow; reconnect with ?since={last}")));
                }
            },
            _ = sleep_until(pong_due.unwrap_or(far)) => {
                event::ws_ping_timeout();
                return Ok(End::Close(close::GOING_AWAY, "ping timeout".into()));
            }
            _ = pinger.tick() => {
                writer.write_frame(Frame::new(true, OpCode::Ping, None, Payload::Borrowed(b"swapline"))).await?;
                if pong_due.is_none() {
                    pong_due = Some(Instant::now() + state.settings.ping_timeout);
                }
            }
        }
    }
}

/// Sends stored events after the cursor and before `before`, advancing it;
/// `Some(end)` when the session must end (the terminal event was sent, or
/// the store is down).
async fn replay(
    writer: &mut Writer,
    state: &Arc<ApiState>,
    order: OrderId,
    cursor: &mut Cursor,
    before: u64,
) -> Result<Option<End>, WebSocketError> {
    let history = match state.store.events(order, cursor.last).await {
        Ok(history) => history,
        Err(e) => return Ok(Some(End::store_down(e))),
    };
    for event in history.iter().filter(|e| e.seq < before) {
        let published = Published::new(event);
        send(writer, &published.payload, true).await?;
        cursor.sent(event.seq);
        if published.terminal {
            return Ok(Some(End::finished()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_sends_the_next_event_and_skips_what_was_sent() {
        let mut cursor = Cursor::new(0);
        assert_eq!(cursor.step(1), Step::Send);
        cursor.sent(1);
        assert_eq!(cursor.step(1), Step::Skip, "a duplicate delivery");
        assert_eq!(cursor.step(2), Step::Send);
    }

    #[test]
    fn cursor_asks_for_the_store_when_the_bus_skipped_events() {
        let mut cursor = Cursor::new(3);
        assert_eq!(cursor.step(6), Step::FillGap);
        cursor.sent(4);
        cursor.sent(5);
        assert_eq!(cursor.step(6), Step::Send, "after the gap is filled");
    }

    #[test]
    fn cursor_from_since_skips_history_the_client_has() {
        let cursor = Cursor::new(5);
        for seq in 1..=5 {
            assert_eq!(cursor.step(seq), Step::Skip, "seq {seq}");
        }
        assert_eq!(cursor.step(6), Step::Send);
    }
}
