//! PostgreSQL behind a fault relay (`relay.rs`), Redis direct: a black hole
//! (open sockets that pass nothing, new connections refused for 5 s) and a
//! reset, in the embedded-worker and the split API/worker topologies.
//!
//! Each test prints how long the engine took to notice the fault (first 503)
//! and to recover (first 201 after the network is back; the in-flight order
//! terminal): `cargo nextest run -p swapline --test e2e partition_pg
//! --no-capture`.

use crate::{
    harness::{Backend, Engine, Shared, Stream, assert_gapless, read_stream, sol_usdc},
    relay::Relay,
};
use serde_json::Value;
use std::{
    sync::Arc,
    time::{Duration, Instant},
};
use swapline::client::{self, Message, Socket};

/// `postgres.query_timeout` in these tests.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the black hole refuses new connections.
const REFUSAL: Duration = Duration::from_secs(5);
/// Fail fast: short deadlines on PostgreSQL, a venue slow enough that the
/// first order is `submitted` when the fault strikes.
const SETTINGS: &str = r#"
[postgres]
connect_timeout = "1s"
pool_wait_timeout = "1s"
statement_timeout = "2s"
query_timeout = "2s"
verify_after_idle = "1s"

[chain]
land_slots = 150
"#;
/// The worker of the split topology.
const NO_WORKER: &str = "[worker]\nenabled = false\n";
/// What a POST may take while PostgreSQL is silent: checkout (pool wait +
/// connect) + `query_timeout`, plus a generous margin for a busy machine.
const POST_LIMIT: Duration = Duration::from_secs(1 + 1 + 2 + 3);
/// After the network is back, every accepted order is terminal within the
/// lease (2 s, the harness's) + the deadlines + one backoff; this allows a
/// generous margin on top.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);
/// The issue's bound for the in-flight order once the network is back: the
/// lease (2 s) + a checkout (1 s + 1 s) and `query_timeout` (2 s) + one
/// backoff (1 s) + its remaining venue call (1.5 s), with 6 s of margin for
/// a loaded machine. A correctness bound (the order must not stay stuck),
/// not a speed target.
const IN_FLIGHT_BOUND: Duration = Duration::from_millis(2_000 + 2_000 + 2_000 + 1_000 + 1_500 + 6_000);

/// Which fault the relay injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    BlackHole,
    Reset,
}

/// The nodes of one test: `api` answers HTTP; `_worker` runs jobs when the
/// topology is split.
struct Deployment {
    api: Engine,
    _worker: Option<Engine>,
}

fn embedded(shared: Arc<Shared>) -> Deployment {
    Deployment {
        api: Engine::node(shared, "serve", SETTINGS),
        _worker: None,
    }
}

fn split(shared: Arc<Shared>) -> Deployment {
    Deployment {
        api: Engine::node(shared.clone(), "serve", &format!("{NO_WORKER}{SETTINGS}")),
        _worker: Some(Engine::node(shared, "worker", SETTINGS)),
    }
}

/// POSTs an order within [`POST_LIMIT`] (a hang fails the test): `Some(id)`
/// on 201, `None` on 503 `store_unavailable`.
async fn post(engine: &Engine) -> Option<String> {
    let response = tokio::time::timeout(
        POST_LIMIT,
        client::post_json(&engine.url, "/api/orders/execute", &sol_usdc(0.1)),
    )
    .await
    .unwrap_or_else(|_| panic!("POST hung for more than {POST_LIMIT:?}"))
    .unwrap();
    match response.status.as_u16() {
        201 => Some(response.json()["orderId"].as_str().unwrap().to_owned()),
        503 => {
            assert_eq!(response.json()["error"]["code"], "store_unavailable");
            None
        }
        other => panic!("status {other}: {}", String::from_utf8_lossy(&response.body)),
    }
}

/// `/ready`'s status, within [`POST_LIMIT`].
async fn ready(engine: &Engine) -> u16 {
    tokio::time::timeout(POST_LIMIT, client::get(&engine.url, "/ready"))
        .await
        .unwrap_or_else(|_| panic!("/ready hung for more than {POST_LIMIT:?}"))
        .unwrap()
        .status
        .as_u16()
}

/// Reads events until one of type `kind`; returns them all.
async fn read_until(socket: &mut Socket, kind: &str) -> Vec<Value> {
    let mut events = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match socket.next().await.unwrap() {
                Message::Text(text) => {
                    let value: Value = serde_json::from_str(&text).unwrap();
                    if value.get("seq").is_some() {
                        let done = value["type"] == kind;
                        events.push(value);
                        if done {
                            return;
                        }
                    }
                }
                Message::Close(code, _) => panic!("closed with {code} before {kind}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind} event within 30 s"));
    events
}

/// The legs of a finished order's route.
async fn legs(engine: &Engine, id: &str) -> i64 {
    let status = engine.status(id).await;
    let legs = status["route"]["legs"]
        .as_array()
        .unwrap_or_else(|| panic!("a route with legs: {status}"));
    legs.len() as i64
}

/// Asserts a watcher saw every event of a confirmed order and close 1000.
fn assert_complete(id: &str, stream: &Stream) {
    assert_gapless(stream);
    assert_eq!(stream.types().last(), Some(&"confirmed"), "{id}: {:?}", stream.types());
    assert_eq!(stream.close, 1000, "{id}");
}

/// The scenario: an order in flight, the fault, POSTs through it; then every
/// accepted order confirmed once, its watchers complete.
async fn survive(fault: Fault, deploy: fn(Arc<Shared>) -> Deployment) {
    let relay = Relay::start("127.0.0.1:5432").await;
    let shared = Shared::with_postgres(Backend::Production, relay.postgres_url());
    let nodes = deploy(shared.clone());
    let api = &nodes.api;

    let in_flight = api.order(sol_usdc(1.0)).await;
    let mut watcher = api.watch(&in_flight, None).await;
    let mut seen = read_until(&mut watcher, "submitted").await;

    let struck = Instant::now();
    match fault {
        Fault::BlackHole => relay.black_hole(REFUSAL),
        Fault::Reset => relay.reset(),
    }
    let healed = match fault {
        Fault::BlackHole => struck + REFUSAL,
        Fault::Reset => struck,
    };

    let mut accepted = Vec::new();
    let mut first_refusal = None;
    let mut first_after_heal = None;
    let until = healed + Duration::from_secs(2);
    while Instant::now() < until || first_after_heal.is_none() {
        assert!(
            struck.elapsed() < REFUSAL + SETTLE_LIMIT,
            "no order accepted {SETTLE_LIMIT:?} after the network came back"
        );
        let asked = Instant::now();
        match post(api).await {
            Some(id) => {
                if asked >= healed && first_after_heal.is_none() {
                    first_after_heal = Some(healed.elapsed());
                }
                accepted.push(id);
            }
            None => {
                let took = asked.elapsed();
                assert!(
                    took <= QUERY_TIMEOUT + Duration::from_secs(3),
                    "503 took {took:?}, more than query_timeout + margin"
                );
                first_refusal.get_or_insert(struck.elapsed());
                // Only an answer given before the relay passes new
                // connections again must say so: one that ends after it
                // may have reached PostgreSQL on a new connection.
                if fault == Fault::BlackHole && Instant::now() < healed {
                    let status = ready(api).await;
                    if Instant::now() < healed {
                        assert_eq!(status, 503, "/ready while PostgreSQL is silent");
                    }
                    let health = tokio::time::timeout(POST_LIMIT, client::get(&api.url, "/health"))
                        .await
                        .expect("/health answers")
                        .unwrap()
                        .json();
                    if Instant::now() < healed {
                        assert_eq!(health["store"]["status"], "down", "{health}");
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if fault == Fault::BlackHole {
        assert!(first_refusal.is_some(), "the black hole was noticed (a 503)");
    }

    let rest = tokio::time::timeout(SETTLE_LIMIT, read_stream(&mut watcher))
        .await
        .expect("the in-flight order finished");
    let in_flight_done = healed.elapsed();
    assert!(
        in_flight_done < IN_FLIGHT_BOUND,
        "the in-flight order took {in_flight_done:?} after the network came back (bound {IN_FLIGHT_BOUND:?})"
    );
    seen.extend(rest.events);
    let whole = Stream {
        greetings: rest.greetings,
        events: seen,
        close: rest.close,
    };
    assert_complete(&in_flight, &whole);
    assert_eq!(
        shared.landed_swaps(&in_flight).await,
        legs(api, &in_flight).await,
        "one execution per leg"
    );
    eprintln!(
        "postgres {fault:?}: first 503 after {:?}; first 201 {:?} after the network was back; \
         in-flight order terminal {in_flight_done:?} after it ({:?})",
        first_refusal,
        first_after_heal.unwrap(),
        whole.types(),
    );

    for id in &accepted {
        let stream = api.follow(id).await;
        assert_complete(id, &stream);
        assert_eq!(
            shared.landed_swaps(id).await,
            legs(api, id).await,
            "{id}: one execution per leg"
        );
    }
    assert_eq!(ready(api).await, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_postgres_answers_503_promptly_and_every_order_finishes_once() {
    survive(Fault::BlackHole, embedded).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_postgres_under_split_api_and_worker_answers_503_and_every_order_finishes_once() {
    survive(Fault::BlackHole, split).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reset_postgres_connections_lose_no_order() {
    survive(Fault::Reset, embedded).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reset_postgres_connections_under_split_api_and_worker_lose_no_order() {
    survive(Fault::Reset, split).await;
}
