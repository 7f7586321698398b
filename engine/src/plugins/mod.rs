//! Strategy plugins: the wasmtime adapter of the [`crate::strategy`] seam.
//!
//! A strategy is a core wasm module speaking ABI v1 (JSON input) or v2 (flat
//! input, `swapline_abi::v2`; the built-ins), see `swapline_abi`,
//! run per call in a fresh instance under fuel, an epoch deadline and a
//! memory cap; [`WasmStrategy`] implements [`crate::strategy::Strategy`].
//! `cache` keeps compiled modules in memory and on disk; [`watch`] notices
//! changed config and plugin files for hot reload; [`cli`] backs
//! `swapline plugins`; [`config`] holds `[plugins]` and `[pipelines]`.
//! Never `pipeline`, `api` or another adapter.
//!
//! May import: `domain`, `strategy`, `telemetry`.

mod cache;
pub mod cli;
pub mod config;
mod host;
pub mod watch;

use crate::strategy::PluginError;
pub use config::{MAX_CHAIN, PipelineConfig, PluginsConfig, StrategyChain};
pub use host::{CallReport, PARAMS_SCHEMA_EXPORT, PluginHost, WasmStrategy, parse_params_schema};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

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

/// Hex SHA-256 of a module.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
