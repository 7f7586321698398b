//! What the API answers, as typed views: the JSON contract, and the source
//! of `schemas/order.schema.json` and friends.

use crate::domain::{ErrorInfo, Order, QuoteView, Route, Status, StrategyRef, Timestamp, format_units};
use schemars::JsonSchema;
use serde::Serialize;

/// `201` answer of `POST /api/orders/execute`.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    /// Always true.
    pub success: bool,
    /// The new order's id.
    pub order_id: String,
    /// Queue job id.
    pub job_id: String,
    /// `pending`.
    pub status: Status,
    /// Human words.
    pub message: String,
    /// WebSocket URL streaming this order's events; when `auth.required`,
    /// it carries a fresh single-use `?ticket=`.
    pub ws_url: String,
}

/// `201` answer of `POST /api/ws-tickets`: a single-use ticket that opens
/// one order's WebSocket stream, for clients that cannot send headers on an
/// upgrade (browsers).
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TicketView {
    /// Always true.
    pub success: bool,
    /// The ticket (`swt_…`): pass it as `?ticket=` on the upgrade, once.
    pub ticket: String,
    /// The order's WebSocket URL with the ticket in it.
    pub ws_url: String,
    /// The ticket opens nothing after this instant (`auth.ticket_ttl`).
    pub expires_at: Timestamp,
}

/// An order as the API shows it. Amounts are whole-token decimal strings;
/// `route` amounts are base units.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderView {
    /// Id.
    pub id: String,
    /// `market`.
    pub order_type: String,
    /// Symbol sold.
    pub token_in: String,
    /// Symbol bought.
    pub token_out: String,
    /// Amount sold, whole tokens.
    pub amount: String,
    /// Slippage tolerance, percent.
    pub slippage: f64,
    /// Current status.
    pub status: Status,
    /// Transaction signature once confirmed.
    pub tx_hash: Option<String>,
    /// Latest quotes.
    pub quotes: Vec<QuoteView>,
    /// Submission attempts started.
    pub attempts: u32,
    /// Latest error.
    pub last_error: Option<ErrorInfo>,
    /// Venue(s) that executed.
    pub dex: Option<String>,
    /// The chosen route; each leg carries its transaction (signature,
    /// blockhash, `lastValidSlot`, `priorityFee`) once signed.
    pub route: Option<Route>,
    /// Priority fee of the first leg's current transaction, micro-lamports
    /// per compute unit; null before submission.
    pub priority_fee: Option<u64>,
    /// The latest slot any leg landed in, once confirmed.
    pub slot: Option<u64>,
    /// Output received, whole tokens.
    pub amount_out: Option<String>,
    /// Whole `tokenOut` per whole `tokenIn`.
    pub executed_price: Option<String>,
    /// Strategy plugin that routed the order.
    pub strategy: Option<StrategyRef>,
    /// Seq of the latest event.
    pub last_seq: u64,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// Never submitted after this instant (`expiresAt` of the request, or
    /// `orders.default_ttl`); null: no deadline.
    pub expires_at: Option<Timestamp>,
    /// The failed or cancelled order this one retries (`POST
    /// /api/orders/{id}/retry`); null: none.
    pub retry_of: Option<String>,
    /// The order that retries this one; null: none.
    pub retried_by: Option<String>,
}

impl OrderView {
    /// Formats an order with its tokens' decimals.
    pub fn new(order: Order, decimals_in: u8, decimals_out: u8) -> Self {
        OrderView {
            id: order.id.to_string(),
            order_type: order.order_type.as_str().into(),
            amount: format_units(order.amount_in, decimals_in),
            slippage: f64::from(order.slippage_bps) / 100.0,
            token_in: order.token_in,
            token_out: order.token_out,
            status: order.status,
            tx_hash: order.tx_hash,
            quotes: order.quotes,
            attempts: order.attempts,
            last_error: order.last_error,
            dex: order.dex,
            priority_fee: order
                .route
                .as_ref()
                .and_then(|r| r.legs.first())
                .and_then(|leg| leg.transaction.as_ref())
                .map(|tx| tx.priority_fee),
            slot: (order.status == Status::Confirmed)
                .then(|| {
                    order
                        .route
                        .as_ref()
                        .and_then(|r| r.legs.iter().filter_map(|l| l.landed_slot).max())
                })
                .flatten(),
            route: order.route,
            amount_out: order.amount_out.map(|units| format_units(units, decimals_out)),
            executed_price: order.executed_price,
            strategy: order.strategy,
            last_seq: order.last_seq,
            created_at: order.created_at,
            updated_at: order.updated_at,
            expires_at: order.expires_at,
            retry_of: order.retry_of.map(|id| id.to_string()),
            retried_by: order.retried_by.map(|id| id.to_string()),
        }
    }
}

/// `GET /api/orders/status/{id}`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct OrderResponse {
    /// Always true.
    pub success: bool,
    /// The order.
    #[serde(flatten)]
    pub order: OrderView,
}

/// `GET /api/orders`.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderList {
    /// Always true.
    pub success: bool,
    /// Newest first.
    pub orders: Vec<OrderView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /api/orders/{id}/events`.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventList {
    /// Always true.
    pub success: bool,
    /// The order.
    pub order_id: String,
    /// Stored events with `seq > since`, in order.
    pub events: Vec<crate::domain::Event>,
}

/// A WebSocket greeting (`connection`, `subscribed`); carries no `seq`.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Greeting {
    /// `connection` or `subscribed`.
    #[serde(rename = "type")]
    pub kind: GreetingKind,
    /// The order.
    pub order_id: String,
    /// Human words.
    pub message: String,
    /// When sent.
    pub timestamp: Timestamp,
}

/// The greetings a socket receives first.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GreetingKind {
    /// The socket is open.
    Connection,
    /// The socket follows the order.
    Subscribed,
}

/// Any message on an order's WebSocket (for the schema; never built).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum SocketMessage {
    /// Per-socket greeting.
    Greeting(Greeting),
    /// A stored event of the order.
    Event(crate::domain::Event),
}

/// A frame of `GET /api/stream` that is not an event: the greeting (with
/// the cursor the stream starts after), the answer to a `subscribe` or
/// `unsubscribe`, or an error about a client message (the socket stays
/// open).
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamNotice {
    /// What it says.
    #[serde(rename = "type")]
    pub kind: StreamNoticeKind,
    /// Human words.
    pub message: String,
    /// On `connection`: the stream cursor the session starts after (the
    /// `?cursor` given, or the head); resume with it when no event came.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// On `subscribed` / `unsubscribed`: the order ids of the message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_ids: Option<Vec<String>>,
    /// On `error`: `bad_message`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// When sent.
    pub timestamp: Timestamp,
}

impl StreamNotice {
    /// A notice with words only.
    pub fn new(kind: StreamNoticeKind, message: String) -> Self {
        StreamNotice {
            kind,
            message,
            cursor: None,
            order_ids: None,
            code: None,
            timestamp: Timestamp::now(),
        }
    }

    /// The answer to a client message that is not a stream op.
    pub fn error(message: String) -> Self {
        StreamNotice {
            code: Some("bad_message".into()),
            ..StreamNotice::new(StreamNoticeKind::Error, message)
        }
    }
}

/// The kinds of [`StreamNotice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StreamNoticeKind {
    /// The socket is open.
    Connection,
    /// A `subscribe` was applied: only subscribed orders stream now.
    Subscribed,
    /// An `unsubscribe` was applied.
    Unsubscribed,
    /// A client message was not understood; nothing changed.
    Error,
}

/// An event on `GET /api/stream`: the event's own fields plus its stream
/// cursor (for the schema; frames are built by `stream`).
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamEventFrame {
    /// The event's place in the stream: opaque, resume after it with
    /// `?cursor=`.
    pub cursor: String,
    /// The event.
    #[serde(flatten)]
    pub event: crate::domain::Event,
}

/// Any message on `GET /api/stream` (for the schema; never built).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum StreamMessage {
    /// Greeting, subscription answer or error.
    Notice(StreamNotice),
    /// An event with its cursor.
    Event(StreamEventFrame),
}
