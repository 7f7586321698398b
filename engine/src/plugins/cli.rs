//! What `swapline plugins list | check | test` do, as library functions
//! returning reports (the binary only prints them).

use super::PipelineConfig;
use super::{CallReport, PluginHost, Source, WasmStrategy, builtin_names, resolve};
use crate::strategy::{PluginError, validate::validate};
use serde::Serialize;
use std::{collections::BTreeMap, fmt};
use swapline_abi::{Bin, OrderInfo, PoolState, RouteDecision, RouteInput, Units, VenueQuote};

/// One module, as `plugins list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    /// Built-in name or file stem.
    pub name: String,
    /// `built-in` or the file path.
    pub source: String,
    /// SHA-256 of the module bytes.
    pub sha256: String,
    /// What `swapline_abi_version` answered at load: 1 (JSON input) or 2
    /// (flat input, `swapline_abi::v2`).
    pub abi_version: i32,
    /// Export names.
    pub exports: Vec<String>,
    /// Whether it declares a params schema (export or sidecar).
    pub params_schema: bool,
    /// Pipelines whose chain names it.
    pub pipelines: Vec<String>,
}

impl fmt::Display for PluginInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.name)?;
        writeln!(f, "  source       {}", self.source)?;
        writeln!(f, "  sha256       {}", self.sha256)?;
        let input = match self.abi_version {
            1 => "JSON input",
            _ => "flat input",
        };
        writeln!(f, "  abi          v{} ({input})", self.abi_version)?;
        writeln!(f, "  exports      {}", self.exports.join(", "))?;
        writeln!(
            f,
            "  params       {}",
            if self.params_schema {
                "schema declared"
            } else {
                "no schema"
            }
        )?;
        let used = if self.pipelines.is_empty() {
            "-".to_owned()
        } else {
            self.pipelines.join(", ")
        };
        write!(f, "  pipelines    {used}")
    }
}

fn info(strategy: &WasmStrategy, source: String, pipelines: Vec<String>) -> Result<PluginInfo, PluginError> {
    Ok(PluginInfo {
        name: strategy.strategy_ref().name.clone(),
        source,
        sha256: strategy.strategy_ref().sha256.clone(),
        abi_version: strategy.abi(),
        exports: strategy.exports(),
        params_schema: strategy.params_schema().is_some(),
        pipelines,
    })
}

/// Every built-in strategy and every module file the configuration's
/// pipelines name, loaded and checked.
pub fn list(pipelines: &BTreeMap<String, PipelineConfig>, host: &PluginHost) -> Result<Vec<PluginInfo>, PluginError> {
    let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (pipeline, settings) in pipelines {
        for setting in &settings.strategy.0 {
            users.entry(setting.clone()).or_default().push(pipeline.clone());
        }
    }
    let mut settings: Vec<String> = builtin_names().into_iter().map(str::to_owned).collect();
    settings.extend(
        users
            .keys()
            .filter(|s| !settings.contains(s))
            .cloned()
            .collect::<Vec<_>>(),
    );
    settings
        .into_iter()
        .map(|setting| {
            let source = match resolve(&setting)?.source {
                Source::Builtin => "built-in".to_owned(),
                Source::File(path) => path.display().to_string(),
            };
            let strategy = host.load_setting(&setting)?;
            info(&strategy, source, users.remove(&setting).unwrap_or_default())
        })
        .collect()
}

/// The input `plugins check` routes: 1 SOL to USDC, quoted by a
/// constant-product pool and a bins pool.
pub fn sample_input() -> RouteInput {
    let bins = (0..20)
        .map(|i| Bin {
            price: 0.1501 * (1.0 - 0.001 * f64::from(i)),
            liquidity_out: Units(300_000_000_000),
        })
        .collect();
    let raydium = PoolState::ConstantProduct {
        reserve_in: Units(500_000_000_000_000),
        reserve_out: Units(75_000_000_000_000),
        fee_bps: 25,
    };
    let meteora = PoolState::Bins {
        bins,
        base_fee_bps: 20,
        variable_fee_bps: 1,
        max_fee_bps: 200,
    };
    let amount = 1_000_000_000;
    let quote = |venue: &str, pool: PoolState| {
        let swap = pool.swap(amount).expect("the sample pools fill 1 SOL");
        VenueQuote {
            venue: venue.into(),
            amount_out: Units(swap.amount_out),
            fee_bps: swap.fee_bps,
            price_impact_bps: swap.price_impact_bps,
            latency_ms: 5,
            pool,
            stats: None,
        }
    };
    RouteInput {
        order: OrderInfo {
            id: "00000000-0000-4000-8000-000000000000".into(),
            token_in: "SOL".into(),
            token_out: "USDC".into(),
            amount_in: Units(amount),
            slippage_bps: 50,
        },
        quotes: vec![quote("raydium", raydium), quote("meteora", meteora)],
        params: Default::default(),
    }
}

/// One routing call and what the host made of it.
#[derive(Debug, Clone)]
pub struct TestReport {
    /// The plugin's decision, or why there is none.
    pub decision: Result<RouteDecision, PluginError>,
    /// The host's verdict on the decision (when there is one).
    pub validation: Option<Result<(), PluginError>>,
    /// Fuel, time and logs.
    pub call: CallReport,
}

impl TestReport {
    /// Whether the plugin answered a route the host accepts.
    pub fn passed(&self) -> bool {
        matches!(self.validation, Some(Ok(())))
    }
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.decision {
            Ok(decision) => writeln!(
                f,
                "decision   {}",
                serde_json::to_string_pretty(decision)
                    .unwrap_or_default()
                    .replace('\n', "\n           ")
            )?,
            Err(e) => writeln!(f, "decision   none: plugin_error: {e}")?,
        }
        match &self.validation {
            Some(Ok(())) => writeln!(f, "host check passed")?,
            Some(Err(e)) => writeln!(f, "host check FAILED: plugin_error: {e}")?,
            None => {}
        }
        writeln!(f, "fuel used  {}", self.call.fuel_used)?;
        writeln!(f, "time       {:?}", self.call.elapsed)?;
        for line in &self.call.logs {
            writeln!(f, "log        {line}")?;
        }
        if self.call.logs_dropped > 0 {
            writeln!(f, "log        … {} more dropped", self.call.logs_dropped)?;
        }
        Ok(())
    }
}

/// Routes `input` once through `strategy` and checks the answer.
pub fn test(strategy: &WasmStrategy, input: &RouteInput) -> TestReport {
    let (decision, call) = strategy.route_blocking(input);
    let validation = decision
        .as_ref()
        .ok()
        .map(|decision| validate(input, decision).map(|_| ()));
    TestReport {
        decision,
        validation,
        call,
    }
}

/// What `plugins check` found.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// The module.
    pub info: PluginInfo,
    /// Its imports (`module.name`); only `swapline.log` passes the load.
    pub imports: Vec<String>,
    /// The limits it was loaded and run under.
    pub limits: String,
    /// The dry run on [`sample_input`].
    pub dry_run: TestReport,
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.info)?;
        let imports = if self.imports.is_empty() {
            "none".to_owned()
        } else {
            self.imports.join(", ")
        };
        writeln!(f, "  imports      {imports} (allowed: swapline.log)")?;
        writeln!(f, "  limits       {}", self.limits)?;
        writeln!(f, "dry run on the sample input (1 SOL → USDC, raydium + meteora):")?;
        write!(f, "{}", self.dry_run)
    }
}

/// Loads a module (size, compile time, imports, exports, ABI version,
/// params schema) and routes the sample input with it.
pub fn check(host: &PluginHost, setting: &str) -> Result<CheckReport, PluginError> {
    let strategy = host.load_setting(setting)?;
    let source = match resolve(setting)?.source {
        Source::Builtin => "built-in".to_owned(),
        Source::File(path) => path.display().to_string(),
    };
    let l = host.limits();
    let limits = format!(
        "fuel {}, deadline {}, memory {} B, module {} B, output {} B, compile {}",
        l.fuel,
        humantime::format_duration(l.deadline.0),
        l.memory_limit_bytes,
        l.max_module_bytes,
        l.max_output_bytes,
        humantime::format_duration(l.compile_timeout.0)
    );
    Ok(CheckReport {
        info: info(&strategy, source, Vec::new())?,
        imports: strategy.imports(),
        limits,
        dry_run: test(&strategy, &sample_input()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Sources};

    fn config() -> Config {
        Sources {
            profile: "dev".into(),
            config_dir: Some(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs").into()),
            files: vec![],
            env: false,
        }
        .load()
        .unwrap()
    }

    #[test]
    fn list_shows_every_builtin_with_its_digest_and_users() {
        let config = config();
        let host = PluginHost::new(config.plugins.clone(), None).unwrap();
        let listed = list(&config.pipelines, &host).unwrap();
        let names: Vec<&str> = listed.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["best-price", "split", "reliability-weighted"]);
        assert_eq!(listed[0].pipelines, ["market"]);
        assert!(
            listed
                .iter()
                .all(|p| p.abi_version == 2 && p.sha256.len() == 64 && p.params_schema)
        );
        assert!(listed[1].exports.iter().any(|e| e == "route"));
        assert!(listed[1].to_string().contains("source       built-in"));
        assert!(listed[1].to_string().contains("abi          v2 (flat input)"));
    }

    #[test]
    fn check_dry_runs_the_sample_input_and_test_reports_fuel() {
        let config = config();
        let host = PluginHost::new(config.plugins.clone(), None).unwrap();
        let report = check(&host, "split").unwrap();
        assert!(report.dry_run.passed(), "{report}");
        assert!(report.dry_run.call.fuel_used > 0);
        let text = report.to_string();
        assert!(text.contains("host check passed"), "{text}");
        assert!(text.contains("imports      none"), "{text}");
    }

    #[test]
    fn check_refuses_a_module_with_a_forbidden_import() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wasi.wasm");
        std::fs::write(
            &path,
            "(module (import \"wasi_snapshot_preview1\" \"fd_write\" (func)))",
        )
        .unwrap();
        let host = PluginHost::new(config().plugins, None).unwrap();
        let error = check(&host, path.to_str().unwrap()).unwrap_err();
        assert!(error.to_string().contains("is not allowed"), "{error}");
    }
}
