//! The Redis queue: jobs on a Stream read by a consumer group. A claimed
//! entry stays pending (its lease) while its worker heartbeats it; entries
//! idle past the lease are handed back (XAUTOCLAIM); delayed retries wait in
//! a sorted set and are promoted atomically. Each state change is one Lua
//! script (see `lua/`), so two workers never see a half-done change.
//!
//! Keys, under the configured prefix `p`: `p:jobs` (stream, group
//! `workers`), `p:delayed` (sorted set), `p:queued:<order id>` (one marker
//! per order that has a job), `p:rate` (the shared token bucket).

use super::{Depth, Job, Lease, Queue, QueueError, RateLimit};
use crate::telemetry::PoolStatus;
use async_trait::async_trait;
use deadpool_redis::{
    Pool,
    redis::{
        self, AsyncCommands, Script,
        streams::{StreamReadOptions, StreamReadReply},
    },
};
use std::{sync::LazyLock, time::Duration};

const GROUP: &str = "workers";
/// A blocking read returns at least this often, so delayed jobs are promoted
/// promptly (and stays below the client's 500 ms response timeout).
const BLOCK: Duration = Duration::from_millis(200);

static ENQUEUE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/enqueue.lua")));
static PROMOTE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/promote.lua")));
static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/heartbeat.lua")));
static ACK: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/ack.lua")));
static RETRY: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/retry.lua")));
static RECOVER: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/recover.lua")));
static RATE_LIMIT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/rate_limit.lua")));

fn unavailable(e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

/// The [`Queue`] on Redis Streams.
pub struct RedisQueue {
    pool: Pool,
    prefix: String,
    consumer: String,
    lease: Duration,
}

impl RedisQueue {
    /// A queue under `prefix`; `consumer` names this process in the group.
    pub fn new(pool: Pool, prefix: &str, consumer: String, lease: Duration) -> Self {
        RedisQueue {
            pool,
            prefix: prefix.to_owned(),
            consumer,
            lease,
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    fn marker(&self, job: &Job) -> String {
        format!("{}:queued:{}", self.prefix, job.order_id)
    }

    async fn conn(&self) -> Result<deadpool_redis::Connection, QueueError> {
        self.pool.get().await.map_err(unavailable)
    }

    /// Creates the consumer group (and stream) if missing; also after Redis
    /// lost everything.
    pub async fn ensure_group(&self) -> Result<(), QueueError> {
        let mut conn = self.conn().await?;
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.key("jobs"))
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Ok(()) => Ok(()),
            Err(e) if e.to_string().contains("BUSYGROUP") => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn settle(
        &self,
        script: &Script,
        lease: &Lease,
        extra_key: Option<String>,
        args: &[String],
    ) -> Result<(), QueueError> {
        let mut conn = self.conn().await?;
        let mut invocation = script.key(self.key("jobs"));
        if let Some(key) = extra_key {
            invocation.key(key);
        }
        invocation.arg(GROUP).arg(&lease.token).arg(&self.consumer);
        for arg in args {
            invocation.arg(arg);
        }
        let done: i64 = invocation.invoke_async(&mut conn).await.map_err(unavailable)?;
        if done == 1 {
            Ok(())
        } else {
            Err(QueueError::LeaseLost(lease.job.id.clone()))
        }
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
        let _added: i64 = ENQUEUE
            .key(self.key("jobs"))
            .key(self.marker(&job))
            .arg(&job.id)
            .arg(job.order_id.to_string())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn claim(&self, wait: Duration) -> Result<Option<Lease>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let mut conn = self.conn().await?;
            let _moved: i64 = PROMOTE
                .key(self.key("delayed"))
                .key(self.key("jobs"))
                .arg(100)
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            let block = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .min(BLOCK);
            let options = StreamReadOptions::default()
                .group(GROUP, &self.consumer)
                .count(1)
                .block(block.as_millis().max(1) as usize);
            let read: redis::RedisResult<Option<StreamReadReply>> =
                conn.xread_options(&[self.key("jobs")], &[">"], &options).await;
            let reply = match read {
                Ok(reply) => reply,
                Err(e) if e.to_string().contains("NOGROUP") => {
                    drop(conn);
                    self.ensure_group().await?;
                    continue;
                }
                Err(e) => return Err(unavailable(e)),
            };
            let entry = reply
                .and_then(|r| r.keys.into_iter().next())
                .and_then(|k| k.ids.into_iter().next());
            if let Some(entry) = entry {
                let (Some(id), Some(order)) = (field(&entry.map, "job"), field(&entry.map, "order")) else {
                    tracing::warn!(entry = entry.id, "dropping a malformed job entry");
                    let _: redis::RedisResult<()> = redis::pipe()
                        .cmd("XACK")
                        .arg(self.key("jobs"))
                        .arg(GROUP)
                        .arg(&entry.id)
                        .cmd("XDEL")
                        .arg(self.key("jobs"))
                        .arg(&entry.id)
                        .query_async(&mut conn)
                        .await;
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
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    async fn heartbeat(&self, lease: &Lease) -> Result<(), QueueError> {
        self.settle(&HEARTBEAT, lease, None, &[]).await
    }

    async fn ack(&self, lease: &Lease) -> Result<(), QueueError> {
        self.settle(&ACK, lease, Some(self.marker(&lease.job)), &[]).await
    }

    async fn retry_after(&self, lease: &Lease, delay: Duration) -> Result<(), QueueError> {
        let member = format!("{}|{}", lease.job.id, lease.job.order_id);
        self.settle(
            &RETRY,
            lease,
            Some(self.key("delayed")),
            &[delay.as_millis().to_string(), member],
        )
        .await
    }

    async fn recover_stalled(&self) -> Result<usize, QueueError> {
        let mut conn = self.conn().await?;
        let recovered: redis::RedisResult<i64> = RECOVER
            .key(self.key("jobs"))
            .arg(GROUP)
            .arg(self.lease.as_millis().to_string())
            .arg(100)
            .arg(format!("{}-recovery", self.consumer))
            .invoke_async(&mut conn)
            .await;
        match recovered {
            Ok(n) => Ok(n as usize),
            Err(e) if e.to_string().contains("NOGROUP") => {
                drop(conn);
                self.ensure_group().await?;
                Ok(0)
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn depth(&self) -> Result<Depth, QueueError> {
        let mut conn = self.conn().await?;
        let (len, pending, delayed): (u64, redis::Value, u64) = redis::pipe()
            .cmd("XLEN")
            .arg(self.key("jobs"))
            .cmd("XPENDING")
            .arg(self.key("jobs"))
            .arg(GROUP)
            .cmd("ZCARD")
            .arg(self.key("delayed"))
            .query_async(&mut conn)
            .await
            .or_else(|e| {
                // No group yet (fresh or flushed Redis): nothing is pending.
                if e.to_string().contains("NOGROUP") {
                    Ok((0, redis::Value::Nil, 0))
                } else {
                    Err(e)
                }
            })
            .map_err(unavailable)?;
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
            self.oldest_waiting(&mut conn).await
        };
        Ok(Depth {
            waiting,
            active,
            delayed,
            oldest_waiting,
        })
    }

    fn pool_status(&self) -> Option<PoolStatus> {
        Some(PoolStatus::from(("redis", self.pool.status())))
    }
}

impl RedisQueue {
    /// Age of the first entry the group has not delivered yet: entry ids
    /// start with their creation time in milliseconds.
    async fn oldest_waiting(&self, conn: &mut deadpool_redis::Connection) -> Option<Duration> {
        let groups: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(self.key("jobs"))
            .query_async(conn)
            .await
            .ok()?;
        let delivered = groups.iter().find(|g| field(g, "name").as_deref() == Some(GROUP))?;
        let after = field(delivered, "last-delivered-id")?;
        let next: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.key("jobs"))
            .arg(format!("({after}"))
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(conn)
            .await
            .ok()?;
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
            let mut conn = self.pool.get().await.map_err(unavailable)?;
            let wait: i64 = RATE_LIMIT
                .key(&self.key)
                .arg(self.per_minute)
                .arg(per_ms.to_string())
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            drop(conn);
            if wait <= 0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
    }
}
