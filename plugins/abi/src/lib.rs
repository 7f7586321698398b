//! The strategy plugin contract, ABI v1 and v2: the one source of truth
//! shared by the engine (host) and every strategy (guest).
//!
//! # Wire protocol
//! A strategy is a core WebAssembly module without WASI. It exports
//! `memory`, `swapline_abi_version() -> i32` (returns 1 or 2, see
//! [`ABI_VERSIONS`]), `alloc(len: i32) -> i32` and
//! `route(ptr: i32, len: i32) -> i64`, and may import
//! `swapline.log(level: i32, ptr: i32, len: i32)` and nothing else.
//!
//! Per call the host instantiates the module afresh, calls `alloc(len)` and
//! writes the input at the returned offset; the guest owns that buffer. The
//! input is the UTF-8 JSON of a [`RouteInput`] for a v1 module, and its flat
//! little-endian [`v2`] layout (no JSON parse in the guest) for a v2 module;
//! the host picks the encoding from what `swapline_abi_version` answered at
//! load. `route(ptr, len)` answers with `(out_ptr << 32) | out_len` locating
//! the UTF-8 JSON of a [`PluginAnswer`] in guest memory (both versions),
//! which the host copies out. The instance is then dropped, so the guest
//! never frees.
//!
//! This crate has no I/O and builds for `wasm32-unknown-unknown`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod pool;
#[cfg(feature = "testing")]
pub mod testing;
mod units;
pub mod v2;

pub use pool::{Bin, PoolState, Swap};
use serde::{Deserialize, Serialize};
pub use units::Units;

/// The version the SDK builds today (flat [`v2`] input), answered by
/// `swapline_abi_version`.
pub const ABI_VERSION: i32 = 2;

/// The first version: JSON input. Modules that answer it keep loading.
pub const ABI_V1: i32 = 1;

/// Every version a host of this crate's generation accepts from
/// `swapline_abi_version`.
pub const ABI_VERSIONS: [i32; 2] = [ABI_V1, ABI_VERSION];

/// What the host hands a strategy: the order and one quote per venue.
///
/// Input types accept unknown fields, so a plugin built today keeps working
/// when a later engine adds fields; answers are parsed strictly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct RouteInput {
    /// The order being routed.
    pub order: OrderInfo,
    /// One quote per venue that answered in time, for the whole order amount.
    pub quotes: Vec<VenueQuote>,
    /// Per-pipeline parameters from `[pipelines.<name>.params]`.
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
}

/// The order as a strategy sees it. Amounts are integer base units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct OrderInfo {
    /// Order id (UUID v4).
    pub id: String,
    /// Symbol of the token sold.
    pub token_in: String,
    /// Symbol of the token bought.
    pub token_out: String,
    /// Amount sold, in base units of `token_in`.
    pub amount_in: Units,
    /// Largest accepted shortfall against the quote, in basis points.
    pub slippage_bps: u32,
}

/// A venue's quote for the whole order, with the pool state behind it so a
/// strategy can price partial amounts itself (see [`PoolState::swap`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct VenueQuote {
    /// Venue name, e.g. `raydium`.
    pub venue: String,
    /// Output for the whole order after fees, base units of `token_out`.
    pub amount_out: Units,
    /// Fee charged, in basis points.
    pub fee_bps: u32,
    /// Price impact of the whole order against the spot price, basis points.
    pub price_impact_bps: u32,
    /// How long the quote took, in milliseconds.
    pub latency_ms: u64,
    /// The pool the quote was computed from, oriented `token_in → token_out`.
    pub pool: PoolState,
    /// The venue's recent record as the host saw it; absent when the host
    /// keeps none (older engines) or has no sample yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<VenueStats>,
}

/// A venue's recent record, measured by the host over a sliding window of
/// its latest quotes and its legs' landings on the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct VenueStats {
    /// Mean wall-clock time of the venue's recent successful quotes, in
    /// milliseconds, as the host measured it.
    pub recent_latency_ms: u64,
    /// Share of the venue's recent attempts (quotes that failed or timed out,
    /// and legs landed, failed or expired on the chain) that failed, from
    /// 0.0 to 1.0.
    pub failure_rate: f64,
    /// How many attempts `failure_rate` is computed over.
    pub samples: u32,
}

/// A strategy's decision: how much of the order goes to which venue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteDecision {
    /// The legs; their `amountIn` must sum to the order amount.
    pub legs: Vec<Leg>,
    /// Free text shown in the order's route, for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One part of a route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Leg {
    /// A venue that quoted this order.
    pub venue: String,
    /// Amount of `token_in` sent to that venue, base units.
    pub amount_in: Units,
    /// Optional tighter floor; the host derives one from the slippage and
    /// refuses a floor looser than that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_amount_out: Option<Units>,
}

/// A strategy declining to route, with a reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StrategyError {
    /// Stable snake_case code, e.g. `no_quotes`.
    pub code: String,
    /// Human words.
    pub message: String,
}

impl StrategyError {
    /// Builds an error from a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// What `route` returns: exactly one of `ok` or `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum PluginAnswer {
    /// The route to take.
    Ok(RouteDecision),
    /// The strategy refuses to route this order.
    Error(StrategyError),
}

impl From<Result<RouteDecision, StrategyError>> for PluginAnswer {
    fn from(result: Result<RouteDecision, StrategyError>) -> Self {
        match result {
            Ok(decision) => PluginAnswer::Ok(decision),
            Err(error) => PluginAnswer::Error(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_round_trips_with_external_tag() {
        let answer = PluginAnswer::Ok(RouteDecision {
            legs: vec![Leg {
                venue: "raydium".into(),
                amount_in: Units(10),
                min_amount_out: None,
            }],
            reason: None,
        });
        let json = serde_json::to_string(&answer).unwrap();
        assert_eq!(json, r#"{"ok":{"legs":[{"venue":"raydium","amountIn":"10"}]}}"#);
        assert_eq!(serde_json::from_str::<PluginAnswer>(&json).unwrap(), answer);
    }

    #[test]
    fn input_accepts_unknown_fields_and_missing_stats() {
        let json = r#"{"order":{"id":"o","tokenIn":"A","tokenOut":"B","amountIn":"5","slippageBps":50,"future":1},
            "quotes":[{"venue":"v","amountOut":"4","feeBps":0,"priceImpactBps":0,"latencyMs":1,"later":true,
            "pool":{"kind":"constant_product","reserveIn":"10","reserveOut":"10","feeBps":0}}],"next":[]}"#;
        let input: RouteInput = serde_json::from_str(json).unwrap();
        assert_eq!(input.quotes[0].stats, None);
        assert!(input.params.is_empty());
    }

    #[test]
    fn stats_travel_in_camel_case() {
        let stats = VenueStats {
            recent_latency_ms: 12,
            failure_rate: 0.25,
            samples: 8,
        };
        let json = serde_json::to_string(&stats).unwrap();
        assert_eq!(json, r#"{"recentLatencyMs":12,"failureRate":0.25,"samples":8}"#);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<StrategyError>(r#"{"code":"x","message":"y","z":1}"#);
        assert!(err.is_err());
    }
}
