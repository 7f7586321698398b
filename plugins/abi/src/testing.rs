//! Builders for test fixtures (feature `testing`): a [`VenueQuote`] or a
//! [`RouteInput`] with plain defaults, changed only where a test cares.
//! Amounts are base units. Not for production code: defaults are arbitrary.
//!
//! ```
//! use swapline_abi::testing::{QuoteBuilder, RouteInputBuilder};
//! let input = RouteInputBuilder::new()
//!     .amount_in(1_000)
//!     .quote(QuoteBuilder::new("raydium").amount_out(990).build())
//!     .build();
//! assert_eq!(input.quotes[0].venue, "raydium");
//! ```

use crate::{OrderInfo, PoolState, RouteInput, Units, VenueQuote, VenueStats};

/// Builds a [`VenueQuote`]. Defaults: output 0, no fee, no price impact,
/// 0 ms, a fee-free constant-product pool of 1,000,000 / 1,000,000, no
/// stats.
#[derive(Debug, Clone)]
pub struct QuoteBuilder {
    quote: VenueQuote,
}

impl QuoteBuilder {
    /// A quote from `venue` with the defaults.
    pub fn new(venue: impl Into<String>) -> Self {
        QuoteBuilder {
            quote: VenueQuote {
                venue: venue.into(),
                amount_out: Units(0),
                fee_bps: 0,
                price_impact_bps: 0,
                latency_ms: 0,
                pool: PoolState::ConstantProduct {
                    reserve_in: Units(1_000_000),
                    reserve_out: Units(1_000_000),
                    fee_bps: 0,
                },
                stats: None,
            },
        }
    }

    /// Output for the whole order, base units.
    pub fn amount_out(mut self, amount_out: u128) -> Self {
        self.quote.amount_out = Units(amount_out);
        self
    }

    /// The quote's fee, basis points (the pool keeps its own).
    pub fn fee_bps(mut self, fee_bps: u32) -> Self {
        self.quote.fee_bps = fee_bps;
        self
    }

    /// Price impact, basis points.
    pub fn price_impact_bps(mut self, bps: u32) -> Self {
        self.quote.price_impact_bps = bps;
        self
    }

    /// Quote latency, milliseconds.
    pub fn latency_ms(mut self, ms: u64) -> Self {
        self.quote.latency_ms = ms;
        self
    }

    /// A constant-product pool with these reserves (base units) and fee
    /// (basis points); the quote's fee becomes the pool's.
    pub fn cpmm(mut self, reserve_in: u128, reserve_out: u128, fee_bps: u32) -> Self {
        self.quote.pool = PoolState::ConstantProduct {
            reserve_in: Units(reserve_in),
            reserve_out: Units(reserve_out),
            fee_bps,
        };
        self.quote.fee_bps = fee_bps;
        self
    }

    /// Any pool (the quote's fee is left as it is).
    pub fn pool(mut self, pool: PoolState) -> Self {
        self.quote.pool = pool;
        self
    }

    /// Output, fee and price impact of the pool for `amount_in` base units
    /// (output 0 when the pool cannot fill it).
    pub fn quoted_for(mut self, amount_in: u128) -> Self {
        match self.quote.pool.swap(amount_in) {
            Some(swap) => {
                self.quote.amount_out = Units(swap.amount_out);
                self.quote.fee_bps = swap.fee_bps;
                self.quote.price_impact_bps = swap.price_impact_bps;
            }
            None => self.quote.amount_out = Units(0),
        }
        self
    }

    /// The host's record of the venue: mean latency (ms), failure rate
    /// (0.0–1.0) and sample count.
    pub fn stats(mut self, recent_latency_ms: u64, failure_rate: f64, samples: u32) -> Self {
        self.quote.stats = Some(VenueStats {
            recent_latency_ms,
            failure_rate,
            samples,
        });
        self
    }

    /// The quote.
    pub fn build(self) -> VenueQuote {
        self.quote
    }
}

/// Builds a [`RouteInput`]. Defaults: order `o` selling 1,000 base units of
/// `A` for `B` at 100 bps slippage, no quotes, no params.
#[derive(Debug, Clone)]
pub struct RouteInputBuilder {
    input: RouteInput,
}

impl Default for RouteInputBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RouteInputBuilder {
    /// An input with the defaults.
    pub fn new() -> Self {
        RouteInputBuilder {
            input: RouteInput {
                order: OrderInfo {
                    id: "o".into(),
                    token_in: "A".into(),
                    token_out: "B".into(),
                    amount_in: Units(1_000),
                    slippage_bps: 100,
                },
                quotes: Vec::new(),
                params: Default::default(),
            },
        }
    }

    /// The order id.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.input.order.id = id.into();
        self
    }

    /// Symbols sold and bought.
    pub fn pair(mut self, token_in: impl Into<String>, token_out: impl Into<String>) -> Self {
        self.input.order.token_in = token_in.into();
        self.input.order.token_out = token_out.into();
        self
    }

    /// Amount sold, base units.
    pub fn amount_in(mut self, amount_in: u128) -> Self {
        self.input.order.amount_in = Units(amount_in);
        self
    }

    /// Slippage tolerance, basis points.
    pub fn slippage_bps(mut self, slippage_bps: u32) -> Self {
        self.input.order.slippage_bps = slippage_bps;
        self
    }

    /// Adds a quote.
    pub fn quote(mut self, quote: VenueQuote) -> Self {
        self.input.quotes.push(quote);
        self
    }

    /// Adds quotes, in order.
    pub fn quotes(mut self, quotes: impl IntoIterator<Item = VenueQuote>) -> Self {
        self.input.quotes.extend(quotes);
        self
    }

    /// Sets a pipeline param.
    pub fn param(mut self, key: impl Into<String>, value: serde_json::Value) -> Self {
        self.input.params.insert(key.into(), value);
        self
    }

    /// The input.
    pub fn build(self) -> RouteInput {
        self.input
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_for_prices_the_whole_order_on_the_pool() {
        let quote = QuoteBuilder::new("v").cpmm(1_000, 1_000, 0).quoted_for(1_000).build();
        // 1000·1000/(1000+1000) = 500.
        assert_eq!(quote.amount_out, Units(500));
        assert_eq!(quote.fee_bps, 0);
    }

    #[test]
    fn the_input_carries_what_was_set_and_defaults_elsewhere() {
        let input = RouteInputBuilder::new()
            .pair("SOL", "USDC")
            .amount_in(500)
            .quotes([QuoteBuilder::new("a").build(), QuoteBuilder::new("b").build()])
            .build();
        assert_eq!(
            (input.order.token_in.as_str(), input.order.amount_in),
            ("SOL", Units(500))
        );
        assert_eq!((input.order.id.as_str(), input.order.slippage_bps), ("o", 100));
        let venues: Vec<&str> = input.quotes.iter().map(|q| q.venue.as_str()).collect();
        assert_eq!(venues, ["a", "b"]);
    }
}
