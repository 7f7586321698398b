//! The production topology: API nodes and workers as separate processes
//! sharing one Redis and one PostgreSQL.

use crate::{
    harness::{Backend, Engine, Shared, assert_gapless, read_stream, sol_usdc},
    relay::Relay,
};
use std::time::Duration;
use swapline::{
    client::{self, Message},
    loadtest::{OrdersOptions, run_orders},
};
use tokio::task::JoinSet;

const API: &str = "[worker]\nenabled = false\n";

fn venues(latency: &str) -> String {
    crate::harness::landing_after(latency)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_on_node_b_sees_every_event_of_orders_posted_to_node_a() {
    let shared = Shared::new(Backend::Production);
    let extra = venues("200ms");
    let a = Engine::node(shared.clone(), "serve", &format!("{API}{extra}"));
    let b = Engine::node(shared.clone(), "serve", &format!("{API}{extra}"));
    let _w1 = Engine::node(shared.clone(), "worker", &extra);
    let _w2 = Engine::node(shared.clone(), "worker", &extra);
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(a.order(sol_usdc(1.0)).await);
    }
    let mut watching = JoinSet::new();
    for id in ids.clone() {
        let url = b.url.clone();
        watching.spawn(async move {
            let mut socket = client::connect(&url, &format!("/api/orders/status/{id}"))
                .await
                .unwrap();
            read_stream(&mut socket).await
        });
    }
    while let Some(stream) = watching.join_next().await {
        let stream = stream.unwrap();
        assert_gapless(&stream);
        assert_eq!(stream.types().first(), Some(&"pending"));
        assert_eq!(stream.types().last(), Some(&"confirmed"), "{:?}", stream.types());
        assert_eq!(stream.close, 1000);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_submission_is_replaced_and_the_swap_happens_once() {
    let shared = Shared::new(Backend::Production);
    let extra = venues("1500ms");
    let api = Engine::node(shared.clone(), "serve", &format!("{API}{extra}"));
    let mut workers = [
        Engine::node(shared.clone(), "worker", &extra),
        Engine::node(shared.clone(), "worker", &extra),
    ];
    let id = api.order(sol_usdc(2.0)).await;
    let mut socket = api.watch(&id, None).await;
    loop {
        match socket.next().await.unwrap() {
            Message::Text(text) if text.contains(r#""type":"submitted""#) => break,
            Message::Text(_) => {}
            Message::Close(code, _) => panic!("closed with {code} before submitting"),
        }
    }
    let busy = workers
        .iter()
        .position(|w| w.log().contains(&id))
        .expect("one worker logged the order");
    workers[busy].kill_9();

    let rest = read_stream(&mut socket).await;
    let types = rest.types();
    assert_eq!(
        types.last(),
        Some(&"confirmed"),
        "{types:?}\n{}",
        workers[1 - busy].log()
    );
    assert_eq!(types.iter().filter(|t| **t == "confirmed").count(), 1);
    let full = api.follow(&id).await;
    assert_gapless(&full);
    assert_eq!(shared.landed_swaps(&id).await, 1, "the venue executed once");
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_in_flight_survive_redis_losing_everything() {
    let shared = Shared::new(Backend::Production);
    let engine = Engine::node(shared.clone(), "serve", &venues("500ms"));
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(engine.order(sol_usdc(0.5)).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(shared.flush_redis().await > 0, "the jobs were in Redis");
    for id in &ids {
        let stream = engine.follow(id).await;
        assert_gapless(&stream);
        let types = stream.types();
        assert_eq!(types.last(), Some(&"confirmed"), "{id}: {types:?}");
        assert_eq!(types.iter().filter(|t| **t == "confirmed").count(), 1);
        assert_eq!(shared.landed_swaps(id).await, 1);
    }
    let unfinished: i64 = shared
        .postgres()
        .await
        .query_one(
            "SELECT COUNT(*) FROM orders WHERE status NOT IN ('confirmed', 'failed')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unfinished, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_outage_answers_503_and_every_accepted_order_finishes() {
    let relay = Relay::start("127.0.0.1:5432").await;
    let shared = Shared::with_postgres(Backend::Production, relay.postgres_url());
    // Fail fast while the database is away.
    let timeouts = "[postgres]\nconnect_timeout = \"1s\"\npool_wait_timeout = \"1s\"\nstatement_timeout = \"2s\"\n";
    let engine = Engine::node(shared.clone(), "serve", &format!("{}{timeouts}", venues("100ms")));
    let mut accepted = Vec::new();
    let mut refused = 0;
    for round in 0..40 {
        if round == 10 {
            relay.down();
        }
        if round == 25 {
            relay.up();
        }
        let response = client::post_json(&engine.url, "/api/orders/execute", &sol_usdc(0.1))
            .await
            .unwrap();
        match response.status.as_u16() {
            201 => accepted.push(response.json()["orderId"].as_str().unwrap().to_owned()),
            503 => {
                refused += 1;
                assert_eq!(response.json()["error"]["code"], "store_unavailable");
                let ready = client::get(&engine.url, "/ready").await.unwrap();
                assert_eq!(ready.status, 503);
                let health = client::get(&engine.url, "/health").await.unwrap().json();
                assert_eq!(health["store"]["status"], "down", "{health}");
            }
            other => panic!("status {other}: {}", String::from_utf8_lossy(&response.body)),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused > 0, "the outage was noticed");
    assert!(accepted.len() >= 10);
    for id in &accepted {
        let stream = engine.follow(id).await;
        assert_gapless(&stream);
        assert_eq!(stream.types().last(), Some(&"confirmed"), "{id}: {:?}", stream.types());
    }
    assert_eq!(client::get(&engine.url, "/ready").await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_orders_through_two_workers_each_execute_once() {
    let shared = Shared::new(Backend::Production);
    // Correctness under load, not latency: generous pool waits keep a busy CI
    // machine from turning slowness into 503s.
    let patient = "[postgres]\npool_wait_timeout = \"15s\"\n\n[redis]\npool_wait_timeout = \"15s\"\n";
    let api = Engine::node(shared.clone(), "serve", &format!("{API}{patient}"));
    let _w1 = Engine::node(shared.clone(), "worker", patient);
    let _w2 = Engine::node(shared.clone(), "worker", patient);
    let report = run_orders(
        OrdersOptions {
            url: api.url.clone(),
            count: 1000,
            rate: None,
            concurrency: 64,
            token_in: "SOL".into(),
            token_out: "USDC".into(),
            amount: "0.1".into(),
            timeout: Duration::from_secs(120),
            api_key: None,
            idempotency_keys: false,
        },
        indicatif::ProgressBar::hidden(),
    )
    .await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.confirmed, 1000, "{report}");
    let db = shared.postgres().await;
    let row = db
        .query_one(
            "SELECT COUNT(*), COUNT(DISTINCT order_id) FROM chain_txs WHERE state = 'landed'",
            &[],
        )
        .await
        .unwrap();
    let (landed, orders): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!((landed, orders), (1000, 1000), "no order landed twice");
    let confirmed: i64 = db
        .query_one("SELECT COUNT(*) FROM orders WHERE status = 'confirmed'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(confirmed, 1000);
}
