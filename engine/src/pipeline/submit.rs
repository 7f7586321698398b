//! The submit stage, by the chain's rules: find where each leg's
//! transaction stands, sign a new one only for a leg that has none or
//! whose last one **provably expired** (the slot is past its
//! `last_valid_slot` and it has not landed), record the transactions on
//! the order (`submitted`) **before** sending them, send, then hand over to
//! `confirm`, which polls until every leg landed or expired. A failed
//! attempt either fails the order (permanent) or records the attempt and
//! asks for a retry after the backoff (transient). Records `submitted`,
//! `execution-failed` and `retry-pending`. Imports `domain` and the
//! `chain` seam; never `api`, `config` or an adapter.
//!
//! Why wait for expiry: `sendTransaction` only says a node accepted the
//! bytes. A transaction not seen yet may still land, late, until its
//! blockhash expires; a new transaction for the same leg has a new
//! blockhash, hence a new signature, which the chain does not deduplicate
//! against the first, so signing again any earlier could swap twice (see
//! <https://solana.com/developers/guides/advanced/retry> and
//! <https://solana.com/docs/core/transactions#recent-blockhash>).

use super::{
    Outcome, Pipeline, Stage,
    failure::{Failure, FailureCode},
    retry::random_unit,
};
use crate::{
    chain::{Blockhash, ChainError, Commitment, SignatureStatus, Slot, Transaction, TxError, Unsigned},
    domain::{ErrorInfo, EventData, LegTransaction, Order, OrderPatch, Route, progress},
    store::StoreError,
    telemetry,
};
use std::future::Future;
use swapline_abi::Units;

/// Where one leg not landed yet stands, from the slot and its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Leg {
    /// No transaction yet, or its last one expired without landing: sign
    /// one.
    Unsigned,
    /// Its transaction may still land: poll it, rebroadcast it, never sign
    /// another.
    Live,
    /// Its transaction landed and swapped (`filled_out` is set).
    Landed,
    /// Its transaction landed with an error, or was refused before it was
    /// forwarded: it did not swap and the attempt fails for good.
    Failed(TxError),
    /// Its transaction can never land (slot past `last_valid_slot`, not
    /// landed).
    Expired,
}

impl Pipeline {
    /// Runs attempt `attempt` of `route` on the chain (module doc).
    pub(super) async fn submit(
        &self,
        order: &Order,
        stage: &Stage,
        mut route: Route,
        attempt: u32,
    ) -> Result<Outcome, StoreError> {
        if let Some(leg) = route
            .legs
            .iter()
            .find(|l| l.filled_out.is_none() && !self.venues.iter().any(|v| v.name() == l.dex))
        {
            let message = format!("venue {} is no longer configured", leg.dex);
            let failure = Failure::new(FailureCode::UnknownVenue, message);
            return self.fail(order, failure, attempt, Some(route)).await;
        }
        let outstanding = route
            .legs
            .iter()
            .any(|l| l.filled_out.is_none() && l.transaction.is_some());
        // The slot first, the statuses second (`ChainRpc`'s rule): a
        // transaction found unknown with the slot past its validity can
        // never land.
        let looked = match self.rpc(stage, self.chain.slot()).await {
            Ok(slot) => self.look(stage, &mut route, slot).await,
            Err(error) => Err(error),
        };
        let mut legs = match looked {
            Ok(found) => found,
            Err(error) => return self.chain_unreachable(order, route, attempt, outstanding, error).await,
        };
        if legs.iter().all(|l| matches!(l, Leg::Landed)) {
            return self.confirm(order, route, attempt).await;
        }

        // Sign what needs signing: a leg with no transaction, or whose
        // transaction of an earlier attempt expired. Nothing while a leg
        // failed for good (the attempt only waits for its live legs), and
        // not a leg whose transaction of *this* attempt expired (a resumed
        // run): that attempt failed, and the next one signs.
        let failed = legs.iter().any(|l| matches!(l, Leg::Failed(_)));
        let unsigned: Vec<usize> = (0..legs.len())
            .filter(|&i| {
                let earlier = route.legs[i].transaction.as_ref().is_none_or(|tx| tx.attempt < attempt);
                !failed && (legs[i] == Leg::Unsigned || (legs[i] == Leg::Expired && earlier))
            })
            .collect();
        let mut fresh = Vec::new();
        if !unsigned.is_empty() {
            let signed = match self.rpc(stage, self.chain.latest_blockhash()).await {
                Ok(blockhash) => (blockhash.clone(), self.priority_fee(stage).await),
                Err(error) => return self.chain_unreachable(order, route, attempt, outstanding, error).await,
            };
            let (blockhash, fee) = signed;
            for &index in &unsigned {
                let tx = self.sign(order, &route, index, &blockhash, fee);
                route.legs[index].transaction = Some(LegTransaction {
                    signature: tx.signature.clone(),
                    blockhash: tx.blockhash.clone(),
                    last_valid_slot: tx.last_valid_slot,
                    priority_fee: tx.priority_fee,
                    attempt,
                });
                legs[index] = Leg::Live;
                fresh.push(tx);
            }
        }

        if !legs.contains(&Leg::Live) {
            // Nothing out there and nothing signed: the attempt is decided.
            return self.land(order, stage, route, attempt, legs).await;
        }
        // Record before sending: a crash from here on resumes polling these
        // very signatures.
        self.record_submitted(order, &route, attempt).await?;
        for tx in &fresh {
            telemetry::chain::sent();
            if let Err(error) = self.rpc(stage, self.chain.send_transaction(tx)).await {
                let index = tx.leg as usize;
                legs[index] = match error {
                    // Not forwarded and never will be.
                    ChainError::Rejected { code, .. } if code == "blockhash_not_found" => Leg::Expired,
                    ChainError::Rejected { code, message } => Leg::Failed(TxError { code, message }),
                    // Maybe forwarded: polling and rebroadcasts tell.
                    ChainError::Unavailable(message) => {
                        tracing::warn!(order_id = %order.id, signature = %tx.signature, %message, "send failed; polling decides");
                        Leg::Live
                    }
                };
            }
        }
        // A resumed attempt rebroadcasts what is still out there.
        let resent: Vec<usize> = (0..legs.len())
            .filter(|&i| legs[i] == Leg::Live && !fresh.iter().any(|tx| tx.leg as usize == i))
            .collect();
        self.rebroadcast(order, stage, &route, &resent).await;
        self.land(order, stage, route, attempt, legs).await
    }

    /// Reads the statuses of the legs that have a transaction and sorts
    /// every leg not landed into a [`Leg`]; fills the legs that landed.
    pub(super) async fn look(&self, stage: &Stage, route: &mut Route, slot: Slot) -> Result<Vec<Leg>, ChainError> {
        let asked: Vec<usize> = (0..route.legs.len())
            .filter(|&i| route.legs[i].filled_out.is_none() && route.legs[i].transaction.is_some())
            .collect();
        let signatures: Vec<String> = asked
            .iter()
            .filter_map(|&i| route.legs[i].transaction.as_ref().map(|tx| tx.signature.clone()))
            .collect();
        let statuses = if signatures.is_empty() {
            Vec::new()
        } else {
            self.rpc(stage, self.chain.signature_statuses(&signatures)).await?
        };
        let mut legs = Vec::with_capacity(route.legs.len());
        for (index, leg) in route.legs.iter_mut().enumerate() {
            if leg.filled_out.is_some() {
                legs.push(Leg::Landed);
                continue;
            }
            let Some(tx) = &leg.transaction else {
                legs.push(Leg::Unsigned);
                continue;
            };
            let status = asked
                .iter()
                .position(|&i| i == index)
                .and_then(|at| statuses.get(at).cloned().flatten());
            legs.push(match status {
                Some(status) => settle_leg(leg, status),
                None if slot > tx.last_valid_slot => Leg::Expired,
                None => Leg::Live,
            });
        }
        Ok(legs)
    }

    /// A transaction for leg `index` of `route`, naming `blockhash`.
    fn sign(&self, order: &Order, route: &Route, index: usize, blockhash: &Blockhash, fee: u64) -> Transaction {
        let leg = &route.legs[index];
        Transaction::sign(Unsigned {
            order_id: order.id,
            leg: index as u32,
            venue: leg.dex.clone(),
            token_in: order.token_in.clone(),
            token_out: order.token_out.clone(),
            amount_in: leg.amount_in.0,
            min_amount_out: leg.min_amount_out.0,
            blockhash: blockhash.clone(),
            priority_fee: fee,
        })
    }

    /// The priority fee to pay: the configured percentile (nearest rank)
    /// of the fees landed in the last `priority_fee_slots` slots, at least
    /// `min_priority_fee`, at most `max_priority_fee` (the method of
    /// <https://solana.com/developers/guides/advanced/how-to-use-priority-fees>,
    /// over `getRecentPrioritizationFees`). The minimum when the chain does
    /// not answer.
    async fn priority_fee(&self, stage: &Stage) -> u64 {
        let landing = &self.landing;
        let fees = self
            .rpc(stage, self.chain.recent_priority_fees(landing.priority_fee_slots))
            .await
            .unwrap_or_default();
        percentile(fees, landing.priority_fee_percentile).clamp(landing.min_priority_fee, landing.max_priority_fee)
    }

    /// Sends the recorded transactions of legs `indexes` again (a
    /// rebroadcast never lands twice: same signature).
    pub(super) async fn rebroadcast(&self, order: &Order, stage: &Stage, route: &Route, indexes: &[usize]) {
        for &index in indexes {
            let Some(recorded) = &route.legs[index].transaction else {
                continue;
            };
            let tx = self.resign(order, route, index, recorded);
            telemetry::chain::rebroadcast();
            if let Err(error) = self.rpc(stage, self.chain.send_transaction(&tx)).await {
                tracing::debug!(order_id = %order.id, signature = %tx.signature, %error, "rebroadcast failed");
            }
        }
    }

    /// The transaction recorded for leg `index`, rebuilt byte for byte
    /// from the order (same content, same signature).
    fn resign(&self, order: &Order, route: &Route, index: usize, recorded: &LegTransaction) -> Transaction {
        let blockhash = Blockhash {
            hash: recorded.blockhash.clone(),
            slot: 0,
            last_valid_slot: recorded.last_valid_slot,
        };
        let tx = self.sign(order, route, index, &blockhash, recorded.priority_fee);
        debug_assert_eq!(tx.signature, recorded.signature, "same content, same signature");
        tx
    }

    /// `submitted`, with the route holding the legs' transactions and the
    /// attempt count, stored before anything is sent.
    async fn record_submitted(&self, order: &Order, route: &Route, attempt: u32) -> Result<(), StoreError> {
        let max = self.retry.max_attempts;
        let live: Vec<&LegTransaction> = route
            .legs
            .iter()
            .filter(|l| l.filled_out.is_none())
            .filter_map(|l| l.transaction.as_ref())
            .collect();
        let newest = live.iter().max_by_key(|tx| tx.last_valid_slot);
        let submitted = EventData::Submitted {
            attempt,
            max_attempts: max,
            signatures: live.iter().map(|tx| tx.signature.clone()).collect(),
            signature: live.first().map(|tx| tx.signature.clone()).unwrap_or_default(),
            blockhash: newest.map(|tx| tx.blockhash.clone()).unwrap_or_default(),
            last_valid_slot: newest.map_or(0, |tx| tx.last_valid_slot),
            priority_fee: newest.map_or(0, |tx| tx.priority_fee),
        };
        let patch = OrderPatch {
            attempts: Some(attempt),
            route: Some(route.clone()),
            ..OrderPatch::default()
        };
        let message = format!("Submitting transaction (attempt {attempt}/{max})...");
        self.emit(order.id, progress::submitted(attempt), message, submitted, patch)
            .await?;
        Ok(())
    }

    /// One chain call under the stage's `execute_timeout`; no answer in
    /// time is [`ChainError::Unavailable`].
    pub(super) async fn rpc<T>(
        &self,
        stage: &Stage,
        call: impl Future<Output = Result<T, ChainError>>,
    ) -> Result<T, ChainError> {
        match tokio::time::timeout(stage.execute_timeout, call).await {
            Ok(answer) => answer,
            Err(_) => Err(ChainError::Unavailable(format!(
                "no answer within {:?}",
                stage.execute_timeout
            ))),
        }
    }

    /// The chain did not answer before anything of this attempt was
    /// decided. With no transaction out there the attempt failed
    /// transiently (`chain_unavailable`). With one out there nothing may
    /// be decided (it may still land): the job comes back after
    /// `chain.poll_max` and resumes this same attempt.
    async fn chain_unreachable(
        &self,
        order: &Order,
        route: Route,
        attempt: u32,
        outstanding: bool,
        error: ChainError,
    ) -> Result<Outcome, StoreError> {
        if outstanding {
            tracing::warn!(order_id = %order.id, %error, "chain unreachable with a transaction out; resuming later");
            return Ok(Outcome::RetryAfter(self.landing.poll_max.0));
        }
        let code = match &error {
            ChainError::Unavailable(_) => "chain_unavailable".to_owned(),
            ChainError::Rejected { code, .. } => code.clone(),
        };
        let failure = AttemptFailure {
            code,
            message: error.to_string(),
            transient: error.is_transient(),
        };
        let progress = progress::submitted(attempt);
        self.failed_attempt(order, route, attempt, progress, failure).await
    }

    /// An attempt ended without every leg landed: a permanent failure
    /// fails the order; a transient one is recorded (`execution-failed`,
    /// with the route's landed legs) and then retried after the backoff
    /// (`retry-pending`), or fails the order when no attempts remain.
    pub(super) async fn failed_attempt(
        &self,
        order: &Order,
        route: Route,
        attempt: u32,
        progress: u8,
        error: AttemptFailure,
    ) -> Result<Outcome, StoreError> {
        let info = ErrorInfo {
            code: error.code.clone(),
            message: error.message.clone(),
        };
        let failure = Failure::new(FailureCode::Venue(info.code.clone()), info.message.clone());
        if !error.transient {
            return self.fail(order, failure, attempt, Some(route)).await;
        }
        let failed = EventData::ExecutionFailed {
            error: info.message.clone(),
            code: info.code.clone(),
            transient: true,
            retries_remaining: self.retry.remaining(attempt),
            attempt,
        };
        let patch = OrderPatch {
            route: Some(route),
            last_error: Some(info),
            ..OrderPatch::default()
        };
        let message = format!("Attempt {attempt} failed: {}", error.message);
        self.emit(order.id, progress, message, failed, patch).await?;
        let Some(delay) = self.retry.retry_after(attempt, random_unit()) else {
            return self.fail(order, failure.after_attempts(attempt), attempt, None).await;
        };
        let next = attempt + 1;
        let pending = EventData::RetryPending {
            delay: delay.as_millis() as u64,
            next_attempt: next,
        };
        let message = format!(
            "Retrying in {} ms (attempt {next}/{})",
            delay.as_millis(),
            self.retry.max_attempts
        );
        self.emit(order.id, progress, message, pending, OrderPatch::default())
            .await?;
        Ok(Outcome::RetryAfter(delay))
    }
}

/// Why an attempt failed: a stable code, words, and whether a retry may
/// succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AttemptFailure {
    /// Stable code (`blockhash_expired`, `slippage_exceeded`, …).
    pub(super) code: String,
    /// Human words.
    pub(super) message: String,
    /// Whether a retry may succeed.
    pub(super) transient: bool,
}

/// A leg whose transaction has a status: confirmed and swapped fills it;
/// confirmed with an error fails it; only processed, it has landed (it can
/// no longer expire) and waits for confirmation.
fn settle_leg(leg: &mut crate::domain::RouteLeg, status: SignatureStatus) -> Leg {
    if status.commitment != Commitment::Confirmed {
        return Leg::Live;
    }
    match (status.err, status.amount_out) {
        (None, Some(out)) => {
            leg.filled_out = Some(Units(out));
            leg.landed_slot = Some(status.slot);
            Leg::Landed
        }
        (None, None) => Leg::Failed(TxError {
            code: "no_output".into(),
            message: "the transaction landed without a recorded output".into(),
        }),
        (Some(err), _) => {
            leg.landed_slot = Some(status.slot);
            Leg::Failed(err)
        }
    }
}

/// The `p`-th percentile (0–100) of `values` by nearest rank; 0 for none.
fn percentile(mut values: Vec<u64>, p: u8) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let rank = (f64::from(p.min(100)) / 100.0 * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentile_is_the_nearest_rank() {
        assert_eq!(percentile(vec![], 75), 0);
        assert_eq!(percentile(vec![5], 0), 5);
        assert_eq!(percentile(vec![40, 10, 30, 20], 75), 30);
        assert_eq!(percentile(vec![40, 10, 30, 20], 100), 40);
        assert_eq!(percentile(vec![40, 10, 30, 20], 50), 20);
        assert_eq!(percentile(vec![40, 10, 30, 20], 1), 10);
    }
}
