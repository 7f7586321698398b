//! The `Venue` seam: quote an amount, with the pool state behind the quote.
//! Legs are not executed here: they land as transactions on the chain (the
//! `ChainRpc` seam in `crate::chain`). The simulated DEX pools live in
//! [`simulated`], and the simulated chain they are on (a `ChainRpc` over the
//! store's chain state) in [`chain`]; a real chain adapter would implement
//! the same traits.
//!
//! May import: `chain`, `domain`, `store` (the chain's durable state), `telemetry`.

pub mod chain;
pub mod config;
mod rng;
pub mod simulated;

use async_trait::async_trait;
pub use chain::{Clock, ManualClock, PoolView, SimulatedChain, SystemClock};
pub use config::{PoolConfig, VenuesConfig};
pub use simulated::{PoolError, SimulatedVenue};
use swapline_abi::VenueQuote;
use thiserror::Error;

/// What a venue can fail with, classified once, here.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VenueError {
    /// Worth retrying: timeouts, congestion, a node that did not answer.
    #[error("{message}")]
    Transient {
        /// Stable code.
        code: String,
        /// Human words.
        message: String,
    },
    /// Retrying cannot help: rejected, slippage exceeded, no pool.
    #[error("{message}")]
    Permanent {
        /// Stable code.
        code: String,
        /// Human words.
        message: String,
    },
}

impl VenueError {
    /// Whether a retry may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, VenueError::Transient { .. })
    }

    /// The stable code.
    pub fn code(&self) -> &str {
        match self {
            VenueError::Transient { code, .. } | VenueError::Permanent { code, .. } => code,
        }
    }

    pub(crate) fn transient(code: &str, message: impl Into<String>) -> Self {
        VenueError::Transient {
            code: code.into(),
            message: message.into(),
        }
    }

    pub(crate) fn permanent(code: &str, message: impl Into<String>) -> Self {
        VenueError::Permanent {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// A venue: a DEX with pools for some pairs.
#[async_trait]
pub trait Venue: Send + Sync {
    /// The venue's name (`raydium`).
    fn name(&self) -> &str;

    /// Whether the venue has a pool for `token_in → token_out`.
    fn supports(&self, token_in: &str, token_out: &str) -> bool;

    /// Quotes `amount_in`, with the pool state behind the quote.
    async fn quote(&self, token_in: &str, token_out: &str, amount_in: u128) -> Result<VenueQuote, VenueError>;
}
