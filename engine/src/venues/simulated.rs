//! Simulated DEX venues: pools with real AMM math (`swapline_abi::pool`),
//! prices that drift by a seeded mean-reverting random walk, and a
//! configurable quote latency. Legs land as transactions on the simulated
//! chain ([`super::chain`]), whose pools the venue quotes once
//! [`SimulatedVenue::on_chain`] is set.

use super::{PoolConfig, SimulatedChain, Venue, VenueError, VenuesConfig, rng::Rng};
use crate::domain::{TokenRegistry, parse_units};
use async_trait::async_trait;
use std::{sync::Arc, time::Duration};
use swapline_abi::{Bin, PoolState, Swap, Units, VenueQuote};
use tokio::{sync::Mutex, time::Instant};

/// Quote latency and price walk settings shared by all simulated venues.
#[derive(Debug, Clone)]
pub struct SimSettings {
    /// Mean quote latency.
    pub quote_latency: Duration,
    /// Uniform ± jitter on quotes.
    pub quote_jitter: Duration,
    /// Random walk σ per step, basis points.
    pub drift_bps: f64,
    /// Mean reversion per step.
    pub mean_reversion: f64,
}

impl SimSettings {
    /// From the `[venues]` section.
    pub fn from_config(config: &VenuesConfig) -> Self {
        SimSettings {
            quote_latency: config.quote_latency.0,
            quote_jitter: config.quote_jitter.0,
            drift_bps: config.drift_bps,
            mean_reversion: config.mean_reversion,
        }
    }
}

/// One simulated venue (all pools of one DEX name).
pub struct SimulatedVenue {
    name: String,
    pools: Vec<SimPool>,
    settings: SimSettings,
    rng: std::sync::Mutex<Rng>,
    chain: Option<Arc<SimulatedChain>>,
}

impl std::fmt::Debug for SimulatedVenue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedVenue").finish_non_exhaustive()
    }
}

struct SimPool {
    base: String,
    quote: String,
    state: Mutex<PoolSim>,
}

/// A pool's state: what the chain stores (as JSON) and the swaps move.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PoolSim {
    /// Reserves in base units; the reference price in quote units per base unit.
    ConstantProduct {
        reserve_base: u128,
        reserve_quote: u128,
        fee_bps: u32,
        reference: f64,
    },
    /// Active price in quote base units per base base unit.
    Bins {
        price: f64,
        reference: f64,
        step: f64,
        bins_per_side: u32,
        /// Base units of the base token per bin.
        bin_liquidity: f64,
        base_fee_bps: u32,
        variable_fee_bps: u32,
        max_fee_bps: u32,
    },
}

impl PoolSim {
    pub(super) fn price(&self) -> f64 {
        match self {
            PoolSim::ConstantProduct {
                reserve_base,
                reserve_quote,
                ..
            } => *reserve_quote as f64 / *reserve_base as f64,
            PoolSim::Bins { price, .. } => *price,
        }
    }

    /// One step of the mean-reverting walk: ln p += σ·z − κ·ln(p / p_ref).
    pub(super) fn drift(&mut self, z: f64, sigma: f64, kappa: f64) {
        let price = self.price();
        let reference = match self {
            PoolSim::ConstantProduct { reference, .. } | PoolSim::Bins { reference, .. } => *reference,
        };
        let factor = (sigma * z - kappa * (price / reference).ln()).exp();
        match self {
            PoolSim::ConstantProduct { reserve_quote, .. } => {
                *reserve_quote = ((*reserve_quote as f64) * factor).max(1.0) as u128;
            }
            PoolSim::Bins { price, .. } => *price *= factor,
        }
    }

    /// The pool as seen by a swap in one direction.
    pub(super) fn oriented(&self, base_to_quote: bool) -> PoolState {
        match self {
            PoolSim::ConstantProduct {
                reserve_base,
                reserve_quote,
                fee_bps,
                ..
            } => {
                let (reserve_in, reserve_out) = if base_to_quote {
                    (*reserve_base, *reserve_quote)
                } else {
                    (*reserve_quote, *reserve_base)
                };
                PoolState::ConstantProduct {
                    reserve_in: Units(reserve_in),
                    reserve_out: Units(reserve_out),
                    fee_bps: *fee_bps,
                }
            }
            PoolSim::Bins {
                price,
                step,
                bins_per_side,
                bin_liquidity,
                base_fee_bps,
                variable_fee_bps,
                max_fee_bps,
                ..
            } => {
                let bins = (0..=*bins_per_side as i32)
                    .map(|i| {
                        if base_to_quote {
                            // Selling base walks the price down; bins hold quote.
                            let p = price * (1.0 - step).powi(i);
                            Bin {
                                price: p,
                                liquidity_out: Units((bin_liquidity * p) as u128),
                            }
                        } else {
                            // Buying base walks the price up; bins hold base.
                            let p = price * (1.0 + step).powi(i);
                            Bin {
                                price: 1.0 / p,
                                liquidity_out: Units(*bin_liquidity as u128),
                            }
                        }
                    })
                    .collect();
                PoolState::Bins {
                    bins,
                    base_fee_bps: *base_fee_bps,
                    variable_fee_bps: *variable_fee_bps,
                    max_fee_bps: *max_fee_bps,
                }
            }
        }
    }

    /// Applies an executed swap: reserves move, or the active bin moves.
    pub(super) fn apply(&mut self, base_to_quote: bool, amount_in: u128, swap: &Swap) {
        match self {
            PoolSim::ConstantProduct {
                reserve_base,
                reserve_quote,
                ..
            } => {
                let (reserve_in, reserve_out) = if base_to_quote {
                    (reserve_base, reserve_quote)
                } else {
                    (reserve_quote, reserve_base)
                };
                *reserve_in = reserve_in.saturating_add(amount_in);
                *reserve_out = reserve_out.saturating_sub(swap.amount_out).max(1);
            }
            PoolSim::Bins { price, step, .. } => {
                let moved = (1.0 + *step).powi(swap.bins_crossed as i32);
                if base_to_quote {
                    *price /= moved;
                } else {
                    *price *= moved;
                }
            }
        }
    }
}

/// Why a configured pool cannot be simulated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The pool names a token that is not listed.
    #[error("pool {pool}: unknown token {symbol}")]
    UnknownToken {
        /// `venue base/quote`.
        pool: String,
        /// The missing symbol.
        symbol: String,
    },
    /// A constant-product reserve does not parse at its token's decimals.
    #[error("pool {pool}: reserve {text:?} {error}")]
    Reserve {
        /// `venue base/quote`.
        pool: String,
        /// The reserve as configured.
        text: String,
        /// Why it does not parse.
        error: crate::domain::AmountError,
    },
    /// A DLMM pool's price, bin liquidity or bin step is not positive.
    #[error("pool {0}: price, bin_liquidity and bin_step_bps must be positive")]
    NotPositive(String),
}

impl SimulatedVenue {
    /// Builds venue `name` from the pools of `[venues]` that name it.
    ///
    /// # Errors
    /// [`PoolError`] for a pool that `config::validate` would have refused
    /// (an unknown token, a reserve that does not parse, a non-positive
    /// DLMM setting).
    pub fn from_config(name: &str, config: &VenuesConfig, tokens: &TokenRegistry) -> Result<Self, PoolError> {
        let pools = initial_pools(name, config, tokens)?
            .into_iter()
            .map(|(base, quote, state)| SimPool {
                base,
                quote,
                state: Mutex::new(state),
            })
            .collect();
        let seed = name.bytes().fold(config.seed, |h, b| h.rotate_left(5) ^ u64::from(b));
        Ok(SimulatedVenue {
            name: name.to_owned(),
            pools,
            settings: SimSettings::from_config(config),
            rng: std::sync::Mutex::new(Rng::new(seed)),
            chain: None,
        })
    }

    /// Quotes from the chain's pools (which move only by landed swaps and
    /// the chain's per-slot price walk, alike in every process) instead of
    /// this venue's own copy.
    pub fn on_chain(mut self, chain: Arc<SimulatedChain>) -> Self {
        self.chain = Some(chain);
        self
    }

    fn pool(&self, token_in: &str, token_out: &str) -> Option<(&SimPool, bool)> {
        self.pools.iter().find_map(|pool| {
            if pool.base == token_in && pool.quote == token_out {
                Some((pool, true))
            } else if pool.quote == token_in && pool.base == token_out {
                Some((pool, false))
            } else {
                None
            }
        })
    }

    fn rng<T>(&self, f: impl FnOnce(&mut Rng) -> T) -> T {
        f(&mut self.rng.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    fn quote_latency(&self) -> Duration {
        let jitter = self.settings.quote_jitter.as_secs_f64();
        let offset = self.rng(|r| (r.unit() * 2.0 - 1.0) * jitter);
        Duration::from_secs_f64((self.settings.quote_latency.as_secs_f64() + offset).max(0.0))
    }

    fn step(&self, state: &mut PoolSim) {
        let z = self.rng(|r| r.normal());
        state.drift(z, self.settings.drift_bps / 10_000.0, self.settings.mean_reversion);
    }
}

/// The configured pools of venue `name`: (base, quote, state at start).
///
/// # Errors
/// [`PoolError`] for a pool that `config::validate` would have refused.
pub(super) fn initial_pools(
    name: &str,
    config: &VenuesConfig,
    tokens: &TokenRegistry,
) -> Result<Vec<(String, String, PoolSim)>, PoolError> {
    let mut pools = Vec::new();
    for pool in config.pools.iter().filter(|p| p.venue() == name) {
        let (base, quote) = pool.pair();
        let token = |symbol: &str| {
            tokens.get(symbol).ok_or_else(|| PoolError::UnknownToken {
                pool: format!("{name} {base}/{quote}"),
                symbol: symbol.to_owned(),
            })
        };
        let (base_token, quote_token) = (token(base)?, token(quote)?);
        let scale = 10f64.powi(i32::from(quote_token.decimals) - i32::from(base_token.decimals));
        let state = match pool {
            PoolConfig::ConstantProduct {
                reserve_base,
                reserve_quote,
                fee_bps,
                ..
            } => {
                let units = |text: &str, decimals| {
                    parse_units(text, decimals).map_err(|error| PoolError::Reserve {
                        pool: format!("{name} {base}/{quote}"),
                        text: text.to_owned(),
                        error,
                    })
                };
                let reserve_base = units(reserve_base, base_token.decimals)?;
                let reserve_quote = units(reserve_quote, quote_token.decimals)?;
                PoolSim::ConstantProduct {
                    reserve_base,
                    reserve_quote,
                    fee_bps: *fee_bps,
                    reference: reserve_quote as f64 / reserve_base as f64,
                }
            }
            PoolConfig::Dlmm {
                price,
                bin_step_bps,
                bins_per_side,
                bin_liquidity,
                base_fee_bps,
                variable_fee_bps,
                max_fee_bps,
                ..
            } => {
                if !(*price > 0.0 && *bin_liquidity > 0.0 && *bin_step_bps > 0) {
                    return Err(PoolError::NotPositive(format!("{name} {base}/{quote}")));
                }
                PoolSim::Bins {
                    price: price * scale,
                    reference: price * scale,
                    step: f64::from(*bin_step_bps) / 10_000.0,
                    bins_per_side: *bins_per_side,
                    bin_liquidity: bin_liquidity * 10f64.powi(i32::from(base_token.decimals)),
                    base_fee_bps: *base_fee_bps,
                    variable_fee_bps: *variable_fee_bps,
                    max_fee_bps: *max_fee_bps,
                }
            }
        };
        pools.push((base_token.symbol.clone(), quote_token.symbol.clone(), state));
    }
    Ok(pools)
}

async fn sleep(duration: Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}

#[async_trait]
impl Venue for SimulatedVenue {
    fn name(&self) -> &str {
        &self.name
    }

    fn supports(&self, token_in: &str, token_out: &str) -> bool {
        self.pool(token_in, token_out).is_some()
    }

    async fn quote(&self, token_in: &str, token_out: &str, amount_in: u128) -> Result<VenueQuote, VenueError> {
        let started = Instant::now();
        let (pool, base_to_quote) = self.pool(token_in, token_out).ok_or_else(|| {
            VenueError::permanent("no_pool", format!("{} has no {token_in}/{token_out} pool", self.name))
        })?;
        sleep(self.quote_latency()).await;
        let state = match &self.chain {
            Some(chain) => chain
                .pool_state(&self.name, &pool.base, &pool.quote)
                .await
                .map_err(|e| VenueError::transient("chain_unavailable", e.to_string()))?
                .ok_or_else(|| {
                    VenueError::permanent(
                        "no_pool",
                        format!("{} has no {token_in}/{token_out} pool on the chain", self.name),
                    )
                })?
                .oriented(base_to_quote),
            None => {
                let mut sim = pool.state.lock().await;
                self.step(&mut sim);
                sim.oriented(base_to_quote)
            }
        };
        let swap = state.swap(amount_in).ok_or_else(|| {
            VenueError::permanent(
                "insufficient_liquidity",
                format!("{} cannot fill {amount_in} base units", self.name),
            )
        })?;
        Ok(VenueQuote {
            venue: self.name.clone(),
            amount_out: Units(swap.amount_out),
            fee_bps: swap.fee_bps,
            price_impact_bps: swap.price_impact_bps,
            latency_ms: started.elapsed().as_millis() as u64,
            pool: state,
            stats: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{domain::Dur, venues::PoolConfig};

    fn tokens() -> TokenRegistry {
        TokenRegistry::new([
            ("SOL".into(), "s".into(), 9, "100000".into()),
            ("USDC".into(), "u".into(), 6, "100000000".into()),
        ])
        .unwrap()
    }

    fn config() -> VenuesConfig {
        VenuesConfig {
            seed: 1,
            quote_latency: Dur::default(),
            quote_jitter: Dur::default(),
            drift_bps: 0.0,
            mean_reversion: 0.0,
            pools: vec![
                PoolConfig::ConstantProduct {
                    venue: "raydium".into(),
                    base: "SOL".into(),
                    quote: "USDC".into(),
                    reserve_base: "1000".into(),
                    reserve_quote: "150000".into(),
                    fee_bps: 25,
                },
                PoolConfig::Dlmm {
                    venue: "meteora".into(),
                    base: "SOL".into(),
                    quote: "USDC".into(),
                    price: 150.0,
                    bin_step_bps: 10,
                    bins_per_side: 50,
                    bin_liquidity: 10.0,
                    base_fee_bps: 20,
                    variable_fee_bps: 1,
                    max_fee_bps: 100,
                },
            ],
        }
    }

    fn venue(name: &str) -> SimulatedVenue {
        SimulatedVenue::from_config(name, &config(), &tokens()).unwrap()
    }

    #[tokio::test]
    async fn constant_product_quote_matches_the_formula_and_both_directions_work() {
        let v = venue("raydium");
        let q = v.quote("SOL", "USDC", 10_000_000_000).await.unwrap();
        // 10 SOL into 1000 SOL / 150000 USDC, 25 bps: 150000·9.975/1009.975 USDC
        let expected = 150_000_000_000u128 * 9_975_000_000 / (1_000_000_000_000 + 9_975_000_000);
        assert_eq!(q.amount_out, Units(expected));
        assert!(
            q.price_impact_bps > 90,
            "10 SOL is 1% of the pool: {}",
            q.price_impact_bps
        );
        let back = v.quote("USDC", "SOL", 1_500_000_000).await.unwrap();
        assert!(back.amount_out.0 < 10_000_000_000 && back.amount_out.0 > 9_000_000_000);
        assert!(!v.supports("SOL", "USDT"));
    }

    #[tokio::test]
    async fn dlmm_quote_prices_at_the_active_bin_for_small_orders() {
        let v = venue("meteora");
        let q = v.quote("SOL", "USDC", 1_000_000_000).await.unwrap();
        // 1 SOL at 150 USDC minus 20 bps = 149.7 USDC
        assert_eq!(q.amount_out, Units(149_700_000));
        let big = v.quote("SOL", "USDC", 100_000_000_000).await.unwrap();
        assert!(big.fee_bps > 20 && big.price_impact_bps > 0, "{big:?}");
    }

    #[tokio::test]
    async fn price_walk_is_seeded_and_mean_reverting() {
        let mut config = config();
        config.drift_bps = 50.0;
        config.mean_reversion = 0.2;
        let a = SimulatedVenue::from_config("raydium", &config, &tokens()).unwrap();
        let b = SimulatedVenue::from_config("raydium", &config, &tokens()).unwrap();
        let mut last = 0;
        for _ in 0..200 {
            let (qa, qb) = (
                a.quote("SOL", "USDC", 1_000_000).await.unwrap(),
                b.quote("SOL", "USDC", 1_000_000).await.unwrap(),
            );
            assert_eq!(qa.amount_out, qb.amount_out, "same seed, same walk");
            last = qa.amount_out.0;
        }
        // 0.001 SOL ≈ 0.15 USDC = 150_000 units; the walk stays near it.
        assert!((120_000..180_000).contains(&last), "{last}");
    }
}
