//! Nothing acknowledged is lost when the process dies, and nothing swaps
//! twice.

use crate::harness::{Backend, Engine, assert_gapless, read_stream, sol_usdc};
use swapline::client::Message;

async fn killed_mid_order_finishes_exactly_once_after_restart(backend: Backend) {
    let mut engine = Engine::start_on(
        backend,
        r#"
[chain]
land_slots = 150
"#,
    );
    let id = engine.order(sol_usdc(3.0)).await;
    let mut socket = engine.watch(&id, None).await;
    // Wait until the order is at the venue, then pull the plug.
    loop {
        match socket.next().await.unwrap() {
            Message::Text(text) if text.contains(r#""type":"submitted""#) => break,
            Message::Text(_) => {}
            Message::Close(code, _) => panic!("closed with {code} before submitting"),
        }
    }
    engine.kill_9();

    engine.restart();
    let mut socket = engine.watch(&id, Some(0)).await;
    let stream = read_stream(&mut socket).await;
    assert_gapless(&stream);
    let types = stream.types();
    assert_eq!(types.iter().filter(|t| **t == "confirmed").count(), 1, "{types:?}");
    assert_eq!(types.last(), Some(&"confirmed"));
    assert_eq!(stream.close, 1000);
    let submitted: Vec<u64> = stream
        .events
        .iter()
        .filter(|e| e["type"] == "submitted")
        .map(|e| e["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(
        submitted,
        [1],
        "the interrupted attempt resumes as itself, polling the transaction it recorded"
    );

    let swaps = engine.shared.landed_swaps(&id).await;
    assert_eq!(swaps, 1, "the venue executed the order exactly once");
}

async fn orders_accepted_before_a_crash_are_run_after_restart(backend: Backend) {
    let mut engine = Engine::start_on(
        backend,
        r#"
[worker]
concurrency = 1

[chain]
land_slots = 30
"#,
    );
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(engine.order(sol_usdc(0.5)).await);
    }
    engine.kill_9();
    engine.restart();
    for id in &ids {
        let stream = engine.follow(id).await;
        assert_gapless(&stream);
        assert_eq!(stream.types().last(), Some(&"confirmed"), "{id}");
    }
}

crate::on_both_backends!(
    killed_mid_order_finishes_exactly_once_after_restart,
    orders_accepted_before_a_crash_are_run_after_restart,
);
