//! The `Strategy` seam: a routing strategy picks the legs of a route from
//! the quotes and pool states of an order. [`validate`] checks every answer
//! before anything acts on it, and a pipeline's strategies form a fallback
//! [`Chain`]. Uses the ABI types; never wasmtime or `plugins` (the wasm
//! adapter implements this trait), never `config`, `pipeline` or an adapter.
//!
//! May import: `domain`, `telemetry`.

pub mod chain;
pub mod validate;

use crate::domain::StrategyRef;
use async_trait::async_trait;
pub use chain::{Chain, ChainError, ChainFailed, ParamsProblem, Routed};
use std::fmt;
use swapline_abi::{RouteDecision, RouteInput};
pub use validate::{CheckedLeg, MAX_LEGS};

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
    ///
    /// # Errors
    /// [`PluginError`]: the strategy failed, timed out or declined.
    async fn route(&self, input: &RouteInput) -> Result<RouteDecision, PluginError>;
}

/// Declares [`Reason`] from one table of `variant => label`, so the metric
/// labels ([`PluginError::REASONS`]), [`PluginError::reason`] and the
/// `Display` prefixes cannot drift apart.
macro_rules! reasons {
    ($($(#[doc = $doc:literal])* $variant:ident => $label:literal,)+) => {
        /// Why a strategy call failed, without the details: a stable
        /// snake_case label used as a metric label and as the first word of
        /// a [`PluginError`]'s text.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[doc = $doc])* $variant,)+
        }

        impl Reason {
            /// Every reason, in table order.
            pub const ALL: [Reason; [$($label),+].len()] = [$(Reason::$variant),+];

            /// The label, e.g. `timeout`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $label,)+
                }
            }
        }
    };
}

reasons! {
    /// `load`: the module was refused at load.
    Load => "load",
    /// `timeout`: fuel or the wall-clock deadline ran out.
    Timeout => "timeout",
    /// `memory_limit`: the guest tried to grow memory past the cap.
    MemoryLimit => "memory_limit",
    /// `trap`: the guest trapped.
    Trap => "trap",
    /// `invalid_output`: the answer is not a `PluginAnswer`.
    InvalidOutput => "invalid_output",
    /// `output_too_large`: the answer exceeds `plugins.max_output_bytes`.
    OutputTooLarge => "output_too_large",
    /// `strategy_error`: the strategy declined to route.
    StrategyError => "strategy_error",
    /// `invalid_params`: params break the strategy's declared schema.
    InvalidParams => "invalid_params",
    /// `invalid_route`: the route breaks a host rule.
    InvalidRoute => "invalid_route",
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What can go wrong with a strategy. Every variant fails the order it was
/// routing, never the engine. Shown as `<reason>: <details>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginError {
    /// The module was refused at load (bad imports, exports, ABI, size).
    Load(String),
    /// Fuel or the wall-clock deadline ran out.
    Timeout(String),
    /// The guest tried to grow memory past the cap.
    MemoryLimit(String),
    /// The guest trapped (unreachable, stack overflow, out of bounds…).
    Trap(String),
    /// The answer is not valid UTF-8 JSON of a `PluginAnswer`.
    InvalidOutput(String),
    /// The answer exceeds `plugins.max_output_bytes`.
    OutputTooLarge(String),
    /// The strategy declined to route.
    Declined {
        /// The strategy's code.
        code: String,
        /// The strategy's words.
        message: String,
    },
    /// Per-pipeline params break the schema a strategy declares.
    Params(String),
    /// The route breaks a host rule (see [`validate`]).
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

    /// Every reason, as metric labels (from the one [`Reason`] table).
    pub const REASONS: [&'static str; Reason::ALL.len()] = {
        let mut labels = [""; Reason::ALL.len()];
        let mut i = 0;
        while i < labels.len() {
            labels[i] = Reason::ALL[i].as_str();
            i += 1;
        }
        labels
    };

    /// The kind of failure.
    pub fn kind(&self) -> Reason {
        match self {
            PluginError::Load(_) => Reason::Load,
            PluginError::Timeout(_) => Reason::Timeout,
            PluginError::MemoryLimit(_) => Reason::MemoryLimit,
            PluginError::Trap(_) => Reason::Trap,
            PluginError::InvalidOutput(_) => Reason::InvalidOutput,
            PluginError::OutputTooLarge(_) => Reason::OutputTooLarge,
            PluginError::Declined { .. } => Reason::StrategyError,
            PluginError::Params(_) => Reason::InvalidParams,
            PluginError::InvalidRoute { .. } => Reason::InvalidRoute,
        }
    }

    /// The specific reason, e.g. `timeout`.
    pub fn reason(&self) -> &'static str {
        self.kind().as_str()
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.kind())?;
        match self {
            PluginError::Load(details)
            | PluginError::Timeout(details)
            | PluginError::MemoryLimit(details)
            | PluginError::Trap(details)
            | PluginError::InvalidOutput(details)
            | PluginError::OutputTooLarge(details)
            | PluginError::Params(details) => f.write_str(details),
            PluginError::Declined { code, message } => write!(f, "{code}: {message}"),
            PluginError::InvalidRoute { code, message } => write!(f, "{code}: {message}"),
        }
    }
}

impl std::error::Error for PluginError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_a_metric_label_and_prefixes_its_error() {
        let errors = [
            PluginError::Load("x".into()),
            PluginError::Timeout("x".into()),
            PluginError::MemoryLimit("x".into()),
            PluginError::Trap("x".into()),
            PluginError::InvalidOutput("x".into()),
            PluginError::OutputTooLarge("x".into()),
            PluginError::Declined {
                code: "c".into(),
                message: "x".into(),
            },
            PluginError::Params("x".into()),
            PluginError::InvalidRoute {
                code: "c",
                message: "x".into(),
            },
        ];
        let reasons: Vec<&str> = errors.iter().map(PluginError::reason).collect();
        assert_eq!(reasons, PluginError::REASONS, "one label per variant, in order");
        assert!(PluginError::REASONS.contains(&"invalid_params"));
        for error in &errors {
            assert!(
                error.to_string().starts_with(&format!("{}: ", error.reason())),
                "{error}"
            );
        }
    }

    #[test]
    fn errors_read_as_before_the_table() {
        let cases = [
            (PluginError::Timeout("fuel".into()), "timeout: fuel"),
            (PluginError::Params("steps".into()), "invalid_params: steps"),
            (
                PluginError::Declined {
                    code: "no_quotes".into(),
                    message: "none".into(),
                },
                "strategy_error: no_quotes: none",
            ),
            (
                PluginError::InvalidRoute {
                    code: "zero_leg",
                    message: "nothing".into(),
                },
                "invalid_route: zero_leg: nothing",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }
}
