//! The order lifecycle as a client sees it: REST and WebSocket.

use crate::harness::{Backend, Engine, assert_gapless, read_stream, schema, sol_usdc};
use std::time::Duration;
use swapline::{
    client,
    loadtest::{OrdersOptions, run_orders},
};

/// Venue latency long enough for clients to connect before the end.
const SLOW_VENUES: &str = r#"
[venues]
quote_latency = "50ms"

[chain]
land_slots = 40
"#;

async fn one_order_streams_its_full_lifecycle_matching_the_schemas(backend: Backend) {
    let engine = Engine::start_on(backend, SLOW_VENUES);
    let response = client::post_json(&engine.url, "/api/orders/execute", &sol_usdc(10.0))
        .await
        .unwrap();
    assert_eq!(response.status, 201);
    let created = response.json();
    schema("order-created.schema.json").assert_valid(&created);
    assert_eq!(created["status"], "pending");
    assert_eq!(created["message"], "Order created and enqueued for processing");
    let id = created["orderId"].as_str().unwrap();
    let host = engine.url.trim_start_matches("http://");
    assert_eq!(created["wsUrl"], format!("ws://{host}/api/orders/status/{id}"));

    let stream = engine.follow(id).await;
    let greetings: Vec<&str> = stream.greetings.iter().map(|g| g["type"].as_str().unwrap()).collect();
    assert_eq!(greetings, ["connection", "subscribed"]);
    assert_eq!(
        stream.types(),
        [
            "pending",
            "routing",
            "routing",
            "building",
            "building",
            "submitted",
            "confirmed"
        ]
    );
    let progress: Vec<u64> = stream.events.iter().map(|e| e["progress"].as_u64().unwrap()).collect();
    assert_eq!(progress, [0, 10, 30, 50, 70, 75, 100]);
    assert_gapless(&stream);
    assert_eq!(stream.close, 1000);
    let quoted = &stream.events[2];
    assert_eq!(quoted["quotesFetched"], 2);
    let routed = &stream.events[3];
    assert!(routed["chosenDex"].is_string() && routed["route"]["legs"].is_array() && routed["quote"].is_object());
    let submitted = &stream.events[5];
    assert_eq!(
        (submitted["attempt"].as_u64(), submitted["maxAttempts"].as_u64()),
        (Some(1), Some(3))
    );
    let confirmed = &stream.events[6];
    for field in ["txHash", "dex", "amountOut", "executedPrice"] {
        assert!(confirmed[field].is_string(), "confirmed.{field}: {confirmed}");
    }

    let order = client::get(&engine.url, &format!("/api/orders/status/{id}"))
        .await
        .unwrap();
    assert_eq!(order.status, 200);
    let order = order.json();
    schema("order.schema.json").assert_valid(&order);
    assert_eq!(order["status"], "confirmed");
    assert_eq!(order["amount"], "10");
    assert_eq!(order["txHash"], confirmed["txHash"]);
    assert_eq!(order["strategy"]["name"], "best-price");
    assert_eq!(order["strategy"]["sha256"].as_str().unwrap().len(), 64);

    let events = client::get(&engine.url, &format!("/api/orders/{id}/events"))
        .await
        .unwrap()
        .json();
    schema("order-events.schema.json").assert_valid(&events);
    assert_eq!(events["events"].as_array().unwrap(), &stream.events);

    let list = client::get(&engine.url, "/api/orders?status=confirmed&limit=5")
        .await
        .unwrap()
        .json();
    schema("order-list.schema.json").assert_valid(&list);
    assert_eq!(list["orders"][0]["id"], id);
    assert!(list["nextCursor"].is_null());
}

async fn late_client_after_confirmed_gets_full_replay_then_close_1000(backend: Backend) {
    let engine = Engine::start_on(backend, "");
    let id = engine.order(sol_usdc(1.0)).await;
    let first = engine.follow(&id).await;
    assert_eq!(first.types().last(), Some(&"confirmed"));
    let late = engine.follow(&id).await;
    assert_eq!(
        late.events, first.events,
        "the replay is the stored history, byte for byte"
    );
    assert_eq!(late.close, 1000);
}

async fn since_replays_only_later_events(backend: Backend) {
    let engine = Engine::start_on(backend, "");
    let id = engine.order(sol_usdc(1.0)).await;
    let full = engine.follow(&id).await;
    let mut socket = engine.watch(&id, Some(4)).await;
    let tail = read_stream(&mut socket).await;
    assert_eq!(tail.events, full.events[4..]);
    assert_eq!(tail.close, 1000);
    let mut socket = engine.watch(&id, Some(full.events.len() as u64)).await;
    let nothing_new = read_stream(&mut socket).await;
    assert!(nothing_new.events.is_empty());
    assert_eq!(
        nothing_new.close, 1000,
        "a finished order closes even when nothing is replayed"
    );
    let bad = client::request(
        &engine.url,
        "GET",
        &format!("/api/orders/status/{id}?since=minus-one"),
        &[
            ("upgrade", "websocket"),
            ("connection", "upgrade"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
        ],
        None,
    )
    .await
    .unwrap();
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["code"], "invalid_since");
}

async fn three_clients_on_one_order_get_identical_sequences(backend: Backend) {
    let engine = Engine::start_on(backend, SLOW_VENUES);
    let id = engine.order(sol_usdc(2.0)).await;
    let mut sockets = Vec::new();
    for _ in 0..3 {
        sockets.push(engine.watch(&id, None).await);
    }
    let mut streams = Vec::new();
    for socket in &mut sockets {
        streams.push(read_stream(socket).await);
    }
    for stream in &streams {
        assert_gapless(stream);
        assert_eq!(stream.events, streams[0].events);
        assert_eq!(stream.close, 1000);
    }
    assert_eq!(streams[0].types().last(), Some(&"confirmed"));
}

async fn client_joining_mid_order_misses_nothing(backend: Backend) {
    let engine = Engine::start_on(backend, SLOW_VENUES);
    let id = engine.order(sol_usdc(1.0)).await;
    // Join once the order is under way: part history, part live.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stream = engine.follow(&id).await;
    assert_gapless(&stream);
    assert_eq!(stream.types().first(), Some(&"pending"));
    assert_eq!(stream.types().last(), Some(&"confirmed"));
}

async fn hundred_concurrent_orders_all_finish_with_gapless_seq(backend: Backend) {
    let engine = Engine::start_on(backend, "");
    let report = run_orders(
        OrdersOptions {
            url: engine.url.clone(),
            count: 100,
            rate: None,
            concurrency: 100,
            token_in: "SOL".into(),
            token_out: "USDC".into(),
            amount: "0.5".into(),
            timeout: Duration::from_secs(60),
            api_key: None,
            idempotency_keys: false,
        },
        indicatif::ProgressBar::hidden(),
    )
    .await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.confirmed, 100, "{report}");
    let health = client::get(&engine.url, "/health").await.unwrap().json();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["queue"]["active"], 0);
}

async fn health_reports_websocket_clients_and_queue(backend: Backend) {
    let engine = Engine::start_on(backend, SLOW_VENUES);
    let id = engine.order(sol_usdc(1.0)).await;
    let mut socket = engine.watch(&id, None).await;
    // Wait for the greetings so the hub has registered the client.
    let _ = socket.next().await.unwrap();
    let health = client::get(&engine.url, "/health").await.unwrap().json();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["websocket"]["connectedOrders"], 1);
    assert_eq!(health["websocket"]["totalClients"], 1);
    for key in ["waiting", "active", "delayed"] {
        assert!(health["queue"][key].is_u64(), "{health}");
    }
    assert_eq!(client::get(&engine.url, "/ready").await.unwrap().status, 200);
    read_stream(&mut socket).await;
}

async fn sigterm_closes_sockets_with_1001_and_exits_cleanly(backend: Backend) {
    let mut engine = Engine::start_on(
        backend,
        r#"
[chain]
land_slots = 300
"#,
    );
    let id = engine.order(sol_usdc(1.0)).await;
    let mut socket = engine.watch(&id, None).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reader = tokio::spawn(async move { read_stream(&mut socket).await });
    let status = tokio::task::spawn_blocking(move || {
        let status = engine.terminate();
        (status, engine)
    })
    .await
    .unwrap();
    assert!(
        status.0.success(),
        "exit status {:?}; log:\n{}",
        status.0,
        status.1.log()
    );
    let stream = reader.await.unwrap();
    assert_eq!(stream.close, 1001);
}

crate::on_both_backends!(
    one_order_streams_its_full_lifecycle_matching_the_schemas,
    late_client_after_confirmed_gets_full_replay_then_close_1000,
    since_replays_only_later_events,
    three_clients_on_one_order_get_identical_sequences,
    client_joining_mid_order_misses_nothing,
    hundred_concurrent_orders_all_finish_with_gapless_seq,
    health_reports_websocket_clients_and_queue,
    sigterm_closes_sockets_with_1001_and_exits_cleanly,
);

#[tokio::test(flavor = "multi_thread")]
async fn fanout_tool_sees_every_event_on_every_client_at_small_scale() {
    let engine = Engine::start(
        r#"
[chain]
land_slots = 150
"#,
    );
    let report = swapline::loadtest::run_fanout(
        swapline::loadtest::FanoutOptions {
            url: engine.url.clone(),
            clients: 500,
            orders: 5,
            connect_concurrency: 64,
            amount: "0.1".into(),
            timeout: Duration::from_secs(60),
            api_key: None,
        },
        indicatif::ProgressBar::hidden(),
    )
    .await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.clients, 500);
    assert!(report.event_delivery_ms.count > 0, "some events arrived live: {report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_tool_runs_clean_at_a_fixed_rate() {
    let engine = Engine::start("");
    let report = run_orders(
        OrdersOptions {
            url: engine.url.clone(),
            count: 200,
            rate: Some(200.0),
            concurrency: 64,
            token_in: "SOL".into(),
            token_out: "USDC".into(),
            amount: "0.2".into(),
            timeout: Duration::from_secs(60),
            api_key: None,
            idempotency_keys: false,
        },
        indicatif::ProgressBar::hidden(),
    )
    .await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.confirmed, 200, "{report}");
    assert_eq!(
        report.events,
        200 * 7,
        "seven events per order, none missing or repeated"
    );
}
