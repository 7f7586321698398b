//! The queue contract: one set of behaviours every [`Queue`],
//! [`RateLimit`] and [`RequestLimit`] backend must show, run against each real backend by
//! [`queue_contract!`], so the in-process queue and Redis cannot drift.
//! Delays are real but short (a few hundred milliseconds) and every wait is
//! bounded. Test-only; imports `domain` and its own seam; never `api`,
//! `pipeline` or another adapter.

use super::{Job, Lease, Queue, QueueError, RateLimit, RequestLimit};
use crate::{domain::OrderId, testing};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

/// Generates one `#[tokio::test]` per contract case in a `queue_contract`
/// module. `queue:` names an `async fn(lease: Duration) -> (Guard, Arc<Q>)`
/// yielding a fresh, empty queue whose leases last `lease`; `rate_limit:`
/// an `async fn(per_minute: u32) -> (Guard, Arc<L>)` yielding a fresh, full
/// bucket; `request_limit:` an `async fn() -> (Guard, Arc<R>)` yielding a
/// request limit no client has used. Each guard removes what it made when
/// dropped (also when the test fails).
macro_rules! queue_contract {
    (queue: $queue:path, rate_limit: $limit:path, request_limit: $requests:path $(,)?) => {
        $crate::queue::conformance::queue_contract!(@queue $queue;
            claims_in_order_and_dedupes_orders,
            enqueue_claim_ack_finishes_the_job,
            a_running_order_gets_no_second_job,
            an_order_is_held_from_enqueue_until_its_job_is_acked,
            claim_waits_up_to_wait_and_returns_none_when_empty,
            claim_wakes_for_a_job_enqueued_while_waiting,
            retried_job_waits_its_delay_and_frees_the_claim,
            lapsed_lease_is_handed_back_and_the_old_lease_is_void,
            heartbeat_keeps_the_lease,
            depth_counts_jobs_by_state,
        );
        $crate::queue::conformance::queue_contract!(@limit $limit;
            rate_limit_allows_a_burst_then_paces,
            zero_rate_limit_is_unlimited,
        );
        $crate::queue::conformance::queue_contract!(@requests $requests;
            request_limit_allows_the_limit_at_once_then_refuses_until_a_token_returns,
            request_limits_of_clients_are_apart_and_each_has_its_own_size,
        );
    };
    (@requests $requests:path; $($case:ident),* $(,)?) => {
        /// The request-limit contract (`queue/conformance.rs`), one test per case.
        mod request_limit_contract {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (_guard, limit) = $requests().await;
                    $crate::queue::conformance::$case(limit).await;
                }
            )*
        }
    };
    (@queue $queue:path; $($case:ident),* $(,)?) => {
        /// The queue contract (`queue/conformance.rs`), one test per case.
        mod queue_contract {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    $crate::queue::conformance::$case(|lease| $queue(lease)).await;
                }
            )*
        }
    };
    (@limit $limit:path; $($case:ident),* $(,)?) => {
        /// The rate-limit contract (`queue/conformance.rs`), one test per case.
        mod rate_limit_contract {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (_guard, limit) = $limit($crate::queue::conformance::$case::PER_MINUTE).await;
                    $crate::queue::conformance::$case::run(limit).await;
                }
            )*
        }
    };
}
pub(crate) use queue_contract;

/// A Redis key prefix of one test; every key under it is deleted when this
/// guard drops. Creating it fails the test, saying how to start Redis, when
/// Redis is not running.
pub(crate) struct TempPrefix {
    /// The prefix (keys are `<prefix>:…`).
    pub(crate) name: String,
}

impl TempPrefix {
    /// A fresh prefix.
    pub(crate) fn new() -> Self {
        testing::require_redis();
        TempPrefix {
            name: testing::unique_name(),
        }
    }

    /// A pool on the test Redis.
    pub(crate) fn pool(&self) -> super::redis::Pool {
        deadpool_redis::Config::from_url(testing::REDIS)
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .expect("a Redis pool")
            .into()
    }
}

impl Drop for TempPrefix {
    fn drop(&mut self) {
        let pattern = format!("{}:*", self.name);
        testing::clean_up(move || async move {
            use deadpool_redis::redis;
            let Ok(client) = redis::Client::open(testing::REDIS) else {
                return;
            };
            let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                return;
            };
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<(), _> = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
            }
        });
    }
}

/// How long the cases let a lease last unless they test leases.
const LEASE: Duration = Duration::from_secs(30);
/// Upper bound of any wait the cases expect to end early.
const BOUND: Duration = Duration::from_secs(5);

fn job(n: u8) -> Job {
    Job {
        id: format!("job-{n}"),
        order_id: OrderId::new(),
    }
}

async fn claim_now<Q: Queue + ?Sized>(queue: &Q) -> Option<Lease> {
    queue.claim(Duration::ZERO).await.expect("claiming")
}

/// Jobs are claimed in enqueue order; a second job for a queued order is
/// ignored.
pub(crate) async fn claims_in_order_and_dedupes_orders<G, Q: Queue, F: Future<Output = (G, Arc<Q>)>>(
    setup: impl Fn(Duration) -> F,
) {
    let (_guard, queue) = setup(LEASE).await;
    let (a, b) = (job(1), job(2));
    queue.enqueue(a.clone()).await.unwrap();
    queue.enqueue(a.clone()).await.unwrap();
    queue.enqueue(b.clone()).await.unwrap();
    assert_eq!(queue.depth().await.unwrap().waiting, 2);
    let first = queue.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(first.job, a);
    queue.ack(&first).await.unwrap();
    assert_eq!(queue.claim(Duration::ZERO).await.unwrap().unwrap().job, b);
    assert!(queue.claim(Duration::from_millis(10)).await.unwrap().is_none());
}

/// enqueue → claim → ack leaves nothing behind, and the order may be queued
/// again afterwards.
pub(crate) async fn enqueue_claim_ack_finishes_the_job<G, Q: Queue, F: Future<Output = (G, Arc<Q>)>>(
    setup: impl Fn(Duration) -> F,
) {
    let (_guard, queue) = setup(LEASE).await;
    let a = job(1);
    queue.enqueue(a.clone()).await.unwrap();
    let lease = claim_now(&*queue).await.expect("the job is ready");
    assert_eq!(lease.job, a);
    queue.ack(&lease).await.unwrap();
    let depth = queue.depth().await.unwrap();
    assert_eq!((depth.waiting, depth.active, depth.delayed), (0, 0, 0));
    assert!(queue.claim(Duration::from_millis(10)).await.unwrap().is_none());
    assert_eq!(
        queue.ack(&lease).await.unwrap_err(),
        QueueError::LeaseLost(a.id.clone()),
        "a finished job cannot be finished twice"
    );
    queue.enqueue(a.clone()).await.unwrap();
    assert_eq!(
        claim_now(&*queue).await.map(|l| l.job),
        Some(a),
        "the order may run again"
    );
}

/// While an order's job runs, another job for it is ignored.
pub(crate) async fn a_running_order_gets_no_second_job<G, Q: Queue, F: Future<Output = (G, Arc<Q>)>>(
    setup: impl Fn(Duration) -> F,
) {
    let (_guard, queue) = setup(LEASE).await;
    let a = job(1);
    queue.enqueue(a.clone()).await.unwrap();
    let lease = claim_now(&*queue).await.unwrap();
    queue
        .enqueue(Job {
            id: "another".into(),
            order_id: a.order_id,
        })
        .await
        .unwrap();
    let depth = queue.depth().await.unwrap();
    assert_eq!((depth.waiting, depth.active), (0, 1));
    assert!(queue.claim(Duration::from_millis(10)).await.unwrap().is_none());
    queue.ack(&lease).await.unwrap();
}

/// `holds` is true from `enqueue` until the ack, only for that order, and
/// stays true across everything in between: a lease, a retry waiting its
/// delay, a promotion back to waiting, a lapsed lease handed back.
pub(crate) async fn an_order_is_held_from_enqueue_until_its_job_is_acked<
    G,
    Q: Queue,
    F: Future<Output = (G, Arc<Q>)>,
>(
    setup: impl Fn(Duration) -> F,
) {
    let (_guard, queue) = setup(Duration::from_millis(300)).await;
    let (a, b) = (job(1), job(2));
    let holds = |order| {
        let queue = queue.clone();
        async move { queue.holds(order).await.unwrap() }
    };
    assert!(!holds(a.order_id).await, "not yet enqueued");
    queue.enqueue(a.clone()).await.unwrap();
    assert!(holds(a.order_id).await, "waiting");
    assert!(!holds(b.order_id).await, "another order");
    let lease = claim_now(&*queue).await.unwrap();
    assert!(holds(a.order_id).await, "leased");
    queue.retry_after(&lease, Duration::from_millis(50)).await.unwrap();
    assert!(holds(a.order_id).await, "waiting its retry delay");
    let lease = queue.claim(BOUND).await.unwrap().expect("promoted after its delay");
    assert_eq!(lease.job, a);
    assert!(holds(a.order_id).await, "leased again");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(queue.recover_stalled().await.unwrap(), 1, "the lease lapsed");
    assert!(holds(a.order_id).await, "handed back");
    let lease = queue.claim(BOUND).await.unwrap().expect("handed back");
    queue.ack(&lease).await.unwrap();
    assert!(!holds(a.order_id).await, "acked");
    queue.enqueue(b.clone()).await.unwrap();
    let lease = claim_now(&*queue).await.unwrap();
    queue.retry_after(&lease, Duration::from_secs(60)).await.unwrap();
    assert!(holds(b.order_id).await, "delayed for a minute");
    assert_eq!(queue.depth().await.unwrap().delayed, 1);
}

/// An empty queue answers `None` after `wait`, not before and not much
/// after.
pub(crate) async fn claim_waits_up_to_wait_and_returns_none_when_empty<G, Q: Queue, F: Future<Output = (G, Arc<Q>)>>(
    setup: impl Fn(Duration) -> F,
) {
    let (_guard, queue) = setup(LEASE).await;
    let start = Instant::now();
    assert!(queue.claim(Duration::from_millis(300)).await.unwrap().is_none());
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(290) && waited < BOUND,
        "waited {waited:?}"
    );
}

/// A claimer waiting on an empty queue takes a job enqueued meanwhile,
/// without waiting out its `wait`.
pub(crate) async fn claim_wakes_for_a_job_enqueued_while_waiting<G, Q, F>(setup: impl Fn(Duration) -> F)
where
    Q: Queue + 'static,
    F: Future<Output = (G, Arc<Q>)>,
{
    let (_guard, queue) = setup(LEASE).await;
    let a = job(1);
    let enqueuer = {
        let (queue, a) = (queue.clone(), a.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            queue.enqueue(a).await.unwrap();
        })
    };
    let start = Instant::now();
    let lease = queue.claim(Duration::from_secs(20)).await.unwrap();
    assert_eq!(lease.map(|l| l.job), Some(a));
    assert!(start.elapsed() < BOUND, "{:?}", start.elapsed());
    enqueuer.await.unwrap();
}

/// `retry_after` frees the claim; the job is claimable again only after its
/// delay, under a new lease; the old lease is void.
pub(crate) async fn retried_job_waits_its_delay_and_frees_the_claim<G, Q: Queue, F: Future<Output = (G, Arc<Q>)>>(
    setup: impl Fn(Duration) -> F,
) {
    let (_guard, queue) = setup(LEASE).await;
    queue.enqueue(job(1)).await.unwrap();
    let lease = claim_now(&*queue).await.unwrap();
    let delay = Duration::from_millis(600);
    let retried_at = Instant::now();
    queue.retry_after(&lease, delay).await.unwrap();
    let depth = queue.depth().await.unwrap();
    assert_eq!((depth.waiting, depth.active, depth.delayed), (0, 0, 1));
    assert_eq!(depth.oldest_waiting, None);
    assert!(
        queue.claim(Duration::from_millis(100)).await.unwrap().is_none(),
        "not before its delay"
    );
    let again = queue.claim(BOUND).await.unwrap().expect("claimable after its delay");
    assert!(
        retried_at.elapsed() >= delay - Duration::from_millis(20),
        "{:?}",
        retried_at.elapsed()
    );
    assert_eq!(again.job, lease.job);
    assert_ne!(again.token, lease.token);
    assert!(queue.ack(&lease).await.is_err(), "the old claim is void");
    queue.ack(&again).await.unwrap();
}

/// A lease not heartbeaten for longer than the lease lapses;
/// `recover_stalled` hands the job back and the old lease is void.
pub(crate) async fn lapsed_lease_is_handed_back_and_the_old_lease_is_void<
    G,
    Q: Queue,
    F: Future<Output = (G, Arc<Q>)>,
>(
    setup: impl Fn(Duration) -> F,
) {
    let (_guard, queue) = setup(Duration::from_millis(300)).await;
    queue.enqueue(job(1)).await.unwrap();
    let lease = claim_now(&*queue).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    queue.heartbeat(&lease).await.unwrap();
    assert_eq!(queue.recover_stalled().await.unwrap(), 0, "the lease still holds");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(queue.recover_stalled().await.unwrap(), 1);
    assert!(queue.heartbeat(&lease).await.is_err());
    let again = queue.claim(BOUND).await.unwrap().expect("handed back");
    assert_eq!(again.job, lease.job);
    assert!(queue.ack(&lease).await.is_err(), "the old claim is void");
    queue.ack(&again).await.unwrap();
}

/// Heartbeats keep a lease past its length: nothing is recovered.
pub(crate) async fn heartbeat_keeps_the_lease<G, Q: Queue, F: Future<Output = (G, Arc<Q>)>>(
    setup: impl Fn(Duration) -> F,
) {
    let (_guard, queue) = setup(Duration::from_millis(400)).await;
    queue.enqueue(job(1)).await.unwrap();
    let lease = claim_now(&*queue).await.unwrap();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        queue.heartbeat(&lease).await.unwrap();
        assert_eq!(queue.recover_stalled().await.unwrap(), 0);
    }
    assert_eq!(queue.depth().await.unwrap().active, 1);
    queue.ack(&lease).await.unwrap();
}

/// Depth counts waiting, active and delayed jobs apart, with the age of the
/// oldest waiting one.
pub(crate) async fn depth_counts_jobs_by_state<G, Q: Queue, F: Future<Output = (G, Arc<Q>)>>(
    setup: impl Fn(Duration) -> F,
) {
    let (_guard, queue) = setup(LEASE).await;
    let empty = queue.depth().await.unwrap();
    assert_eq!(
        (empty.waiting, empty.active, empty.delayed, empty.oldest_waiting),
        (0, 0, 0, None)
    );
    for n in 1..=4 {
        queue.enqueue(job(n)).await.unwrap();
    }
    let running = claim_now(&*queue).await.unwrap();
    let delayed = claim_now(&*queue).await.unwrap();
    queue.retry_after(&delayed, Duration::from_secs(60)).await.unwrap();
    let depth = queue.depth().await.unwrap();
    assert_eq!((depth.waiting, depth.active, depth.delayed), (2, 1, 1));
    assert!(depth.oldest_waiting.is_some_and(|age| age < Duration::from_secs(60)));
    queue.ack(&running).await.unwrap();
    assert_eq!(queue.depth().await.unwrap().active, 0);
}

/// A bucket of `PER_MINUTE` allows that many claims at once, then paces
/// them at `PER_MINUTE / 60` a second.
pub(crate) mod rate_limit_allows_a_burst_then_paces {
    use super::*;

    /// Two a second: the two claims past the burst take about a second.
    pub(crate) const PER_MINUTE: u32 = 120;

    /// Runs the case.
    pub(crate) async fn run<L: RateLimit + ?Sized>(limit: Arc<L>) {
        let start = Instant::now();
        for _ in 0..PER_MINUTE {
            limit.acquire().await.unwrap();
        }
        let burst = start.elapsed();
        assert!(burst < Duration::from_secs(1), "the burst is immediate: {burst:?}");
        limit.acquire().await.unwrap();
        limit.acquire().await.unwrap();
        let paced = start.elapsed();
        assert!(
            paced >= Duration::from_millis(900) && paced < Duration::from_secs(3),
            "{paced:?}"
        );
    }
}

/// A limit of 0 never waits.
pub(crate) mod zero_rate_limit_is_unlimited {
    use super::*;

    /// Unlimited.
    pub(crate) const PER_MINUTE: u32 = 0;

    /// Runs the case.
    pub(crate) async fn run<L: RateLimit + ?Sized>(limit: Arc<L>) {
        let start = Instant::now();
        for _ in 0..1000 {
            limit.acquire().await.unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
    }
}

/// A client may send its whole limit at once; the next request is refused
/// with the time until a token returns (60 s / limit at most) and nothing
/// left, and once that time has passed one more request goes through.
pub(crate) async fn request_limit_allows_the_limit_at_once_then_refuses_until_a_token_returns<
    R: RequestLimit + ?Sized,
>(
    limit: Arc<R>,
) {
    // 120 a minute: a token every 500 ms.
    for n in 0..120u32 {
        let allowance = limit.check("ip:10.0.0.1", 120).await.unwrap();
        assert!(allowance.allowed, "request {n} is within the limit");
        assert_eq!((allowance.limit, allowance.remaining), (120, 119 - n));
    }
    let refused = limit.check("ip:10.0.0.1", 120).await.unwrap();
    assert!(!refused.allowed);
    assert_eq!(refused.remaining, 0);
    assert!(
        refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_millis(500),
        "{refused:?}"
    );
    assert!(
        refused.reset > Duration::from_secs(55) && refused.reset <= Duration::from_secs(60),
        "{refused:?}"
    );
    tokio::time::sleep(refused.retry_after + Duration::from_millis(50)).await;
    assert!(
        limit.check("ip:10.0.0.1", 120).await.unwrap().allowed,
        "a token came back"
    );
    assert!(!limit.check("ip:10.0.0.1", 120).await.unwrap().allowed);
}

/// One client's use leaves another's untouched; a client's limit is the
/// one it is checked against (a key's own `orders_per_minute`).
pub(crate) async fn request_limits_of_clients_are_apart_and_each_has_its_own_size<R: RequestLimit + ?Sized>(
    limit: Arc<R>,
) {
    for _ in 0..3 {
        assert!(limit.check("key:a", 3).await.unwrap().allowed);
    }
    assert!(!limit.check("key:a", 3).await.unwrap().allowed);
    let other = limit.check("key:b", 10).await.unwrap();
    assert!(other.allowed);
    assert_eq!((other.limit, other.remaining), (10, 9));
    let ip = limit.check("ip:10.0.0.1", 1).await.unwrap();
    assert_eq!((ip.allowed, ip.remaining), (true, 0));
    assert!(ip.retry_after > Duration::from_secs(55), "one a minute: {ip:?}");
}
