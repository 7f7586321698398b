//! The host's check of a strategy's answer, before anything acts on it:
//! known venues, positive legs that sum to the order amount, fillable legs,
//! and a minimum output no looser than the slippage allows. Imports the ABI
//! types only; never wasmtime.

use super::PluginError;
use std::collections::HashSet;
use swapline_abi::{RouteDecision, RouteInput};

/// Legs a route may have at most.
pub const MAX_LEGS: usize = 16;

/// A leg that passed every check, with the host's own expectations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedLeg {
    /// Venue.
    pub venue: String,
    /// Input, base units.
    pub amount_in: u128,
    /// Output the venue's pool gives for this input, base units.
    pub expected_out: u128,
    /// Floor the venue must honour: the strategy's if tighter, else the
    /// slippage floor.
    pub min_amount_out: u128,
}

fn invalid(code: &'static str, message: String) -> PluginError {
    PluginError::InvalidRoute { code, message }
}

/// Checks a decision against the input it answered.
pub fn validate(input: &RouteInput, decision: &RouteDecision) -> Result<Vec<CheckedLeg>, PluginError> {
    if decision.legs.is_empty() {
        return Err(invalid("empty_route", "the route has no legs".into()));
    }
    if decision.legs.len() > MAX_LEGS {
        return Err(invalid(
            "too_many_legs",
            format!("{} legs; at most {MAX_LEGS}", decision.legs.len()),
        ));
    }
    let mut seen = HashSet::new();
    let mut total: u128 = 0;
    let mut checked = Vec::with_capacity(decision.legs.len());
    for leg in &decision.legs {
        let quote = input.quotes.iter().find(|q| q.venue == leg.venue).ok_or_else(|| {
            invalid(
                "unknown_venue",
                format!("venue {:?} did not quote this order", leg.venue),
            )
        })?;
        if !seen.insert(leg.venue.as_str()) {
            return Err(invalid(
                "duplicate_venue",
                format!("venue {:?} appears twice", leg.venue),
            ));
        }
        if leg.amount_in.0 == 0 {
            return Err(invalid("zero_leg", format!("leg on {} sends nothing", leg.venue)));
        }
        total = total
            .checked_add(leg.amount_in.0)
            .ok_or_else(|| invalid("amount_mismatch", "leg amounts overflow".into()))?;
        let swap = quote.pool.swap(leg.amount_in.0).ok_or_else(|| {
            invalid(
                "unfillable_leg",
                format!("{} cannot fill {} base units", leg.venue, leg.amount_in),
            )
        })?;
        let floor = swap.amount_out * u128::from(10_000 - input.order.slippage_bps.min(10_000)) / 10_000;
        let min_amount_out = match leg.min_amount_out {
            Some(min) if min.0 < floor => {
                return Err(invalid(
                    "min_out_too_loose",
                    format!(
                        "leg on {} accepts {} but the {} bps slippage allows no less than {floor}",
                        leg.venue, min, input.order.slippage_bps
                    ),
                ));
            }
            Some(min) => min.0,
            None => floor,
        };
        checked.push(CheckedLeg {
            venue: leg.venue.clone(),
            amount_in: leg.amount_in.0,
            expected_out: swap.amount_out,
            min_amount_out,
        });
    }
    if total != input.order.amount_in.0 {
        return Err(invalid(
            "amount_mismatch",
            format!(
                "legs send {total} base units but the order is for {}",
                input.order.amount_in
            ),
        ));
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use swapline_abi::{
        Leg, Units,
        testing::{QuoteBuilder, RouteInputBuilder},
    };

    /// 1,000 of A for B at 100 bps; raydium and meteora each have a
    /// fee-free 1,000,000 / 1,000,000 pool.
    fn input() -> RouteInput {
        RouteInputBuilder::new()
            .quotes(["raydium", "meteora"].map(|venue| QuoteBuilder::new(venue).build()))
            .build()
    }

    fn leg(venue: &str, amount: u128, min: Option<u128>) -> Leg {
        Leg {
            venue: venue.into(),
            amount_in: Units(amount),
            min_amount_out: min.map(Units),
        }
    }

    fn check(legs: Vec<Leg>) -> Result<Vec<CheckedLeg>, &'static str> {
        validate(&input(), &RouteDecision { legs, reason: None }).map_err(|e| match e {
            PluginError::InvalidRoute { code, .. } => code,
            other => panic!("{other}"),
        })
    }

    #[test]
    fn a_valid_split_gets_slippage_floors() {
        let legs = check(vec![leg("raydium", 400, None), leg("meteora", 600, None)]).unwrap();
        // 1e6·400/(1e6+400) = 399.84 → 399; floor 1% → 395.
        assert_eq!(legs[0].expected_out, 399);
        assert_eq!(legs[0].min_amount_out, 395);
    }

    #[test]
    fn each_broken_rule_has_its_code() {
        let cases: Vec<(Vec<Leg>, &str)> = vec![
            (vec![], "empty_route"),
            (vec![leg("orca", 1_000, None)], "unknown_venue"),
            (
                vec![leg("raydium", 500, None), leg("raydium", 500, None)],
                "duplicate_venue",
            ),
            (vec![leg("raydium", 0, None), leg("meteora", 1_000, None)], "zero_leg"),
            (vec![leg("raydium", 1_001, None)], "amount_mismatch"),
            (vec![leg("raydium", 999, None)], "amount_mismatch"),
            (vec![leg("raydium", 1_000, Some(1))], "min_out_too_loose"),
            (
                (0..17).map(|i| leg(&format!("v{i}"), 1, None)).collect(),
                "too_many_legs",
            ),
        ];
        for (legs, code) in cases {
            assert_eq!(check(legs.clone()).unwrap_err(), code, "{legs:?}");
        }
    }

    #[test]
    fn a_tighter_floor_from_the_strategy_is_kept() {
        let legs = check(vec![leg("raydium", 1_000, Some(998))]).unwrap();
        assert_eq!(legs[0].min_amount_out, 998);
    }
}
