//! Starting the real binary and checking what it says.

use serde_json::Value;
use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};
use swapline::client::{self, Message, Socket};

/// Settings every test starts from: the `bench` profile (zero latency, no
/// faults, no rate limit) on a free port.
const BASE: &str = r#"
[server]
bind = "127.0.0.1:0"
shutdown_grace = "5s"
"#;

/// A running engine; killed when dropped.
pub struct Engine {
    child: Option<Child>,
    dir: tempfile::TempDir,
    config: PathBuf,
    pub url: String,
}

impl Engine {
    /// Starts the engine with `extra` TOML merged over the bench profile.
    pub fn start(extra: &str) -> Engine {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("test.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\n{BASE}\n{extra}",
                dir.path().join("data").display().to_string()
            ),
        )
        .expect("writing the test config");
        let mut engine = Engine {
            child: None,
            dir,
            config,
            url: String::new(),
        };
        engine.spawn();
        engine
    }

    /// Runs the engine with `extra` TOML and expects it to refuse to start:
    /// returns what it wrote to stderr.
    pub fn refused(extra: &str) -> String {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("test.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\n{BASE}\n{extra}",
                dir.path().join("data").display().to_string()
            ),
        )
        .expect("writing the test config");
        let output = Command::new(env!("CARGO_BIN_EXE_swapline"))
            .args(["--profile", "bench", "--config"])
            .arg(&config)
            .arg("serve")
            .current_dir(dir.path())
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
            .open(self.dir.path().join("engine.log"))
            .expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_swapline"))
            .args(["--profile", "bench", "--config"])
            .arg(&self.config)
            .arg("serve")
            .current_dir(self.dir.path())
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
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => self.url = url,
            Err(_) => {
                let _ = child.kill();
                panic!("swapline did not start; its log:\n{}", self.log());
            }
        }
        self.child = Some(child);
    }

    /// The engine's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("engine.log")).unwrap_or_default()
    }

    /// Rewrites the test config with `extra` (the same base settings).
    pub fn rewrite_config(&self, extra: &str) {
        std::fs::write(
            &self.config,
            format!(
                "data_dir = {:?}\n{BASE}\n{extra}",
                self.data_dir().display().to_string()
            ),
        )
        .expect("rewriting the test config");
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

    /// The data directory (SQLite file).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
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

    /// Starts again on the same data directory (on a new port).
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

    /// Waits for an order's terminal state by reading its whole stream.
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
