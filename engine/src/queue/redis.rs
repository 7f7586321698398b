//! The Redis queue: jobs on a Stream read by a consumer group. A claimed
//! entry stays pending (its lease) while its worker heartbeats it; entries
//! idle past the lease are handed back (XAUTOCLAIM); delayed retries wait in
//! a sorted set and are promoted atomically. Each state change is one Lua
//! script (see `lua/`), so two workers never see a half-done change.
//!
//! Keys, under the configured prefix `p`, for each partition `n` of
//! `queue.partitions` (an order's partition: [`partition_of`] its id):
//! `p:{qn}:jobs` (stream, group `workers`), `p:{qn}:delayed` (sorted set),
//! `p:{qn}:queued:<order id>` (one marker per order that has a job); the
//! hash tag `{qn}` puts a partition's keys in one Redis Cluster slot, so
//! every script touches one slot. `p:rate` (the shared token bucket) and
//! `p:requests:<client scope>` (a client's request-limit bucket) are one key
//! each, so one slot each. The pool ([`Pool`]) reaches one server or a
//! cluster alike (`redis.mode`).
//!
//! Redis failures are classified here, once, by the error's code and kind
//! ([`classify`]), never by their text.
//!
//! No call waits unbounded: every command has a client-side deadline
//! (`redis.command_timeout`, the connection's response timeout, which also
//! bounds a blocking read: it blocks [`BLOCK`] at most), taking a pooled
//! connection has one (its wait, connect and recycle deadlines, summed), and
//! every socket has TCP keepalive ([`connection_info`]). A connection whose
//! command timed out or broke is closed, never handed out again
//! ([`Checked`]): a silent peer cannot poison the pool.
//!
//! Imports `domain` and `telemetry` only; never `api`, `pipeline` or
//! another adapter.

use super::config::RedisMode;
pub use super::pool::{RedisConnection as Connection, RedisPool as Pool};
use super::{Allowance, Depth, Job, Lease, Queue, QueueError, RateLimit, RedisConfig, RequestLimit};
use crate::domain::OrderId;
use crate::telemetry::{PoolStatus, connection_health};
use async_trait::async_trait;
use deadpool_redis::redis::{
    self, AsyncCommands, IntoConnectionInfo, Script,
    io::tcp::{TcpSettings, socket2::TcpKeepalive},
    streams::{StreamReadOptions, StreamReadReply},
};
use std::{
    sync::{
        LazyLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use thiserror::Error;

const GROUP: &str = "workers";
/// A blocking read returns at least this often, so delayed jobs are promoted
/// promptly; `redis.command_timeout` (at least
/// [`super::config::MIN_COMMAND_TIMEOUT`]) is its deadline, the rest of it
/// the margin.
pub const BLOCK: Duration = Duration::from_millis(200);
/// The `backend` label of this adapter's connection-health metrics.
const BACKEND: &str = "queue";
/// A pool step (wait, connect, recycle) without a configured deadline gets
/// this one.
const DEFAULT_STEP: Duration = Duration::from_secs(5);
/// Keepalive probes a peer may miss before the kernel drops the connection.
const KEEPALIVE_PROBES: u32 = 3;

/// A Redis setting the client refused (a malformed `redis.url`).
#[derive(Debug, Error)]
#[error("{0}")]
pub struct RedisSetupError(String);

/// Where and how to open a Redis connection: `redis.url`, with TCP keepalive
/// probes every `redis.tcp_keepalive` after as long idle, and
/// `TCP_USER_TIMEOUT` (Linux, `tcp(7)`) set to the time those probes take,
/// so unacknowledged writes fail too. `tcp_keepalive = 0s` keeps the
/// system's defaults. Used by the pools and the bus subscriber alike.
pub fn connection_info(config: &RedisConfig) -> Result<redis::ConnectionInfo, RedisSetupError> {
    let info = config
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| RedisSetupError(e.to_string()))?;
    Ok(match tcp_settings(config) {
        Some(tcp) => info.set_tcp_settings(tcp),
        None => info,
    })
}

/// The TCP settings of every Redis socket (see [`connection_info`]); `None`
/// with `redis.tcp_keepalive = 0s`.
pub fn tcp_settings(config: &RedisConfig) -> Option<TcpSettings> {
    let idle = config.tcp_keepalive.0;
    if idle.is_zero() {
        return None;
    }
    let probes = TcpKeepalive::new()
        .with_time(idle)
        .with_interval(idle)
        .with_retries(KEEPALIVE_PROBES);
    Some(
        TcpSettings::default()
            .set_nodelay(true)
            .set_keepalive(probes)
            .set_user_timeout(idle * (KEEPALIVE_PROBES + 1)),
    )
}

/// A pool of Redis connections with every deadline of `config`: each command
/// `redis.command_timeout` (also the recycling PING that checks an idle
/// connection before it is handed out), each connect
/// `redis.connect_timeout`, each wait for a free connection
/// `redis.pool_wait_timeout`; at most `redis.pool_size` connections.
///
/// In cluster mode the pool holds cluster connections to the seed nodes
/// `redis.urls` ([`super::pool::cluster_client`]), with the same deadlines.
pub fn pool(config: &RedisConfig) -> Result<Pool, RedisSetupError> {
    if config.mode == RedisMode::Cluster {
        let client = super::pool::cluster_client(config, None).map_err(RedisSetupError)?;
        return super::pool::ClusterPool::builder(super::pool::ClusterManager::new(client))
            .max_size(config.pool_size)
            .wait_timeout(Some(config.pool_wait_timeout.0))
            .create_timeout(Some(config.connect_timeout.0))
            .recycle_timeout(Some(config.command_timeout.0))
            .runtime(deadpool_redis::Runtime::Tokio1)
            .build()
            .map(Pool::Cluster)
            .map_err(|e| RedisSetupError(e.to_string()));
    }
    let settings = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout.0))
        .set_response_timeout(Some(config.command_timeout.0));
    let manager = deadpool_redis::Manager::new_with_config(connection_info(config)?, settings)
        .map_err(|e| RedisSetupError(e.to_string()))?;
    deadpool_redis::Pool::builder(manager)
        .max_size(config.pool_size)
        .wait_timeout(Some(config.pool_wait_timeout.0))
        .create_timeout(Some(config.connect_timeout.0))
        .recycle_timeout(Some(config.command_timeout.0))
        .runtime(deadpool_redis::Runtime::Tokio1)
        .build()
        .map(Pool::Standalone)
        .map_err(|e| RedisSetupError(e.to_string()))
}

/// Longest taking a connection from `pool` may last: deadpool applies its
/// wait, connect and recycle deadlines one step at a time and recycles idle
/// connections one after another until one answers, so the whole call gets
/// their sum.
fn checkout_deadline(pool: &Pool) -> Duration {
    let timeouts = pool.timeouts();
    [timeouts.wait, timeouts.create, timeouts.recycle]
        .into_iter()
        .map(|step| step.unwrap_or(DEFAULT_STEP))
        .sum()
}

/// Whether a failed command leaves its connection unusable: it timed out
/// (its answer may still arrive and would be read as the next command's),
/// or the connection dropped or failed at the I/O level.
fn broken(e: &redis::RedisError) -> bool {
    e.is_timeout() || e.is_connection_dropped() || e.is_io_error() || e.is_unrecoverable_error()
}

/// Closes every idle connection of `pool`: after one connection missed a
/// deadline its idle siblings, on the same path to the same server, are
/// most likely dead too, and recycling each in turn would cost a
/// `redis.command_timeout` apiece. The next checkout connects afresh.
fn flush_idle(pool: &Pool) {
    pool.close_idle();
}

/// A pooled connection that is closed instead of going back to the pool once
/// a command on it broke ([`broken`]); a reconnect replaces it.
struct Checked {
    pool: Pool,
    conn: Option<Connection>,
    dead: bool,
}

impl Checked {
    /// A connection from `pool`, within [`checkout_deadline`].
    async fn from(pool: &Pool) -> Result<Self, QueueError> {
        let within = checkout_deadline(pool);
        match tokio::time::timeout(within, pool.get()).await {
            Ok(Ok(conn)) => Ok(Checked {
                pool: pool.clone(),
                conn: Some(conn),
                dead: false,
            }),
            Ok(Err(e)) => {
                if matches!(e, deadpool_redis::PoolError::Timeout(_)) {
                    connection_health::timed_out(BACKEND, "connect");
                    flush_idle(pool);
                }
                Err(unavailable(e))
            }
            Err(_) => {
                connection_health::timed_out(BACKEND, "connect");
                flush_idle(pool);
                Err(QueueError::Unavailable(format!(
                    "no Redis connection within {} ms",
                    within.as_millis()
                )))
            }
        }
    }

    fn get(&mut self) -> &mut Connection {
        self.conn.as_mut().expect("held until dropped")
    }

    /// Passes `result` through, marking the connection dead when it broke.
    fn check<T>(&mut self, what: &'static str, result: redis::RedisResult<T>) -> redis::RedisResult<T> {
        if let Err(e) = &result {
            if e.is_timeout() {
                connection_health::timed_out(BACKEND, what);
            }
            if broken(e) {
                self.dead = true;
            }
        }
        result
    }
}

impl Drop for Checked {
    fn drop(&mut self) {
        if let (true, Some(conn)) = (self.dead, self.conn.take()) {
            // Out of the pool for good; dropping closes it.
            Connection::take(conn);
            flush_idle(&self.pool);
            connection_health::reconnect(BACKEND);
        }
    }
}

static ENQUEUE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/enqueue.lua")));
static PROMOTE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/promote.lua")));
static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/heartbeat.lua")));
static ACK: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/ack.lua")));
static RETRY: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/retry.lua")));
static RECOVER: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/recover.lua")));
static TOKEN_BUCKET: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/token_bucket.lua")));

fn unavailable(e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

/// Whether Redis answered with the error `code` (`NOGROUP`), also when the
/// error came from one command of a pipeline.
fn has_code(e: &redis::RedisError, code: &str) -> bool {
    e.code() == Some(code)
        || e.clone()
            .into_server_errors()
            .is_some_and(|errors| errors.iter().any(|(_, error)| error.code() == code))
}

/// Whether Redis refused the command itself, so the same call fails again:
/// a general `ERR` (bad arguments, a failing script), a wrong key type, a
/// missing group or permission, or a reply of the wrong shape. Everything
/// else (I/O, timeouts, dropped connections, a server loading or failing
/// over, `BUSY`, `OOM`) may pass later.
fn refused(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    match e.kind() {
        ErrorKind::UnexpectedReturnType | ErrorKind::InvalidClientConfig | ErrorKind::Client => true,
        ErrorKind::Server(
            ServerErrorKind::ResponseError
            | ServerErrorKind::ExecAbort
            | ServerErrorKind::CrossSlot
            | ServerErrorKind::NoPerm,
        ) => true,
        _ => ["WRONGTYPE", "NOGROUP", "BUSYGROUP", "NOPERM"]
            .iter()
            .any(|code| has_code(e, code)),
    }
}

/// A Redis failure as a [`QueueError`]: [`QueueError::Rejected`] when Redis
/// refused the command, else [`QueueError::Unavailable`].
fn classify(e: redis::RedisError) -> QueueError {
    if refused(&e) {
        QueueError::Rejected(e.to_string())
    } else {
        QueueError::Unavailable(e.to_string())
    }
}

/// The [`Queue`] on Redis Streams, split over `queue.partitions` streams.
pub struct RedisQueue {
    pool: Pool,
    prefix: String,
    consumer: String,
    lease: Duration,
    partitions: u16,
    /// The partition the next claim looks at first: claims go round the
    /// partitions so none starves.
    next: AtomicUsize,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue").finish_non_exhaustive()
    }
}

/// The partition of an order among `partitions`: FNV-1a (64 bit) of its id's
/// text, so every process agrees without coordination.
pub fn partition_of(order: &OrderId, partitions: u16) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in order.to_string().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u16
}

impl RedisQueue {
    /// A queue under `prefix` on one stream; `consumer` names this process
    /// in the group.
    pub fn new(pool: Pool, prefix: &str, consumer: String, lease: Duration) -> Self {
        Self::partitioned(pool, prefix, consumer, lease, 1)
    }

    /// A queue under `prefix` split over `partitions` streams (at least 1).
    pub fn partitioned(pool: Pool, prefix: &str, consumer: String, lease: Duration, partitions: u16) -> Self {
        RedisQueue {
            pool,
            prefix: prefix.to_owned(),
            consumer,
            lease,
            partitions: partitions.max(1),
            next: AtomicUsize::new(0),
        }
    }

    /// Key `name` of partition `p`: `<prefix>:{q<p>}:<name>`; the hash tag
    /// `{q<p>}` puts every key of a partition in one cluster slot, so each
    /// script touches one slot.
    fn key(&self, p: u16, name: &str) -> String {
        format!("{}:{{q{p}}}:{name}", self.prefix)
    }

    fn partition(&self, job: &Job) -> u16 {
        partition_of(&job.order_id, self.partitions)
    }

    fn marker(&self, job: &Job) -> String {
        self.marker_of(job.order_id)
    }

    /// `<prefix>:{q<n>}:queued:<order id>`: set while the order has a job.
    fn marker_of(&self, order: OrderId) -> String {
        self.key(partition_of(&order, self.partitions), &format!("queued:{order}"))
    }

    async fn conn(&self) -> Result<Checked, QueueError> {
        Checked::from(&self.pool).await
    }

    /// Creates the consumer group (and stream) of every partition if
    /// missing; also after Redis lost everything.
    pub async fn ensure_group(&self) -> Result<(), QueueError> {
        for p in 0..self.partitions {
            self.ensure_group_of(p).await?;
        }
        Ok(())
    }

    async fn ensure_group_of(&self, p: u16) -> Result<(), QueueError> {
        let mut conn = self.conn().await?;
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.key(p, "jobs"))
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(conn.get())
            .await;
        match conn.check("xgroup", created) {
            Ok(()) => Ok(()),
            Err(e) if has_code(&e, "BUSYGROUP") => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    async fn settle(
        &self,
        script: &Script,
        lease: &Lease,
        extra_key: Option<&str>,
        args: &[String],
    ) -> Result<(), QueueError> {
        let p = self.partition(&lease.job);
        let mut conn = self.conn().await?;
        let mut invocation = script.key(self.key(p, "jobs"));
        if let Some(name) = extra_key {
            invocation.key(self.key(p, name));
        }
        invocation.arg(GROUP).arg(&lease.token).arg(&self.consumer);
        for arg in args {
            invocation.arg(arg);
        }
        let done = invocation.invoke_async(conn.get()).await;
        let done: i64 = conn.check("settle", done).map_err(classify)?;
        if done == 1 {
            Ok(())
        } else {
            Err(QueueError::LeaseLost(lease.job.id.clone()))
        }
    }

    /// Promotes due delayed jobs of partition `p`, then reads one new entry
    /// of it, blocking up to `block` (`None`: not at all).
    async fn claim_from(&self, p: u16, block: Option<Duration>) -> Result<Option<Lease>, QueueError> {
        loop {
            let mut conn = self.conn().await?;
            let moved = PROMOTE
                .key(self.key(p, "delayed"))
                .key(self.key(p, "jobs"))
                .arg(100)
                .invoke_async::<i64>(conn.get())
                .await;
            conn.check("promote", moved).map_err(classify)?;
            let mut options = StreamReadOptions::default().group(GROUP, &self.consumer).count(1);
            if let Some(block) = block {
                options = options.block(block.as_millis().max(1) as usize);
            }
            // The connection's response timeout (`redis.command_timeout`)
            // is this read's deadline: its block time plus a margin.
            let read: redis::RedisResult<Option<StreamReadReply>> =
                conn.get().xread_options(&[self.key(p, "jobs")], &[">"], &options).await;
            let reply = match conn.check("xreadgroup", read) {
                Ok(reply) => reply,
                Err(e) if has_code(&e, "NOGROUP") => {
                    drop(conn);
                    self.ensure_group_of(p).await?;
                    continue;
                }
                Err(e) => return Err(classify(e)),
            };
            let entry = reply
                .and_then(|r| r.keys.into_iter().next())
                .and_then(|k| k.ids.into_iter().next());
            let Some(entry) = entry else {
                return Ok(None);
            };
            let (Some(id), Some(order)) = (field(&entry.map, "job"), field(&entry.map, "order")) else {
                tracing::warn!(entry = entry.id, "dropping a malformed job entry");
                let dropped: redis::RedisResult<()> = redis::pipe()
                    .cmd("XACK")
                    .arg(self.key(p, "jobs"))
                    .arg(GROUP)
                    .arg(&entry.id)
                    .cmd("XDEL")
                    .arg(self.key(p, "jobs"))
                    .arg(&entry.id)
                    .query_async(conn.get())
                    .await;
                let _ = conn.check("xdel", dropped);
                continue;
            };
            let order_id = order
                .parse()
                .map_err(|e| unavailable(format!("job {id}: order id {order}: {e}")))?;
            return Ok(Some(Lease {
                job: Job { id, order_id },
                token: entry.id,
            }));
        }
    }

    async fn recover_from(&self, p: u16) -> Result<usize, QueueError> {
        let mut conn = self.conn().await?;
        let recovered: redis::RedisResult<i64> = RECOVER
            .key(self.key(p, "jobs"))
            .arg(GROUP)
            .arg(self.lease.as_millis().to_string())
            .arg(100)
            .arg(format!("{}-recovery", self.consumer))
            .invoke_async(conn.get())
            .await;
        match conn.check("recover", recovered) {
            Ok(n) => Ok(n as usize),
            Err(e) if has_code(&e, "NOGROUP") => {
                drop(conn);
                self.ensure_group_of(p).await?;
                Ok(0)
            }
            Err(e) => Err(classify(e)),
        }
    }

    async fn depth_of(&self, p: u16) -> Result<Depth, QueueError> {
        let mut conn = self.conn().await?;
        let sampled = redis::pipe()
            .cmd("XLEN")
            .arg(self.key(p, "jobs"))
            .cmd("XPENDING")
            .arg(self.key(p, "jobs"))
            .arg(GROUP)
            .cmd("ZCARD")
            .arg(self.key(p, "delayed"))
            .query_async(conn.get())
            .await;
        let (len, pending, delayed): (u64, redis::Value, u64) = conn
            .check("depth", sampled)
            .or_else(|e| {
                // No group yet (fresh or flushed Redis): nothing is pending.
                if has_code(&e, "NOGROUP") {
                    Ok((0, redis::Value::Nil, 0))
                } else {
                    Err(e)
                }
            })
            .map_err(classify)?;
        let active = match pending {
            redis::Value::Array(items) => match items.first() {
                Some(redis::Value::Int(n)) => *n as u64,
                _ => 0,
            },
            _ => 0,
        };
        let waiting = len.saturating_sub(active);
        let oldest_waiting = if waiting == 0 {
            None
        } else {
            self.oldest_waiting(p, &mut conn).await
        };
        Ok(Depth {
            waiting,
            active,
            delayed,
            oldest_waiting,
        })
    }
}

fn field(map: &std::collections::HashMap<String, redis::Value>, name: &str) -> Option<String> {
    match map.get(name)? {
        redis::Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        redis::Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

#[async_trait]
impl Queue for RedisQueue {
    async fn enqueue(&self, job: Job) -> Result<(), QueueError> {
        let mut conn = self.conn().await?;
        let added = ENQUEUE
            .key(self.key(self.partition(&job), "jobs"))
            .key(self.marker(&job))
            .arg(&job.id)
            .arg(job.order_id.to_string())
            .invoke_async::<i64>(conn.get())
            .await;
        conn.check("enqueue", added).map_err(classify)?;
        Ok(())
    }

    async fn holds(&self, order: OrderId) -> Result<bool, QueueError> {
        let mut conn = self.conn().await?;
        let marked = redis::cmd("EXISTS")
            .arg(self.marker_of(order))
            .query_async::<i64>(conn.get())
            .await;
        Ok(conn.check("holds", marked).map_err(classify)? == 1)
    }

    /// Looks at every partition once without blocking, starting one further
    /// each call (so none starves), then blocks on the first of them for up
    /// to [`BLOCK`]; again until `wait` is over. With one partition this is
    /// one blocking read at a time. A partition whose node is unavailable (a
    /// cluster master failing over) is skipped, so the others keep being
    /// served; the error comes back only when every partition failed.
    async fn claim(&self, wait: Duration) -> Result<Option<Lease>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        let n = self.partitions;
        loop {
            let first = (self.next.fetch_add(1, Ordering::Relaxed) % usize::from(n)) as u16;
            let mut unavailable = None;
            if n > 1 {
                let mut failed = 0;
                for k in 0..n {
                    match self.claim_from((first + k) % n, None).await {
                        Ok(Some(lease)) => return Ok(Some(lease)),
                        Ok(None) => {}
                        Err(e) if e.is_transient() => {
                            failed += 1;
                            unavailable = Some(e);
                        }
                        Err(e) => return Err(e),
                    }
                }
                if failed == n {
                    return Err(unavailable.unwrap_or_else(|| QueueError::Unavailable("no partition answered".into())));
                }
            }
            let block = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .min(BLOCK);
            if unavailable.is_some() {
                // Some partition is down: pause instead of blocking on a
                // partition that may be the dead one.
                tokio::time::sleep(block).await;
            } else if (n == 1 || !block.is_zero())
                && let Some(lease) = self.claim_from(first, Some(block)).await?
            {
                return Ok(Some(lease));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    async fn heartbeat(&self, lease: &Lease) -> Result<(), QueueError> {
        self.settle(&HEARTBEAT, lease, None, &[]).await
    }

    async fn ack(&self, lease: &Lease) -> Result<(), QueueError> {
        let marker = format!("queued:{}", lease.job.order_id);
        self.settle(&ACK, lease, Some(&marker), &[]).await
    }

    async fn retry_after(&self, lease: &Lease, delay: Duration) -> Result<(), QueueError> {
        let member = format!("{}|{}", lease.job.id, lease.job.order_id);
        self.settle(&RETRY, lease, Some("delayed"), &[delay.as_millis().to_string(), member])
            .await
    }

    /// Recovers every partition (XAUTOCLAIM on each stream); a partition
    /// that fails does not stop the others, and the first error is returned
    /// once all were tried.
    async fn recover_stalled(&self) -> Result<usize, QueueError> {
        let mut recovered = 0;
        let mut failure = None;
        for p in 0..self.partitions {
            match self.recover_from(p).await {
                Ok(n) => recovered += n,
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(recovered),
        }
    }

    /// Sums every partition; the oldest waiting job is the oldest of all.
    async fn depth(&self) -> Result<Depth, QueueError> {
        let mut total = Depth::default();
        for p in 0..self.partitions {
            let part = self.depth_of(p).await?;
            total.waiting += part.waiting;
            total.active += part.active;
            total.delayed += part.delayed;
            total.oldest_waiting = total.oldest_waiting.max(part.oldest_waiting);
        }
        Ok(total)
    }

    fn pool_status(&self) -> Option<PoolStatus> {
        Some(PoolStatus::from(("redis", self.pool.status())))
    }
}

impl RedisQueue {
    /// Age of the first entry the group has not delivered yet: entry ids
    /// start with their creation time in milliseconds.
    async fn oldest_waiting(&self, p: u16, conn: &mut Checked) -> Option<Duration> {
        let groups = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(self.key(p, "jobs"))
            .query_async(conn.get())
            .await;
        let groups: Vec<std::collections::HashMap<String, redis::Value>> = conn.check("xinfo", groups).ok()?;
        let delivered = groups.iter().find(|g| field(g, "name").as_deref() == Some(GROUP))?;
        let after = field(delivered, "last-delivered-id")?;
        let next = redis::cmd("XRANGE")
            .arg(self.key(p, "jobs"))
            .arg(format!("({after}"))
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(conn.get())
            .await;
        let next: redis::streams::StreamRangeReply = conn.check("xrange", next).ok()?;
        let millis: u64 = next.ids.first()?.id.split('-').next()?.parse().ok()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        Some(now.saturating_sub(Duration::from_millis(millis)))
    }
}

/// The claim rate limit shared by every worker, as a token bucket in Redis.
pub struct RedisRateLimit {
    pool: Pool,
    key: String,
    per_minute: u32,
}

impl std::fmt::Debug for RedisRateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimit").finish_non_exhaustive()
    }
}

impl RedisRateLimit {
    /// `per_minute` claims a minute across all workers under `prefix`; 0
    /// disables it.
    pub fn new(pool: Pool, prefix: &str, per_minute: u32) -> Self {
        RedisRateLimit {
            pool,
            key: format!("{prefix}:rate"),
            per_minute,
        }
    }
}

#[async_trait]
impl RateLimit for RedisRateLimit {
    async fn acquire(&self) -> Result<(), QueueError> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let per_ms = f64::from(self.per_minute) / 60_000.0;
        loop {
            let mut conn = Checked::from(&self.pool).await?;
            let taken = TOKEN_BUCKET
                .key(&self.key)
                .arg(self.per_minute)
                .arg(per_ms.to_string())
                .invoke_async(conn.get())
                .await;
            let (allowed, _, next_ms, _): (i64, i64, i64, i64) = conn.check("claim_limit", taken).map_err(classify)?;
            drop(conn);
            if allowed == 1 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(next_ms.max(1) as u64)).await;
        }
    }
}

/// The [`RequestLimit`] shared by every API node: a token bucket per client
/// in Redis, taken from in one script.
pub struct RedisRequestLimit {
    pool: Pool,
    prefix: String,
}

impl std::fmt::Debug for RedisRequestLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRequestLimit").finish_non_exhaustive()
    }
}

impl RedisRequestLimit {
    /// Buckets under `prefix:requests:`.
    pub fn new(pool: Pool, prefix: &str) -> Self {
        RedisRequestLimit {
            pool,
            prefix: format!("{prefix}:requests"),
        }
    }
}

#[async_trait]
impl RequestLimit for RedisRequestLimit {
    async fn check(&self, client: &str, per_minute: u32) -> Result<Allowance, QueueError> {
        let per_minute = per_minute.max(1);
        let per_ms = f64::from(per_minute) / 60_000.0;
        let mut conn = Checked::from(&self.pool).await?;
        let taken = TOKEN_BUCKET
            .key(format!("{}:{client}", self.prefix))
            .arg(per_minute)
            .arg(per_ms.to_string())
            .invoke_async(conn.get())
            .await;
        let (allowed, remaining, next_ms, full_ms): (i64, i64, i64, i64) =
            conn.check("request_limit", taken).map_err(classify)?;
        let millis = |ms: i64| Duration::from_millis(ms.max(0) as u64);
        Ok(Allowance {
            allowed: allowed == 1,
            limit: per_minute,
            remaining: remaining.clamp(0, i64::from(per_minute)) as u32,
            retry_after: millis(next_ms),
            reset: millis(full_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{domain::OrderId, queue::conformance::TempPrefix, testing};
    use std::sync::Arc;

    fn queue_on(prefix: &TempPrefix, lease: Duration) -> RedisQueue {
        RedisQueue::new(prefix.pool(), &prefix.name, "test-consumer".into(), lease)
    }

    /// A fresh queue under a prefix of its own, its group created as at
    /// start-up; the keys go with the guard.
    async fn fresh_queue(lease: Duration) -> (TempPrefix, Arc<RedisQueue>) {
        let prefix = TempPrefix::new();
        let queue = queue_on(&prefix, lease);
        queue.ensure_group().await.expect("creating the consumer group");
        (prefix, Arc::new(queue))
    }

    async fn fresh_limit(per_minute: u32) -> (TempPrefix, Arc<RedisRateLimit>) {
        let prefix = TempPrefix::new();
        let limit = RedisRateLimit::new(prefix.pool(), &prefix.name, per_minute);
        (prefix, Arc::new(limit))
    }

    async fn fresh_request_limit() -> (TempPrefix, Arc<RedisRequestLimit>) {
        let prefix = TempPrefix::new();
        let limit = RedisRequestLimit::new(prefix.pool(), &prefix.name);
        (prefix, Arc::new(limit))
    }

    crate::queue::conformance::queue_contract!(
        queue: fresh_queue,
        rate_limit: fresh_limit,
        request_limit: fresh_request_limit
    );

    /// The same contract on a real Redis Cluster (3 masters started for the
    /// test): each script touches one slot, or the cluster refuses it.
    mod on_cluster {
        use super::*;
        use crate::queue::test_cluster::RedisCluster;

        pub(super) fn cluster_config(cluster: &RedisCluster) -> RedisConfig {
            let mut settings = super::config(String::new());
            settings.mode = RedisMode::Cluster;
            settings.urls = cluster.urls();
            settings.command_timeout = crate::domain::Dur(Duration::from_secs(2));
            settings.connect_timeout = crate::domain::Dur(Duration::from_secs(2));
            settings.pool_wait_timeout = crate::domain::Dur(Duration::from_secs(2));
            settings
        }

        fn cluster() -> (RedisCluster, Pool) {
            let cluster = RedisCluster::start(3, 0, Duration::from_secs(2));
            let pool = pool(&cluster_config(&cluster)).expect("a cluster pool");
            (cluster, pool)
        }

        async fn fresh_queue(lease: Duration) -> (RedisCluster, Arc<RedisQueue>) {
            let (cluster, pool) = cluster();
            let queue = RedisQueue::new(pool, "test", "test-consumer".into(), lease);
            queue.ensure_group().await.expect("creating the consumer group");
            (cluster, Arc::new(queue))
        }

        async fn fresh_limit(per_minute: u32) -> (RedisCluster, Arc<RedisRateLimit>) {
            let (cluster, pool) = cluster();
            (cluster, Arc::new(RedisRateLimit::new(pool, "test", per_minute)))
        }

        async fn fresh_request_limit() -> (RedisCluster, Arc<RedisRequestLimit>) {
            let (cluster, pool) = cluster();
            (cluster, Arc::new(RedisRequestLimit::new(pool, "test")))
        }

        crate::queue::conformance::queue_contract!(
            queue: fresh_queue,
            rate_limit: fresh_limit,
            request_limit: fresh_request_limit
        );

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn partitions_spread_over_the_masters_and_every_job_is_claimed_once() {
            let (cluster, pool) = cluster();
            let queue = RedisQueue::partitioned(pool, "spread", "c".into(), Duration::from_secs(30), 16);
            queue.ensure_group().await.unwrap();
            let mut orders = std::collections::HashSet::new();
            for n in 0..200 {
                let job = Job {
                    id: format!("job-{n}"),
                    order_id: OrderId::new(),
                };
                orders.insert(job.order_id);
                queue.enqueue(job).await.unwrap();
            }
            let holding: Vec<u16> = cluster
                .masters()
                .into_iter()
                .filter(|port| cluster.keys_on(*port, "spread:*") > 0)
                .collect();
            assert!(holding.len() >= 2, "queue keys on masters {holding:?} only");
            let mut claimed = std::collections::HashSet::new();
            while let Some(lease) = queue.claim(Duration::from_millis(300)).await.unwrap() {
                assert!(
                    claimed.insert(lease.job.order_id),
                    "{} claimed twice",
                    lease.job.order_id
                );
                queue.ack(&lease).await.unwrap();
            }
            assert_eq!(claimed, orders, "every job claimed once, from every partition");
            let depth = queue.depth().await.unwrap();
            assert_eq!((depth.waiting, depth.active, depth.delayed), (0, 0, 0));
        }
    }

    fn job() -> Job {
        Job {
            id: "job-1".into(),
            order_id: OrderId::new(),
        }
    }

    #[test]
    fn errors_are_classified_by_code_and_kind() {
        let nogroup = redis::make_extension_error("NOGROUP".into(), Some("No such key".into()));
        assert!(has_code(&nogroup, "NOGROUP"));
        assert!(!has_code(&nogroup, "BUSYGROUP"));
        assert!(!classify(nogroup).is_transient());
        let wrongtype = redis::make_extension_error("WRONGTYPE".into(), None);
        assert!(matches!(classify(wrongtype), QueueError::Rejected(_)));
        let oom = redis::make_extension_error("OOM".into(), None);
        assert!(classify(oom).is_transient(), "memory frees up");
        let dropped = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(matches!(classify(dropped), QueueError::Unavailable(_)));
    }

    #[tokio::test]
    async fn a_missing_group_is_created_by_the_first_claim_and_recovery() {
        let prefix = TempPrefix::new();
        let queue = queue_on(&prefix, Duration::from_secs(30));
        assert_eq!(queue.recover_stalled().await.unwrap(), 0, "NOGROUP: nothing stalled");
        let fresh = TempPrefix::new();
        let queue = queue_on(&fresh, Duration::from_secs(30));
        let a = job();
        queue.enqueue(a.clone()).await.unwrap();
        let lease = queue.claim(Duration::from_secs(5)).await.unwrap();
        assert_eq!(lease.map(|l| l.job), Some(a));
        queue
            .ensure_group()
            .await
            .expect("an existing group (BUSYGROUP) is fine");
    }

    #[tokio::test]
    async fn a_command_redis_refuses_is_rejected_not_transient() {
        let prefix = TempPrefix::new();
        let queue = queue_on(&prefix, Duration::from_secs(30));
        let mut conn = prefix.pool().get().await.unwrap();
        let _: () = redis::cmd("SET")
            .arg(format!("{}:{{q0}}:jobs", prefix.name))
            .arg("not a stream")
            .query_async(&mut conn)
            .await
            .unwrap();
        let error = queue.enqueue(job()).await.unwrap_err();
        assert!(matches!(error, QueueError::Rejected(_)), "{error:?}");
        assert!(!error.is_transient());
    }

    /// A server that accepts connections and never answers: a black hole.
    async fn silent_server() -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        (url, holder)
    }

    fn config(url: String) -> RedisConfig {
        use crate::domain::Dur;
        RedisConfig {
            mode: crate::queue::RedisMode::Standalone,
            url,
            urls: Vec::new(),
            key_prefix: "unused".into(),
            pool_size: 2,
            pool_wait_timeout: Dur(Duration::from_millis(200)),
            command_timeout: Dur(Duration::from_millis(500)),
            connect_timeout: Dur(Duration::from_millis(200)),
            tcp_keepalive: Dur(Duration::from_secs(10)),
        }
    }

    #[tokio::test]
    async fn a_silent_redis_is_unavailable_within_the_deadlines_not_a_hang() {
        let (url, holder) = silent_server().await;
        let queue = RedisQueue::new(
            pool(&config(url)).unwrap(),
            "unused",
            "c".into(),
            Duration::from_secs(1),
        );
        for call in 0..2 {
            let error = tokio::time::timeout(Duration::from_secs(10), queue.enqueue(job()))
                .await
                .unwrap_or_else(|_| panic!("call {call} hung past every deadline"))
                .unwrap_err();
            assert!(error.is_transient(), "{error:?}");
        }
        holder.abort();
    }

    #[tokio::test]
    async fn a_connection_whose_command_timed_out_is_never_handed_out_again() {
        let prefix = TempPrefix::new();
        let mut settings = config(testing::REDIS.into());
        settings.pool_size = 1;
        let pool = pool(&settings).unwrap();
        let queue = RedisQueue::new(pool.clone(), &prefix.name, "c".into(), Duration::from_secs(1));
        queue.ensure_group().await.unwrap();
        let mut conn = Checked::from(&pool).await.unwrap();
        let id: i64 = redis::cmd("CLIENT").arg("ID").query_async(conn.get()).await.unwrap();
        // Blocks this connection past `command_timeout` (and no other):
        // the client gives up on the answer.
        let slow = redis::cmd("BLPOP")
            .arg(format!("{}:never", prefix.name))
            .arg(2)
            .query_async::<Option<(String, String)>>(conn.get())
            .await;
        assert!(conn.check("blpop", slow).unwrap_err().is_timeout());
        drop(conn);
        assert_eq!(pool.status().size, 0, "the timed-out connection left the pool");
        let mut conn = Checked::from(&pool).await.unwrap();
        let next: i64 = redis::cmd("CLIENT").arg("ID").query_async(conn.get()).await.unwrap();
        assert_ne!(next, id, "a new connection replaced it");
        drop(conn);
        queue
            .enqueue(job())
            .await
            .expect("the queue works on the new connection");
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_unavailable_and_transient() {
        let pool = deadpool_redis::Config::from_url("redis://127.0.0.1:1")
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .unwrap();
        let queue = RedisQueue::new(pool.into(), "unused", "c".into(), Duration::from_secs(1));
        let error = queue.depth().await.unwrap_err();
        assert!(error.is_transient(), "{error:?}");
    }
}
