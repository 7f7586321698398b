//! Orders and the rules of their status.

use crate::domain::{EventKind, KeyId, QuoteView, Route, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::{fmt, str::FromStr};
use uuid::Uuid;

/// An order's id: a UUID v4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct OrderId(pub Uuid);

impl OrderId {
    /// A fresh random id.
    pub fn new() -> Self {
        OrderId(Uuid::new_v4())
    }
}

impl Default for OrderId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for OrderId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(OrderId)
    }
}

/// Kinds of order. Only market orders exist for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum OrderType {
    /// Execute now at the best available route.
    #[default]
    Market,
}

impl OrderType {
    /// The wire name, also the pipeline that runs it.
    pub fn as_str(&self) -> &'static str {
        match self {
            OrderType::Market => "market",
        }
    }
}

/// Where an order is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Accepted and queued.
    Pending,
    /// Fetching quotes and choosing a route.
    Routing,
    /// Building the transaction.
    Building,
    /// Sent to the venue (also while a retry waits).
    Submitted,
    /// Executed. Terminal.
    Confirmed,
    /// Given up. Terminal.
    Failed,
    /// Cancelled by its owner (or an admin) before it was submitted.
    /// Terminal.
    Cancelled,
}

impl Status {
    /// All statuses, in lifecycle order.
    pub const ALL: [Status; 7] = [
        Status::Pending,
        Status::Routing,
        Status::Building,
        Status::Submitted,
        Status::Confirmed,
        Status::Failed,
        Status::Cancelled,
    ];

    /// Confirmed, failed and cancelled orders never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Confirmed | Status::Failed | Status::Cancelled)
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Routing => "routing",
            Status::Building => "building",
            Status::Submitted => "submitted",
            Status::Confirmed => "confirmed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    /// Parses a wire name.
    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// An error as recorded on an order and in events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorInfo {
    /// Stable snake_case code.
    pub code: String,
    /// Human words.
    pub message: String,
}

/// Which strategy routed an order: plugin name and module digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StrategyRef {
    /// Plugin name (built-in name or file stem).
    pub name: String,
    /// SHA-256 of the module bytes, hex.
    pub sha256: String,
}

/// A validated order, ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    /// Fresh id.
    pub id: OrderId,
    /// Queue job id.
    pub job_id: String,
    /// Order kind.
    pub order_type: OrderType,
    /// Canonical symbol sold.
    pub token_in: String,
    /// Canonical symbol bought.
    pub token_out: String,
    /// Amount sold, base units.
    pub amount_in: u128,
    /// Largest accepted shortfall, basis points.
    pub slippage_bps: u32,
    /// The API key that created it; `None`: created without a key (auth
    /// off). Only this key (or an `admin` key) sees the order.
    pub owner: Option<KeyId>,
    /// The order is never submitted after this instant (it fails with
    /// `deadline_exceeded`); from the request's `expiresAt` or
    /// `orders.default_ttl`. `None`: no deadline.
    pub expires_at: Option<Timestamp>,
    /// The failed or cancelled order this one retries (`POST
    /// /api/orders/{id}/retry`); the store links both ways.
    pub retry_of: Option<OrderId>,
}

/// An order as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    /// Id.
    pub id: OrderId,
    /// Queue job id given at creation.
    pub job_id: String,
    /// Order kind.
    pub order_type: OrderType,
    /// Symbol sold.
    pub token_in: String,
    /// Symbol bought.
    pub token_out: String,
    /// Amount sold, base units.
    pub amount_in: u128,
    /// Slippage tolerance, basis points.
    pub slippage_bps: u32,
    /// Current status.
    pub status: Status,
    /// Kind of the last stored event.
    pub last_kind: EventKind,
    /// Seq of the last stored event.
    pub last_seq: u64,
    /// Quotes of the latest routing.
    pub quotes: Vec<QuoteView>,
    /// When the latest quotes were taken.
    pub quoted_at: Option<Timestamp>,
    /// The chosen route (with signatures once built).
    pub route: Option<Route>,
    /// Strategy that chose the route.
    pub strategy: Option<StrategyRef>,
    /// Submit attempts started.
    pub attempts: u32,
    /// Latest error.
    pub last_error: Option<ErrorInfo>,
    /// Transaction signature of the (first) executed leg.
    pub tx_hash: Option<String>,
    /// Venue(s) that executed, `+`-joined.
    pub dex: Option<String>,
    /// Output received, base units of `token_out`.
    pub amount_out: Option<u128>,
    /// Executed price, whole `token_out` per whole `token_in`.
    pub executed_price: Option<String>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// Position in creation order, for pagination.
    pub created_seq: i64,
    /// The API key that created it (`None`: created without a key).
    pub owner: Option<KeyId>,
    /// Not submitted after this instant (`None`: no deadline).
    pub expires_at: Option<Timestamp>,
    /// The order this one retries.
    pub retry_of: Option<OrderId>,
    /// The order that retries this one.
    pub retried_by: Option<OrderId>,
}

impl Order {
    /// Whether a submission of this order has started (a `submitted`
    /// event was stored): from then on it cannot be cancelled, and its
    /// deadline no longer applies.
    pub fn was_submitted(&self) -> bool {
        self.attempts > 0 || self.status == Status::Submitted
    }
}

/// Order fields an event sets, in the same transaction as the event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrderPatch {
    /// New quotes and their time.
    pub quotes: Option<(Vec<QuoteView>, Timestamp)>,
    /// New or updated route.
    pub route: Option<Route>,
    /// Strategy that produced the route.
    pub strategy: Option<StrategyRef>,
    /// Attempts started so far.
    pub attempts: Option<u32>,
    /// Latest error.
    pub last_error: Option<ErrorInfo>,
    /// Executed transaction.
    pub tx_hash: Option<String>,
    /// Executing venue(s).
    pub dex: Option<String>,
    /// Output received, base units.
    pub amount_out: Option<u128>,
    /// Executed price.
    pub executed_price: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_confirmed_failed_and_cancelled_are_terminal() {
        let terminal: Vec<_> = Status::ALL.into_iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(terminal, [Status::Confirmed, Status::Failed, Status::Cancelled]);
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
    }
}
