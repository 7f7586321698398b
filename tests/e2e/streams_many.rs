//! `GET /api/stream`, one WebSocket for many orders, on both backends:
//! each key sees exactly its own events (an admin every order's), in
//! per-order seq order; a stream cut after 20 events resumes with its
//! cursor with no gap and no duplicate; `subscribe` / `unsubscribe` narrow
//! it and a typo gets an error frame, not a closed socket; tickets and
//! cursors are checked. Also measures delivery latency with 1,000 orders in
//! flight (printed, not asserted: see ops/benchmarks.md).

use crate::{
    auth::post,
    harness::{Backend, Engine, schema, sol_usdc},
    on_both_backends,
};
use serde_json::{Value, json};
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, SystemTime},
};
use swapline::client::{self, ClientError, Message, Socket};

/// Auth on, quick venues (orders finish in well under a second), no
/// intake limit.
const AUTH_FAST: &str = r#"
[auth]
required = true

[limits]
orders_per_minute = 0

[venues]
quote_latency = "10ms"
quote_jitter = "0ms"

[chain]
land_slots = 20
"#;

/// Orders that stay in flight for a few seconds.
const SLOW: &str = r#"
[venues]
quote_latency = "10ms"
quote_jitter = "0ms"

[chain]
land_slots = 300
"#;

/// A key made through the CLI: its secret.
fn create_key(engine: &Engine, name: &str, scopes: &str) -> String {
    crate::auth::create_key(engine, name, scopes).1
}

async fn order(engine: &Engine, key: Option<&str>) -> String {
    let response = post(engine, key, "/api/orders/execute", &sol_usdc(1.0)).await;
    assert_eq!(response.status, 201, "{}", String::from_utf8_lossy(&response.body));
    response.json()["orderId"].as_str().unwrap().to_owned()
}

async fn open(engine: &Engine, path: &str, key: Option<&str>) -> Result<Socket, ClientError> {
    let auth = key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    client::connect_with(&engine.url, path, &headers).await
}

/// The next frame as JSON (checked against the committed schema), or the
/// close code.
async fn next(socket: &mut Socket) -> Result<Value, u16> {
    let value = next_unchecked(socket).await?;
    schema("stream-message.schema.json").assert_valid(&value);
    Ok(value)
}

/// [`next`] without the schema check (which compiles the schema: too slow
/// for a latency measurement).
async fn next_unchecked(socket: &mut Socket) -> Result<Value, u16> {
    let message = tokio::time::timeout(Duration::from_secs(60), socket.next())
        .await
        .expect("a frame within 60 s")
        .expect("socket read");
    match message {
        Message::Text(text) => Ok(serde_json::from_str(&text).expect("frames are JSON")),
        Message::Close(code, _) => Err(code),
    }
}

/// Opens a stream and reads its greeting; answers the socket and the
/// greeting's cursor.
async fn connect(engine: &Engine, path: &str, key: Option<&str>) -> (Socket, String) {
    let mut socket = open(engine, path, key).await.expect("the stream opens");
    let greeting = next(&mut socket).await.expect("a greeting");
    assert_eq!(greeting["type"], "connection", "{greeting}");
    let cursor = greeting["cursor"]
        .as_str()
        .expect("the greeting has a cursor")
        .to_owned();
    (socket, cursor)
}

fn is_event(frame: &Value) -> bool {
    frame.get("seq").is_some()
}

fn is_terminal(frame: &Value) -> bool {
    matches!(frame["type"].as_str(), Some("confirmed" | "failed" | "cancelled"))
}

/// Reads events until every order in `orders` had its terminal event;
/// answers every event read (notices skipped).
async fn until_finished(socket: &mut Socket, orders: &HashSet<String>) -> Vec<Value> {
    let mut events = Vec::new();
    let mut open: HashSet<String> = orders.clone();
    while !open.is_empty() {
        let frame = next(socket).await.unwrap_or_else(|code| panic!("closed with {code}"));
        if is_event(&frame) {
            if is_terminal(&frame) {
                open.remove(frame["orderId"].as_str().unwrap());
            }
            events.push(frame);
        }
    }
    events
}

/// Per order, the seqs in the order they came.
fn by_order(events: &[Value]) -> BTreeMap<String, Vec<u64>> {
    let mut orders: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for event in events {
        orders
            .entry(event["orderId"].as_str().unwrap().to_owned())
            .or_default()
            .push(event["seq"].as_u64().unwrap());
    }
    orders
}

/// Every order's seqs run 1, 2, 3… to its stored history's end: no gap, no
/// duplicate, in order; and the cursors are all distinct.
async fn assert_whole_histories(engine: &Engine, admin: Option<&str>, events: &[Value], orders: &HashSet<String>) {
    let seen = by_order(events);
    assert_eq!(
        seen.keys().cloned().collect::<HashSet<_>>(),
        *orders,
        "exactly these orders"
    );
    for (id, seqs) in &seen {
        let auth = admin.map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let stored = client::request(&engine.url, "GET", &format!("/api/orders/{id}/events"), &headers, None)
            .await
            .unwrap()
            .json();
        let stored = stored["events"].as_array().unwrap().len() as u64;
        assert_eq!(*seqs, (1..=stored).collect::<Vec<_>>(), "order {id}");
    }
    let cursors: HashSet<&str> = events.iter().map(|e| e["cursor"].as_str().unwrap()).collect();
    assert_eq!(cursors.len(), events.len(), "one cursor per event");
}

/// 50 orders from two keys: each key's stream (one by bearer key, one by a
/// stream ticket) holds exactly its own orders' events, whole and in seq
/// order; an admin's holds all 50.
async fn each_key_sees_exactly_its_own_events_and_admin_all(backend: Backend) {
    let engine = Engine::start_on(backend, AUTH_FAST);
    let alice = create_key(&engine, "alice", "trade,read");
    let bob = create_key(&engine, "bob", "trade,read");
    let admin = create_key(&engine, "admin", "admin");

    let (mut alice_stream, _) = connect(&engine, "/api/stream", Some(&alice)).await;
    let ticket = post(&engine, Some(&bob), "/api/ws-tickets", &json!({})).await;
    assert_eq!(ticket.status, 201, "{}", String::from_utf8_lossy(&ticket.body));
    schema("ws-ticket.schema.json").assert_valid(&ticket.json());
    let ws_url = ticket.json()["wsUrl"].as_str().unwrap().to_owned();
    assert!(ws_url.contains("/api/stream?ticket=swt_"), "{ws_url}");
    let path = &ws_url[ws_url.find("/api/stream").unwrap()..];
    let (mut bob_stream, _) = connect(&engine, path, None).await;
    let (mut admin_stream, _) = connect(&engine, "/api/stream", Some(&admin)).await;

    let (mut alice_orders, mut bob_orders) = (HashSet::new(), HashSet::new());
    for _ in 0..25 {
        alice_orders.insert(order(&engine, Some(&alice)).await);
        bob_orders.insert(order(&engine, Some(&bob)).await);
    }
    let all: HashSet<String> = alice_orders.union(&bob_orders).cloned().collect();

    let alice_events = until_finished(&mut alice_stream, &alice_orders).await;
    let bob_events = until_finished(&mut bob_stream, &bob_orders).await;
    let admin_events = until_finished(&mut admin_stream, &all).await;
    assert_whole_histories(&engine, Some(&admin), &alice_events, &alice_orders).await;
    assert_whole_histories(&engine, Some(&admin), &bob_events, &bob_orders).await;
    assert_whole_histories(&engine, Some(&admin), &admin_events, &all).await;
    // The same event has the same cursor on every stream.
    let cursor_of = |events: &[Value]| -> HashMap<(String, u64), String> {
        events
            .iter()
            .map(|e| {
                (
                    (e["orderId"].as_str().unwrap().to_owned(), e["seq"].as_u64().unwrap()),
                    e["cursor"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let admin_cursors = cursor_of(&admin_events);
    for (event, cursor) in cursor_of(&alice_events) {
        assert_eq!(admin_cursors[&event], cursor);
    }
}

/// A stream dropped after 20 events resumes with the last cursor it got:
/// the rest arrives, nothing twice, nothing missing; with `?cursor=` from
/// the start a new stream replays all of it from the store.
async fn a_stream_cut_after_20_events_resumes_with_its_cursor(backend: Backend) {
    let engine = Engine::start_on(backend, AUTH_FAST);
    let key = create_key(&engine, "reader", "trade,read");
    let (mut socket, start) = connect(&engine, "/api/stream", Some(&key)).await;
    let mut orders = HashSet::new();
    for _ in 0..10 {
        orders.insert(order(&engine, Some(&key)).await);
    }
    let mut first = Vec::new();
    while first.len() < 20 {
        let frame = next(&mut socket).await.expect("open");
        if is_event(&frame) {
            first.push(frame);
        }
    }
    drop(socket);
    let cursor = first.last().unwrap()["cursor"].as_str().unwrap().to_owned();
    // Orders keep running while nobody listens.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut resumed, greeting_cursor) = connect(&engine, &format!("/api/stream?cursor={cursor}"), Some(&key)).await;
    assert_eq!(greeting_cursor, cursor, "the greeting says where it starts");
    let finished_before: HashSet<String> = first
        .iter()
        .filter(|e| is_terminal(e))
        .map(|e| e["orderId"].as_str().unwrap().to_owned())
        .collect();
    let rest = until_finished(&mut resumed, &orders.difference(&finished_before).cloned().collect()).await;
    let mut all = first.clone();
    all.extend(rest);
    assert_whole_histories(&engine, Some(&key), &all, &orders).await;

    let (mut replay, _) = connect(&engine, &format!("/api/stream?cursor={start}"), Some(&key)).await;
    let replayed = until_finished(&mut replay, &orders).await;
    assert_eq!(
        replayed.iter().map(|e| &e["cursor"]).collect::<Vec<_>>(),
        all.iter().map(|e| &e["cursor"]).collect::<Vec<_>>(),
        "the store replays the same stream, in the same order"
    );
}

/// Resuming from an old cursor while new orders keep running: the replay
/// of history and the live events meet with nothing lost and nothing twice
/// (the session joins the reader after its replay; the gap between is
/// filled from the store), and the socket is not closed 1013 for the
/// events that arrived during the replay.
async fn resuming_from_an_old_cursor_while_events_arrive_loses_nothing(backend: Backend) {
    let engine = Engine::start_on(backend, &format!("{AUTH_FAST}\n[websocket]\nclient_buffer = 64\n"));
    let key = create_key(&engine, "reader", "trade,read");
    let (mut first, start) = connect(&engine, "/api/stream", Some(&key)).await;
    let mut old = HashSet::new();
    for _ in 0..30 {
        old.insert(order(&engine, Some(&key)).await);
    }
    until_finished(&mut first, &old).await;
    drop(first);
    let (mut resumed, _) = connect(&engine, &format!("/api/stream?cursor={start}"), Some(&key)).await;
    let total = old.len() + 20;
    let create = async {
        let mut new = HashSet::new();
        for _ in 0..20 {
            new.insert(order(&engine, Some(&key)).await);
        }
        new
    };
    let read = async {
        let mut events = Vec::new();
        let mut finished = HashSet::new();
        while finished.len() < total {
            let frame = next(&mut resumed)
                .await
                .unwrap_or_else(|code| panic!("closed with {code} after {} events", events.len()));
            if is_event(&frame) {
                if is_terminal(&frame) {
                    finished.insert(frame["orderId"].as_str().unwrap().to_owned());
                }
                events.push(frame);
            }
        }
        events
    };
    let (new, events) = tokio::join!(create, read);
    let all: HashSet<String> = old.union(&new).cloned().collect();
    assert_whole_histories(&engine, Some(&key), &events, &all).await;
}

/// After `subscribe` only the subscribed orders stream; `unsubscribe`
/// removes one; `unsubscribe` before any `subscribe` excludes an order from
/// every order; a malformed message is answered with an error frame and
/// the socket stays open. Each socket is read until a later order's
/// terminal event (created once an unfiltered watcher saw all three
/// orders finish), so every event of the three has passed through it.
async fn subscribe_and_unsubscribe_narrow_the_stream(backend: Backend) {
    let engine = Engine::start_on(backend, SLOW);
    let (a, b, c) = (
        order(&engine, None).await,
        order(&engine, None).await,
        order(&engine, None).await,
    );
    let (mut watcher, _) = connect(&engine, "/api/stream?cursor=0-0", None).await;
    let (mut only, _) = connect(&engine, "/api/stream?cursor=0-0", None).await;
    only.send_text(r#"{"op":"subscrib","orderIds":[]}"#).await.unwrap();
    only.send_text(&json!({"op": "subscribe", "orderIds": [a, b]}).to_string())
        .await
        .unwrap();
    only.send_text(&json!({"op": "unsubscribe", "orderIds": [b]}).to_string())
        .await
        .unwrap();
    let (mut all_but, _) = connect(&engine, "/api/stream?cursor=0-0", None).await;
    all_but
        .send_text(&json!({"op": "unsubscribe", "orderIds": [b]}).to_string())
        .await
        .unwrap();
    until_finished(&mut watcher, &HashSet::from([a.clone(), b.clone(), c.clone()])).await;
    let last = order(&engine, None).await;
    only.send_text(&json!({"op": "subscribe", "orderIds": [last]}).to_string())
        .await
        .unwrap();

    /// Reads until `last`'s terminal event; answers the notices' types and
    /// the orders of the events after the `settled`-th notice.
    async fn read(socket: &mut Socket, last: &str, settled: usize) -> (Vec<String>, Vec<String>) {
        let (mut notices, mut orders) = (Vec::new(), Vec::new());
        loop {
            let frame = next(socket).await.expect("the socket stays open");
            if !is_event(&frame) {
                if frame["type"] == "error" {
                    assert_eq!(frame["code"], "bad_message");
                }
                notices.push(frame["type"].as_str().unwrap().to_owned());
                continue;
            }
            let order = frame["orderId"].as_str().unwrap().to_owned();
            if notices.len() >= settled {
                orders.push(order.clone());
            }
            if order == last && is_terminal(&frame) {
                return (notices, orders);
            }
        }
    }
    let (notices, orders) = read(&mut only, &last, 3).await;
    assert_eq!(notices, ["error", "subscribed", "unsubscribed", "subscribed"]);
    let seen: HashSet<&str> = orders.iter().map(String::as_str).collect();
    assert!(seen.contains(a.as_str()), "a's events after the subscribe");
    assert!(
        seen.is_subset(&HashSet::from([a.as_str(), last.as_str()])),
        "only a (and the later order) after the unsubscribe, not {b} or {c}: {seen:?}"
    );
    let (notices, orders) = read(&mut all_but, &last, 1).await;
    assert_eq!(notices, ["unsubscribed"]);
    let seen: HashSet<&str> = orders.iter().map(String::as_str).collect();
    assert_eq!(
        seen,
        HashSet::from([a.as_str(), c.as_str(), last.as_str()]),
        "every order but b"
    );
}

/// Bad cursors are 400 before any upgrade; a plain GET is 426; an order's
/// ticket does not open the stream, nor a stream ticket an order's socket.
async fn cursors_and_tickets_are_checked(backend: Backend) {
    let engine = Engine::start_on(backend, AUTH_FAST);
    let key = create_key(&engine, "k", "trade,read");
    let (_socket, head) = connect(&engine, "/api/stream", Some(&key)).await;
    let head: Vec<u64> = head.split('-').map(|n| n.parse().unwrap()).collect();
    // Past the head: no event has such a cursor (the session would wait
    // for nothing). On SQLite every cursor's xid is 0.
    let ahead = [
        format!("{}-0", u64::MAX),
        format!("{}-{}", head[0], head[1] + 1_000_000),
    ];
    let mut bad: Vec<String> = ["garbage", "1", "-1-2", "1-x"].map(String::from).to_vec();
    bad.extend(ahead);
    if backend == Backend::Embedded {
        bad.push("1-0".into());
    }
    for bad in &bad {
        match open(&engine, &format!("/api/stream?cursor={bad}"), Some(&key)).await {
            Err(ClientError::Refused(status)) => assert_eq!(status, 400, "{bad}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
    let (_socket, _) = connect(
        &engine,
        &format!("/api/stream?cursor={}-{}", head[0], head[1]),
        Some(&key),
    )
    .await;

    // A stream ticket is asked with `{}` or `{"orderId": null}` only.
    for (body, code, field) in [
        (json!({"orderID": "x"}), "unknown_field", Some("orderID")),
        (
            json!({"orderId": null, "stream": true}),
            "unknown_field",
            Some("stream"),
        ),
        (json!({"orderId": 7}), "invalid_order_id", Some("orderId")),
        (json!([]), "invalid_order_id", Some("orderId")),
    ] {
        let refused = post(&engine, Some(&key), "/api/ws-tickets", &body).await;
        assert_eq!(refused.status, 400, "{body}");
        let error = &refused.json()["error"];
        assert_eq!(error["code"], code, "{body}: {error}");
        assert_eq!(error["field"].as_str(), field, "{body}: {error}");
    }
    let null = post(&engine, Some(&key), "/api/ws-tickets", &json!({"orderId": null})).await;
    assert_eq!(null.status, 201);
    assert!(null.json()["wsUrl"].as_str().unwrap().contains("/api/stream?ticket="));
    let plain = client::request(
        &engine.url,
        "GET",
        "/api/stream",
        &[("authorization", &format!("Bearer {key}"))],
        None,
    )
    .await
    .unwrap();
    assert_eq!(plain.status, 426);
    assert_eq!(plain.json()["error"]["code"], "upgrade_required", "{}", plain.json());
    match open(&engine, "/api/stream", None).await {
        Err(ClientError::Refused(status)) => assert_eq!(status, 401),
        other => panic!("no key: {other:?}"),
    }

    let id = order(&engine, Some(&key)).await;
    let per_order = post(&engine, Some(&key), "/api/ws-tickets", &json!({"orderId": id}))
        .await
        .json();
    let secret = per_order["ticket"].as_str().unwrap();
    match open(&engine, &format!("/api/stream?ticket={secret}"), None).await {
        Err(ClientError::Refused(status)) => assert_eq!(status, 401, "an order's ticket on the stream"),
        other => panic!("{other:?}"),
    }
    let stream = post(&engine, Some(&key), "/api/ws-tickets", &json!({})).await.json();
    let secret = stream["ticket"].as_str().unwrap();
    match open(&engine, &format!("/api/orders/status/{id}?ticket={secret}"), None).await {
        Err(ClientError::Refused(status)) => assert_eq!(status, 401, "a stream ticket on an order"),
        other => panic!("{other:?}"),
    }
    // Unused by the refusal: it still opens the stream, once.
    let (_socket, _) = connect(&engine, &format!("/api/stream?ticket={secret}"), None).await;
    match open(&engine, &format!("/api/stream?ticket={secret}"), None).await {
        Err(ClientError::Refused(status)) => assert_eq!(status, 401, "a used ticket"),
        other => panic!("{other:?}"),
    }
}

/// Revoking a key closes its open streams with 1008 within a few pings
/// (the key is read again at each ping, past the key cache), whether the
/// stream opened with the key or with a ticket of it; another key's stream
/// stays open.
async fn a_revoked_key_loses_its_open_stream(backend: Backend) {
    let engine = Engine::start_on(
        backend,
        &format!("{AUTH_FAST}\n[websocket]\nping_interval = \"200ms\"\nping_timeout = \"5s\"\n"),
    );
    let (key_id, key) = crate::auth::create_key(&engine, "doomed", "trade,read");
    let other = create_key(&engine, "other", "read");
    let (mut by_key, _) = connect(&engine, "/api/stream", Some(&key)).await;
    let ticket = post(&engine, Some(&key), "/api/ws-tickets", &json!({})).await.json();
    let (mut by_ticket, _) = connect(
        &engine,
        &format!("/api/stream?ticket={}", ticket["ticket"].as_str().unwrap()),
        None,
    )
    .await;
    let (mut bystander, _) = connect(&engine, "/api/stream", Some(&other)).await;
    let revoked = engine.cli(&["keys", "revoke", &key_id]);
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    for socket in [&mut by_key, &mut by_ticket] {
        let code = loop {
            match next(socket).await {
                Ok(_) => continue,
                Err(code) => break code,
            }
        };
        assert_eq!(code, 1008, "closed as a policy violation");
    }
    // Pings went by (200 ms each) and the other key's stream is open.
    bystander
        .send_text(r#"{"op":"unsubscribe","orderIds":[]}"#)
        .await
        .unwrap();
    let answer = next(&mut bystander).await.expect("still open");
    assert_eq!(answer["type"], "unsubscribed", "{answer}");
}

on_both_backends!(
    a_revoked_key_loses_its_open_stream,
    resuming_from_an_old_cursor_while_events_arrive_loses_nothing,
    each_key_sees_exactly_its_own_events_and_admin_all,
    a_stream_cut_after_20_events_resumes_with_its_cursor,
    subscribe_and_unsubscribe_narrow_the_stream,
    cursors_and_tickets_are_checked,
);

/// Delivery latency of one admin stream with 1,000 orders in flight: from
/// each event's `timestamp` (ms) to its receipt. Prints p50/p99/max (the
/// figures in ops/benchmarks.md); asserts only that every event came, once.
async fn stream_latency_with_1000_orders_in_flight(backend: Backend) {
    const ORDERS: usize = 1000;
    let engine = Engine::start_on(
        backend,
        r#"
[limits]
orders_per_minute = 0

[venues]
quote_latency = "50ms"
quote_jitter = "10ms"

[chain]
land_slots = 150
"#,
    );
    let (mut socket, _) = connect(&engine, "/api/stream", None).await;
    let url = engine.url.clone();
    let posting = tokio::spawn(async move {
        let mut ids = HashSet::new();
        let mut tasks = tokio::task::JoinSet::new();
        let mut watchers = tokio::task::JoinSet::new();
        for chunk in 0..ORDERS / 50 {
            for _ in 0..50 {
                let url = url.clone();
                tasks.spawn(async move {
                    let response = client::post_json(&url, "/api/orders/execute", &sol_usdc(1.0))
                        .await
                        .unwrap();
                    assert_eq!(response.status, 201);
                    response.json()["orderId"].as_str().unwrap().to_owned()
                });
            }
            while let Some(id) = tasks.join_next().await {
                let id = id.unwrap();
                if chunk == 0 {
                    // The baseline: the same orders on per-order sockets.
                    let url = url.clone();
                    let id = id.clone();
                    watchers.spawn(async move {
                        let mut socket = client::connect(&url, &format!("/api/orders/status/{id}"))
                            .await
                            .unwrap();
                        let mut latencies = Vec::new();
                        while let Ok(Message::Text(text)) = socket.next().await {
                            let frame: Value = serde_json::from_str(&text).unwrap();
                            if let Some(at) = frame["timestamp"].as_str().filter(|_| is_event(&frame)) {
                                let sent = humantime::parse_rfc3339(at).unwrap();
                                latencies.push(SystemTime::now().duration_since(sent).unwrap_or_default());
                            }
                        }
                        latencies
                    });
                }
                ids.insert(id);
            }
        }
        let mut baseline = Vec::new();
        while let Some(latencies) = watchers.join_next().await {
            baseline.extend(latencies.unwrap());
        }
        (ids, baseline)
    });
    let mut latencies = Vec::new();
    let mut seen = HashSet::new();
    let mut finished = 0;
    while finished < ORDERS {
        let frame = next_unchecked(&mut socket).await.expect("open");
        if !is_event(&frame) {
            continue;
        }
        let received = SystemTime::now();
        let sent = humantime::parse_rfc3339(frame["timestamp"].as_str().unwrap()).unwrap();
        latencies.push(received.duration_since(sent).unwrap_or_default());
        assert!(
            seen.insert((
                frame["orderId"].as_str().unwrap().to_owned(),
                frame["seq"].as_u64().unwrap()
            )),
            "no duplicate"
        );
        if is_terminal(&frame) {
            finished += 1;
        }
    }
    let (ids, mut baseline) = posting.await.unwrap();
    assert_eq!(ids.len(), ORDERS);
    let percentiles = |latencies: &mut Vec<Duration>| {
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        format!(
            "{} events: p50 {:?}, p99 {:?}, max {:?}",
            latencies.len(),
            at(0.50),
            at(0.99),
            latencies.last().unwrap()
        )
    };
    println!(
        "stream latency ({backend:?}, {ORDERS} orders): admin stream {}; per-order sockets of the first 50 orders {}",
        percentiles(&mut latencies),
        percentiles(&mut baseline)
    );
}

mod latency {
    crate::on_both_backends!(stream_latency_with_1000_orders_in_flight);
    use super::stream_latency_with_1000_orders_in_flight;
}
