//! Order events: the numbered, stored history every WebSocket replays.

use crate::domain::{OrderId, QuoteView, Route, Status, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One stored event of an order. `seq` starts at 1 (`pending`) and rises by
/// one per event of that order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// The order.
    pub order_id: OrderId,
    /// Position in the order's history, from 1, gapless.
    pub seq: u64,
    /// When the event was stored (RFC 3339 UTC).
    pub timestamp: Timestamp,
    /// Human words.
    pub message: String,
    /// 0–100.
    pub progress: u8,
    /// The kind and its fields.
    #[serde(flatten)]
    pub data: EventData,
}

/// The kinds of event and the fields each carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub enum EventData {
    /// The order was accepted and queued.
    Pending {
        /// Symbol sold.
        token_in: String,
        /// Symbol bought.
        token_out: String,
        /// Amount sold, whole tokens.
        amount: String,
        /// Slippage tolerance, percent.
        slippage: f64,
    },
    /// Quotes are being fetched (10) or have arrived (30).
    Routing {
        /// How many venues answered.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        quotes_fetched: Option<u32>,
        /// Their quotes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        quotes: Option<Vec<QuoteView>>,
    },
    /// The route was chosen (50) or the transaction built (70).
    Building {
        /// Venue(s) chosen.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chosen_dex: Option<String>,
        /// The route.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        route: Option<Route>,
        /// The chosen venue's quote (first leg).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        quote: Option<QuoteView>,
        /// Strategy plugin name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        strategy: Option<String>,
    },
    /// The legs' transactions were signed and recorded, and are being sent
    /// (a resumed attempt repeats this with the same signatures).
    Submitted {
        /// This attempt, from 1.
        attempt: u32,
        /// Attempts allowed.
        max_attempts: u32,
        /// Signatures of the transactions of the legs not landed yet.
        signatures: Vec<String>,
        /// The first transaction signed by this attempt.
        #[serde(default)]
        signature: String,
        /// The recent blockhash this attempt's transactions name (base58).
        #[serde(default)]
        blockhash: String,
        /// The last slot in which this attempt's transactions can land;
        /// past it they never will, and only then is a leg signed again.
        #[serde(default)]
        last_valid_slot: u64,
        /// Priority fee of this attempt's transactions, micro-lamports per
        /// compute unit.
        #[serde(default)]
        priority_fee: u64,
    },
    /// An attempt failed.
    ExecutionFailed {
        /// What went wrong.
        error: String,
        /// Stable code.
        code: String,
        /// Whether a retry may succeed.
        transient: bool,
        /// Attempts still allowed.
        retries_remaining: u32,
        /// The attempt that failed.
        attempt: u32,
    },
    /// A retry is scheduled.
    RetryPending {
        /// Milliseconds until the retry.
        delay: u64,
        /// The attempt that will run.
        next_attempt: u32,
    },
    /// Executed. Terminal.
    Confirmed {
        /// Transaction signature (first leg).
        tx_hash: String,
        /// Venue(s).
        dex: String,
        /// Output received, whole tokens.
        amount_out: String,
        /// Whole `tokenOut` per whole `tokenIn`.
        executed_price: String,
        /// The latest slot any leg landed in.
        #[serde(default)]
        slot: u64,
        /// Priority fee paid (first leg's), micro-lamports per compute
        /// unit.
        #[serde(default)]
        priority_fee: u64,
    },
    /// Cancelled before submission (`POST /api/orders/{id}/cancel`).
    /// Terminal.
    Cancelled {},
    /// Given up. Terminal.
    Failed {
        /// What went wrong.
        error: String,
        /// Stable code.
        code: String,
        /// Always true: nothing more will happen.
        #[serde(rename = "final")]
        is_final: bool,
        /// Attempts made.
        total_attempts: u32,
    },
}

/// The event kinds, without their fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `pending`
    Pending,
    /// `routing`
    Routing,
    /// `building`
    Building,
    /// `submitted`
    Submitted,
    /// `execution-failed`
    ExecutionFailed,
    /// `retry-pending`
    RetryPending,
    /// `confirmed`
    Confirmed,
    /// `failed`
    Failed,
    /// `cancelled`
    Cancelled,
}

impl EventKind {
    const ALL: [EventKind; 9] = [
        EventKind::Pending,
        EventKind::Routing,
        EventKind::Building,
        EventKind::Submitted,
        EventKind::ExecutionFailed,
        EventKind::RetryPending,
        EventKind::Confirmed,
        EventKind::Failed,
        EventKind::Cancelled,
    ];

    /// The wire name (`type`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Pending => "pending",
            EventKind::Routing => "routing",
            EventKind::Building => "building",
            EventKind::Submitted => "submitted",
            EventKind::ExecutionFailed => "execution-failed",
            EventKind::RetryPending => "retry-pending",
            EventKind::Confirmed => "confirmed",
            EventKind::Failed => "failed",
            EventKind::Cancelled => "cancelled",
        }
    }

    /// Parses a wire name.
    pub fn parse(text: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// The order status this kind moves the order to, if any.
    pub fn status(self) -> Option<Status> {
        match self {
            EventKind::Pending => Some(Status::Pending),
            EventKind::Routing => Some(Status::Routing),
            EventKind::Building => Some(Status::Building),
            EventKind::Submitted => Some(Status::Submitted),
            EventKind::Confirmed => Some(Status::Confirmed),
            EventKind::Failed => Some(Status::Failed),
            EventKind::Cancelled => Some(Status::Cancelled),
            EventKind::ExecutionFailed | EventKind::RetryPending => None,
        }
    }

    /// Whether nothing follows an event of this kind.
    pub fn is_terminal(self) -> bool {
        matches!(self, EventKind::Confirmed | EventKind::Failed | EventKind::Cancelled)
    }
}

impl EventData {
    /// The kind of this event.
    pub fn kind(&self) -> EventKind {
        match self {
            EventData::Pending { .. } => EventKind::Pending,
            EventData::Routing { .. } => EventKind::Routing,
            EventData::Building { .. } => EventKind::Building,
            EventData::Submitted { .. } => EventKind::Submitted,
            EventData::ExecutionFailed { .. } => EventKind::ExecutionFailed,
            EventData::RetryPending { .. } => EventKind::RetryPending,
            EventData::Confirmed { .. } => EventKind::Confirmed,
            EventData::Failed { .. } => EventKind::Failed,
            EventData::Cancelled {} => EventKind::Cancelled,
        }
    }
}

/// Progress percentages of the lifecycle, in one place.
pub mod progress {
    /// `pending`.
    pub const PENDING: u8 = 0;
    /// `routing`: fetching quotes.
    pub const QUOTING: u8 = 10;
    /// `routing`: quotes received.
    pub const QUOTED: u8 = 30;
    /// `building`: route chosen.
    pub const ROUTED: u8 = 50;
    /// `building`: transaction built.
    pub const BUILT: u8 = 70;
    /// `confirmed`.
    pub const CONFIRMED: u8 = 100;
    /// `failed`.
    pub const FAILED: u8 = 0;
    /// `cancelled`.
    pub const CANCELLED: u8 = 0;

    /// `submitted`: 75 on the first attempt, +5 per retry, at most 90.
    pub fn submitted(attempt: u32) -> u8 {
        (75 + 5 * attempt.saturating_sub(1).min(3)) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_flat_with_kebab_type_and_camel_fields() {
        let event = Event {
            order_id: "550e8400-e29b-41d4-a716-446655440000".parse().unwrap(),
            seq: 7,
            timestamp: Timestamp::parse("2026-11-23T10:30:00Z").unwrap(),
            message: "Waiting".into(),
            progress: 80,
            data: EventData::RetryPending {
                delay: 500,
                next_attempt: 2,
            },
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "orderId": "550e8400-e29b-41d4-a716-446655440000",
                "seq": 7,
                "timestamp": "2026-11-23T10:30:00.000Z",
                "message": "Waiting",
                "progress": 80,
                "type": "retry-pending",
                "delay": 500,
                "nextAttempt": 2
            })
        );
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), event);
    }

    #[test]
    fn failed_carries_final_flag() {
        let data = EventData::Failed {
            error: "x".into(),
            code: "slippage_exceeded".into(),
            is_final: true,
            total_attempts: 1,
        };
        let json = serde_json::to_value(&data).unwrap();
        assert_eq!(json["final"], true);
        assert_eq!(json["totalAttempts"], 1);
    }

    #[test]
    fn submitted_progress_rises_by_attempt_and_caps() {
        let got: Vec<u8> = (1..=6).map(progress::submitted).collect();
        assert_eq!(got, [75, 80, 85, 90, 90, 90]);
    }

    #[test]
    fn kinds_round_trip_and_only_three_are_terminal() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventKind::ALL.iter().filter(|k| k.is_terminal()).count(), 3);
    }
}
