//! The confirm stage: every leg filled, so total the output, price it, and
//! record the terminal `confirmed` event with the filled route. Imports
//! `domain` and the `store` seam; never `api`, `config` or an adapter.

use super::{Outcome, Pipeline};
use crate::{
    domain::{EventData, Order, OrderPatch, Route, format_price, format_units, progress},
    store::StoreError,
    telemetry,
};

impl Pipeline {
    /// Every leg filled: record the totals and the `confirmed` event.
    pub(super) async fn confirm(&self, order: &Order, route: Route, attempt: u32) -> Result<Outcome, StoreError> {
        let amount_out: u128 = route.legs.iter().filter_map(|l| l.filled_out).map(|u| u.0).sum();
        let (din, dout) = (self.decimals(&order.token_in), self.decimals(&order.token_out));
        let price = format_price(order.amount_in, din, amount_out, dout);
        let dex = route.dex();
        let tx_hash = route.legs[0].signature.clone();
        let confirmed = EventData::Confirmed {
            tx_hash: tx_hash.clone(),
            dex: dex.clone(),
            amount_out: format_units(amount_out, dout),
            executed_price: price.clone(),
        };
        let patch = OrderPatch {
            route: Some(route),
            tx_hash: Some(tx_hash),
            dex: Some(dex.clone()),
            amount_out: Some(amount_out),
            executed_price: Some(price),
            ..OrderPatch::default()
        };
        let message = "Order successfully executed".to_owned();
        self.emit(order.id, progress::CONFIRMED, message, confirmed, patch)
            .await?;
        telemetry::event::order_finished("confirmed", &dex, order.created_at.elapsed(), attempt);
        Ok(Outcome::Finished)
    }
}
