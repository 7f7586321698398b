//! The `ChainRpc` seam: the chain as a Solana RPC node answers for it.
//! Sending a transaction returns at once with no outcome; the transaction
//! then lands, lands late, or is dropped, on the chain's own clock, and
//! only the status queries tell which. A signed transaction names a
//! recent blockhash and can land only while the chain's slot is at most
//! its `last_valid_slot`; after that the same bytes can never land, and a
//! retry needs a new blockhash, hence a new signature.
//!
//! The method names follow Solana's JSON-RPC API
//! (<https://solana.com/docs/rpc/http>): `getSlot`, `getLatestBlockhash`
//! (with `lastValidBlockHeight`; the simulation counts validity in slots),
//! `getRecentPrioritizationFees`, `sendTransaction` and
//! `getSignatureStatuses`. The simulated chain lives in
//! the `venues` module (it owns the pools); a real RPC client would
//! implement the same trait.
//!
//! May import: `domain`.

pub mod config;

use crate::domain::OrderId;
use async_trait::async_trait;
pub use config::{ChainConfig, ChainFaults};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};
use thiserror::Error;

/// A slot number: the chain's clock, one per `chain.slot_time`.
pub type Slot = u64;

/// A recent blockhash and how long a transaction naming it stays valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blockhash {
    /// The hash, base58 (32 bytes, like Solana's).
    pub hash: String,
    /// The slot it was produced in.
    pub slot: Slot,
    /// The last slot in which a transaction naming it can land
    /// (`slot + chain.blockhash_validity_slots`); Solana's
    /// `lastValidBlockHeight`, counted in slots here.
    pub last_valid_slot: Slot,
}

/// A signed swap transaction for one leg of an order's route. Its
/// signature is derived from its whole content ([`Transaction::sign`]), so
/// a new blockhash or a new priority fee means a new signature, which the
/// chain will not deduplicate against the first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// Base58 of 64 bytes (SHA-512 of the content), like a Solana
    /// signature.
    pub signature: String,
    /// The order it belongs to.
    pub order_id: OrderId,
    /// Index of the leg in the route, from 0.
    pub leg: u32,
    /// Venue whose pool the swap runs against.
    pub venue: String,
    /// Symbol sold.
    pub token_in: String,
    /// Symbol bought.
    pub token_out: String,
    /// Amount sold, base units.
    pub amount_in: u128,
    /// The swap fails (lands with an error, no swap) below this output,
    /// base units.
    pub min_amount_out: u128,
    /// The recent blockhash it names.
    pub blockhash: String,
    /// The last slot in which it can land (from its [`Blockhash`]).
    pub last_valid_slot: Slot,
    /// Priority fee, micro-lamports per compute unit (Solana's
    /// `ComputeBudgetProgram.setComputeUnitPrice` unit).
    pub priority_fee: u64,
}

/// Everything a [`Transaction`] is signed over, its signature aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsigned {
    /// The order it belongs to.
    pub order_id: OrderId,
    /// Index of the leg in the route, from 0.
    pub leg: u32,
    /// Venue.
    pub venue: String,
    /// Symbol sold.
    pub token_in: String,
    /// Symbol bought.
    pub token_out: String,
    /// Amount sold, base units.
    pub amount_in: u128,
    /// Minimum output, base units.
    pub min_amount_out: u128,
    /// The recent blockhash.
    pub blockhash: Blockhash,
    /// Priority fee, micro-lamports per compute unit.
    pub priority_fee: u64,
}

impl Transaction {
    /// Signs `unsigned`: the signature is base58(SHA-512) of every field,
    /// so equal content signs equal and any change signs differently.
    pub fn sign(unsigned: Unsigned) -> Transaction {
        let content = format!(
            "swapline/tx/v1|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
            unsigned.order_id,
            unsigned.leg,
            unsigned.venue,
            unsigned.token_in,
            unsigned.token_out,
            unsigned.amount_in,
            unsigned.min_amount_out,
            unsigned.blockhash.hash,
            unsigned.blockhash.last_valid_slot,
            unsigned.priority_fee,
        );
        Transaction {
            signature: bs58::encode(Sha512::digest(content)).into_string(),
            order_id: unsigned.order_id,
            leg: unsigned.leg,
            venue: unsigned.venue,
            token_in: unsigned.token_in,
            token_out: unsigned.token_out,
            amount_in: unsigned.amount_in,
            min_amount_out: unsigned.min_amount_out,
            blockhash: unsigned.blockhash.hash,
            last_valid_slot: unsigned.blockhash.last_valid_slot,
            priority_fee: unsigned.priority_fee,
        }
    }
}

/// How far the cluster has agreed on a landed transaction
/// (`confirmationStatus` of `getSignatureStatuses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Commitment {
    /// Landed in a block the node has seen.
    Processed,
    /// Voted on by a supermajority; what the engine waits for.
    Confirmed,
}

/// Why a landed transaction did nothing but pay its fee (the `err` of a
/// signature status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxError {
    /// Stable code, e.g. `slippage_exceeded`.
    pub code: String,
    /// Human words.
    pub message: String,
}

/// A known transaction's status (an entry of `getSignatureStatuses`; an
/// unknown signature answers `None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureStatus {
    /// The slot it landed in.
    pub slot: Slot,
    /// How far it is confirmed.
    pub commitment: Commitment,
    /// `None`: the swap executed; `Some`: it landed but failed (no swap).
    pub err: Option<TxError>,
    /// Output received, base units, when the swap executed (the
    /// transaction's token balance change).
    pub amount_out: Option<u128>,
    /// The priority fee it paid, micro-lamports per compute unit.
    pub priority_fee: u64,
}

impl SignatureStatus {
    /// Whether it landed and swapped.
    pub fn executed(&self) -> bool {
        self.err.is_none()
    }
}

/// What the chain's RPC can fail with, classified once, here.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChainError {
    /// The node did not answer or is behind; the call may be repeated.
    #[error("chain rpc unavailable: {0}")]
    Unavailable(String),
    /// The node refused the transaction before forwarding it (preflight):
    /// `blockhash_not_found` (expired or unknown blockhash), `invalid`
    /// (malformed). It was not and will not be forwarded.
    #[error("transaction rejected ({code}): {message}")]
    Rejected {
        /// Stable code.
        code: String,
        /// Human words.
        message: String,
    },
}

impl ChainError {
    /// Whether repeating the call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ChainError::Unavailable(_))
    }
}

/// The chain, as its RPC node answers.
///
/// Consistency rule every implementation keeps: once [`ChainRpc::slot`]
/// has answered `S`, every transaction that lands in a slot `≤ S` is
/// already visible to [`ChainRpc::signature_statuses`]. So a caller that
/// reads the slot first and the status second, and finds the slot past
/// the transaction's `last_valid_slot` and the status unknown, knows it
/// can never land.
#[async_trait]
pub trait ChainRpc: Send + Sync {
    /// `getSlot`: the latest processed slot.
    ///
    /// # Errors
    /// [`ChainError::Unavailable`].
    async fn slot(&self) -> Result<Slot, ChainError>;

    /// `getLatestBlockhash`: the blockhash of the latest slot and its
    /// validity.
    ///
    /// # Errors
    /// [`ChainError::Unavailable`].
    async fn latest_blockhash(&self) -> Result<Blockhash, ChainError>;

    /// `getRecentPrioritizationFees`: the priority fees (micro-lamports
    /// per compute unit) of transactions that landed in the last `slots`
    /// slots, one entry per landed transaction, oldest first; empty when
    /// nothing landed.
    ///
    /// # Errors
    /// [`ChainError::Unavailable`].
    async fn recent_priority_fees(&self, slots: u64) -> Result<Vec<u64>, ChainError>;

    /// `sendTransaction`: accepts the signed bytes for forwarding and
    /// returns at once, with no outcome. Sending a signature the chain
    /// already knows is a rebroadcast: it never lands twice.
    ///
    /// # Errors
    /// [`ChainError::Rejected`] by preflight (e.g. `blockhash_not_found`
    /// once the slot is past `last_valid_slot`);
    /// [`ChainError::Unavailable`].
    async fn send_transaction(&self, tx: &Transaction) -> Result<(), ChainError>;

    /// `getSignatureStatuses`: one entry per signature, in order; `None`
    /// for a signature not landed (never seen, still in flight, dropped or
    /// expired: the RPC cannot tell these apart).
    ///
    /// # Errors
    /// [`ChainError::Unavailable`].
    async fn signature_statuses(&self, signatures: &[String]) -> Result<Vec<Option<SignatureStatus>>, ChainError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unsigned(hash: &str, fee: u64) -> Unsigned {
        Unsigned {
            order_id: OrderId(uuid::Uuid::nil()),
            leg: 0,
            venue: "raydium".into(),
            token_in: "SOL".into(),
            token_out: "USDC".into(),
            amount_in: 1_000_000_000,
            min_amount_out: 99,
            blockhash: Blockhash {
                hash: hash.into(),
                slot: 10,
                last_valid_slot: 160,
            },
            priority_fee: fee,
        }
    }

    #[test]
    fn the_signature_covers_the_blockhash_and_the_fee() {
        let a = Transaction::sign(unsigned("h1", 5));
        assert_eq!(a, Transaction::sign(unsigned("h1", 5)));
        assert_ne!(a.signature, Transaction::sign(unsigned("h2", 5)).signature);
        assert_ne!(a.signature, Transaction::sign(unsigned("h1", 6)).signature);
        assert!(a.signature.len() >= 86, "64 bytes in base58");
        assert_eq!(a.last_valid_slot, 160);
    }

    #[test]
    fn only_an_unavailable_node_is_transient() {
        assert!(ChainError::Unavailable("x".into()).is_transient());
        let rejected = ChainError::Rejected {
            code: "blockhash_not_found".into(),
            message: "expired".into(),
        };
        assert!(!rejected.is_transient());
    }
}
