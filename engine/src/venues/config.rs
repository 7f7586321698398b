//! Settings of the simulated venues: price walk, quote latency and pools
//! (landing times and faults are the chain's, `[chain]`). A leaf: imports
//! nothing of ours but `domain`.

use crate::domain::Dur;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The simulated venues.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VenuesConfig {
    /// Seed of the price random walk and the quote jitter.
    pub seed: u64,
    /// Mean quote latency.
    pub quote_latency: Dur,
    /// Uniform ± jitter on the quote latency.
    pub quote_jitter: Dur,
    /// Standard deviation of the price random walk per step, basis points.
    pub drift_bps: f64,
    /// Pull of the price back to its reference per step (0–1).
    pub mean_reversion: f64,
    /// The pools.
    pub pools: Vec<PoolConfig>,
}

impl VenuesConfig {
    /// Rule problems, each starting with `key` (the section's path).
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if !(0.0..=1.0).contains(&self.mean_reversion) {
            problems.push(format!("{key}.mean_reversion: must be within [0, 1]"));
        }
        if self.drift_bps.is_nan() || self.drift_bps < 0.0 {
            problems.push(format!("{key}.drift_bps: must not be negative"));
        }
        if self.pools.is_empty() {
            problems.push(format!("{key}.pools: at least one pool is needed"));
        }
        for (i, pool) in self.pools.iter().enumerate() {
            problems.extend(pool.problems(&format!("{key}.pools[{i}]")));
        }
        problems
    }
}

/// A simulated pool.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PoolConfig {
    /// Constant product x·y = k (Raydium-style).
    ConstantProduct {
        /// Venue name.
        venue: String,
        /// Base token symbol.
        base: String,
        /// Quote token symbol.
        quote: String,
        /// Base reserve, whole tokens.
        reserve_base: String,
        /// Quote reserve, whole tokens.
        reserve_quote: String,
        /// Fee, basis points.
        fee_bps: u32,
    },
    /// Liquidity bins (Meteora DLMM-style).
    Dlmm {
        /// Venue name.
        venue: String,
        /// Base token symbol.
        base: String,
        /// Quote token symbol.
        quote: String,
        /// Active price, whole quote per whole base.
        price: f64,
        /// Price step between bins, basis points.
        bin_step_bps: u32,
        /// Bins on each side of the active one.
        bins_per_side: u32,
        /// Liquidity per bin, whole base tokens.
        bin_liquidity: f64,
        /// Fee before volatility, basis points.
        base_fee_bps: u32,
        /// Added fee per (bins crossed)², basis points.
        variable_fee_bps: u32,
        /// Fee ceiling, basis points.
        max_fee_bps: u32,
    },
}

impl PoolConfig {
    /// Rule problems of one pool, each starting with `key`. The DLMM bin
    /// math divides by the price and the bin step and spreads
    /// `bin_liquidity` over bins, so all three must be positive.
    pub fn problems(&self, key: &str) -> Vec<String> {
        match self {
            PoolConfig::Dlmm {
                price,
                bin_liquidity,
                bin_step_bps,
                ..
            } if !(*price > 0.0 && *bin_liquidity > 0.0 && *bin_step_bps > 0) => {
                vec![format!("{key}: price, bin_liquidity and bin_step_bps must be positive")]
            }
            _ => Vec::new(),
        }
    }

    /// The pool's venue.
    pub fn venue(&self) -> &str {
        match self {
            PoolConfig::ConstantProduct { venue, .. } | PoolConfig::Dlmm { venue, .. } => venue,
        }
    }

    /// (base, quote) symbols.
    pub fn pair(&self) -> (&str, &str) {
        match self {
            PoolConfig::ConstantProduct { base, quote, .. } | PoolConfig::Dlmm { base, quote, .. } => (base, quote),
        }
    }
}
