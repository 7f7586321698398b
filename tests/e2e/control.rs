//! Order control as a client sees it: cancel before and after submission,
//! deadlines (`expiresAt`), dead-letter filters and retries linked both
//! ways, on both backends.

use crate::harness::{Backend, Engine, sol_usdc};
use serde_json::{Value, json};
use std::time::Duration;
use swapline::client;

/// Quotes and landings slow enough that a client acts while an order is
/// still routing, or while it is submitted.
const SLOW_VENUES: &str = r#"
[venues]
quote_latency = "1500ms"
quote_jitter = "0s"

[chain]
land_slots = 150
"#;

async fn post(engine: &Engine, path: &str) -> client::Response {
    client::post_json(&engine.url, path, &json!({})).await.unwrap()
}

/// Polls the order until `done` holds (at most 30 s); answers the order.
async fn until(engine: &Engine, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let order = engine.status(id).await;
        if done(&order) {
            return order;
        }
        assert!(tokio::time::Instant::now() < deadline, "order {id} stuck at {order}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn event_types(engine: &Engine, id: &str) -> Vec<String> {
    let events = client::get(&engine.url, &format!("/api/orders/{id}/events"))
        .await
        .unwrap();
    assert_eq!(events.status, 200);
    events.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

async fn cancel_before_submission_wins_and_after_it_is_refused(backend: Backend) {
    let engine = Engine::start_on(backend, SLOW_VENUES);

    // Still routing (quotes take 1.5 s): the cancel wins.
    let early = engine.order(sol_usdc(1.0)).await;
    let cancelled = post(&engine, &format!("/api/orders/{early}/cancel")).await;
    assert_eq!(cancelled.status, 200, "{}", String::from_utf8_lossy(&cancelled.body));
    assert_eq!(cancelled.json()["status"], "cancelled");
    let again = post(&engine, &format!("/api/orders/{early}/cancel")).await;
    assert_eq!(again.status, 200, "cancelling a cancelled order answers the order");
    assert_eq!(again.json()["status"], "cancelled");

    // Submitted (landing takes 1.5 s): too late to cancel.
    let late = engine.order(sol_usdc(1.0)).await;
    until(&engine, &late, |o| o["status"] == "submitted").await;
    let refused = post(&engine, &format!("/api/orders/{late}/cancel")).await;
    assert_eq!(refused.status, 409);
    assert_eq!(refused.json()["error"]["code"], "cannot_cancel");
    until(&engine, &late, |o| o["status"] == "confirmed").await;

    // By now the worker has had its turn at the cancelled order: it acked
    // the job and executed nothing.
    let order = engine.status(&early).await;
    assert_eq!(order["status"], "cancelled");
    let types = event_types(&engine, &early).await;
    assert_eq!(types.last().map(String::as_str), Some("cancelled"), "{types:?}");
    assert!(!types.iter().any(|t| t == "submitted"), "{types:?}");
    assert_eq!(engine.shared.landed_swaps(&early).await, 0);
    assert!(engine.shared.landed_swaps(&late).await > 0);

    let missing = post(&engine, &format!("/api/orders/{}/cancel", uuid::Uuid::new_v4())).await;
    assert_eq!(missing.status, 404);
}

async fn a_deadline_in_the_past_fails_deadline_exceeded_and_never_swaps(backend: Backend) {
    let engine = Engine::start_on(backend, "");
    let mut body = sol_usdc(1.0);
    body["expiresAt"] = json!("2020-01-01T00:00:00Z");
    let id = engine.order(body).await;
    let order = until(&engine, &id, |o| o["status"] == "failed").await;
    assert_eq!(order["lastError"]["code"], "deadline_exceeded");
    assert_eq!(order["expiresAt"], "2020-01-01T00:00:00.000Z");
    assert!(!event_types(&engine, &id).await.iter().any(|t| t == "submitted"));
    assert_eq!(engine.shared.landed_swaps(&id).await, 0);

    // A deadline well ahead changes nothing.
    let mut body = sol_usdc(1.0);
    body["expiresAt"] = json!("2999-01-01T00:00:00Z");
    let timely = engine.order(body).await;
    until(&engine, &timely, |o| o["status"] == "confirmed").await;

    // The dead letters: failed orders by failure code.
    let list = client::get(&engine.url, "/api/orders?status=failed&code=deadline_exceeded")
        .await
        .unwrap();
    assert_eq!(list.status, 200);
    let ids: Vec<String> = list.json()["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, vec![id.clone()]);
    let none = client::get(&engine.url, "/api/orders?status=failed&code=no_quotes")
        .await
        .unwrap();
    assert_eq!(none.json()["orders"], json!([]));

    let bad = client::post_json(
        &engine.url,
        "/api/orders/execute",
        &json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": 1, "expiresAt": "tomorrow"}),
    )
    .await
    .unwrap();
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["code"], "invalid_expires_at");
}

async fn a_retry_is_a_new_order_linked_both_ways(backend: Backend) {
    let engine = Engine::start_on(backend, "");
    let mut body = sol_usdc(2.0);
    body["expiresAt"] = json!("2020-01-01T00:00:00Z");
    let failed = engine.order(body).await;
    until(&engine, &failed, |o| o["status"] == "failed").await;

    let retried = post(&engine, &format!("/api/orders/{failed}/retry")).await;
    assert_eq!(retried.status, 201, "{}", String::from_utf8_lossy(&retried.body));
    let retry = retried.json()["orderId"].as_str().unwrap().to_owned();
    assert_ne!(retry, failed);
    let order = until(&engine, &retry, |o| o["status"] == "confirmed").await;
    assert_eq!(order["retryOf"], failed.as_str());
    assert_eq!(order["amount"], "2");
    assert_eq!(order["expiresAt"], Value::Null, "the old deadline is not carried over");
    let old = engine.status(&failed).await;
    assert_eq!(old["retriedBy"], retry.as_str());
    assert_eq!(old["status"], "failed");

    let twice = post(&engine, &format!("/api/orders/{failed}/retry")).await;
    assert_eq!(twice.status, 409);
    assert_eq!(twice.json()["error"]["code"], "already_retried");
    let confirmed = post(&engine, &format!("/api/orders/{retry}/retry")).await;
    assert_eq!(confirmed.status, 409);
    assert_eq!(confirmed.json()["error"]["code"], "cannot_retry");
}

/// `swapline orders` against a running engine with auth required: a
/// trader's key cancels and retries its own orders only; an `admin` key
/// lists the dead letters of every key and acts on any order.
#[tokio::test(flavor = "multi_thread")]
async fn the_orders_cli_lists_dead_letters_cancels_and_retries_with_the_api_rules() {
    let engine = Engine::start(&format!("[auth]\nrequired = true\n{SLOW_VENUES}"));
    let key = |name: &str, scopes: &str| {
        let output = engine.cli(&["keys", "create", "--name", name, "--scopes", scopes, "--json"]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let created: Value = serde_json::from_slice(&output.stdout).unwrap();
        created["secret"].as_str().unwrap().to_owned()
    };
    let (trader, other, admin) = (
        key("desk", "trade,read"),
        key("other", "trade,read"),
        key("ops", "admin"),
    );
    let post_as = async |secret: &str, body: Value| {
        let auth = format!("Bearer {secret}");
        let bytes = bytes::Bytes::from(serde_json::to_vec(&body).unwrap());
        let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
        let response = client::request(&engine.url, "POST", "/api/orders/execute", &headers, Some(bytes))
            .await
            .unwrap();
        assert_eq!(response.status, 201);
        response.json()["orderId"].as_str().unwrap().to_owned()
    };
    let orders = |secret: &str, args: &[&str]| {
        let mut all = vec!["orders", "--url", engine.url.as_str(), "--api-key", secret];
        all.extend_from_slice(args);
        engine.cli(&all)
    };
    let mut late = sol_usdc(1.0);
    late["expiresAt"] = json!("2020-01-01T00:00:00Z");
    let dead = post_as(&trader, late).await;
    until_as(&engine, &admin, &dead, "failed").await;
    let waiting = post_as(&trader, sol_usdc(1.0)).await;

    // Another key's order is not there for it (404), as over HTTP.
    let refused = orders(&other, &["cancel", &waiting]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("order_not_found"));
    let cancelled = orders(&trader, &["cancel", &waiting]);
    assert!(
        cancelled.status.success(),
        "{}",
        String::from_utf8_lossy(&cancelled.stderr)
    );

    let listed = orders(
        &admin,
        &["--json", "list", "--status", "failed", "--code", "deadline_exceeded"],
    );
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let ids: Vec<&str> = listed["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [dead.as_str()]);

    let retried = orders(&admin, &["--json", "retry", &dead]);
    assert!(retried.status.success(), "{}", String::from_utf8_lossy(&retried.stderr));
    let retry: Value = serde_json::from_slice(&retried.stdout).unwrap();
    let retry = retry["orderId"].as_str().unwrap().to_owned();
    let shown = orders(&trader, &["--json", "show", &retry]);
    assert!(shown.status.success(), "the retry keeps the original owner");
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["retryOf"], dead.as_str());
    let text = orders(&admin, &["show", &dead]);
    assert!(String::from_utf8_lossy(&text.stdout).contains(&format!("retriedBy: {retry}")));
}

/// `orders.default_ttl` gives a deadline to orders whose request has none;
/// a request's own `expiresAt` wins.
#[tokio::test(flavor = "multi_thread")]
async fn the_default_ttl_applies_only_when_the_request_gives_no_deadline() {
    let engine = Engine::start("[orders]\ndefault_ttl = \"1ms\"\n");
    let defaulted = engine.order(sol_usdc(1.0)).await;
    let order = until(&engine, &defaulted, |o| o["status"] == "failed").await;
    assert_eq!(order["lastError"]["code"], "deadline_exceeded");
    assert!(order["expiresAt"].is_string());
    assert_eq!(engine.shared.landed_swaps(&defaulted).await, 0);
    let mut body = sol_usdc(1.0);
    body["expiresAt"] = json!("2999-01-01T00:00:00Z");
    let own = engine.order(body).await;
    until(&engine, &own, |o| o["status"] == "confirmed").await;
}

/// Polls an order with a key until it has `status` (at most 30 s).
async fn until_as(engine: &Engine, secret: &str, id: &str, status: &str) {
    let auth = format!("Bearer {secret}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let response = client::request(
            &engine.url,
            "GET",
            &format!("/api/orders/status/{id}"),
            &[("authorization", auth.as_str())],
            None,
        )
        .await
        .unwrap();
        if response.json()["status"] == status {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "order {id} never became {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

crate::on_both_backends!(
    cancel_before_submission_wins_and_after_it_is_refused,
    a_deadline_in_the_past_fails_deadline_exceeded_and_never_swaps,
    a_retry_is_a_new_order_linked_both_ways,
);
