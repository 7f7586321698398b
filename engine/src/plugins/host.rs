//! The wasmtime host: compile once, instantiate per call, contain the guest.
//!
//! Memory ownership per ABI v1: the host writes the input into a buffer the
//! guest allocated with `alloc`; the guest's answer stays in guest memory and
//! the host copies it out; the instance (and all its memory) is dropped after
//! the call, so nothing leaks between orders.

use super::{PluginError, Strategy, sha256_hex};
use crate::{config::PluginsConfig, domain::StrategyRef};
use async_trait::async_trait;
use std::{sync::Arc, time::Duration};
use swapline_abi::{ABI_VERSION, PluginAnswer, RouteDecision, RouteInput};
use wasmtime::{
    Caller, Config, Engine, ExternType, InstancePre, Linker, Module, ResourceLimiter, Store, Trap, ValType,
};

/// How often the epoch advances; deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Wasm stack cap: deep recursion traps instead of taking the thread down.
const MAX_WASM_STACK: usize = 512 * 1024;

/// Owns the wasmtime engine and the sandbox limits; loads strategies.
#[derive(Clone)]
pub struct PluginHost {
    engine: Engine,
    limits: Arc<PluginsConfig>,
}

struct HostState {
    name: String,
    memory_cap: usize,
    memory_hit: bool,
    logs_left: u32,
    log_line_max: usize,
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
        Ok(desired <= 10_000)
    }
}

impl PluginHost {
    /// Builds the engine and starts the epoch ticker (a thread that lives as
    /// long as the engine does).
    pub fn new(limits: PluginsConfig) -> Result<Self, PluginError> {
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(MAX_WASM_STACK);
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
        Ok(PluginHost {
            engine,
            limits: Arc::new(limits),
        })
    }

    /// Compiles and checks a module: size, imports (only `swapline.log`),
    /// exports and ABI version.
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<WasmStrategy, PluginError> {
        if bytes.len() as u64 > self.limits.max_module_bytes {
            return Err(PluginError::Load(format!(
                "{name}: module is {} bytes, over plugins.max_module_bytes = {}",
                bytes.len(),
                self.limits.max_module_bytes
            )));
        }
        let module = Module::new(&self.engine, bytes).map_err(|e| PluginError::Load(format!("{name}: {e}")))?;
        check_imports(name, &module)?;
        check_exports(name, &module)?;

        let mut linker: Linker<HostState> = Linker::new(&self.engine);
        linker
            .func_wrap("swapline", "log", host_log)
            .map_err(|e| PluginError::Load(format!("{name}: {e}")))?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| PluginError::Load(format!("{name}: {e}")))?;
        let strategy = WasmStrategy {
            id: StrategyRef {
                name: name.to_owned(),
                sha256: sha256_hex(bytes),
            },
            engine: self.engine.clone(),
            pre,
            limits: self.limits.clone(),
        };
        let version = strategy.abi_version()?;
        if version != ABI_VERSION {
            return Err(PluginError::Load(format!(
                "{name}: swapline_abi_version() returned {version}, this engine speaks {ABI_VERSION}"
            )));
        }
        Ok(strategy)
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
    let func = |export: &str, params: &[&str], results: &[&str]| -> Result<(), PluginError> {
        let shape =
            |types: &mut dyn Iterator<Item = ValType>| -> Vec<String> { types.map(|t| t.to_string()).collect() };
        match module.get_export(export) {
            Some(ExternType::Func(f)) if shape(&mut f.params()) == params && shape(&mut f.results()) == results => {
                Ok(())
            }
            _ => Err(PluginError::Load(format!(
                "{name}: must export function {export}({}) -> ({}) (ABI v{ABI_VERSION})",
                params.join(", "),
                results.join(", ")
            ))),
        }
    };
    func("swapline_abi_version", &[], &["i32"])?;
    func("alloc", &["i32"], &["i32"])?;
    func("route", &["i32", "i32"], &["i64"])?;
    match module.get_export("memory") {
        Some(ExternType::Memory(_)) => Ok(()),
        _ => Err(PluginError::Load(format!("{name}: must export its `memory`"))),
    }
}

/// `swapline.log(level, ptr, len)`: rate-limited and size-capped.
fn host_log(mut caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32) {
    if caller.data().logs_left == 0 {
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
    let line = String::from_utf8_lossy(&buffer);
    let plugin = caller.data().name.as_str();
    match level {
        2 => tracing::warn!(plugin, "{line}"),
        1 => tracing::info!(plugin, "{line}"),
        _ => tracing::debug!(plugin, "{line}"),
    }
}

/// A loaded strategy module.
#[derive(Clone)]
pub struct WasmStrategy {
    id: StrategyRef,
    engine: Engine,
    pre: InstancePre<HostState>,
    limits: Arc<PluginsConfig>,
}

impl WasmStrategy {
    fn store(&self) -> Result<Store<HostState>, PluginError> {
        let mut store = Store::new(
            &self.engine,
            HostState {
                name: self.id.name.clone(),
                memory_cap: self.limits.memory_limit_bytes as usize,
                memory_hit: false,
                logs_left: self.limits.log_lines_per_call,
                log_line_max: self.limits.log_line_max_bytes as usize,
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

    fn abi_version(&self) -> Result<i32, PluginError> {
        let mut store = self.store()?;
        let instance = self.pre.instantiate(&mut store).map_err(|e| self.classify(&store, e))?;
        let version = instance
            .get_typed_func::<(), i32>(&mut store, "swapline_abi_version")
            .map_err(|e| PluginError::Load(e.to_string()))?;
        version.call(&mut store, ()).map_err(|e| {
            let error = self.classify(&store, e);
            PluginError::Load(format!("{}: swapline_abi_version failed: {error}", self.id.name))
        })
    }

    /// One call: fresh instance, input in, answer bytes out.
    pub fn call_raw(&self, input: &[u8]) -> Result<Vec<u8>, PluginError> {
        let mut store = self.store()?;
        let instance = self.pre.instantiate(&mut store).map_err(|e| self.classify(&store, e))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| PluginError::Load("no memory export".into()))?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "alloc")
            .map_err(|e| PluginError::Load(e.to_string()))?;
        let route = instance
            .get_typed_func::<(i32, i32), i64>(&mut store, "route")
            .map_err(|e| PluginError::Load(e.to_string()))?;

        let len = i32::try_from(input.len()).map_err(|_| PluginError::InvalidOutput("input too large".into()))?;
        let ptr = alloc.call(&mut store, len).map_err(|e| self.classify(&store, e))?;
        memory
            .write(&mut store, ptr as u32 as usize, input)
            .map_err(|_| PluginError::InvalidOutput(format!("alloc returned {ptr}, outside guest memory")))?;
        let packed = route
            .call(&mut store, (ptr, len))
            .map_err(|e| self.classify(&store, e))?;

        let (out_ptr, out_len) = ((packed as u64 >> 32) as usize, (packed as u64 & 0xFFFF_FFFF) as usize);
        if out_len as u64 > self.limits.max_output_bytes {
            return Err(PluginError::OutputTooLarge(format!(
                "{out_len} bytes, over plugins.max_output_bytes = {}",
                self.limits.max_output_bytes
            )));
        }
        let mut out = vec![0u8; out_len];
        memory.read(&store, out_ptr, &mut out).map_err(|_| {
            PluginError::InvalidOutput(format!("answer at {out_ptr}+{out_len} lies outside guest memory"))
        })?;
        Ok(out)
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

#[async_trait]
impl Strategy for WasmStrategy {
    fn id(&self) -> &StrategyRef {
        &self.id
    }

    async fn route(&self, input: &RouteInput) -> Result<RouteDecision, PluginError> {
        let bytes = serde_json::to_vec(input).map_err(|e| PluginError::InvalidOutput(e.to_string()))?;
        let this = self.clone();
        // A hostile guest may spin until its deadline: keep it off the async
        // worker threads.
        let out = tokio::task::spawn_blocking(move || this.call_raw(&bytes))
            .await
            .map_err(|e| PluginError::Trap(format!("host task: {e}")))??;
        Self::parse_answer(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;
    use swapline_abi::{OrderInfo, PoolState, Units, VenueQuote};

    fn limits() -> PluginsConfig {
        PluginsConfig {
            fuel: 50_000_000,
            deadline: Dur(Duration::from_millis(200)),
            memory_limit_bytes: 4 << 20,
            max_module_bytes: 8 << 20,
            max_output_bytes: 1 << 20,
            log_lines_per_call: 5,
            log_line_max_bytes: 256,
        }
    }

    fn input() -> RouteInput {
        let quote = |venue: &str, out| VenueQuote {
            venue: venue.into(),
            amount_out: Units(out),
            fee_bps: 25,
            price_impact_bps: 1,
            latency_ms: 0,
            pool: PoolState::ConstantProduct {
                reserve_in: Units(1_000_000),
                reserve_out: Units(1_000_000),
                fee_bps: 25,
            },
            stats: None,
        };
        RouteInput {
            order: OrderInfo {
                id: "o".into(),
                token_in: "SOL".into(),
                token_out: "USDC".into(),
                amount_in: Units(1_000),
                slippage_bps: 50,
            },
            quotes: vec![quote("raydium", 990), quote("meteora", 995)],
            params: Default::default(),
        }
    }

    /// A module (WAT text; the engine compiles text too) that satisfies the
    /// ABI and runs `body` inside `route`.
    fn wat_plugin(body: &str, extra: &str) -> Vec<u8> {
        format!(
            r#"(module
                 {extra}
                 (memory (export "memory") 1)
                 (global $top (mut i32) (i32.const 1024))
                 (func (export "swapline_abi_version") (result i32) i32.const 1)
                 (func (export "alloc") (param i32) (result i32) global.get $top)
                 (func (export "route") (param i32 i32) (result i64) {body}))"#
        )
        .into_bytes()
    }

    async fn run(bytes: &[u8]) -> Result<RouteDecision, PluginError> {
        let host = PluginHost::new(limits()).unwrap();
        host.load("test", bytes)?.route(&input()).await
    }

    #[tokio::test]
    async fn best_price_builtin_routes_to_the_best_quote() {
        let (name, bytes) = super::super::resolve("best-price").unwrap();
        let host = PluginHost::new(limits()).unwrap();
        let strategy = host.load(&name, &bytes).unwrap();
        assert_eq!(strategy.id().sha256.len(), 64);
        let decision = strategy.route(&input()).await.unwrap();
        assert_eq!(decision.legs[0].venue, "meteora");
        assert_eq!(decision.legs[0].amount_in, Units(1_000));
    }

    async fn builtin(name: &str) -> WasmStrategy {
        let (name, bytes) = super::super::resolve(name).unwrap();
        PluginHost::new(limits()).unwrap().load(&name, &bytes).unwrap()
    }

    #[tokio::test]
    async fn split_builtin_divides_a_large_order_across_pools() {
        let mut input = input();
        // 200k into 1M-deep pools: price impact makes two legs pay.
        input.order.amount_in = Units(200_000);
        let decision = builtin("split").await.route(&input).await.unwrap();
        let checked = super::super::validate::validate(&input, &decision).unwrap();
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
    fn declined_answer_is_a_strategy_error() {
        let err = WasmStrategy::parse_answer(br#"{"error":{"code":"no_quotes","message":"none"}}"#).unwrap_err();
        assert_eq!(err.reason(), "strategy_error");
    }
}
