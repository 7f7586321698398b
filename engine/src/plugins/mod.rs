//! Strategy plugins: the `Strategy` seam and its wasmtime host.
//!
//! A strategy is a core wasm module speaking ABI v1 (see `swapline_abi`),
//! run per call in a fresh instance under fuel, an epoch deadline and a
//! memory cap. Its answer is checked by [`validate`] before anything acts on
//! it. Imports `config`, `domain` and the ABI only.

mod host;
pub mod validate;

use crate::domain::StrategyRef;
use async_trait::async_trait;
pub use host::{PluginHost, WasmStrategy};
use sha2::{Digest, Sha256};
use std::path::Path;
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
            PluginError::InvalidRoute { .. } => "invalid_route",
        }
    }
}

/// A routing strategy: picks the legs of a route from quotes and pools.
#[async_trait]
pub trait Strategy: Send + Sync {
    /// Name and module digest, recorded on every order it routes.
    fn id(&self) -> &StrategyRef;

    /// Asks the strategy for a route. The answer is not validated yet.
    async fn route(&self, input: &RouteInput) -> Result<RouteDecision, PluginError>;
}

/// Resolves a `strategy` setting to (name, module bytes): a built-in name,
/// or a path to a `.wasm` file.
pub fn resolve(setting: &str) -> Result<(String, Vec<u8>), PluginError> {
    if let Some((name, bytes)) = BUILTIN_PLUGINS.iter().find(|(name, _)| *name == setting) {
        return Ok(((*name).to_owned(), bytes.to_vec()));
    }
    let path = Path::new(setting);
    if setting.ends_with(".wasm") || setting.contains('/') {
        let bytes =
            std::fs::read(path).map_err(|e| PluginError::Load(format!("cannot read {}: {e}", path.display())))?;
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or(setting).to_owned();
        return Ok((name, bytes));
    }
    let known: Vec<&str> = BUILTIN_PLUGINS.iter().map(|(name, _)| *name).collect();
    Err(PluginError::Load(format!(
        "unknown strategy {setting:?}: built-in strategies are {}; or give a path to a .wasm file",
        known.join(", ")
    )))
}

/// Hex SHA-256 of a module.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
