//! The chain at its worst: fast slots, short blockhash validity, 30 % of
//! transactions dropped and 20 % landing late, and a worker killed with
//! SIGKILL in the middle of confirmations. Every order ends; no order leg
//! ever has two landed transactions; a confirmed order has exactly one per
//! leg, a failed order none; the pools moved exactly by the landed swaps.
//! Checked from `swapline chain txs --json`, `swapline chain pools --json`
//! and the store, on both backends.

use crate::harness::{Backend, Engine, Shared, sol_usdc};
use serde_json::Value;
use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};
use tokio::task::JoinSet;

/// Orders per run.
const ORDERS: usize = 2_000;

/// Fast slots, short validity, faults; retries quick and plenty, so an
/// order fails only after many expired attempts in a row.
const CHAOS: &str = r#"
[chain]
slot_time = "5ms"
blockhash_validity_slots = 40
land_slots = 2
poll_initial = "5ms"
poll_max = "20ms"
rebroadcast_every = "50ms"

[chain.faults]
drop_rate = 0.3
late_land_rate = 0.2
late_land_slots = 10

[retry]
max_attempts = 12
initial = "5ms"
max_delay = "50ms"

[venues]
# No price walk: the pools move by the landed swaps alone.
drift_bps = 0.0
mean_reversion = 0.0
"#;

const API_ONLY: &str = "[worker]\nenabled = false\n";
const WORKER: &str = "[worker]\nconcurrency = 64\n";

/// One row of `swapline chain txs --json`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Tx {
    signature: String,
    order_id: String,
    leg: u32,
    venue: String,
    token_in: String,
    token_out: String,
    amount_in: String,
    amount_out: Option<String>,
    state: String,
    landed_slot: Option<u64>,
    last_valid_slot: u64,
}

/// One row of `swapline chain pools --json`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pool {
    pool: String,
    reserve_base: Option<String>,
    reserve_quote: Option<String>,
    base_in: String,
    base_out: String,
    quote_in: String,
    quote_out: String,
    swaps: u64,
}

/// Counts for the report.
#[derive(Debug, Default)]
struct Tally {
    sent: usize,
    landed: usize,
    failed: usize,
    dropped: usize,
    expired: usize,
    pending: usize,
    resigned: usize,
    double_landings: usize,
}

async fn chaos_run_lands_every_leg_at_most_once(backend: Backend) {
    let shared = Shared::new(backend);
    // Embedded is one process: the SIGKILL takes the whole engine, which
    // restarts and re-enqueues what was unfinished. Production is split:
    // an API node and two workers, one of which dies.
    let (api, mut workers) = match backend {
        Backend::Embedded => (
            Engine::node(shared.clone(), "serve", &format!("{CHAOS}{WORKER}")),
            Vec::new(),
        ),
        Backend::Production => {
            let api = Engine::node(shared.clone(), "serve", &format!("{CHAOS}{API_ONLY}"));
            let workers = vec![
                Engine::node(shared.clone(), "worker", &format!("{CHAOS}{WORKER}")),
                Engine::node(shared.clone(), "worker", &format!("{CHAOS}{WORKER}")),
            ];
            (api, workers)
        }
    };
    let mut api = api;
    let pools_before = chain_pools(&api);

    let mut posting = JoinSet::new();
    let url = api.url.clone();
    let per_task = ORDERS / 16;
    for _ in 0..16 {
        let url = url.clone();
        posting.spawn(async move {
            let mut ids = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let response = swapline::client::post_json(&url, "/api/orders/execute", &sol_usdc(0.01))
                    .await
                    .expect("posting an order");
                assert_eq!(response.status, 201, "{}", String::from_utf8_lossy(&response.body));
                ids.push(response.json()["orderId"].as_str().unwrap().to_owned());
            }
            ids
        });
    }
    let mut ids = Vec::with_capacity(ORDERS);
    while let Some(batch) = posting.join_next().await {
        ids.extend(batch.unwrap());
    }
    assert_eq!(ids.len(), ORDERS);

    // Mid-confirmations: some orders confirmed, many still landing.
    let started = Instant::now();
    while count_terminal(&shared).await < ORDERS / 4 {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "orders stopped confirming"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match backend {
        Backend::Embedded => api.restart(),
        Backend::Production => {
            workers[0].kill_9();
            tokio::time::sleep(Duration::from_millis(500)).await;
            workers[0].restart();
        }
    }

    while count_terminal(&shared).await < ORDERS {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {} of {ORDERS} orders ended",
            count_terminal(&shared).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let orders = orders(&shared).await;
    assert_eq!(orders.len(), ORDERS);
    let txs = chain_txs(&api);
    let signatures: std::collections::HashSet<&str> = txs.iter().map(|t| t.signature.as_str()).collect();
    assert_eq!(signatures.len(), txs.len(), "one row per signature");
    let mut by_leg: HashMap<(String, u32), Vec<&Tx>> = HashMap::new();
    let mut tally = Tally::default();
    for tx in &txs {
        by_leg.entry((tx.order_id.clone(), tx.leg)).or_default().push(tx);
        tally.sent += 1;
        match tx.state.as_str() {
            "landed" => tally.landed += 1,
            "failed" => tally.failed += 1,
            "dropped" => tally.dropped += 1,
            "expired" => tally.expired += 1,
            "pending" => tally.pending += 1,
            other => panic!("unknown state {other}"),
        }
        if tx.state == "landed" {
            assert!(tx.landed_slot.is_some_and(|s| s <= tx.last_valid_slot), "{tx:?}");
        }
    }
    for ((order, leg), sent) in &by_leg {
        tally.resigned += sent.len() - 1;
        let landed: Vec<&&Tx> = sent.iter().filter(|t| t.state == "landed").collect();
        if landed.len() > 1 {
            tally.double_landings += 1;
        }
        assert!(landed.len() <= 1, "order {order} leg {leg} landed twice: {landed:?}");
    }
    for (id, (status, legs)) in &orders {
        let landed = |leg: u32| {
            by_leg
                .get(&(id.clone(), leg))
                .map_or(0, |sent| sent.iter().filter(|t| t.state == "landed").count())
        };
        match status.as_str() {
            "confirmed" => {
                for leg in 0..*legs {
                    assert_eq!(landed(leg), 1, "confirmed order {id} leg {leg}");
                }
            }
            "failed" => {
                for leg in 0..(*legs).max(1) {
                    assert_eq!(landed(leg), 0, "failed order {id} leg {leg} landed");
                }
            }
            other => panic!("order {id} ended {other}"),
        }
    }
    assert_eq!(tally.pending, 0, "every transaction settled: {tally:?}");
    assert!(
        tally.dropped > 0 && tally.resigned > 0,
        "the faults happened: {tally:?}"
    );
    assert_pools_moved_by_landed_swaps(&pools_before, &chain_pools(&api), &txs);
    let confirmed = orders.values().filter(|(s, _)| s == "confirmed").count();
    eprintln!(
        "chaos {backend:?}: {ORDERS} orders, {confirmed} confirmed, {} failed; transactions: {tally:?}",
        ORDERS - confirmed
    );
}

/// Orders whose status is terminal.
async fn count_terminal(shared: &Shared) -> usize {
    orders(shared)
        .await
        .values()
        .filter(|(status, _)| ["confirmed", "failed", "cancelled"].contains(&status.as_str()))
        .count()
}

/// Every order: id → (status, legs of its route).
async fn orders(shared: &Shared) -> BTreeMap<String, (String, u32)> {
    let rows: Vec<(String, String, Option<String>)> = match shared.backend {
        Backend::Embedded => {
            let db = rusqlite::Connection::open(shared.dir.path().join("data/swapline.db")).unwrap();
            db.busy_timeout(Duration::from_secs(5)).unwrap();
            let mut statement = db.prepare("SELECT id, status, route FROM orders").unwrap();
            statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        }
        Backend::Production => {
            let client = shared.postgres().await;
            client
                .query("SELECT id::text, status, route::text FROM orders", &[])
                .await
                .unwrap()
                .iter()
                .map(|row| (row.get(0), row.get(1), row.get(2)))
                .collect()
        }
    };
    rows.into_iter()
        .map(|(id, status, route)| {
            let legs = route
                .and_then(|r| serde_json::from_str::<Value>(&r).ok())
                .and_then(|r| r["legs"].as_array().map(|l| l.len() as u32))
                .unwrap_or(0);
            (id, (status, legs))
        })
        .collect()
}

/// `swapline chain txs --json`.
fn chain_txs(engine: &Engine) -> Vec<Tx> {
    let output = engine.cli(&["chain", "txs", "--json"]);
    assert!(
        output.status.success(),
        "chain txs: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("chain txs --json is a JSON array of transactions")
}

/// `swapline chain pools --json`.
fn chain_pools(engine: &Engine) -> Vec<Pool> {
    let output = engine.cli(&["chain", "pools", "--json"]);
    assert!(
        output.status.success(),
        "chain pools: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("chain pools --json is a JSON array of pools")
}

/// Each pool's flows are exactly the sums of the swaps landed on it, and a
/// constant-product pool's reserves moved by exactly those flows (the
/// price walk is off).
fn assert_pools_moved_by_landed_swaps(before: &[Pool], after: &[Pool], txs: &[Tx]) {
    let number = |text: &str| text.parse::<u128>().expect("base units");
    for pool in after {
        // `venue:BASE/QUOTE`
        let (venue, pair) = pool.pool.split_once(':').unwrap();
        let (base, quote) = pair.split_once('/').unwrap();
        let (mut base_in, mut base_out, mut quote_in, mut quote_out, mut swaps) = (0u128, 0u128, 0u128, 0u128, 0u64);
        let on_pool = |t: &&Tx| {
            t.venue == venue
                && ((t.token_in == base && t.token_out == quote) || (t.token_in == quote && t.token_out == base))
        };
        for tx in txs.iter().filter(|t| t.state == "landed").filter(on_pool) {
            let (amount_in, amount_out) = (number(&tx.amount_in), number(tx.amount_out.as_deref().unwrap()));
            if tx.token_in == base {
                base_in += amount_in;
                quote_out += amount_out;
            } else {
                quote_in += amount_in;
                base_out += amount_out;
            }
            swaps += 1;
        }
        let flows = (
            number(&pool.base_in),
            number(&pool.base_out),
            number(&pool.quote_in),
            number(&pool.quote_out),
            pool.swaps,
        );
        assert_eq!(flows, (base_in, base_out, quote_in, quote_out, swaps), "{}", pool.pool);
        let start = before
            .iter()
            .find(|p| p.pool == pool.pool)
            .expect("the pool existed at start");
        assert_eq!(start.swaps, 0);
        if let (Some(b0), Some(q0), Some(b1), Some(q1)) = (
            &start.reserve_base,
            &start.reserve_quote,
            &pool.reserve_base,
            &pool.reserve_quote,
        ) {
            assert_eq!(
                number(b1),
                number(b0) + base_in - base_out,
                "{} base reserve",
                pool.pool
            );
            assert_eq!(
                number(q1),
                number(q0) + quote_in - quote_out,
                "{} quote reserve",
                pool.pool
            );
        }
    }
}

crate::on_both_backends!(chaos_run_lands_every_leg_at_most_once);
