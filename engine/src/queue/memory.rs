//! In-process queue, rate limit and request limit, for the embedded profile. Jobs live in
//! memory only; the store re-enqueues unfinished orders at start. Imports
//! `domain` and its own seam only; never `api`, `pipeline` or another
//! adapter.

use super::{Allowance, Depth, Job, Lease, Queue, QueueError, RateLimit, RequestLimit};
use crate::domain::OrderId;
use async_trait::async_trait;
use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, HashSet, VecDeque},
    sync::Mutex,
    time::Duration,
};
use tokio::{sync::Notify, time::Instant};

/// In-process [`Queue`].
pub struct MemoryQueue {
    lease: Duration,
    state: Mutex<State>,
    ready: Notify,
}

impl std::fmt::Debug for MemoryQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryQueue").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    waiting: VecDeque<(Job, Instant)>,
    delayed: BinaryHeap<Reverse<(Instant, u64, JobKey)>>,
    delayed_jobs: HashMap<u64, Job>,
    active: HashMap<String, (Job, String, Instant)>,
    orders: HashSet<OrderId>,
    next: u64,
}

type JobKey = u64;

impl MemoryQueue {
    /// A queue whose leases last `lease` without a heartbeat.
    pub fn new(lease: Duration) -> Self {
        MemoryQueue {
            lease,
            state: Mutex::new(State::default()),
            ready: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn promote_due(&mut self, now: Instant) {
        while let Some(Reverse((at, _, key))) = self.delayed.peek().copied() {
            if at > now {
                break;
            }
            self.delayed.pop();
            if let Some(job) = self.delayed_jobs.remove(&key) {
                self.waiting.push_back((job, now));
            }
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.delayed.peek().map(|Reverse((at, _, _))| *at)
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn enqueue(&self, job: Job) -> Result<(), QueueError> {
        {
            let mut state = self.lock();
            if !state.orders.insert(job.order_id) {
                return Ok(());
            }
            state.waiting.push_back((job, Instant::now()));
        }
        self.ready.notify_one();
        Ok(())
    }

    async fn holds(&self, order: OrderId) -> Result<bool, QueueError> {
        Ok(self.lock().orders.contains(&order))
    }

    async fn claim(&self, wait: Duration) -> Result<Option<Lease>, QueueError> {
        let deadline = Instant::now() + wait;
        loop {
            // Registered before looking, so a notify between the look and the
            // wait is not lost.
            let notified = self.ready.notified();
            let wake_at = {
                let mut state = self.lock();
                let now = Instant::now();
                state.promote_due(now);
                if let Some((job, _)) = state.waiting.pop_front() {
                    state.next += 1;
                    let token = state.next.to_string();
                    state
                        .active
                        .insert(job.id.clone(), (job.clone(), token.clone(), now + self.lease));
                    // More may be ready: let another claimer look.
                    if !state.waiting.is_empty() {
                        self.ready.notify_one();
                    }
                    return Ok(Some(Lease { job, token }));
                }
                state.next_due().map_or(deadline, |due| due.min(deadline))
            };
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    async fn heartbeat(&self, lease: &Lease) -> Result<(), QueueError> {
        let mut state = self.lock();
        match state.active.get_mut(&lease.job.id) {
            Some((_, token, expires)) if *token == lease.token => {
                *expires = Instant::now() + self.lease;
                Ok(())
            }
            _ => Err(QueueError::LeaseLost(lease.job.id.clone())),
        }
    }

    async fn ack(&self, lease: &Lease) -> Result<(), QueueError> {
        let mut state = self.lock();
        match state.active.get(&lease.job.id) {
            Some((_, token, _)) if *token == lease.token => {
                state.active.remove(&lease.job.id);
                state.orders.remove(&lease.job.order_id);
                Ok(())
            }
            _ => Err(QueueError::LeaseLost(lease.job.id.clone())),
        }
    }

    async fn retry_after(&self, lease: &Lease, delay: Duration) -> Result<(), QueueError> {
        {
            let mut state = self.lock();
            match state.active.get(&lease.job.id) {
                Some((_, token, _)) if *token == lease.token => {
                    let (job, _, _) = state.active.remove(&lease.job.id).expect("checked above");
                    state.next += 1;
                    let key = state.next;
                    state.delayed.push(Reverse((Instant::now() + delay, key, key)));
                    state.delayed_jobs.insert(key, job);
                }
                _ => return Err(QueueError::LeaseLost(lease.job.id.clone())),
            }
        }
        // A claimer may be sleeping past the new due time.
        self.ready.notify_one();
        Ok(())
    }

    async fn recover_stalled(&self) -> Result<usize, QueueError> {
        let recovered = {
            let mut state = self.lock();
            let now = Instant::now();
            let stalled: Vec<String> = state
                .active
                .iter()
                .filter(|(_, (_, _, expires))| *expires <= now)
                .map(|(id, _)| id.clone())
                .collect();
            for id in &stalled {
                if let Some((job, _, _)) = state.active.remove(id) {
                    state.waiting.push_back((job, now));
                }
            }
            stalled.len()
        };
        if recovered > 0 {
            self.ready.notify_one();
        }
        Ok(recovered)
    }

    async fn depth(&self) -> Result<Depth, QueueError> {
        let state = self.lock();
        Ok(Depth {
            waiting: state.waiting.len() as u64,
            active: state.active.len() as u64,
            delayed: state.delayed_jobs.len() as u64,
            oldest_waiting: state.waiting.front().map(|(_, since)| since.elapsed()),
        })
    }
}

/// In-process token bucket: `per_minute` claims a minute, bursts up to the
/// same number; 0 means unlimited.
pub struct MemoryRateLimit {
    per_minute: u32,
    bucket: tokio::sync::Mutex<(f64, Instant)>,
}

impl std::fmt::Debug for MemoryRateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRateLimit").finish_non_exhaustive()
    }
}

impl MemoryRateLimit {
    /// A bucket that starts full.
    pub fn new(per_minute: u32) -> Self {
        MemoryRateLimit {
            per_minute,
            bucket: tokio::sync::Mutex::new((f64::from(per_minute), Instant::now())),
        }
    }
}

#[async_trait]
impl RateLimit for MemoryRateLimit {
    async fn acquire(&self) -> Result<(), QueueError> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        // Holding the lock while waiting queues acquirers fairly.
        let mut bucket = self.bucket.lock().await;
        let (tokens, last) = &mut *bucket;
        let now = Instant::now();
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * per_second).min(capacity);
        *last = now;
        if *tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - *tokens) / per_second);
            tokio::time::sleep(wait).await;
            *tokens = 1.0;
            *last = Instant::now();
        }
        *tokens -= 1.0;
        Ok(())
    }
}

/// In-process [`RequestLimit`]: one token bucket per client, for one node.
pub struct MemoryRequestLimit {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl std::fmt::Debug for MemoryRequestLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRequestLimit").finish_non_exhaustive()
    }
}

impl Default for MemoryRequestLimit {
    fn default() -> Self {
        Self::new()
    }
}

/// Buckets kept before full ones (idle clients) are dropped.
const MAX_IDLE_BUCKETS: usize = 10_000;

impl MemoryRequestLimit {
    /// No client has used anything yet.
    pub fn new() -> Self {
        MemoryRequestLimit {
            buckets: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl RequestLimit for MemoryRequestLimit {
    async fn check(&self, client: &str, per_minute: u32) -> Result<Allowance, QueueError> {
        let capacity = f64::from(per_minute.max(1));
        let per_second = capacity / 60.0;
        let now = Instant::now();
        let refilled = |(tokens, last): (f64, Instant)| {
            (tokens + now.duration_since(last).as_secs_f64() * per_second).min(capacity)
        };
        // A std Mutex: the critical section never awaits.
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_IDLE_BUCKETS && !buckets.contains_key(client) {
            buckets.retain(|_, bucket| refilled(*bucket) < capacity);
        }
        let bucket = buckets.entry(client.to_owned()).or_insert((capacity, now));
        let mut tokens = refilled(*bucket);
        let allowed = tokens >= 1.0;
        if allowed {
            tokens -= 1.0;
        }
        *bucket = (tokens, now);
        let retry_after = if tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - tokens) / per_second)
        };
        Ok(Allowance {
            allowed,
            limit: per_minute,
            remaining: tokens.floor() as u32,
            retry_after,
            reset: Duration::from_secs_f64((capacity - tokens) / per_second),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(n: u8) -> Job {
        Job {
            id: format!("job-{n}"),
            order_id: OrderId::new(),
        }
    }

    async fn fresh_queue(lease: Duration) -> ((), std::sync::Arc<MemoryQueue>) {
        ((), std::sync::Arc::new(MemoryQueue::new(lease)))
    }

    async fn fresh_limit(per_minute: u32) -> ((), std::sync::Arc<MemoryRateLimit>) {
        ((), std::sync::Arc::new(MemoryRateLimit::new(per_minute)))
    }

    async fn fresh_request_limit() -> ((), std::sync::Arc<MemoryRequestLimit>) {
        ((), std::sync::Arc::new(MemoryRequestLimit::new()))
    }

    crate::queue::conformance::queue_contract!(
        queue: fresh_queue,
        rate_limit: fresh_limit,
        request_limit: fresh_request_limit
    );

    // The contract runs on real time (Redis keeps its own clock); these
    // pin the same behaviours exactly, on tokio's paused clock.

    #[tokio::test(start_paused = true)]
    async fn retried_job_waits_its_delay_and_frees_the_claim() {
        let queue = MemoryQueue::new(Duration::from_secs(30));
        queue.enqueue(job(1)).await.unwrap();
        let lease = queue.claim(Duration::ZERO).await.unwrap().unwrap();
        queue.retry_after(&lease, Duration::from_secs(2)).await.unwrap();
        assert_eq!(
            queue.depth().await.unwrap(),
            Depth {
                waiting: 0,
                active: 0,
                delayed: 1,
                oldest_waiting: None,
            }
        );
        assert!(queue.claim(Duration::from_secs(1)).await.unwrap().is_none());
        let again = queue.claim(Duration::from_secs(5)).await.unwrap().unwrap();
        assert_eq!(again.job, lease.job);
        assert_ne!(again.token, lease.token);
        assert!(queue.ack(&lease).await.is_err(), "the old claim is void");
    }

    #[tokio::test(start_paused = true)]
    async fn lapsed_leases_are_recovered() {
        let queue = MemoryQueue::new(Duration::from_secs(1));
        queue.enqueue(job(1)).await.unwrap();
        let lease = queue.claim(Duration::ZERO).await.unwrap().unwrap();
        tokio::time::advance(Duration::from_millis(500)).await;
        queue.heartbeat(&lease).await.unwrap();
        assert_eq!(queue.recover_stalled().await.unwrap(), 0);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(queue.recover_stalled().await.unwrap(), 1);
        assert!(queue.heartbeat(&lease).await.is_err());
        assert!(queue.claim(Duration::ZERO).await.unwrap().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_allows_a_burst_then_paces() {
        let limit = MemoryRateLimit::new(60);
        let start = Instant::now();
        for _ in 0..60 {
            limit.acquire().await.unwrap();
        }
        assert!(start.elapsed() < Duration::from_millis(10), "burst of 60 is immediate");
        limit.acquire().await.unwrap();
        limit.acquire().await.unwrap();
        let paced = start.elapsed();
        assert!(
            paced >= Duration::from_millis(1900) && paced < Duration::from_millis(2100),
            "{paced:?}"
        );
    }
}
