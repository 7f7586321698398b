//! Server-Sent Events: the order's events on `GET /api/orders/status/{id}`
//! with `Accept: text/event-stream`, live and resumed with `Last-Event-ID`.

use crate::harness::{Backend, Engine, sol_usdc};
use serde_json::Value;
use std::time::Duration;
use swapline::client;

const SLOW_VENUES: &str = r#"
[venues]
quote_latency = "300ms"

[chain]
land_slots = 30
"#;

/// One parsed SSE message: `id`, `event`, and `data` as JSON.
#[derive(Debug)]
struct Message {
    id: u64,
    event: String,
    data: Value,
}

/// Reads a whole SSE body (the server ends it after the terminal event),
/// within 60 s; answers its messages (`: ping` comments skipped).
async fn events(engine: &Engine, id: &str, headers: &[(&str, &str)]) -> Vec<Message> {
    let mut all = vec![("accept", "text/event-stream")];
    all.extend_from_slice(headers);
    let response = tokio::time::timeout(
        Duration::from_secs(60),
        client::request(&engine.url, "GET", &format!("/api/orders/status/{id}"), &all, None),
    )
    .await
    .expect("the event stream ended within 60 s")
    .unwrap();
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    assert_eq!(response.headers["content-type"], "text/event-stream");
    let text = String::from_utf8(response.body.to_vec()).unwrap();
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty() && !block.starts_with(':'))
        .map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|line| line.strip_prefix(&format!("{name}: ")))
                    .unwrap_or_else(|| panic!("no {name} in {block:?}"))
                    .to_owned()
            };
            Message {
                id: field("id").parse().unwrap(),
                event: field("event"),
                data: serde_json::from_str(&field("data")).unwrap(),
            }
        })
        .collect()
}

async fn sse_streams_an_order_live_and_resumes_after_last_event_id(backend: Backend) {
    let engine = Engine::start_on(backend, SLOW_VENUES);
    let id = engine.order(sol_usdc(1.0)).await;

    // Live, from the start: every event once, in order, to the terminal one.
    let live = events(&engine, &id, &[]).await;
    let ids: Vec<u64> = live.iter().map(|m| m.id).collect();
    assert_eq!(ids, (1..=live.len() as u64).collect::<Vec<_>>(), "{live:?}");
    let kinds: Vec<&str> = live.iter().map(|m| m.event.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"pending"));
    assert_eq!(kinds.last(), Some(&"confirmed"));
    for message in &live {
        assert_eq!(message.data["seq"], message.id);
        assert_eq!(message.data["type"], message.event.as_str());
        assert_eq!(message.data["orderId"], id.as_str());
    }

    // A reconnect after seq 3 gets the rest, and only the rest.
    let resumed = events(&engine, &id, &[("last-event-id", "3")]).await;
    let ids: Vec<u64> = resumed.iter().map(|m| m.id).collect();
    assert_eq!(ids, (4..=live.len() as u64).collect::<Vec<_>>());
    assert_eq!(resumed.last().map(|m| m.event.as_str()), Some("confirmed"));

    // At the terminal event: nothing more, and the stream ends.
    let last = live.len().to_string();
    assert!(events(&engine, &id, &[("last-event-id", &last)]).await.is_empty());

    let bad = client::request(
        &engine.url,
        "GET",
        &format!("/api/orders/status/{id}"),
        &[("accept", "text/event-stream"), ("last-event-id", "99")],
        None,
    )
    .await
    .unwrap();
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["code"], "invalid_since");

    // Without the header, the same path still answers the order as JSON.
    assert_eq!(engine.status(&id).await["status"], "confirmed");
}

crate::on_both_backends!(sse_streams_an_order_live_and_resumes_after_last_event_id);
