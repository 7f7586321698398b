//! A hostile strategy fails the order it routes, never the engine.

use crate::harness::{Engine, assert_gapless, sol_usdc};

/// A module that satisfies ABI v1 and then loops forever in `route`.
const SPINNER: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "swapline_abi_version") (result i32) i32.const 1)
  (func (export "alloc") (param i32) (result i32) i32.const 1024)
  (func (export "route") (param i32 i32) (result i64) (loop $l (br $l)) i64.const 0))"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_spinning_strategy_fails_the_order_with_plugin_error_and_the_engine_lives_on() {
    let dir = tempfile::tempdir().unwrap();
    // The engine compiles WAT text as well as binary wasm.
    let plugin = dir.path().join("spinner.wasm");
    std::fs::write(&plugin, SPINNER).unwrap();
    let engine = Engine::start(&format!(
        r#"
[plugins]
deadline = "100ms"

[pipelines.market]
strategy = {:?}
"#,
        plugin.display().to_string()
    ));
    let id = engine.order(sol_usdc(1.0)).await;
    let stream = engine.follow(&id).await;
    assert_gapless(&stream);
    let failed = stream.events.last().unwrap();
    assert_eq!(failed["type"], "failed");
    assert_eq!(failed["code"], "plugin_error");
    assert!(
        failed["error"].as_str().unwrap().starts_with("plugin_error: timeout"),
        "{failed}"
    );
    assert_eq!(failed["final"], true);

    engine.assert_healthy().await;
    // The worker slot is free again: the next order is routed too.
    let again = engine.order(sol_usdc(1.0)).await;
    assert_eq!(
        engine.follow(&again).await.events.last().unwrap()["code"],
        "plugin_error"
    );
}
