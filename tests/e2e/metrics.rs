//! `/metrics`: parseable, complete, and the stuck-order gauge tracks orders
//! that stop moving.

use crate::harness::{Backend, Engine, sol_usdc};
use std::{collections::BTreeMap, path::Path, time::Duration};
use swapline::client;

/// The metric names listed in `ops/metrics.md`.
fn documented() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/metrics.md");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .filter(|name| name.starts_with("swapline_"))
        .map(str::to_owned)
        .collect()
}

/// A strict-enough parser of the Prometheus text format: every sample line
/// is `name{labels} value`, every `# TYPE` names a known type; returns the
/// families (base names) with their type.
fn parse(text: &str) -> BTreeMap<String, String> {
    let mut families = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            families.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') {
            assert!(line.starts_with("# HELP "), "unknown comment: {line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "{line}"
        );
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
        }
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|b| families.get(*b).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(families.contains_key(base), "sample without # TYPE: {line}");
    }
    families
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_and_name_every_documented_metric_after_an_order() {
    let engine = Engine::start_on(Backend::Production, "[monitor]\ninterval = \"200ms\"\n");
    let id = engine.order(sol_usdc(1.0)).await;
    let stream = engine.follow(&id).await;
    assert_eq!(stream.types().last(), Some(&"confirmed"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let response = client::get(&engine.url, "/metrics").await.unwrap();
    assert_eq!(response.status, 200);
    assert!(
        response.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(response.body.to_vec()).unwrap();
    let families = parse(&text);
    let missing: Vec<String> = documented().into_iter().filter(|m| !families.contains_key(m)).collect();
    assert!(missing.is_empty(), "documented but not exported: {missing:?}\n{text}");
    assert!(
        text.contains(r#"swapline_orders_finished_total{status="confirmed""#),
        "{text}"
    );
    assert!(!text.contains(&id), "order ids never appear in metrics");
}

fn gauge(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn stuck_order_gauge_rises_while_an_order_stalls_and_falls_when_it_finishes() {
    let engine = Engine::start(
        r#"
[monitor]
interval = "100ms"
stuck_after = "1s"

[chain]
land_slots = 400
"#,
    );
    let id = engine.order(sol_usdc(1.0)).await;
    let metrics =
        || async { String::from_utf8(client::get(&engine.url, "/metrics").await.unwrap().body.to_vec()).unwrap() };
    let mut seen = 0.0;
    for _ in 0..40 {
        seen = gauge(&metrics().await, "swapline_orders_stuck");
        if seen >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, 1.0, "the submitted order sat without events past stuck_after");
    assert!(gauge(&metrics().await, "swapline_orders_stuck_oldest_seconds") >= 1.0);
    assert_eq!(engine.follow(&id).await.types().last(), Some(&"confirmed"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(gauge(&metrics().await, "swapline_orders_stuck"), 0.0);
}
