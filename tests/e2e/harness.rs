//! Starting the real binary and checking what it says.
//!
//! Every test gets its own data directory, and on the production backends
//! its own Redis key prefix and PostgreSQL schema, removed when the test
//! ends; tests run in parallel and leave nothing behind.

use serde_json::Value;
use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};
use swapline::client::{self, Message, Socket};

pub const REDIS: &str = "redis://127.0.0.1:6379";
/// The simulated chain's slot time in every test engine, ms.
pub const SLOT_MS: u64 = 10;

/// `[chain]` settings under which a transaction lands `latency` (`"1500ms"`,
/// `"3s"`) after it is sent, as a TOML section.
pub fn landing_after(latency: &str) -> String {
    let ms: u64 = match latency.strip_suffix("ms") {
        Some(ms) => ms.parse().expect("a latency in ms"),
        None => {
            latency
                .strip_suffix('s')
                .and_then(|s| s.parse::<u64>().ok())
                .expect("a latency in s")
                * 1000
        }
    };
    format!("\n[chain]\nland_slots = {}\n", (ms / SLOT_MS).max(1))
}
pub const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Which backends a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, in-memory queue and bus.
    Embedded,
    /// PostgreSQL, Redis queue and bus.
    Production,
}

/// Runs each listed `async fn(Backend)` as two tests, one per backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$name($crate::harness::Backend::Embedded).await
                }
            )*
        }
        mod production {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$name($crate::harness::Backend::Production).await
                }
            )*
        }
    };
}

/// What the nodes of one test share: a directory, and on the production
/// backends a Redis prefix and a PostgreSQL schema (dropped at the end).
pub struct Shared {
    pub dir: tempfile::TempDir,
    pub backend: Backend,
    pub name: String,
    pub postgres_url: String,
    /// Where the engine reaches Redis (the harness itself uses `REDIS`).
    pub redis_url: String,
}

impl Shared {
    pub fn new(backend: Backend) -> Arc<Shared> {
        Self::with_postgres(backend, POSTGRES.into())
    }

    /// As `new`, with the engine reaching PostgreSQL at `postgres_url`.
    pub fn with_postgres(backend: Backend, postgres_url: String) -> Arc<Shared> {
        Self::with_urls(backend, postgres_url, REDIS.into())
    }

    /// As `new`, with the engine reaching Redis at `redis_url`.
    pub fn with_redis(backend: Backend, redis_url: String) -> Arc<Shared> {
        Self::with_urls(backend, POSTGRES.into(), redis_url)
    }

    fn with_urls(backend: Backend, postgres_url: String, redis_url: String) -> Arc<Shared> {
        if backend == Backend::Production {
            require(
                "Redis",
                "127.0.0.1:6379",
                "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no",
            );
            require(
                "PostgreSQL",
                "127.0.0.1:5432",
                "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
            );
        }
        let name = format!("t_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
        Arc::new(Shared {
            dir: tempfile::tempdir().expect("temp dir"),
            backend,
            name,
            postgres_url,
            redis_url,
        })
    }

    /// The config files of a node: what every node of this test reads, then
    /// `extra` (merged after it by `--config`).
    fn config(&self, extra: &str) -> [PathBuf; 2] {
        let backend = match self.backend {
            Backend::Embedded => String::new(),
            Backend::Production => format!(
                r#"
[store]
backend = "postgres"

[queue]
backend = "redis"

[bus]
backend = "redis"

[postgres]
url = "{}"
schema = "{name}"

[redis]
url = "{redis}"
key_prefix = "{name}"

[reconciler]
interval = "1s"
"#,
                self.postgres_url,
                name = self.name,
                redis = self.redis_url
            ),
        };
        let text = format!(
            r#"data_dir = {data:?}

[server]
bind = "127.0.0.1:0"
shutdown_grace = "5s"

[worker]
lease = "2s"

[chain]
slot_time = "{slot}ms"
blockhash_validity_slots = 1000
land_slots = 1
poll_initial = "{slot}ms"
poll_max = "100ms"
rebroadcast_every = "500ms"
{backend}
"#,
            slot = SLOT_MS,
            data = self.dir.path().join("data").display().to_string()
        );
        let base = self.dir.path().join("base.toml");
        std::fs::write(&base, text).expect("writing the test config");
        let overlay = self
            .dir
            .path()
            .join(format!("node-{}.toml", uuid::Uuid::new_v4().simple()));
        std::fs::write(&overlay, extra).expect("writing the test config");
        [base, overlay]
    }

    /// Runs `swapline ARGS` (a one-shot command such as `keys create`) with
    /// this test's config plus `extra`; returns its output.
    pub fn cli(&self, extra: &str, args: &[&str]) -> std::process::Output {
        let config = self.config(extra);
        run_cli(&config, self.dir.path(), args)
    }

    /// Transactions of an order that landed and swapped, on the simulated
    /// chain.
    pub async fn landed_swaps(&self, order_id: &str) -> i64 {
        match self.backend {
            Backend::Embedded => {
                let db = rusqlite::Connection::open(self.dir.path().join("data/swapline.db")).unwrap();
                db.busy_timeout(Duration::from_secs(5)).unwrap();
                db.query_row(
                    "SELECT COUNT(*) FROM chain_txs WHERE order_id = ?1 AND state = 'landed'",
                    [order_id],
                    |row| row.get(0),
                )
                .unwrap()
            }
            Backend::Production => {
                let client = self.postgres().await;
                let id: uuid::Uuid = order_id.parse().unwrap();
                client
                    .query_one(
                        "SELECT COUNT(*) FROM chain_txs WHERE order_id = $1 AND state = 'landed'",
                        &[&id],
                    )
                    .await
                    .unwrap()
                    .get(0)
            }
        }
    }

    /// A client on this test's schema.
    pub async fn postgres(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(
            &format!("{POSTGRES}?options=-c%20search_path%3D{}", self.name),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connecting to PostgreSQL");
        tokio::spawn(connection);
        client
    }

    /// Deletes every Redis key of this test, as if Redis restarted empty.
    pub async fn flush_redis(&self) -> usize {
        delete_redis_keys(&self.name)
            .await
            .expect("deleting the test's Redis keys")
    }
}

/// Deletes every Redis key under `prefix:`; returns how many there were.
async fn delete_redis_keys(prefix: &str) -> Result<usize, deadpool_redis::redis::RedisError> {
    let client = deadpool_redis::redis::Client::open(REDIS)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = deadpool_redis::redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await?;
    if !keys.is_empty() {
        let _: () = deadpool_redis::redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn)
            .await?;
    }
    Ok(keys.len())
}

impl Drop for Shared {
    fn drop(&mut self) {
        if self.backend != Backend::Production {
            return;
        }
        let name = self.name.clone();
        // Drop runs outside any runtime guarantee: clean up on a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                if let Ok((client, connection)) = tokio_postgres::connect(POSTGRES, tokio_postgres::NoTls).await {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                        .await;
                }
                let _ = delete_redis_keys(&name).await;
            });
        })
        .join();
    }
}

fn run_cli(config: &[PathBuf; 2], dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_swapline"))
        .args(["--profile", "bench", "--config"])
        .arg(&config[0])
        .arg("--config")
        .arg(&config[1])
        .args(args)
        .current_dir(dir)
        .env_remove("SWAPLINE_PROFILE")
        .output()
        .expect("running swapline")
}

fn require(service: &str, addr: &str, start: &str) {
    if std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2)).is_err() {
        panic!("{service} is not reachable on {addr}; these tests need it. Start it with: {start}");
    }
}

/// A running node; killed when dropped.
pub struct Engine {
    child: Option<Child>,
    pub shared: Arc<Shared>,
    config: [PathBuf; 2],
    role: &'static str,
    log: PathBuf,
    pub url: String,
}

impl Engine {
    /// An all-in-one node (`serve`, worker on) on the embedded backends.
    pub fn start(extra: &str) -> Engine {
        Self::start_on(Backend::Embedded, extra)
    }

    /// An all-in-one node on `backend`.
    pub fn start_on(backend: Backend, extra: &str) -> Engine {
        Self::node(Shared::new(backend), "serve", extra)
    }

    /// A node of a shared deployment: role `serve` or `worker`.
    pub fn node(shared: Arc<Shared>, role: &'static str, extra: &str) -> Engine {
        let config = shared.config(extra);
        let log = shared
            .dir
            .path()
            .join(format!("{role}-{}.log", uuid::Uuid::new_v4().simple()));
        let mut engine = Engine {
            child: None,
            shared,
            config,
            role,
            log,
            url: String::new(),
        };
        engine.spawn();
        engine
    }

    /// Runs the engine with `extra` TOML and expects it to refuse to start:
    /// returns what it wrote to stderr.
    pub fn refused(extra: &str) -> String {
        let shared = Shared::new(Backend::Embedded);
        let [base, overlay] = shared.config(extra);
        let output = Command::new(env!("CARGO_BIN_EXE_swapline"))
            .args(["--profile", "bench", "--config"])
            .arg(&base)
            .arg("--config")
            .arg(&overlay)
            .arg("serve")
            .current_dir(shared.dir.path())
            .env_remove("SWAPLINE_PROFILE")
            .output()
            .expect("running swapline");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(!output.status.success(), "swapline started: {stdout}");
        assert!(!stdout.contains("swapline listening"), "swapline listened: {stdout}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    /// The order as `GET /api/orders/status/{id}` shows it.
    pub async fn status(&self, id: &str) -> Value {
        let response = client::get(&self.url, &format!("/api/orders/status/{id}"))
            .await
            .unwrap();
        assert_eq!(response.status, 200);
        response.json()
    }

    /// Asserts `/health` answers 200 with status ok.
    pub async fn assert_healthy(&self) {
        let health = client::get(&self.url, "/health").await.unwrap();
        assert_eq!(health.status, 200);
        assert_eq!(health.json()["status"], "ok");
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_swapline"))
            .args(["--profile", "bench", "--config"])
            .arg(&self.config[0])
            .arg("--config")
            .arg(&self.config[1])
            .arg(self.role)
            .current_dir(self.shared.dir.path())
            .env_remove("SWAPLINE_PROFILE")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("starting swapline");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("swapline listening on ") {
                    let _ = tx.send(url.to_owned());
                } else if line == "swapline worker started" {
                    let _ = tx.send(String::new());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => self.url = url,
            Err(_) => {
                let _ = child.kill();
                panic!("swapline {} did not start; its log:\n{}", self.role, self.log());
            }
        }
        self.child = Some(child);
    }

    /// Runs `swapline ARGS` against this node's config and store (e.g.
    /// `keys create`); returns its output.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        run_cli(&self.config, self.shared.dir.path(), args)
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Rewrites this node's own config file with `extra` (the shared base
    /// settings stay).
    pub fn rewrite_config(&self, extra: &str) {
        std::fs::write(&self.config[1], extra).expect("rewriting the test config");
    }

    /// Sends SIGHUP (reload).
    pub fn hangup(&self) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("kill -HUP");
        assert!(status.success());
    }

    /// Waits (at most 30 s) until the log contains `needle` `count` times.
    pub async fn wait_for_log(&self, needle: &str, count: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.log().matches(needle).count() < count {
            assert!(
                std::time::Instant::now() < deadline,
                "{needle:?} not logged {count} times within 30 s; the log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The data directory (SQLite file, plugin cache).
    pub fn data_dir(&self) -> PathBuf {
        self.shared.dir.path().join("data")
    }

    /// SIGKILL, no goodbye.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reaping");
        }
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        child.wait().expect("reaping")
    }

    /// Starts again with the same config and data (on a new port).
    pub fn restart(&mut self) {
        self.kill_9();
        self.spawn();
    }

    /// Posts an order; panics unless 201. Returns the order id.
    pub async fn order(&self, body: Value) -> String {
        let response = client::post_json(&self.url, "/api/orders/execute", &body)
            .await
            .unwrap();
        assert_eq!(response.status, 201, "{}", String::from_utf8_lossy(&response.body));
        response.json()["orderId"].as_str().unwrap().to_owned()
    }

    /// Opens the order's WebSocket.
    pub async fn watch(&self, id: &str, since: Option<u64>) -> Socket {
        let path = match since {
            Some(n) => format!("/api/orders/status/{id}?since={n}"),
            None => format!("/api/orders/status/{id}"),
        };
        client::connect(&self.url, &path).await.unwrap()
    }

    /// Reads an order's whole stream, to its close.
    pub async fn follow(&self, id: &str) -> Stream {
        let mut socket = self.watch(id, None).await;
        read_stream(&mut socket).await
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What one socket received.
#[derive(Debug)]
pub struct Stream {
    pub greetings: Vec<Value>,
    pub events: Vec<Value>,
    pub close: u16,
}

impl Stream {
    pub fn types(&self) -> Vec<&str> {
        self.events.iter().map(|e| e["type"].as_str().unwrap()).collect()
    }

    pub fn seqs(&self) -> Vec<u64> {
        self.events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
    }
}

/// Reads a socket until the server closes it (at most 60 s).
pub async fn read_stream(socket: &mut Socket) -> Stream {
    let mut stream = Stream {
        greetings: Vec::new(),
        events: Vec::new(),
        close: 0,
    };
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match socket.next().await.expect("socket read") {
                Message::Text(text) => {
                    let value: Value = serde_json::from_str(&text).expect("messages are JSON");
                    schema("ws-message.schema.json").assert_valid(&value);
                    if value.get("seq").is_some() {
                        stream.events.push(value);
                    } else {
                        assert!(stream.events.is_empty(), "greetings come first: {value}");
                        stream.greetings.push(value);
                    }
                }
                Message::Close(code, _) => {
                    stream.close = code;
                    return;
                }
            }
        }
    })
    .await
    .expect("the server closed the socket within 60 s");
    stream
}

/// A compiled schema from `schemas/`.
pub struct Schema {
    name: String,
    validator: jsonschema::Validator,
}

impl Schema {
    pub fn assert_valid(&self, value: &Value) {
        let errors: Vec<String> = self
            .validator
            .iter_errors(value)
            .map(|e| format!("{}: {e}", e.instance_path().as_str()))
            .collect();
        assert!(
            errors.is_empty(),
            "{value} breaks {}:\n{}",
            self.name,
            errors.join("\n")
        );
    }
}

pub fn schema(name: &str) -> Schema {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let value: Value = serde_json::from_str(&text).unwrap();
    Schema {
        name: name.to_owned(),
        validator: jsonschema::validator_for(&value).unwrap(),
    }
}

/// The usual order.
pub fn sol_usdc(amount: f64) -> Value {
    serde_json::json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": amount, "slippage": 0.5})
}

/// Asserts `seq` runs 1, 2, 3… with no gap or duplicate.
pub fn assert_gapless(stream: &Stream) {
    let expected: Vec<u64> = (1..=stream.events.len() as u64).collect();
    assert_eq!(
        stream.seqs(),
        expected,
        "seq must be gapless from 1: {:?}",
        stream.types()
    );
}
