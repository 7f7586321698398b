//! Reading and writing SQLite rows: the order columns by name, JSON
//! columns, and integer conversions. Imports `domain` and the store's own
//! types only.

use super::super::StoreError;
use crate::domain::{EventKind, Order, OrderType, Status, Timestamp};
use rusqlite::Row;
use serde::{Serialize, de::DeserializeOwned};

pub(super) fn to_i64(value: u128, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value} does not fit in 64 bits")))
}

pub(super) fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("domain types serialise")
}

pub(super) fn parse_json<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub(super) const ORDER_COLUMNS: &str =
    "id, job_id, order_type, token_in, token_out, amount_in, slippage_bps, status, last_kind,
    last_seq, quotes, quoted_at, route, strategy, attempts, last_error, tx_hash, dex, amount_out, executed_price,
    created_at, updated_at, created_seq, owner, expires_at, retry_of, retried_by";

/// Raw columns of an order row, read by name and parsed outside
/// rusqlite's error type (so a bad value is `Corrupt`, not `Unavailable`).
pub(super) struct OrderRow {
    id: Option<String>,
    job_id: Option<String>,
    order_type: Option<String>,
    token_in: Option<String>,
    token_out: Option<String>,
    amount_in: i64,
    slippage_bps: u32,
    status: Option<String>,
    last_kind: Option<String>,
    last_seq: i64,
    quotes: Option<String>,
    quoted_at: Option<String>,
    route: Option<String>,
    strategy: Option<String>,
    attempts: u32,
    last_error: Option<String>,
    tx_hash: Option<String>,
    dex: Option<String>,
    amount_out: Option<i64>,
    executed_price: Option<String>,
    created_at: Option<String>,
    updated_at: Option<String>,
    created_seq: i64,
    owner: Option<String>,
    expires_at: Option<String>,
    retry_of: Option<String>,
    retried_by: Option<String>,
}

pub(super) fn read_row(row: &Row<'_>) -> rusqlite::Result<OrderRow> {
    Ok(OrderRow {
        id: row.get("id")?,
        job_id: row.get("job_id")?,
        order_type: row.get("order_type")?,
        token_in: row.get("token_in")?,
        token_out: row.get("token_out")?,
        amount_in: row.get("amount_in")?,
        slippage_bps: row.get("slippage_bps")?,
        status: row.get("status")?,
        last_kind: row.get("last_kind")?,
        last_seq: row.get("last_seq")?,
        quotes: row.get("quotes")?,
        quoted_at: row.get("quoted_at")?,
        route: row.get("route")?,
        strategy: row.get("strategy")?,
        attempts: row.get("attempts")?,
        last_error: row.get("last_error")?,
        tx_hash: row.get("tx_hash")?,
        dex: row.get("dex")?,
        amount_out: row.get("amount_out")?,
        executed_price: row.get("executed_price")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
        created_seq: row.get("created_seq")?,
        owner: row.get("owner")?,
        expires_at: row.get("expires_at")?,
        retry_of: row.get("retry_of")?,
        retried_by: row.get("retried_by")?,
    })
}

impl OrderRow {
    pub(super) fn into_order(self) -> Result<Order, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("order column {what}"));
        let time = |value: Option<String>, what: &str| {
            value.as_deref().and_then(Timestamp::parse).ok_or_else(|| corrupt(what))
        };
        Ok(Order {
            id: self
                .id
                .as_deref()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| corrupt("id"))?,
            job_id: self.job_id.unwrap_or_default(),
            order_type: match self.order_type.as_deref() {
                Some("market") => OrderType::Market,
                _ => return Err(corrupt("order_type")),
            },
            token_in: self.token_in.ok_or_else(|| corrupt("token_in"))?,
            token_out: self.token_out.ok_or_else(|| corrupt("token_out"))?,
            amount_in: self.amount_in as u128,
            slippage_bps: self.slippage_bps,
            status: self
                .status
                .as_deref()
                .and_then(Status::parse)
                .ok_or_else(|| corrupt("status"))?,
            last_kind: self
                .last_kind
                .as_deref()
                .and_then(EventKind::parse)
                .ok_or_else(|| corrupt("last_kind"))?,
            last_seq: self.last_seq as u64,
            quotes: parse_json(self.quotes.as_deref().unwrap_or("[]"), "quotes")?,
            quoted_at: self.quoted_at.map(|t| time(Some(t), "quoted_at")).transpose()?,
            route: self.route.map(|r| parse_json(&r, "route")).transpose()?,
            strategy: self.strategy.map(|s| parse_json(&s, "strategy")).transpose()?,
            attempts: self.attempts,
            last_error: self.last_error.map(|e| parse_json(&e, "last_error")).transpose()?,
            tx_hash: self.tx_hash,
            dex: self.dex,
            amount_out: self.amount_out.map(|v| v as u128),
            executed_price: self.executed_price,
            created_at: time(self.created_at, "created_at")?,
            updated_at: time(self.updated_at, "updated_at")?,
            created_seq: self.created_seq,
            owner: self
                .owner
                .map(|k| k.parse().map_err(|_| corrupt("owner")))
                .transpose()?,
            expires_at: self.expires_at.map(|t| time(Some(t), "expires_at")).transpose()?,
            retry_of: self
                .retry_of
                .map(|id| id.parse().map_err(|_| corrupt("retry_of")))
                .transpose()?,
            retried_by: self
                .retried_by
                .map(|id| id.parse().map_err(|_| corrupt("retried_by")))
                .transpose()?,
        })
    }
}
