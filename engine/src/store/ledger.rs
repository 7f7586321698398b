//! The execution ledger seam: the durable record of which leg signatures
//! were executed and with what outcome, kept by the store (both backends
//! implement it) and read by the venues. Imports `domain` and the store's
//! error only; never `api`, `pipeline` or `venues`.

use super::StoreError;
use crate::domain::OrderId;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The recorded outcome of a signature, kept durable like chain state.
/// Stored as JSON (`{"filled":{"amount_out":7}}`), so the shape is part of
/// the stored data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Executed.
    Filled {
        /// Output, base units.
        amount_out: u128,
    },
    /// Rejected for good.
    Rejected {
        /// Stable code.
        code: String,
        /// Human words.
        message: String,
    },
}

/// One executed (or rejected) signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    /// Signature.
    pub signature: String,
    /// Order it belongs to.
    pub order_id: OrderId,
    /// Venue that executed it.
    pub venue: String,
    /// Amount sold, base units.
    pub amount_in: u128,
    /// What happened.
    pub outcome: Outcome,
}

/// Why the ledger failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LedgerError {
    /// The store behind the ledger failed; the cause is the source.
    #[error("execution ledger: {0}")]
    Store(#[from] StoreError),
}

impl LedgerError {
    /// Whether trying again later may succeed (the store's own answer).
    pub fn is_transient(&self) -> bool {
        match self {
            LedgerError::Store(e) => e.is_transient(),
        }
    }
}

/// The durable record of executed signatures (implemented by the store).
#[async_trait]
pub trait ExecutionLedger: Send + Sync {
    /// The outcome recorded for a signature, if any.
    ///
    /// # Errors
    /// [`LedgerError::Store`] when the store cannot be read.
    async fn lookup(&self, signature: &str) -> Result<Option<Execution>, LedgerError>;

    /// Records an outcome unless the signature already has one; returns the
    /// outcome that stands (the first).
    ///
    /// # Errors
    /// [`LedgerError::Store`] when the store cannot be written.
    async fn record(&self, execution: Execution) -> Result<Execution, LedgerError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_store_failure_is_the_source_and_keeps_its_words() {
        let error = LedgerError::from(StoreError::Unavailable("down".into()));
        assert_eq!(error.to_string(), "execution ledger: store unavailable: down");
        assert_eq!(
            error.source().map(ToString::to_string).as_deref(),
            Some("store unavailable: down")
        );
        assert!(error.is_transient());
        assert!(!LedgerError::from(StoreError::Corrupt("x".into())).is_transient());
    }
}
