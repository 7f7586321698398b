//! The simulated chain on a real (SQLite) store under a manual clock: each
//! test moves the clock by whole slots and looks at what the chain says.

use super::*;
use crate::{
    domain::{Dur, OrderId},
    store::{SqliteStore, SqliteSync, Store},
    venues::{PoolConfig, SimulatedVenue, Venue},
};
use std::collections::BTreeMap;

const SLOT: Duration = Duration::from_millis(100);
const TEN_SOL: u128 = 10_000_000_000;

fn tokens() -> TokenRegistry {
    TokenRegistry::new([
        ("SOL".into(), "s".into(), 9, "100000".into()),
        ("USDC".into(), "u".into(), 6, "100000000".into()),
    ])
    .unwrap()
}

fn venues() -> VenuesConfig {
    VenuesConfig {
        seed: 7,
        quote_latency: Dur::default(),
        quote_jitter: Dur::default(),
        drift_bps: 0.0,
        mean_reversion: 0.0,
        pools: vec![
            PoolConfig::ConstantProduct {
                venue: "raydium".into(),
                base: "SOL".into(),
                quote: "USDC".into(),
                reserve_base: "1000".into(),
                reserve_quote: "150000".into(),
                fee_bps: 25,
            },
            PoolConfig::Dlmm {
                venue: "meteora".into(),
                base: "SOL".into(),
                quote: "USDC".into(),
                price: 150.0,
                bin_step_bps: 10,
                bins_per_side: 50,
                bin_liquidity: 10.0,
                base_fee_bps: 20,
                variable_fee_bps: 1,
                max_fee_bps: 100,
            },
        ],
    }
}

fn settings() -> ChainConfig {
    ChainConfig {
        slot_time: Dur(SLOT),
        blockhash_validity_slots: 20,
        land_slots: 2,
        market_priority_fee: 10_000,
        faults: crate::chain::ChainFaults {
            drop_rate: 0.0,
            late_land_rate: 0.0,
            late_land_slots: 5,
            drop_first: 0,
        },
        ..ChainConfig::default()
    }
}

struct Sim {
    _dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
    clock: Arc<ManualClock>,
    chain: Arc<SimulatedChain>,
}

impl Sim {
    async fn new(config: ChainConfig) -> Sim {
        Self::with(config, venues()).await
    }

    async fn with(config: ChainConfig, venues: VenuesConfig) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(SqliteStore::open(&dir.path().join("c.db"), SqliteSync::Normal, Duration::from_secs(5)).unwrap());
        store.migrate().await.unwrap();
        // A whole number of ms, so slot n begins exactly n slots later.
        let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000)));
        let chain = Arc::new(SimulatedChain::new(&config, &venues, &tokens(), store.clone(), clock.clone()).unwrap());
        assert_eq!(chain.slot().await.unwrap(), 0);
        Sim {
            _dir: dir,
            store,
            clock,
            chain,
        }
    }

    /// Moves the clock `n` slots on and lets the chain catch up (as its
    /// driver would: the quotes' pools are read again too).
    async fn step(&self, n: u32) -> Slot {
        self.clock.advance(SLOT * n);
        self.chain.tick_and_refresh().await.unwrap()
    }

    /// A signed swap of `amount_in` SOL→USDC (or back) on raydium for
    /// `order`'s `leg`, with the latest blockhash.
    async fn tx(
        &self,
        order: OrderId,
        leg: u32,
        amount_in: u128,
        sell_sol: bool,
        fee: u64,
        min_out: u128,
    ) -> Transaction {
        let (token_in, token_out) = if sell_sol { ("SOL", "USDC") } else { ("USDC", "SOL") };
        Transaction::sign(Unsigned {
            order_id: order,
            leg,
            venue: "raydium".into(),
            token_in: token_in.into(),
            token_out: token_out.into(),
            amount_in,
            min_amount_out: min_out,
            blockhash: self.chain.latest_blockhash().await.unwrap(),
            priority_fee: fee,
        })
    }

    async fn sell(&self, fee: u64) -> Transaction {
        self.tx(OrderId::new(), 0, TEN_SOL, true, fee, 0).await
    }

    async fn status(&self, tx: &Transaction) -> Option<SignatureStatus> {
        self.chain
            .signature_statuses(std::slice::from_ref(&tx.signature))
            .await
            .unwrap()
            .remove(0)
    }

    async fn stored(&self, tx: &Transaction) -> ChainTx {
        self.store
            .chain_statuses(std::slice::from_ref(&tx.signature))
            .await
            .unwrap()
            .remove(0)
            .expect("the chain saw it")
    }

    async fn raydium(&self) -> PoolRow {
        self.store
            .chain_pools()
            .await
            .unwrap()
            .into_iter()
            .find(|p| p.pool == "raydium:SOL/USDC")
            .unwrap()
    }

    fn venue(&self) -> SimulatedVenue {
        SimulatedVenue::from_config("raydium", &venues(), &tokens())
            .unwrap()
            .on_chain(self.chain.clone())
    }
}

#[tokio::test]
async fn a_transaction_lands_after_land_slots_for_the_quoted_amount_and_moves_the_quotes() {
    let sim = Sim::new(settings()).await;
    let venue = sim.venue();
    let quoted = venue.quote("SOL", "USDC", TEN_SOL).await.unwrap().amount_out.0;
    let tx = sim.sell(10_000).await;
    sim.chain.send_transaction(&tx).await.unwrap();
    assert_eq!(sim.status(&tx).await, None, "sending returns no outcome");
    assert_eq!(sim.step(1).await, 1);
    assert_eq!(sim.status(&tx).await, None, "not before land_slots");
    assert_eq!(sim.step(1).await, 2);
    let status = sim.status(&tx).await.expect("landed at slot 2");
    assert_eq!(
        status,
        SignatureStatus {
            slot: 2,
            commitment: Commitment::Confirmed,
            err: None,
            amount_out: Some(quoted),
            priority_fee: 10_000,
        }
    );
    let after = venue.quote("SOL", "USDC", TEN_SOL).await.unwrap().amount_out.0;
    assert!(after < quoted, "the pool moved by the landed swap: {after} vs {quoted}");
    assert_eq!(sim.stored(&tx).await.state, TxState::Landed);
}

#[tokio::test]
async fn a_dropped_transaction_never_lands() {
    let mut config = settings();
    config.faults.drop_rate = 1.0;
    let sim = Sim::new(config).await;
    let tx = sim.sell(10_000).await;
    sim.chain.send_transaction(&tx).await.unwrap();
    sim.step(30).await;
    assert_eq!(sim.status(&tx).await, None);
    let stored = sim.stored(&tx).await;
    assert_eq!((stored.state, stored.landed_slot), (TxState::Dropped, None));
    assert_eq!(sim.raydium().await.swaps, 0);
}

#[tokio::test]
async fn a_late_transaction_lands_after_late_land_slots_but_before_expiry() {
    let mut config = settings();
    config.faults.late_land_rate = 1.0;
    let sim = Sim::new(config).await;
    sim.step(3).await;
    let mut txs = Vec::new();
    for _ in 0..20 {
        let tx = sim.sell(10_000).await;
        sim.chain.send_transaction(&tx).await.unwrap();
        txs.push(tx);
    }
    // Slots 4 to 8: within late_land_slots (5) of the send.
    for _ in 0..5 {
        sim.step(1).await;
        for tx in &txs {
            assert_eq!(sim.status(tx).await, None, "nothing lands within late_land_slots");
        }
    }
    sim.step(20).await;
    for tx in &txs {
        let slot = sim.status(tx).await.expect("a late one still lands").slot;
        assert!(
            slot > 3 + 5 && slot <= tx.last_valid_slot,
            "{slot} vs {}",
            tx.last_valid_slot
        );
    }
}

#[tokio::test]
async fn past_its_last_valid_slot_a_transaction_expires_and_preflight_refuses_it() {
    let mut config = settings();
    config.faults.late_land_rate = 1.0;
    let sim = Sim::new(config).await;
    let blockhash = sim.chain.latest_blockhash().await.unwrap();
    assert_eq!((blockhash.slot, blockhash.last_valid_slot), (0, 20));
    let tx = sim.sell(10_000).await;
    // Sent at slot 16, a late landing (after 5 more slots) misses slot 20.
    sim.step(16).await;
    sim.chain.send_transaction(&tx).await.unwrap();
    assert_eq!(sim.stored(&tx).await.state, TxState::Pending);
    assert_eq!(sim.step(4).await, 20);
    assert_eq!(sim.stored(&tx).await.state, TxState::Pending, "valid through slot 20");
    assert_eq!(sim.step(1).await, 21);
    assert_eq!(sim.stored(&tx).await.state, TxState::Expired);
    assert_eq!(sim.status(&tx).await, None);
    let refused = sim.chain.send_transaction(&tx).await.unwrap_err();
    assert!(
        matches!(&refused, ChainError::Rejected { code, .. } if code == "blockhash_not_found"),
        "{refused:?}"
    );
    assert!(!refused.is_transient());
    sim.step(30).await;
    assert_eq!(sim.stored(&tx).await.state, TxState::Expired, "never lands");
}

#[tokio::test]
async fn an_unknown_blockhash_or_a_forged_signature_is_refused_and_not_recorded() {
    let sim = Sim::new(settings()).await;
    sim.step(2).await;
    let mut unknown = sim.sell(10_000).await;
    unknown.blockhash = "11111111111111111111111111111111".into();
    let error = sim.chain.send_transaction(&unknown).await.unwrap_err();
    assert!(
        matches!(&error, ChainError::Rejected { code, .. } if code == "blockhash_not_found"),
        "{error:?}"
    );
    let mut forged = sim.sell(10_000).await;
    forged.amount_in += 1;
    let error = sim.chain.send_transaction(&forged).await.unwrap_err();
    assert!(
        matches!(&error, ChainError::Rejected { code, .. } if code == "invalid"),
        "{error:?}"
    );
    assert!(sim.store.chain_txs(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn once_the_slot_says_s_every_landing_up_to_s_is_visible() {
    let mut config = settings();
    config.faults.drop_rate = 0.3;
    config.faults.late_land_rate = 0.3;
    let sim = Sim::new(config).await;
    let mut txs = Vec::new();
    let mut seen: Vec<(Slot, Vec<Option<SignatureStatus>>)> = Vec::new();
    for round in 0..40u64 {
        for fee in [0, 5_000, 10_000] {
            if round < 15 {
                let tx = sim.sell(fee + round).await;
                sim.chain.send_transaction(&tx).await.unwrap();
                txs.push(tx);
            }
        }
        sim.clock.advance(SLOT);
        // Slot first, statuses second: the engine's order.
        let slot = sim.chain.slot().await.unwrap();
        let signatures: Vec<String> = txs.iter().map(|t| t.signature.clone()).collect();
        seen.push((slot, sim.chain.signature_statuses(&signatures).await.unwrap()));
    }
    let finals: Vec<ChainTx> = {
        let mut all = Vec::new();
        for tx in &txs {
            all.push(sim.stored(tx).await);
        }
        all
    };
    let mut landed = 0;
    for (slot, statuses) in &seen {
        for (tx, status) in finals.iter().zip(statuses) {
            if let Some(at) = tx.landed_slot.filter(|at| at <= slot) {
                landed += 1;
                assert_eq!(
                    status.as_ref().map(|s| s.slot),
                    Some(at),
                    "{} landed by {slot}",
                    tx.signature
                );
            }
        }
    }
    assert!(landed > 0);
    for tx in &finals {
        assert!(
            !(tx.state == TxState::Pending),
            "validity is 20 slots: nothing is still pending after 40"
        );
    }
}

#[tokio::test]
async fn a_rebroadcast_never_lands_twice() {
    let sim = Sim::new(settings()).await;
    let tx = sim.sell(10_000).await;
    for _ in 0..4 {
        sim.chain.send_transaction(&tx).await.unwrap();
    }
    sim.step(3).await;
    sim.chain.send_transaction(&tx).await.unwrap();
    sim.step(3).await;
    let stored = sim.stored(&tx).await;
    assert_eq!((stored.state, stored.rebroadcasts), (TxState::Landed, 4));
    let pool = sim.raydium().await;
    assert_eq!((pool.swaps, pool.base_in), (1, TEN_SOL), "one swap, whatever the sends");
}

#[tokio::test]
async fn a_dropped_transaction_rebroadcast_while_valid_gets_a_new_chance() {
    let mut config = settings();
    config.faults.drop_rate = 0.5;
    let sim = Sim::new(config).await;
    let mut txs = Vec::new();
    for _ in 0..40 {
        let tx = sim.sell(10_000).await;
        sim.chain.send_transaction(&tx).await.unwrap();
        txs.push(tx);
    }
    let mut dropped = Vec::new();
    for tx in &txs {
        if sim.stored(tx).await.state == TxState::Dropped {
            dropped.push(tx.clone());
        }
    }
    assert!(!dropped.is_empty() && dropped.len() < txs.len(), "{}", dropped.len());
    // Rebroadcast every slot while valid: the drops get fresh draws.
    for _ in 0..15 {
        sim.step(1).await;
        for tx in &dropped {
            sim.chain.send_transaction(tx).await.unwrap();
        }
    }
    sim.step(10).await;
    let mut revived = 0;
    for tx in &dropped {
        let stored = sim.stored(tx).await;
        if stored.state == TxState::Landed {
            revived += 1;
        }
        assert!(stored.rebroadcasts >= 1);
    }
    assert!(revived > 0, "some dropped transaction landed after a rebroadcast");
    assert_eq!(sim.raydium().await.swaps as usize, txs.len() - dropped.len() + revived);
}

#[tokio::test]
async fn two_signatures_for_one_leg_both_land_the_chain_does_not_protect_the_engine() {
    let sim = Sim::new(settings()).await;
    let order = OrderId::new();
    let first = sim.tx(order, 0, TEN_SOL, true, 10_000, 0).await;
    sim.step(1).await;
    let second = sim.tx(order, 0, TEN_SOL, true, 10_000, 0).await;
    assert_ne!(first.signature, second.signature, "a new blockhash signs differently");
    sim.chain.send_transaction(&first).await.unwrap();
    sim.chain.send_transaction(&second).await.unwrap();
    sim.step(3).await;
    assert!(sim.status(&first).await.unwrap().executed());
    assert!(sim.status(&second).await.unwrap().executed());
    assert_eq!(sim.raydium().await.swaps, 2, "the same leg swapped twice");
    assert_eq!(sim.store.chain_txs(Some(order)).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_fee_below_the_market_lands_less_often_and_later() {
    let sim = Sim::new(settings()).await;
    let (mut cheap, mut market) = (Vec::new(), Vec::new());
    for _ in 0..100 {
        let tx = sim.sell(0).await;
        sim.chain.send_transaction(&tx).await.unwrap();
        cheap.push(tx);
        let tx = sim.sell(10_000).await;
        sim.chain.send_transaction(&tx).await.unwrap();
        market.push(tx);
    }
    sim.step(12).await;
    let mut cheap_landed = 0;
    for tx in &cheap {
        let stored = sim.stored(tx).await;
        match stored.state {
            TxState::Landed => {
                cheap_landed += 1;
                assert_eq!(stored.landed_slot, Some(2 + 6), "land_slots + 3·land_slots at fee 0");
            }
            state => assert_eq!(state, TxState::Dropped),
        }
    }
    for tx in &market {
        assert_eq!(sim.stored(tx).await.landed_slot, Some(2), "all land at land_slots");
    }
    assert!(
        (20..=80).contains(&cheap_landed),
        "about half of the fee-0 ones land: {cheap_landed}"
    );
    let fees = sim.chain.recent_priority_fees(20).await.unwrap();
    assert_eq!(fees.len(), 100 + cheap_landed);
    assert_eq!(&fees[..100], &[10_000; 100], "oldest first: slot 2 before slot 8");
    assert!(
        sim.chain.recent_priority_fees(2).await.unwrap().is_empty(),
        "nothing in the last 2 slots"
    );
}

#[tokio::test]
async fn a_swap_below_its_minimum_lands_failed_without_moving_the_pool() {
    let sim = Sim::new(settings()).await;
    let venue = sim.venue();
    let before = venue.quote("SOL", "USDC", TEN_SOL).await.unwrap().amount_out.0;
    let tx = sim.tx(OrderId::new(), 0, TEN_SOL, true, 10_000, before + 1).await;
    sim.chain.send_transaction(&tx).await.unwrap();
    sim.step(3).await;
    let status = sim.status(&tx).await.expect("it landed");
    assert_eq!(status.err.as_ref().map(|e| e.code.as_str()), Some("slippage_exceeded"));
    assert_eq!(status.amount_out, None);
    assert!(!status.executed());
    assert_eq!(sim.stored(&tx).await.state, TxState::Failed);
    let pool = sim.raydium().await;
    assert_eq!((pool.swaps, pool.base_in, pool.quote_out), (0, 0, 0));
    assert_eq!(venue.quote("SOL", "USDC", TEN_SOL).await.unwrap().amount_out.0, before);
}

#[tokio::test]
async fn the_pool_reserves_move_by_exactly_the_landed_swaps() {
    let mut config = settings();
    config.faults.drop_rate = 0.2;
    config.faults.late_land_rate = 0.2;
    let sim = Sim::new(config).await;
    let start = PoolView::of(&sim.raydium().await).unwrap();
    let mut txs = Vec::new();
    for i in 0..60u128 {
        let tx = if i % 3 == 0 {
            sim.tx(OrderId::new(), 0, 1_000_000_000 * (i + 1), false, 10_000, 0)
                .await
        } else {
            sim.tx(OrderId::new(), 1, TEN_SOL / (i + 1), true, 10_000, 0).await
        };
        sim.chain.send_transaction(&tx).await.unwrap();
        txs.push(tx);
        if i % 10 == 0 {
            sim.step(1).await;
        }
    }
    sim.step(40).await;
    let mut sums: BTreeMap<&str, u128> = BTreeMap::new();
    for tx in &txs {
        let stored = sim.stored(tx).await;
        if stored.state != TxState::Landed {
            continue;
        }
        let out = stored.amount_out.unwrap();
        let (paid_in, paid_out) = if tx.token_in == "SOL" {
            ("base_in", "quote_out")
        } else {
            ("quote_in", "base_out")
        };
        *sums.entry(paid_in).or_default() += tx.amount_in;
        *sums.entry(paid_out).or_default() += out;
        *sums.entry("swaps").or_default() += 1;
    }
    let pool = sim.raydium().await;
    let flows = [
        ("base_in", pool.base_in),
        ("base_out", pool.base_out),
        ("quote_in", pool.quote_in),
        ("quote_out", pool.quote_out),
        ("swaps", u128::from(pool.swaps)),
    ];
    for (name, value) in flows {
        assert_eq!(sums.get(name).copied().unwrap_or(0), value, "{name}");
    }
    assert!(
        pool.swaps > 10 && (pool.swaps as usize) < txs.len(),
        "some were dropped: {}",
        pool.swaps
    );
    let now = PoolView::of(&pool).unwrap();
    let reserve = |v: &Option<String>| v.as_deref().unwrap().parse::<u128>().unwrap();
    assert_eq!(
        reserve(&now.reserve_base),
        reserve(&start.reserve_base) + pool.base_in - pool.base_out
    );
    assert_eq!(
        reserve(&now.reserve_quote),
        reserve(&start.reserve_quote) + pool.quote_in - pool.quote_out
    );
}

#[tokio::test]
async fn the_price_walk_is_one_history_for_every_process() {
    let mut walking = venues();
    walking.drift_bps = 50.0;
    walking.mean_reversion = 0.1;
    let sim = Sim::with(settings(), walking.clone()).await;
    // A second process on the same store.
    let other =
        Arc::new(SimulatedChain::new(&settings(), &walking, &tokens(), sim.store.clone(), sim.clock.clone()).unwrap());
    let mut prices = Vec::new();
    for _ in 0..5 {
        sim.step(3).await;
        let mine = sim.chain.pool_state("raydium", "SOL", "USDC").await.unwrap().unwrap();
        other.tick_and_refresh().await.unwrap();
        let theirs = other.pool_state("raydium", "SOL", "USDC").await.unwrap().unwrap();
        assert_eq!(mine, theirs);
        prices.push(mine.price());
    }
    assert!(prices.windows(2).any(|w| w[0] != w[1]), "the price walks: {prices:?}");
    assert!(
        prices.iter().all(|p| (0.1..0.2).contains(p)),
        "near 150 USDC/SOL: {prices:?}"
    );
}

#[tokio::test]
async fn blockhashes_are_per_slot_and_valid_for_the_configured_slots() {
    let sim = Sim::new(settings()).await;
    let first = sim.chain.latest_blockhash().await.unwrap();
    assert_eq!(
        first,
        sim.chain.latest_blockhash().await.unwrap(),
        "same slot, same blockhash"
    );
    sim.step(1).await;
    let next = sim.chain.latest_blockhash().await.unwrap();
    assert_ne!(first.hash, next.hash);
    assert_eq!((next.slot, next.last_valid_slot), (1, 21));
    assert_eq!(bs58::decode(&next.hash).into_vec().unwrap().len(), 32);
}

#[tokio::test]
async fn the_driver_advances_the_tip_until_shut_down() {
    let sim = Sim::new(settings()).await;
    let shutdown = CancellationToken::new();
    let driver = tokio::spawn(sim.chain.clone().drive(shutdown.clone()));
    sim.clock.advance(SLOT * 3);
    let mut tip = 0;
    for _ in 0..1000 {
        tip = sim.store.chain_head().await.unwrap().unwrap().tip;
        if tip >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(tip, 3, "the driver caught up with the clock");
    shutdown.cancel();
    driver.await.unwrap();
}

/// A chain state store that can be switched off (a scripted outage of our
/// own seam over the real SQLite store).
struct Switchable {
    inner: Arc<SqliteStore>,
    down: std::sync::atomic::AtomicBool,
    /// Status reads hang (no answer, no error) while set.
    silent: std::sync::atomic::AtomicBool,
}

impl Switchable {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("switched off".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl ChainStore for Switchable {
    async fn chain_start(&self, genesis_ms: u64, pools: &[PoolRow]) -> Result<crate::store::ChainHead, StoreError> {
        self.check()?;
        self.inner.chain_start(genesis_ms, pools).await
    }
    async fn chain_head(&self) -> Result<Option<crate::store::ChainHead>, StoreError> {
        self.check()?;
        self.inner.chain_head().await
    }
    async fn broadcast(&self, tx: &ChainTx) -> Result<crate::store::Broadcast, StoreError> {
        self.check()?;
        self.inner.broadcast(tx).await
    }
    async fn advance(&self, to: Slot, lander: Arc<dyn Lander>) -> Result<crate::store::Advance, StoreError> {
        self.check()?;
        self.inner.advance(to, lander).await
    }
    async fn chain_txs(&self, order: Option<OrderId>) -> Result<Vec<ChainTx>, StoreError> {
        self.check()?;
        self.inner.chain_txs(order).await
    }
    async fn chain_statuses(&self, signatures: &[String]) -> Result<Vec<Option<ChainTx>>, StoreError> {
        self.check()?;
        while self.silent.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.inner.chain_statuses(signatures).await
    }
    async fn landed_fees(&self, after: Slot) -> Result<Vec<u64>, StoreError> {
        self.check()?;
        self.inner.landed_fees(after).await
    }
    async fn chain_pools(&self) -> Result<Vec<PoolRow>, StoreError> {
        self.check()?;
        self.inner.chain_pools().await
    }
}

#[tokio::test]
async fn a_quote_before_the_first_slot_sees_the_started_pools() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(SqliteStore::open(&dir.path().join("q.db"), SqliteSync::Normal, Duration::from_secs(5)).unwrap());
    store.migrate().await.unwrap();
    let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000)));
    let chain = Arc::new(SimulatedChain::new(&settings(), &venues(), &tokens(), store, clock).unwrap());
    let venue = SimulatedVenue::from_config("raydium", &venues(), &tokens())
        .unwrap()
        .on_chain(chain);
    assert!(venue.quote("SOL", "USDC", TEN_SOL).await.unwrap().amount_out.0 > 0);
}

#[tokio::test]
async fn while_the_store_is_down_quotes_answer_from_the_last_pools_read_and_rpc_calls_are_transient() {
    let base = Sim::new(settings()).await;
    let store = Arc::new(Switchable {
        inner: base.store.clone(),
        down: Default::default(),
        silent: Default::default(),
    });
    let chain =
        Arc::new(SimulatedChain::new(&settings(), &venues(), &tokens(), store.clone(), base.clock.clone()).unwrap());
    let venue = SimulatedVenue::from_config("raydium", &venues(), &tokens())
        .unwrap()
        .on_chain(chain.clone());
    let before = venue.quote("SOL", "USDC", TEN_SOL).await.unwrap().amount_out;
    store.down.store(true, Ordering::SeqCst);
    base.clock.advance(SLOT * 3);
    assert_eq!(venue.quote("SOL", "USDC", TEN_SOL).await.unwrap().amount_out, before);
    let error = chain.slot().await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert!(chain.tick_and_refresh().await.is_err());
    store.down.store(false, Ordering::SeqCst);
    assert_eq!(chain.tick_and_refresh().await.unwrap(), 3);
}

/// Status polls share one read; while that read hangs (a store that stops
/// answering without an error) callers give up on their own deadline, and
/// once it answers, the polls that waited and new ones all get answers.
#[tokio::test]
async fn polls_share_a_status_read_and_a_silent_read_strands_no_caller() {
    let base = Sim::new(settings()).await;
    let store = Arc::new(Switchable {
        inner: base.store.clone(),
        down: Default::default(),
        silent: Default::default(),
    });
    let chain =
        Arc::new(SimulatedChain::new(&settings(), &venues(), &tokens(), store.clone(), base.clock.clone()).unwrap());
    let many: Vec<Vec<String>> = (0..20).map(|i| vec![format!("unknown-{i}")]).collect();
    let answers = futures_util::future::join_all(many.iter().map(|s| chain.signature_statuses(s))).await;
    for answer in answers {
        assert_eq!(answer.unwrap(), vec![None], "an unknown signature has no status");
    }
    store.silent.store(true, Ordering::SeqCst);
    let waiting = tokio::time::timeout(Duration::from_millis(50), chain.signature_statuses(&many[0])).await;
    assert!(waiting.is_err(), "a silent read gives no answer");
    let later = tokio::spawn({
        let chain = chain.clone();
        let signatures = many[1].clone();
        async move { chain.signature_statuses(&signatures).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    store.silent.store(false, Ordering::SeqCst);
    let later = tokio::time::timeout(Duration::from_secs(5), later)
        .await
        .expect("answered once the store answers")
        .unwrap();
    assert_eq!(later.unwrap(), vec![None]);
    assert_eq!(chain.signature_statuses(&many[2]).await.unwrap(), vec![None]);
}
