//! The confirm stage: poll the legs' transactions (`getSignatureStatuses`,
//! the slot first) with a doubling delay, rebroadcast the ones still out
//! there, until every leg landed or provably expired; then record the
//! terminal `confirmed` event with the landed route, or end the attempt.
//! Three "unknown" answers are not a failure: only a slot past a
//! transaction's `last_valid_slot` is. Imports `domain` and the `chain` and
//! `store` seams; never `api`, `config` or an adapter.

use super::{
    Outcome, Pipeline,
    submit::{AttemptFailure, Leg, Mode},
};
use crate::{
    domain::{EventData, Order, OrderPatch, Route, format_price, format_units, progress},
    store::StoreError,
    telemetry,
};
use std::time::Duration;
use tokio::time::Instant;

impl Pipeline {
    /// Polls until no leg is [`Leg::Live`], then confirms, fails or ends
    /// the attempt (in [`Mode::Settle`]: confirms, or fails with its
    /// failure). A chain that stops answering keeps it polling (nothing may
    /// be decided while a transaction may land), warning as it goes; the
    /// worker's stall rule releases the job when no chain call has answered
    /// for `worker.stall_timeout`, and the resumed job polls the same
    /// signatures.
    pub(super) async fn land(
        &self,
        order: &Order,
        rpc: Duration,
        mut route: Route,
        attempt: u32,
        mut legs: Vec<Leg>,
        mode: Mode,
    ) -> Result<Outcome, StoreError> {
        let started = Instant::now();
        let mut delay = self.landing.poll_initial.0;
        let mut sent_at = Instant::now();
        let mut unanswered = 0u32;
        while legs.contains(&Leg::Live) {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.landing.poll_max.0);
            // No rebroadcast once a leg failed for good: the order fails
            // when the others settle, and should swap as little as it can.
            let failed = legs.iter().any(|l| matches!(l, Leg::Failed(_)));
            if !failed && sent_at.elapsed() >= self.landing.rebroadcast_every.0 {
                let live: Vec<usize> = (0..legs.len()).filter(|&i| legs[i] == Leg::Live).collect();
                self.rebroadcast(order, rpc, &route, &live).await;
                sent_at = Instant::now();
            }
            let mut polled = route.clone();
            let found = match self.rpc(rpc, self.chain.slot()).await {
                Ok(slot) => self.look(rpc, &mut polled, slot).await,
                Err(error) => Err(error),
            };
            let found = match found {
                Ok(found) => found,
                Err(error) => {
                    unanswered += 1;
                    if unanswered == 3 || unanswered.is_multiple_of(100) {
                        tracing::warn!(order_id = %order.id, %error, polls = unanswered,
                            "the chain does not answer; a transaction may still land, so nothing is decided");
                    }
                    continue;
                }
            };
            unanswered = 0;
            // Legs decided earlier in this attempt (a refused or unsent
            // transaction) stay decided; the others take the new answer.
            for (index, leg) in found.into_iter().enumerate() {
                if legs[index] == Leg::Live {
                    legs[index] = leg;
                }
            }
            route = polled;
        }
        telemetry::event::stage("land", started.elapsed());
        // Each leg decided in this attempt is a sample of its venue's
        // reliability (what `reliability-weighted` routes by).
        for (leg, state) in route.legs.iter().zip(&legs) {
            match state {
                Leg::Landed if leg.transaction.as_ref().is_some_and(|tx| tx.attempt == attempt) => {
                    self.tracker.settled(&leg.dex, true);
                }
                Leg::Failed(_) | Leg::Expired => self.tracker.settled(&leg.dex, false),
                _ => {}
            }
        }
        if legs.iter().all(|l| *l == Leg::Landed) {
            return self.confirm(order, route, attempt).await;
        }
        if let Mode::Settle(failure) = mode {
            return self.fail(order, failure, attempt, Some(route)).await;
        }
        if let Some(Leg::Failed(err)) = legs.iter().find(|l| matches!(l, Leg::Failed(_))) {
            let failure = AttemptFailure {
                code: err.code.clone(),
                message: err.message.clone(),
                transient: false,
            };
            return self
                .failed_attempt(order, route, attempt, progress::submitted(attempt), failure)
                .await;
        }
        let last_valid = route
            .legs
            .iter()
            .filter(|l| l.filled_out.is_none())
            .filter_map(|l| l.transaction.as_ref().map(|tx| tx.last_valid_slot))
            .max()
            .unwrap_or_default();
        let failure = AttemptFailure {
            code: "blockhash_expired".into(),
            message: format!("not landed by its last valid slot {last_valid}; it never will be"),
            transient: true,
        };
        self.failed_attempt(order, route, attempt, progress::submitted(attempt), failure)
            .await
    }

    /// Every leg landed: record the totals and the `confirmed` event.
    pub(super) async fn confirm(&self, order: &Order, route: Route, attempt: u32) -> Result<Outcome, StoreError> {
        let amount_out: u128 = route.legs.iter().filter_map(|l| l.filled_out).map(|u| u.0).sum();
        let (din, dout) = (self.decimals(&order.token_in), self.decimals(&order.token_out));
        let price = format_price(order.amount_in, din, amount_out, dout);
        let dex = route.dex();
        let first = route.legs.first().and_then(|leg| leg.transaction.as_ref());
        let tx_hash = first.map(|tx| tx.signature.clone()).unwrap_or_default();
        let confirmed = EventData::Confirmed {
            tx_hash: tx_hash.clone(),
            dex: dex.clone(),
            amount_out: format_units(amount_out, dout),
            executed_price: price.clone(),
            // The latest slot any leg landed in.
            slot: route
                .legs
                .iter()
                .filter_map(|l| l.landed_slot)
                .max()
                .unwrap_or_default(),
            priority_fee: first.map_or(0, |tx| tx.priority_fee),
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
