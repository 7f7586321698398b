//! Pooled Redis connections in either `redis.mode`: a pool of single-server
//! connections (deadpool-redis) or a pool of cluster connections (the
//! `redis` crate's `cluster_async`, which follows `MOVED`/`ASK` redirects and
//! refreshes the slot map after a failover). Both carry every deadline of
//! `redis.*`; the queue and the rate limiters use them alike through
//! [`redis::aio::ConnectionLike`].
//!
//! Imports nothing of ours but the queue's config.

use super::config::RedisConfig;
use deadpool::managed::{self, Metrics, RecycleResult};
use deadpool_redis::redis::{
    self, Cmd, RedisFuture, Value,
    aio::ConnectionLike,
    cluster::{ClusterClient, ClusterClientBuilder},
    cluster_async::ClusterConnection,
};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Attempts of one cluster command (the first and the retries after a
/// `MOVED`, `TRYAGAIN`, `CLUSTERDOWN` or a dropped node), all within
/// `redis.command_timeout`.
pub const CLUSTER_RETRIES: u32 = 3;
/// Shortest and longest pause between two attempts of a cluster command, ms
/// (`redis` crate `ClusterClientBuilder::min_retry_wait`/`max_retry_wait`).
pub const CLUSTER_RETRY_WAIT_MS: (u64, u64) = (50, 400);

/// Builds cluster connections with the deadlines of `redis.*`: the deadpool
/// manager of [`ClusterPool`] (deadpool-redis's own cluster manager takes no
/// deadlines).
pub struct ClusterManager {
    client: ClusterClient,
    pings: AtomicUsize,
}

impl std::fmt::Debug for ClusterManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterManager").finish_non_exhaustive()
    }
}

impl ClusterManager {
    /// A manager for the cluster `client`.
    pub fn new(client: ClusterClient) -> Self {
        ClusterManager {
            client,
            pings: AtomicUsize::new(0),
        }
    }
}

impl managed::Manager for ClusterManager {
    type Type = ClusterConnection;
    type Error = redis::RedisError;

    async fn create(&self) -> Result<ClusterConnection, redis::RedisError> {
        self.client.get_async_connection().await
    }

    async fn recycle(&self, conn: &mut ClusterConnection, _: &Metrics) -> RecycleResult<redis::RedisError> {
        let nonce = self.pings.fetch_add(1, Ordering::Relaxed).to_string();
        let echoed: String = redis::cmd("PING").arg(&nonce).query_async(conn).await?;
        if echoed == nonce {
            Ok(())
        } else {
            Err(managed::RecycleError::message("a PING answered with another nonce"))
        }
    }
}

/// A pool of cluster connections.
pub type ClusterPool = managed::Pool<ClusterManager>;

/// A cluster client for the seed nodes `redis.urls` with the deadlines of
/// `config`: `redis.connect_timeout` per node connection,
/// `redis.command_timeout` per command including its redirects and retries
/// (the `redis` crate's response and overall response timeouts), TCP
/// keepalive as in standalone mode. `resp3_pushes` makes a RESP3 client
/// whose pushes (sharded pub/sub messages, disconnections) go to the sender:
/// the bus subscriber's.
pub fn cluster_client(
    config: &RedisConfig,
    resp3_pushes: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
) -> Result<ClusterClient, String> {
    let mut builder = ClusterClientBuilder::new(config.urls.iter().map(String::as_str))
        .connection_timeout(config.connect_timeout.0)
        .response_timeout(config.command_timeout.0)
        .retries(CLUSTER_RETRIES)
        .min_retry_wait(CLUSTER_RETRY_WAIT_MS.0)
        .max_retry_wait(CLUSTER_RETRY_WAIT_MS.1);
    if let Some(tcp) = super::redis::tcp_settings(config) {
        builder = builder.tcp_settings(tcp);
    }
    if let Some(pushes) = resp3_pushes {
        builder = builder.use_protocol(redis::ProtocolVersion::RESP3).push_sender(pushes);
    }
    builder.build().map_err(|e| e.to_string())
}

/// A pool of Redis connections, to one server or to a cluster.
#[derive(Clone)]
pub enum RedisPool {
    /// One server (`redis.mode = "standalone"`).
    Standalone(deadpool_redis::Pool),
    /// A Redis Cluster (`redis.mode = "cluster"`).
    Cluster(ClusterPool),
}

impl std::fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisPool::Standalone(_) => f.write_str("RedisPool::Standalone"),
            RedisPool::Cluster(_) => f.write_str("RedisPool::Cluster"),
        }
    }
}

impl From<deadpool_redis::Pool> for RedisPool {
    fn from(pool: deadpool_redis::Pool) -> Self {
        RedisPool::Standalone(pool)
    }
}

impl RedisPool {
    /// A connection, waiting as the pool's deadlines allow.
    pub async fn get(&self) -> Result<RedisConnection, deadpool_redis::PoolError> {
        Ok(match self {
            RedisPool::Standalone(pool) => RedisConnection::Standalone(pool.get().await?),
            RedisPool::Cluster(pool) => RedisConnection::Cluster(pool.get().await?),
        })
    }

    /// The pool's deadlines.
    pub fn timeouts(&self) -> deadpool_redis::Timeouts {
        match self {
            RedisPool::Standalone(pool) => pool.timeouts(),
            RedisPool::Cluster(pool) => pool.timeouts(),
        }
    }

    /// Closes every idle connection.
    pub fn close_idle(&self) {
        match self {
            RedisPool::Standalone(pool) => {
                let _closed = pool.retain(|_, _| false);
            }
            RedisPool::Cluster(pool) => {
                let _closed = pool.retain(|_, _| false);
            }
        }
    }

    /// Size and use of the pool.
    pub fn status(&self) -> deadpool_redis::Status {
        match self {
            RedisPool::Standalone(pool) => pool.status(),
            RedisPool::Cluster(pool) => pool.status(),
        }
    }
}

/// A pooled connection of a [`RedisPool`]; back to the pool when dropped.
pub enum RedisConnection {
    /// To one server.
    Standalone(deadpool_redis::Connection),
    /// To a cluster.
    Cluster(managed::Object<ClusterManager>),
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisConnection")
    }
}

impl RedisConnection {
    /// Takes the connection out of its pool for good: dropping it closes it.
    pub fn take(this: Self) {
        match this {
            RedisConnection::Standalone(conn) => drop(deadpool_redis::Connection::take(conn)),
            RedisConnection::Cluster(conn) => drop(managed::Object::take(conn)),
        }
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Standalone(conn) => conn.req_packed_command(cmd),
            RedisConnection::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Standalone(conn) => conn.req_packed_commands(cmd, offset, count),
            RedisConnection::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Standalone(conn) => conn.get_db(),
            RedisConnection::Cluster(conn) => conn.get_db(),
        }
    }
}

/// What [`check_cluster`] found wrong, naming the node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Redis Cluster not usable:\n  - {}", .0.join("\n  - "))]
pub struct ClusterCheckError(pub Vec<String>);

/// Checks the cluster of `redis.urls` before use: asks every seed node for
/// `CLUSTER INFO` and `CLUSTER NODES` (each within `redis.connect_timeout`
/// and `redis.command_timeout`). Returns the warnings to log (a seed node
/// that does not answer, a node the cluster marks `fail`) when at least one
/// seed answers and says `cluster_state:ok`.
///
/// # Errors
/// [`ClusterCheckError`] naming each seed node and why, when none answers
/// with `cluster_state:ok` (unreachable, not in cluster mode, slots
/// unassigned, or the cluster is down).
pub async fn check_cluster(config: &RedisConfig) -> Result<Vec<String>, ClusterCheckError> {
    let mut problems = Vec::new();
    let mut failed_nodes = std::collections::BTreeSet::new();
    let mut healthy = false;
    for (n, url) in config.urls.iter().enumerate() {
        let seed = format!("redis.urls[{n}] ({url})");
        match ask_node(config, url).await {
            Ok((info, nodes)) => {
                for line in nodes.lines() {
                    let fields: Vec<&str> = line.split(' ').collect();
                    if let (Some(address), Some(flags)) = (fields.get(1), fields.get(2))
                        && flags.split(',').any(|f| f == "fail" || f == "fail?")
                    {
                        let address = address.split('@').next().unwrap_or(address);
                        failed_nodes.insert(format!("node {address} is marked {flags} by the cluster"));
                    }
                }
                if info.lines().any(|l| l.trim() == "cluster_state:ok") {
                    healthy = true;
                } else {
                    let state = info
                        .lines()
                        .find(|l| l.starts_with("cluster_state:"))
                        .unwrap_or("no cluster_state")
                        .trim();
                    problems.push(format!("{seed}: {state} (slots unassigned or a master down)"));
                }
            }
            Err(e) => problems.push(format!("{seed}: {e}")),
        }
    }
    problems.extend(failed_nodes);
    if healthy {
        Ok(problems)
    } else {
        if problems.is_empty() {
            problems.push("redis.urls: no seed node".into());
        }
        Err(ClusterCheckError(problems))
    }
}

/// `CLUSTER INFO` and `CLUSTER NODES` of one node, within the deadlines.
async fn ask_node(config: &RedisConfig, url: &str) -> Result<(String, String), String> {
    let info = redis::IntoConnectionInfo::into_connection_info(url).map_err(|e| e.to_string())?;
    let client = redis::Client::open(info).map_err(|e| e.to_string())?;
    let settings = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout.0))
        .set_response_timeout(Some(config.command_timeout.0));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&settings)
        .await
        .map_err(|e| format!("unreachable: {e}"))?;
    let info: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("CLUSTER INFO: {e} (is it started with cluster-enabled yes?)"))?;
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("CLUSTER NODES: {e}"))?;
    Ok((info, nodes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{queue::test_cluster::RedisCluster, testing};

    fn config(urls: Vec<String>) -> RedisConfig {
        serde_json::from_value(serde_json::json!({
            "mode": "cluster", "url": "", "urls": urls, "key_prefix": "check",
            "pool_size": 2, "pool_wait_timeout": "1s", "command_timeout": "1s",
            "connect_timeout": "1s", "tcp_keepalive": "0s",
        }))
        .expect("a Redis config")
    }

    #[tokio::test]
    async fn the_check_names_every_seed_node_that_failed() {
        testing::require_redis();
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("redis://{}", listener.local_addr().unwrap())
        };
        let error = check_cluster(&config(vec![closed.clone(), testing::REDIS.into()]))
            .await
            .unwrap_err();
        let [unreachable, standalone] = error.0.as_slice() else {
            panic!("one problem per seed: {error}");
        };
        assert!(
            unreachable.starts_with(&format!("redis.urls[0] ({closed}): unreachable")),
            "{unreachable}"
        );
        assert!(
            standalone.starts_with(&format!("redis.urls[1] ({}): CLUSTER INFO", testing::REDIS)),
            "a server without cluster mode: {standalone}"
        );
    }

    #[tokio::test]
    async fn a_healthy_cluster_passes_with_a_dead_seed_named_as_a_warning() {
        let cluster = RedisCluster::start(3, 0, std::time::Duration::from_secs(2));
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("redis://{}", listener.local_addr().unwrap())
        };
        let mut urls = cluster.urls();
        urls.insert(0, closed.clone());
        let warnings = check_cluster(&config(urls)).await.expect("the cluster is usable");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains(&closed), "{warnings:?}");
    }
}
