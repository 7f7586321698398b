//! The typed configuration tree, loaded with figment from
//! `configs/default.toml`, the profile's overlay, `--config` files and
//! `SWAPLINE_SECTION__KEY` environment variables, in that order.
//!
//! Every key has a default with a comment in `configs/default.toml`; the doc
//! comments here become `schemas/config.schema.json`. Imports nothing of ours
//! but `domain`.

use figment::{
    Figment,
    providers::{Data, Env, Format, Toml},
};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

/// The configuration files compiled into the binary, so it runs from any
/// directory: (file name, contents).
pub const BUILTIN_FILES: &[(&str, &str)] = &[
    ("default.toml", include_str!("../../configs/default.toml")),
    ("dev.toml", include_str!("../../configs/dev.toml")),
    ("staging.toml", include_str!("../../configs/staging.toml")),
    ("production.toml", include_str!("../../configs/production.toml")),
    ("bench.toml", include_str!("../../configs/bench.toml")),
];

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory for the SQLite store and caches; created if missing.
    pub data_dir: PathBuf,
    /// HTTP server.
    pub server: ServerConfig,
    /// WebSocket streams.
    pub websocket: WebSocketConfig,
    /// Order intake rules.
    pub orders: OrdersConfig,
    /// Tradable tokens.
    pub tokens: Vec<TokenConfig>,
    /// The order worker.
    pub worker: WorkerConfig,
    /// Retries of failed submissions.
    pub retry: RetryConfig,
    /// The order store (source of truth).
    pub store: StoreConfig,
    /// The job queue.
    pub queue: QueueConfig,
    /// The event bus.
    pub bus: BusConfig,
    /// PostgreSQL (when `store.backend = "postgres"`).
    pub postgres: PostgresConfig,
    /// Redis (when the queue or the bus is `redis`).
    pub redis: RedisConfig,
    /// The sweep that re-enqueues unfinished orders the queue lost.
    pub reconciler: ReconcilerConfig,
    /// The strategy plugin sandbox.
    pub plugins: PluginsConfig,
    /// Pipelines by order type; `market` is required.
    pub pipelines: BTreeMap<String, PipelineConfig>,
    /// Simulated venues.
    pub venues: VenuesConfig,
    /// Logging.
    pub log: LogConfig,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// The periodic sampler behind gauges and the stuck-order check.
    pub monitor: MonitorConfig,
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` (on the API port, and on `listen` when set).
    pub enabled: bool,
    /// A separate address for `/metrics`, e.g. `127.0.0.1:9101`, for worker
    /// processes (which have no API port); empty: none.
    pub listen: String,
}

/// The monitor.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// Time between samples.
    pub interval: Dur,
    /// An unfinished order with no new event for this long counts as stuck.
    pub stuck_after: Dur,
}

/// HTTP server settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on (`SWAPLINE_SERVER__BIND`).
    #[schemars(with = "String")]
    pub bind: SocketAddr,
    /// Base URL clients reach this node at, e.g. `https://swap.example.com`;
    /// empty: built from the request's `Host` header.
    pub public_url: String,
    /// Largest request body accepted, bytes (larger: 413).
    pub body_limit_bytes: u64,
    /// Time allowed for in-flight work to finish on shutdown.
    pub shutdown_grace: Dur,
}

/// WebSocket settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebSocketConfig {
    /// How often the server pings each client.
    pub ping_interval: Dur,
    /// A client that has not answered a ping within this time is closed.
    pub ping_timeout: Dur,
    /// Events buffered per client; a client that falls this far behind is
    /// closed with 1013 and can reconnect with `?since`.
    pub client_buffer: usize,
}

/// Order intake rules.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrdersConfig {
    /// Slippage in percent used when a request gives none.
    pub default_slippage: f64,
    /// Largest page of `GET /api/orders`.
    pub max_page_size: u32,
}

/// A tradable token.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Ticker, e.g. `SOL`.
    pub symbol: String,
    /// Mint address.
    pub mint: String,
    /// Decimal places of the base unit (SOL: 9, USDC: 6).
    pub decimals: u8,
    /// Largest order amount, whole tokens, as a decimal string.
    pub max_amount: String,
}

/// The worker that runs orders.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Whether `swapline serve` also runs a worker in-process.
    pub enabled: bool,
    /// Orders processed at once.
    pub concurrency: usize,
    /// Orders claimed per minute across the engine; 0 disables the limit.
    pub rate_limit_per_minute: u32,
    /// A claimed job not heartbeated for this long is given to another worker.
    pub lease: Dur,
}

/// Backoff shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackoffKind {
    /// `initial` every time.
    Fixed,
    /// `initial × multiplier^(n−1)`.
    Exponential,
    /// `initial × n`.
    Linear,
}

/// Jitter applied to a backoff delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JitterKind {
    /// The delay as computed.
    None,
    /// Uniform in [0, delay].
    Full,
    /// delay/2 + uniform in [0, delay/2].
    Equal,
}

/// Retry policy for transient submission failures.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Submission attempts per order, including the first.
    pub max_attempts: u32,
    /// Shape of the delay between attempts.
    pub backoff: BackoffKind,
    /// First delay.
    pub initial: Dur,
    /// Growth factor for `exponential`.
    pub multiplier: f64,
    /// Ceiling of any delay.
    pub max_delay: Dur,
    /// Randomisation of the delay.
    pub jitter: JitterKind,
    /// Quotes older than this are fetched again before a retry (unless a
    /// leg of the route already executed).
    pub requote_after: Dur,
}

/// Store backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    /// A SQLite file in `data_dir` (WAL mode).
    Sqlite,
    /// PostgreSQL, shared by every node.
    Postgres,
}

/// The order store.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Which store.
    pub backend: StoreBackend,
    /// Apply pending migrations when the engine starts.
    pub migrate_on_start: bool,
    /// SQLite file; empty: `<data_dir>/swapline.db`.
    pub sqlite_path: String,
    /// SQLite `synchronous`: `normal` survives a killed process, `full` also
    /// a power cut.
    pub sqlite_synchronous: SqliteSync,
    /// How long a SQLite call waits on a lock before failing.
    pub busy_timeout: Dur,
}

/// SQLite durability levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SqliteSync {
    /// Durable across process crashes.
    Normal,
    /// Durable across power loss.
    Full,
}

/// Queue backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum QueueBackend {
    /// In-process; jobs are rebuilt from the store on restart.
    Memory,
    /// A Redis Stream shared by every node.
    Redis,
}

/// The job queue.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Which queue.
    pub backend: QueueBackend,
}

/// Bus backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BusBackend {
    /// In-process.
    Memory,
    /// Redis pub/sub, shared by every node.
    Redis,
}

/// The event bus.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// Which bus.
    pub backend: BusBackend,
    /// Events buffered between the bus and the WebSocket hub.
    pub buffer: usize,
}

/// PostgreSQL connection settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Connection URL, e.g. `postgres://postgres@127.0.0.1:5432/postgres`.
    pub url: String,
    /// Schema holding Swapline's tables (created by the migrations); lets
    /// several deployments or tests share one database.
    pub schema: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// Time to open a connection.
    pub connect_timeout: Dur,
    /// Time to wait for a free pooled connection before answering 503.
    pub pool_wait_timeout: Dur,
    /// Server-side cap on one statement.
    pub statement_timeout: Dur,
}

/// Redis connection settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// Connection URL, e.g. `redis://127.0.0.1:6379`.
    pub url: String,
    /// Prefix of every key and channel; isolates deployments and tests.
    pub key_prefix: String,
    /// Connections in each pool (the queue's and the publisher's).
    pub pool_size: usize,
    /// Time to wait for a free pooled connection.
    pub pool_wait_timeout: Dur,
}

/// The reconciler.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconcilerConfig {
    /// Run the sweep in worker processes.
    pub enabled: bool,
    /// Time between sweeps.
    pub interval: Dur,
}

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

/// The simulated venues.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VenuesConfig {
    /// Seed of the random walk and of fault injection.
    pub seed: u64,
    /// Mean quote latency.
    pub quote_latency: Dur,
    /// Uniform ± jitter on the quote latency.
    pub quote_jitter: Dur,
    /// Shortest execution latency.
    pub execute_latency_min: Dur,
    /// Longest execution latency.
    pub execute_latency_max: Dur,
    /// Standard deviation of the price random walk per step, basis points.
    pub drift_bps: f64,
    /// Pull of the price back to its reference per step (0–1).
    pub mean_reversion: f64,
    /// Failure injection.
    pub faults: FaultsConfig,
    /// The pools.
    pub pools: Vec<PoolConfig>,
}

/// Failure injection at execution.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultsConfig {
    /// Probability that an execution fails transiently (retryable).
    pub transient_rate: f64,
    /// Probability that an execution is rejected permanently.
    pub permanent_rate: f64,
    /// Fail the first N attempts of every order transiently (for demos and
    /// tests of the retry path).
    pub transient_first_attempts: u32,
}

/// A simulated pool.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PoolConfig {
    /// Constant product x·y = k (Raydium-style).
    ConstantProduct {
        /// Venue name.
        venue: String,
        /// Base token symbol.
        base: String,
        /// Quote token symbol.
        quote: String,
        /// Base reserve, whole tokens.
        reserve_base: String,
        /// Quote reserve, whole tokens.
        reserve_quote: String,
        /// Fee, basis points.
        fee_bps: u32,
    },
    /// Liquidity bins (Meteora DLMM-style).
    Dlmm {
        /// Venue name.
        venue: String,
        /// Base token symbol.
        base: String,
        /// Quote token symbol.
        quote: String,
        /// Active price, whole quote per whole base.
        price: f64,
        /// Price step between bins, basis points.
        bin_step_bps: u32,
        /// Bins on each side of the active one.
        bins_per_side: u32,
        /// Liquidity per bin, whole base tokens.
        bin_liquidity: f64,
        /// Fee before volatility, basis points.
        base_fee_bps: u32,
        /// Added fee per (bins crossed)², basis points.
        variable_fee_bps: u32,
        /// Fee ceiling, basis points.
        max_fee_bps: u32,
    },
}

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `pretty` for people, `json` for collectors.
    pub format: LogFormat,
    /// Filter in `tracing` syntax, e.g. `info,swapline=debug`; `RUST_LOG`
    /// wins when set.
    pub level: String,
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// A duration written as a string: `"500ms"`, `"2s"`, `"5m"`, `"0s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"500ms\" or \"2s\"")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Dur, E> {
                humantime::parse_duration(text)
                    .map(Dur)
                    .map_err(|e| E::custom(format!("invalid duration {text:?}: {e}")))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

impl JsonSchema for Dur {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^([0-9]+ ?(ns|us|ms|s|m|h|d) ?)+$",
            "description": "A duration such as \"500ms\", \"2s\", \"5m\"."
        })
    }
}

/// Where configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Profile overlay (`dev`, `staging`, `production`, `bench`, or any
    /// `<name>.toml` in the config directory).
    pub profile: String,
    /// Directory holding `default.toml` and overlays; `None`: `./configs` if
    /// it exists, else the built-in copies.
    pub config_dir: Option<PathBuf>,
    /// Extra files merged after the profile, in order.
    pub files: Vec<PathBuf>,
    /// Merge `SWAPLINE_*` environment variables last.
    pub env: bool,
}

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file is missing or unreadable.
    #[error("{0}")]
    Source(String),
    /// Keys unknown, missing or of the wrong type, each naming its key and
    /// source.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Parse(Vec<String>),
    /// Values parse but break a rule; every problem, with its key.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl Sources {
    /// The figment before extraction: every layer with its source.
    pub fn figment(&self) -> Result<Figment, ConfigError> {
        let dir = match &self.config_dir {
            Some(dir) if !dir.is_dir() => {
                return Err(ConfigError::Source(format!(
                    "config directory {} does not exist",
                    dir.display()
                )));
            }
            Some(dir) => Some(dir.clone()),
            None => Some(PathBuf::from("configs")).filter(|d| d.join("default.toml").is_file()),
        };
        // An explicit --config-dir is the only source of files; otherwise a
        // file missing from ./configs falls back to its built-in copy.
        let explicit = self.config_dir.is_some();
        let layer = |name: &str| -> Option<Data<Toml>> {
            let on_disk = dir.as_ref().map(|d| d.join(name)).filter(|p| p.is_file());
            if explicit {
                return on_disk.map(Toml::file_exact);
            }
            on_disk.map(Toml::file_exact).or_else(|| {
                BUILTIN_FILES
                    .iter()
                    .find(|(file, _)| *file == name)
                    .map(|(_, text)| Toml::string(text))
            })
        };
        let mut figment = Figment::new();
        figment = match layer("default.toml") {
            Some(toml) => figment.merge(toml),
            None => return Err(ConfigError::Source("no default.toml found".into())),
        };
        if !self.profile.is_empty() {
            let file = format!("{}.toml", self.profile);
            match layer(&file) {
                Some(toml) => figment = figment.merge(toml),
                None => {
                    return Err(ConfigError::Source(format!(
                        "unknown profile {:?}: no {file} in {} or built in (dev, staging, production, bench)",
                        self.profile,
                        dir.as_deref().unwrap_or(Path::new("configs")).display()
                    )));
                }
            }
        }
        for file in &self.files {
            if !file.is_file() {
                return Err(ConfigError::Source(format!(
                    "config file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        if self.env {
            figment = figment.merge(Env::prefixed("SWAPLINE_").split("__").ignore(&["profile"]));
        }
        Ok(figment)
    }

    /// The configuration files this would read from disk (for the reload
    /// watcher); built-in copies are not files.
    pub fn files_on_disk(&self) -> Vec<PathBuf> {
        let dir = self
            .config_dir
            .clone()
            .or_else(|| Some(PathBuf::from("configs")).filter(|d| d.join("default.toml").is_file()));
        let mut files: Vec<PathBuf> = dir
            .into_iter()
            .flat_map(|dir| {
                let profile = (!self.profile.is_empty()).then(|| dir.join(format!("{}.toml", self.profile)));
                std::iter::once(dir.join("default.toml")).chain(profile)
            })
            .filter(|path| path.is_file())
            .collect();
        files.extend(self.files.iter().cloned());
        files
    }

    /// Loads, extracts and validates.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let config: Config = self
            .figment()?
            .extract()
            .map_err(|e| ConfigError::Parse(e.into_iter().map(|e| describe(&e)).collect()))?;
        config.validate().map_err(ConfigError::Invalid)?;
        Ok(config)
    }
}

/// "`worker.concurrency` from SWAPLINE_WORKER__CONCURRENCY: invalid type…"
fn describe(error: &figment::Error) -> String {
    let key = error.path.join(".").to_lowercase();
    let source = error.metadata.as_ref().map(|metadata| match &metadata.source {
        Some(figment::Source::File(path)) => path.display().to_string(),
        _ if metadata.name.contains("environment") => {
            format!("SWAPLINE_{}", error.path.join("__").to_uppercase())
        }
        _ => format!("built-in {}", metadata.name),
    });
    match (key.is_empty(), source) {
        (false, Some(source)) => format!("`{key}` from {source}: {}", error.kind),
        (false, None) => format!("`{key}`: {}", error.kind),
        (true, Some(source)) => format!("{source}: {}", error.kind),
        (true, None) => error.kind.to_string(),
    }
}

impl Config {
    /// Checks the rules serde cannot, reporting every problem with its key.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, message: String| {
            if !ok {
                problems.push(message);
            }
        };
        check(
            self.orders.default_slippage > 0.0 && self.orders.default_slippage <= 50.0,
            format!(
                "orders.default_slippage: {} is outside (0, 50]",
                self.orders.default_slippage
            ),
        );
        check(
            crate::domain::slippage_bps(&self.orders.default_slippage.to_string()).is_ok(),
            format!(
                "orders.default_slippage: {} must have at most 2 decimals",
                self.orders.default_slippage
            ),
        );
        check(
            self.orders.max_page_size >= 1,
            "orders.max_page_size: must be at least 1".into(),
        );
        let url = &self.server.public_url;
        check(
            url.is_empty()
                || ["http://", "https://", "ws://", "wss://"]
                    .iter()
                    .any(|s| url.starts_with(s)),
            format!("server.public_url: {url:?} must start with http://, https://, ws:// or wss://"),
        );
        check(
            self.server.body_limit_bytes >= 256,
            "server.body_limit_bytes: must be at least 256".into(),
        );
        check(
            self.websocket.client_buffer >= 1,
            "websocket.client_buffer: must be at least 1".into(),
        );
        check(
            !self.websocket.ping_interval.0.is_zero(),
            "websocket.ping_interval: must be greater than 0".into(),
        );
        check(
            !self.websocket.ping_timeout.0.is_zero(),
            "websocket.ping_timeout: must be greater than 0".into(),
        );
        check(
            self.worker.concurrency >= 1,
            "worker.concurrency: must be at least 1".into(),
        );
        check(
            !self.worker.lease.0.is_zero(),
            "worker.lease: must be greater than 0".into(),
        );
        check(self.bus.buffer >= 1, "bus.buffer: must be at least 1".into());
        let schema = &self.postgres.schema;
        check(
            !schema.is_empty()
                && schema.len() <= 63
                && schema
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && !schema.starts_with(|c: char| c.is_ascii_digit()),
            format!("postgres.schema: {schema:?} must be a lowercase identifier (a-z, 0-9, _)"),
        );
        check(
            self.postgres.pool_size >= 1,
            "postgres.pool_size: must be at least 1".into(),
        );
        check(self.redis.pool_size >= 1, "redis.pool_size: must be at least 1".into());
        check(
            !self.redis.key_prefix.is_empty() && !self.redis.key_prefix.contains(char::is_whitespace),
            "redis.key_prefix: must be non-empty without spaces".into(),
        );
        check(
            !self.reconciler.interval.0.is_zero(),
            "reconciler.interval: must be greater than 0".into(),
        );
        check(
            self.metrics.listen.is_empty() || self.metrics.listen.parse::<SocketAddr>().is_ok(),
            format!(
                "metrics.listen: {:?} must be empty or an address such as 127.0.0.1:9101",
                self.metrics.listen
            ),
        );
        check(
            !self.monitor.interval.0.is_zero(),
            "monitor.interval: must be greater than 0".into(),
        );
        check(
            !self.monitor.stuck_after.0.is_zero(),
            "monitor.stuck_after: must be greater than 0".into(),
        );
        if let Err(e) = crate::pipeline::Backoff::from_config(&self.retry) {
            problems.push(format!("retry: {e}"));
        }
        let mut check = |ok: bool, message: String| {
            if !ok {
                problems.push(message);
            }
        };
        check(
            self.retry.max_attempts >= 1,
            "retry.max_attempts: must be at least 1".into(),
        );
        check(self.plugins.fuel >= 1, "plugins.fuel: must be at least 1".into());
        check(
            !self.plugins.deadline.0.is_zero(),
            "plugins.deadline: must be greater than 0".into(),
        );
        check(
            self.plugins.memory_limit_bytes >= 65_536,
            "plugins.memory_limit_bytes: must be at least 65536 (one wasm page)".into(),
        );
        check(
            self.venues.execute_latency_min <= self.venues.execute_latency_max,
            "venues.execute_latency_min: must not exceed venues.execute_latency_max".into(),
        );
        for (key, rate) in [
            ("transient_rate", self.venues.faults.transient_rate),
            ("permanent_rate", self.venues.faults.permanent_rate),
        ] {
            check(
                (0.0..=1.0).contains(&rate),
                format!("venues.faults.{key}: {rate} is outside [0, 1]"),
            );
        }
        check(
            (0.0..=1.0).contains(&self.venues.mean_reversion),
            "venues.mean_reversion: must be within [0, 1]".into(),
        );
        check(
            self.venues.drift_bps >= 0.0,
            "venues.drift_bps: must not be negative".into(),
        );
        check(
            self.pipelines.contains_key("market"),
            "pipelines.market: missing; every order type needs a pipeline".into(),
        );
        for (name, pipeline) in &self.pipelines {
            let chain = &pipeline.strategy.0;
            check(
                !chain.is_empty() && chain.iter().all(|s| !s.trim().is_empty()),
                format!("pipelines.{name}.strategy: must name a plugin (or a non-empty list of them)"),
            );
            check(
                chain.len() <= MAX_CHAIN,
                format!("pipelines.{name}.strategy: at most {MAX_CHAIN} strategies in a chain"),
            );
        }
        check(
            !self.plugins.compile_timeout.0.is_zero(),
            "plugins.compile_timeout: must be greater than 0".into(),
        );
        check(
            self.plugins.pooled_instances == 0 || self.plugins.pooled_instances as usize > self.worker.concurrency,
            format!(
                "plugins.pooled_instances: {} must be 0 (on demand) or more than worker.concurrency ({}), \
                 or routing calls could find no free instance slot",
                self.plugins.pooled_instances, self.worker.concurrency
            ),
        );
        match self.token_registry() {
            Err(e) => check(false, format!("tokens: {e}")),
            Ok(tokens) => {
                for (i, pool) in self.venues.pools.iter().enumerate() {
                    let (base, quote) = pool.pair();
                    for symbol in [base, quote] {
                        check(
                            tokens.get(symbol).is_some(),
                            format!("venues.pools[{i}]: unknown token {symbol:?}"),
                        );
                    }
                    check(base != quote, format!("venues.pools[{i}]: base and quote must differ"));
                }
            }
        }
        check(
            !self.venues.pools.is_empty(),
            "venues.pools: at least one pool is needed".into(),
        );
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }

    /// The token registry this configuration describes.
    pub fn token_registry(&self) -> Result<crate::domain::TokenRegistry, String> {
        crate::domain::TokenRegistry::new(
            self.tokens
                .iter()
                .map(|t| (t.symbol.clone(), t.mint.clone(), t.decimals, t.max_amount.clone())),
        )
    }

    /// The default slippage in basis points (validated).
    pub fn default_slippage_bps(&self) -> u32 {
        crate::domain::slippage_bps(&self.orders.default_slippage.to_string()).unwrap_or(50)
    }

    /// The SQLite file.
    pub fn sqlite_path(&self) -> PathBuf {
        if self.store.sqlite_path.is_empty() {
            self.data_dir.join("swapline.db")
        } else {
            PathBuf::from(&self.store.sqlite_path)
        }
    }

    /// The JSON Schema of the configuration.
    pub fn schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(Config)).expect("schema serialises")
    }
}

/// The committed `schemas/config.schema.json` (a test keeps it equal to
/// [`Config::schema`]).
pub const SCHEMA: &str = include_str!("../../schemas/config.schema.json");

/// Problems of a configuration against the committed JSON Schema, each with
/// its JSON path; empty when valid.
pub fn schema_errors(config: &Config) -> Vec<String> {
    let schema: serde_json::Value = serde_json::from_str(SCHEMA).expect("the committed schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("the committed schema compiles");
    let instance = serde_json::to_value(config).expect("configurations serialise");
    validator
        .iter_errors(&instance)
        .map(|e| format!("{}: {e}", e.instance_path().as_str()))
        .collect()
}

impl PoolConfig {
    /// The pool's venue.
    pub fn venue(&self) -> &str {
        match self {
            PoolConfig::ConstantProduct { venue, .. } | PoolConfig::Dlmm { venue, .. } => venue,
        }
    }

    /// (base, quote) symbols.
    pub fn pair(&self) -> (&str, &str) {
        match self {
            PoolConfig::ConstantProduct { base, quote, .. } | PoolConfig::Dlmm { base, quote, .. } => (base, quote),
        }
    }
}

#[cfg(test)]
// figment::Jail's closures return figment::Error, which is large by design.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    fn sources(profile: &str) -> Sources {
        Sources {
            profile: profile.into(),
            config_dir: Some(PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs"))),
            files: vec![],
            env: false,
        }
    }

    #[test]
    fn every_profile_loads_and_validates() {
        for profile in ["dev", "staging", "production", "bench"] {
            sources(profile).load().unwrap_or_else(|e| panic!("{profile}: {e}"));
        }
    }

    #[test]
    fn built_in_files_match_the_configs_folder() {
        for (file, text) in BUILTIN_FILES {
            let on_disk = std::fs::read_to_string(sources("").config_dir.unwrap().join(file)).unwrap();
            assert_eq!(&on_disk, text, "{file}");
        }
    }

    #[test]
    fn overlays_and_files_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let extra = dir.path().join("extra.toml");
        std::fs::write(&extra, "[worker]\nconcurrency = 3\n").unwrap();
        let mut s = sources("bench");
        s.files.push(extra);
        let config = s.load().unwrap();
        assert_eq!(config.worker.concurrency, 3);
        assert_eq!(
            config.venues.execute_latency_max.0,
            Duration::ZERO,
            "bench overlay applied"
        );
        assert_eq!(config.worker.rate_limit_per_minute, 0);
    }

    #[test]
    fn env_overrides_with_double_underscore() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SWAPLINE_SERVER__BIND", "127.0.0.1:4567");
            jail.set_env("SWAPLINE_RETRY__INITIAL", "250ms");
            jail.set_env("SWAPLINE_PROFILE", "dev");
            let mut s = sources("dev");
            s.env = true;
            let config = s.load().map_err(|e| e.to_string())?;
            assert_eq!(config.server.bind.port(), 4567);
            assert_eq!(config.retry.initial.0, Duration::from_millis(250));
            Ok(())
        });
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let extra = dir.path().join("typo.toml");
        std::fs::write(&extra, "[worker]\nconcurency = 3\n").unwrap();
        let mut s = sources("dev");
        s.files.push(extra);
        let message = s.load().unwrap_err().to_string();
        assert!(message.contains("concurency"), "{message}");
        assert!(message.contains("typo.toml"), "{message}");
    }

    #[test]
    fn bad_env_value_names_key_and_variable() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SWAPLINE_WORKER__CONCURRENCY", "many");
            let mut s = sources("dev");
            s.env = true;
            let message = s.load().unwrap_err().to_string();
            assert!(message.contains("worker.concurrency"), "{message}");
            assert!(message.contains("SWAPLINE_WORKER__CONCURRENCY"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn bad_duration_is_reported() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SWAPLINE_RETRY__INITIAL", "soon");
            let mut s = sources("dev");
            s.env = true;
            let message = s.load().unwrap_err().to_string();
            assert!(message.contains("retry.initial"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn semantic_problems_are_all_reported_at_once() {
        let mut config = sources("dev").load().unwrap();
        config.worker.concurrency = 0;
        config.retry.max_attempts = 0;
        config.orders.default_slippage = 80.0;
        let problems = config.validate().unwrap_err();
        for key in ["worker.concurrency", "retry.max_attempts", "orders.default_slippage"] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "{key} missing from {problems:?}"
            );
        }
    }

    #[test]
    fn strategy_is_a_name_or_a_fallback_chain() {
        let dir = tempfile::tempdir().unwrap();
        let extra = dir.path().join("chain.toml");
        std::fs::write(&extra, "[pipelines.market]\nstrategy = [\"split\", \"best-price\"]\n").unwrap();
        let mut s = sources("dev");
        s.files.push(extra.clone());
        let config = s.load().unwrap();
        assert_eq!(config.pipelines["market"].strategy.0, ["split", "best-price"]);
        assert_eq!(schema_errors(&config), Vec::<String>::new());

        let one = sources("dev").load().unwrap();
        assert_eq!(one.pipelines["market"].strategy.0, ["best-price"]);
        let shown = toml::to_string(&one).unwrap();
        assert!(
            shown.contains("strategy = \"best-price\""),
            "a single strategy stays a string"
        );

        std::fs::write(&extra, "[pipelines.market]\nstrategy = []\n").unwrap();
        let message = s.load().unwrap_err().to_string();
        assert!(message.contains("pipelines.market.strategy"), "{message}");
    }

    #[test]
    fn too_few_instance_slots_for_the_worker_are_refused() {
        let mut config = sources("dev").load().unwrap();
        config.worker.concurrency = 16;
        config.plugins.pooled_instances = 16;
        let problems = config.validate().unwrap_err();
        assert!(problems[0].starts_with("plugins.pooled_instances: 16"), "{problems:?}");
        config.plugins.pooled_instances = 0;
        assert!(config.validate().is_ok());
    }

    #[test]
    fn unknown_profile_is_an_error() {
        let message = sources("qa").load().unwrap_err().to_string();
        assert!(message.contains("unknown profile"), "{message}");
    }
}
