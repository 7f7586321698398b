//! Pool math shared by the simulated venues (host) and strategies (guest):
//! constant product (Raydium-style) and liquidity bins (Meteora DLMM-style).
//! Pure functions; a strategy can price any partial amount exactly as the
//! venue will.

use crate::Units;
use serde::{Deserialize, Serialize};

const BPS: u128 = 10_000;

/// A pool's state, oriented from the order's `token_in` to its `token_out`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "kind", rename_all = "snake_case", rename_all_fields = "camelCase")]
pub enum PoolState {
    /// x·y = k with a fee taken from the input.
    ConstantProduct {
        /// Reserve of `token_in`, base units.
        reserve_in: Units,
        /// Reserve of `token_out`, base units.
        reserve_out: Units,
        /// Fee in basis points (Raydium: 25).
        fee_bps: u32,
    },
    /// Discrete price bins, crossed in order from the active bin outwards.
    Bins {
        /// Bins in the order a swap in this direction consumes them.
        bins: Vec<Bin>,
        /// Fee before volatility, basis points.
        base_fee_bps: u32,
        /// Added fee per (bins crossed)², basis points.
        variable_fee_bps: u32,
        /// Ceiling of the total fee, basis points.
        max_fee_bps: u32,
    },
}

/// One price bin: a fixed price and the `token_out` it still holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Bin {
    /// Base units of `token_out` per base unit of `token_in`.
    pub price: f64,
    /// Base units of `token_out` available in the bin.
    pub liquidity_out: Units,
}

/// The outcome of a swap against a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Swap {
    /// Output after fees, base units of `token_out`.
    pub amount_out: u128,
    /// Fee charged, basis points.
    pub fee_bps: u32,
    /// Shortfall of the execution price against the spot price (before
    /// fees), basis points.
    pub price_impact_bps: u32,
    /// Bins crossed beyond the active one (0 for constant product).
    pub bins_crossed: u32,
}

impl PoolState {
    /// The spot price: `token_out` base units per base unit of `token_in`.
    pub fn spot_price(&self) -> f64 {
        match self {
            PoolState::ConstantProduct {
                reserve_in,
                reserve_out,
                ..
            } => reserve_out.0 as f64 / reserve_in.0.max(1) as f64,
            PoolState::Bins { bins, .. } => bins.first().map_or(0.0, |bin| bin.price),
        }
    }

    /// The part of the pool a swap of at most `amount_in` can reach: a bins
    /// pool keeps the bins up to the one where `amount_in` fills (all bins
    /// when it does not fill). `swap(x)` for every `x ≤ amount_in` is the
    /// same on the result as on `self`, so the host sends strategies this
    /// smaller state.
    pub fn reachable(&self, amount_in: u128) -> PoolState {
        match self {
            PoolState::ConstantProduct { .. } => self.clone(),
            PoolState::Bins {
                bins,
                base_fee_bps,
                variable_fee_bps,
                max_fee_bps,
            } => {
                let mut remaining = amount_in as f64;
                let mut keep = bins.len();
                for (index, bin) in bins.iter().enumerate() {
                    if bin.price <= 0.0 {
                        continue;
                    }
                    let capacity_in = bin.liquidity_out.0 as f64 / bin.price;
                    if remaining <= capacity_in {
                        keep = index + 1;
                        break;
                    }
                    remaining -= capacity_in;
                }
                PoolState::Bins {
                    bins: bins[..keep].to_vec(),
                    base_fee_bps: *base_fee_bps,
                    variable_fee_bps: *variable_fee_bps,
                    max_fee_bps: *max_fee_bps,
                }
            }
        }
    }

    /// Swaps `amount_in`; `None` when the pool cannot fill it (empty input,
    /// no liquidity left, arithmetic overflow).
    pub fn swap(&self, amount_in: u128) -> Option<Swap> {
        if amount_in == 0 {
            return None;
        }
        match self {
            PoolState::ConstantProduct {
                reserve_in,
                reserve_out,
                fee_bps,
            } => {
                let fee = u128::from(*fee_bps).min(BPS);
                let in_after_fee = amount_in.checked_mul(BPS - fee)? / BPS;
                let gross = reserve_out.0.checked_mul(amount_in)? / reserve_in.0.checked_add(amount_in)?;
                let amount_out = reserve_out.0.checked_mul(in_after_fee)? / reserve_in.0.checked_add(in_after_fee)?;
                if amount_out == 0 {
                    return None;
                }
                Some(Swap {
                    amount_out,
                    fee_bps: fee as u32,
                    price_impact_bps: impact_bps(self.spot_price(), amount_in, gross),
                    bins_crossed: 0,
                })
            }
            PoolState::Bins {
                bins,
                base_fee_bps,
                variable_fee_bps,
                max_fee_bps,
            } => {
                let mut remaining = amount_in as f64;
                let mut gross = 0f64;
                let mut crossed = 0u32;
                let mut filled = false;
                for (index, bin) in bins.iter().enumerate() {
                    if bin.price <= 0.0 {
                        continue;
                    }
                    let capacity_in = bin.liquidity_out.0 as f64 / bin.price;
                    crossed = index as u32;
                    if remaining <= capacity_in {
                        gross += remaining * bin.price;
                        filled = true;
                        break;
                    }
                    gross += bin.liquidity_out.0 as f64;
                    remaining -= capacity_in;
                }
                if !filled {
                    return None;
                }
                let variable = u64::from(*variable_fee_bps) * u64::from(crossed) * u64::from(crossed);
                let fee = (u64::from(*base_fee_bps) + variable)
                    .min(u64::from(*max_fee_bps))
                    .min(BPS as u64);
                let gross = gross.floor() as u128;
                let amount_out = gross.checked_mul(BPS - u128::from(fee))? / BPS;
                if amount_out == 0 {
                    return None;
                }
                Some(Swap {
                    amount_out,
                    fee_bps: fee as u32,
                    price_impact_bps: impact_bps(self.spot_price(), amount_in, gross),
                    bins_crossed: crossed,
                })
            }
        }
    }
}

fn impact_bps(spot: f64, amount_in: u128, gross_out: u128) -> u32 {
    if spot <= 0.0 {
        return 0;
    }
    let effective = gross_out as f64 / amount_in as f64;
    let impact = (1.0 - effective / spot) * BPS as f64;
    impact.clamp(0.0, BPS as f64).round() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpmm(reserve_in: u128, reserve_out: u128, fee_bps: u32) -> PoolState {
        PoolState::ConstantProduct {
            reserve_in: Units(reserve_in),
            reserve_out: Units(reserve_out),
            fee_bps,
        }
    }

    #[test]
    fn constant_product_matches_hand_computed_values() {
        // 10_000 in, 25 bps fee → 9_975 effective; 1e6·9975 / (1e6 + 9975) = 9876.48…
        let swap = cpmm(1_000_000, 1_000_000, 25).swap(10_000).unwrap();
        assert_eq!(swap.amount_out, 9_876);
        assert_eq!(swap.fee_bps, 25);
        // Gross 1e6·1e4/(1.01e6) = 9900.99 → 9900: impact 1 - 0.99 = 100 bps.
        assert_eq!(swap.price_impact_bps, 100);
    }

    #[test]
    fn constant_product_without_fee_keeps_k() {
        let swap = cpmm(500, 2_000, 0).swap(500).unwrap();
        // (500 + 500) · (2000 - 1000) = 500 · 2000
        assert_eq!(swap.amount_out, 1_000);
    }

    #[test]
    fn bins_fill_across_bins_and_charge_volatility_fee() {
        let pool = PoolState::Bins {
            bins: vec![
                Bin {
                    price: 2.0,
                    liquidity_out: Units(100),
                },
                Bin {
                    price: 1.0,
                    liquidity_out: Units(1_000),
                },
            ],
            base_fee_bps: 10,
            variable_fee_bps: 5,
            max_fee_bps: 100,
        };
        // 50 in drains bin 0 (100 out), 30 more at price 1 → 130 gross, one
        // bin crossed: fee 10 + 5·1² = 15 bps → 130·0.9985 = 129.8 → 129.
        let swap = pool.swap(80).unwrap();
        assert_eq!(swap.bins_crossed, 1);
        assert_eq!(swap.fee_bps, 15);
        assert_eq!(swap.amount_out, 129);
        // Spot 2.0, effective 130/80 = 1.625: impact 1875 bps.
        assert_eq!(swap.price_impact_bps, 1_875);
    }

    #[test]
    fn the_reachable_part_of_a_pool_swaps_every_smaller_amount_alike() {
        let pool = PoolState::Bins {
            bins: (0..50)
                .map(|i| Bin {
                    price: 2.0 - 0.01 * f64::from(i),
                    liquidity_out: Units(100),
                })
                .collect(),
            base_fee_bps: 10,
            variable_fee_bps: 5,
            max_fee_bps: 300,
        };
        // 100 in: 50 drains bin 0, 50.25 bin 1, the rest fills in bin 2.
        let reachable = pool.reachable(120);
        let PoolState::Bins { bins, .. } = &reachable else {
            unreachable!()
        };
        assert_eq!(bins.len(), 3);
        for amount in 1..=120 {
            assert_eq!(reachable.swap(amount), pool.swap(amount), "{amount}");
        }
        // More than the pool holds: nothing is cut, the swap still refuses.
        assert_eq!(pool.reachable(1_000_000), pool);
        assert_eq!(cpmm(10, 10, 0).reachable(5), cpmm(10, 10, 0));
    }

    #[test]
    fn bins_without_enough_liquidity_refuse() {
        let pool = PoolState::Bins {
            bins: vec![Bin {
                price: 1.0,
                liquidity_out: Units(10),
            }],
            base_fee_bps: 0,
            variable_fee_bps: 0,
            max_fee_bps: 0,
        };
        assert_eq!(pool.swap(11), None);
        assert_eq!(pool.swap(10).unwrap().amount_out, 10);
    }

    #[test]
    fn zero_input_or_dust_output_refuses() {
        assert_eq!(cpmm(1_000, 1_000, 25).swap(0), None);
        assert_eq!(cpmm(1_000_000, 1, 25).swap(1), None);
    }
}
