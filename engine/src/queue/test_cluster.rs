//! A real Redis Cluster for tests: `redis-server` processes on free loopback
//! ports joined by `redis-cli --cluster create`, killed (and their files
//! deleted) on drop; and [`RedisServer`], one standalone server of a test's
//! own. Test-only and std-only, so the engine's unit tests and the e2e crate
//! (through `#[path]`) share it.

// The failover helpers serve the e2e crate; the unit tests use the rest.
#![allow(dead_code)]

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// How long the cluster may take to form (and a replica to take over).
const FORM_WITHIN: Duration = Duration::from_secs(60);

/// A running cluster; every node is killed and its files deleted on drop.
pub(crate) struct RedisCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
}

struct Node {
    port: u16,
    child: Option<Child>,
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ports: Vec<u16> = self.nodes.iter().map(|n| n.port).collect();
        f.debug_struct("RedisCluster").field("ports", &ports).finish()
    }
}

/// Runs `redis-cli -p port args…` and returns its output, `None` when it
/// could not run or failed.
pub(crate) fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn require(tool: &str) {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "`{tool}` is not installed: the Redis Cluster tests start real redis-server processes \
         (Debian: `apt-get install redis-server redis-tools`)"
    );
}

/// A free loopback port whose cluster bus port (port + 10000) is free too.
fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let port = listener.local_addr().expect("a bound address").port();
        if port > 55_000 {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "Redis Cluster: {what} within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One standalone `redis-server` of a test's own on a free loopback port,
/// keeping nothing on disk, killed on drop: for a test that does to Redis
/// what the other tests sharing 127.0.0.1:6379 must not feel (`CLIENT
/// PAUSE`).
pub(crate) struct RedisServer {
    /// Its port.
    pub(crate) port: u16,
    child: Child,
}

impl RedisServer {
    /// Starts it and waits until it answers PING. Panics, saying what to
    /// install, when redis-server or redis-cli is missing.
    pub(crate) fn start() -> Self {
        require("redis-server");
        require("redis-cli");
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        let server = RedisServer { port, child };
        wait_until(&format!("redis-server {port} answers PING"), FORM_WITHIN, || {
            cli(port, &["ping"]).is_some_and(|o| o.contains("PONG"))
        });
        server
    }

    /// `redis://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RedisCluster {
    /// Starts `masters` masters with `replicas` replicas each; a node missing
    /// `node_timeout` is failed over (`cluster-node-timeout`). Waits until
    /// every node says `cluster_state:ok` and every replica is in sync.
    /// Panics, saying what to install, when redis-server or redis-cli is
    /// missing.
    pub(crate) fn start(masters: usize, replicas: usize, node_timeout: Duration) -> Self {
        require("redis-server");
        require("redis-cli");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("swapline-cluster-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for the cluster's files");
        let mut cluster = RedisCluster { dir, nodes: Vec::new() };
        let total = masters * (1 + replicas);
        let mut ports = Vec::new();
        while ports.len() < total {
            let port = free_port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        for port in ports {
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .arg("--cluster-config-file")
                .arg(cluster.dir.join(format!("nodes-{port}.conf")))
                .args(["--cluster-node-timeout", &node_timeout.as_millis().to_string()])
                .args(["--save", "", "--appendonly", "no"])
                // Replicas sync at once (Redis 7 waits 5 s by default), so
                // a master killed early already has a replica to take over.
                .args(["--repl-diskless-sync-delay", "0"])
                .arg("--dir")
                .arg(&cluster.dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting redis-server");
            cluster.nodes.push(Node {
                port,
                child: Some(child),
            });
        }
        for node in &cluster.nodes {
            wait_until(&format!("node {} answers PING", node.port), FORM_WITHIN, || {
                cli(node.port, &["ping"]).is_some_and(|o| o.contains("PONG"))
            });
        }
        let addresses: Vec<String> = cluster.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("running redis-cli --cluster create");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        cluster.wait_ok();
        cluster
    }

    /// Waits until every live node says `cluster_state:ok` and every live
    /// replica's link to its master is up.
    pub(crate) fn wait_ok(&self) {
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            wait_until(
                &format!("node {} says cluster_state:ok", node.port),
                FORM_WITHIN,
                || cli(node.port, &["cluster", "info"]).is_some_and(|o| o.contains("cluster_state:ok")),
            );
            wait_until(
                &format!("node {} is a master or an in-sync replica", node.port),
                FORM_WITHIN,
                || {
                    cli(node.port, &["info", "replication"])
                        .is_some_and(|o| o.contains("role:master") || o.contains("master_link_status:up"))
                },
            );
        }
    }

    /// `redis://127.0.0.1:<port>` of every node started: the seed nodes.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// Ports of the live nodes that are masters now.
    pub(crate) fn masters(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .filter(|n| cli(n.port, &["role"]).is_some_and(|o| o.starts_with("master")))
            .map(|n| n.port)
            .collect()
    }

    /// How many keys matching `pattern` the node at `port` holds.
    pub(crate) fn keys_on(&self, port: u16, pattern: &str) -> usize {
        cli(port, &["--scan", "--pattern", pattern])
            .map(|o| o.lines().filter(|l| !l.is_empty()).count())
            .unwrap_or(0)
    }

    /// Kills the node at `port` with SIGKILL (no goodbye to the cluster).
    pub(crate) fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until the node at `port` is a master (a replica took over).
    pub(crate) fn wait_master(&self, port: u16, within: Duration) {
        wait_until(&format!("node {port} becomes a master"), within, || {
            cli(port, &["role"]).is_some_and(|o| o.starts_with("master"))
        });
    }

    /// The port of the replica of the master at `port`.
    pub(crate) fn replica_of(&self, port: u16) -> Option<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some() && n.port != port)
            .find(|n| cli(n.port, &["info", "replication"]).is_some_and(|o| o.contains(&format!("master_port:{port}"))))
            .map(|n| n.port)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
