//! Built-in strategies, fallback chains and params checked at load, against
//! the real binary; each order records the strategy that routed it.

use crate::harness::{Engine, sol_usdc};

/// A module that satisfies ABI v1 and traps in `route`.
const TRAPPER: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "swapline_abi_version") (result i32) i32.const 1)
  (func (export "alloc") (param i32) (result i32) i32.const 1024)
  (func (export "route") (param i32 i32) (result i64) unreachable))"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_fallback_chain_routes_with_the_next_strategy_and_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let trapper = dir.path().join("trapper.wasm");
    std::fs::write(&trapper, TRAPPER).unwrap();
    let engine = Engine::start(&format!(
        "[pipelines.market]\nstrategy = [{:?}, \"best-price\"]\n",
        trapper.display().to_string()
    ));
    let id = engine.order(sol_usdc(1.0)).await;
    let stream = engine.follow(&id).await;
    assert_eq!(
        stream.events.last().unwrap()["type"],
        "confirmed",
        "{:?}",
        stream.events
    );
    let order = engine.status(&id).await;
    assert_eq!(order["strategy"]["name"], "best-price");
    assert_eq!(order["strategy"]["sha256"].as_str().unwrap().len(), 64);
    let reason = order["route"]["reason"].as_str().unwrap();
    assert!(reason.contains("fallback after trapper failed: trap"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn split_routes_a_large_order_over_both_venues() {
    // Two constant-product pools at the same price, one twice as deep: a
    // tenth of the deeper pool's reserve is worth splitting 2:1.
    let pool = |venue: &str, sol: u32| {
        format!(
            "[[venues.pools]]\nkind = \"constant_product\"\nvenue = {venue:?}\nbase = \"SOL\"\nquote = \"USDC\"\n\
             reserve_base = \"{sol}\"\nreserve_quote = \"{}\"\nfee_bps = 25\n",
            sol * 150
        )
    };
    let engine = Engine::start(&format!(
        "[pipelines.market]\nstrategy = \"split\"\n[pipelines.market.params]\nsteps = 30\n\n{}\n{}",
        pool("raydium", 50_000),
        pool("orca", 25_000)
    ));
    let id = engine.order(sol_usdc(5_000.0)).await;
    let stream = engine.follow(&id).await;
    assert_eq!(
        stream.events.last().unwrap()["type"],
        "confirmed",
        "{:?}",
        stream.events
    );
    let order = engine.status(&id).await;
    assert_eq!(order["strategy"]["name"], "split");
    let legs = order["route"]["legs"].as_array().unwrap();
    assert_eq!(legs.len(), 2, "{order}");
    assert_eq!(order["dex"], "orca+raydium", "{order}");
    assert_eq!(legs[0]["dex"], "orca");
    assert_eq!(legs[0]["amountIn"], "1666666666660", "ten of the thirty chunks");
}

#[tokio::test(flavor = "multi_thread")]
async fn reliability_weighted_routes_by_the_stats_the_pipeline_passes() {
    let engine = Engine::start("[pipelines.market]\nstrategy = \"reliability-weighted\"\n");
    let mut reasons = Vec::new();
    for _ in 0..2 {
        let id = engine.order(sol_usdc(1.0)).await;
        let stream = engine.follow(&id).await;
        assert_eq!(
            stream.events.last().unwrap()["type"],
            "confirmed",
            "{:?}",
            stream.events
        );
        let order = engine.status(&id).await;
        assert_eq!(order["strategy"]["name"], "reliability-weighted");
        reasons.push(order["route"]["reason"].as_str().unwrap().to_owned());
    }
    // The first order saw quote latencies only; the second also the first
    // order's successful execution on the same venue.
    assert!(reasons[0].contains("0.0% failed of 0,"), "{reasons:?}");
    assert!(reasons[1].contains("0.0% failed of 1,"), "{reasons:?}");
}

#[test]
fn bad_params_are_refused_at_start_naming_the_key() {
    let stderr = Engine::refused(
        "[pipelines.market]\nstrategy = [\"split\", \"best-price\"]\n[pipelines.market.params]\nsteps = 0\nstpes = 3\n",
    );
    assert!(
        stderr.contains("pipelines.market.params.steps: 0 is less than the minimum of 1"),
        "{stderr}"
    );
    assert!(
        stderr.contains("pipelines.market.params.stpes: unknown parameter"),
        "{stderr}"
    );
}

#[test]
fn a_sidecar_schema_checks_params_of_a_module_file() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("trapper.wasm");
    std::fs::write(&plugin, TRAPPER).unwrap();
    std::fs::write(
        dir.path().join("trapper.schema.json"),
        r#"{"type":"object","properties":{"depth":{"type":"integer"}},"additionalProperties":false}"#,
    )
    .unwrap();
    let stderr = Engine::refused(&format!(
        "[pipelines.market]\nstrategy = {:?}\n[pipelines.market.params]\ndepth = \"deep\"\n",
        plugin.display().to_string()
    ));
    assert!(stderr.contains("pipelines.market.params.depth"), "{stderr}");
    assert!(stderr.contains("trapper's params schema"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn compiled_modules_are_cached_under_the_data_dir_across_restarts() {
    let mut engine = Engine::start("");
    let cache = engine.data_dir().join("plugin-cache");
    let entries = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = entries();
    assert_eq!(before.len(), 1, "best-price compiled once: {before:?}");
    assert!(before[0].ends_with(".cwasm"));
    engine.restart();
    assert_eq!(entries(), before, "the restart reused the entry");
    let id = engine.order(sol_usdc(1.0)).await;
    assert_eq!(engine.follow(&id).await.events.last().unwrap()["type"], "confirmed");
}

/// `best-price` as the ABI v1 SDK built it (JSON input): a module built
/// before ABI v2 keeps loading and routing.
const BEST_PRICE_V1: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/e2e/fixtures/best-price-v1.wasm");

#[tokio::test(flavor = "multi_thread")]
async fn a_v1_module_file_still_routes_orders() {
    let engine = Engine::start(&format!("[pipelines.market]\nstrategy = {BEST_PRICE_V1:?}\n"));
    let id = engine.order(sol_usdc(1.0)).await;
    let stream = engine.follow(&id).await;
    assert_eq!(
        stream.events.last().unwrap()["type"],
        "confirmed",
        "{:?}",
        stream.events
    );
    let order = engine.status(&id).await;
    assert_eq!(order["strategy"]["name"], "best-price-v1");
    let reason = order["route"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("best output "), "{reason}");
}
