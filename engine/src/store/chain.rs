//! The chain state seam: the simulated chain's durable state, kept by the
//! store (both backends implement it) and driven by `venues::chain`. Three
//! tables (migration 0007): the chain's head (genesis time, tip slot),
//! every transaction the chain has seen, and the pools' state with their
//! cumulative swap flows.
//!
//! The rule every backend keeps: [`ChainStore::advance`] moves the tip
//! from `S` to `T`, lands every pending transaction due by `T`, moves the
//! pools and expires what can no longer land, **in one transaction**,
//! conditional on the tip it locked; two processes racing advance once and
//! never land a transaction twice. So once a reader saw tip `T`, every
//! landing in a slot `≤ T` is already visible (the consistency rule of
//! [`crate::chain::ChainRpc`]). Imports `chain`'s types, `domain` and the
//! store's error only; never `api`, `pipeline` or `venues`.

use super::StoreError;
use crate::chain::{Slot, TxError};
use crate::domain::OrderId;
use async_trait::async_trait;
use std::sync::Arc;

/// Where a transaction stands on the chain (the `state` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxState {
    /// Accepted, not landed yet; lands at its `planned_slot` if that is
    /// still within its validity.
    Pending,
    /// Landed and swapped.
    Landed,
    /// Landed with an error (`slippage_exceeded`, …): fee paid, no swap.
    Failed,
    /// Lost on its way to a leader: never lands (unless a rebroadcast
    /// gives it a new chance while it is valid).
    Dropped,
    /// Still pending when the tip passed its `last_valid_slot`: can never
    /// land.
    Expired,
}

impl TxState {
    /// Every state, in lifecycle order.
    pub const ALL: [TxState; 5] = [
        TxState::Pending,
        TxState::Landed,
        TxState::Failed,
        TxState::Dropped,
        TxState::Expired,
    ];

    /// The stored (and displayed) name.
    pub fn as_str(self) -> &'static str {
        match self {
            TxState::Pending => "pending",
            TxState::Landed => "landed",
            TxState::Failed => "failed",
            TxState::Dropped => "dropped",
            TxState::Expired => "expired",
        }
    }

    /// The state named `text`.
    pub fn parse(text: &str) -> Option<TxState> {
        TxState::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether it landed (swapped or failed): it has a slot and a status.
    pub fn landed(self) -> bool {
        matches!(self, TxState::Landed | TxState::Failed)
    }
}

/// One transaction as the chain keeps it (a row of `chain_txs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainTx {
    /// Base58 signature, the primary key: the chain deduplicates by it and
    /// by nothing else (two signatures of one leg both land).
    pub signature: String,
    /// The order it belongs to.
    pub order_id: OrderId,
    /// Index of the leg in the route, from 0.
    pub leg: u32,
    /// Venue whose pool it swaps against.
    pub venue: String,
    /// Symbol sold.
    pub token_in: String,
    /// Symbol bought.
    pub token_out: String,
    /// Amount sold, base units.
    pub amount_in: u128,
    /// Minimum output, base units.
    pub min_amount_out: u128,
    /// The blockhash it names.
    pub blockhash: String,
    /// The last slot it can land in.
    pub last_valid_slot: Slot,
    /// Priority fee, micro-lamports per compute unit.
    pub priority_fee: u64,
    /// The tip when it was first accepted.
    pub sent_slot: Slot,
    /// The slot the chain decided it lands in (`None`: dropped).
    pub planned_slot: Option<Slot>,
    /// Where it stands.
    pub state: TxState,
    /// The slot it landed in (landed or failed).
    pub landed_slot: Option<Slot>,
    /// Output received when it landed and swapped, base units.
    pub amount_out: Option<u128>,
    /// Why it landed without swapping (`failed`).
    pub error: Option<TxError>,
    /// Sends of the same signature after the first.
    pub rebroadcasts: u32,
}

/// The chain's head: when slot 0 began and the latest slot landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    /// Unix time of slot 0, milliseconds.
    pub genesis_ms: u64,
    /// The latest slot whose landings are all stored.
    pub tip: Slot,
}

/// One pool's durable state (a row of `chain_pools`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRow {
    /// `venue:BASE/QUOTE`.
    pub pool: String,
    /// The pool's state as the venues encode it (JSON; opaque here).
    pub state: String,
    /// Base token paid into the pool by landed swaps, base units.
    pub base_in: u128,
    /// Base token paid out of the pool by landed swaps, base units.
    pub base_out: u128,
    /// Quote token paid into the pool by landed swaps, base units.
    pub quote_in: u128,
    /// Quote token paid out of the pool by landed swaps, base units.
    pub quote_out: u128,
    /// Landed swaps.
    pub swaps: u64,
}

/// What [`ChainStore::broadcast`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broadcast {
    /// A signature the chain had not seen: stored as given.
    First,
    /// A known signature: its rebroadcast count went up; it never lands
    /// twice. Carries the state it had before (a `dropped` one was given a
    /// new chance when the new send was planned to land and it was still
    /// valid).
    Again(TxState),
}

/// The fate of one due transaction, decided by a [`Lander`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Landing {
    /// Landed in `slot` and swapped for `amount_out` base units.
    Landed {
        /// The slot.
        slot: Slot,
        /// Output, base units.
        amount_out: u128,
    },
    /// Landed in `slot` without swapping.
    Failed {
        /// The slot.
        slot: Slot,
        /// Why.
        error: TxError,
    },
}

/// The swap logic the store runs inside the advancing transaction (the
/// venues implement it: the store knows no pool math).
pub trait Lander: Send + Sync {
    /// Lands `due` (pending transactions planned at or before `to`, by
    /// planned slot, then higher fee first) for the tip moving from `from`
    /// to `to`, updating `pools` in place. Answers the fate of each
    /// transaction that lands; the others stay pending (and expire once
    /// past their validity). Pure: called once per advance, under the
    /// store's lock.
    fn land(&self, from: Slot, to: Slot, due: &[ChainTx], pools: &mut [PoolRow]) -> Vec<(String, Landing)>;

    /// Whether pools move in a slot where nothing lands (a price walk).
    /// When they do not, an advance over slots where no pending
    /// transaction is due or expires is a single conditional write of the
    /// tip: no pool is read, locked or written. Default: they do.
    fn walks(&self) -> bool {
        true
    }
}

/// What one [`ChainStore::advance`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Advanced {
    /// The tip before.
    pub from: Slot,
    /// The tip now.
    pub to: Slot,
    /// Transactions that landed (swapped or failed), as stored now.
    pub landed: Vec<ChainTx>,
    /// Pending transactions expired by this advance.
    pub expired: u64,
}

/// The answer of [`ChainStore::advance`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advance {
    /// The tip after the call (this call's, or a racing one's).
    pub tip: Slot,
    /// What this call did; `None` when the tip was already there.
    pub advanced: Option<Advanced>,
}

/// The simulated chain's durable state (implemented by the store).
#[async_trait]
pub trait ChainStore: Send + Sync {
    /// Starts the chain once: stores `genesis_ms` with tip 0 unless a head
    /// exists, and each pool of `pools` not stored yet (the first writer
    /// wins, on any number of processes). Answers the head that stands.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn chain_start(&self, genesis_ms: u64, pools: &[PoolRow]) -> Result<ChainHead, StoreError>;

    /// The head, `None` before [`ChainStore::chain_start`].
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn chain_head(&self) -> Result<Option<ChainHead>, StoreError>;

    /// Sends `tx`: inserts it when its signature is new
    /// ([`Broadcast::First`]); otherwise counts a rebroadcast and, when the
    /// stored one is `dropped`, `tx.state` is pending and the stored
    /// `last_valid_slot` is at least `tx.sent_slot`, makes it pending again
    /// at `tx.planned_slot`. Never touches a landed, failed, expired or
    /// pending one otherwise.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn broadcast(&self, tx: &ChainTx) -> Result<Broadcast, StoreError>;

    /// Advances the tip to `to` if it is below, atomically: every pending
    /// transaction planned at or before `to` goes to `lander`, whose
    /// landings and pool moves are stored; every transaction still pending
    /// with `last_valid_slot < to` becomes expired; the tip becomes `to`.
    /// All conditional on the tip read under lock, so a racing advance
    /// does nothing twice.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`]; [`StoreError::Corrupt`] before
    /// [`ChainStore::chain_start`].
    async fn advance(&self, to: Slot, lander: Arc<dyn Lander>) -> Result<Advance, StoreError>;

    /// Every transaction (of one order with `order`), by sent slot then
    /// signature.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], [`StoreError::Corrupt`].
    async fn chain_txs(&self, order: Option<OrderId>) -> Result<Vec<ChainTx>, StoreError>;

    /// The stored transaction of each signature, in order (`None`:
    /// unknown).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], [`StoreError::Corrupt`].
    async fn chain_statuses(&self, signatures: &[String]) -> Result<Vec<Option<ChainTx>>, StoreError>;

    /// Priority fees of transactions landed (swapped or failed) in a slot
    /// after `after`, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn landed_fees(&self, after: Slot) -> Result<Vec<u64>, StoreError>;

    /// Every stored pool, by name.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], [`StoreError::Corrupt`].
    async fn chain_pools(&self) -> Result<Vec<PoolRow>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_by_name() {
        for state in TxState::ALL {
            assert_eq!(TxState::parse(state.as_str()), Some(state));
        }
        assert_eq!(TxState::parse("lost"), None);
        assert!(TxState::Failed.landed() && !TxState::Dropped.landed());
    }
}
