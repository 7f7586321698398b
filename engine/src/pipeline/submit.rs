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
    Outcome, Pipeline,
    failure::{Failure, FailureCode},
    retry::random_unit,
};
use crate::{
    chain::{Blockhash, ChainError, Commitment, SignatureStatus, Slot, Transaction, TxError, Unsigned},
    domain::{ErrorInfo, EventData, LegTransaction, Order, OrderPatch, Route, progress},
    store::StoreError,
    telemetry,
};
use std::{future::Future, time::Duration};
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
    /// landed), or was recorded but never sent by this run.
    Expired,
}

/// What a submission may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Mode {
    /// Sign what needs signing, send, land.
    Sign,
    /// Sign nothing: settle the transactions already out, then confirm the
    /// order if every leg landed, else fail it with this failure (its
    /// pipeline or a venue is no longer configured).
    Settle(Failure),
}

impl Pipeline {
    /// Runs attempt `attempt` of `route` on the chain (module doc). `seq`
    /// is the order's latest event this run has seen: the `submitted`
    /// record is stored only if nothing else wrote to the order since (two
    /// runs of one order, after a lost lease, never both sign), and each
    /// chain call has `rpc` to answer.
    pub(super) async fn submit(
        &self,
        order: &Order,
        rpc: Duration,
        mut route: Route,
        attempt: u32,
        seq: u64,
        mode: Mode,
    ) -> Result<Outcome, StoreError> {
        let outstanding = route.outstanding();
        // The slot first, the statuses second (`ChainRpc`'s rule): a
        // transaction found unknown with the slot past its validity can
        // never land.
        let looked = match self.rpc(rpc, self.chain.slot()).await {
            Ok(slot) => self.look(rpc, &mut route, slot).await,
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
        let mut mode = mode;
        let mut unsigned: Vec<usize> = (0..legs.len())
            .filter(|&i| {
                let earlier = route.legs[i].transaction.as_ref().is_none_or(|tx| tx.attempt < attempt);
                mode == Mode::Sign && !failed && (legs[i] == Leg::Unsigned || (legs[i] == Leg::Expired && earlier))
            })
            .collect();
        if let Some(&gone) = unsigned
            .iter()
            .find(|&&i| !self.venues.iter().any(|v| v.name() == route.legs[i].dex))
        {
            let message = format!("venue {} is no longer configured", route.legs[gone].dex);
            mode = Mode::Settle(Failure::new(FailureCode::UnknownVenue, message));
            unsigned.clear();
        }
        let mut fresh = Vec::new();
        if !unsigned.is_empty() {
            // The fee first: a slow answer must not eat the blockhash's
            // validity.
            let fee = self.priority_fee(rpc).await;
            let blockhash = match self.rpc(rpc, self.chain.latest_blockhash()).await {
                Ok(blockhash) => blockhash,
                Err(error) => return self.chain_unreachable(order, route, attempt, outstanding, error).await,
            };
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
            return self.land(order, rpc, route, attempt, legs, mode).await;
        }

        if fresh.is_empty() {
            // A resumed run: the transactions are on record; send them again.
            let live: Vec<usize> = (0..legs.len()).filter(|&i| legs[i] == Leg::Live).collect();
            self.rebroadcast(order, rpc, &route, &live).await;
            return self.land(order, rpc, route, attempt, legs, mode).await;
        }
        // Record before sending, and only if no other run wrote meanwhile: a
        // crash from here on resumes polling these very signatures.
        match self.record_submitted(order, &route, attempt, &fresh, seq).await {
            Err(StoreError::Conflict(_)) => {
                tracing::warn!(order_id = %order.id, "another run wrote to the order first; its transactions stand");
                return Ok(Outcome::RetryAfter(self.landing.poll_max.0));
            }
            recorded => recorded?,
        }
        let mut refused = false;
        for tx in &fresh {
            let index = tx.leg as usize;
            if refused {
                // Recorded but never sent: it cannot land from this run.
                legs[index] = Leg::Expired;
                continue;
            }
            match self.rpc(rpc, self.chain.send_transaction(tx)).await {
                Ok(()) => telemetry::chain::sent(),
                // Not forwarded and never will be.
                Err(ChainError::Rejected { code, .. }) if code == "blockhash_not_found" => legs[index] = Leg::Expired,
                Err(ChainError::Rejected { code, message }) => {
                    legs[index] = Leg::Failed(TxError { code, message });
                    refused = true;
                }
                // Maybe forwarded: polling and rebroadcasts tell.
                Err(ChainError::Unavailable(message)) => {
                    tracing::warn!(order_id = %order.id, signature = %tx.signature, %message, "send failed; polling decides");
                }
            }
        }
        self.land(order, rpc, route, attempt, legs, mode).await
    }

    /// Reads the statuses of the legs that have a transaction and sorts
    /// every leg not landed into a [`Leg`]; fills the legs that landed.
    pub(super) async fn look(&self, rpc: Duration, route: &mut Route, slot: Slot) -> Result<Vec<Leg>, ChainError> {
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
            self.rpc(rpc, self.chain.signature_statuses(&signatures)).await?
        };
        if statuses.len() != signatures.len() {
            // A short answer must never read as "unknown": that could
            // expire a leg that landed.
            return Err(ChainError::Unavailable(format!(
                "{} statuses for {} signatures",
                statuses.len(),
                signatures.len()
            )));
        }
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
    async fn priority_fee(&self, rpc: Duration) -> u64 {
        let landing = &self.landing;
        let fees = match self
            .rpc(rpc, self.chain.recent_priority_fees(landing.priority_fee_slots))
            .await
        {
            Ok(fees) => fees,
            Err(error) => {
                tracing::warn!(%error, "recent priority fees unknown; paying chain.min_priority_fee");
                Vec::new()
            }
        };
        percentile(fees, landing.priority_fee_percentile).clamp(landing.min_priority_fee, landing.max_priority_fee)
    }

    /// Sends the recorded transactions of legs `indexes` again (a
    /// rebroadcast never lands twice: same signature).
    pub(super) async fn rebroadcast(&self, order: &Order, rpc: Duration, route: &Route, indexes: &[usize]) {
        for &index in indexes {
            let Some(recorded) = &route.legs[index].transaction else {
                continue;
            };
            let Some(tx) = self.resign(order, route, index, recorded) else {
                continue;
            };
            match self.rpc(rpc, self.chain.send_transaction(&tx)).await {
                Ok(()) => telemetry::chain::rebroadcast(),
                Err(error) => {
                    tracing::debug!(order_id = %order.id, signature = %tx.signature, %error, "rebroadcast failed");
                }
            }
        }
    }

    /// The transaction recorded for leg `index`, rebuilt byte for byte
    /// from the order (same content, same signature); `None`, logged, if
    /// it no longer signs the same (then sending it would be a second,
    /// different transaction for the leg).
    fn resign(&self, order: &Order, route: &Route, index: usize, recorded: &LegTransaction) -> Option<Transaction> {
        let blockhash = Blockhash {
            hash: recorded.blockhash.clone(),
            slot: 0,
            last_valid_slot: recorded.last_valid_slot,
        };
        let tx = self.sign(order, route, index, &blockhash, recorded.priority_fee);
        if tx.signature != recorded.signature {
            tracing::error!(order_id = %order.id, leg = index, recorded = %recorded.signature, rebuilt = %tx.signature,
                "the recorded transaction no longer rebuilds to its signature; not rebroadcast");
            return None;
        }
        Some(tx)
    }

    /// `submitted`, with the route holding the legs' transactions (the
    /// new ones in `fresh`, which share one blockhash and fee) and the
    /// attempt count, stored before anything is sent, after event `seq`
    /// only ([`StoreError::Conflict`] otherwise).
    async fn record_submitted(
        &self,
        order: &Order,
        route: &Route,
        attempt: u32,
        fresh: &[Transaction],
        seq: u64,
    ) -> Result<(), StoreError> {
        let max = self.retry.max_attempts;
        let first = &fresh[0];
        let submitted = EventData::Submitted {
            attempt,
            max_attempts: max,
            signatures: route
                .legs
                .iter()
                .filter(|l| l.filled_out.is_none())
                .filter_map(|l| l.transaction.as_ref().map(|tx| tx.signature.clone()))
                .collect(),
            signature: first.signature.clone(),
            blockhash: first.blockhash.clone(),
            last_valid_slot: first.last_valid_slot,
            priority_fee: first.priority_fee,
        };
        let patch = OrderPatch {
            attempts: Some(attempt),
            route: Some(route.clone()),
            ..OrderPatch::default()
        };
        let message = format!("Submitting transaction (attempt {attempt}/{max})...");
        self.emit_after(
            order.id,
            progress::submitted(attempt),
            message,
            submitted,
            patch,
            Some(seq),
        )
        .await?;
        Ok(())
    }

    /// One chain call, answered within `timeout` (the stage's
    /// `execute_timeout`) or [`ChainError::Unavailable`]. An answer is
    /// progress for the worker's lease: the chain is alive, and the run is
    /// waiting on it, not hung.
    pub(super) async fn rpc<T>(
        &self,
        timeout: Duration,
        call: impl Future<Output = Result<T, ChainError>>,
    ) -> Result<T, ChainError> {
        let answer = match tokio::time::timeout(timeout, call).await {
            Ok(answer) => answer,
            Err(_) => Err(ChainError::Unavailable(format!("no answer within {timeout:?}"))),
        };
        if answer.is_ok() {
            super::worker::progressed();
        }
        answer
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
            // Counted even when it failed before its `submitted` record
            // (`chain_unavailable`), so attempts always run out.
            attempts: Some(attempt),
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
/// confirmed with an error fails it; only processed, it waits for
/// confirmation (a processed transaction can still be rolled back, and is
/// then unknown again).
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
        (None, None) => {
            // A swap that executed is never failed; the chain's answer is
            // broken, so the leg stays undecided and is polled again.
            tracing::error!(slot = status.slot, "a landed swap without its output; polling again");
            Leg::Live
        }
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
