//! The chain state seam on PostgreSQL. An advance is one transaction that
//! first locks the head row (`FOR UPDATE`): a racing advancer waits, then
//! reads the new tip (READ COMMITTED re-reads a locked row) and does
//! nothing twice; every landing is also conditional on `state =
//! 'pending'`. u128 amounts are NUMERIC(39,0), read back as text.

use super::{PostgresStore, db_error, parse, unavailable};
use crate::chain::{Slot, TxError};
use crate::domain::OrderId;
use crate::store::{
    Advance, Advanced, Broadcast, ChainHead, ChainStore, ChainTx, Lander, Landing, PoolRow, StoreError, TxState,
};
use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use serde_json::Value;
use std::sync::Arc;
use tokio_postgres::{Row, types::Json};

const TX_COLUMNS: &str = "signature, order_id, leg, venue, token_in, token_out, amount_in::text AS amount_in,
    min_amount_out::text AS min_amount_out, blockhash, last_valid_slot, priority_fee, sent_slot, planned_slot, state,
    landed_slot, amount_out::text AS amount_out, error, rebroadcasts";

const POOL_COLUMNS: &str = "pool, state, base_in::text AS base_in, base_out::text AS base_out,
    quote_in::text AS quote_in, quote_out::text AS quote_out, swaps";

fn slot(value: Slot) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn amount(text: &str, what: &str) -> Result<u128, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("chain {what} {text:?} is not a u128")))
}

fn tx_from_row(row: &Row) -> Result<ChainTx, StoreError> {
    let state: String = row.try_get("state").map_err(unavailable)?;
    let amount_out: Option<String> = row.try_get("amount_out").map_err(unavailable)?;
    let error: Option<Value> = row.try_get("error").map_err(unavailable)?;
    Ok(ChainTx {
        signature: row.try_get("signature").map_err(unavailable)?,
        order_id: OrderId(row.try_get("order_id").map_err(unavailable)?),
        leg: row.try_get::<_, i32>("leg").map_err(unavailable)? as u32,
        venue: row.try_get("venue").map_err(unavailable)?,
        token_in: row.try_get("token_in").map_err(unavailable)?,
        token_out: row.try_get("token_out").map_err(unavailable)?,
        amount_in: amount(
            &row.try_get::<_, String>("amount_in").map_err(unavailable)?,
            "amount_in",
        )?,
        min_amount_out: amount(
            &row.try_get::<_, String>("min_amount_out").map_err(unavailable)?,
            "min_amount_out",
        )?,
        blockhash: row.try_get("blockhash").map_err(unavailable)?,
        last_valid_slot: row.try_get::<_, i64>("last_valid_slot").map_err(unavailable)? as u64,
        priority_fee: row.try_get::<_, i64>("priority_fee").map_err(unavailable)? as u64,
        sent_slot: row.try_get::<_, i64>("sent_slot").map_err(unavailable)? as u64,
        planned_slot: row
            .try_get::<_, Option<i64>>("planned_slot")
            .map_err(unavailable)?
            .map(|s| s as u64),
        state: TxState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("chain tx state {state:?}")))?,
        landed_slot: row
            .try_get::<_, Option<i64>>("landed_slot")
            .map_err(unavailable)?
            .map(|s| s as u64),
        amount_out: amount_out.as_deref().map(|a| amount(a, "amount_out")).transpose()?,
        error: error.map(|e| parse::<TxError>(e, "chain tx error")).transpose()?,
        rebroadcasts: row.try_get::<_, i32>("rebroadcasts").map_err(unavailable)? as u32,
    })
}

fn pool_from_row(row: &Row) -> Result<PoolRow, StoreError> {
    let text = |name: &str| -> Result<u128, StoreError> {
        amount(&row.try_get::<_, String>(name).map_err(unavailable)?, name)
    };
    Ok(PoolRow {
        pool: row.try_get("pool").map_err(unavailable)?,
        state: row.try_get("state").map_err(unavailable)?,
        base_in: text("base_in")?,
        base_out: text("base_out")?,
        quote_in: text("quote_in")?,
        quote_out: text("quote_out")?,
        swaps: row.try_get::<_, i64>("swaps").map_err(unavailable)? as u64,
    })
}

async fn head<C: GenericClient + Sync>(client: &C, lock: bool) -> Result<Option<ChainHead>, StoreError> {
    let sql = if lock {
        "SELECT genesis_ms, tip FROM chain_state WHERE id = 1 FOR UPDATE"
    } else {
        "SELECT genesis_ms, tip FROM chain_state WHERE id = 1"
    };
    let statement = client.prepare_cached(sql).await.map_err(db_error)?;
    let row = client.query_opt(&statement, &[]).await.map_err(db_error)?;
    Ok(row.map(|row| ChainHead {
        genesis_ms: row.get::<_, i64>(0) as u64,
        tip: row.get::<_, i64>(1) as u64,
    }))
}

#[async_trait]
impl ChainStore for PostgresStore {
    async fn chain_start(&self, genesis_ms: u64, pools: &[PoolRow]) -> Result<ChainHead, StoreError> {
        self.run(async |client| {
            let tx = client.transaction().await.map_err(unavailable)?;
            tx.execute(
                "INSERT INTO chain_state (id, genesis_ms, tip) VALUES (1, $1, 0) ON CONFLICT (id) DO NOTHING",
                &[&slot(genesis_ms)],
            )
            .await
            .map_err(db_error)?;
            let insert = tx
                .prepare(
                    "INSERT INTO chain_pools (pool, state, base_in, base_out, quote_in, quote_out, swaps)
                     VALUES ($1, $2, CAST($3::text AS NUMERIC), CAST($4::text AS NUMERIC),
                             CAST($5::text AS NUMERIC), CAST($6::text AS NUMERIC), $7)
                     ON CONFLICT (pool) DO NOTHING",
                )
                .await
                .map_err(db_error)?;
            for pool in pools {
                tx.execute(
                    &insert,
                    &[
                        &pool.pool,
                        &pool.state,
                        &pool.base_in.to_string(),
                        &pool.base_out.to_string(),
                        &pool.quote_in.to_string(),
                        &pool.quote_out.to_string(),
                        &slot(pool.swaps),
                    ],
                )
                .await
                .map_err(db_error)?;
            }
            let head = head(&tx, false)
                .await?
                .ok_or_else(|| StoreError::Corrupt("the chain head vanished".into()))?;
            tx.commit().await.map_err(db_error)?;
            Ok(head)
        })
        .await
    }

    async fn chain_head(&self) -> Result<Option<ChainHead>, StoreError> {
        self.run(async |client| head(&*client, false).await).await
    }

    async fn broadcast(&self, chain_tx: &ChainTx) -> Result<Broadcast, StoreError> {
        self.run(async |client| {
            // The first send of a signature (nearly every send) is one
            // autocommit statement; only a known signature takes the
            // locking transaction below.
            let insert = client
                .prepare_cached(
                    "INSERT INTO chain_txs (signature, order_id, leg, venue, token_in, token_out, amount_in,
                         min_amount_out, blockhash, last_valid_slot, priority_fee, sent_slot, planned_slot, state,
                         landed_slot, amount_out, error, rebroadcasts)
                     VALUES ($1, $2, $3, $4, $5, $6, CAST($7::text AS NUMERIC), CAST($8::text AS NUMERIC), $9, $10,
                             $11, $12, $13, $14, $15, CAST($16::text AS NUMERIC), $17, $18)
                     ON CONFLICT (signature) DO NOTHING",
                )
                .await
                .map_err(db_error)?;
            let inserted = client
                .execute(
                    &insert,
                    &[
                        &chain_tx.signature,
                        &chain_tx.order_id.0,
                        &(chain_tx.leg as i32),
                        &chain_tx.venue,
                        &chain_tx.token_in,
                        &chain_tx.token_out,
                        &chain_tx.amount_in.to_string(),
                        &chain_tx.min_amount_out.to_string(),
                        &chain_tx.blockhash,
                        &slot(chain_tx.last_valid_slot),
                        &slot(chain_tx.priority_fee),
                        &slot(chain_tx.sent_slot),
                        &chain_tx.planned_slot.map(slot),
                        &chain_tx.state.as_str(),
                        &chain_tx.landed_slot.map(slot),
                        &chain_tx.amount_out.map(|a| a.to_string()),
                        &chain_tx.error.as_ref().map(Json),
                        &(chain_tx.rebroadcasts as i32),
                    ],
                )
                .await
                .map_err(db_error)?;
            if inserted == 1 {
                return Ok(Broadcast::First);
            }
            let tx = client.transaction().await.map_err(unavailable)?;
            // Locks the row, so the state answered is the one updated.
            let before: String = tx
                .query_one(
                    "SELECT state FROM chain_txs WHERE signature = $1 FOR UPDATE",
                    &[&chain_tx.signature],
                )
                .await
                .map_err(db_error)?
                .get(0);
            let before =
                TxState::parse(&before).ok_or_else(|| StoreError::Corrupt(format!("chain tx state {before:?}")))?;
            tx.execute(
                "UPDATE chain_txs SET rebroadcasts = rebroadcasts + 1,
                     state = CASE WHEN state = 'dropped' AND $2 = 'pending' AND last_valid_slot >= $3
                                  THEN 'pending' ELSE state END,
                     planned_slot = CASE WHEN state = 'dropped' AND $2 = 'pending' AND last_valid_slot >= $3
                                         THEN $4 ELSE planned_slot END
                 WHERE signature = $1",
                &[
                    &chain_tx.signature,
                    &chain_tx.state.as_str(),
                    &slot(chain_tx.sent_slot),
                    &chain_tx.planned_slot.map(slot),
                ],
            )
            .await
            .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            Ok(Broadcast::Again(before))
        })
        .await
    }

    async fn advance(&self, to: Slot, lander: Arc<dyn Lander>) -> Result<Advance, StoreError> {
        self.run(async |client| {
            // A cheap read first: most calls find the tip already there.
            let seen = head(&*client, false).await?;
            if let Some(head) = seen
                && head.tip >= to
            {
                return Ok(Advance {
                    tip: head.tip,
                    advanced: None,
                });
            }
            // A quiet chain (no price walk, nothing due or expiring): one
            // conditional statement moves the tip. A transaction sent while
            // it runs, and not seen by it, lands in a later advance: late,
            // never twice, never below a tip anyone was answered.
            if !lander.walks()
                && let Some(from) = seen.map(|h| h.tip)
                && let Some(row) = client
                    .query_opt(
                        &client
                            .prepare_cached(
                                "UPDATE chain_state SET tip = $1 WHERE id = 1 AND tip < $1 AND NOT EXISTS (
                                     SELECT 1 FROM chain_txs WHERE state = 'pending'
                                     AND (planned_slot <= $1 OR last_valid_slot < $1))
                                 RETURNING tip",
                            )
                            .await
                            .map_err(db_error)?,
                        &[&slot(to)],
                    )
                    .await
                    .map_err(db_error)?
            {
                let to = row.get::<_, i64>(0) as u64;
                return Ok(Advance {
                    tip: to,
                    advanced: Some(Advanced {
                        from: from.min(to),
                        to,
                        landed: Vec::new(),
                        expired: 0,
                    }),
                });
            }
            let tx = client.transaction().await.map_err(unavailable)?;
            let from = head(&tx, true)
                .await?
                .ok_or_else(|| StoreError::Corrupt("the chain advanced before it started".into()))?
                .tip;
            if from >= to {
                tx.commit().await.map_err(db_error)?;
                return Ok(Advance {
                    tip: from,
                    advanced: None,
                });
            }
            let due = tx
                .query(
                    &tx.prepare_cached(&format!(
                        "SELECT {TX_COLUMNS} FROM chain_txs WHERE state = 'pending' AND planned_slot <= $1
                         ORDER BY planned_slot, priority_fee DESC, signature FOR UPDATE"
                    ))
                    .await
                    .map_err(db_error)?,
                    &[&slot(to)],
                )
                .await
                .map_err(db_error)?
                .iter()
                .map(tx_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            let mut pools = tx
                .query(
                    &tx.prepare_cached(&format!(
                        "SELECT {POOL_COLUMNS} FROM chain_pools ORDER BY pool FOR UPDATE"
                    ))
                    .await
                    .map_err(db_error)?,
                    &[],
                )
                .await
                .map_err(db_error)?
                .iter()
                .map(pool_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            let before = pools.clone();
            let landings = lander.land(from, to, &due, &mut pools);
            let mut landed = Vec::with_capacity(landings.len());
            if !landings.is_empty() {
                let update = tx
                    .prepare_cached(
                        "UPDATE chain_txs SET state = $2, landed_slot = $3, amount_out = CAST($4::text AS NUMERIC),
                             error = $5 WHERE signature = $1 AND state = 'pending'",
                    )
                    .await
                    .map_err(db_error)?;
                let by_signature: std::collections::HashMap<&str, &ChainTx> =
                    due.iter().map(|t| (t.signature.as_str(), t)).collect();
                for (signature, landing) in landings {
                    let (state, at, amount_out, error) = match landing {
                        Landing::Landed { slot, amount_out } => (TxState::Landed, slot, Some(amount_out), None),
                        Landing::Failed { slot, error } => (TxState::Failed, slot, None, Some(error)),
                    };
                    let changed = tx
                        .execute(
                            &update,
                            &[
                                &signature,
                                &state.as_str(),
                                &slot(at),
                                &amount_out.map(|a| a.to_string()),
                                &error.as_ref().map(Json),
                            ],
                        )
                        .await
                        .map_err(db_error)?;
                    if changed == 1
                        && let Some(t) = by_signature.get(signature.as_str())
                    {
                        landed.push(ChainTx {
                            state,
                            landed_slot: Some(at),
                            amount_out,
                            error,
                            ..(*t).clone()
                        });
                    }
                }
            }
            let moved: Vec<&PoolRow> = pools.iter().filter(|p| !before.contains(p)).collect();
            if !moved.is_empty() {
                let update = tx
                    .prepare_cached(
                        "UPDATE chain_pools SET state = $2, base_in = CAST($3::text AS NUMERIC),
                             base_out = CAST($4::text AS NUMERIC), quote_in = CAST($5::text AS NUMERIC),
                             quote_out = CAST($6::text AS NUMERIC), swaps = $7 WHERE pool = $1",
                    )
                    .await
                    .map_err(db_error)?;
                for pool in moved {
                    tx.execute(
                        &update,
                        &[
                            &pool.pool,
                            &pool.state,
                            &pool.base_in.to_string(),
                            &pool.base_out.to_string(),
                            &pool.quote_in.to_string(),
                            &pool.quote_out.to_string(),
                            &slot(pool.swaps),
                        ],
                    )
                    .await
                    .map_err(db_error)?;
                }
            }
            let expired = tx
                .execute(
                    &tx.prepare_cached(
                        "UPDATE chain_txs SET state = 'expired' WHERE state = 'pending' AND last_valid_slot < $1",
                    )
                    .await
                    .map_err(db_error)?,
                    &[&slot(to)],
                )
                .await
                .map_err(db_error)?;
            tx.execute(
                &tx.prepare_cached("UPDATE chain_state SET tip = $1 WHERE id = 1")
                    .await
                    .map_err(db_error)?,
                &[&slot(to)],
            )
            .await
            .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            Ok(Advance {
                tip: to,
                advanced: Some(Advanced {
                    from,
                    to,
                    landed,
                    expired,
                }),
            })
        })
        .await
    }

    async fn chain_txs(&self, order: Option<OrderId>) -> Result<Vec<ChainTx>, StoreError> {
        self.run(async |client| {
            client
                .query(
                    &format!(
                        "SELECT {TX_COLUMNS} FROM chain_txs WHERE $1::uuid IS NULL OR order_id = $1
                         ORDER BY sent_slot, signature"
                    ),
                    &[&order.map(|id| id.0)],
                )
                .await
                .map_err(db_error)?
                .iter()
                .map(tx_from_row)
                .collect()
        })
        .await
    }

    async fn chain_statuses(&self, signatures: &[String]) -> Result<Vec<Option<ChainTx>>, StoreError> {
        let found: Vec<ChainTx> = self
            .run(async |client| {
                client
                    .query(
                        &client
                            .prepare_cached(&format!("SELECT {TX_COLUMNS} FROM chain_txs WHERE signature = ANY($1)"))
                            .await
                            .map_err(db_error)?,
                        &[&signatures],
                    )
                    .await
                    .map_err(db_error)?
                    .iter()
                    .map(tx_from_row)
                    .collect()
            })
            .await?;
        let mut found: std::collections::HashMap<String, ChainTx> =
            found.into_iter().map(|t| (t.signature.clone(), t)).collect();
        Ok(signatures.iter().map(|signature| found.remove(signature)).collect())
    }

    async fn landed_fees(&self, after: Slot) -> Result<Vec<u64>, StoreError> {
        self.run(async |client| {
            Ok(client
                .query(
                    &client
                        .prepare_cached(
                            "SELECT priority_fee FROM chain_txs WHERE landed_slot > $1 AND state IN ('landed', 'failed')
                             ORDER BY landed_slot, signature",
                        )
                        .await
                        .map_err(db_error)?,
                    &[&slot(after)],
                )
                .await
                .map_err(db_error)?
                .iter()
                .map(|row| row.get::<_, i64>(0) as u64)
                .collect())
        })
        .await
    }

    async fn chain_pools(&self) -> Result<Vec<PoolRow>, StoreError> {
        self.run(async |client| {
            client
                .query(
                    &client
                        .prepare_cached(&format!("SELECT {POOL_COLUMNS} FROM chain_pools ORDER BY pool"))
                        .await
                        .map_err(db_error)?,
                    &[],
                )
                .await
                .map_err(db_error)?
                .iter()
                .map(pool_from_row)
                .collect()
        })
        .await
    }
}
