//! `best-price`: send the whole order to the single venue whose quote gives
//! the most `token_out` after fees. Ties go to the venue listed first.
#![forbid(unsafe_code)]

use swapline_sdk::prelude::*;

/// The strategy function exported as the plugin's `route`.
pub fn best_price(input: RouteInput) -> Result<RouteDecision, StrategyError> {
    let best = input
        .quotes
        .iter()
        .fold(None::<&VenueQuote>, |best, quote| match best {
            Some(best) if best.amount_out >= quote.amount_out => Some(best),
            _ => Some(quote),
        })
        .ok_or_else(|| StrategyError::new("no_quotes", "no venue quoted this order"))?;
    Ok(RouteDecision {
        legs: vec![Leg {
            venue: best.venue.clone(),
            amount_in: input.order.amount_in,
            min_amount_out: None,
        }],
        reason: Some(format!("best output {} on {}", best.amount_out, best.venue)),
    })
}

/// JSON Schema of the params: `best-price` takes none.
pub const PARAMS_SCHEMA: &str = r#"{"type": "object", "properties": {}, "additionalProperties": false}"#;

swapline_sdk::export_strategy!(best_price, params_schema = PARAMS_SCHEMA);

#[cfg(test)]
mod tests {
    use super::*;
    use swapline_abi::testing::{QuoteBuilder, RouteInputBuilder};

    fn quote(venue: &str, out: u128) -> VenueQuote {
        QuoteBuilder::new(venue).cpmm(1_000, 1_000, 25).amount_out(out).build()
    }

    /// 500 SOL base units at 50 bps.
    fn input(quotes: Vec<VenueQuote>) -> RouteInput {
        RouteInputBuilder::new()
            .pair("SOL", "USDC")
            .amount_in(500)
            .slippage_bps(50)
            .quotes(quotes)
            .build()
    }

    #[test]
    fn picks_highest_output_and_sends_everything_there() {
        let decision = best_price(input(vec![quote("raydium", 10), quote("meteora", 12)])).unwrap();
        assert_eq!(decision.legs.len(), 1);
        assert_eq!(decision.legs[0].venue, "meteora");
        assert_eq!(decision.legs[0].amount_in, Units(500));
    }

    #[test]
    fn tie_goes_to_first_listed() {
        let decision = best_price(input(vec![quote("raydium", 12), quote("meteora", 12)])).unwrap();
        assert_eq!(decision.legs[0].venue, "raydium");
    }

    #[test]
    fn no_quotes_is_an_error() {
        assert_eq!(best_price(input(vec![])).unwrap_err().code, "no_quotes");
    }

    #[test]
    fn abi_round_trip_through_sdk() {
        let bytes = serde_json::to_vec(&input(vec![quote("raydium", 7)])).unwrap();
        let out = swapline_sdk::answer(&bytes, best_price);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(r#"{"ok":{"legs":[{"venue":"raydium","amountIn":"500"}]"#),
            "{text}"
        );
    }
}
