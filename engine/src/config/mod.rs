//! The typed configuration tree, loaded with figment from
//! `configs/default.toml`, the profile's overlay, `--config` files and
//! `SWAPLINE_SECTION__KEY` environment variables, in that order.
//!
//! [`Config`] is the aggregate: each section's type lives beside the
//! component it configures (`pipeline::RetryConfig`, `store::StoreConfig`,
//! …), and [`validate`] runs every section's own checks and the checks that
//! span sections. Every key has a default with a comment in
//! `configs/default.toml`; the doc comments become
//! `schemas/config.schema.json`.
//!
//! `config` imports the components' config types; no component imports
//! `config` (it is a leaf aggregate, so there is no circle).
//!
//! May import: `api`, `bus`, `chain`, `domain`, `monitor`, `pipeline`, `plugins`, `queue`, `store`, `telemetry`, `venues`.

pub mod validate;

use crate::{
    api::{AuthConfig, LimitsConfig, OrdersConfig, ServerConfig, WebSocketConfig},
    bus::BusConfig,
    chain::ChainConfig,
    domain::{TokenConfig, TokenError, TokenRegistry},
    monitor::MonitorConfig,
    pipeline::{ReconcilerConfig, RetryConfig, WorkerConfig},
    plugins::{PipelineConfig, PluginsConfig},
    queue::{QueueConfig, RedisConfig},
    store::{PostgresConfig, StoreConfig},
    telemetry::{LogConfig, MetricsConfig},
    venues::VenuesConfig,
};
use figment::{
    Figment,
    providers::{Data, Env, Format, Toml},
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};
pub use validate::{Role, validate, validate_for};

/// The configuration files compiled into the binary, so it runs from any
/// directory: (file name, contents).
pub const BUILTIN_FILES: &[(&str, &str)] = &[
    ("default.toml", include_str!("../../../configs/default.toml")),
    ("dev.toml", include_str!("../../../configs/dev.toml")),
    ("staging.toml", include_str!("../../../configs/staging.toml")),
    ("production.toml", include_str!("../../../configs/production.toml")),
    ("bench.toml", include_str!("../../../configs/bench.toml")),
];

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory for the SQLite store and caches; created if missing.
    pub data_dir: PathBuf,
    /// HTTP server.
    pub server: ServerConfig,
    /// API keys and WebSocket tickets.
    pub auth: AuthConfig,
    /// WebSocket streams.
    pub websocket: WebSocketConfig,
    /// Order intake rules.
    pub orders: OrdersConfig,
    /// Per-client request limits.
    pub limits: LimitsConfig,
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
    /// The chain: the simulated chain's clock and faults, and how the
    /// engine lands transactions on it. Optional; defaults are Solana's.
    #[serde(default)]
    pub chain: ChainConfig,
    /// Logging.
    pub log: LogConfig,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// The periodic sampler behind gauges and the stuck-order check.
    pub monitor: MonitorConfig,
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
        validate(&config).map_err(ConfigError::Invalid)?;
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
    /// The token registry this configuration describes.
    ///
    /// # Errors
    /// [`TokenError`] (which [`validate`] reports as a `tokens` problem).
    pub fn token_registry(&self) -> Result<TokenRegistry, TokenError> {
        TokenRegistry::from_config(&self.tokens)
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
pub const SCHEMA: &str = include_str!("../../../schemas/config.schema.json");

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

#[cfg(test)]
// figment::Jail's closures return figment::Error, which is large by design.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use std::time::Duration;

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
        assert_eq!(config.venues.quote_latency.0, Duration::ZERO, "bench overlay applied");
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
        let problems = validate(&config).unwrap_err();
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
        let problems = validate(&config).unwrap_err();
        assert!(problems[0].starts_with("plugins.pooled_instances: 16"), "{problems:?}");
        config.plugins.pooled_instances = 0;
        assert!(validate(&config).is_ok());
    }

    #[test]
    fn unknown_profile_is_an_error() {
        let message = sources("qa").load().unwrap_err().to_string();
        assert!(message.contains("unknown profile"), "{message}");
    }
}
