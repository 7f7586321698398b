//! The pipeline at its seams: a scripted `Venue` in tower-test's
//! `(mock, handle)` shape, an in-Rust `Strategy`, `MemoryBus`,
//! `MemoryQueue` and a temp-dir `SqliteStore`, under paused time.
//!
//! Paused time and SQLite: tokio advances a paused clock to the next timer
//! whenever every task waits. The SQLite writer is a thread, so a store
//! write is such a wait; it is harmless here because no timer is pending
//! during a write: quote and execute timeouts are only armed while a venue
//! is asked, and the test answers at once (or, for [`Answer::Silence`],
//! never, which is exactly when the clock should jump to the timeout).

use super::*;
use crate::{
    bus::MemoryBus,
    domain::{ErrorInfo, NewOrder, OrderType, Status, StrategyRef},
    queue::{MemoryQueue, MemoryRateLimit, Queue},
    store::{SqliteStore, SqliteSync},
    strategy::{PluginError, Strategy},
    venues::{Fill, LegOrder, VenueError},
};
use async_trait::async_trait;
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

// ---------------------------------------------------------------------------
// The scripted venue: `mock(names)` gives the venues for the pipeline and
// one `Handle` on which the test receives every request and answers it.

/// What a scripted venue was asked.
#[derive(Debug, Clone, PartialEq)]
enum Request {
    Quote { venue: String, amount_in: u128 },
    Execute { venue: String, leg: LegOrder },
}

impl Request {
    fn venue(&self) -> &str {
        match self {
            Request::Quote { venue, .. } | Request::Execute { venue, .. } => venue,
        }
    }

    fn ask(&self) -> Ask {
        match self {
            Request::Quote { .. } => Ask::Quote,
            Request::Execute { .. } => Ask::Execute,
        }
    }
}

/// The two things a venue is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    Quote,
    Execute,
}

/// A scripted answer.
#[derive(Debug)]
enum Answer {
    /// A quote priced on a constant-product pool of `DEPTH` / `DEPTH`.
    Quote,
    /// The leg fills at its floor.
    Fill,
    /// The venue fails with this error.
    Fail(VenueError),
    /// The venue never answers: the pipeline's timeout decides.
    Silence,
}

type Exchange = (Request, oneshot::Sender<Answer>);

/// A venue that forwards every request to its [`Handle`] and waits there
/// for the answer.
struct ScriptedVenue {
    name: String,
    requests: mpsc::UnboundedSender<Exchange>,
}

/// The test's side of the scripted venues.
struct Handle {
    requests: mpsc::UnboundedReceiver<Exchange>,
}

fn mock(names: &[&str]) -> (Vec<Arc<dyn Venue>>, Handle) {
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
    (venues, Handle { requests })
}

impl ScriptedVenue {
    async fn ask(&self, request: Request) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send((request, reply))
            .expect("the handle outlives the venues");
        match answer.await {
            Ok(answer) => answer,
            // The handle dropped the reply: silence.
            Err(_) => std::future::pending().await,
        }
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
        match self.ask(request).await {
            Answer::Quote => Ok(QuoteBuilder::new(&self.name)
                .cpmm(DEPTH, DEPTH, 25)
                .quoted_for(amount_in)
                .build()),
            Answer::Fail(error) => Err(error),
            other => unreachable!("play() checks the kind of {other:?}"),
        }
    }

    async fn execute(&self, leg: &LegOrder) -> Result<Fill, VenueError> {
        let request = Request::Execute {
            venue: self.name.clone(),
            leg: leg.clone(),
        };
        match self.ask(request).await {
            Answer::Fill => Ok(Fill {
                signature: leg.signature.clone(),
                amount_out: leg.min_amount_out,
            }),
            Answer::Fail(error) => Err(error),
            other => unreachable!("play() checks the kind of {other:?}"),
        }
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

fn fill(venue: &'static str) -> Step {
    Step {
        venue,
        ask: Ask::Execute,
        answer: Answer::Fill,
    }
}

fn congested(venue: &'static str) -> Step {
    Step {
        venue,
        ask: Ask::Execute,
        answer: Answer::Fail(VenueError::transient("congested", "the network is congested")),
    }
}

fn slipped(venue: &'static str) -> Step {
    Step {
        venue,
        ask: Ask::Execute,
        answer: Answer::Fail(VenueError::permanent("slippage_exceeded", "price moved past the floor")),
    }
}

fn silent(venue: &'static str) -> Step {
    Step {
        venue,
        ask: Ask::Execute,
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

/// The legs each execution request carried: (venue, signature, attempt).
fn executions(requests: &[Request]) -> Vec<(String, String, u32)> {
    requests
        .iter()
        .filter_map(|r| match r {
            Request::Execute { venue, leg } => Some((venue.clone(), leg.signature.clone(), leg.attempt)),
            Request::Quote { .. } => None,
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
        let (venues, handle) = mock(names);
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
        let pipeline = Pipeline::new(settings, self.recorder.clone(), venues, stages, Arc::new(tokens));
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
    /// Attempt of each execution the venue saw.
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
            name: "transient failure, then confirmed",
            max_attempts: 3,
            rounds: vec![vec![quote("raydium"), congested("raydium")], vec![fill("raydium")]],
            outcomes: vec![retry(FIRST_DELAY), Outcome::Finished],
            kinds: after_routing(&[
                "submitted",
                "execution-failed",
                "retry-pending",
                "submitted",
                "confirmed",
            ]),
            codes: &["congested"],
            attempts: &[1, 2],
            status: Status::Confirmed,
            failed_suffix: None,
        },
        AttemptCase {
            name: "a silent venue times out, transiently",
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
            codes: &["execute_timeout"],
            attempts: &[1, 2],
            status: Status::Confirmed,
            failed_suffix: None,
        },
        AttemptCase {
            name: "permanent failure fails at once with its code",
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
                vec![quote("raydium"), congested("raydium")],
                vec![congested("raydium")],
                vec![congested("raydium")],
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
            codes: &["congested", "congested", "congested", "congested"],
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
        let executions = executions(&requests);
        let attempts: Vec<u32> = executions.iter().map(|(_, _, attempt)| *attempt).collect();
        assert_eq!(attempts, case.attempts, "{name}");
        assert!(
            executions.windows(2).all(|w| w[0].1 == w[1].1),
            "{name}: every attempt resubmits the same signature"
        );
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
            (EventData::Confirmed { tx_hash, .. }, None) => {
                assert_eq!(*tx_hash, executions[0].1, "{name}: the first leg's signature");
            }
            (other, suffix) => panic!("{name}: ended with {other:?}, expected failed {suffix:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_crash_after_submitted_resumes_the_same_attempt_with_the_same_signature() {
    let h = Harness::new().await;
    let job = h.order().await;
    let first = {
        let (pipeline, mut handle) = h.pipeline(&["raydium"], 3, HOUR);
        let process = pipeline.process(&job);
        tokio::pin!(process);
        // Quote, then stop the run (drop it) while the venue holds the leg.
        loop {
            tokio::select! {
                _ = &mut process => panic!("the run must not finish before the crash"),
                Some((request, reply)) = handle.requests.recv() => match request {
                    Request::Quote { .. } => reply.send(Answer::Quote).unwrap(),
                    Request::Execute { leg, .. } => break leg,
                },
            }
        }
    };
    let crashed = h.stored(job.order_id).await;
    assert_eq!((crashed.last_kind, crashed.attempts), (EventKind::Submitted, 1));

    // A restart with quotes that count as stale still keeps the route.
    let (restarted, mut handle) = h.pipeline(&["raydium"], 3, Duration::ZERO);
    let (outcome, requests) = play(&restarted, &job, &mut handle, vec![fill("raydium")]).await;
    assert_eq!(outcome, Outcome::Finished);
    assert_eq!(
        executions(&requests),
        [("raydium".to_owned(), first.signature.clone(), 1)],
        "one execution request: same signature, same attempt, no re-quote"
    );

    let events = h.events(job.order_id).await;
    assert_eq!(kinds(&events), after_routing(&["submitted", "submitted", "confirmed"]));
    let submitted: Vec<(u32, Vec<String>)> = events
        .iter()
        .filter_map(|e| match &e.data {
            EventData::Submitted {
                attempt, signatures, ..
            } => Some((*attempt, signatures.clone())),
            _ => None,
        })
        .collect();
    let same = (1, vec![first.signature.clone()]);
    assert_eq!(submitted, [same.clone(), same]);
    let order = h.stored(job.order_id).await;
    assert_eq!((order.status, order.attempts), (Status::Confirmed, 1));
    assert_eq!(order.route.map(|r| r.version), Some(1));
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
async fn stale_quotes_reroute_a_retry_unless_a_leg_filled() {
    let cases = vec![
        RequoteCase {
            name: "fresh quotes keep the route",
            venues: &["raydium"],
            requote_after: HOUR,
            first: vec![quote("raydium"), congested("raydium")],
            second: vec![fill("raydium")],
            requotes: 0,
            version: 1,
        },
        RequoteCase {
            name: "stale quotes route again",
            venues: &["raydium"],
            requote_after: Duration::ZERO,
            first: vec![quote("raydium"), congested("raydium")],
            second: vec![quote("raydium"), fill("raydium")],
            requotes: 1,
            version: 2,
        },
        RequoteCase {
            name: "stale quotes, but a leg filled: the route stays",
            venues: &["raydium", "orca"],
            requote_after: Duration::ZERO,
            first: vec![quote("raydium"), quote("orca"), fill("raydium"), congested("orca")],
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

        let (first, second) = (executions(&first), executions(&second));
        let retried = second.last().expect("the retry executes");
        let failed = first.last().expect("the first attempt executed");
        assert_eq!(retried.0, failed.0, "{name}: the failed leg's venue runs again");
        assert_eq!(retried.2, 2, "{name}: as attempt 2");
        assert_eq!(
            retried.1 == failed.1,
            case.version == 1,
            "{name}: new signatures iff re-routed"
        );
        let filled_before: Vec<&String> = first[..first.len() - 1].iter().map(|e| &e.0).collect();
        assert!(
            second.iter().all(|e| !filled_before.contains(&&e.0)),
            "{name}: a filled leg never executes twice"
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
        .round(&pipeline, &mut handle, vec![quote("raydium"), congested("raydium")])
        .await;
    assert_eq!(outcome, Outcome::RetryAfter(FIRST_DELAY));

    // Restarted without raydium; the quotes are fresh, so the route stays.
    let (restarted, mut handle) = h.pipeline(&["orca"], 3, HOUR);
    let (_, outcome, requests) = h.round(&restarted, &mut handle, vec![]).await;
    assert_eq!(outcome, Outcome::Finished);
    assert!(requests.is_empty(), "orca is never asked");
    let events = h.events(job.order_id).await;
    assert_eq!(codes(&events), ["congested", "unknown_venue"]);
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

    let mut executions = Vec::new();
    while executions.len() < 2 {
        let (request, reply) = tokio::time::timeout(Duration::from_secs(30), handle.requests.recv())
            .await
            .expect("the worker asks the venue")
            .expect("the venues are alive");
        match &request {
            Request::Quote { .. } => reply.send(Answer::Quote).unwrap(),
            Request::Execute { leg, .. } => {
                executions.push((leg.signature.clone(), leg.attempt, Instant::now()));
                if executions.len() == 1 {
                    drop(reply); // silence, for as long as the run lives
                } else {
                    reply.send(Answer::Fill).unwrap();
                }
            }
        }
    }
    let settled = Instant::now();
    while !h.stored(job.order_id).await.status.is_terminal() {
        assert!(settled.elapsed() < Duration::from_secs(10), "the resumed run settles");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    running.await.unwrap();

    let (first, second) = (&executions[0], &executions[1]);
    assert_eq!(
        (&first.0, first.1),
        (&second.0, second.1),
        "the same attempt, the same signature"
    );
    let gap = second.2 - first.2;
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
            Request::Execute { .. } => (Duration::from_millis(1500), Answer::Fill),
        };
        tokio::time::sleep(slow).await;
        requests.push(request);
        reply.send(answer).unwrap();
    }
    shutdown.cancel();
    running.await.unwrap();
    assert!(started.elapsed() > STALL, "the run outlasted the stall timeout");
    assert_eq!(executions(&requests).len(), 1, "executed once, never released");
    assert_eq!(h.stored(job.order_id).await.status, Status::Confirmed);
}
