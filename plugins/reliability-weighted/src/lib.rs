//! `reliability-weighted`: send the whole order to the venue with the best
//! output once its recent record is priced in.
//!
//! The host passes each venue's recent failure rate and quote latency in
//! `quotes[].stats`. A venue's score is
//!
//! ```text
//! amountOut × (1 − failureRate′) × (1 − latencyPenaltyBps × latencyMs / 100 / 10000)
//! ```
//!
//! where `failureRate′ = failureRate × samples / max(samples, min_samples)`
//! shrinks a rate seen over few attempts toward zero (a venue is not
//! condemned by one bad call), and `latencyMs` is the host's recent mean (the
//! quote's own latency when the host sent no stats). Venues whose
//! `failureRate′` is above `max_failure_rate` are left out; when that leaves
//! none, the strategy declines with `no_reliable_venue`, so a fallback chain
//! (`["reliability-weighted", "best-price"]`) can take over.
//!
//! Params: `latency_penalty_bps` (output given up per 100 ms, default 10),
//! `min_samples` (default 10), `max_failure_rate` (0–1, default 0.5).
#![forbid(unsafe_code)]

use swapline_sdk::{param, prelude::*};

/// JSON Schema of the params, exported as `swapline_params_schema`.
pub const PARAMS_SCHEMA: &str = r#"{
  "type": "object",
  "properties": {
    "latency_penalty_bps": {"type": "number", "minimum": 0, "maximum": 10000,
                            "description": "Basis points of output given up per 100 ms of recent latency."},
    "min_samples": {"type": "integer", "minimum": 1,
                    "description": "Attempts below which a failure rate is shrunk toward zero."},
    "max_failure_rate": {"type": "number", "minimum": 0, "maximum": 1,
                         "description": "Venues failing more often than this are left out."}
  },
  "additionalProperties": false
}"#;

/// The tuning, from params or defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    /// Basis points of output given up per 100 ms of latency.
    pub latency_penalty_bps: f64,
    /// Attempts below which a failure rate is shrunk toward zero.
    pub min_samples: u32,
    /// Venues failing more often than this are left out.
    pub max_failure_rate: f64,
}

impl Weights {
    /// Reads the params, falling back to the defaults.
    pub fn from_params(params: &Params) -> Result<Self, StrategyError> {
        Ok(Weights {
            latency_penalty_bps: param(params, "latency_penalty_bps")?
                .unwrap_or(10.0_f64)
                .clamp(0.0, 10_000.0),
            min_samples: param(params, "min_samples")?.unwrap_or(10_u32).max(1),
            max_failure_rate: param(params, "max_failure_rate")?.unwrap_or(0.5_f64).clamp(0.0, 1.0),
        })
    }

    /// The failure rate after shrinking toward zero for few samples.
    pub fn failure_rate(&self, quote: &VenueQuote) -> f64 {
        quote.stats.as_ref().map_or(0.0, |stats| {
            let weight = f64::from(stats.samples) / f64::from(stats.samples.max(self.min_samples));
            (stats.failure_rate.clamp(0.0, 1.0) * weight).clamp(0.0, 1.0)
        })
    }

    /// The venue's score: expected output, discounted for failure and delay.
    pub fn score(&self, quote: &VenueQuote) -> f64 {
        let latency = quote
            .stats
            .as_ref()
            .filter(|stats| stats.samples > 0)
            .map_or(quote.latency_ms, |stats| stats.recent_latency_ms);
        let penalty = (self.latency_penalty_bps * latency as f64 / 100.0 / 10_000.0).clamp(0.0, 1.0);
        quote.amount_out.0 as f64 * (1.0 - self.failure_rate(quote)) * (1.0 - penalty)
    }
}

/// The strategy function exported as the plugin's `route`.
pub fn reliability_weighted(input: RouteInput) -> Result<RouteDecision, StrategyError> {
    let weights = Weights::from_params(&input.params)?;
    if input.quotes.is_empty() {
        return Err(StrategyError::new("no_quotes", "no venue quoted this order"));
    }
    let best = input
        .quotes
        .iter()
        .filter(|quote| weights.failure_rate(quote) <= weights.max_failure_rate)
        .map(|quote| (quote, weights.score(quote)))
        .fold(None::<(&VenueQuote, f64)>, |best, (quote, score)| match best {
            Some((_, best_score)) if best_score >= score => best,
            _ => Some((quote, score)),
        });
    let Some((quote, score)) = best else {
        return Err(StrategyError::new(
            "no_reliable_venue",
            format!(
                "every venue fails more often than max_failure_rate = {}",
                weights.max_failure_rate
            ),
        ));
    };
    let record = match &quote.stats {
        Some(stats) => format!(
            "{:.1}% failed of {}, {} ms",
            stats.failure_rate * 100.0,
            stats.samples,
            stats.recent_latency_ms
        ),
        None => format!("no record, {} ms", quote.latency_ms),
    };
    Ok(RouteDecision {
        legs: vec![Leg {
            venue: quote.venue.clone(),
            amount_in: input.order.amount_in,
            min_amount_out: None,
        }],
        reason: Some(format!(
            "most reliable output on {}: score {score:.0} of {} ({record})",
            quote.venue, quote.amount_out
        )),
    })
}

swapline_sdk::export_strategy!(reliability_weighted, params_schema = PARAMS_SCHEMA);

#[cfg(test)]
mod tests {
    use super::*;
    use swapline_abi::testing::{QuoteBuilder, RouteInputBuilder};

    /// A 5 ms quote on a 1,000,000 / 1,000,000 pool with a 25 bps fee;
    /// `stats` is (latency ms, failure rate, samples).
    fn quote(venue: &str, out: u128, stats: Option<(u64, f64, u32)>) -> VenueQuote {
        let quote = QuoteBuilder::new(venue)
            .cpmm(1_000_000, 1_000_000, 25)
            .latency_ms(5)
            .amount_out(out);
        match stats {
            Some((latency, rate, samples)) => quote.stats(latency, rate, samples),
            None => quote,
        }
        .build()
    }

    /// 1,000 SOL base units at 50 bps.
    fn input(quotes: Vec<VenueQuote>) -> RouteInput {
        RouteInputBuilder::new()
            .pair("SOL", "USDC")
            .slippage_bps(50)
            .quotes(quotes)
            .build()
    }

    fn venue(decision: &RouteDecision) -> &str {
        &decision.legs[0].venue
    }

    #[test]
    fn without_stats_the_best_output_wins() {
        let decision = reliability_weighted(input(vec![quote("raydium", 990, None), quote("meteora", 1_000, None)]));
        assert_eq!(venue(&decision.unwrap()), "meteora");
    }

    #[test]
    fn a_venue_that_fails_often_loses_to_a_slightly_worse_price() {
        // meteora pays 1 % more but failed 20 % of 50 recent attempts:
        // 1000 × 0.8 = 800 < 990.
        let quotes = vec![
            quote("raydium", 990, Some((10, 0.0, 50))),
            quote("meteora", 1_000, Some((10, 0.2, 50))),
        ];
        assert_eq!(venue(&reliability_weighted(input(quotes)).unwrap()), "raydium");
    }

    #[test]
    fn few_samples_shrink_the_failure_rate() {
        // One failure in one attempt: 1.0 × 1/10 = 0.1 → 1000 × 0.9 = 900 < 990,
        // but one failure in one attempt against 10 bps more only: 1000 → 999.
        let quotes = vec![
            quote("raydium", 990, Some((10, 0.0, 1))),
            quote("meteora", 1_000, Some((10, 1.0, 1))),
        ];
        let weights = Weights::from_params(&Default::default()).unwrap();
        assert!((weights.failure_rate(&quotes[1]) - 0.1).abs() < 1e-9);
        assert_eq!(venue(&reliability_weighted(input(quotes)).unwrap()), "raydium");
    }

    #[test]
    fn latency_is_priced_per_100_ms() {
        // 2 s of latency at 10 bps per 100 ms costs 2 %: 1000 × 0.98 = 980 < 990.
        let quotes = vec![
            quote("raydium", 990, Some((20, 0.0, 50))),
            quote("meteora", 1_000, Some((2_000, 0.0, 50))),
        ];
        assert_eq!(venue(&reliability_weighted(input(quotes.clone())).unwrap()), "raydium");
        let mut free = input(quotes);
        free.params.insert("latency_penalty_bps".into(), 0.into());
        assert_eq!(venue(&reliability_weighted(free).unwrap()), "meteora");
    }

    #[test]
    fn when_every_venue_is_unreliable_it_declines() {
        let quotes = vec![quote("raydium", 990, Some((10, 0.9, 50)))];
        let error = reliability_weighted(input(quotes)).unwrap_err();
        assert_eq!(error.code, "no_reliable_venue");
    }

    #[test]
    fn params_schema_is_json() {
        let schema: serde_json::Value = serde_json::from_str(PARAMS_SCHEMA).unwrap();
        assert!(schema["properties"]["min_samples"].is_object());
    }
}
