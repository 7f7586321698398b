//! The pipeline at its seams: a scripted `Venue` and a scripted
//! `ChainRpc` in tower-test's `(mock, handle)` shape, an in-Rust
//! `Strategy`, `MemoryBus`, `MemoryQueue` and a temp-dir `SqliteStore`,
//! under paused time.
//!
//! The scripted chain asks the test about the first send of each
//! signature (the answer is its fate: lands, dropped, lands with an
//! error, or the send never answers) and answers everything else itself:
//! slots advance with (virtual) time, a blockhash is valid for
//! [`VALIDITY`] slots, a status is known once the transaction landed, and
//! a send of a known signature is a rebroadcast, recorded, never landed
//! twice.
//!
//! Paused time and SQLite: tokio advances a paused clock to the next timer
//! whenever every task waits. The SQLite writer is a thread, so a store
//! write is such a wait; it is harmless here because the pipeline's timers
//! (RPC deadlines, poll delays) only decide what the chain answers, and the
//! chain is a function of the clock.

use super::*;
use crate::{
    bus::MemoryBus,
    chain::{Blockhash, ChainError, Commitment, SignatureStatus, Slot, Transaction, TxError},
    domain::{ErrorInfo, NewOrder, OrderType, Status, StrategyRef},
    queue::{MemoryQueue, MemoryRateLimit, Queue},
    store::{SqliteStore, SqliteSync},
    strategy::{PluginError, Strategy},
    venues::VenueError,
};
use async_trait::async_trait;
use std::sync::Mutex;
use swapline_abi::{Leg, RouteDecision, RouteInput, Units, VenueQuote, testing::QuoteBuilder};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

/// Reserves of every scripted pool, base units.
const DEPTH: u128 = 1_000_000_000_000;
/// The amount every order sells: 1 SOL.
const AMOUNT: u128 = 1_000_000_000;
/// Quotes stay fresh for the length of any test.
const HOUR: Duration = Duration::from_secs(3600);
/// The first backoff delay (exponential ×2, no jitter).
const FIRST_DELAY: Duration = Duration::from_millis(500);
/// The scripted chain's slot time.
const SLOT: Duration = Duration::from_millis(100);
/// Slots a blockhash stays valid on the scripted chain.
const VALIDITY: u64 = 150;
/// The scripted chain's whole validity window in time.
const WINDOW: Duration = Duration::from_millis(100 * 150);

// ---------------------------------------------------------------------------
// The scripted venue and chain: `mock(names)` gives the venues and the
// chain for the pipeline, and one `Handle` on which the test receives
// every quote request and every first send, and answers it.

/// What the test was asked.
#[derive(Debug, Clone, PartialEq)]
enum Request {
    Quote { venue: String, amount_in: u128 },
    Send { venue: String, tx: Transaction },
}

impl Request {
    fn venue(&self) -> &str {
        match self {
            Request::Quote { venue, .. } | Request::Send { venue, .. } => venue,
        }
    }

    fn ask(&self) -> Ask {
        match self {
            Request::Quote { .. } => Ask::Quote,
            Request::Send { .. } => Ask::Send,
        }
    }
}

/// The two things the test is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    Quote,
    Send,
}

/// A scripted answer.
#[derive(Debug)]
enum Answer {
    /// A quote priced on a constant-product pool of `DEPTH` / `DEPTH`.
    Quote,
    /// The transaction lands the next slot and fills at its floor.
    Fill,
    /// The transaction lands this many slots after it was sent, at its
    /// floor (late, but valid).
    LandAfter(u64),
    /// Quote: the venue fails with this error. Send: a transient error is
    /// a dropped transaction (it never lands); a permanent one lands with
    /// that error and no swap.
    Fail(VenueError),
    /// Nobody answers: the pipeline's timeout decides. A send that never
    /// answered may still be landed later by the test (`land_now`).
    Silence,
}

type Exchange = (Request, oneshot::Sender<Answer>);

/// What the scripted chain decided for a signature.
#[derive(Debug, Clone)]
struct Landing {
    slot: Slot,
    err: Option<TxError>,
    amount_out: u128,
    fee: u64,
}

/// The scripted chain's state.
#[derive(Debug, Default)]
struct Ledger {
    /// Signatures ever sent (asked about once).
    known: HashMap<String, Transaction>,
    /// Their fate, once decided: `None` = never lands.
    fates: HashMap<String, Option<Landing>>,
    /// Sends of known signatures: (signature, when).
    rebroadcasts: Vec<(String, Instant)>,
    /// Whether every call hangs.
    silent: bool,
    /// Blockhashes handed out.
    blockhashes: u32,
    /// How long each call takes; its answer is the chain at the end.
    latency: Duration,
    /// Whether every call fails at once (an unreachable node).
    down: bool,
    /// Preflight refuses every new transaction with this code.
    refuse: Option<String>,
}

/// A chain that forwards the first send of each signature to its
/// [`Handle`] and answers the rest from its [`Ledger`] and the clock.
struct ScriptedChain {
    requests: mpsc::UnboundedSender<Exchange>,
    genesis: Instant,
    ledger: Arc<Mutex<Ledger>>,
}

/// A scripted venue (quotes only).
struct ScriptedVenue {
    name: String,
    requests: mpsc::UnboundedSender<Exchange>,
}

/// The test's side of the scripted venues and chain.
struct Handle {
    requests: mpsc::UnboundedReceiver<Exchange>,
    ledger: Arc<Mutex<Ledger>>,
    genesis: Instant,
}

impl Handle {
    /// The slot now.
    fn slot(&self) -> Slot {
        slot_at(self.genesis)
    }

    /// Lands `signature` at the current slot, filling at `amount_out`; a
    /// real chain lands nothing past its `last_valid_slot`.
    fn land_now(&self, signature: &str, amount_out: u128) {
        self.land_at(signature, self.slot(), amount_out);
    }

    /// Lands `signature` in `slot`, filling at `amount_out`.
    fn land_at(&self, signature: &str, slot: Slot, amount_out: u128) {
        let mut ledger = self.ledger.lock().unwrap();
        let tx = ledger.known.get(signature).expect("a transaction the chain saw");
        assert!(slot <= tx.last_valid_slot, "slot {slot} is past its validity");
        let fee = tx.priority_fee;
        let landing = Landing {
            slot,
            err: None,
            amount_out,
            fee,
        };
        ledger.fates.insert(signature.to_owned(), Some(landing));
    }

    /// Rebroadcasts seen so far.
    fn rebroadcasts(&self) -> Vec<(String, Instant)> {
        self.ledger.lock().unwrap().rebroadcasts.clone()
    }

    /// Makes every chain call hang (or answer again).
    fn silence(&self, silent: bool) {
        self.ledger.lock().unwrap().silent = silent;
    }

    /// Makes every chain call fail at once (or answer again).
    fn down(&self, down: bool) {
        self.ledger.lock().unwrap().down = down;
    }

    /// Makes preflight refuse every new transaction with `code`.
    fn refuse(&self, code: &str) {
        self.ledger.lock().unwrap().refuse = Some(code.to_owned());
    }

    /// Makes every chain call take `latency`.
    fn latency(&self, latency: Duration) {
        self.ledger.lock().unwrap().latency = latency;
    }

    /// Blockhashes handed out so far.
    fn blockhashes(&self) -> u32 {
        self.ledger.lock().unwrap().blockhashes
    }
}

fn slot_at(genesis: Instant) -> Slot {
    (genesis.elapsed().as_millis() / SLOT.as_millis()) as Slot
}

/// Venues `names` and a chain over `ledger` (which outlives restarts, as
/// a chain does), with the test's handle on both.
fn mock(
    names: &[&str],
    ledger: Arc<Mutex<Ledger>>,
    genesis: Instant,
) -> (Vec<Arc<dyn Venue>>, Arc<dyn ChainRpc>, Handle) {
    let (sender, requests) = mpsc::unbounded_channel();
    let venues = names
        .iter()
        .map(|name| {
            Arc::new(ScriptedVenue {
                name: (*name).to_owned(),
                requests: sender.clone(),
            }) as Arc<dyn Venue>
        })
        .collect();
    let chain = ScriptedChain {
        requests: sender,
        genesis,
        ledger: ledger.clone(),
    };
    let handle = Handle {
        requests,
        ledger,
        genesis,
    };
    (venues, Arc::new(chain), handle)
}

async fn ask(requests: &mpsc::UnboundedSender<Exchange>, request: Request) -> Answer {
    let (reply, answer) = oneshot::channel();
    requests.send((request, reply)).expect("the handle outlives the venues");
    match answer.await {
        Ok(answer) => answer,
        // The handle dropped the reply: silence.
        Err(_) => std::future::pending().await,
    }
}

#[async_trait]
impl Venue for ScriptedVenue {
    fn name(&self) -> &str {
        &self.name
    }

    fn supports(&self, _token_in: &str, _token_out: &str) -> bool {
        true
    }

    async fn quote(&self, _token_in: &str, _token_out: &str, amount_in: u128) -> Result<VenueQuote, VenueError> {
        let request = Request::Quote {
            venue: self.name.clone(),
            amount_in,
        };
        match ask(&self.requests, request).await {
            Answer::Quote => Ok(QuoteBuilder::new(&self.name)
                .cpmm(DEPTH, DEPTH, 25)
                .quoted_for(amount_in)
                .build()),
            Answer::Fail(error) => Err(error),
            other => unreachable!("play() checks the kind of {other:?}"),
        }
    }
}

impl ScriptedChain {
    /// Before each answer: hang when silent, fail when down, take the
    /// configured latency.
    async fn hang_if_silent(&self) -> Result<(), ChainError> {
        let (silent, down, latency) = {
            let ledger = self.ledger.lock().unwrap();
            (ledger.silent, ledger.down, ledger.latency)
        };
        if silent {
            std::future::pending::<()>().await;
        }
        if down {
            return Err(ChainError::Unavailable("connection refused".into()));
        }
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        Ok(())
    }
}

#[async_trait]
impl ChainRpc for ScriptedChain {
    async fn slot(&self) -> Result<Slot, ChainError> {
        self.hang_if_silent().await?;
        Ok(slot_at(self.genesis))
    }

    async fn latest_blockhash(&self) -> Result<Blockhash, ChainError> {
        self.hang_if_silent().await?;
        let slot = slot_at(self.genesis);
        self.ledger.lock().unwrap().blockhashes += 1;
        Ok(Blockhash {
            hash: format!("hash-{slot}"),
            slot,
            last_valid_slot: slot + VALIDITY,
        })
    }

    async fn recent_priority_fees(&self, _slots: u64) -> Result<Vec<u64>, ChainError> {
        self.hang_if_silent().await?;
        Ok(vec![7_000, 12_000, 20_000, 50_000])
    }

    async fn send_transaction(&self, tx: &Transaction) -> Result<(), ChainError> {
        self.hang_if_silent().await?;
        let sent = slot_at(self.genesis);
        if sent > tx.last_valid_slot {
            return Err(ChainError::Rejected {
                code: "blockhash_not_found".into(),
                message: "blockhash expired".into(),
            });
        }
        {
            let mut ledger = self.ledger.lock().unwrap();
            if let Some(code) = &ledger.refuse {
                return Err(ChainError::Rejected {
                    code: code.clone(),
                    message: "refused by preflight".into(),
                });
            }
            if ledger.known.contains_key(&tx.signature) {
                ledger.rebroadcasts.push((tx.signature.clone(), Instant::now()));
                return Ok(());
            }
            ledger.known.insert(tx.signature.clone(), tx.clone());
        }
        let request = Request::Send {
            venue: tx.venue.clone(),
            tx: tx.clone(),
        };
        let landing = |after: u64, err: Option<TxError>| {
            Some(Landing {
                slot: sent + after,
                err,
                amount_out: tx.min_amount_out,
                fee: tx.priority_fee,
            })
        };
        let fate = match ask(&self.requests, request).await {
            Answer::Fill => landing(1, None),
            Answer::LandAfter(slots) => landing(slots, None),
            Answer::Fail(VenueError::Transient { .. }) => None,
            Answer::Fail(VenueError::Permanent { code, message }) => landing(1, Some(TxError { code, message })),
            other => unreachable!("play() checks the kind of {other:?}"),
        };
        self.ledger.lock().unwrap().fates.insert(tx.signature.clone(), fate);
        Ok(())
    }

    async fn signature_statuses(&self, signatures: &[String]) -> Result<Vec<Option<SignatureStatus>>, ChainError> {
        self.hang_if_silent().await?;
        let now = slot_at(self.genesis);
        let ledger = self.ledger.lock().unwrap();
        Ok(signatures
            .iter()
            .map(
                |signature| match (ledger.fates.get(signature), ledger.known.get(signature)) {
                    // Processed in its slot, confirmed from the next; nothing
                    // lands past its validity.
                    (Some(Some(landing)), Some(tx)) if landing.slot <= now && landing.slot <= tx.last_valid_slot => {
                        Some(SignatureStatus {
                            slot: landing.slot,
                            commitment: if now > landing.slot {
                                Commitment::Confirmed
                            } else {
                                Commitment::Processed
                            },
                            err: landing.err.clone(),
                            amount_out: landing.err.is_none().then_some(landing.amount_out),
                            priority_fee: landing.fee,
                        })
                    }
                    _ => None,
                },
            )
            .collect())
    }
}

/// One scripted answer: which venue, to which request, with what.
#[derive(Debug)]
struct Step {
    venue: &'static str,
    ask: Ask,
    answer: Answer,
}

fn quote(venue: &'static str) -> Step {
    Step {
        venue,
        ask: Ask::Quote,
        answer: Answer::Quote,
    }
}

fn no_quote(venue: &'static str) -> Step {
    Step {
        venue,
        ask: Ask::Quote,
        answer: Answer::Fail(VenueError::transient("unreachable", "node down")),
    }
}

/// The transaction lands the next slot.
fn fill(venue: &'static str) -> Step {
    Step {
        venue,
        ask: Ask::Send,
        answer: Answer::Fill,
    }
}

/// The transaction lands `slots` after it was sent.
fn late(venue: &'static str, slots: u64) -> Step {
    Step {
        venue,
        ask: Ask::Send,
        answer: Answer::LandAfter(slots),
    }
}

/// The transaction is dropped: it never lands, and expires.
fn dropped(venue: &'static str) -> Step {
    Step {
        venue,
        ask: Ask::Send,
        answer: Answer::Fail(VenueError::transient("dropped", "dropped by the leader")),
    }
}

/// The transaction lands with a slippage error (no swap).
fn slipped(venue: &'static str) -> Step {
    Step {
        venue,
        ask: Ask::Send,
        answer: Answer::Fail(VenueError::permanent("slippage_exceeded", "price moved past the floor")),
    }
}

/// The send never answers.
fn silent(venue: &'static str) -> Step {
    Step {
        venue,
        ask: Ask::Send,
        answer: Answer::Silence,
    }
}

/// Runs `process(job)` while answering each venue request with the first
/// unused step for that venue and request kind. Returns the outcome and
/// the requests in arrival order. Fails the test on a request the script
/// does not cover, or on steps left unused.
async fn play(pipeline: &Pipeline, job: &Job, handle: &mut Handle, mut script: Vec<Step>) -> (Outcome, Vec<Request>) {
    let process = pipeline.process(job);
    tokio::pin!(process);
    let mut seen = Vec::new();
    loop {
        tokio::select! {
            outcome = &mut process => {
                assert!(script.is_empty(), "steps never asked for: {script:?}");
                return (outcome.expect("the store works"), seen);
            }
            Some((request, reply)) = handle.requests.recv() => {
                let index = script
                    .iter()
                    .position(|s| s.venue == request.venue() && s.ask == request.ask())
                    .unwrap_or_else(|| panic!("unscripted request {request:?}"));
                let step = script.remove(index);
                seen.push(request);
                match step.answer {
                    Answer::Silence => drop(reply),
                    answer => reply.send(answer).expect("the venue waits for its answer"),
                }
            }
        }
    }
}

/// The first sends of transactions: (venue, signature).
fn sends(requests: &[Request]) -> Vec<(String, String)> {
    requests
        .iter()
        .filter_map(|r| match r {
            Request::Send { venue, tx } => Some((venue.clone(), tx.signature.clone())),
            Request::Quote { .. } => None,
        })
        .collect()
}

/// `(attempt, signatures)` of every `submitted` event.
fn submissions(events: &[Event]) -> Vec<(u32, Vec<String>)> {
    events
        .iter()
        .filter_map(|e| match &e.data {
            EventData::Submitted {
                attempt, signatures, ..
            } => Some((*attempt, signatures.clone())),
            _ => None,
        })
        .collect()
}

/// Quote requests for the whole order amount.
fn quote_requests(requests: &[Request]) -> usize {
    requests
        .iter()
        .filter(|r| matches!(r, Request::Quote { amount_in, .. } if *amount_in == AMOUNT))
        .count()
}

// ---------------------------------------------------------------------------
// A trivial strategy and the harness.

/// Splits the order evenly across every quoted venue, in quote order.
struct EvenSplit(StrategyRef);

#[async_trait]
impl Strategy for EvenSplit {
    fn id(&self) -> &StrategyRef {
        &self.0
    }

    async fn route(&self, input: &RouteInput) -> Result<RouteDecision, PluginError> {
        let (amount, n) = (input.order.amount_in.0, input.quotes.len() as u128);
        let share = amount / n.max(1);
        let legs = input
            .quotes
            .iter()
            .enumerate()
            .map(|(i, q)| Leg {
                venue: q.venue.clone(),
                amount_in: Units(if i as u128 + 1 == n {
                    amount - share * (n - 1)
                } else {
                    share
                }),
                min_amount_out: None,
            })
            .collect();
        Ok(RouteDecision {
            legs,
            reason: Some("even split".into()),
        })
    }
}

/// Landing on the scripted chain: polls from one slot to four, a
/// rebroadcast a second, fees between 5,000 and 40,000.
fn landing() -> ChainConfig {
    ChainConfig {
        poll_initial: crate::domain::Dur(SLOT),
        poll_max: crate::domain::Dur(4 * SLOT),
        rebroadcast_every: crate::domain::Dur(Duration::from_secs(1)),
        min_priority_fee: 5_000,
        max_priority_fee: 40_000,
        ..ChainConfig::default()
    }
}

fn stages() -> HashMap<String, Stage> {
    stages_with(Duration::from_secs(2))
}

/// The stages, with a per-leg `execute_timeout`.
fn stages_with(execute_timeout: Duration) -> HashMap<String, Stage> {
    let strategy = EvenSplit(StrategyRef {
        name: "even-split".into(),
        sha256: "test".into(),
    });
    let chain = Chain::new(vec![Arc::new(strategy)], Default::default()).expect("no params to check");
    let stage = Stage {
        chain,
        quote_timeout: Duration::from_secs(1),
        execute_timeout,
    };
    HashMap::from([("market".to_owned(), stage)])
}

/// A store, a bus and a queue that outlive any pipeline built over them
/// (a restart builds a new pipeline over the same store).
struct Harness {
    _dir: tempfile::TempDir,
    /// The node's bus stream, kept open so publishing succeeds.
    _bus_stream: crate::bus::Stream,
    store: Arc<dyn Store>,
    recorder: Recorder,
    queue: MemoryQueue,
    /// The scripted chain's state and clock, shared by every pipeline of
    /// the test (a restart keeps the chain).
    chain: Arc<Mutex<Ledger>>,
    genesis: Instant,
}

impl Harness {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.db");
        let store = SqliteStore::open(&path, SqliteSync::Normal, Duration::from_secs(5)).unwrap();
        store.migrate().await.unwrap();
        let store: Arc<dyn Store> = Arc::new(store);
        let (bus, stream) = MemoryBus::new(64);
        Harness {
            _dir: dir,
            _bus_stream: stream,
            recorder: Recorder::new(store.clone(), Arc::new(bus)),
            store,
            queue: MemoryQueue::new(Duration::from_secs(30)),
            chain: Arc::default(),
            genesis: Instant::now(),
        }
    }

    /// A pipeline over scripted venues `names`, retrying up to
    /// `max_attempts` with a 500 ms ×2 backoff.
    fn pipeline(&self, names: &[&str], max_attempts: u32, requote_after: Duration) -> (Pipeline, Handle) {
        self.pipeline_staged(names, max_attempts, requote_after, stages())
    }

    /// As `pipeline`, with these stages.
    fn pipeline_staged(
        &self,
        names: &[&str],
        max_attempts: u32,
        requote_after: Duration,
        stages: HashMap<String, Stage>,
    ) -> (Pipeline, Handle) {
        let (venues, chain, handle) = mock(names, self.chain.clone(), self.genesis);
        let backoff = Backoff::new(
            BackoffKind::Exponential,
            FIRST_DELAY,
            2.0,
            Duration::from_secs(10),
            JitterKind::None,
        )
        .unwrap();
        let settings = PipelineSettings {
            retry: RetryPolicy { max_attempts, backoff },
            requote_after,
            landing: landing(),
        };
        let tokens = TokenRegistry::new([
            (
                "SOL".into(),
                "So11111111111111111111111111111111111111112".into(),
                9,
                "1000000".into(),
            ),
            (
                "USDC".into(),
                "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v".into(),
                6,
                "1000000".into(),
            ),
        ])
        .unwrap();
        let pipeline = Pipeline::new(settings, self.recorder.clone(), venues, chain, stages, Arc::new(tokens));
        (pipeline, handle)
    }

    /// Stores a SOL → USDC order with its `pending` event and enqueues its
    /// job, as intake does.
    async fn order(&self) -> Job {
        let id = OrderId::new();
        let order = NewOrder {
            id,
            job_id: format!("job-{id}"),
            order_type: OrderType::Market,
            token_in: "SOL".into(),
            token_out: "USDC".into(),
            amount_in: AMOUNT,
            slippage_bps: 50,
            owner: None,
            expires_at: None,
            retry_of: None,
        };
        let pending = EventData::Pending {
            token_in: "SOL".into(),
            token_out: "USDC".into(),
            amount: "1".into(),
            slippage: 0.5,
        };
        self.recorder
            .create(&order, event(pending, OrderPatch::default()))
            .await
            .unwrap();
        let job = Job {
            id: order.job_id,
            order_id: id,
        };
        self.queue.enqueue(job.clone()).await.unwrap();
        job
    }

    /// Claims the job (waiting for it as long as it takes), plays one
    /// `process` with `script`, and settles the job as the worker does.
    /// Returns how long the job was waited for, the outcome and the
    /// venue requests.
    async fn round(
        &self,
        pipeline: &Pipeline,
        handle: &mut Handle,
        script: Vec<Step>,
    ) -> (Duration, Outcome, Vec<Request>) {
        let asked = Instant::now();
        let lease = self.queue.claim(HOUR).await.unwrap().expect("the job comes back");
        let waited = asked.elapsed();
        let (outcome, requests) = play(pipeline, &lease.job, handle, script).await;
        match outcome {
            Outcome::Finished => self.queue.ack(&lease).await.unwrap(),
            Outcome::RetryAfter(delay) => self.queue.retry_after(&lease, delay).await.unwrap(),
        }
        (waited, outcome, requests)
    }

    async fn events(&self, id: OrderId) -> Vec<Event> {
        let events = self.store.events(id, 0).await.unwrap();
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        let gapless: Vec<u64> = (1..=events.len() as u64).collect();
        assert_eq!(seqs, gapless, "seqs run from 1 without a gap");
        events
    }

    async fn stored(&self, id: OrderId) -> Order {
        self.store.order(id).await.unwrap().expect("the order exists")
    }
}

fn event(data: EventData, patch: OrderPatch) -> NewEvent {
    NewEvent {
        message: "crafted".into(),
        progress: 0,
        data,
        patch,
        after_seq: None,
    }
}

fn kinds(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.data.kind().as_str()).collect()
}

/// The codes of `execution-failed` and `failed` events, in order.
fn codes(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match &e.data {
            EventData::ExecutionFailed { code, .. } | EventData::Failed { code, .. } => Some(code.as_str()),
            _ => None,
        })
        .collect()
}

/// `pending`, quoting, quoted, routed, built.
const ROUTED: [&str; 5] = ["pending", "routing", "routing", "building", "building"];

fn after_routing(rest: &[&'static str]) -> Vec<&'static str> {
    [&ROUTED[..], rest].concat()
}

// ---------------------------------------------------------------------------
// The tests.

struct AttemptCase {
    name: &'static str,
    max_attempts: u32,
    /// One script per `process` call.
    rounds: Vec<Vec<Step>>,
    outcomes: Vec<Outcome>,
    kinds: Vec<&'static str>,
    codes: &'static [&'static str],
    /// Attempt of each `submitted` event.
    attempts: &'static [u32],
    status: Status,
    /// How the final `failed` message ends, if the order failed.
    failed_suffix: Option<&'static str>,
}

#[tokio::test(start_paused = true)]
async fn attempts_end_confirmed_failed_or_retried_after_the_backoff() {
    let retry = Outcome::RetryAfter;
    let cases = vec![
        AttemptCase {
            name: "dropped: expired, then signed again and confirmed",
            max_attempts: 3,
            rounds: vec![vec![quote("raydium"), dropped("raydium")], vec![fill("raydium")]],
            outcomes: vec![retry(FIRST_DELAY), Outcome::Finished],
            kinds: after_routing(&[
                "submitted",
                "execution-failed",
                "retry-pending",
                "submitted",
                "confirmed",
            ]),
            codes: &["blockhash_expired"],
            attempts: &[1, 2],
            status: Status::Confirmed,
            failed_suffix: None,
        },
        AttemptCase {
            name: "a send that never answers is polled until it expires",
            max_attempts: 3,
            rounds: vec![vec![quote("raydium"), silent("raydium")], vec![fill("raydium")]],
            outcomes: vec![retry(FIRST_DELAY), Outcome::Finished],
            kinds: after_routing(&[
                "submitted",
                "execution-failed",
                "retry-pending",
                "submitted",
                "confirmed",
            ]),
            codes: &["blockhash_expired"],
            attempts: &[1, 2],
            status: Status::Confirmed,
            failed_suffix: None,
        },
        AttemptCase {
            name: "landed with an error fails at once with its code",
            max_attempts: 3,
            rounds: vec![vec![quote("raydium"), slipped("raydium")]],
            outcomes: vec![Outcome::Finished],
            kinds: after_routing(&["submitted", "failed"]),
            codes: &["slippage_exceeded"],
            attempts: &[1],
            status: Status::Failed,
            failed_suffix: Some("price moved past the floor"),
        },
        AttemptCase {
            name: "retries exhausted",
            max_attempts: 3,
            rounds: vec![
                vec![quote("raydium"), dropped("raydium")],
                vec![dropped("raydium")],
                vec![dropped("raydium")],
            ],
            outcomes: vec![retry(FIRST_DELAY), retry(2 * FIRST_DELAY), Outcome::Finished],
            kinds: after_routing(&[
                "submitted",
                "execution-failed",
                "retry-pending",
                "submitted",
                "execution-failed",
                "retry-pending",
                "submitted",
                "execution-failed",
                "failed",
            ]),
            codes: &[
                "blockhash_expired",
                "blockhash_expired",
                "blockhash_expired",
                "blockhash_expired",
            ],
            attempts: &[1, 2, 3],
            status: Status::Failed,
            failed_suffix: Some("(after 3 attempts)"),
        },
        AttemptCase {
            name: "no venue quotes",
            max_attempts: 3,
            rounds: vec![vec![no_quote("raydium")]],
            outcomes: vec![Outcome::Finished],
            kinds: vec!["pending", "routing", "failed"],
            codes: &["no_quotes"],
            attempts: &[],
            status: Status::Failed,
            failed_suffix: Some("none of 1 venues quoted SOL → USDC"),
        },
    ];
    for case in cases {
        let name = case.name;
        let h = Harness::new().await;
        let (pipeline, mut handle) = h.pipeline(&["raydium"], case.max_attempts, HOUR);
        let job = h.order().await;
        let (mut waits, mut outcomes, mut requests) = (Vec::new(), Vec::new(), Vec::new());
        for script in case.rounds {
            let (waited, outcome, seen) = h.round(&pipeline, &mut handle, script).await;
            waits.push(waited);
            outcomes.push(outcome);
            requests.extend(seen);
        }
        assert_eq!(outcomes, case.outcomes, "{name}");
        // Each retry came back after exactly its backoff, in virtual time.
        let delays: Vec<Duration> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::RetryAfter(delay) => Some(*delay),
                Outcome::Finished => None,
            })
            .collect();
        assert_eq!(waits[0], Duration::ZERO, "{name}");
        assert_eq!(waits[1..], delays[..], "{name}");

        let events = h.events(job.order_id).await;
        assert_eq!(kinds(&events), case.kinds, "{name}");
        assert_eq!(codes(&events), case.codes, "{name}");
        let submitted = submissions(&events);
        let attempts: Vec<u32> = submitted.iter().map(|(attempt, _)| *attempt).collect();
        assert_eq!(attempts, case.attempts, "{name}");
        let sent = sends(&requests);
        assert_eq!(sent.len(), case.attempts.len(), "{name}: one transaction per attempt");
        let distinct: std::collections::HashSet<&String> = sent.iter().map(|(_, sig)| sig).collect();
        assert_eq!(
            distinct.len(),
            sent.len(),
            "{name}: each attempt after an expiry signs anew"
        );
        for ((_, signatures), (_, signature)) in submitted.iter().zip(&sent) {
            assert_eq!(signatures, &vec![signature.clone()], "{name}: recorded, then sent");
        }
        assert_eq!(quote_requests(&requests), 1, "{name}: fresh quotes are fetched once");

        let order = h.stored(job.order_id).await;
        assert_eq!(order.status, case.status, "{name}");
        assert_eq!(order.attempts, case.attempts.len() as u32, "{name}");
        match (&events.last().unwrap().data, case.failed_suffix) {
            (
                EventData::Failed {
                    error, total_attempts, ..
                },
                Some(suffix),
            ) => {
                assert!(error.ends_with(suffix), "{name}: {error}");
                assert_eq!(*total_attempts, order.attempts, "{name}");
            }
            (
                EventData::Confirmed {
                    tx_hash,
                    slot,
                    priority_fee,
                    ..
                },
                None,
            ) => {
                assert_eq!(*tx_hash, sent.last().unwrap().1, "{name}: the landed signature");
                let route = order.route.as_ref().unwrap();
                assert_eq!(Some(*slot), route.legs[0].landed_slot, "{name}");
                // 75th percentile of 7k, 12k, 20k, 50k is 20k, within the cap.
                assert_eq!(*priority_fee, 20_000, "{name}");
            }
            (other, suffix) => panic!("{name}: ended with {other:?}, expected failed {suffix:?}"),
        }
    }
}

/// The rule the whole stage exists for: a leg is signed again only once
/// the slot is past its last transaction's `last_valid_slot` and that
/// transaction has not landed; until then "unknown" is only unknown.
#[tokio::test(start_paused = true)]
async fn unknown_is_not_failed_only_expiry_allows_a_new_signature() {
    struct Case {
        name: &'static str,
        first: Step,
        /// Slots after sending at which the answer came.
        lands_after: Option<u64>,
    }
    let cases = [
        Case {
            name: "lands after many unknown answers",
            first: late("raydium", 40),
            lands_after: Some(40),
        },
        Case {
            name: "lands in its last valid slot",
            first: late("raydium", VALIDITY),
            lands_after: Some(VALIDITY),
        },
        Case {
            name: "never lands: expires, then a new signature",
            first: dropped("raydium"),
            lands_after: None,
        },
    ];
    for case in cases {
        let name = case.name;
        let h = Harness::new().await;
        let (pipeline, mut handle) = h.pipeline(&["raydium"], 3, HOUR);
        let job = h.order().await;
        let (outcome, requests) = play(&pipeline, &job, &mut handle, vec![quote("raydium"), case.first]).await;
        let first = match &requests[1] {
            Request::Send { tx, .. } => tx.clone(),
            other => panic!("{name}: {other:?}"),
        };
        let events = h.events(job.order_id).await;
        match case.lands_after {
            Some(_) => {
                assert_eq!(outcome, Outcome::Finished, "{name}");
                assert_eq!(kinds(&events), after_routing(&["submitted", "confirmed"]), "{name}");
                assert!(
                    handle.rebroadcasts().iter().all(|(sig, _)| *sig == first.signature),
                    "{name}: only the one signature was ever sent"
                );
                let order = h.stored(job.order_id).await;
                assert_eq!(order.tx_hash.as_deref(), Some(first.signature.as_str()), "{name}");
            }
            None => {
                assert_eq!(outcome, Outcome::RetryAfter(FIRST_DELAY), "{name}");
                assert_eq!(codes(&events), ["blockhash_expired"], "{name}: expiry is transient");
                assert!(
                    handle.slot() > first.last_valid_slot,
                    "{name}: given up only past slot {}",
                    first.last_valid_slot
                );
                // Attempt 2 signs a new transaction, with a later blockhash.
                let (outcome, requests) = play(&pipeline, &job, &mut handle, vec![fill("raydium")]).await;
                assert_eq!(outcome, Outcome::Finished, "{name}");
                let second = match &requests[0] {
                    Request::Send { tx, .. } => tx.clone(),
                    other => panic!("{name}: {other:?}"),
                };
                assert_ne!(second.signature, first.signature, "{name}");
                assert!(second.last_valid_slot > first.last_valid_slot + VALIDITY, "{name}");
            }
        }
        // Rebroadcasts went out while it was unknown, at most one a second.
        let rebroadcasts = handle.rebroadcasts();
        assert!(!rebroadcasts.is_empty(), "{name}: rebroadcast while unknown");
        assert!(
            rebroadcasts
                .windows(2)
                .all(|w| w[1].1 - w[0].1 >= Duration::from_secs(1)),
            "{name}"
        );
    }
}

/// A chain that stops answering (no error, no reset) while a transaction
/// is out: nothing is decided, nothing is signed again, the order does not
/// fail; once the chain answers again, the same signature confirms.
#[tokio::test(start_paused = true)]
async fn a_chain_that_goes_quiet_never_gets_a_second_signature() {
    let h = Harness::new().await;
    let (pipeline, mut handle) = h.pipeline(&["raydium"], 3, HOUR);
    let job = h.order().await;
    let process = pipeline.process(&job);
    tokio::pin!(process);
    let mut first = None;
    loop {
        tokio::select! {
            _ = &mut process, if first.is_none() => panic!("finished before sending"),
            Some((request, reply)) = handle.requests.recv() => match request {
                Request::Quote { .. } => reply.send(Answer::Quote).unwrap(),
                Request::Send { tx, .. } => {
                    // Accepted, but the chain goes quiet before it lands.
                    handle.silence(true);
                    drop(reply);
                    first = Some(tx);
                    break;
                }
            },
        }
    }
    let first = first.unwrap();
    // Half the blockhash's validity in silence: still undecided (no store
    // write is due meanwhile, so the paused clock is safe here). Meanwhile
    // the transaction lands, unseen.
    let run = tokio::time::timeout(WINDOW / 2, &mut process).await;
    assert!(
        run.is_err(),
        "a run with a transaction out waits for the chain: {run:?}"
    );
    handle.land_now(&first.signature, 42);
    // Silence on, far past its last valid slot: still nothing decided.
    let run = tokio::time::timeout(2 * WINDOW, &mut process).await;
    assert!(run.is_err(), "{run:?}");
    assert!(handle.slot() > first.last_valid_slot);
    let events = h.events(job.order_id).await;
    assert_eq!(kinds(&events), after_routing(&["submitted"]));

    // The chain answers again: past validity, but landed, so confirmed.
    handle.silence(false);
    // No timeout around this: a paused clock would jump to it while the
    // SQLite writer thread stores `confirmed` (module doc).
    assert_eq!(process.await.unwrap(), Outcome::Finished);
    let order = h.stored(job.order_id).await;
    assert_eq!(order.status, Status::Confirmed);
    assert_eq!(order.tx_hash.as_deref(), Some(first.signature.as_str()));
    assert_eq!(order.amount_out, Some(42));
    assert_eq!(handle.blockhashes(), 1, "signed once");
    assert!(handle.requests.try_recv().is_err(), "no second transaction was sent");
}

/// Runs `job` until its transaction is sent, then drops the run (a crash
/// before the send is answered); the chain lands that transaction
/// `land_after` slots later, or never.
async fn crash_at_send(h: &Harness, job: &Job, land_after: Option<u64>) -> Transaction {
    let (pipeline, mut handle) = h.pipeline(&["raydium"], 3, HOUR);
    let process = pipeline.process(job);
    tokio::pin!(process);
    loop {
        tokio::select! {
            _ = &mut process => panic!("the run must not finish before the crash"),
            Some((request, reply)) = handle.requests.recv() => match request {
                Request::Quote { .. } => reply.send(Answer::Quote).unwrap(),
                Request::Send { tx, .. } => {
                    drop(reply);
                    if let Some(slots) = land_after {
                        handle.land_at(&tx.signature, handle.slot() + slots, tx.min_amount_out);
                    }
                    return tx;
                }
            },
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_crash_after_submitted_resumes_polling_the_same_signature() {
    let h = Harness::new().await;
    let job = h.order().await;
    let first = crash_at_send(&h, &job, Some(1)).await;
    let crashed = h.stored(job.order_id).await;
    assert_eq!((crashed.last_kind, crashed.attempts), (EventKind::Submitted, 1));
    let recorded = crashed.route.as_ref().unwrap().legs[0].transaction.clone().unwrap();
    assert_eq!(recorded.signature, first.signature, "recorded before it was sent");

    // A restart (with quotes that count as stale) keeps the route, polls
    // the recorded signature and finds it landed: nothing new is sent.
    let (restarted, mut handle) = h.pipeline(&["raydium"], 3, Duration::ZERO);
    let (outcome, requests) = play(&restarted, &job, &mut handle, vec![]).await;
    assert_eq!(outcome, Outcome::Finished);
    assert!(requests.is_empty(), "no quote, no new transaction: {requests:?}");

    let events = h.events(job.order_id).await;
    assert_eq!(
        kinds(&events),
        after_routing(&["submitted", "confirmed"]),
        "a resumed run records nothing new before the outcome"
    );
    assert_eq!(submissions(&events), [(1, vec![first.signature.clone()])]);
    assert_eq!(
        handle.blockhashes(),
        1,
        "signed once, before the crash; nothing on resume"
    );
    let order = h.stored(job.order_id).await;
    assert_eq!((order.status, order.attempts), (Status::Confirmed, 1));
    assert_eq!(order.route.map(|r| r.version), Some(1));
}

/// A crash after the send, and a restart only after that transaction's
/// blockhash expired: the attempt is recorded as failed
/// (`blockhash_expired`), and only the next attempt signs again.
#[tokio::test(start_paused = true)]
async fn a_restart_after_the_blockhash_expired_fails_that_attempt_then_signs_anew() {
    let h = Harness::new().await;
    let job = h.order().await;
    let first = crash_at_send(&h, &job, None).await;
    let (restarted, mut handle) = h.pipeline(&["raydium"], 3, HOUR);
    tokio::time::advance(WINDOW + 2 * SLOT).await;
    assert!(handle.slot() > first.last_valid_slot);
    let (outcome, requests) = play(&restarted, &job, &mut handle, vec![]).await;
    assert_eq!(outcome, Outcome::RetryAfter(FIRST_DELAY));
    assert!(requests.is_empty(), "nothing signed or sent in the expired attempt");
    let (outcome, requests) = play(&restarted, &job, &mut handle, vec![fill("raydium")]).await;
    assert_eq!(outcome, Outcome::Finished);
    let sent = sends(&requests);
    assert_eq!(sent.len(), 1);
    assert_ne!(sent[0].1, first.signature);

    let events = h.events(job.order_id).await;
    assert_eq!(
        kinds(&events),
        after_routing(&[
            "submitted",
            "execution-failed",
            "retry-pending",
            "submitted",
            "confirmed"
        ])
    );
    assert_eq!(codes(&events), ["blockhash_expired"]);
    let attempts: Vec<u32> = submissions(&events).iter().map(|(a, _)| *a).collect();
    assert_eq!(attempts, [1, 2]);
}

/// A chain that cannot be reached before anything was sent: each attempt
/// fails (`chain_unavailable`) and counts, so the order fails when
/// attempts run out rather than retrying forever.
#[tokio::test(start_paused = true)]
async fn an_unreachable_chain_before_sending_uses_up_attempts() {
    let h = Harness::new().await;
    let (pipeline, mut handle) = h.pipeline(&["raydium"], 2, HOUR);
    let job = h.order().await;
    handle.down(true);
    let (_, outcome, _) = h.round(&pipeline, &mut handle, vec![quote("raydium")]).await;
    assert_eq!(outcome, Outcome::RetryAfter(FIRST_DELAY));
    assert_eq!(h.stored(job.order_id).await.attempts, 1);
    let (_, outcome, requests) = h.round(&pipeline, &mut handle, vec![]).await;
    assert_eq!(outcome, Outcome::Finished);
    assert!(sends(&requests).is_empty());
    let events = h.events(job.order_id).await;
    assert_eq!(
        codes(&events),
        ["chain_unavailable", "chain_unavailable", "chain_unavailable"]
    );
    let order = h.stored(job.order_id).await;
    assert_eq!((order.status, order.attempts), (Status::Failed, 2));
}

/// Two runs of one order at once (a lease lost while its run went on):
/// both decide from the same read that the leg needs a new transaction,
/// but only the run whose `submitted` record is stored first sends; the
/// other finds the order moved on and backs off without sending.
#[tokio::test(start_paused = true)]
async fn two_runs_of_one_order_never_both_send() {
    let h = Harness::new().await;
    let (pipeline, mut handle) = h.pipeline(&["raydium"], 3, HOUR);
    let job = h.order().await;
    let (_, outcome, _) = h
        .round(&pipeline, &mut handle, vec![quote("raydium"), dropped("raydium")])
        .await;
    assert_eq!(outcome, Outcome::RetryAfter(FIRST_DELAY));
    // Run B's read, taken before run A writes anything.
    let stale = h.stored(job.order_id).await;
    let a = pipeline.process(&job);
    tokio::pin!(a);
    // Route kept (fresh quotes): the first request is A's send.
    let sent = tokio::select! {
        _ = &mut a => panic!("A finishes only after its send"),
        Some((request, reply)) = handle.requests.recv() => match request {
            Request::Send { tx, .. } => {
                reply.send(Answer::Fill).unwrap();
                tx
            }
            other => panic!("{other:?}"),
        },
    };
    // A has recorded and sent attempt 2; B decides from the stale read.
    let b = pipeline.run(&stale).await.unwrap();
    assert_eq!(b, Outcome::RetryAfter(landing().poll_max.0), "B backs off");
    assert!(handle.requests.try_recv().is_err(), "B sent nothing");
    assert_eq!(a.await.unwrap(), Outcome::Finished);
    let order = h.stored(job.order_id).await;
    assert_eq!(order.status, Status::Confirmed);
    assert_eq!(order.tx_hash.as_deref(), Some(sent.signature.as_str()));
    let events = h.events(job.order_id).await;
    assert_eq!(submissions(&events).len(), 2, "attempt 1 and A's attempt 2 only");
}

/// A venue removed from the config while its leg's transaction is out:
/// the order waits for that transaction, and confirms when it lands.
#[tokio::test(start_paused = true)]
async fn a_removed_venue_with_a_transaction_out_is_settled_not_failed() {
    let h = Harness::new().await;
    let job = h.order().await;
    let first = crash_at_send(&h, &job, Some(20)).await;
    // Restarted without raydium: the transaction out there is polled until
    // it lands, and the order confirms.
    let (restarted, mut handle) = h.pipeline(&["orca"], 3, HOUR);
    let (outcome, requests) = play(&restarted, &job, &mut handle, vec![]).await;
    assert_eq!(outcome, Outcome::Finished);
    assert!(requests.is_empty(), "{requests:?}");
    let order = h.stored(job.order_id).await;
    assert_eq!(order.status, Status::Confirmed, "{:?}", order.last_error);
    assert_eq!(order.tx_hash.as_deref(), Some(first.signature.as_str()));
}

/// A send the node refuses for good (not forwarded) fails the order with
/// the node's code; a refused blockhash is an expiry.
#[tokio::test(start_paused = true)]
async fn refused_sends_fail_or_expire_the_attempt() {
    for (name, code, expected) in [
        ("refused for good", "invalid", vec!["invalid"]),
        ("blockhash unknown", "blockhash_not_found", vec!["blockhash_expired"]),
    ] {
        let h = Harness::new().await;
        let (pipeline, mut handle) = h.pipeline(&["raydium"], 1, HOUR);
        let job = h.order().await;
        handle.refuse(code);
        let (outcome, requests) = play(&pipeline, &job, &mut handle, vec![quote("raydium")]).await;
        assert_eq!(outcome, Outcome::Finished, "{name}");
        assert!(sends(&requests).is_empty(), "{name}");
        let events = h.events(job.order_id).await;
        let codes = codes(&events);
        assert_eq!(codes.last().copied(), Some(expected[0]), "{name}: {codes:?}");
        assert_eq!(h.stored(job.order_id).await.status, Status::Failed, "{name}");
    }
}

/// Every chain call takes two slots, and the transaction lands in its
/// last valid slot: read slot-first, its status is seen before the slot
/// past it, so it confirms and is never signed again.
#[tokio::test(start_paused = true)]
async fn slow_answers_never_turn_a_landing_into_an_expiry() {
    let h = Harness::new().await;
    let (pipeline, mut handle) = h.pipeline(&["raydium"], 3, HOUR);
    let job = h.order().await;
    handle.latency(2 * SLOT);
    let (outcome, requests) = play(
        &pipeline,
        &job,
        &mut handle,
        vec![quote("raydium"), late("raydium", VALIDITY - 2)],
    )
    .await;
    assert_eq!(outcome, Outcome::Finished);
    assert_eq!(sends(&requests).len(), 1);
    assert_eq!(handle.blockhashes(), 1);
    assert_eq!(h.stored(job.order_id).await.status, Status::Confirmed);
}

struct RequoteCase {
    name: &'static str,
    venues: &'static [&'static str],
    requote_after: Duration,
    first: Vec<Step>,
    second: Vec<Step>,
    /// Quote requests the retry made.
    requotes: usize,
    /// Route version the order ends with.
    version: u32,
}

#[tokio::test(start_paused = true)]
async fn stale_quotes_reroute_a_retry_unless_a_leg_landed() {
    let cases = vec![
        RequoteCase {
            name: "fresh quotes keep the route",
            venues: &["raydium"],
            requote_after: HOUR,
            first: vec![quote("raydium"), dropped("raydium")],
            second: vec![fill("raydium")],
            requotes: 0,
            version: 1,
        },
        RequoteCase {
            name: "stale quotes route again",
            venues: &["raydium"],
            requote_after: Duration::ZERO,
            first: vec![quote("raydium"), dropped("raydium")],
            second: vec![quote("raydium"), fill("raydium")],
            requotes: 1,
            version: 2,
        },
        RequoteCase {
            name: "stale quotes, but a leg landed: the route stays",
            venues: &["raydium", "orca"],
            requote_after: Duration::ZERO,
            first: vec![quote("raydium"), quote("orca"), fill("raydium"), dropped("orca")],
            second: vec![fill("orca")],
            requotes: 0,
            version: 1,
        },
    ];
    for case in cases {
        let name = case.name;
        let h = Harness::new().await;
        let (pipeline, mut handle) = h.pipeline(case.venues, 3, case.requote_after);
        let job = h.order().await;
        let (_, outcome, first) = h.round(&pipeline, &mut handle, case.first).await;
        assert_eq!(outcome, Outcome::RetryAfter(FIRST_DELAY), "{name}");
        // Wall-clock time: quote age is measured on the system clock.
        std::thread::sleep(Duration::from_millis(2));
        let (_, outcome, second) = h.round(&pipeline, &mut handle, case.second).await;
        assert_eq!(outcome, Outcome::Finished, "{name}");
        assert_eq!(quote_requests(&second), case.requotes, "{name}");

        let (first, second) = (sends(&first), sends(&second));
        let retried = second.last().expect("the retry sends");
        let failed = first.last().expect("the first attempt sent");
        assert_eq!(retried.0, failed.0, "{name}: the expired leg's venue runs again");
        assert_ne!(retried.1, failed.1, "{name}: an expired transaction is signed anew");
        let filled_before: Vec<&String> = first[..first.len() - 1].iter().map(|e| &e.0).collect();
        assert!(
            second.iter().all(|e| !filled_before.contains(&&e.0)),
            "{name}: a landed leg is never sent again"
        );

        let order = h.stored(job.order_id).await;
        assert_eq!(order.status, Status::Confirmed, "{name}");
        let route = order.route.expect("a confirmed order has its route");
        assert_eq!(route.version, case.version, "{name}");
        assert!(route.legs.iter().all(|l| l.filled_out.is_some()), "{name}");
        assert_eq!(route.legs.len(), case.venues.len(), "{name}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_verdict_owed_after_the_last_attempt_is_given_on_resume() {
    let congested = ErrorInfo {
        code: "congested".into(),
        message: "the network is congested".into(),
    };
    let cases = [
        (
            "the last error stands",
            Some(congested),
            "congested",
            "the network is congested (after 2 attempts)",
        ),
        (
            "no error on record",
            None,
            "retries_exhausted",
            "no attempts left (after 2 attempts)",
        ),
    ];
    for (name, last_error, code, message) in cases {
        let h = Harness::new().await;
        let job = h.order().await;
        // The process stopped after attempt 2 (the last) failed, before its
        // verdict.
        let submitted = EventData::Submitted {
            attempt: 2,
            max_attempts: 2,
            signatures: vec![],
            signature: String::new(),
            blockhash: String::new(),
            last_valid_slot: 0,
            priority_fee: 0,
        };
        let patch = OrderPatch {
            attempts: Some(2),
            last_error,
            ..OrderPatch::default()
        };
        h.store
            .append_event(job.order_id, event(submitted, patch))
            .await
            .unwrap();
        let pending = EventData::RetryPending {
            delay: 1_000,
            next_attempt: 3,
        };
        h.store
            .append_event(job.order_id, event(pending, OrderPatch::default()))
            .await
            .unwrap();

        let (pipeline, mut handle) = h.pipeline(&["raydium"], 2, HOUR);
        let (outcome, requests) = play(&pipeline, &job, &mut handle, vec![]).await;
        assert_eq!(outcome, Outcome::Finished, "{name}");
        assert!(requests.is_empty(), "{name}: no venue is asked");
        let events = h.events(job.order_id).await;
        match &events.last().unwrap().data {
            EventData::Failed {
                code: got,
                error,
                total_attempts,
                ..
            } => assert_eq!(
                (got.as_str(), error.as_str(), *total_attempts),
                (code, message, 2),
                "{name}"
            ),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_route_to_a_venue_no_longer_configured_fails_unknown_venue() {
    let h = Harness::new().await;
    let job = h.order().await;
    let (pipeline, mut handle) = h.pipeline(&["raydium"], 3, HOUR);
    let (_, outcome, _) = h
        .round(&pipeline, &mut handle, vec![quote("raydium"), dropped("raydium")])
        .await;
    assert_eq!(outcome, Outcome::RetryAfter(FIRST_DELAY));

    // Restarted without raydium; the quotes are fresh, so the route stays.
    let (restarted, mut handle) = h.pipeline(&["orca"], 3, HOUR);
    let (_, outcome, requests) = h.round(&restarted, &mut handle, vec![]).await;
    assert_eq!(outcome, Outcome::Finished);
    assert!(requests.is_empty(), "orca is never asked");
    let events = h.events(job.order_id).await;
    assert_eq!(codes(&events), ["blockhash_expired", "unknown_venue"]);
    let order = h.stored(job.order_id).await;
    assert_eq!(order.status, Status::Failed);
    assert!(order.route.is_some(), "the failed event keeps the route");
}

#[tokio::test(start_paused = true)]
async fn an_order_type_without_a_stage_fails_no_pipeline() {
    let h = Harness::new().await;
    let job = h.order().await;
    let (pipeline, mut handle) = h.pipeline(&["raydium"], 3, HOUR);
    pipeline.replace_stages(HashMap::new());
    let (outcome, requests) = play(&pipeline, &job, &mut handle, vec![]).await;
    assert_eq!(outcome, Outcome::Finished);
    assert!(requests.is_empty());
    let events = h.events(job.order_id).await;
    assert_eq!(kinds(&events), ["pending", "failed"]);
    assert_eq!(codes(&events), ["no_pipeline"]);
}

#[tokio::test(start_paused = true)]
async fn a_job_for_a_finished_or_unknown_order_is_acked_without_work() {
    let h = Harness::new().await;
    let (pipeline, mut handle) = h.pipeline(&["raydium"], 3, HOUR);
    let job = h.order().await;
    let (outcome, _) = play(&pipeline, &job, &mut handle, vec![quote("raydium"), fill("raydium")]).await;
    assert_eq!(outcome, Outcome::Finished);
    let before = h.events(job.order_id).await.len();

    let (again, requests) = play(&pipeline, &job, &mut handle, vec![]).await;
    assert_eq!((again, requests), (Outcome::Finished, vec![]));
    assert_eq!(
        h.events(job.order_id).await.len(),
        before,
        "a duplicate job records nothing"
    );

    let unknown = Job {
        id: "lost".into(),
        order_id: OrderId::new(),
    };
    assert_eq!(
        play(&pipeline, &unknown, &mut handle, vec![]).await.0,
        Outcome::Finished
    );
}

/// The worker's stall rule, through `Worker::run`. Real time, not paused:
/// with a worker's timers armed (heartbeat, stall), a paused clock would
/// jump to them while the SQLite writer thread stores an event.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_without_progress_is_released_and_resumes_the_same_attempt_after_the_pause() {
    const STALL: Duration = Duration::from_secs(2);
    let h = Harness::new().await;
    // The venue's own deadline is an hour: only the stall rule ends its
    // silence.
    let (pipeline, mut handle) = h.pipeline_staged(&["raydium"], 3, HOUR, stages_with(HOUR));
    let job = h.order().await;
    let queue = Arc::new(MemoryQueue::new(Duration::from_secs(30)));
    queue.enqueue(job.clone()).await.unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let worker = Worker {
        pipeline: Arc::new(pipeline),
        queue: queue.clone(),
        rate_limit: Arc::new(MemoryRateLimit::new(0)),
        concurrency: 1,
        lease: Duration::from_secs(30),
        stall_timeout: STALL,
    };
    let running = tokio::spawn(worker.run(shutdown.clone(), Duration::from_secs(5)));

    // Quote, then a send that never answers: no progress from here.
    let (first, sent_at) = loop {
        let (request, reply) = tokio::time::timeout(Duration::from_secs(30), handle.requests.recv())
            .await
            .expect("the worker asks")
            .expect("the venues are alive");
        match request {
            Request::Quote { .. } => reply.send(Answer::Quote).unwrap(),
            Request::Send { tx, .. } => {
                drop(reply); // silence, for as long as the run lives
                break (tx, Instant::now());
            }
        }
    };
    // The released job resumes: it sends the recorded transaction again
    // (a rebroadcast) rather than signing a new one.
    let resumed = loop {
        assert!(
            sent_at.elapsed() < Duration::from_secs(20),
            "the job is released and resumed"
        );
        if let Some((signature, at)) = handle.rebroadcasts().first().cloned() {
            break (signature, at);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(resumed.0, first.signature, "the same signature");
    handle.land_now(&first.signature, 42);
    let settled = Instant::now();
    while !h.stored(job.order_id).await.status.is_terminal() {
        assert!(settled.elapsed() < Duration::from_secs(10), "the resumed run settles");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    running.await.unwrap();
    assert!(
        handle.requests.try_recv().is_err(),
        "nothing else was asked: no second signature"
    );

    let gap = resumed.1 - sent_at;
    assert!(
        gap >= STALL,
        "released only after {STALL:?} without progress, not {gap:?}"
    );
    assert!(
        gap < STALL + worker::STALL_RETRY + Duration::from_secs(5),
        "released and claimed again promptly: {gap:?}"
    );
    let order = h.stored(job.order_id).await;
    assert_eq!(order.status, Status::Confirmed);
    let events = h.events(job.order_id).await;
    assert_eq!(kinds(&events).last(), Some(&"confirmed"));
    assert!(!kinds(&events).contains(&"execution-failed"), "{:?}", kinds(&events));
}

/// The other side of the stall rule: a run longer than `stall_timeout`
/// whose stages each store an event in time keeps its job.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_job_that_records_progress_is_never_released() {
    const STALL: Duration = Duration::from_secs(2);
    let h = Harness::new().await;
    let (pipeline, mut handle) = h.pipeline_staged(&["raydium"], 3, HOUR, stages_with(HOUR));
    let job = h.order().await;
    let queue = Arc::new(MemoryQueue::new(Duration::from_secs(30)));
    queue.enqueue(job.clone()).await.unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let worker = Worker {
        pipeline: Arc::new(pipeline),
        queue: queue.clone(),
        rate_limit: Arc::new(MemoryRateLimit::new(0)),
        concurrency: 1,
        lease: Duration::from_secs(30),
        stall_timeout: STALL,
    };
    let running = tokio::spawn(worker.run(shutdown.clone(), Duration::from_secs(5)));

    // Each answer is slow (quotes within their 1 s timeout), each is
    // followed by an event: the run takes longer than STALL, but never
    // STALL without progress.
    let started = Instant::now();
    let mut requests = Vec::new();
    while !h.stored(job.order_id).await.status.is_terminal() {
        assert!(started.elapsed() < Duration::from_secs(20), "the job finishes");
        let Ok(Some((request, reply))) = tokio::time::timeout(Duration::from_millis(50), handle.requests.recv()).await
        else {
            continue;
        };
        let (slow, answer) = match request {
            Request::Quote { .. } => (Duration::from_millis(800), Answer::Quote),
            Request::Send { .. } => (Duration::from_millis(1500), Answer::Fill),
        };
        tokio::time::sleep(slow).await;
        requests.push(request);
        reply.send(answer).unwrap();
    }
    shutdown.cancel();
    running.await.unwrap();
    assert!(started.elapsed() > STALL, "the run outlasted the stall timeout");
    assert_eq!(sends(&requests).len(), 1, "sent once");
    assert!(handle.rebroadcasts().is_empty(), "never released and resumed");
    let events = h.events(job.order_id).await;
    assert_eq!(submissions(&events).len(), 1);
    assert_eq!(h.stored(job.order_id).await.status, Status::Confirmed);
}
