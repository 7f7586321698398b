//! `swapline chain txs` and `swapline chain pools`: the test sends
//! transactions through the simulated chain (the library, on the test's
//! store), waits until they land on the chain's own clock, then reads them
//! back through the real binary's CLI on both backends.

use crate::harness::{Backend, POSTGRES, Shared};
use serde_json::Value;
use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::Duration,
};
use swapline::{
    app,
    chain::{ChainRpc, Transaction, Unsigned},
    config::{Config, Sources},
    domain::OrderId,
    venues::SystemClock,
};

const ONE_SOL: u128 = 1_000_000_000;

/// The test's config file: its data directory or PostgreSQL schema, and a
/// pool price that moves only by swaps.
fn config_file(shared: &Shared) -> PathBuf {
    let store = match shared.backend {
        Backend::Embedded => String::new(),
        Backend::Production => format!(
            "[store]\nbackend = \"postgres\"\n\n[postgres]\nurl = \"{POSTGRES}\"\nschema = \"{}\"\n",
            shared.name
        ),
    };
    let text = format!(
        "data_dir = {:?}\n\n[venues]\ndrift_bps = 0.0\nmean_reversion = 0.0\n\n{store}",
        shared.dir.path().join("data").display().to_string()
    );
    let path = shared.dir.path().join("chain.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn configs_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs"))
}

fn load(file: &Path) -> Config {
    Sources {
        profile: "bench".into(),
        config_dir: Some(configs_dir()),
        files: vec![file.to_path_buf()],
        env: false,
    }
    .load()
    .expect("the test config loads")
}

/// Runs `swapline chain ARGS` on the test's config; answers stdout.
fn cli(shared: &Shared, file: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_swapline"))
        .args(["--profile", "bench", "--config-dir"])
        .arg(configs_dir())
        .arg("--config")
        .arg(file)
        .arg("chain")
        .args(args)
        .current_dir(shared.dir.path())
        .env_remove("SWAPLINE_PROFILE")
        .output()
        .expect("running swapline");
    assert!(
        output.status.success(),
        "swapline chain {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn json(text: &str) -> Vec<Value> {
    serde_json::from_str::<Value>(text)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        .as_array()
        .expect("a JSON array")
        .clone()
}

fn units(value: &Value) -> u128 {
    value.as_str().expect("amounts are strings").parse().unwrap()
}

async fn transaction(
    chain: &dyn ChainRpc,
    order: OrderId,
    leg: u32,
    sell_sol: bool,
    amount_in: u128,
    min_out: u128,
) -> Transaction {
    let (token_in, token_out) = if sell_sol { ("SOL", "USDC") } else { ("USDC", "SOL") };
    Transaction::sign(Unsigned {
        order_id: order,
        leg,
        venue: "raydium".into(),
        token_in: token_in.into(),
        token_out: token_out.into(),
        amount_in,
        min_amount_out: min_out,
        blockhash: chain.latest_blockhash().await.unwrap(),
        priority_fee: 20_000,
    })
}

async fn chain_txs_and_pools_show_what_landed(backend: Backend) {
    let shared = Shared::new(backend);
    let file = config_file(&shared);
    let config = load(&file);
    let store = app::chain_store(&config).await.unwrap();
    let chain = app::simulated_chain(&config, store, Arc::new(SystemClock)).unwrap();
    chain.slot().await.unwrap();
    let start = json(&cli(&shared, &file, &["pools", "--json"]));
    let pool = |pools: &[Value]| {
        pools
            .iter()
            .find(|p| p["pool"] == "raydium:SOL/USDC")
            .cloned()
            .expect("the raydium SOL/USDC pool")
    };
    let before = pool(&start);
    assert_eq!(before["swaps"], 0);

    let (twice, slipped, back) = (OrderId::new(), OrderId::new(), OrderId::new());
    let first = transaction(&*chain, twice, 0, true, 2 * ONE_SOL, 0).await;
    let mut second = transaction(&*chain, twice, 0, true, 2 * ONE_SOL, 0).await;
    while second.signature == first.signature {
        // Same slot, same blockhash: wait for the next one.
        tokio::time::sleep(Duration::from_millis(5)).await;
        second = transaction(&*chain, twice, 0, true, 2 * ONE_SOL, 0).await;
    }
    let sent = [
        first,
        second,
        transaction(&*chain, slipped, 0, true, ONE_SOL, u128::MAX).await,
        transaction(&*chain, back, 1, false, 300_000_000, 0).await,
    ];
    for tx in &sent {
        chain.send_transaction(tx).await.unwrap();
    }
    let signatures: Vec<String> = sent.iter().map(|t| t.signature.clone()).collect();
    let mut statuses = Vec::new();
    for _ in 0..2_000 {
        statuses = chain.signature_statuses(&signatures).await.unwrap();
        if statuses.iter().all(Option::is_some) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(statuses.iter().all(Option::is_some), "all landed: {statuses:?}");

    let txs = json(&cli(&shared, &file, &["txs", "--json"]));
    assert_eq!(txs.len(), 4, "{txs:?}");
    for (tx, status) in sent.iter().zip(&statuses) {
        let row = txs.iter().find(|r| r["signature"] == tx.signature.as_str()).unwrap();
        let status = status.as_ref().unwrap();
        assert_eq!(row["orderId"], tx.order_id.to_string());
        assert_eq!(row["leg"], tx.leg);
        assert_eq!(row["blockhash"], tx.blockhash.as_str());
        assert_eq!(row["lastValidSlot"], tx.last_valid_slot);
        assert_eq!(row["priorityFee"], 20_000);
        assert_eq!(row["landedSlot"], status.slot);
        let state = if status.executed() { "landed" } else { "failed" };
        assert_eq!(row["state"], state);
    }
    let slipped_row = txs.iter().find(|r| r["orderId"] == slipped.to_string()).unwrap();
    assert_eq!(slipped_row["error"]["code"], "slippage_exceeded");
    assert_eq!(slipped_row["amountOut"], Value::Null);
    assert_eq!(
        json(&cli(&shared, &file, &["txs", "--order", &twice.to_string(), "--json"])).len(),
        2,
        "two signatures of one leg: the chain landed both"
    );
    let table = cli(&shared, &file, &["txs"]);
    assert!(table.contains(&sent[0].signature) && table.contains("landed") && table.contains("failed"));
    assert!(table.trim_end().ends_with("4 transactions"), "{table}");

    // The pool moved by exactly the landed swaps.
    let landed = |sell: bool| -> (u128, u128) {
        txs.iter()
            .filter(|r| r["state"] == "landed" && (r["tokenIn"] == "SOL") == sell)
            .fold((0, 0), |(a, b), r| {
                (a + units(&r["amountIn"]), b + units(&r["amountOut"]))
            })
    };
    let ((sold, got_usdc), (paid_usdc, got_sol)) = (landed(true), landed(false));
    let after = pool(&json(&cli(&shared, &file, &["pools", "--json"])));
    assert_eq!(after["swaps"], 3);
    assert_eq!((units(&after["baseIn"]), units(&after["quoteOut"])), (sold, got_usdc));
    assert_eq!(
        (units(&after["quoteIn"]), units(&after["baseOut"])),
        (paid_usdc, got_sol)
    );
    assert_eq!(
        units(&after["reserveBase"]),
        units(&before["reserveBase"]) + sold - got_sol
    );
    assert_eq!(
        units(&after["reserveQuote"]),
        units(&before["reserveQuote"]) + paid_usdc - got_usdc
    );
    assert!(cli(&shared, &file, &["pools"]).contains("raydium:SOL/USDC"));
}

crate::on_both_backends!(chain_txs_and_pools_show_what_landed);

#[test]
fn an_order_that_is_not_an_id_is_refused_by_name() {
    let shared = Shared::new(Backend::Embedded);
    let file = config_file(&shared);
    let output = Command::new(env!("CARGO_BIN_EXE_swapline"))
        .args(["--profile", "bench", "--config-dir"])
        .arg(configs_dir())
        .arg("--config")
        .arg(&file)
        .args(["chain", "txs", "--order", "nope"])
        .current_dir(shared.dir.path())
        .env_remove("SWAPLINE_PROFILE")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--order: not an order id"));
}
