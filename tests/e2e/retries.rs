//! Transient failures are retried with backoff; exhausted retries fail the
//! order for good.

use crate::harness::{Backend, Engine, assert_gapless, sol_usdc};

fn failing_first(attempts: u32) -> String {
    format!(
        r#"
[retry]
max_attempts = 3
backoff = "exponential"
initial = "20ms"
max_delay = "100ms"
jitter = "none"

[chain]
blockhash_validity_slots = 20

[chain.faults]
drop_first = {attempts}
"#
    )
}

async fn transient_failure_emits_execution_failed_and_retry_pending_then_confirms(backend: Backend) {
    let engine = Engine::start_on(backend, &failing_first(1));
    let id = engine.order(sol_usdc(1.0)).await;
    let stream = engine.follow(&id).await;
    assert_gapless(&stream);
    assert_eq!(
        stream.types(),
        [
            "pending",
            "routing",
            "routing",
            "building",
            "building",
            "submitted",
            "execution-failed",
            "retry-pending",
            "submitted",
            "confirmed"
        ]
    );
    let failed = &stream.events[6];
    assert_eq!(failed["transient"], true);
    assert_eq!(failed["retriesRemaining"], 2);
    assert!(failed["error"].is_string());
    let pending = &stream.events[7];
    assert_eq!(pending["delay"], 20);
    assert_eq!(pending["nextAttempt"], 2);
    let second = &stream.events[8];
    assert_eq!(
        (second["attempt"].as_u64(), second["progress"].as_u64()),
        (Some(2), Some(80))
    );
    assert_eq!(stream.close, 1000);
}

async fn exhausted_retries_fail_with_final_true(backend: Backend) {
    let engine = Engine::start_on(backend, &failing_first(5));
    let id = engine.order(sol_usdc(1.0)).await;
    let stream = engine.follow(&id).await;
    assert_gapless(&stream);
    let types = stream.types();
    assert_eq!(types.iter().filter(|t| **t == "submitted").count(), 3);
    assert_eq!(types.iter().filter(|t| **t == "retry-pending").count(), 2);
    assert_eq!(&types[types.len() - 2..], ["execution-failed", "failed"]);
    let last_attempt = &stream.events[stream.events.len() - 2];
    assert_eq!(last_attempt["retriesRemaining"], 0);
    let failed = stream.events.last().unwrap();
    assert_eq!(failed["final"], true);
    assert_eq!(failed["totalAttempts"], 3);
    assert_eq!(failed["progress"], 0);
    assert_eq!(failed["code"], "blockhash_expired");
    assert_eq!(stream.close, 1000);

    let order = swapline::client::get(&engine.url, &format!("/api/orders/status/{id}"))
        .await
        .unwrap()
        .json();
    assert_eq!(order["status"], "failed");
    assert_eq!(order["attempts"], 3);
    assert_eq!(order["lastError"]["code"], "blockhash_expired");
}

crate::on_both_backends!(
    transient_failure_emits_execution_failed_and_retry_pending_then_confirms,
    exhausted_retries_fail_with_final_true,
);
