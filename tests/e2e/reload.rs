//! Hot reload against the real binary: a strategy swap by SIGHUP or by a
//! changed file, without a restart; a bad new config or plugin is refused
//! and the old strategy keeps serving.

use crate::harness::{Engine, sol_usdc};
use serde_json::Value;

/// Runs one order to the end and returns the strategy that routed it.
async fn routed_by(engine: &Engine) -> Value {
    let id = engine.order(sol_usdc(1.0)).await;
    let stream = engine.follow(&id).await;
    assert_eq!(
        stream.events.last().unwrap()["type"],
        "confirmed",
        "{:?}",
        stream.events
    );
    engine.status(&id).await["strategy"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_swaps_the_strategy_named_in_the_config_without_a_restart() {
    let engine = Engine::start("[plugins]\nwatch_interval = \"0s\"\n\n[pipelines.market]\nstrategy = \"best-price\"\n");
    let before = routed_by(&engine).await;
    assert_eq!(before["name"], "best-price");

    engine.rewrite_config("[plugins]\nwatch_interval = \"0s\"\n\n[pipelines.market]\nstrategy = \"split\"\n");
    engine.hangup();
    engine.wait_for_log("strategies reloaded", 1).await;

    let after = routed_by(&engine).await;
    assert_eq!(after["name"], "split");
    assert_ne!(after["sha256"], before["sha256"]);
    assert_eq!(engine.log().matches("swapline listening").count(), 1, "no restart");
}

/// An ABI v1 module in WAT that answers "the whole order to raydium" for a
/// 1 SOL order; `tag` changes its bytes (and digest) without changing what it
/// does.
fn raydium_plugin(tag: &str) -> String {
    let json = r#"{"ok":{"legs":[{"venue":"raydium","amountIn":"1000000000"}],"reason":"TAG"}}"#.replace("TAG", tag);
    format!(
        r#"(module
  (memory (export "memory") 4)
  (data (i32.const 2048) "{}")
  (func (export "swapline_abi_version") (result i32) i32.const 1)
  (func (export "alloc") (param i32) (result i32) i32.const 65536)
  (func (export "route") (param i32 i32) (result i64) i64.const {}))"#,
        json.replace('"', "\\\""),
        (2048u64 << 32) | json.len() as u64
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_swapped_plugin_file_is_picked_up_by_the_watcher_and_a_broken_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mine.wasm");
    std::fs::write(&path, raydium_plugin("version A")).unwrap();
    let engine = Engine::start(&format!(
        "[plugins]\nwatch_interval = \"100ms\"\n\n[pipelines.market]\nstrategy = {:?}\n",
        path.display().to_string()
    ));
    let a = routed_by(&engine).await;
    assert_eq!(a["name"], "mine");

    std::fs::write(&path, raydium_plugin("version B")).unwrap();
    engine.wait_for_log("strategies reloaded", 1).await;
    let b = routed_by(&engine).await;
    assert_eq!(b["name"], "mine");
    assert_ne!(b["sha256"], a["sha256"], "the order ran on the new module");

    // A module importing WASI is refused; version B keeps serving.
    std::fs::write(
        &path,
        "(module (import \"wasi_snapshot_preview1\" \"fd_write\" (func)))",
    )
    .unwrap();
    engine.wait_for_log("reload refused", 1).await;
    assert!(
        engine
            .log()
            .contains("import wasi_snapshot_preview1.fd_write is not allowed")
    );
    assert_eq!(routed_by(&engine).await["sha256"], b["sha256"]);
    engine.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_new_config_is_refused_with_its_reason_and_the_old_one_serves() {
    let engine = Engine::start("[plugins]\nwatch_interval = \"0s\"\n");
    let before = routed_by(&engine).await;

    engine.rewrite_config(
        "[plugins]\nwatch_interval = \"0s\"\n\n[pipelines.market]\nstrategy = \"split\"\n[pipelines.market.params]\nsteps = -1\n",
    );
    engine.hangup();
    engine.wait_for_log("reload refused", 1).await;
    assert!(
        engine.log().contains("pipelines.market.params.steps"),
        "{}",
        engine.log()
    );
    assert_eq!(routed_by(&engine).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_in_flight_finishes_on_the_strategy_it_started_with() {
    // Quotes take 1.5 s: the reload lands while the first order is quoting.
    let venues = "[venues]\nquote_latency = \"1500ms\"\nquote_jitter = \"0s\"\n";
    let engine = Engine::start(&format!("[plugins]\nwatch_interval = \"0s\"\n\n{venues}"));
    let id = engine.order(sol_usdc(1.0)).await;
    let mut socket = engine.watch(&id, None).await;
    loop {
        match socket.next().await.unwrap() {
            swapline::client::Message::Text(text) if text.contains("\"routing\"") => break,
            swapline::client::Message::Text(_) => {}
            other => panic!("closed before routing: {other:?}"),
        }
    }
    engine.rewrite_config(&format!(
        "[plugins]\nwatch_interval = \"0s\"\n\n{venues}\n[pipelines.market]\nstrategy = \"split\"\n"
    ));
    engine.hangup();
    engine.wait_for_log("strategies reloaded", 1).await;

    let rest = crate::harness::read_stream(&mut socket).await;
    assert_eq!(rest.events.last().unwrap()["type"], "confirmed");
    assert_eq!(engine.status(&id).await["strategy"]["name"], "best-price");
    assert_eq!(routed_by(&engine).await["name"], "split");
}
