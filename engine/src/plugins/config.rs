//! Settings of the strategy sandbox (`[plugins]`) and of the per-order-type
//! pipelines (`[pipelines.*]`). A leaf: imports nothing of ours but `domain`.

use crate::domain::Dur;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde::{Deserializer, Serializer, de};
use std::{collections::BTreeMap, fmt};

/// Sandbox limits of strategy plugins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// Fuel (≈ wasm instructions) per routing call.
    pub fuel: u64,
    /// Wall-clock deadline per routing call (epoch interruption).
    pub deadline: Dur,
    /// Linear memory cap per instance, bytes.
    pub memory_limit_bytes: u64,
    /// Largest module accepted, bytes.
    pub max_module_bytes: u64,
    /// Largest answer accepted, bytes.
    pub max_output_bytes: u64,
    /// `swapline.log` lines kept per call; more are dropped.
    pub log_lines_per_call: u32,
    /// `swapline.log` line length cap, bytes.
    pub log_line_max_bytes: u32,
    /// `swapline.log` lines kept per second per module, across all its
    /// calls; more are dropped. 0: no limit beyond the per-call one.
    pub log_lines_per_second: u32,
    /// Longest a module may take to compile; a slower one is refused.
    pub compile_timeout: Dur,
    /// Keep compiled modules under `<data_dir>/plugin-cache/` so a restart
    /// does not compile again (they are always cached in memory).
    pub cache_compiled: bool,
    /// Instance slots of the pooling allocator (calls running at once, all
    /// pipelines together; more than `worker.concurrency`); 0 allocates each
    /// instance on demand instead.
    pub pooled_instances: u32,
    /// How often config and plugin files are checked for changes, which
    /// reload the pipelines' strategies; `0s` turns the watcher off (SIGHUP
    /// still reloads).
    pub watch_interval: Dur,
}

impl PluginsConfig {
    /// Rule problems, each starting with `key` (the section's path).
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.fuel < 1 {
            problems.push(format!("{key}.fuel: must be at least 1"));
        }
        if self.deadline.0.is_zero() {
            problems.push(format!("{key}.deadline: must be greater than 0"));
        }
        if self.memory_limit_bytes < 65_536 {
            problems.push(format!(
                "{key}.memory_limit_bytes: must be at least 65536 (one wasm page)"
            ));
        }
        if self.compile_timeout.0.is_zero() {
            problems.push(format!("{key}.compile_timeout: must be greater than 0"));
        }
        problems
    }
}

/// One pipeline (per order type).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Routing strategy: a built-in name (`best-price`, `split`,
    /// `reliability-weighted`) or a path to a `.wasm` module; or a fallback
    /// chain of them, e.g. `["split", "best-price"]`, tried in order until one
    /// answers with a valid route.
    pub strategy: StrategyChain,
    /// Parameters handed to the strategy as `params`, checked at load
    /// against the schema each strategy declares.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Per-venue quote timeout; a venue that misses it is left out.
    pub quote_timeout: Dur,
    /// Per-leg execution timeout (a timeout is a transient failure).
    pub execute_timeout: Dur,
}

impl PipelineConfig {
    /// Rule problems, each starting with `key` (the section's path).
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let chain = &self.strategy.0;
        if chain.is_empty() || chain.iter().any(|s| s.trim().is_empty()) {
            problems.push(format!(
                "{key}.strategy: must name a plugin (or a non-empty list of them)"
            ));
        }
        if chain.len() > MAX_CHAIN {
            problems.push(format!("{key}.strategy: at most {MAX_CHAIN} strategies in a chain"));
        }
        problems
    }
}

/// One strategy or a fallback chain: `"split"` or `["split", "best-price"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrategyChain(pub Vec<String>);

/// Longest fallback chain accepted.
pub const MAX_CHAIN: usize = 8;

impl Serialize for StrategyChain {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => serializer.serialize_str(one),
            many => many.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for StrategyChain {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = StrategyChain;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a strategy name or path, or an array of them")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<StrategyChain, E> {
                Ok(StrategyChain(vec![text.to_owned()]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<StrategyChain, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    names.push(name);
                }
                Ok(StrategyChain(names))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for StrategyChain {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StrategyChain".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A strategy (built-in name or path to a .wasm module), or a fallback chain of them tried in order.",
            "anyOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": MAX_CHAIN}
            ]
        })
    }
}
