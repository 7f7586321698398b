//! Hostile strategies against the real binary: each is refused at start or
//! contained, fails only the order it routes (`code: "plugin_error"`, and
//! `error: "plugin_error: <reason>…"` naming the specific rule), and the
//! engine answers `/health` throughout. The engine compiles WAT text given
//! as a `.wasm` path, so each plugin is a few lines here.

use crate::harness::{Engine, assert_gapless, sol_usdc};
use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU32, Ordering},
};
use swapline::client;

/// A module that satisfies ABI v1 and runs `body` as `route`; `extra` adds
/// module fields (imports, data, functions). The input goes at 64 KiB, clear
/// of the answers at 2048.
fn plugin(body: &str, extra: &str) -> String {
    format!(
        r#"(module
  {extra}
  (memory (export "memory") 4)
  (func (export "swapline_abi_version") (result i32) i32.const 1)
  (func (export "alloc") (param i32) (result i32) i32.const 65536)
  (func (export "route") (param i32 i32) (result i64) {body}))"#
    )
}

/// The same module declaring ABI v2: the host hands it the flat input
/// (`swapline_abi::v2`) instead of JSON; every limit and answer check is the
/// same.
fn v2(module: String) -> String {
    let v1 = r#"(func (export "swapline_abi_version") (result i32) i32.const 1)"#;
    assert!(module.contains(v1));
    module.replacen(
        v1,
        r#"(func (export "swapline_abi_version") (result i32) i32.const 2)"#,
        1,
    )
}

/// A module that answers `answer` (bytes as WAT string text) from offset
/// 2048, declaring `len` bytes.
fn answering(answer: &str, len: u64) -> String {
    plugin(
        &format!("i64.const {}", (2048u64 << 32) | len),
        &format!(r#"(data (i32.const 2048) "{answer}")"#),
    )
}

/// A module that answers this JSON.
fn answering_json(json: &str) -> String {
    answering(&json.replace('"', "\\\""), json.len() as u64)
}

/// Writes the module, starts an engine on it with `plugins_toml` under
/// `[plugins]`, and returns both (the temp dir must outlive the engine).
fn start(module: &str, plugins_toml: &str) -> (Engine, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.wasm");
    std::fs::write(&path, module).unwrap();
    let engine = Engine::start(&format!(
        "[plugins]\n{plugins_toml}\n\n[pipelines.market]\nstrategy = {:?}\n",
        path.display().to_string()
    ));
    (engine, dir)
}

/// Runs one 1 SOL order and asserts it failed with `plugin_error` and an
/// error starting with `expected`; checks `/health` before and after.
async fn order_fails_with(engine: &Engine, expected: &str) {
    engine.assert_healthy().await;
    let id = engine.order(sol_usdc(1.0)).await;
    let stream = engine.follow(&id).await;
    assert_gapless(&stream);
    let failed = stream.events.last().unwrap();
    assert_eq!(failed["type"], "failed", "{:?}", stream.types());
    assert_eq!(failed["code"], "plugin_error");
    assert_eq!(failed["final"], true);
    let error = failed["error"].as_str().unwrap();
    assert!(error.starts_with(expected), "expected {expected:?}, got {error:?}");
    let order = engine.status(&id).await;
    assert_eq!(order["status"], "failed");
    assert_eq!(order["lastError"]["code"], "plugin_error");
    engine.assert_healthy().await;
}

async fn contained(module: &str, expected: &str) {
    let (engine, _dir) = start(module, "");
    order_fails_with(&engine, expected).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spinning_strategy_times_out_while_health_answers_and_the_slot_frees() {
    // Fuel enough for minutes: the wall-clock deadline must stop it.
    let (engine, _dir) = start(
        &plugin("(loop $l (br $l)) i64.const 0", ""),
        "deadline = \"300ms\"\nfuel = 1000000000000",
    );
    // Poll /health for as long as the spinner runs.
    let (done, answered) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU32::new(0)));
    let poller = {
        let (url, done, answered) = (engine.url.clone(), done.clone(), answered.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let health = client::get(&url, "/health").await.unwrap();
                assert_eq!(health.status, 200);
                answered.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
    };
    order_fails_with(&engine, "plugin_error: timeout: ran past the 300ms deadline").await;
    done.store(true, Ordering::Relaxed);
    poller.await.unwrap();
    assert!(answered.load(Ordering::Relaxed) >= 1);
    // The worker slot is free again: the next order is routed (and fails) too.
    order_fails_with(&engine, "plugin_error: timeout").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fuel_exhaustion_is_a_timeout_too() {
    let (engine, _dir) = start(
        &plugin("(loop $l (br $l)) i64.const 0", ""),
        "fuel = 100000\ndeadline = \"30s\"",
    );
    order_fails_with(&engine, "plugin_error: timeout: used all 100000 fuel").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_bomb_hits_the_memory_limit() {
    let body = "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable";
    contained(&plugin(body, ""), "plugin_error: memory_limit").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trap_is_a_trap() {
    contained(&plugin("unreachable", ""), "plugin_error: trap").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deep_recursion_is_a_stack_overflow_trap() {
    let recurse = "(func $deep (param i32) (result i32) (call $deep (i32.add (local.get 0) (i32.const 1))))";
    contained(
        &plugin("(drop (call $deep (i32.const 0))) i64.const 0", recurse),
        "plugin_error: trap: stack overflow",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_that_is_not_utf8_is_invalid_output() {
    contained(&answering(r"\ff\fe{}", 4), "plugin_error: invalid_output: not UTF-8").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_that_is_not_json_is_invalid_output() {
    contained(
        &answering_json("{\"ok\": [legs"),
        "plugin_error: invalid_output: not a PluginAnswer",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_answer_is_refused() {
    contained(&answering("{}", 2 << 20), "plugin_error: output_too_large").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_sending_more_than_the_order_is_an_amount_mismatch() {
    contained(
        &answering_json(r#"{"ok":{"legs":[{"venue":"raydium","amountIn":"2000000000"}]}}"#),
        "plugin_error: invalid_route: amount_mismatch",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_to_an_unknown_venue_is_refused() {
    contained(
        &answering_json(r#"{"ok":{"legs":[{"venue":"orca","amountIn":"1000000000"}]}}"#),
        "plugin_error: invalid_route: unknown_venue",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_min_amount_out_looser_than_the_slippage_is_refused() {
    contained(
        &answering_json(r#"{"ok":{"legs":[{"venue":"raydium","amountIn":"1000000000","minAmountOut":"1"}]}}"#),
        "plugin_error: invalid_route: min_out_too_loose",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_state_survives_from_one_order_to_the_next() {
    // Counts calls in a global and answers the count as its error code.
    let json = r#"{"error":{"code":"calls_0","message":"counted"}}"#;
    let digit = 2048 + json.find("_0").unwrap() + 1;
    let body = format!(
        "(global.set $calls (i32.add (global.get $calls) (i32.const 1)))
         (i32.store8 (i32.const {digit}) (i32.add (i32.const 48) (global.get $calls)))
         i64.const {}",
        (2048u64 << 32) | json.len() as u64
    );
    let extra = format!(
        r#"(global $calls (mut i32) (i32.const 0)) (data (i32.const 2048) "{}")"#,
        json.replace('"', "\\\"")
    );
    let (engine, _dir) = start(&plugin(&body, &extra), "");
    for _ in 0..3 {
        order_fails_with(&engine, "plugin_error: strategy_error: calls_1: counted").await;
    }
}

#[test]
fn a_forbidden_import_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wasi.wasm");
    let import = r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#;
    std::fs::write(&path, plugin("i64.const 0", import)).unwrap();
    let stderr = Engine::refused(&format!(
        "[pipelines.market]\nstrategy = {:?}\n",
        path.display().to_string()
    ));
    assert!(
        stderr.contains("import wasi_snapshot_preview1.fd_write is not allowed"),
        "{stderr}"
    );
}

#[test]
fn an_oversized_module_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.wasm");
    std::fs::write(&path, plugin("i64.const 0", "")).unwrap();
    let stderr = Engine::refused(&format!(
        "[plugins]\nmax_module_bytes = 100\n\n[pipelines.market]\nstrategy = {:?}\n",
        path.display().to_string()
    ));
    assert!(stderr.contains("over plugins.max_module_bytes = 100"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_v2_strategy_gets_the_flat_input_and_its_answer_is_checked_alike() {
    // Traps unless the input starts with the v2 magic "SWL2" (read as a
    // little-endian i32), then declines with a code of its own.
    let json = r#"{"error":{"code":"flat_input","message":"SWL2 seen"}}"#;
    let body = format!(
        "(if (i32.ne (i32.load (local.get 0)) (i32.const 0x324C5753)) (then unreachable)) i64.const {}",
        (2048u64 << 32) | json.len() as u64
    );
    let extra = format!(r#"(data (i32.const 2048) "{}")"#, json.replace('"', "\\\""));
    contained(
        &v2(plugin(&body, &extra)),
        "plugin_error: strategy_error: flat_input: SWL2 seen",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_v2_strategy_answering_garbage_is_invalid_output() {
    contained(
        &v2(answering_json("{\"ok\": [legs")),
        "plugin_error: invalid_output: not a PluginAnswer",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_v2_memory_bomb_hits_the_memory_limit() {
    let body = "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable";
    contained(&v2(plugin(body, "")), "plugin_error: memory_limit").await;
}
