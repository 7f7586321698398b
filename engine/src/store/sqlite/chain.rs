//! The chain state seam on SQLite: the statements behind
//! [`ChainStore`](super::super::ChainStore). Writes run on the writer
//! thread (one `BEGIN IMMEDIATE` transaction, so two processes on one file
//! advance one after the other, each seeing the other's tip); reads on the
//! read pool. u128 amounts are decimal TEXT, slots INTEGER.

use super::super::{Advance, Advanced, Broadcast, ChainHead, ChainTx, Lander, Landing, PoolRow, StoreError, TxState};
use super::rows::{json, parse_json};
use super::unavailable;
use crate::chain::{Slot, TxError};
use crate::domain::{OrderId, Timestamp};
use rusqlite::{Connection, OptionalExtension, Row, params};

const TX_COLUMNS: &str = "signature, order_id, leg, venue, token_in, token_out, amount_in, min_amount_out, blockhash,
    last_valid_slot, priority_fee, sent_slot, planned_slot, state, landed_slot, amount_out, error, rebroadcasts";

const POOL_COLUMNS: &str = "pool, state, base_in, base_out, quote_in, quote_out, swaps";

fn slot(value: Slot) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn amount(text: &str, what: &str) -> Result<u128, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("chain {what} {text:?} is not a u128")))
}

/// Raw columns of a `chain_txs` row, parsed outside rusqlite's error type.
struct TxRow {
    signature: String,
    order_id: String,
    leg: i64,
    venue: String,
    token_in: String,
    token_out: String,
    amount_in: String,
    min_amount_out: String,
    blockhash: String,
    last_valid_slot: i64,
    priority_fee: i64,
    sent_slot: i64,
    planned_slot: Option<i64>,
    state: String,
    landed_slot: Option<i64>,
    amount_out: Option<String>,
    error: Option<String>,
    rebroadcasts: i64,
}

fn read_tx(row: &Row<'_>) -> rusqlite::Result<TxRow> {
    Ok(TxRow {
        signature: row.get("signature")?,
        order_id: row.get("order_id")?,
        leg: row.get("leg")?,
        venue: row.get("venue")?,
        token_in: row.get("token_in")?,
        token_out: row.get("token_out")?,
        amount_in: row.get("amount_in")?,
        min_amount_out: row.get("min_amount_out")?,
        blockhash: row.get("blockhash")?,
        last_valid_slot: row.get("last_valid_slot")?,
        priority_fee: row.get("priority_fee")?,
        sent_slot: row.get("sent_slot")?,
        planned_slot: row.get("planned_slot")?,
        state: row.get("state")?,
        landed_slot: row.get("landed_slot")?,
        amount_out: row.get("amount_out")?,
        error: row.get("error")?,
        rebroadcasts: row.get("rebroadcasts")?,
    })
}

impl TxRow {
    fn parse(self) -> Result<ChainTx, StoreError> {
        Ok(ChainTx {
            order_id: self
                .order_id
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("chain tx order id: {e}")))?,
            leg: self.leg as u32,
            venue: self.venue,
            token_in: self.token_in,
            token_out: self.token_out,
            amount_in: amount(&self.amount_in, "amount_in")?,
            min_amount_out: amount(&self.min_amount_out, "min_amount_out")?,
            blockhash: self.blockhash,
            last_valid_slot: self.last_valid_slot as u64,
            priority_fee: self.priority_fee as u64,
            sent_slot: self.sent_slot as u64,
            planned_slot: self.planned_slot.map(|s| s as u64),
            state: TxState::parse(&self.state)
                .ok_or_else(|| StoreError::Corrupt(format!("chain tx state {:?}", self.state)))?,
            landed_slot: self.landed_slot.map(|s| s as u64),
            amount_out: self
                .amount_out
                .as_deref()
                .map(|a| amount(a, "amount_out"))
                .transpose()?,
            error: self
                .error
                .as_deref()
                .map(|e| parse_json::<TxError>(e, "chain tx error"))
                .transpose()?,
            rebroadcasts: self.rebroadcasts as u32,
            signature: self.signature,
        })
    }
}

fn read_pool(row: &Row<'_>) -> rusqlite::Result<[String; 6]> {
    Ok([
        row.get("pool")?,
        row.get("state")?,
        row.get("base_in")?,
        row.get("base_out")?,
        row.get("quote_in")?,
        row.get("quote_out")?,
    ])
}

fn pool_rows(conn: &Connection) -> Result<Vec<PoolRow>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!("SELECT {POOL_COLUMNS} FROM chain_pools ORDER BY pool"))
        .map_err(unavailable)?;
    let rows = stmt
        .query_map([], |row| Ok((read_pool(row)?, row.get::<_, i64>("swaps")?)))
        .map_err(unavailable)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(unavailable)?;
    rows.into_iter()
        .map(|([pool, state, base_in, base_out, quote_in, quote_out], swaps)| {
            Ok(PoolRow {
                base_in: amount(&base_in, "base_in")?,
                base_out: amount(&base_out, "base_out")?,
                quote_in: amount(&quote_in, "quote_in")?,
                quote_out: amount(&quote_out, "quote_out")?,
                swaps: swaps as u64,
                pool,
                state,
            })
        })
        .collect()
}

pub(super) fn head(conn: &Connection) -> Result<Option<ChainHead>, StoreError> {
    conn.prepare_cached("SELECT genesis_ms, tip FROM chain_state WHERE id = 1")
        .map_err(unavailable)?
        .query_row([], |row| {
            Ok(ChainHead {
                genesis_ms: row.get::<_, i64>(0)? as u64,
                tip: row.get::<_, i64>(1)? as u64,
            })
        })
        .optional()
        .map_err(unavailable)
}

pub(super) fn start(conn: &Connection, genesis_ms: u64, pools: &[PoolRow]) -> Result<ChainHead, StoreError> {
    conn.execute(
        "INSERT OR IGNORE INTO chain_state (id, genesis_ms, tip) VALUES (1, ?1, 0)",
        [slot(genesis_ms)],
    )
    .map_err(unavailable)?;
    let mut insert = conn
        .prepare_cached(&format!(
            "INSERT OR IGNORE INTO chain_pools ({POOL_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
        ))
        .map_err(unavailable)?;
    for pool in pools {
        insert
            .execute(params![
                pool.pool,
                pool.state,
                pool.base_in.to_string(),
                pool.base_out.to_string(),
                pool.quote_in.to_string(),
                pool.quote_out.to_string(),
                slot(pool.swaps),
            ])
            .map_err(unavailable)?;
    }
    head(conn)?.ok_or_else(|| StoreError::Corrupt("the chain head vanished".into()))
}

pub(super) fn broadcast(conn: &Connection, tx: &ChainTx) -> Result<Broadcast, StoreError> {
    let inserted = conn
        .prepare_cached(&format!(
            "INSERT OR IGNORE INTO chain_txs ({TX_COLUMNS}, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"
        ))
        .map_err(unavailable)?
        .execute(params![
            tx.signature,
            tx.order_id.to_string(),
            tx.leg,
            tx.venue,
            tx.token_in,
            tx.token_out,
            tx.amount_in.to_string(),
            tx.min_amount_out.to_string(),
            tx.blockhash,
            slot(tx.last_valid_slot),
            slot(tx.priority_fee),
            slot(tx.sent_slot),
            tx.planned_slot.map(slot),
            tx.state.as_str(),
            tx.landed_slot.map(slot),
            tx.amount_out.map(|a| a.to_string()),
            tx.error.as_ref().map(json),
            tx.rebroadcasts,
            Timestamp::now().to_string(),
        ])
        .map_err(unavailable)?;
    if inserted == 1 {
        return Ok(Broadcast::First);
    }
    let before: String = conn
        .query_row(
            "SELECT state FROM chain_txs WHERE signature = ?1",
            [&tx.signature],
            |row| row.get(0),
        )
        .map_err(unavailable)?;
    let before = TxState::parse(&before).ok_or_else(|| StoreError::Corrupt(format!("chain tx state {before:?}")))?;
    conn.execute(
        "UPDATE chain_txs SET rebroadcasts = rebroadcasts + 1,
             state = CASE WHEN state = 'dropped' AND ?2 = 'pending' AND last_valid_slot >= ?3
                          THEN 'pending' ELSE state END,
             planned_slot = CASE WHEN state = 'dropped' AND ?2 = 'pending' AND last_valid_slot >= ?3
                                 THEN ?4 ELSE planned_slot END
         WHERE signature = ?1",
        params![
            tx.signature,
            tx.state.as_str(),
            slot(tx.sent_slot),
            tx.planned_slot.map(slot)
        ],
    )
    .map_err(unavailable)?;
    Ok(Broadcast::Again(before))
}

/// Moves the stored tip to `to`.
fn set_tip(conn: &Connection, to: Slot) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE chain_state SET tip = ?1 WHERE id = 1")
        .and_then(|mut stmt| stmt.execute([slot(to)]))
        .map_err(unavailable)?;
    Ok(())
}

pub(super) fn advance(conn: &Connection, to: Slot, lander: &dyn Lander) -> Result<Advance, StoreError> {
    let from = head(conn)?
        .ok_or_else(|| StoreError::Corrupt("the chain advanced before it started".into()))?
        .tip;
    if from >= to {
        return Ok(Advance {
            tip: from,
            advanced: None,
        });
    }
    // A quiet chain (no price walk, nothing due or expiring): only the tip
    // moves; no pool is read or written.
    if !lander.walks() {
        let busy: bool = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM chain_txs WHERE state = 'pending'
                     AND (planned_slot <= ?1 OR last_valid_slot < ?1))",
            )
            .and_then(|mut stmt| stmt.query_row([slot(to)], |row| row.get(0)))
            .map_err(unavailable)?;
        if !busy {
            set_tip(conn, to)?;
            return Ok(Advance {
                tip: to,
                advanced: Some(Advanced {
                    from,
                    to,
                    landed: Vec::new(),
                    expired: 0,
                }),
            });
        }
    }
    let due = {
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {TX_COLUMNS} FROM chain_txs WHERE state = 'pending' AND planned_slot <= ?1
                 ORDER BY planned_slot, priority_fee DESC, signature"
            ))
            .map_err(unavailable)?;
        let rows = stmt
            .query_map([slot(to)], read_tx)
            .map_err(unavailable)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)?;
        rows.into_iter().map(TxRow::parse).collect::<Result<Vec<_>, _>>()?
    };
    let mut pools = pool_rows(conn)?;
    let before = pools.clone();
    let landings = lander.land(from, to, &due, &mut pools);
    let mut landed = Vec::with_capacity(landings.len());
    {
        let mut update = conn
            .prepare_cached(
                "UPDATE chain_txs SET state = ?2, landed_slot = ?3, amount_out = ?4, error = ?5
                 WHERE signature = ?1 AND state = 'pending'",
            )
            .map_err(unavailable)?;
        let by_signature: std::collections::HashMap<&str, &ChainTx> =
            due.iter().map(|tx| (tx.signature.as_str(), tx)).collect();
        for (signature, landing) in landings {
            let (state, at, amount_out, error) = match landing {
                Landing::Landed { slot, amount_out } => (TxState::Landed, slot, Some(amount_out), None),
                Landing::Failed { slot, error } => (TxState::Failed, slot, None, Some(error)),
            };
            let changed = update
                .execute(params![
                    signature,
                    state.as_str(),
                    self::slot(at),
                    amount_out.map(|a| a.to_string()),
                    error.as_ref().map(json),
                ])
                .map_err(unavailable)?;
            if changed == 1
                && let Some(tx) = by_signature.get(signature.as_str())
            {
                landed.push(ChainTx {
                    state,
                    landed_slot: Some(at),
                    amount_out,
                    error,
                    ..(*tx).clone()
                });
            }
        }
    }
    {
        let mut update = conn
            .prepare_cached(
                "UPDATE chain_pools SET state = ?2, base_in = ?3, base_out = ?4, quote_in = ?5, quote_out = ?6,
                     swaps = ?7 WHERE pool = ?1",
            )
            .map_err(unavailable)?;
        for pool in pools.iter().filter(|p| !before.contains(p)) {
            update
                .execute(params![
                    pool.pool,
                    pool.state,
                    pool.base_in.to_string(),
                    pool.base_out.to_string(),
                    pool.quote_in.to_string(),
                    pool.quote_out.to_string(),
                    slot(pool.swaps),
                ])
                .map_err(unavailable)?;
        }
    }
    let expired = conn
        .prepare_cached("UPDATE chain_txs SET state = 'expired' WHERE state = 'pending' AND last_valid_slot < ?1")
        .and_then(|mut stmt| stmt.execute([slot(to)]))
        .map_err(unavailable)? as u64;
    set_tip(conn, to)?;
    Ok(Advance {
        tip: to,
        advanced: Some(Advanced {
            from,
            to,
            landed,
            expired,
        }),
    })
}

pub(super) fn txs(conn: &Connection, order: Option<OrderId>) -> Result<Vec<ChainTx>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {TX_COLUMNS} FROM chain_txs WHERE ?1 IS NULL OR order_id = ?1 ORDER BY sent_slot, signature"
        ))
        .map_err(unavailable)?;
    let rows = stmt
        .query_map([order.map(|id| id.to_string())], read_tx)
        .map_err(unavailable)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(unavailable)?;
    rows.into_iter().map(TxRow::parse).collect()
}

pub(super) fn statuses(conn: &Connection, signatures: &[String]) -> Result<Vec<Option<ChainTx>>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!("SELECT {TX_COLUMNS} FROM chain_txs WHERE signature = ?1"))
        .map_err(unavailable)?;
    signatures
        .iter()
        .map(|signature| {
            stmt.query_row([signature], read_tx)
                .optional()
                .map_err(unavailable)?
                .map(TxRow::parse)
                .transpose()
        })
        .collect()
}

pub(super) fn landed_fees(conn: &Connection, after: Slot) -> Result<Vec<u64>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT priority_fee FROM chain_txs WHERE landed_slot > ?1 AND state IN ('landed', 'failed')
             ORDER BY landed_slot, signature",
        )
        .map_err(unavailable)?;
    stmt.query_map([slot(after)], |row| row.get::<_, i64>(0).map(|fee| fee as u64))
        .map_err(unavailable)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(unavailable)
}

pub(super) fn pools(conn: &Connection) -> Result<Vec<PoolRow>, StoreError> {
    pool_rows(conn)
}
