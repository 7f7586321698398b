//! Guest-side glue for Swapline strategy plugins: write one function,
//! `fn(RouteInput) -> Result<RouteDecision, StrategyError>`, and
//! [`export_strategy!`] turns it into a module that speaks ABI v2
//! (see `swapline_abi` for the byte-level contract). The strategy never sees
//! the wire format: under v2 the SDK decodes the host's flat input
//! ([`swapline_abi::v2`]) into the same [`RouteInput`](swapline_abi::RouteInput)
//! a v1 plugin got from JSON, and writes the answer as JSON as before, so a
//! v1 strategy's source moves to v2 by rebuilding it against this SDK.
//!
//! ```ignore
//! use swapline_sdk::prelude::*;
//!
//! fn route(input: RouteInput) -> Result<RouteDecision, StrategyError> { … }
//! swapline_sdk::export_strategy!(route);
//! // or, declaring the JSON Schema of `[pipelines.<name>.params]`:
//! swapline_sdk::export_strategy!(route, params_schema = r#"{"type":"object"}"#);
//! ```
//!
//! The exports exist only when compiling for `wasm32`, so the same crate
//! builds natively for unit tests of the strategy function.
#![warn(missing_docs)]

pub use serde_json;
pub use swapline_abi as abi;

#[cfg(all(target_arch = "wasm32", feature = "arena"))]
mod arena;

/// The guest's allocator: see the `arena` module (feature `arena`).
#[cfg(all(target_arch = "wasm32", feature = "arena"))]
#[global_allocator]
static ALLOCATOR: arena::BumpThenSystem = arena::BumpThenSystem;

/// The `params` object of a [`RouteInput`](swapline_abi::RouteInput).
pub type Params = serde_json::Map<String, serde_json::Value>;

/// Everything a strategy usually needs.
pub mod prelude {
    pub use swapline_abi::{
        Leg, OrderInfo, PoolState, RouteDecision, RouteInput, StrategyError, Units, VenueQuote, VenueStats,
    };

    pub use crate::Params;
}

/// Reads an optional parameter from `input.params`; a value of the wrong
/// type is an `invalid_params` error naming the key. The host has already
/// checked the params against the plugin's declared schema, so this is a
/// second line of defence for plugins run without one.
pub fn param<T: serde::de::DeserializeOwned>(params: &Params, key: &str) -> Result<Option<T>, StrategyError> {
    match params.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value) => serde_json::from_value(value.clone())
            .map(Some)
            .map_err(|e| StrategyError::new("invalid_params", format!("params.{key}: {e}"))),
    }
}

use swapline_abi::{PluginAnswer, RouteDecision, RouteInput, StrategyError};

/// Log levels understood by the host's `swapline.log` import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Level {
    /// Diagnostic detail.
    Debug = 0,
    /// Normal information.
    Info = 1,
    /// Something odd, routing continues.
    Warn = 2,
}

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "swapline")]
unsafe extern "C" {
    #[link_name = "log"]
    fn host_log(level: i32, ptr: i32, len: i32);
}

/// Sends a line to the engine's log (rate-limited and size-capped by the
/// host). A no-op outside wasm.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    // SAFETY: the pointer and length describe a live &str for the whole call;
    // the host only reads from guest memory.
    unsafe {
        host_log(level as i32, message.as_ptr() as i32, message.len() as i32)
    };
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (level, message);
}

/// Runs a strategy on an ABI v1 input (UTF-8 JSON) and returns the
/// answer's JSON bytes. Malformed input becomes an `invalid_input` error
/// answer, never a panic.
pub fn answer(input: &[u8], strategy: impl FnOnce(RouteInput) -> Result<RouteDecision, StrategyError>) -> Vec<u8> {
    match serde_json::from_slice::<RouteInput>(input) {
        Ok(input) => encode_answer(strategy(input).into()),
        Err(error) => encode_answer(PluginAnswer::Error(StrategyError::new(
            "invalid_input",
            error.to_string(),
        ))),
    }
}

/// Runs a strategy on an ABI v2 input (the flat layout of
/// [`swapline_abi::v2`]) and returns the answer's JSON bytes. Malformed
/// input becomes an `invalid_input` error answer naming the field and byte
/// offset, never a panic.
pub fn answer_v2(input: &[u8], strategy: impl FnOnce(RouteInput) -> Result<RouteDecision, StrategyError>) -> Vec<u8> {
    match swapline_abi::v2::decode_input(input) {
        Ok(input) => encode_answer(strategy(input).into()),
        Err(error) => encode_answer(PluginAnswer::Error(StrategyError::new(
            "invalid_input",
            error.to_string(),
        ))),
    }
}

fn encode_answer(answer: PluginAnswer) -> Vec<u8> {
    // Serialising plain data with string keys cannot fail.
    serde_json::to_vec(&answer).unwrap_or_default()
}

#[doc(hidden)]
pub mod __private {
    /// `alloc` export: a buffer the host fills. Leaked on purpose: the host
    /// drops the whole instance after one call.
    pub fn alloc(len: i32) -> i32 {
        let mut buffer = Vec::<u8>::with_capacity(len.max(0) as usize);
        let ptr = buffer.as_mut_ptr();
        std::mem::forget(buffer);
        ptr as usize as i32
    }

    /// `route` export body.
    ///
    /// # Safety
    /// `ptr..ptr+len` must be the buffer `alloc` returned, filled by the host.
    pub unsafe fn route(
        ptr: i32,
        len: i32,
        strategy: impl FnOnce(super::RouteInput) -> Result<super::RouteDecision, super::StrategyError>,
    ) -> i64 {
        // SAFETY: guaranteed by the caller (the host, per ABI v2).
        let input = unsafe { std::slice::from_raw_parts(ptr as usize as *const u8, len.max(0) as usize) };
        let out = super::answer_v2(input, strategy);
        let packed = pack(out.as_ptr(), out.len());
        std::mem::forget(out);
        packed
    }

    /// `swapline_params_schema` export body: locates a static string.
    pub fn static_str(text: &'static str) -> i64 {
        pack(text.as_ptr(), text.len())
    }

    fn pack(ptr: *const u8, len: usize) -> i64 {
        ((ptr as usize as i64) << 32) | len as i64
    }
}

/// Exports a strategy function as an ABI v2 plugin (on wasm32 only):
/// `swapline_abi_version` answers 2, so the host hands `route` the flat v2
/// input, which the SDK decodes before calling the strategy.
///
/// With `params_schema = "<JSON Schema>"` the module also exports
/// `swapline_params_schema() -> i64` (packed pointer and length of that
/// text), and the host checks each pipeline's `params` against it at load.
#[macro_export]
macro_rules! export_strategy {
    ($strategy:path, params_schema = $schema:expr) => {
        $crate::export_strategy!($strategy);

        #[cfg(target_arch = "wasm32")]
        #[unsafe(no_mangle)]
        pub extern "C" fn swapline_params_schema() -> i64 {
            $crate::__private::static_str($schema)
        }
    };
    ($strategy:path) => {
        #[cfg(target_arch = "wasm32")]
        #[unsafe(no_mangle)]
        pub extern "C" fn swapline_abi_version() -> i32 {
            $crate::abi::ABI_VERSION
        }

        #[cfg(target_arch = "wasm32")]
        #[unsafe(no_mangle)]
        pub extern "C" fn alloc(len: i32) -> i32 {
            $crate::__private::alloc(len)
        }

        #[cfg(target_arch = "wasm32")]
        #[unsafe(no_mangle)]
        pub extern "C" fn route(ptr: i32, len: i32) -> i64 {
            // SAFETY: the host calls `route` with the buffer from `alloc`.
            unsafe { $crate::__private::route(ptr, len, $strategy) }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_reads_typed_values_and_names_the_bad_key() {
        let params = serde_json::json!({"steps": 10, "name": "x"});
        let params = params.as_object().unwrap();
        assert_eq!(param::<u32>(params, "steps").unwrap(), Some(10));
        assert_eq!(param::<u32>(params, "missing").unwrap(), None);
        let error = param::<u32>(params, "name").unwrap_err();
        assert_eq!(error.code, "invalid_params");
        assert!(error.message.starts_with("params.name"), "{}", error.message);
    }

    #[test]
    fn malformed_input_becomes_an_error_answer() {
        let out = answer(b"{not json", |_| unreachable!("strategy must not run"));
        let answer: PluginAnswer = serde_json::from_slice(&out).unwrap();
        assert!(matches!(answer, PluginAnswer::Error(e) if e.code == "invalid_input"));
    }

    fn sample() -> RouteInput {
        serde_json::from_str(
            r#"{"order":{"id":"o","tokenIn":"A","tokenOut":"B","amountIn":"5","slippageBps":50},
                "quotes":[{"venue":"v","amountOut":"4","feeBps":0,"priceImpactBps":0,"latencyMs":1,
                "pool":{"kind":"constant_product","reserveIn":"10","reserveOut":"10","feeBps":0}}],
                "params":{"steps":3}}"#,
        )
        .unwrap()
    }

    #[test]
    fn v2_input_reaches_the_strategy_as_the_same_route_input() {
        let input = sample();
        let bytes = swapline_abi::v2::encode_input(&input);
        let out = answer_v2(&bytes, |seen| {
            assert_eq!(seen, input);
            Err(StrategyError::new("seen", "ok"))
        });
        assert_eq!(out, br#"{"error":{"code":"seen","message":"ok"}}"#);
    }

    #[test]
    fn malformed_v2_input_becomes_an_error_answer() {
        let bytes = swapline_abi::v2::encode_input(&sample());
        for input in [&bytes[..bytes.len() - 3], &b"{\"order\":{}}"[..], &b""[..]] {
            let out = answer_v2(input, |_| unreachable!("strategy must not run"));
            let answer: PluginAnswer = serde_json::from_slice(&out).unwrap();
            assert!(
                matches!(&answer, PluginAnswer::Error(e) if e.code == "invalid_input" && e.message.starts_with("ABI v2 input")),
                "{answer:?}"
            );
        }
    }
}
