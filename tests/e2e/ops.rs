//! The ops kit keeps to the metrics contract: every query in the Grafana
//! dashboard and the alert rules names a metric listed in `ops/metrics.md`,
//! and promtool accepts the Prometheus config, the rules and their unit
//! tests. No engine runs here.

use serde_json::Value;
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

const METRICS: &str = "ops/metrics.md";
const DASHBOARD: &str = "ops/grafana/swapline.json";
const PROMETHEUS: &str = "ops/prometheus/prometheus.yml";
const ALERTS: &str = "ops/prometheus/alerts.yml";
const ALERTS_TEST: &str = "ops/prometheus/alerts_test.yml";

#[test]
fn every_dashboard_query_names_an_exported_metric() {
    let dashboard = dashboard();
    let mut queries = Vec::new();
    collect_exprs(&dashboard, &mut queries);
    assert!(!queries.is_empty(), "{DASHBOARD} has no `expr` at all");
    assert_only_contract_metrics(DASHBOARD, &queries);
}

#[test]
fn dashboard_has_a_title_and_panels_that_each_query_prometheus() {
    let dashboard = dashboard();
    let title = dashboard["title"].as_str().unwrap_or_default();
    assert!(!title.trim().is_empty(), "{DASHBOARD} has no title");
    let panels = dashboard["panels"].as_array().map_or(&[][..], Vec::as_slice);
    assert!(!panels.is_empty(), "{DASHBOARD} has no panels");

    // Rows may hold their panels (when collapsed); look inside them too.
    let mut graphs = 0;
    let mut stack: Vec<&Value> = panels.iter().collect();
    while let Some(panel) = stack.pop() {
        if panel["type"] == "row" {
            stack.extend(panel["panels"].as_array().into_iter().flatten());
            continue;
        }
        graphs += 1;
        let name = panel["title"].as_str().unwrap_or("(untitled)");
        let targets = panel["targets"].as_array().map_or(&[][..], Vec::as_slice);
        assert!(!targets.is_empty(), "panel {name:?} has no targets");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(!expr.trim().is_empty(), "panel {name:?} has a target without a query");
        }
    }
    assert!(graphs > 0, "{DASHBOARD} has only rows");
}

#[test]
fn every_alert_query_names_an_exported_metric() {
    let text = read(ALERTS);
    let queries = yaml_exprs(&text);
    let rules = text
        .lines()
        .filter(|line| {
            let line = line.trim_start().trim_start_matches("- ");
            line.starts_with("alert:") || line.starts_with("record:")
        })
        .count();
    assert!(rules > 0, "{ALERTS} has no rules");
    assert_eq!(
        queries.len(),
        rules,
        "{ALERTS}: found {} `expr:` for {rules} rules; queries read: {queries:#?}",
        queries.len()
    );
    assert_only_contract_metrics(ALERTS, &queries);
}

#[test]
fn every_alert_has_a_severity_a_summary_a_description_and_a_unit_test() {
    let rules = read(ALERTS);
    let tests = read(ALERTS_TEST);
    let alerts = alert_blocks(&rules);
    assert!(!alerts.is_empty(), "{ALERTS} has no alerts");
    for (name, block) in alerts {
        for key in ["severity:", "summary:", "description:"] {
            assert!(
                block.lines().any(|line| line.trim_start().starts_with(key)),
                "alert {name} in {ALERTS} has no `{key}`"
            );
        }
        let expected = format!("alertname: {name}");
        let tested = tests
            .lines()
            .any(|line| line.trim_start().trim_start_matches("- ") == expected);
        assert!(tested, "alert {name} has no test in {ALERTS_TEST}");
    }
}

#[test]
fn prometheus_config_passes_promtool_check() {
    promtool(&["check", "config", PROMETHEUS]);
}

#[test]
fn alert_rules_pass_promtool_check() {
    promtool(&["check", "rules", ALERTS]);
}

#[test]
fn alert_rule_unit_tests_pass() {
    promtool(&["test", "rules", ALERTS_TEST]);
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    let full = repo_root().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()))
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD} is not valid JSON: {e}"))
}

/// Metric name → type, from the table of `ops/metrics.md`
/// (`| \`name\` | type | labels | meaning |`).
fn contract() -> BTreeMap<String, String> {
    let mut metrics = BTreeMap::new();
    for line in read(METRICS).lines() {
        // The labels cell may hold escaped pipes (`\|`); name and type come first.
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let [_, name, kind, ..] = cells.as_slice() else {
            continue;
        };
        let Some(name) = name.strip_prefix('`').and_then(|n| n.strip_suffix('`')) else {
            continue;
        };
        if name.starts_with("swapline_") {
            metrics.insert(name.to_owned(), (*kind).to_owned());
        }
    }
    assert!(!metrics.is_empty(), "no metric found in the table of {METRICS}");
    metrics
}

/// Fails, naming each offender, when a query uses a `swapline_*` name that the
/// contract does not list. A histogram is queried through its `_bucket`,
/// `_sum` and `_count` series.
fn assert_only_contract_metrics(file: &str, queries: &[String]) {
    let contract = contract();
    let mut unknown = Vec::new();
    for query in queries {
        for name in metric_names(query) {
            if !is_exported(&contract, name) {
                unknown.push(format!("{name} in `{query}`"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "{file} queries metrics that {METRICS} does not list:\n  {}",
        unknown.join("\n  ")
    );
}

fn is_exported(contract: &BTreeMap<String, String>, name: &str) -> bool {
    if contract.contains_key(name) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix)
            .and_then(|base| contract.get(base))
            .is_some_and(|kind| kind == "histogram")
    })
}

/// Every `swapline_[a-z0-9_]+` in `query` that starts an identifier.
fn metric_names(query: &str) -> Vec<&str> {
    const PREFIX: &str = "swapline_";
    let bytes = query.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut names = Vec::new();
    let mut from = 0;
    while let Some(found) = query[from..].find(PREFIX) {
        let start = from + found;
        let mut end = start + PREFIX.len();
        while end < bytes.len() && matches!(bytes[end], b'a'..=b'z' | b'0'..=b'9' | b'_') {
            end += 1;
        }
        let starts_identifier = start == 0 || !is_ident(bytes[start - 1]);
        if starts_identifier && end > start + PREFIX.len() {
            names.push(&query[start..end]);
        }
        from = end;
    }
    names
}

/// Every string under an `expr` key, at any depth (panels, rows, targets).
fn collect_exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    _ => collect_exprs(inner, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_exprs(item, out)),
        _ => {}
    }
}

/// The value of every `expr:` key in a YAML file, read loosely: either inline
/// (`expr: max(x) > 0`) or a block scalar (`expr: |-`) whose lines are
/// indented deeper than the key.
fn yaml_exprs(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut exprs = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        let key = line.trim_start().trim_start_matches("- ");
        let Some(value) = key.strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if value.starts_with('|') || value.starts_with('>') {
            let indent = indentation(line);
            let mut block = Vec::new();
            while i < lines.len() && (lines[i].trim().is_empty() || indentation(lines[i]) > indent) {
                block.push(lines[i].trim());
                i += 1;
            }
            exprs.push(block.join(" ").trim().to_owned());
        } else {
            exprs.push(value.trim_matches(|c| c == '"' || c == '\'').to_owned());
        }
    }
    exprs
}

fn indentation(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// `(alert name, its lines up to the next rule or group)` for each alert.
fn alert_blocks(text: &str) -> Vec<(String, String)> {
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let key = line.trim_start().trim_start_matches("- ");
        if let Some(name) = key.strip_prefix("alert:") {
            blocks.push((name.trim().to_owned(), String::new()));
        } else if key.starts_with("record:") || key.starts_with("name:") {
            // Ends the current alert's block; a recording rule or group follows.
            blocks.push((String::new(), String::new()));
        } else if let Some((_, block)) = blocks.last_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    blocks.retain(|(name, _)| !name.is_empty());
    blocks
}

/// Runs promtool from the repository root and fails with its output unless it
/// succeeds. A missing promtool fails too: these files are checked in CI.
fn promtool(args: &[&str]) {
    let command = format!("promtool {}", args.join(" "));
    let output = match Command::new("promtool").args(args).current_dir(repo_root()).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{command}` needs promtool, which is not installed; \
             `apt-get install -y prometheus` (Debian package) installs it"
        ),
        Err(e) => panic!("cannot run `{command}`: {e}"),
    };
    assert!(
        output.status.success(),
        "`{command}` failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
