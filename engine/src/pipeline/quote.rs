//! The quote stage: ask every venue that trades the pair, concurrently and
//! each under the stage's timeout, and shape the answers for the strategy
//! (venue order, recent stats, reachable bins) and for clients
//! ([`QuoteView`]). Imports `domain`, the `venues` seam and the ABI types;
//! never `api`, `config` or an adapter.

use super::{Pipeline, Stage};
use crate::{
    domain::{Order, QuoteView, format_price, format_units},
    telemetry,
    venues::Venue,
};
use std::sync::Arc;
use swapline_abi::VenueQuote;
use tokio::{task::JoinSet, time::Instant};

impl Pipeline {
    /// The venues with a pool for the order's pair, in configured order.
    pub(super) fn venues_for<'a>(&'a self, order: &'a Order) -> impl Iterator<Item = &'a Arc<dyn Venue>> + 'a {
        self.venues
            .iter()
            .filter(|v| v.supports(&order.token_in, &order.token_out))
    }

    /// Quotes from every venue that answered in time, in venue order (not
    /// arrival order), so strategies see a stable input. Venues that fail
    /// or time out are logged, counted against the venue, and left out.
    pub(super) async fn quotes(&self, order: &Order, stage: &Stage) -> Vec<VenueQuote> {
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for venue in self.venues_for(order) {
            let (venue, timeout) = (venue.clone(), stage.quote_timeout);
            let (token_in, token_out, amount) = (order.token_in.clone(), order.token_out.clone(), order.amount_in);
            tasks.spawn(async move {
                let name = venue.name().to_owned();
                let started = std::time::Instant::now();
                match tokio::time::timeout(timeout, venue.quote(&token_in, &token_out, amount)).await {
                    Ok(result) => result
                        .map(|quote| (quote, started.elapsed()))
                        .map_err(|e| (name, e.to_string())),
                    Err(_) => Err((name, "quote timed out".into())),
                }
            });
        }
        let mut quotes = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok((quote, latency))) => {
                    self.tracker.quote_answered(&quote.venue, latency);
                    quotes.push(quote);
                }
                Ok(Err((venue, error))) => {
                    self.tracker.quote_failed(&venue);
                    tracing::warn!(order_id = %order.id, venue, error, "no quote")
                }
                Err(e) => tracing::warn!(order_id = %order.id, error = %e, "quote task failed"),
            }
        }
        quotes.sort_by_key(|q| self.venues.iter().position(|v| v.name() == q.venue));
        for quote in &mut quotes {
            quote.stats = self.tracker.stats(&quote.venue);
            // Bins this order cannot reach change no leg's outcome: leaving
            // them out keeps the strategy's input (and its JSON parse) small.
            quote.pool = quote.pool.reachable(order.amount_in);
        }
        telemetry::event::stage("quote", started.elapsed());
        quotes
    }

    /// A quote as clients see it: whole-token amounts and a price.
    pub(super) fn quote_view(&self, order: &Order, quote: &VenueQuote) -> QuoteView {
        let (din, dout) = (self.decimals(&order.token_in), self.decimals(&order.token_out));
        QuoteView {
            dex: quote.venue.clone(),
            amount_out: format_units(quote.amount_out.0, dout),
            amount_out_base_units: quote.amount_out,
            price: format_price(order.amount_in, din, quote.amount_out.0, dout),
            fee_bps: quote.fee_bps,
            price_impact_bps: quote.price_impact_bps,
            latency_ms: quote.latency_ms,
        }
    }
}
