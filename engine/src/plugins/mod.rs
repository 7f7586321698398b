//! Strategy plugins: the `Strategy` seam and its wasmtime host.
//!
//! A strategy is a core wasm module speaking ABI v1 (see `swapline_abi`),
//! run per call in a fresh instance under fuel, an epoch deadline and a
//! memory cap. Its answer is checked by [`validate`] before anything acts on
//! it; a pipeline's strategies form a fallback [`Chain`]. `cache` keeps
//! compiled modules in memory and on disk; [`watch`] notices changed config
//! and plugin files for hot reload; [`cli`] backs `swapline plugins`.
//!
//! May import: `domain`, `telemetry`.

mod cache;
pub mod chain;
pub mod cli;
pub mod config;
mod host;
pub mod validate;
pub mod watch;

use crate::domain::StrategyRef;
use async_trait::async_trait;
pub use chain::{Chain, ChainFailed, Routed};
pub use config::{MAX_CHAIN, PipelineConfig, PluginsConfig, StrategyChain};
pub use host::{CallReport, PARAMS_SCHEMA_EXPORT, PluginHost, WasmStrategy, parse_params_schema};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use swapline_abi::{RouteDecision, RouteInput};
use thiserror::Error;

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// What can go wrong with a plugin. Every variant fails the order it was
/// routing, never the engine.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PluginError {
    /// The module was refused at load (bad imports, exports, ABI, size).
    #[error("load: {0}")]
    Load(String),
    /// Fuel or the wall-clock deadline ran out.
    #[error("timeout: {0}")]
    Timeout(String),
    /// The guest tried to grow memory past the cap.
    #[error("memory_limit: {0}")]
    MemoryLimit(String),
    /// The guest trapped (unreachable, stack overflow, out of bounds…).
    #[error("trap: {0}")]
    Trap(String),
    /// The answer is not valid UTF-8 JSON of a `PluginAnswer`.
    #[error("invalid_output: {0}")]
    InvalidOutput(String),
    /// The answer exceeds `plugins.max_output_bytes`.
    #[error("output_too_large: {0}")]
    OutputTooLarge(String),
    /// The strategy declined to route.
    #[error("strategy_error: {code}: {message}")]
    Declined {
        /// The strategy's code.
        code: String,
        /// The strategy's words.
        message: String,
    },
    /// Per-pipeline params break the schema a strategy declares.
    #[error("invalid_params: {0}")]
    Params(String),
    /// The route breaks a host rule (see [`validate`]).
    #[error("invalid_route: {code}: {message}")]
    InvalidRoute {
        /// Which rule.
        code: &'static str,
        /// Details.
        message: String,
    },
}

impl PluginError {
    /// The stable code an order fails with.
    pub const CODE: &'static str = "plugin_error";

    /// Every reason, as metric labels.
    pub const REASONS: [&'static str; 8] = [
        "load",
        "timeout",
        "memory_limit",
        "trap",
        "invalid_output",
        "output_too_large",
        "strategy_error",
        "invalid_route",
    ];

    /// The specific reason, e.g. `timeout`.
    pub fn reason(&self) -> &'static str {
        match self {
            PluginError::Load(_) => "load",
            PluginError::Timeout(_) => "timeout",
            PluginError::MemoryLimit(_) => "memory_limit",
            PluginError::Trap(_) => "trap",
            PluginError::InvalidOutput(_) => "invalid_output",
            PluginError::OutputTooLarge(_) => "output_too_large",
            PluginError::Declined { .. } => "strategy_error",
            PluginError::Params(_) => "invalid_params",
            PluginError::InvalidRoute { .. } => "invalid_route",
        }
    }
}

/// A routing strategy: picks the legs of a route from quotes and pools.
#[async_trait]
pub trait Strategy: Send + Sync {
    /// Name and module digest, recorded on every order it routes.
    fn id(&self) -> &StrategyRef;

    /// The JSON Schema the strategy declares for its params, if any.
    fn params_schema(&self) -> Option<&serde_json::Value> {
        None
    }

    /// Asks the strategy for a route. The answer is not validated yet.
    async fn route(&self, input: &RouteInput) -> Result<RouteDecision, PluginError>;
}

/// Where a strategy setting points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Embedded in the binary, named without a path.
    Builtin,
    /// A module file (binary wasm or WAT text).
    File(PathBuf),
}

/// A resolved strategy setting: its name, module bytes and origin.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Built-in name or file stem.
    pub name: String,
    /// The module.
    pub bytes: Vec<u8>,
    /// Where it came from.
    pub source: Source,
}

/// The names of the built-in strategies.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN_PLUGINS.iter().map(|(name, _)| *name).collect()
}

/// Resolves a `strategy` setting: a built-in name, or a path to a `.wasm`
/// file (anything ending in `.wasm` or containing `/`).
pub fn resolve(setting: &str) -> Result<Resolved, PluginError> {
    if let Some((name, bytes)) = BUILTIN_PLUGINS.iter().find(|(name, _)| *name == setting) {
        return Ok(Resolved {
            name: (*name).to_owned(),
            bytes: bytes.to_vec(),
            source: Source::Builtin,
        });
    }
    let path = Path::new(setting);
    if setting.ends_with(".wasm") || setting.contains('/') {
        let bytes =
            std::fs::read(path).map_err(|e| PluginError::Load(format!("cannot read {}: {e}", path.display())))?;
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or(setting).to_owned();
        return Ok(Resolved {
            name,
            bytes,
            source: Source::File(path.to_owned()),
        });
    }
    Err(PluginError::Load(format!(
        "unknown strategy {setting:?}: built-in strategies are {}; or give a path to a .wasm file",
        builtin_names().join(", ")
    )))
}

/// The files a set of strategy settings reads: module files and their
/// sidecar schemas (built-ins read none).
pub fn files_of<'a>(settings: impl IntoIterator<Item = &'a str>) -> Vec<PathBuf> {
    settings
        .into_iter()
        .filter(|s| !builtin_names().contains(s) && (s.ends_with(".wasm") || s.contains('/')))
        .flat_map(|s| [PathBuf::from(s), sidecar_path(Path::new(s))])
        .collect()
}

/// The sidecar params schema of a module file: `x.wasm` → `x.schema.json`.
pub fn sidecar_path(module: &Path) -> PathBuf {
    module.with_extension("schema.json")
}

impl PluginHost {
    /// Resolves and loads a `strategy` setting; a module file without a
    /// `swapline_params_schema` export takes its schema from the sidecar
    /// `<stem>.schema.json` when there is one.
    pub fn load_setting(&self, setting: &str) -> Result<WasmStrategy, PluginError> {
        let resolved = resolve(setting)?;
        let strategy = self.load(&resolved.name, &resolved.bytes)?;
        let Source::File(path) = &resolved.source else {
            return Ok(strategy);
        };
        let sidecar = sidecar_path(path);
        if strategy.params_schema().is_some() || !sidecar.is_file() {
            return Ok(strategy);
        }
        let bytes = std::fs::read(&sidecar)
            .map_err(|e| PluginError::Load(format!("cannot read {}: {e}", sidecar.display())))?;
        let schema =
            parse_params_schema(&bytes).map_err(|e| PluginError::Load(format!("{}: {e}", sidecar.display())))?;
        Ok(strategy.with_sidecar_schema(schema))
    }
}

/// Hex SHA-256 of a module.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
