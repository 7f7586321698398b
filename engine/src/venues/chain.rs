//! The simulated chain: a [`ChainRpc`] over the store's durable chain
//! state ([`ChainStore`]), with the venues' pools on it.
//!
//! **Clock.** Slot `n` begins at `genesis + n · chain.slot_time`; the
//! genesis is written once to the store by the first process to start the
//! chain, so every process counts the same slots. The tip moves only
//! through [`ChainStore::advance`], which lands everything due up to the
//! new tip in the same transaction (the consistency rule of
//! [`ChainRpc`]). Every process that runs the chain spawns
//! [`SimulatedChain::drive`], which advances the tip to the wall-clock slot
//! about twice per slot; an RPC call also catches the tip up when no
//! advance is running in its process (else it answers the last committed
//! tip, which keeps the consistency rule), so the chain moves whenever
//! anyone looks and no call queues behind another's store write. The driver also reads the pools
//! again after each slot, for the quotes, which never wait on the store.
//!
//! **Blockhashes.** The blockhash of slot `s` is
//! `base58(SHA-256("swapline/blockhash|seed|genesis|s"))`: every process
//! derives the same one, and preflight recognises it without a lookup.
//!
//! **Fate of a send** (decided once per send, by a generator seeded with
//! `venues.seed`, the signature and the tip, so every process decides
//! alike). With `share = min(1, priority_fee / chain.market_priority_fee)`
//! (1 when the market fee is 0):
//! - it is **dropped** with probability
//!   `1 − (1 − faults.drop_rate) · (0.5 + 0.5 · share)`: a transaction
//!   paying nothing loses half its chances on top of the configured drops;
//! - else it lands **late** with probability `faults.late_land_rate`, in a
//!   slot drawn uniformly from `late_land_slots + 1` slots after the tip up
//!   to its `last_valid_slot` (when that window is empty it expires);
//! - else it lands `land_slots + ⌈(1 − share) · 3 · land_slots⌉` slots
//!   after the tip: up to four times slower when it pays nothing.
//!
//! `faults.drop_first = N` drops the first N transactions of every order
//! leg outright (a deterministic expiry for demos and tests).
//!
//! Within one slot, higher fees land first. **Rebroadcasts**: sending a
//! known signature never lands it twice; a *dropped* one still valid gets a
//! fresh draw (as a real rebroadcast reaches another leader), a pending,
//! landed or expired one is only counted.
//!
//! **Landing** runs each swap against its pool with the AMM math of
//! `swapline_abi::pool` (as [`super::SimulatedVenue`] quotes it); an output
//! below `min_amount_out` lands as failed (`slippage_exceeded`), with no
//! swap and no pool move. The price walk (`venues.drift_bps`,
//! `venues.mean_reversion`) steps once per slot, seeded by the pool and the
//! slot, inside the advance: all processes see one history. With both at 0
//! a constant-product pool's reserves move by exactly its landed swaps.

use super::{
    PoolError, VenuesConfig,
    rng::Rng,
    simulated::{PoolSim, initial_pools},
};
use crate::chain::{
    Blockhash, ChainConfig, ChainError, ChainRpc, Commitment, SignatureStatus, Slot, Transaction, TxError, Unsigned,
};
use crate::domain::TokenRegistry;
use crate::store::{Advanced, ChainStore, ChainTx, Lander, Landing, PoolRow, StoreError, TxState};
use crate::telemetry;
use async_trait::async_trait;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use tokio_util::sync::CancellationToken;

/// Where the chain reads the time (injectable, for tests).
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told (tests).
#[derive(Debug)]
pub struct ManualClock(Mutex<SystemTime>);

impl ManualClock {
    /// A clock standing at `at`.
    pub fn new(at: SystemTime) -> Self {
        ManualClock(Mutex::new(at))
    }

    /// Moves it forward by `by`.
    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Slots the price walk replays at most in one advance (a chain idle for
/// longer skips the older steps; landings are never skipped).
const MAX_WALK: u64 = 100_000;

/// A pool on the chain: `venue:BASE/QUOTE`.
fn pool_key(venue: &str, base: &str, quote: &str) -> String {
    format!("{venue}:{base}/{quote}")
}

/// 64 bits of SHA-256 over `parts`: the seeds of the chain's draws.
fn seed_of(parts: &[&[u8]]) -> u64 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

#[derive(Debug, Clone)]
struct ChainPool {
    key: String,
    venue: String,
    base: String,
    quote: String,
}

/// The landing logic the store runs inside an advance: the pools' AMM
/// math and the per-slot price walk.
#[derive(Debug)]
pub struct PoolLander {
    pools: Vec<ChainPool>,
    seed: u64,
    /// Walk σ per slot, as a fraction.
    sigma: f64,
    /// Mean reversion per slot.
    kappa: f64,
}

impl PoolLander {
    fn step(&self, pool: &ChainPool, sim: &mut PoolSim, slot: Slot) {
        let z = Rng::new(seed_of(&[
            &self.seed.to_le_bytes(),
            pool.key.as_bytes(),
            &slot.to_le_bytes(),
        ]))
        .normal();
        sim.drift(z, self.sigma, self.kappa);
    }
}

fn tx_error(code: &str, message: String) -> TxError {
    TxError {
        code: code.into(),
        message,
    }
}

impl Lander for PoolLander {
    fn walks(&self) -> bool {
        self.sigma > 0.0 || self.kappa > 0.0
    }

    fn land(&self, from: Slot, to: Slot, due: &[ChainTx], rows: &mut [PoolRow]) -> Vec<(String, Landing)> {
        // The stored pools this chain knows, decoded.
        let mut sims: Vec<(usize, &ChainPool, PoolSim, bool)> = Vec::new();
        for (index, row) in rows.iter().enumerate() {
            if let Some(pool) = self.pools.iter().find(|p| p.key == row.pool)
                && let Ok(sim) = serde_json::from_str::<PoolSim>(&row.state)
            {
                sims.push((index, pool, sim, false));
            }
        }
        let walk_from = if self.walks() {
            (from + 1).max(to.saturating_sub(MAX_WALK) + 1)
        } else {
            to + 1
        };
        let mut next_walk = walk_from;
        let mut walk_until = |slot: Slot, sims: &mut Vec<(usize, &ChainPool, PoolSim, bool)>| {
            while next_walk <= slot {
                for (_, pool, sim, moved) in sims.iter_mut() {
                    self.step(pool, sim, next_walk);
                    *moved = true;
                }
                next_walk += 1;
            }
        };
        let mut landings = Vec::new();
        for tx in due {
            let Some(planned) = tx.planned_slot else { continue };
            let slot = planned.max(from + 1);
            if slot > tx.last_valid_slot || slot > to {
                continue;
            }
            walk_until(slot, &mut sims);
            let found = sims.iter_mut().find_map(|entry| {
                let pool = entry.1;
                if pool.venue != tx.venue {
                    None
                } else if pool.base == tx.token_in && pool.quote == tx.token_out {
                    Some((entry, true))
                } else if pool.quote == tx.token_in && pool.base == tx.token_out {
                    Some((entry, false))
                } else {
                    None
                }
            });
            let Some(((index, _, sim, moved), base_to_quote)) = found else {
                let error = tx_error(
                    "no_pool",
                    format!("{} has no {}/{} pool", tx.venue, tx.token_in, tx.token_out),
                );
                landings.push((tx.signature.clone(), Landing::Failed { slot, error }));
                continue;
            };
            let landing = match sim.oriented(base_to_quote).swap(tx.amount_in) {
                None => Landing::Failed {
                    slot,
                    error: tx_error(
                        "insufficient_liquidity",
                        format!("{} cannot fill {} base units", tx.venue, tx.amount_in),
                    ),
                },
                Some(swap) if swap.amount_out < tx.min_amount_out => Landing::Failed {
                    slot,
                    error: tx_error(
                        "slippage_exceeded",
                        format!(
                            "{}: output {} is below the minimum {} allowed by the slippage tolerance",
                            tx.venue, swap.amount_out, tx.min_amount_out
                        ),
                    ),
                },
                Some(swap) => {
                    sim.apply(base_to_quote, tx.amount_in, &swap);
                    *moved = true;
                    let row = &mut rows[*index];
                    if base_to_quote {
                        row.base_in += tx.amount_in;
                        row.quote_out += swap.amount_out;
                    } else {
                        row.quote_in += tx.amount_in;
                        row.base_out += swap.amount_out;
                    }
                    row.swaps += 1;
                    Landing::Landed {
                        slot,
                        amount_out: swap.amount_out,
                    }
                }
            };
            landings.push((tx.signature.clone(), landing));
        }
        walk_until(to, &mut sims);
        for (index, _, sim, moved) in sims {
            if moved {
                rows[index].state = serde_json::to_string(&sim).expect("pool state serialises");
            }
        }
        landings
    }
}

/// The pools as the chain last read them, and at which tip.
#[derive(Default)]
struct Book {
    tip: Option<Slot>,
    pools: HashMap<String, PoolSim>,
}

/// The simulated chain (see the module docs).
pub struct SimulatedChain {
    store: Arc<dyn ChainStore>,
    config: ChainConfig,
    seed: u64,
    clock: Arc<dyn Clock>,
    lander: Arc<PoolLander>,
    initial: Vec<PoolRow>,
    genesis: tokio::sync::OnceCell<u64>,
    tip: AtomicU64,
    advancing: tokio::sync::Mutex<()>,
    book: RwLock<Book>,
    refreshing: tokio::sync::Mutex<()>,
    reads: Arc<StatusReads>,
    fees: Mutex<Option<FeesAt>>,
}

/// The landed fees of the slots after `after`, read when the tip was
/// `tip`: final, since nothing lands in a slot at or below a stored tip.
struct FeesAt {
    tip: Slot,
    after: Slot,
    fees: Vec<u64>,
}

/// What one caller of [`SimulatedChain::signature_statuses`] waits for.
type StatusAnswer = Result<Vec<Option<ChainTx>>, StoreError>;

/// Group reads of signature statuses: every order in flight on a process
/// polls its own signatures, and the polls that arrive while a read runs
/// share the next one (one `chain_statuses` query for all of them, as a
/// group commit shares one write). A lone poll reads at once.
#[derive(Default)]
struct StatusReads {
    queue: Mutex<ReadQueue>,
}

#[derive(Default)]
struct ReadQueue {
    waiting: Vec<(Vec<String>, tokio::sync::oneshot::Sender<StatusAnswer>)>,
    /// A drain task runs (it takes what is waiting, reads, answers, and
    /// stops when nothing waits).
    running: bool,
}

impl StatusReads {
    /// The statuses of `signatures` from `store`, read together with every
    /// other poll waiting on this process. The read runs in its own task,
    /// so a caller that gives up (a timeout) never strands the others.
    async fn read(self: &Arc<Self>, store: &Arc<dyn ChainStore>, signatures: &[String]) -> StatusAnswer {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let start = {
            let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            queue.waiting.push((signatures.to_vec(), reply));
            !std::mem::replace(&mut queue.running, true)
        };
        if start {
            tokio::spawn(Arc::clone(self).drain(Arc::clone(store)));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("the status read stopped".into())))
    }

    async fn drain(self: Arc<Self>, store: Arc<dyn ChainStore>) {
        /// Clears `running` however the task ends (a panic in the store, a
        /// runtime shutting down), so the next poll starts a new drain.
        struct Running(Option<Arc<StatusReads>>);
        impl Drop for Running {
            fn drop(&mut self) {
                if let Some(reads) = self.0.take() {
                    reads.queue.lock().unwrap_or_else(|p| p.into_inner()).running = false;
                }
            }
        }
        let mut running = Running(Some(Arc::clone(&self)));
        loop {
            let batch = {
                let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                if queue.waiting.is_empty() {
                    queue.running = false;
                    running.0 = None;
                    return;
                }
                std::mem::take(&mut queue.waiting)
            };
            let mut all: Vec<String> = batch.iter().flat_map(|(s, _)| s.iter().cloned()).collect();
            all.sort_unstable();
            all.dedup();
            let found = store.chain_statuses(&all).await.map(|found| {
                all.into_iter()
                    .zip(found)
                    .filter_map(|(signature, tx)| Some((signature, tx?)))
                    .collect::<HashMap<String, ChainTx>>()
            });
            for (signatures, reply) in batch {
                let answer = match &found {
                    Ok(found) => Ok(signatures.iter().map(|s| found.get(s).cloned()).collect()),
                    Err(error) => Err(error.clone()),
                };
                let _ = reply.send(answer);
            }
        }
    }
}

impl std::fmt::Debug for SimulatedChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedChain")
            .field("tip", &self.tip.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn unavailable(e: StoreError) -> ChainError {
    ChainError::Unavailable(e.to_string())
}

fn rejected(code: &str, message: String) -> ChainError {
    ChainError::Rejected {
        code: code.into(),
        message,
    }
}

impl SimulatedChain {
    /// The chain of `[chain]` with every pool of `[venues]` on it, kept in
    /// `store`, on `clock`. Nothing is written until the first call.
    ///
    /// # Errors
    /// [`PoolError`] for a pool `config::validate` would have refused.
    pub fn new(
        config: &ChainConfig,
        venues: &VenuesConfig,
        tokens: &TokenRegistry,
        store: Arc<dyn ChainStore>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, PoolError> {
        let mut names: Vec<&str> = venues.pools.iter().map(|p| p.venue()).collect();
        names.sort_unstable();
        names.dedup();
        let mut pools = Vec::new();
        let mut initial = Vec::new();
        for name in names {
            for (base, quote, sim) in initial_pools(name, venues, tokens)? {
                let key = pool_key(name, &base, &quote);
                initial.push(PoolRow {
                    pool: key.clone(),
                    state: serde_json::to_string(&sim).expect("pool state serialises"),
                    base_in: 0,
                    base_out: 0,
                    quote_in: 0,
                    quote_out: 0,
                    swaps: 0,
                });
                pools.push(ChainPool {
                    key,
                    venue: name.to_owned(),
                    base,
                    quote,
                });
            }
        }
        Ok(SimulatedChain {
            store,
            config: config.clone(),
            seed: venues.seed,
            clock,
            lander: Arc::new(PoolLander {
                pools,
                seed: venues.seed,
                sigma: venues.drift_bps / 10_000.0,
                kappa: venues.mean_reversion,
            }),
            initial,
            genesis: tokio::sync::OnceCell::new(),
            tip: AtomicU64::new(0),
            advancing: tokio::sync::Mutex::new(()),
            book: RwLock::new(Book::default()),
            refreshing: tokio::sync::Mutex::new(()),
            reads: Arc::default(),
            fees: Mutex::new(None),
        })
    }

    fn now_us(&self) -> u128 {
        self.clock
            .now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros()
    }

    /// Slot 0's Unix time in ms: started in the store by the first caller
    /// of any process.
    async fn genesis(&self) -> Result<u64, StoreError> {
        self.genesis
            .get_or_try_init(|| async {
                let now_ms = (self.now_us() / 1000) as u64;
                let head = self.store.chain_start(now_ms, &self.initial).await?;
                self.tip.fetch_max(head.tip, Ordering::AcqRel);
                Ok(head.genesis_ms)
            })
            .await
            .copied()
    }

    /// The slot the wall clock is in.
    fn wall_slot(&self, genesis_ms: u64) -> Slot {
        let since = self.now_us().saturating_sub(u128::from(genesis_ms) * 1000);
        let slot_us = self.config.slot_time.0.as_micros().max(1);
        u64::try_from(since / slot_us).unwrap_or(u64::MAX)
    }

    /// Catches the tip up with the wall clock (landing everything due on
    /// the way) and answers it.
    ///
    /// # Errors
    /// The store's.
    pub async fn tick(&self) -> Result<Slot, StoreError> {
        let genesis = self.genesis().await?;
        let wall = self.wall_slot(genesis);
        let known = self.tip.load(Ordering::Acquire);
        if known >= wall {
            return Ok(known);
        }
        // One advance at a time per process, and nobody queues behind it:
        // a call that finds one running answers the tip this process last
        // saw (committed, so the consistency rule holds; it is only
        // conservative). Without this, every RPC call of every order in
        // flight queued up for its own store write.
        // (Until this process has seen a tip at all, it waits its turn.)
        let _one = match self.advancing.try_lock() {
            Ok(one) => one,
            Err(_) if known > 0 => return Ok(known),
            Err(_) => self.advancing.lock().await,
        };
        let known = self.tip.load(Ordering::Acquire);
        if known >= wall {
            return Ok(known);
        }
        let advance = self.store.advance(wall, self.lander.clone()).await?;
        if let Some(advanced) = &advance.advanced {
            record(advanced);
        }
        let tip = self.tip.fetch_max(advance.tip, Ordering::AcqRel).max(advance.tip);
        telemetry::chain::tip(tip);
        Ok(tip)
    }

    /// The blockhash of `slot`.
    fn blockhash_at(&self, genesis_ms: u64, slot: Slot) -> String {
        let digest = Sha256::new()
            .chain_update(format!("swapline/blockhash|{}|{genesis_ms}|{slot}", self.seed))
            .finalize();
        bs58::encode(digest).into_string()
    }

    /// The state of pool `venue:base/quote` as of the last time the pools
    /// were read ([`SimulatedChain::refresh_book`], which the driver runs
    /// after every slot), `None` when the chain has no such pool. Never
    /// waits on the store once the pools were read once: a quote during a
    /// store outage answers from the last pools read, as an RPC node
    /// behind would.
    ///
    /// # Errors
    /// The store's, only for the first read.
    pub(crate) async fn pool_state(&self, venue: &str, base: &str, quote: &str) -> Result<Option<PoolSim>, StoreError> {
        let key = pool_key(venue, base, quote);
        {
            let book = self.book.read().unwrap_or_else(|p| p.into_inner());
            if book.tip.is_some() {
                return Ok(book.pools.get(&key).cloned());
            }
        }
        self.refresh_book().await?;
        let book = self.book.read().unwrap_or_else(|p| p.into_inner());
        Ok(book.pools.get(&key).cloned())
    }

    /// Reads the pools from the store, as of (at least) the tip this
    /// process knows, for the quotes.
    ///
    /// # Errors
    /// The store's (the pools read before stay).
    pub async fn refresh_book(&self) -> Result<(), StoreError> {
        // The pools are stored by the chain's start: never read them before.
        self.genesis().await?;
        let _one = self.refreshing.lock().await;
        let tip = self.tip.load(Ordering::Acquire);
        let rows = self.store.chain_pools().await?;
        let mut pools = HashMap::new();
        for row in rows {
            let sim = serde_json::from_str::<PoolSim>(&row.state)
                .map_err(|e| StoreError::Corrupt(format!("pool {}: {e}", row.pool)))?;
            pools.insert(row.pool, sim);
        }
        *self.book.write().unwrap_or_else(|p| p.into_inner()) = Book { tip: Some(tip), pools };
        Ok(())
    }

    /// One step of the driver: the tip catches up, and the quotes' pools
    /// are read again when it moved.
    ///
    /// # Errors
    /// The store's.
    pub async fn tick_and_refresh(&self) -> Result<Slot, StoreError> {
        let tip = self.tick().await?;
        let stale = {
            let book = self.book.read().unwrap_or_else(|p| p.into_inner());
            book.tip.is_none_or(|t| t < tip)
        };
        if stale {
            self.refresh_book().await?;
        }
        Ok(tip)
    }

    /// Decides what becomes of `tx` sent at `tip` (see the module docs):
    /// its state and planned landing slot.
    fn fate(&self, tx: &Transaction, tip: Slot) -> (TxState, Option<Slot>) {
        let mut rng = Rng::new(seed_of(&[
            b"fate",
            &self.seed.to_le_bytes(),
            tx.signature.as_bytes(),
            &tip.to_le_bytes(),
        ]));
        let config = &self.config;
        let share = if config.market_priority_fee == 0 {
            1.0
        } else {
            (tx.priority_fee as f64 / config.market_priority_fee as f64).min(1.0)
        };
        let keep = (1.0 - config.faults.drop_rate) * (0.5 + 0.5 * share);
        if rng.unit() >= keep {
            return (TxState::Dropped, None);
        }
        let delay = if rng.unit() < config.faults.late_land_rate {
            let earliest = config.faults.late_land_slots + 1;
            let remaining = tx.last_valid_slot.saturating_sub(tip);
            if remaining >= earliest {
                earliest + rng.next_u64() % (remaining - earliest + 1)
            } else {
                earliest
            }
        } else {
            let slower = ((1.0 - share) * 3.0 * config.land_slots as f64).ceil() as u64;
            config.land_slots + slower
        };
        (TxState::Pending, Some(tip + delay))
    }

    /// Whether `tx` is among the first `faults.drop_first` transactions of
    /// its order leg (counting the other signatures the chain has seen for
    /// that leg), which are dropped whatever the rates say.
    async fn dropped_first(&self, tx: &Transaction) -> Result<bool, StoreError> {
        let first = self.config.faults.drop_first as usize;
        if first == 0 {
            return Ok(false);
        }
        let earlier = self
            .store
            .chain_txs(Some(tx.order_id))
            .await?
            .iter()
            .filter(|t| t.leg == tx.leg && t.signature != tx.signature)
            .count();
        Ok(earlier < first)
    }

    /// Advances the tip about twice per slot until `shutdown`; a store
    /// failure is logged once and retried on the next tick.
    pub async fn drive(self: Arc<Self>, shutdown: CancellationToken) {
        let period = (self.config.slot_time.0 / 2).max(Duration::from_millis(1));
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            match self.tick_and_refresh().await {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!("the chain advances again");
                }
                Ok(_) => {}
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "the chain cannot advance: the store failed");
                }
                Err(_) => {}
            }
        }
    }
}

/// Records the metrics of an advance this process made.
fn record(advanced: &Advanced) {
    for tx in &advanced.landed {
        match (tx.state, tx.landed_slot) {
            (TxState::Landed, Some(slot)) => telemetry::chain::landed(slot.saturating_sub(tx.sent_slot)),
            _ => telemetry::chain::failed(),
        }
    }
    telemetry::chain::expired(advanced.expired);
}

#[async_trait]
impl ChainRpc for SimulatedChain {
    async fn slot(&self) -> Result<Slot, ChainError> {
        self.tick().await.map_err(unavailable)
    }

    async fn latest_blockhash(&self) -> Result<Blockhash, ChainError> {
        let tip = self.tick().await.map_err(unavailable)?;
        let genesis = self.genesis().await.map_err(unavailable)?;
        Ok(Blockhash {
            hash: self.blockhash_at(genesis, tip),
            slot: tip,
            last_valid_slot: tip + self.config.blockhash_validity_slots,
        })
    }

    async fn recent_priority_fees(&self, slots: u64) -> Result<Vec<u64>, ChainError> {
        let tip = self.tick().await.map_err(unavailable)?;
        let after = tip.saturating_sub(slots);
        // One read per tip and window on this process, not one per order:
        // what landed at or below a stored tip never changes.
        {
            let cached = self.fees.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(at) = cached.as_ref()
                && at.tip == tip
                && at.after == after
            {
                return Ok(at.fees.clone());
            }
        }
        let fees = self.store.landed_fees(after).await.map_err(unavailable)?;
        let mut cached = self.fees.lock().unwrap_or_else(|p| p.into_inner());
        if cached.as_ref().is_none_or(|at| at.tip <= tip) {
            *cached = Some(FeesAt {
                tip,
                after,
                fees: fees.clone(),
            });
        }
        Ok(fees)
    }

    async fn send_transaction(&self, tx: &Transaction) -> Result<(), ChainError> {
        let tip = self.tick().await.map_err(unavailable)?;
        let genesis = self.genesis().await.map_err(unavailable)?;
        let blockhash_slot = tx
            .last_valid_slot
            .checked_sub(self.config.blockhash_validity_slots)
            .filter(|slot| *slot <= tip && self.blockhash_at(genesis, *slot) == tx.blockhash);
        let Some(blockhash_slot) = blockhash_slot else {
            return Err(rejected(
                "blockhash_not_found",
                format!("blockhash {} is not one of this chain's", tx.blockhash),
            ));
        };
        if tip > tx.last_valid_slot {
            return Err(rejected(
                "blockhash_not_found",
                format!(
                    "blockhash {} expired: slot {tip} is past its last valid slot {}",
                    tx.blockhash, tx.last_valid_slot
                ),
            ));
        }
        let resigned = Transaction::sign(Unsigned {
            order_id: tx.order_id,
            leg: tx.leg,
            venue: tx.venue.clone(),
            token_in: tx.token_in.clone(),
            token_out: tx.token_out.clone(),
            amount_in: tx.amount_in,
            min_amount_out: tx.min_amount_out,
            blockhash: Blockhash {
                hash: tx.blockhash.clone(),
                slot: blockhash_slot,
                last_valid_slot: tx.last_valid_slot,
            },
            priority_fee: tx.priority_fee,
        });
        if resigned.signature != tx.signature {
            return Err(rejected(
                "invalid",
                "the signature does not match the transaction's content".into(),
            ));
        }
        let (state, planned_slot) = if self.dropped_first(tx).await.map_err(unavailable)? {
            (TxState::Dropped, None)
        } else {
            self.fate(tx, tip)
        };
        let row = ChainTx {
            signature: tx.signature.clone(),
            order_id: tx.order_id,
            leg: tx.leg,
            venue: tx.venue.clone(),
            token_in: tx.token_in.clone(),
            token_out: tx.token_out.clone(),
            amount_in: tx.amount_in,
            min_amount_out: tx.min_amount_out,
            blockhash: tx.blockhash.clone(),
            last_valid_slot: tx.last_valid_slot,
            priority_fee: tx.priority_fee,
            sent_slot: tip,
            planned_slot,
            state,
            landed_slot: None,
            amount_out: None,
            error: None,
            rebroadcasts: 0,
        };
        let broadcast = self.store.broadcast(&row).await.map_err(unavailable)?;
        if broadcast == crate::store::Broadcast::First && state == TxState::Dropped {
            telemetry::chain::dropped();
        }
        Ok(())
    }

    async fn signature_statuses(&self, signatures: &[String]) -> Result<Vec<Option<SignatureStatus>>, ChainError> {
        self.tick().await.map_err(unavailable)?;
        let found = self.reads.read(&self.store, signatures).await.map_err(unavailable)?;
        Ok(found
            .into_iter()
            .map(|tx| {
                let tx = tx?;
                let slot = tx.landed_slot.filter(|_| tx.state.landed())?;
                Some(SignatureStatus {
                    slot,
                    commitment: Commitment::Confirmed,
                    err: tx.error,
                    amount_out: tx.amount_out,
                    priority_fee: tx.priority_fee,
                })
            })
            .collect())
    }
}

/// A pool as `swapline chain pools` shows it: its state and the flows of
/// its landed swaps (amounts as decimal strings of base units).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolView {
    /// `venue:BASE/QUOTE`.
    pub pool: String,
    /// `constant_product` or `bins`.
    pub kind: &'static str,
    /// Constant product: base reserve, base units.
    pub reserve_base: Option<String>,
    /// Constant product: quote reserve, base units.
    pub reserve_quote: Option<String>,
    /// Price, quote base units per base base unit.
    pub price: f64,
    /// Base token paid in by landed swaps, base units.
    pub base_in: String,
    /// Base token paid out by landed swaps, base units.
    pub base_out: String,
    /// Quote token paid in by landed swaps, base units.
    pub quote_in: String,
    /// Quote token paid out by landed swaps, base units.
    pub quote_out: String,
    /// Landed swaps.
    pub swaps: u64,
}

impl PoolView {
    /// The view of a stored pool.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when its state does not decode.
    pub fn of(row: &PoolRow) -> Result<PoolView, StoreError> {
        let sim = serde_json::from_str::<PoolSim>(&row.state)
            .map_err(|e| StoreError::Corrupt(format!("pool {}: {e}", row.pool)))?;
        let (kind, reserves) = match &sim {
            PoolSim::ConstantProduct {
                reserve_base,
                reserve_quote,
                ..
            } => (
                "constant_product",
                Some((reserve_base.to_string(), reserve_quote.to_string())),
            ),
            PoolSim::Bins { .. } => ("bins", None),
        };
        let (reserve_base, reserve_quote) = reserves.unzip();
        Ok(PoolView {
            pool: row.pool.clone(),
            kind,
            reserve_base,
            reserve_quote,
            price: sim.price(),
            base_in: row.base_in.to_string(),
            base_out: row.base_out.to_string(),
            quote_in: row.quote_in.to_string(),
            quote_out: row.quote_out.to_string(),
            swaps: row.swaps,
        })
    }
}

#[cfg(test)]
mod tests;
