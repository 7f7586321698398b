//! The route and build stages: quote, hand the strategy chain a
//! [`RouteInput`], and turn its checked answer into a [`Route`] whose legs
//! are signed later, by `submit`. Records `routing` (10, 30) and
//! `building` (50, 70). Imports `domain`, the `strategy` seam and the ABI
//! types; never wasmtime, `api`, `config` or an adapter.

use super::{
    Pipeline, Stage,
    failure::{Failure, FailureCode, StepError},
};
use crate::{
    domain::{EventData, Order, OrderPatch, QuoteView, Route, RouteLeg, Timestamp, progress},
    strategy::Routed,
    telemetry,
};
use swapline_abi::{OrderInfo, RouteInput, Units, VenueQuote};
use tokio::time::Instant;

impl Pipeline {
    /// Quote, let the strategy choose, check its answer, build the legs.
    ///
    /// # Errors
    /// [`StepError::Fail`] with `no_quotes` or `plugin_error`;
    /// [`StepError::Store`] when an event could not be recorded.
    /// Answers the route with the `seq` of the last event this stage
    /// stored (what a submission compares against before it sends).
    pub(super) async fn route(&self, order: &Order, stage: &Stage) -> Result<(Route, u64), StepError> {
        let venues = self.venues_for(order).count();
        let fetching = EventData::Routing {
            quotes_fetched: None,
            quotes: None,
        };
        let message = format!("Fetching quotes from {venues} DEXs...");
        self.emit(order.id, progress::QUOTING, message, fetching, OrderPatch::default())
            .await?;
        let quotes = self.quotes(order, stage).await;
        if quotes.is_empty() {
            let message = format!(
                "none of {venues} venues quoted {} → {}",
                order.token_in, order.token_out
            );
            return Err(Failure::new(FailureCode::NoQuotes, message).into());
        }
        let views: Vec<QuoteView> = quotes.iter().map(|q| self.quote_view(order, q)).collect();
        let received = EventData::Routing {
            quotes_fetched: Some(quotes.len() as u32),
            quotes: Some(views.clone()),
        };
        let patch = OrderPatch {
            quotes: Some((views.clone(), Timestamp::now())),
            ..OrderPatch::default()
        };
        let message = format!("Received {} quotes", quotes.len());
        self.emit(order.id, progress::QUOTED, message, received, patch).await?;

        let started = Instant::now();
        let routed = stage.chain.route(route_input(order, quotes)).await;
        telemetry::event::stage("route", started.elapsed());
        let routed = routed.map_err(Failure::plugin)?;
        let version = order.route.as_ref().map_or(1, |r| r.version + 1);
        let strategy = routed.by.clone();
        let route = build(version, routed);
        let dex = route.dex();
        let chosen = EventData::Building {
            chosen_dex: Some(dex.clone()),
            route: Some(route.clone()),
            quote: views.iter().find(|v| v.dex == route.legs[0].dex).cloned(),
            strategy: Some(strategy.name.clone()),
        };
        let patch = OrderPatch {
            route: Some(route.clone()),
            strategy: Some(strategy),
            ..OrderPatch::default()
        };
        let message = format!("Building transaction on {dex}...");
        self.emit(order.id, progress::ROUTED, message, chosen, patch).await?;
        let built = EventData::Building {
            chosen_dex: None,
            route: None,
            quote: None,
            strategy: None,
        };
        let message = "Transaction built, ready to submit".to_owned();
        let built = self
            .emit(order.id, progress::BUILT, message, built, OrderPatch::default())
            .await?;
        Ok((route, built.seq))
    }
}

/// What the strategy sees: the order in base units and the quotes. The
/// chain fills in its params.
fn route_input(order: &Order, quotes: Vec<VenueQuote>) -> RouteInput {
    RouteInput {
        order: OrderInfo {
            id: order.id.to_string(),
            token_in: order.token_in.clone(),
            token_out: order.token_out.clone(),
            amount_in: Units(order.amount_in),
            slippage_bps: order.slippage_bps,
        },
        quotes,
        params: Default::default(),
    }
}

/// Route `version` of an order from a checked answer: one leg per venue; the reason names strategies that failed before this one.
fn build(version: u32, routed: Routed) -> Route {
    let reason = match routed.failed.as_slice() {
        [] => routed.reason,
        failed => {
            let earlier: Vec<String> = failed
                .iter()
                .map(|(id, e)| format!("{} failed: {e}", id.name))
                .collect();
            Some(format!(
                "{} (fallback after {})",
                routed.reason.unwrap_or_else(|| routed.by.name.clone()),
                earlier.join("; ")
            ))
        }
    };
    let legs = routed.legs.into_iter().map(|leg| RouteLeg {
        dex: leg.venue,
        amount_in: Units(leg.amount_in),
        expected_out: Units(leg.expected_out),
        min_amount_out: Units(leg.min_amount_out),
        transaction: None,
        filled_out: None,
        landed_slot: None,
    });
    Route {
        version,
        reason,
        legs: legs.collect(),
    }
}
