//! Redis partitions: the real binary on PostgreSQL (direct) and Redis through
//! a fault relay, in both topologies (one `serve` node with its worker, and
//! an API node beside a worker node). A black hole (sockets stay open, no
//! byte passes, new connections refused for a while) must be noticed by
//! deadlines and health PINGs rather than waited out; a reset must be
//! survived; after either, every stream ends complete with 1000 and every
//! swap executes once.
//!
//! Each test prints how long the engine took to notice the fault and to
//! recover (`--no-capture` shows it).

use crate::{
    harness::{Backend, Engine, Shared, Stream, assert_gapless, read_stream, sol_usdc},
    relay::Relay,
};
use serde_json::Value;
use std::{
    sync::Arc,
    time::{Duration, Instant},
};
use swapline::client;
use tokio::task::JoinHandle;

/// Deadlines short enough for a test: every Redis command and connect 1 s,
/// the bus subscriber PINGed every second with a 1 s deadline; each venue
/// call takes 1.5 s so an order is in flight when the fault strikes. The
/// request and claim limits are on, so their Redis calls face the fault too.
const FAST: &str = r#"
[redis]
command_timeout = "1s"
connect_timeout = "1s"
pool_wait_timeout = "1s"

[bus]
health_interval = "1s"
health_timeout = "1s"

[limits]
orders_per_minute = 6000

[chain]
land_slots = 150
"#;

/// A node that runs a worker (claims limited, in Redis).
const WORKER: &str = "[worker]\nrate_limit_per_minute = 6000\n";
/// An API node without a worker.
const API: &str = "[worker]\nenabled = false\nrate_limit_per_minute = 6000\n";
/// How long new connections are refused after the black hole strikes.
const REFUSED_FOR: Duration = Duration::from_secs(8);
/// A POST during the black hole must answer within this: the worst case is
/// two pool checkouts (each at most wait + connect + recycle = 3 s) before
/// the queue's refusal, plus a margin. A hang fails the test.
const POST_DEADLINE: Duration = Duration::from_secs(10);
/// Time for noticing a fault or recovering from one: the detection bound is
/// `bus.health_interval + bus.health_timeout` (2 s), reconnecting backs off
/// at most 1 s; the rest is margin for a loaded machine.
const NOTICE_WITHIN: Duration = Duration::from_secs(15);

/// Which processes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topology {
    /// One `serve` node with its worker.
    Embedded,
    /// A `serve` node without a worker, and a `worker` node.
    Split,
}

/// A deployment whose Redis is behind a relay.
struct Deployment {
    relay: Relay,
    shared: Arc<Shared>,
    api: Engine,
    _worker: Option<Engine>,
}

async fn deploy(topology: Topology) -> Deployment {
    let relay = Relay::start("127.0.0.1:6379").await;
    let shared = Shared::with_redis(Backend::Production, relay.redis_url());
    let (api, worker) = match topology {
        Topology::Embedded => (Engine::node(shared.clone(), "serve", &format!("{WORKER}{FAST}")), None),
        Topology::Split => (
            Engine::node(shared.clone(), "serve", &format!("{API}{FAST}")),
            Some(Engine::node(shared.clone(), "worker", &format!("{WORKER}{FAST}"))),
        ),
    };
    let deployment = Deployment {
        relay,
        shared,
        api,
        _worker: worker,
    };
    let took = deployment.wait_for_ready(200, NOTICE_WITHIN).await;
    eprintln!("{topology:?}: /ready 200 {} ms after start", took.as_millis());
    deployment
}

impl Deployment {
    /// `/ready`'s status; it must answer within 5 s (it never hangs).
    async fn ready(&self) -> u16 {
        let answer = tokio::time::timeout(Duration::from_secs(5), client::get(&self.api.url, "/ready"))
            .await
            .expect("/ready answers within 5 s")
            .expect("/ready answers");
        answer.status.as_u16()
    }

    /// `/health`; it must answer 200 within 5 s, also during a fault.
    async fn health(&self) -> Value {
        let answer = tokio::time::timeout(Duration::from_secs(5), client::get(&self.api.url, "/health"))
            .await
            .expect("/health answers within 5 s")
            .expect("/health answers");
        assert_eq!(answer.status, 200, "/health is the liveness probe: always 200");
        answer.json()
    }

    /// Polls `/ready` until it answers `status`; returns how long that took.
    async fn wait_for_ready(&self, status: u16, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if self.ready().await == status {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "/ready did not answer {status} within {within:?}; the log:\n{}",
                self.api.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls `/health` until `bus.status` is `status`; returns how long that
    /// took.
    async fn wait_for_bus(&self, status: &str, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let health = self.health().await;
            if health["bus"]["status"] == status {
                if status == "down" {
                    assert_eq!(health["status"], "degraded", "{health}");
                }
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "/health bus.status did not turn {status} within {within:?}: {health}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Watchers of `id` (connected now), each reading to its close.
    async fn watchers(&self, id: &str, count: usize) -> Vec<JoinHandle<Stream>> {
        let mut watchers = Vec::new();
        for _ in 0..count {
            let mut socket = self.api.watch(id, None).await;
            watchers.push(tokio::spawn(async move { read_stream(&mut socket).await }));
        }
        watchers
    }

    /// Every watcher got the order's whole stored history, gapless, ending
    /// with its terminal event and close 1000; the venue executed it once.
    async fn assert_complete(&self, id: &str, watchers: Vec<JoinHandle<Stream>>) {
        let stored = self.api.follow(id).await;
        assert_gapless(&stored);
        let last = *stored.types().last().expect("events");
        assert_eq!(last, "confirmed", "{id}: {:?}", stored.types());
        for watcher in watchers {
            let stream = watcher.await.expect("the watcher task");
            assert_gapless(&stream);
            assert_eq!(stream.seqs(), stored.seqs(), "every stored event reached the watcher");
            assert_eq!(stream.close, 1000, "{:?}", stream.types());
        }
        assert_eq!(
            self.shared.landed_swaps(id).await,
            1,
            "{id}: one execution for its one leg"
        );
    }

    /// A new order after the fault: greetings, the full stream, 1000, one
    /// execution.
    async fn assert_new_order_runs(&self) {
        let id = self.api.order(sol_usdc(0.5)).await;
        let stream = self.api.follow(&id).await;
        assert!(!stream.greetings.is_empty(), "greetings first");
        assert_gapless(&stream);
        assert_eq!(stream.types().first(), Some(&"pending"));
        assert_eq!(stream.types().last(), Some(&"confirmed"), "{:?}", stream.types());
        assert_eq!(stream.close, 1000);
        assert_eq!(self.shared.landed_swaps(&id).await, 1);
    }

    /// Waits (at most 10 s) until the order is `submitted`: in flight, at
    /// its 1.5 s venue call, so the fault strikes mid-execution.
    async fn wait_until_submitted(&self, id: &str) {
        let start = Instant::now();
        loop {
            let order = self.api.status(id).await;
            if order["status"] == "submitted" {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the order never reached submitted: {order}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every order the store holds is terminal within `within`.
    async fn assert_all_terminal(&self, within: Duration) {
        let start = Instant::now();
        loop {
            let unfinished: i64 = self
                .shared
                .postgres()
                .await
                .query_one(
                    "SELECT COUNT(*) FROM orders WHERE status NOT IN ('confirmed', 'failed')",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if unfinished == 0 {
                return;
            }
            assert!(
                start.elapsed() < within,
                "{unfinished} order(s) not terminal within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// POSTs an order to the node at `url` with a client deadline; returns the
/// status and the time it took.
async fn post_within(url: String, deadline: Duration) -> (u16, Duration) {
    let start = Instant::now();
    let answer = tokio::time::timeout(deadline, client::post_json(&url, "/api/orders/execute", &sol_usdc(1.0)))
        .await
        .unwrap_or_else(|_| panic!("POST did not answer within {deadline:?}: it hung"))
        .expect("POST answers");
    (answer.status.as_u16(), start.elapsed())
}

async fn black_hole(topology: Topology) {
    let deployment = deploy(topology).await;
    let id = deployment.api.order(sol_usdc(1.0)).await;
    let watchers = deployment.watchers(&id, 2).await;
    deployment.wait_until_submitted(&id).await;
    let struck = Instant::now();
    deployment.relay.black_hole(REFUSED_FOR);
    // The POST runs while the probes are polled, so each is timed alone.
    let post = tokio::spawn(post_within(deployment.api.url.clone(), POST_DEADLINE));
    deployment.wait_for_ready(503, NOTICE_WITHIN).await;
    let ready_down = struck.elapsed();
    deployment.wait_for_bus("down", NOTICE_WITHIN).await;
    let bus_down = struck.elapsed();
    let (status, took) = post.await.expect("the POST task");
    assert_eq!(
        status, 503,
        "a POST while Redis is unreachable is refused, not accepted"
    );
    eprintln!("{topology:?} black hole: POST answered 503 in {} ms", took.as_millis());
    assert!(
        struck.elapsed() < REFUSED_FOR,
        "the fault was noticed while it lasted ({:?})",
        struck.elapsed()
    );
    eprintln!(
        "{topology:?} black hole: /ready 503 after {} ms, /health bus down after {} ms",
        ready_down.as_millis(),
        bus_down.as_millis()
    );

    // New connections pass again after REFUSED_FOR; the old ones stay dead.
    let healed = struck + REFUSED_FOR;
    tokio::time::sleep(healed.saturating_duration_since(Instant::now())).await;
    deployment.wait_for_ready(200, NOTICE_WITHIN).await;
    let ready_again = healed.elapsed();
    deployment.wait_for_bus("ok", NOTICE_WITHIN).await;
    let bus_again = healed.elapsed();
    eprintln!(
        "{topology:?} black hole: healed; /ready 200 after {} ms, /health bus ok after {} ms",
        ready_again.as_millis(),
        bus_again.as_millis()
    );

    deployment.assert_complete(&id, watchers).await;
    eprintln!(
        "{topology:?} black hole: the in-flight order's watchers closed 1000 {} ms after healing",
        healed.elapsed().as_millis()
    );
    deployment.assert_new_order_runs().await;
    deployment.assert_all_terminal(Duration::from_secs(30)).await;
}

async fn reset(topology: Topology) {
    let deployment = deploy(topology).await;
    let id = deployment.api.order(sol_usdc(1.0)).await;
    let watchers = deployment.watchers(&id, 2).await;
    deployment.wait_until_submitted(&id).await;
    let struck = Instant::now();
    deployment.relay.reset();
    let (status, took) = post_within(deployment.api.url.clone(), POST_DEADLINE).await;
    assert!(matches!(status, 201 | 503), "POST after a reset: {status}");
    eprintln!("{topology:?} reset: POST answered {status} in {} ms", took.as_millis());
    deployment.api.wait_for_log("Redis subscriber reconnected", 1).await;
    eprintln!(
        "{topology:?} reset: bus subscriber reconnected {} ms after the reset",
        struck.elapsed().as_millis()
    );
    deployment.wait_for_ready(200, NOTICE_WITHIN).await;
    eprintln!(
        "{topology:?} reset: /ready 200 {} ms after the reset",
        struck.elapsed().as_millis()
    );

    deployment.assert_complete(&id, watchers).await;
    eprintln!(
        "{topology:?} reset: the in-flight order's watchers closed 1000 {} ms after the reset",
        struck.elapsed().as_millis()
    );
    deployment.assert_new_order_runs().await;
    deployment.assert_all_terminal(Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_black_hole_is_noticed_refused_and_healed_with_one_node() {
    black_hole(Topology::Embedded).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_black_hole_is_noticed_refused_and_healed_with_api_and_worker_apart() {
    black_hole(Topology::Split).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_reset_is_survived_with_one_node() {
    reset(Topology::Embedded).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_reset_is_survived_with_api_and_worker_apart() {
    reset(Topology::Split).await;
}

/// The quiet failure of the bus: the worker's publish of the terminal event
/// is lost (its Redis goes silent) while the API node's subscriber stays
/// healthy, so no resync marker comes. The watcher's session asks the store
/// once per quiet ping interval and still ends with the terminal event and
/// 1000, instead of being kept open by pings forever.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_terminal_publish_still_ends_the_stream_with_1000() {
    let relay = Relay::start("127.0.0.1:6379").await;
    let shared = Shared::new(Backend::Production);
    let api = Engine::node(
        shared.clone(),
        "serve",
        "[worker]\nenabled = false\n\n[websocket]\nping_interval = \"1s\"\n",
    );
    // Only the worker reaches Redis through the relay; the store is direct.
    let _worker = Engine::node(
        shared.clone(),
        "worker",
        &format!(
            "[redis]\nurl = \"{}\"\ncommand_timeout = \"1s\"\nconnect_timeout = \"1s\"\npool_wait_timeout = \"1s\"\n\n\
             [chain]\nland_slots = 150\n",
            relay.redis_url()
        ),
    );
    let id = api.order(sol_usdc(1.0)).await;
    let mut socket = api.watch(&id, None).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.status(&id).await["status"] != "submitted" {
        assert!(Instant::now() < deadline, "the order was submitted:\n{}", api.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.black_hole(Duration::from_secs(120));
    let stream = tokio::time::timeout(Duration::from_secs(30), read_stream(&mut socket))
        .await
        .expect("the stream ends although its terminal event was never published");
    let stored = api.status(&id).await;
    assert_eq!(stored["status"], "confirmed", "{stored}");
    assert_eq!(
        stream.types().last().copied(),
        Some("confirmed"),
        "{:?}",
        stream.types()
    );
    assert_eq!(stream.close, 1000);
    assert_gapless(&stream);
    assert_eq!(shared.landed_swaps(&id).await, 1, "one execution");
}
