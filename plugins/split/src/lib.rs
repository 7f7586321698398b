//! `split`: divide the order across venues so that the total output is as
//! large as possible, given each pool's price impact.
//!
//! The order is cut into `steps` equal chunks (the first takes the
//! remainder) and each chunk goes, greedily, to the venue whose pool gives
//! the most extra output for it, priced with [`PoolState::swap`] on the
//! venue's current allocation: the same function the host validates legs
//! with. Output is concave in the amount for both pool kinds, so the greedy
//! allocation is optimal at chunk granularity. When no split beats the best
//! single venue, the whole order goes there, so `split` never does worse
//! than `best-price`.
//!
//! Params (`[pipelines.<name>.params]`): `steps` (1–1000, default 100) and
//! `max_legs` (1–16, default 16).
#![forbid(unsafe_code)]

use swapline_sdk::{param, prelude::*};

/// JSON Schema of the params, exported as `swapline_params_schema`.
pub const PARAMS_SCHEMA: &str = r#"{
  "type": "object",
  "properties": {
    "steps": {"type": "integer", "minimum": 1, "maximum": 1000,
              "description": "Chunks the order is cut into; more is finer and slower."},
    "max_legs": {"type": "integer", "minimum": 1, "maximum": 16,
                 "description": "Most venues one order is split across."}
  },
  "additionalProperties": false
}"#;

const DEFAULT_STEPS: u32 = 100;
const DEFAULT_MAX_LEGS: usize = 16;

/// The strategy function exported as the plugin's `route`.
pub fn split(input: RouteInput) -> Result<RouteDecision, StrategyError> {
    let steps = param::<u32>(&input.params, "steps")?
        .unwrap_or(DEFAULT_STEPS)
        .clamp(1, 1000);
    let max_legs = param::<usize>(&input.params, "max_legs")?
        .unwrap_or(DEFAULT_MAX_LEGS)
        .clamp(1, 16);
    if input.quotes.is_empty() {
        return Err(StrategyError::new("no_quotes", "no venue quoted this order"));
    }
    let total = input.order.amount_in.0;
    let allocation = allocate(&input.quotes, total, steps, max_legs);
    let single = best_single(&input.quotes, total);

    let better = |out: u128| single.is_none_or(|(_, best)| out > best);
    match (allocation, single) {
        (Some((amounts, out)), single) if better(out) => {
            let legs: Vec<Leg> = input
                .quotes
                .iter()
                .zip(&amounts)
                .filter(|(_, amount)| **amount > 0)
                .map(|(quote, amount)| Leg {
                    venue: quote.venue.clone(),
                    amount_in: Units(*amount),
                    min_amount_out: None,
                })
                .collect();
            let shares: Vec<String> = legs
                .iter()
                .map(|leg| format!("{} {:.1}%", leg.venue, leg.amount_in.0 as f64 * 100.0 / total as f64))
                .collect();
            let reason = match single {
                Some((index, best)) => format!(
                    "split {}: expected {out}, best single venue {} {best}",
                    shares.join(", "),
                    input.quotes[index].venue
                ),
                None => format!(
                    "split {}: expected {out}; no single venue can fill it",
                    shares.join(", ")
                ),
            };
            Ok(RouteDecision {
                legs,
                reason: Some(reason),
            })
        }
        (Some(_), None) | (None, None) => Err(StrategyError::new(
            "unfillable",
            "the quoted pools together cannot fill this order",
        )),
        (_, Some((index, best))) => Ok(RouteDecision {
            legs: vec![Leg {
                venue: input.quotes[index].venue.clone(),
                amount_in: input.order.amount_in,
                min_amount_out: None,
            }],
            reason: Some(format!(
                "no split beats {} alone: expected {best}",
                input.quotes[index].venue
            )),
        }),
    }
}

/// Greedy allocation of `total` over the quotes' pools: per venue amount and
/// the expected total output. `None` when the pools cannot absorb a chunk.
///
/// Every chunk after the first has the same size, and a step changes only
/// the amount of the venue that took the chunk, so each venue's output for
/// "its amount plus one chunk" is priced once and kept until that venue's
/// amount changes: one swap per step instead of one per venue per step
/// (`swap` is pure, so the allocation is the same as pricing every venue at
/// every step).
pub fn allocate(quotes: &[VenueQuote], total: u128, steps: u32, max_legs: usize) -> Option<(Vec<u128>, u128)> {
    let steps = u128::from(steps).min(total).max(1);
    let chunk = total / steps;
    let first = total - chunk * (steps - 1);
    let mut amounts = vec![0u128; quotes.len()];
    let mut outs = vec![0u128; quotes.len()];
    // `priced[i]`: output of venue i's pool for `amounts[i] + chunk`, or
    // `None` when not priced since `amounts[i]` last changed.
    let mut priced: Vec<Option<Option<u128>>> = vec![None; quotes.len()];
    for step in 0..steps {
        let used = amounts.iter().filter(|a| **a > 0).count();
        let mut best: Option<(usize, u128, u128)> = None;
        for (index, quote) in quotes.iter().enumerate() {
            if amounts[index] == 0 && used >= max_legs {
                continue;
            }
            let out = if step == 0 {
                quote.pool.swap(first).map(|swap| swap.amount_out)
            } else {
                *priced[index]
                    .get_or_insert_with(|| quote.pool.swap(amounts[index] + chunk).map(|swap| swap.amount_out))
            };
            let Some(out) = out else {
                continue;
            };
            let gain = out.saturating_sub(outs[index]);
            if best.is_none_or(|(_, best_gain, _)| gain > best_gain) {
                best = Some((index, gain, out));
            }
        }
        let (index, _, out) = best?;
        amounts[index] += if step == 0 { first } else { chunk };
        outs[index] = out;
        priced[index] = None;
    }
    Some((amounts, outs.iter().sum()))
}

/// The single venue giving the most for the whole order: (index, output).
fn best_single(quotes: &[VenueQuote], total: u128) -> Option<(usize, u128)> {
    quotes
        .iter()
        .enumerate()
        .filter_map(|(index, quote)| quote.pool.swap(total).map(|swap| (index, swap.amount_out)))
        .fold(None, |best, (index, out)| match best {
            Some((_, best_out)) if best_out >= out => best,
            _ => Some((index, out)),
        })
}

swapline_sdk::export_strategy!(split, params_schema = PARAMS_SCHEMA);

#[cfg(test)]
mod tests {
    use super::*;
    use swapline_abi::testing::{QuoteBuilder, RouteInputBuilder};

    fn cpmm(venue: &str, reserve: u128) -> VenueQuote {
        QuoteBuilder::new(venue).cpmm(reserve, reserve, 25).build()
    }

    /// `amount` SOL base units at 50 bps; each quote's output is its pool's
    /// for the whole amount.
    fn input(amount: u128, quotes: Vec<VenueQuote>) -> RouteInput {
        let mut quotes = quotes;
        for quote in &mut quotes {
            quote.amount_out = Units(quote.pool.swap(amount).map_or(0, |s| s.amount_out));
        }
        RouteInputBuilder::new()
            .pair("SOL", "USDC")
            .amount_in(amount)
            .slippage_bps(50)
            .quotes(quotes)
            .build()
    }

    fn expected_out(input: &RouteInput, decision: &RouteDecision) -> u128 {
        decision
            .legs
            .iter()
            .map(|leg| {
                let quote = input.quotes.iter().find(|q| q.venue == leg.venue).unwrap();
                quote.pool.swap(leg.amount_in.0).unwrap().amount_out
            })
            .sum()
    }

    #[test]
    fn a_large_order_split_beats_best_price() {
        // A pool of 1e9/1e9 and one of 5e8/5e8, both 25 bps; the order is a
        // fifth of the deeper pool, so price impact dominates.
        let input = input(
            200_000_000,
            vec![cpmm("raydium", 1_000_000_000), cpmm("orca", 500_000_000)],
        );

        let best = best_price::best_price(input.clone()).unwrap();
        assert_eq!(best.legs.len(), 1);
        assert_eq!(best.legs[0].venue, "raydium");
        // All on raydium: 1e9·199.5e6 / (1e9 + 199.5e6) = 166_319_299.7
        assert_eq!(expected_out(&input, &best), 166_319_299);

        let split = split(input.clone()).unwrap();
        let amounts: Vec<(&str, u128)> = split.legs.iter().map(|l| (l.venue.as_str(), l.amount_in.0)).collect();
        // Reserves 2:1, so the optimum is a 2:1 split (133.3M / 66.7M); the
        // greedy lands on the chunk grid next to it.
        assert_eq!(amounts, vec![("raydium", 134_000_000), ("orca", 66_000_000)]);
        let out = expected_out(&input, &split);
        assert_eq!(out, 176_080_287);
        // 9_760_988 more base units of output: +5.87 %.
        assert_eq!(out - 166_319_299, 9_760_988);
        assert_eq!(split.legs.iter().map(|l| l.amount_in.0).sum::<u128>(), 200_000_000);
    }

    #[test]
    fn a_small_order_stays_on_one_venue() {
        // Far below the depth of either pool, a second leg only adds the
        // rounding of another swap: the whole order goes to the deeper pool.
        let input = input(1_000, vec![cpmm("raydium", 1_000_000_000), cpmm("orca", 500_000_000)]);
        let decision = split(input).unwrap();
        assert_eq!(decision.legs.len(), 1);
        assert_eq!(decision.legs[0].venue, "raydium");
        assert_eq!(decision.legs[0].amount_in, Units(1_000));
    }

    #[test]
    fn max_legs_caps_the_venues_used() {
        let mut input = input(
            300_000_000,
            vec![
                cpmm("a", 1_000_000_000),
                cpmm("b", 1_000_000_000),
                cpmm("c", 1_000_000_000),
            ],
        );
        input.params.insert("max_legs".into(), 2.into());
        let decision = split(input).unwrap();
        assert_eq!(decision.legs.len(), 2);
        assert_eq!(decision.legs.iter().map(|l| l.amount_in.0).sum::<u128>(), 300_000_000);
    }

    #[test]
    fn bad_params_and_no_quotes_are_errors() {
        let mut bad = input(10, vec![cpmm("a", 1_000)]);
        bad.params.insert("steps".into(), "many".into());
        assert_eq!(split(bad).unwrap_err().code, "invalid_params");
        assert_eq!(split(input(10, vec![])).unwrap_err().code, "no_quotes");
    }

    /// The allocation without the price cache: every venue priced at every
    /// step, as `allocate` did before.
    fn allocate_uncached(quotes: &[VenueQuote], total: u128, steps: u32, max_legs: usize) -> Option<(Vec<u128>, u128)> {
        let steps = u128::from(steps).min(total).max(1);
        let chunk = total / steps;
        let first = total - chunk * (steps - 1);
        let mut amounts = vec![0u128; quotes.len()];
        let mut outs = vec![0u128; quotes.len()];
        for step in 0..steps {
            let size = if step == 0 { first } else { chunk };
            let used = amounts.iter().filter(|a| **a > 0).count();
            let mut best: Option<(usize, u128, u128)> = None;
            for (index, quote) in quotes.iter().enumerate() {
                if amounts[index] == 0 && used >= max_legs {
                    continue;
                }
                let Some(swap) = quote.pool.swap(amounts[index] + size) else {
                    continue;
                };
                let gain = swap.amount_out.saturating_sub(outs[index]);
                if best.is_none_or(|(_, best_gain, _)| gain > best_gain) {
                    best = Some((index, gain, swap.amount_out));
                }
            }
            let (index, _, out) = best?;
            amounts[index] += size;
            outs[index] = out;
        }
        Some((amounts, outs.iter().sum()))
    }

    #[test]
    fn the_price_cache_changes_no_allocation() {
        let bins = |venue: &str, depth: u128| {
            QuoteBuilder::new(venue)
                .pool(PoolState::Bins {
                    bins: (0..30)
                        .map(|b| swapline_abi::Bin {
                            price: 1.5 * (1.0 - 0.002 * f64::from(b)),
                            liquidity_out: Units(3_000 * depth),
                        })
                        .collect(),
                    base_fee_bps: 20,
                    variable_fee_bps: 1,
                    max_fee_bps: 200,
                })
                .build()
        };
        let quotes = vec![
            cpmm("a", 1_000_000),
            bins("b", 10),
            cpmm("c", 300_000),
            bins("d", 3),
            cpmm("dust", 10),
        ];
        for total in [1, 7, 999, 100_000, 250_000, 10_000_000] {
            for steps in [1, 3, 100, 1000] {
                for max_legs in [1, 2, 16] {
                    assert_eq!(
                        allocate(&quotes, total, steps, max_legs),
                        allocate_uncached(&quotes, total, steps, max_legs),
                        "{total} in {steps} steps, {max_legs} legs"
                    );
                }
            }
        }
    }

    #[test]
    fn params_schema_is_json() {
        let schema: serde_json::Value = serde_json::from_str(PARAMS_SCHEMA).unwrap();
        assert_eq!(schema["additionalProperties"], false);
    }
}
