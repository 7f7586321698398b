//! The wasmtime host: compile once, instantiate per call, contain the guest.
//!
//! Memory ownership (ABI v1 and v2 alike): the host writes the input into a
//! buffer the guest allocated with `alloc`; the guest's answer stays in guest memory and
//! the host copies it out; the instance (and all its memory) is dropped after
//! the call, so nothing leaks between orders. Instances come from a pooling
//! allocator (`plugins.pooled_instances` slots) so that a fresh instance per
//! call costs microseconds.
//!
//! The module's `swapline_abi_version()` answer, read once at load, picks the
//! input encoding for every call: UTF-8 JSON for v1, the flat layout of
//! [`swapline_abi::v2`] for v2 (no JSON parse in the guest). Answers are
//! JSON of a `PluginAnswer` in both, parsed and checked by one function.

use super::{Source, cache::ModuleCache, resolve, sha256_hex, sidecar_path};
use crate::{
    domain::StrategyRef,
    plugins::PluginsConfig,
    strategy::{PluginError, Strategy},
};
use async_trait::async_trait;
use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};
use swapline_abi::{ABI_V1, ABI_VERSION, ABI_VERSIONS, PluginAnswer, RouteDecision, RouteInput};
use wasmtime::{
    Caller, Config, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Linker, Memory, Module,
    PoolingAllocationConfig, ResourceLimiter, Store, Trap, ValType,
};

/// How often the epoch advances; deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Wasm stack cap: deep recursion traps instead of taking the thread down.
const MAX_WASM_STACK: usize = 512 * 1024;
/// Bytes at the start of each pooled linear memory that are zeroed with
/// `memset` when an instance ends, instead of being handed back to the
/// kernel. A built-in strategy touches about this much per call (a 64 KiB
/// stack, ~32 KiB of data, a few heap pages; `engine/build.rs`), so the next
/// call in the slot takes no page faults and the reset no `madvise` and TLB
/// shootdown there; beyond it pages are returned as before. Measured on the
/// strategy bench: a warm best-price call 33 → 20 µs; 128 KiB (too small) and
/// 512 KiB (memset dominates) were slower.
const KEEP_RESIDENT_BYTES: usize = 256 * 1024;
/// Table elements an instance may have.
const MAX_TABLE_ELEMENTS: usize = 10_000;
/// The optional export declaring the params' JSON Schema.
pub const PARAMS_SCHEMA_EXPORT: &str = "swapline_params_schema";

/// Owns the wasmtime engine, the sandbox limits and the compiled-module
/// cache; loads strategies.
#[derive(Clone)]
pub struct PluginHost {
    engine: Engine,
    limits: Arc<PluginsConfig>,
    cache: Arc<ModuleCache>,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost").finish_non_exhaustive()
    }
}

/// `swapline.log` lines a module may write per second, across all its calls:
/// a counter per one-second window (a window starts at its first line).
struct LogRate {
    per_second: u32,
    window: std::sync::Mutex<(Instant, u32)>,
}

impl LogRate {
    fn new(per_second: u32) -> Self {
        LogRate {
            per_second,
            window: std::sync::Mutex::new((Instant::now(), 0)),
        }
    }

    /// Takes one line from this second's budget; `false` when it is spent.
    fn take(&self) -> bool {
        if self.per_second == 0 {
            return true;
        }
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if window.0.elapsed() >= Duration::from_secs(1) {
            *window = (Instant::now(), 0);
        }
        if window.1 >= self.per_second {
            return false;
        }
        window.1 += 1;
        true
    }
}

struct HostState {
    name: String,
    memory_cap: usize,
    memory_hit: bool,
    log_rate: Arc<LogRate>,
    logs_left: u32,
    log_line_max: usize,
    logs: Vec<String>,
    logs_dropped: u32,
}

impl ResourceLimiter for HostState {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.memory_hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// What one call cost and said, beside its answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallReport {
    /// Fuel the call burnt (≈ wasm instructions), instantiation included.
    pub fuel_used: u64,
    /// Wall-clock time of the call, instantiation included.
    pub elapsed: Duration,
    /// `swapline.log` lines kept (each cut to `plugins.log_line_max_bytes`).
    pub logs: Vec<String>,
    /// `swapline.log` calls dropped past `plugins.log_lines_per_call` or
    /// `plugins.log_lines_per_second`.
    pub logs_dropped: u32,
}

impl PluginHost {
    /// Builds the engine and starts the epoch ticker (a thread that lives as
    /// long as the engine does). Compiled modules are cached in memory, and
    /// on disk under `cache_dir` when given.
    pub fn new(limits: PluginsConfig, cache_dir: Option<PathBuf>) -> Result<Self, PluginError> {
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(MAX_WASM_STACK);
        if limits.pooled_instances > 0 {
            let mut pool = PoolingAllocationConfig::default();
            pool.total_core_instances(limits.pooled_instances)
                .total_memories(limits.pooled_instances)
                .total_tables(limits.pooled_instances)
                .max_memory_size(limits.memory_limit_bytes as usize)
                .table_elements(MAX_TABLE_ELEMENTS);
            // Zero the first pages of a returned slot in place rather than
            // unmapping them: the next call then takes no page faults there
            // (measured in ops/benchmarks.md).
            pool.linear_memory_keep_resident(KEEP_RESIDENT_BYTES.min(limits.memory_limit_bytes as usize));
            // Each slot reserves the cap plus a guard instead of 4 GiB of
            // address space: explicit bounds checks, a compact pool.
            config
                .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
                .memory_reservation(limits.memory_limit_bytes);
        }
        let engine = Engine::new(&config).map_err(|e| PluginError::Load(format!("wasm engine: {e}")))?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| PluginError::Load(format!("epoch thread: {e}")))?;
        let cache = Arc::new(ModuleCache::new(&engine, cache_dir));
        Ok(PluginHost {
            engine,
            limits: Arc::new(limits),
            cache,
        })
    }

    /// The sandbox limits this host applies.
    pub fn limits(&self) -> &PluginsConfig {
        &self.limits
    }

    /// Compiles (or finds in the cache) and checks a module: size, imports
    /// (only `swapline.log`), exports, ABI version and, when exported, the
    /// params schema.
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<WasmStrategy, PluginError> {
        if bytes.len() as u64 > self.limits.max_module_bytes {
            return Err(PluginError::Load(format!(
                "{name}: module is {} bytes, over plugins.max_module_bytes = {}",
                bytes.len(),
                self.limits.max_module_bytes
            )));
        }
        let sha256 = sha256_hex(bytes);
        let module = self
            .cache
            .get_or_compile(&self.engine, &sha256, bytes, self.limits.compile_timeout.0)
            .map_err(|e| PluginError::Load(format!("{name}: {e}")))?;
        check_imports(name, &module)?;
        check_exports(name, &module)?;

        let mut linker: Linker<HostState> = Linker::new(&self.engine);
        linker
            .func_wrap("swapline", "log", host_log)
            .map_err(|e| PluginError::Load(format!("{name}: {e}")))?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| PluginError::Load(format!("{name}: {e}")))?;
        let mut strategy = WasmStrategy {
            id: StrategyRef {
                name: name.to_owned(),
                sha256,
            },
            engine: self.engine.clone(),
            module,
            pre,
            limits: self.limits.clone(),
            params_schema: None,
            log_rate: Arc::new(LogRate::new(self.limits.log_lines_per_second)),
            abi: ABI_V1,
        };
        let version = strategy.abi_version()?;
        if !ABI_VERSIONS.contains(&version) {
            return Err(PluginError::Load(format!(
                "{name}: swapline_abi_version() returned {version}, this engine speaks {}",
                ABI_VERSIONS.map(|v| v.to_string()).join(" and ")
            )));
        }
        strategy.abi = version;
        strategy.params_schema = strategy.exported_params_schema()?.map(Arc::new);
        Ok(strategy)
    }

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

fn check_imports(name: &str, module: &Module) -> Result<(), PluginError> {
    for import in module.imports() {
        let allowed = import.module() == "swapline"
            && import.name() == "log"
            && matches!(import.ty(), ExternType::Func(f)
                if f.params().map(|p| matches!(p, ValType::I32)).eq([true, true, true]) && f.results().len() == 0);
        if !allowed {
            return Err(PluginError::Load(format!(
                "{name}: import {}.{} is not allowed; a strategy may import only swapline.log(i32, i32, i32)",
                import.module(),
                import.name()
            )));
        }
    }
    Ok(())
}

fn check_exports(name: &str, module: &Module) -> Result<(), PluginError> {
    let shape = |types: &mut dyn Iterator<Item = ValType>| -> Vec<String> { types.map(|t| t.to_string()).collect() };
    let func = |export: &str, params: &[&str], results: &[&str], required: bool| -> Result<(), PluginError> {
        match module.get_export(export) {
            None if !required => Ok(()),
            Some(ExternType::Func(f)) if shape(&mut f.params()) == params && shape(&mut f.results()) == results => {
                Ok(())
            }
            _ => Err(PluginError::Load(format!(
                "{name}: must export function {export}({}) -> ({}) (ABI v1 and v{ABI_VERSION})",
                params.join(", "),
                results.join(", ")
            ))),
        }
    };
    func("swapline_abi_version", &[], &["i32"], true)?;
    func("alloc", &["i32"], &["i32"], true)?;
    func("route", &["i32", "i32"], &["i64"], true)?;
    func(PARAMS_SCHEMA_EXPORT, &[], &["i64"], false)?;
    match module.get_export("memory") {
        Some(ExternType::Memory(_)) => Ok(()),
        _ => Err(PluginError::Load(format!("{name}: must export its `memory`"))),
    }
}

/// `swapline.log(level, ptr, len)`: at most `plugins.log_lines_per_call`
/// lines per call and `plugins.log_lines_per_second` per module, each cut to
/// `plugins.log_line_max_bytes`.
fn host_log(mut caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32) {
    if caller.data().logs_left == 0 || !caller.data().log_rate.take() {
        caller.data_mut().logs_dropped += 1;
        return;
    }
    caller.data_mut().logs_left -= 1;
    let Some(memory) = caller.get_export("memory").and_then(|e| e.into_memory()) else {
        return;
    };
    let cap = caller.data().log_line_max;
    let len = (len.max(0) as usize).min(cap);
    let mut buffer = vec![0u8; len];
    if memory.read(&caller, ptr.max(0) as usize, &mut buffer).is_err() {
        return;
    }
    let line = String::from_utf8_lossy(&buffer).into_owned();
    let plugin = caller.data().name.as_str();
    match level {
        2 => tracing::warn!(plugin, "{line}"),
        1 => tracing::info!(plugin, "{line}"),
        _ => tracing::debug!(plugin, "{line}"),
    }
    caller.data_mut().logs.push(line);
}

/// A loaded strategy module.
#[derive(Clone)]
pub struct WasmStrategy {
    id: StrategyRef,
    engine: Engine,
    module: Module,
    pre: InstancePre<HostState>,
    limits: Arc<PluginsConfig>,
    params_schema: Option<Arc<serde_json::Value>>,
    log_rate: Arc<LogRate>,
    /// What `swapline_abi_version()` answered at load: 1 or 2.
    abi: i32,
}

impl std::fmt::Debug for WasmStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmStrategy").finish_non_exhaustive()
    }
}

impl WasmStrategy {
    fn store(&self) -> Result<Store<HostState>, PluginError> {
        let mut store = Store::new(
            &self.engine,
            HostState {
                name: self.id.name.clone(),
                memory_cap: self.limits.memory_limit_bytes as usize,
                memory_hit: false,
                log_rate: self.log_rate.clone(),
                logs_left: self.limits.log_lines_per_call,
                log_line_max: self.limits.log_line_max_bytes as usize,
                logs: Vec::new(),
                logs_dropped: 0,
            },
        );
        store.limiter(|state| state);
        store
            .set_fuel(self.limits.fuel)
            .map_err(|e| PluginError::Load(format!("fuel: {e}")))?;
        let ticks = self.limits.deadline.0.as_millis().div_ceil(EPOCH_TICK.as_millis()) as u64 + 1;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        Ok(store)
    }

    fn classify(&self, store: &Store<HostState>, error: wasmtime::Error) -> PluginError {
        if store.data().memory_hit {
            return PluginError::MemoryLimit(format!(
                "grew past plugins.memory_limit_bytes = {}",
                self.limits.memory_limit_bytes
            ));
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => PluginError::Timeout(format!("used all {} fuel (plugins.fuel)", self.limits.fuel)),
            Some(Trap::Interrupt) => PluginError::Timeout(format!(
                "ran past the {} deadline (plugins.deadline)",
                humantime::format_duration(self.limits.deadline.0)
            )),
            Some(Trap::StackOverflow) => PluginError::Trap("stack overflow".into()),
            Some(trap) => PluginError::Trap(trap.to_string()),
            None => PluginError::Trap(error.to_string()),
        }
    }

    /// The module's name and digest.
    pub fn strategy_ref(&self) -> &StrategyRef {
        &self.id
    }

    /// Names of the module's exports.
    pub fn exports(&self) -> Vec<String> {
        self.module.exports().map(|e| e.name().to_owned()).collect()
    }

    /// The module's imports as `module.name`.
    pub fn imports(&self) -> Vec<String> {
        self.module
            .imports()
            .map(|i| format!("{}.{}", i.module(), i.name()))
            .collect()
    }

    /// The ABI version the module declared at load (1: JSON input, 2: flat
    /// input); it picks the encoding of every call's input.
    pub fn abi(&self) -> i32 {
        self.abi
    }

    /// The input bytes this module's ABI expects: JSON for v1, the flat
    /// [`swapline_abi::v2`] layout for v2.
    ///
    /// # Errors
    /// [`PluginError::InvalidOutput`] if JSON serialisation fails (it cannot
    /// for these plain types; the variant matches what callers report).
    pub fn encode_input(&self, input: &RouteInput) -> Result<Vec<u8>, PluginError> {
        if self.abi == ABI_V1 {
            serde_json::to_vec(input).map_err(|e| PluginError::InvalidOutput(e.to_string()))
        } else {
            Ok(swapline_abi::v2::encode_input(input))
        }
    }

    /// Calls `swapline_abi_version` in a fresh instance.
    pub fn abi_version(&self) -> Result<i32, PluginError> {
        let mut store = self.store()?;
        let instance = self.pre.instantiate(&mut store).map_err(|e| {
            let error = self.classify(&store, e);
            PluginError::Load(format!("{}: instantiation failed: {error}", self.id.name))
        })?;
        let version = instance
            .get_typed_func::<(), i32>(&mut store, "swapline_abi_version")
            .map_err(|e| PluginError::Load(e.to_string()))?;
        version.call(&mut store, ()).map_err(|e| {
            let error = self.classify(&store, e);
            PluginError::Load(format!("{}: swapline_abi_version failed: {error}", self.id.name))
        })
    }

    /// Calls `swapline_params_schema` (when exported) in a fresh instance and
    /// checks that it answers a JSON Schema.
    fn exported_params_schema(&self) -> Result<Option<serde_json::Value>, PluginError> {
        if self.module.get_export(PARAMS_SCHEMA_EXPORT).is_none() {
            return Ok(None);
        }
        let name = &self.id.name;
        let failed = |e: PluginError| PluginError::Load(format!("{name}: {PARAMS_SCHEMA_EXPORT} failed: {e}"));
        let mut store = self.store()?;
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| failed(self.classify(&store, e)))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| PluginError::Load(format!("{name}: no memory export")))?;
        let export = instance
            .get_typed_func::<(), i64>(&mut store, PARAMS_SCHEMA_EXPORT)
            .map_err(|e| PluginError::Load(e.to_string()))?;
        let packed = export
            .call(&mut store, ())
            .map_err(|e| failed(self.classify(&store, e)))?;
        let bytes = self.read_packed(&store, memory, packed).map_err(failed)?;
        parse_params_schema(&bytes)
            .map(Some)
            .map_err(|e| PluginError::Load(format!("{name}: {e}")))
    }

    /// The JSON Schema the plugin declared for its params, if any.
    pub fn params_schema(&self) -> Option<&serde_json::Value> {
        self.params_schema.as_deref()
    }

    /// Uses `schema` (from a sidecar file) unless the module exports one.
    pub fn with_sidecar_schema(mut self, schema: serde_json::Value) -> Self {
        if self.params_schema.is_none() {
            self.params_schema = Some(Arc::new(schema));
        }
        self
    }

    fn read_packed(&self, store: &Store<HostState>, memory: Memory, packed: i64) -> Result<Vec<u8>, PluginError> {
        let (ptr, len) = ((packed as u64 >> 32) as usize, (packed as u64 & 0xFFFF_FFFF) as usize);
        if len as u64 > self.limits.max_output_bytes {
            return Err(PluginError::OutputTooLarge(format!(
                "{len} bytes, over plugins.max_output_bytes = {}",
                self.limits.max_output_bytes
            )));
        }
        let mut out = vec![0u8; len];
        memory
            .read(store, ptr, &mut out)
            .map_err(|_| PluginError::InvalidOutput(format!("answer at {ptr}+{len} lies outside guest memory")))?;
        Ok(out)
    }

    /// One call: fresh instance, input in, answer bytes out, with what the
    /// call cost. The report is there even when the call failed.
    pub fn call(&self, input: &[u8]) -> (Result<Vec<u8>, PluginError>, CallReport) {
        let started = Instant::now();
        let mut store = match self.store() {
            Ok(store) => store,
            Err(e) => return (Err(e), CallReport::default()),
        };
        let result = self.call_in(&mut store, input);
        let fuel_left = store.get_fuel().unwrap_or(0);
        let state = store.data_mut();
        let report = CallReport {
            fuel_used: self.limits.fuel.saturating_sub(fuel_left),
            elapsed: started.elapsed(),
            logs: std::mem::take(&mut state.logs),
            logs_dropped: state.logs_dropped,
        };
        (result, report)
    }

    fn call_in(&self, store: &mut Store<HostState>, input: &[u8]) -> Result<Vec<u8>, PluginError> {
        let instance = self.pre.instantiate(&mut *store).map_err(|e| self.classify(store, e))?;
        let memory = instance
            .get_memory(&mut *store, "memory")
            .ok_or_else(|| PluginError::Load("no memory export".into()))?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut *store, "alloc")
            .map_err(|e| PluginError::Load(e.to_string()))?;
        let route = instance
            .get_typed_func::<(i32, i32), i64>(&mut *store, "route")
            .map_err(|e| PluginError::Load(e.to_string()))?;

        let len = i32::try_from(input.len()).map_err(|_| PluginError::InvalidOutput("input too large".into()))?;
        let ptr = alloc.call(&mut *store, len).map_err(|e| self.classify(store, e))?;
        memory
            .write(&mut *store, ptr as u32 as usize, input)
            .map_err(|_| PluginError::InvalidOutput(format!("alloc returned {ptr}, outside guest memory")))?;
        let packed = route
            .call(&mut *store, (ptr, len))
            .map_err(|e| self.classify(store, e))?;
        self.read_packed(store, memory, packed)
    }

    /// Creates and drops one instance: what every call pays before `alloc`
    /// and `route` run (the benchmark measures it alone).
    pub fn instantiate(&self) -> Result<(), PluginError> {
        let mut store = self.store()?;
        self.pre.instantiate(&mut store).map_err(|e| self.classify(&store, e))?;
        Ok(())
    }

    /// One call without the report.
    pub fn call_raw(&self, input: &[u8]) -> Result<Vec<u8>, PluginError> {
        self.call(input).0
    }

    /// Routes `input` on the calling thread and reports what it cost (the
    /// `swapline plugins test` path; the engine uses [`Strategy::route`]).
    pub fn route_blocking(&self, input: &RouteInput) -> (Result<RouteDecision, PluginError>, CallReport) {
        let bytes = match self.encode_input(input) {
            Ok(bytes) => bytes,
            Err(e) => return (Err(e), CallReport::default()),
        };
        let (out, report) = self.call(&bytes);
        (out.and_then(|out| Self::parse_answer(&out)), report)
    }

    /// Parses answer bytes into a decision.
    pub fn parse_answer(bytes: &[u8]) -> Result<RouteDecision, PluginError> {
        let text = std::str::from_utf8(bytes).map_err(|e| PluginError::InvalidOutput(format!("not UTF-8: {e}")))?;
        match serde_json::from_str::<PluginAnswer>(text) {
            Ok(PluginAnswer::Ok(decision)) => Ok(decision),
            Ok(PluginAnswer::Error(error)) => Err(PluginError::Declined {
                code: error.code,
                message: error.message,
            }),
            Err(e) => Err(PluginError::InvalidOutput(format!("not a PluginAnswer: {e}"))),
        }
    }
}

/// Parses a declared params schema: JSON, an object, and a schema that
/// compiles.
pub fn parse_params_schema(bytes: &[u8]) -> Result<serde_json::Value, String> {
    let schema: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("params schema is not JSON: {e}"))?;
    if !schema.is_object() {
        return Err("params schema must be a JSON object".into());
    }
    jsonschema::validator_for(&schema).map_err(|e| format!("params schema does not compile: {e}"))?;
    Ok(schema)
}

#[async_trait]
impl Strategy for WasmStrategy {
    fn id(&self) -> &StrategyRef {
        &self.id
    }

    fn params_schema(&self) -> Option<&serde_json::Value> {
        self.params_schema.as_deref()
    }

    async fn route(&self, input: &RouteInput) -> Result<RouteDecision, PluginError> {
        let bytes = self.encode_input(input)?;
        let this = self.clone();
        // A hostile guest may spin until its deadline: keep it off the async
        // worker threads.
        let (out, report) = tokio::task::spawn_blocking(move || this.call(&bytes))
            .await
            .map_err(|e| PluginError::Trap(format!("host task: {e}")))?;
        crate::telemetry::event::plugin_fuel(&self.id.name, report.fuel_used);
        Self::parse_answer(&out?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Dur;
    use swapline_abi::{
        Units,
        testing::{QuoteBuilder, RouteInputBuilder},
    };

    fn limits() -> PluginsConfig {
        PluginsConfig {
            fuel: 50_000_000,
            deadline: Dur(Duration::from_millis(200)),
            memory_limit_bytes: 4 << 20,
            max_module_bytes: 8 << 20,
            max_output_bytes: 1 << 20,
            log_lines_per_call: 5,
            log_line_max_bytes: 256,
            log_lines_per_second: 0,
            compile_timeout: Dur(Duration::from_secs(30)),
            cache_compiled: false,
            pooled_instances: 16,
            watch_interval: Dur(Duration::ZERO),
        }
    }

    /// 1,000 SOL base units at 50 bps; raydium and meteora quote on
    /// 1,000,000 / 1,000,000 pools with a 25 bps fee.
    fn input() -> RouteInput {
        let quote = |venue: &str, out| {
            QuoteBuilder::new(venue)
                .cpmm(1_000_000, 1_000_000, 25)
                .price_impact_bps(1)
                .amount_out(out)
                .build()
        };
        RouteInputBuilder::new()
            .pair("SOL", "USDC")
            .slippage_bps(50)
            .quotes([quote("raydium", 990), quote("meteora", 995)])
            .build()
    }

    /// A module (WAT text; the engine compiles text too) that satisfies ABI
    /// v1 and runs `body` inside `route`.
    fn wat_plugin(body: &str, extra: &str) -> Vec<u8> {
        wat_module(1, body, extra)
    }

    /// The same, declaring ABI `version`.
    fn wat_module(version: i32, body: &str, extra: &str) -> Vec<u8> {
        format!(
            r#"(module
                 {extra}
                 (memory (export "memory") 1)
                 (global $top (mut i32) (i32.const 1024))
                 (func (export "swapline_abi_version") (result i32) i32.const {version})
                 (func (export "alloc") (param i32) (result i32) global.get $top)
                 (func (export "route") (param i32 i32) (result i64) {body}))"#
        )
        .into_bytes()
    }

    async fn run(bytes: &[u8]) -> Result<RouteDecision, PluginError> {
        let host = PluginHost::new(limits(), None).unwrap();
        host.load("test", bytes)?.route(&input()).await
    }

    /// `best-price` as the ABI v1 SDK built it (the last built-in before v2,
    /// JSON input), kept to prove that v1 modules keep loading and routing.
    const BEST_PRICE_V1: &[u8] = include_bytes!("../../../tests/e2e/fixtures/best-price-v1.wasm");

    #[tokio::test]
    async fn a_v1_module_keeps_loading_and_routing_with_json_input() {
        let host = PluginHost::new(limits(), None).unwrap();
        let v1 = host.load("best-price-v1", BEST_PRICE_V1).unwrap();
        assert_eq!(v1.abi(), 1);
        assert!(v1.params_schema().is_some());
        assert_eq!(
            v1.encode_input(&input()).unwrap(),
            serde_json::to_vec(&input()).unwrap()
        );
        let decision = v1.route(&input()).await.unwrap();
        assert_eq!(decision.legs[0].venue, "meteora");
        assert_eq!(decision.legs[0].amount_in, Units(1_000));
        // The v2 build of the same strategy answers the same.
        let v2 = builtin("best-price").await;
        assert_eq!(v2.abi(), 2);
        assert_eq!(v2.route(&input()).await.unwrap(), decision);
    }

    #[tokio::test]
    async fn the_declared_version_picks_the_input_encoding() {
        // Answers {"error":{"code":"first_?",…}} with ? the input's first byte.
        let json = r#"{"error":{"code":"first_?","message":"seen"}}"#;
        let extra = format!(r#"(data (i32.const 2048) "{}")"#, json.replace('"', "\\\""));
        let body = format!(
            "(i32.store8 (i32.const {}) (i32.load8_u (local.get 0))) i64.const {}",
            2048 + json.find('?').unwrap(),
            (2048u64 << 32) | json.len() as u64
        );
        let host = PluginHost::new(limits(), None).unwrap();
        for (version, first) in [(1, "first_{"), (2, "first_S")] {
            let strategy = host.load("first", &wat_module(version, &body, &extra)).unwrap();
            assert_eq!(strategy.abi(), version);
            match strategy.route(&input()).await {
                Err(PluginError::Declined { code, .. }) => assert_eq!(code, first),
                other => panic!("v{version}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_unknown_abi_version_is_refused_at_load() {
        let host = PluginHost::new(limits(), None).unwrap();
        for version in [0, 3, -1] {
            let Err(error) = host.load("future", &wat_module(version, "i64.const 0", "")) else {
                panic!("v{version} loaded");
            };
            assert!(
                error
                    .to_string()
                    .contains(&format!("returned {version}, this engine speaks 1 and 2")),
                "{error}"
            );
        }
    }

    #[tokio::test]
    async fn v2_modules_are_held_to_the_same_limits() {
        let host = PluginHost::new(limits(), None).unwrap();
        let grow = "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable";
        let recurse = "(func $deep (param i32) (result i32) (call $deep (i32.add (local.get 0) (i32.const 1))))";
        for (body, extra, reason) in [
            ("(loop $l (br $l)) i64.const 0", "", "timeout"),
            (grow, "", "memory_limit"),
            ("unreachable", "", "trap"),
            ("(drop (call $deep (i32.const 0))) i64.const 0", recurse, "trap"),
        ] {
            let strategy = host.load("hostile", &wat_module(2, body, extra)).unwrap();
            let err = strategy.route(&input()).await.unwrap_err();
            assert_eq!(err.reason(), reason, "{body}: {err}");
        }
    }

    #[tokio::test]
    async fn malformed_and_misplaced_v2_answers_are_rejected_cleanly() {
        let host = PluginHost::new(limits(), None).unwrap();
        let extra = r#"(data (i32.const 2048) "\ff{\"ok\":{\"legs\":[],\"extra\":1}}")"#;
        let answer = |ptr: u64, len: u64| format!("i64.const {}", ((ptr << 32) | len) as i64);
        for (ptr, len, reason, words) in [
            (2048, 1, "invalid_output", "not UTF-8"),
            (2049, 2, "invalid_output", "not a PluginAnswer"),
            // Strict parsing: an unknown field is refused as in v1.
            (2049, 28, "invalid_output", "not a PluginAnswer"),
            (2048, 0, "invalid_output", "not a PluginAnswer"),
            // Past the end of the 64 KiB memory, straddling it, and at the top
            // of the 32-bit range (ptr + len overflows u32).
            (65_536, 1, "invalid_output", "outside guest memory"),
            (65_530, 16, "invalid_output", "outside guest memory"),
            (0xFFFF_FFFF, 16, "invalid_output", "outside guest memory"),
            (2048, 0xFFFF_FFFF, "output_too_large", "over plugins.max_output_bytes"),
        ] {
            let strategy = host.load("garbage", &wat_module(2, &answer(ptr, len), extra)).unwrap();
            let err = strategy.route(&input()).await.unwrap_err();
            assert_eq!(err.reason(), reason, "{ptr}+{len}: {err}");
            assert!(err.to_string().contains(words), "{ptr}+{len}: {err}");
        }
        // An answer that parses but breaks a host rule is the validator's.
        let json = r#"{"ok":{"legs":[{"venue":"orca","amountIn":"1000"}]}}"#;
        let extra = format!(r#"(data (i32.const 2048) "{}")"#, json.replace('"', "\\\""));
        let strategy = host
            .load(
                "unknown-venue",
                &wat_module(2, &answer(2048, json.len() as u64), &extra),
            )
            .unwrap();
        let decision = strategy.route(&input()).await.unwrap();
        let err = crate::strategy::validate::validate(&input(), &decision).unwrap_err();
        assert_eq!(err.reason(), "invalid_route");
    }

    #[tokio::test]
    async fn an_alloc_outside_memory_is_invalid_output_in_both_versions() {
        let host = PluginHost::new(limits(), None).unwrap();
        for version in [1, 2] {
            for ptr in ["-1", "65530", "-16"] {
                let module = String::from_utf8(wat_module(version, "i64.const 0", ""))
                    .unwrap()
                    .replace(
                        "(result i32) global.get $top)",
                        &format!("(result i32) i32.const {ptr})"),
                    );
                let strategy = host.load("far", module.as_bytes()).unwrap();
                let err = strategy.route(&input()).await.unwrap_err();
                assert_eq!(err.reason(), "invalid_output", "v{version} alloc {ptr}: {err}");
                assert!(err.to_string().contains("outside guest memory"), "{err}");
            }
        }
    }

    #[tokio::test]
    async fn best_price_builtin_routes_to_the_best_quote() {
        let host = PluginHost::new(limits(), None).unwrap();
        let strategy = host.load_setting("best-price").unwrap();
        assert_eq!(strategy.id().sha256.len(), 64);
        let decision = strategy.route(&input()).await.unwrap();
        assert_eq!(decision.legs[0].venue, "meteora");
        assert_eq!(decision.legs[0].amount_in, Units(1_000));
    }

    async fn builtin(name: &str) -> WasmStrategy {
        PluginHost::new(limits(), None).unwrap().load_setting(name).unwrap()
    }

    #[tokio::test]
    async fn split_builtin_divides_a_large_order_across_pools() {
        let mut input = input();
        // 200k into 1M-deep pools: price impact makes two legs pay.
        input.order.amount_in = Units(200_000);
        let decision = builtin("split").await.route(&input).await.unwrap();
        let checked = crate::strategy::validate::validate(&input, &decision).unwrap();
        assert_eq!(checked.len(), 2, "{decision:?}");
        let split_out: u128 = checked.iter().map(|l| l.expected_out).sum();
        let single = input.quotes[0].pool.swap(200_000).unwrap().amount_out;
        assert!(split_out > single, "{split_out} vs {single}");
    }

    #[tokio::test]
    async fn reliability_weighted_builtin_avoids_a_failing_venue() {
        let mut input = input();
        // meteora quotes more but failed half its recent attempts.
        input.quotes[1].stats = Some(swapline_abi::VenueStats {
            recent_latency_ms: 3,
            failure_rate: 0.5,
            samples: 40,
        });
        let strategy = builtin("reliability-weighted").await;
        assert_eq!(strategy.route(&input).await.unwrap().legs[0].venue, "raydium");
        input.quotes[1].stats = None;
        assert_eq!(strategy.route(&input).await.unwrap().legs[0].venue, "meteora");
    }

    #[tokio::test]
    async fn infinite_loop_is_stopped_as_timeout() {
        let err = run(&wat_plugin("(loop $l (br $l)) i64.const 0", "")).await.unwrap_err();
        assert_eq!(err.reason(), "timeout", "{err}");
    }

    #[tokio::test]
    async fn memory_bomb_is_capped() {
        let body = "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable";
        let err = run(&wat_plugin(body, "")).await.unwrap_err();
        assert_eq!(err.reason(), "memory_limit", "{err}");
    }

    #[tokio::test]
    async fn trap_and_stack_overflow_are_traps() {
        let err = run(&wat_plugin("unreachable", "")).await.unwrap_err();
        assert_eq!(err.reason(), "trap", "{err}");
        let recurse = "(func $deep (param i32) (result i32) (call $deep (i32.add (local.get 0) (i32.const 1))))";
        let err = run(&wat_plugin("(drop (call $deep (i32.const 0))) i64.const 0", recurse))
            .await
            .unwrap_err();
        assert_eq!(err, PluginError::Trap("stack overflow".into()));
    }

    #[tokio::test]
    async fn forbidden_import_is_refused_at_load() {
        let bytes = wat_plugin(
            "i64.const 0",
            r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#,
        );
        let err = run(&bytes).await.unwrap_err();
        assert_eq!(err.reason(), "load");
        assert!(err.to_string().contains("wasi_snapshot_preview1.fd_write"), "{err}");
    }

    #[tokio::test]
    async fn garbage_answers_are_invalid_output() {
        // Answer "\xff" (invalid UTF-8) at offset 2048.
        let extra = r#"(data (i32.const 2048) "\ff{}")"#;
        let err = run(&wat_plugin("i64.const 0x0000080000000001", extra))
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "invalid_output", "{err}");
        let err = run(&wat_plugin("i64.const 0x0000080100000002", extra))
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "invalid_output", "{err}");
        let err = run(&wat_plugin("i64.const 0x00000800FFFFFFFF", extra))
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "output_too_large", "{err}");
    }

    #[test]
    fn log_lines_are_capped_per_call_and_cut_to_the_line_limit() {
        // 300 bytes of 'x' at 4096; route logs the line 8 times, then traps.
        let extra = r#"(import "swapline" "log" (func $log (param i32 i32 i32)))
                       (data (i32.const 4096) "x")"#;
        let body = "(memory.fill (i32.const 4096) (i32.const 120) (i32.const 300))
                    (local $i i32)
                    (loop $l (call $log (i32.const 1) (i32.const 4096) (i32.const 300))
                      (local.set $i (i32.add (local.get $i) (i32.const 1)))
                      (br_if $l (i32.lt_u (local.get $i) (i32.const 8))))
                    unreachable";
        // `local` must come first in a function body.
        let body = body.replacen("(local $i i32)", "", 1);
        let module = wat_plugin(&body, extra).into_iter().collect::<Vec<u8>>();
        let module = String::from_utf8(module)
            .unwrap()
            .replace("(result i64) (memory.fill", "(result i64) (local $i i32) (memory.fill");
        let host = PluginHost::new(limits(), None).unwrap();
        let strategy = host.load("chatty", module.as_bytes()).unwrap();
        let (result, report) = strategy.call(b"{}");
        assert_eq!(result.unwrap_err().reason(), "trap");
        assert_eq!(report.logs.len(), 5, "plugins.log_lines_per_call");
        assert_eq!(report.logs_dropped, 3);
        assert!(
            report
                .logs
                .iter()
                .all(|line| line.len() == 256 && line.bytes().all(|b| b == b'x'))
        );
        assert!(report.fuel_used > 0);
    }

    #[test]
    fn log_lines_are_rate_limited_across_calls() {
        let extra = r#"(import "swapline" "log" (func $log (param i32 i32 i32)))
                       (data (i32.const 4096) "line")"#;
        let body = "(call $log (i32.const 1) (i32.const 4096) (i32.const 4))
                    (call $log (i32.const 1) (i32.const 4096) (i32.const 4))
                    unreachable";
        let mut limits = limits();
        limits.log_lines_per_second = 3;
        let host = PluginHost::new(limits, None).unwrap();
        let strategy = host.load("chatty", &wat_plugin(body, extra)).unwrap();
        let first = strategy.call(b"{}").1;
        assert_eq!((first.logs.len(), first.logs_dropped), (2, 0));
        let second = strategy.call(b"{}").1;
        let third = strategy.call(b"{}").1;
        // Within one second the module gets 3 lines in all; a window that
        // rolled over in between grants at most 3 more.
        let kept = first.logs.len() + second.logs.len() + third.logs.len();
        assert!((3..=6).contains(&kept), "{kept} lines kept");
        assert_eq!(second.logs.len() + second.logs_dropped as usize, 2);
        assert_eq!(kept + (second.logs_dropped + third.logs_dropped) as usize, 6);
    }

    #[tokio::test]
    async fn no_state_survives_between_calls() {
        // Counts calls in a global and answers {"error":{"code":"calls_N",…}}
        // with N written into the answer: a fresh instance always says 1.
        let extra = r#"(global $calls (mut i32) (i32.const 0))
                       (data (i32.const 2048) "{\"error\":{\"code\":\"calls_0\",\"message\":\"counted\"}}")"#;
        let body = "(global.set $calls (i32.add (global.get $calls) (i32.const 1)))
                    (i32.store8 (i32.const 2072) (i32.add (i32.const 48) (global.get $calls)))
                    i64.const 0x0000080000000030";
        let host = PluginHost::new(limits(), None).unwrap();
        let strategy = host.load("counter", &wat_plugin(body, extra)).unwrap();
        for _ in 0..3 {
            match strategy.route(&input()).await {
                Err(PluginError::Declined { code, .. }) => assert_eq!(code, "calls_1"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn an_exported_params_schema_is_read_at_load_and_a_bad_one_refused() {
        let host = PluginHost::new(limits(), None).unwrap();
        let split = host.load_setting("split").unwrap();
        assert!(split.params_schema().unwrap()["properties"]["steps"].is_object());
        assert!(split.exports().contains(&PARAMS_SCHEMA_EXPORT.to_owned()));

        let extra = r#"(data (i32.const 2048) "[not json")
                       (func (export "swapline_params_schema") (result i64) i64.const 0x000008000000000A)"#;
        let Err(error) = host.load("bad-schema", &wat_plugin("i64.const 0", extra)) else {
            panic!("a module with a broken params schema loaded");
        };
        assert!(error.to_string().contains("params schema is not JSON"), "{error}");
    }

    #[test]
    fn a_module_slower_to_compile_than_the_limit_is_refused() {
        let mut limits = limits();
        limits.compile_timeout = Dur(Duration::from_micros(1));
        let functions: String = (0..2_000)
            .map(|i| format!("(func $f{i} (result i32) i32.const {i} i32.const 1 i32.add)"))
            .collect();
        let host = PluginHost::new(limits, None).unwrap();
        let Err(error) = host.load("slow", &wat_plugin("i64.const 0", &functions)) else {
            panic!("compiled within a microsecond");
        };
        assert!(error.to_string().contains("plugins.compile_timeout"), "{error}");
    }

    #[test]
    fn an_oversized_module_is_refused_before_compiling() {
        let mut limits = limits();
        limits.max_module_bytes = 64;
        let host = PluginHost::new(limits, None).unwrap();
        let Err(error) = host.load("big", &wat_plugin("i64.const 0", "")) else {
            panic!("loaded");
        };
        assert!(error.to_string().contains("plugins.max_module_bytes"), "{error}");
    }

    #[test]
    fn declined_answer_is_a_strategy_error() {
        let err = WasmStrategy::parse_answer(br#"{"error":{"code":"no_quotes","message":"none"}}"#).unwrap_err();
        assert_eq!(err.reason(), "strategy_error");
    }
}
