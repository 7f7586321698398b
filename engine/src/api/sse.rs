//! Server-Sent Events on `GET /api/orders/status/{id}` with
//! `Accept: text/event-stream`, for clients and proxies that cannot do
//! WebSockets: the same events as the order's WebSocket, framed per the
//! WHATWG HTML standard, section 9.2 ("Server-sent events"): `id:` the
//! event's `seq`, `event:` its `type`, `data:` the event's JSON (one line).
//! The stream resumes after `Last-Event-ID` (or `?since`), sends history
//! from the store and then live events from the hub (no gap, no duplicate,
//! the rules of the WebSocket's cursor), a `: ping` comment every
//! `websocket.ping_interval`, and ends after the terminal event. A client
//! that reads too slowly to keep up with `websocket.client_buffer` events
//! is dropped (the WebSocket's slow-consumer rule); it resumes with
//! `Last-Event-ID`, as `EventSource` does by itself.

use super::{
    ApiState,
    error::ApiError,
    http::Body,
    ws::{Cursor, Step},
};
use crate::{
    bus::Published,
    domain::{Event, OrderId},
    telemetry::event,
};
use bytes::Bytes;
use hyper::{HeaderMap, Response, StatusCode, header};
use std::sync::Arc;
use tokio::{sync::mpsc, time::Instant};

/// Whether the request asks for an event stream (`Accept` names
/// `text/event-stream`).
pub(super) fn wanted(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| {
            media
                .split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// The seq a reconnecting client last saw, from `Last-Event-ID`; `None`
/// when absent. Not a non-negative integer: 400 `invalid_since` (field
/// `Last-Event-ID`), as a bad `?since` is.
pub(super) fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    text.parse().map(Some).map_err(|_| ApiError {
        field: Some("Last-Event-ID".into()),
        ..ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_since",
            format!("Last-Event-ID {text:?} must be a non-negative integer (the last seq you saw)"),
        )
    })
}

/// One event as an SSE message: `id`, `event`, `data`, blank line. The
/// JSON has no raw newline (serde escapes them), so one `data:` line holds
/// it.
pub(super) fn frame(seq: u64, kind: &str, json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + kind.len() + 32);
    out.extend_from_slice(format!("id: {seq}\nevent: {kind}\ndata: ").as_bytes());
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// The `type` of a published event's JSON (the SSE `event:` name).
#[derive(serde::Deserialize)]
struct Kind {
    #[serde(rename = "type")]
    kind: String,
}

fn frame_of(event: &Event) -> (Bytes, bool) {
    let published = Published::new(event);
    (
        frame(event.seq, event.data.kind().as_str(), &published.payload),
        published.terminal,
    )
}

/// The `200 text/event-stream` response, its body fed by a task (tracked
/// with the WebSocket sessions, so shutdown waits for it and ends it).
pub(super) fn respond(state: &Arc<ApiState>, order: OrderId, since: u64) -> Response<Body> {
    let (chunks, body) = mpsc::channel(state.settings.client_buffer.max(1));
    let session_state = state.clone();
    state.sessions.spawn(async move {
        event::ws_connection(1.0);
        stream(&session_state, order, since, chunks).await;
        event::ws_connection(-1.0);
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        // Proxies such as nginx buffer responses unless told not to.
        .header("x-accel-buffering", "no")
        .body(Body::Stream(body))
        .expect("static response parts are valid")
}

/// Why a stream stopped, for the log.
#[derive(Debug)]
enum Stop {
    Finished,
    Gone,
    TooSlow,
    Shutdown,
    Backend(String),
}

async fn stream(state: &Arc<ApiState>, order: OrderId, since: u64, chunks: mpsc::Sender<Bytes>) {
    match run(state, order, since, &chunks).await {
        Stop::TooSlow => {
            event::ws_slow_close();
            tracing::warn!(order_id = %order, "ending a slow event-stream client");
        }
        Stop::Backend(reason) => tracing::warn!(order_id = %order, reason, "event stream ended: backend down"),
        stop => tracing::debug!(order_id = %order, ?stop, "event stream ended"),
    }
}

async fn run(state: &Arc<ApiState>, order: OrderId, since: u64, chunks: &mpsc::Sender<Bytes>) -> Stop {
    let settings = &state.settings;
    // Joined first, history second (as the WebSocket does): an event stored
    // after the history read is already queued for us.
    let mut membership = match state
        .hub
        .join(order, settings.client_buffer, settings.subscribe_timeout)
        .await
    {
        Ok(membership) => membership,
        Err(e) => return Stop::Backend(e.to_string()),
    };
    let mut cursor = Cursor::new(since);
    match replay(state, order, &mut cursor, u64::MAX, chunks).await {
        Ok(true) => return Stop::Finished,
        Ok(false) => {}
        Err(stop) => return stop,
    }
    match state.store.order(order).await {
        Ok(Some(current)) if current.status.is_terminal() && cursor.last >= current.last_seq => {
            return Stop::Finished;
        }
        Ok(_) => {}
        Err(e) => return Stop::Backend(e.to_string()),
    }
    let mut pinger = tokio::time::interval_at(Instant::now() + settings.ping_interval, settings.ping_interval);
    loop {
        tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => return Stop::Shutdown,
            _ = chunks.closed() => return Stop::Gone,
            live = membership.events.recv() => match live {
                Some(live) if live.is_resync() => match replay(state, order, &mut cursor, u64::MAX, chunks).await {
                    Ok(true) => return Stop::Finished,
                    Ok(false) => {}
                    Err(stop) => return stop,
                },
                Some(live) => {
                    match cursor.step(live.seq) {
                        Step::Skip if live.terminal => return Stop::Finished,
                        Step::Skip => continue,
                        Step::Send => {}
                        Step::FillGap => match replay(state, order, &mut cursor, live.seq, chunks).await {
                            Ok(true) => return Stop::Finished,
                            Ok(false) => {}
                            Err(stop) => return stop,
                        },
                    }
                    let kind = serde_json::from_slice::<Kind>(&live.payload)
                        .map_or_else(|_| "message".to_owned(), |k| k.kind);
                    if send(chunks, frame(live.seq, &kind, &live.payload), false).await.is_err() {
                        return Stop::Gone;
                    }
                    cursor.sent(live.seq);
                    if live.terminal {
                        return Stop::Finished;
                    }
                }
                // The hub dropped us: we fell `client_buffer` events behind.
                None => return Stop::TooSlow,
            },
            _ = pinger.tick() => {
                if send(chunks, Bytes::from_static(b": ping\n\n"), false).await.is_err() {
                    return Stop::Gone;
                }
            }
        }
    }
}

async fn send(chunks: &mpsc::Sender<Bytes>, chunk: Bytes, replayed: bool) -> Result<(), ()> {
    let len = chunk.len();
    chunks.send(chunk).await.map_err(|_| ())?;
    event::ws_sent(1, len as u64);
    if replayed {
        event::ws_replayed(1);
    }
    Ok(())
}

/// Sends stored events after the cursor and before `before`; `Ok(true)`
/// once the terminal event was sent.
async fn replay(
    state: &Arc<ApiState>,
    order: OrderId,
    cursor: &mut Cursor,
    before: u64,
    chunks: &mpsc::Sender<Bytes>,
) -> Result<bool, Stop> {
    let history = state
        .store
        .events(order, cursor.last)
        .await
        .map_err(|e| Stop::Backend(e.to_string()))?;
    for event in history.iter().filter(|e| e.seq < before) {
        let (chunk, terminal) = frame_of(event);
        send(chunks, chunk, true).await.map_err(|()| Stop::Gone)?;
        cursor.sent(event.seq);
        if terminal {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn a_frame_carries_id_event_and_one_data_line() {
        let framed = frame(7, "confirmed", br#"{"seq":7,"message":"a\nb"}"#);
        assert_eq!(
            &framed[..],
            b"id: 7\nevent: confirmed\ndata: {\"seq\":7,\"message\":\"a\\nb\"}\n\n"
        );
    }

    #[test]
    fn accept_lists_are_searched_for_the_event_stream_type() {
        let mut headers = HeaderMap::new();
        assert!(!wanted(&headers));
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!wanted(&headers));
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json;q=0.5, Text/Event-Stream;q=1"),
        );
        assert!(wanted(&headers));
    }

    #[test]
    fn last_event_id_is_a_seq_or_refused() {
        let mut headers = HeaderMap::new();
        assert_eq!(last_event_id(&headers).unwrap(), None);
        headers.insert("last-event-id", HeaderValue::from_static("12"));
        assert_eq!(last_event_id(&headers).unwrap(), Some(12));
        headers.insert("last-event-id", HeaderValue::from_static("x"));
        assert_eq!(last_event_id(&headers).unwrap_err().code, "invalid_since");
    }
}
