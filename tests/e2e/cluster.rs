//! The production topology on a Redis Cluster: real `redis-server`
//! processes (3 masters + 3 replicas, `cluster-node-timeout` 2 s) started by
//! [`harness::RedisCluster`], PostgreSQL as the store, `redis.mode =
//! "cluster"` with 16 queue partitions.

use crate::harness::{Backend, Engine, Shared, assert_gapless, read_stream, sol_usdc};
use std::time::{Duration, Instant};
use swapline::client;
use tokio::task::JoinSet;

/// The cluster harness (`RedisCluster::start()`, and `RedisServer` for the
/// idempotency tests), shared with the engine's unit tests.
#[path = "../../engine/src/queue/test_cluster.rs"]
pub(crate) mod cluster_harness;

use cluster_harness::RedisCluster;

const API: &str = "[worker]\nenabled = false\n";
/// Failover after a master is silent this long (`cluster-node-timeout`).
const NODE_TIMEOUT: Duration = Duration::from_secs(2);

fn venues(latency: &str) -> String {
    crate::harness::landing_after(latency)
}

/// 3 masters, each with a replica.
fn six_nodes() -> RedisCluster {
    RedisCluster::start(3, 1, NODE_TIMEOUT)
}

/// The engine's settings for `cluster` (with `redis_extra` lines in its
/// `[redis]` table).
fn on_cluster(cluster: &RedisCluster, redis_extra: &str) -> String {
    let urls: Vec<String> = cluster.urls().iter().map(|u| format!("{u:?}")).collect();
    format!(
        "\n[redis]\nmode = \"cluster\"\nurls = [{}]\n{redis_extra}\n[queue]\npartitions = 16\n",
        urls.join(", ")
    )
}

/// Posts `n` orders to `engine`; returns their ids.
async fn post(engine: &Engine, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(engine.order(sol_usdc(1.0)).await);
    }
    ids
}

/// Watches every order in `ids` on `url` to its close: each stream is
/// gapless, from `pending` to `confirmed`, closed with 1000.
async fn watch_all_to_confirmed(url: &str, ids: &[String]) {
    let mut watching = JoinSet::new();
    for id in ids.iter().cloned() {
        let url = url.to_owned();
        watching.spawn(async move {
            let mut socket = client::connect(&url, &format!("/api/orders/status/{id}"))
                .await
                .unwrap();
            (id, read_stream(&mut socket).await)
        });
    }
    while let Some(watched) = watching.join_next().await {
        let (id, stream) = watched.unwrap();
        assert_gapless(&stream);
        assert_eq!(stream.types().first(), Some(&"pending"), "{id}");
        assert_eq!(stream.types().last(), Some(&"confirmed"), "{id}: {:?}", stream.types());
        assert_eq!(stream.close, 1000, "{id}");
    }
}

/// Landed swaps and distinct orders with one, on the simulated chain.
async fn landings(shared: &Shared) -> (i64, i64) {
    let row = shared
        .postgres()
        .await
        .query_one(
            "SELECT COUNT(*), COUNT(DISTINCT order_id) FROM chain_txs WHERE state = 'landed'",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_on_a_cluster_with_one_api_node_and_one_worker() {
    let cluster = six_nodes();
    let shared = Shared::new(Backend::Production);
    let settings = format!("{}{}", on_cluster(&cluster, ""), venues("100ms"));
    let api = Engine::node(shared.clone(), "serve", &format!("{API}{settings}"));
    let _worker = Engine::node(shared.clone(), "worker", &settings);
    let ids = post(&api, 20).await;
    watch_all_to_confirmed(&api.url, &ids).await;
    for id in &ids {
        assert_eq!(shared.landed_swaps(id).await, 1, "{id} executed once");
    }
    api.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn split_topology_on_a_cluster_two_api_nodes_and_two_workers() {
    let cluster = six_nodes();
    let shared = Shared::new(Backend::Production);
    let settings = format!("{}{}", on_cluster(&cluster, ""), venues("200ms"));
    let a = Engine::node(shared.clone(), "serve", &format!("{API}{settings}"));
    let b = Engine::node(shared.clone(), "serve", &format!("{API}{settings}"));
    let _w1 = Engine::node(shared.clone(), "worker", &settings);
    let _w2 = Engine::node(shared.clone(), "worker", &settings);
    let ids = post(&a, 20).await;
    // Watched on the other API node: the events cross the sharded bus.
    watch_all_to_confirmed(&b.url, &ids).await;
    assert_eq!(landings(&shared).await, (20, 20), "each order executed once");
}

/// Jobs added to the queue streams held by the master at `port`
/// (`entries-added` of each `<prefix>:{q<n>}:jobs` stream there).
fn jobs_added_on(port: u16, prefix: &str) -> u64 {
    let keys = harness_keys(port, &format!("{prefix}:*:jobs"));
    keys.iter().filter_map(|key| cli_xinfo_added(port, key)).sum()
}

fn harness_keys(port: u16, pattern: &str) -> Vec<String> {
    redis_cli(port, &["--scan", "--pattern", pattern])
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn cli_xinfo_added(port: u16, key: &str) -> Option<u64> {
    let out = redis_cli(port, &["xinfo", "stream", key]);
    let mut lines = out.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "entries-added" {
            return lines.next()?.trim().parse().ok();
        }
    }
    None
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("running redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_keys_spread_over_at_least_two_masters() {
    let cluster = six_nodes();
    let shared = Shared::new(Backend::Production);
    let patient = "pool_wait_timeout = \"15s\"\n";
    let settings = on_cluster(&cluster, patient);
    let engine = Engine::node(shared.clone(), "serve", &settings);
    let ids = post(&engine, 300).await;
    let busy: Vec<(u16, u64)> = cluster
        .masters()
        .into_iter()
        .map(|port| (port, jobs_added_on(port, &shared.name)))
        .collect();
    eprintln!("jobs added per master after {} orders: {busy:?}", ids.len());
    let total: u64 = busy.iter().map(|(_, n)| n).sum();
    assert!(total >= 300, "every order's job went to some master: {busy:?}");
    assert!(
        busy.iter().filter(|(_, n)| *n > 0).count() >= 2,
        "queue keys on one master only: {busy:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_master_killed_with_orders_in_flight_loses_nothing() {
    let mut cluster = six_nodes();
    let shared = Shared::new(Backend::Production);
    let deadline = Duration::from_secs(2);
    let settings = format!(
        "{}{}\n[postgres]\npool_wait_timeout = \"15s\"\n",
        on_cluster(&cluster, "command_timeout = \"2s\"\npool_wait_timeout = \"2s\"\n"),
        venues("1500ms")
    );
    let api = Engine::node(shared.clone(), "serve", &format!("{API}{settings}"));
    let _w1 = Engine::node(shared.clone(), "worker", &settings);
    let _w2 = Engine::node(shared.clone(), "worker", &settings);

    // ~200 orders in flight (each venue execution takes 1.5 s).
    let mut accepted = Vec::new();
    let mut posting = JoinSet::new();
    for _ in 0..200 {
        let url = api.url.clone();
        posting.spawn(async move { client::post_json(&url, "/api/orders/execute", &sol_usdc(0.5)).await });
    }
    while let Some(posted) = posting.join_next().await {
        let response = posted.unwrap().unwrap();
        assert_eq!(response.status, 201, "before the failover");
        accepted.push(response.json()["orderId"].as_str().unwrap().to_owned());
    }
    // A sample of watchers, connected before the failover.
    let mut watchers = JoinSet::new();
    for id in accepted.iter().take(10).cloned() {
        let url = api.url.clone();
        watchers.spawn(async move {
            let mut socket = client::connect(&url, &format!("/api/orders/status/{id}"))
                .await
                .unwrap();
            (id, read_stream(&mut socket).await)
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let victim = cluster.masters()[0];
    let replica = cluster.replica_of(victim).expect("every master has a replica");
    let killed = Instant::now();
    cluster.kill(victim);
    // When the replica took over: the cluster's detection and failover.
    let promotion = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            let role = std::process::Command::new("redis-cli")
                .args(["-h", "127.0.0.1", "-p", &replica.to_string(), "role"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            if role.starts_with("master") {
                return Some(killed.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    });

    // POSTs during the failover: 201 or 503, each within the deadlines
    // (command deadline, pool wait and a margin), never a hang.
    let mut refused = 0;
    let mut first_refusal = None;
    let mut last_refusal = None;
    let bound = deadline * 3 + Duration::from_secs(5);
    while killed.elapsed() < NODE_TIMEOUT * 6 {
        let sent = Instant::now();
        let response = tokio::time::timeout(
            bound,
            client::post_json(&api.url, "/api/orders/execute", &sol_usdc(0.5)),
        )
        .await
        .unwrap_or_else(|_| panic!("a POST hung past {bound:?} during the failover"))
        .unwrap();
        match response.status.as_u16() {
            201 => accepted.push(response.json()["orderId"].as_str().unwrap().to_owned()),
            503 => {
                refused += 1;
                first_refusal.get_or_insert(killed.elapsed());
                last_refusal = Some(killed.elapsed());
            }
            other => panic!("a POST during the failover answered {other}"),
        }
        tokio::time::sleep(Duration::from_millis(100).saturating_sub(sent.elapsed())).await;
    }
    let promoted = promotion.join().unwrap().expect("the replica took over within 60 s");
    cluster.wait_master(replica, Duration::from_secs(5));

    // Every accepted order reaches a terminal state.
    let db = shared.postgres().await;
    let ids: Vec<uuid::Uuid> = accepted.iter().map(|id| id.parse().unwrap()).collect();
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let open: i64 = db
            .query_one(
                "SELECT COUNT(*) FROM orders WHERE id = ANY($1) AND status NOT IN ('confirmed', 'failed')",
                &[&ids],
            )
            .await
            .unwrap()
            .get(0);
        if open == 0 {
            break;
        }
        assert!(Instant::now() < until, "{open} accepted orders never finished");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let all_done = killed.elapsed();
    let failed: i64 = db
        .query_one(
            "SELECT COUNT(*) FROM orders WHERE id = ANY($1) AND status = 'failed'",
            &[&ids],
        )
        .await
        .unwrap()
        .get(0);

    // Every sampled watcher got every event in order and a close 1000.
    while let Some(watched) = watchers.join_next().await {
        let (id, stream) = watched.unwrap();
        assert_gapless(&stream);
        assert_eq!(stream.types().first(), Some(&"pending"), "{id}");
        let last = stream.types().last().copied();
        assert!(
            matches!(last, Some("confirmed" | "failed")),
            "{id}: {:?}",
            stream.types()
        );
        assert_eq!(stream.close, 1000, "{id}");
    }
    // No order executed twice.
    let (landed, orders) = landings(&shared).await;
    assert_eq!(landed, orders, "an order landed twice");

    eprintln!(
        "failover: master {victim} killed; replica {replica} promoted after {:.1} s; first 503 after {}, \
         last 503 after {}; {refused} POSTs (one every 100 ms) answered 503; {} orders accepted, {failed} failed; \
         all accepted orders terminal after {:.1} s",
        promoted.as_secs_f64(),
        first_refusal.map_or("none".into(), |t| format!("{:.1} s", t.as_secs_f64())),
        last_refusal.map_or("none".into(), |t| format!("{:.1} s", t.as_secs_f64())),
        accepted.len(),
        all_done.as_secs_f64(),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_refuses_an_unreachable_cluster_and_names_the_node() {
    let shared = Shared::new(Backend::Production);
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let extra = format!("\n[redis]\nmode = \"cluster\"\nurls = [\"redis://127.0.0.1:{closed}\"]\n");
    let output = shared.cli(&extra, &["migrate"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "migrate passed without a cluster");
    assert!(
        stderr.contains(&format!("redis.urls[0] (redis://127.0.0.1:{closed}): unreachable")),
        "{stderr}"
    );
}
