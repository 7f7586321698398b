//! Abuse limits: clients that never finish their headers, idle keep-alive
//! connections, too many connections, too many WebSockets from one address.
//! Each limit is set small in the test's config; `/health` must answer
//! while it is hit.

use crate::harness::{Backend, Engine, sol_usdc};
use std::time::{Duration, Instant};
use swapline::client;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Waits for the server to close `stream`: `Ok(elapsed)` on EOF or reset,
/// `Err` when it is still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(within.saturating_sub(start.elapsed()), stream.read(&mut buf)).await {
            Err(_) => return Err(format!("still open after {within:?}")),
            Ok(Ok(0) | Err(_)) => return Ok(start.elapsed()),
            // The server may answer something before closing; keep reading.
            Ok(Ok(_)) => continue,
        }
    }
}

/// Sends `GET path` on a keep-alive connection and reads one response:
/// its status and body.
async fn get_on(stream: &mut TcpStream, path: &str) -> (u16, String) {
    send_on(stream, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")).await
}

/// Writes `raw` and reads one response: its status and body.
async fn send_on(stream: &mut TcpStream, raw: &str) -> (u16, String) {
    stream.write_all(raw.as_bytes()).await.expect("writing the request");
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("a response within 5 s")
            .expect("reading the response");
        assert!(n > 0, "the connection closed before the response was complete");
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data);
        let Some(end) = text.find("\r\n\r\n") else { continue };
        let head = &text[..end];
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())
                    .flatten()
            })
            .expect("a Content-Length");
        if data.len() >= end + 4 + length {
            let status = head[9..12].parse().expect("a status code");
            let body = String::from_utf8_lossy(&data[end + 4..end + 4 + length]).into_owned();
            return (status, body);
        }
    }
}

/// The value of a metric series in Prometheus text (0 when absent).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn connections_that_never_finish_their_headers_are_closed_and_health_answers_throughout(backend: Backend) {
    let engine = Engine::start_on(backend, "[server]\nheader_read_timeout = \"1s\"\n");
    let addr = client::authority(&engine.url).to_owned();
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(&addr).await.expect("connecting");
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("writing half a request");
        slow.push(stream);
    }
    let opened = Instant::now();

    // /health answers on fresh connections while the 200 hang.
    let url = engine.url.clone();
    let health = tokio::spawn(async move {
        let mut answers = 0;
        while opened.elapsed() < Duration::from_millis(1500) {
            let response = client::get(&url, "/health").await.expect("/health is reachable");
            assert_eq!(response.status, 200, "/health while slow clients hang");
            answers += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        answers
    });

    for (i, stream) in slow.iter_mut().enumerate() {
        // 1 s limit, plus slack for a loaded machine; never the minutes
        // such a client could hold a socket before.
        let left = Duration::from_secs(4).saturating_sub(opened.elapsed());
        closed_within(stream, left)
            .await
            .unwrap_or_else(|e| panic!("slow connection {i}: {e}"));
    }
    assert!(
        opened.elapsed() >= Duration::from_millis(900),
        "closed before the header timeout"
    );
    assert!(health.await.unwrap() >= 5, "/health answered throughout");

    let metrics = client::get(&engine.url, "/metrics").await.unwrap();
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        metric(&text, "swapline_http_connection_timeouts_total{reason=\"header_read\"}") >= 200.0,
        "every slow connection is counted: {text}"
    );
}

async fn a_post_whose_body_stops_halfway_gets_408_and_creates_nothing(backend: Backend) {
    let engine = Engine::start_on(backend, "[server]\nheader_read_timeout = \"1s\"\n");
    let mut stream = TcpStream::connect(client::authority(&engine.url)).await.unwrap();
    let started = Instant::now();
    let (status, body) = send_on(
        &mut stream,
        "POST /api/orders/execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{\"tokenIn\":\"SOL\",",
    )
    .await;
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("request_timeout"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered after {:?}",
        started.elapsed()
    );
    let list = client::get(&engine.url, "/api/orders").await.unwrap().json();
    assert_eq!(list["orders"].as_array().unwrap().len(), 0, "{list}");
}

async fn an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout_not_the_header_one(backend: Backend) {
    let engine = Engine::start_on(
        backend,
        "[server]\nheader_read_timeout = \"1s\"\nkeep_alive_timeout = \"3s\"\n",
    );
    let mut stream = TcpStream::connect(client::authority(&engine.url)).await.unwrap();
    assert_eq!(get_on(&mut stream, "/health").await.0, 200);
    let idle = Instant::now();
    // Past the header timeout, the idle connection still serves.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert_eq!(
        get_on(&mut stream, "/health").await.0,
        200,
        "idle past header_read_timeout"
    );
    let idle_again = Instant::now();
    let waited = closed_within(&mut stream, Duration::from_secs(6))
        .await
        .expect("the idle connection is closed");
    assert!(
        idle_again.elapsed() >= Duration::from_millis(2800),
        "closed after {waited:?} idle; keep_alive_timeout is 3 s (first idle {:?})",
        idle.elapsed()
    );
}

async fn a_connection_beyond_max_connections_is_refused_while_an_open_one_still_answers(backend: Backend) {
    let engine = Engine::start_on(backend, "[server]\nmax_connections = 2\n");
    let addr = client::authority(&engine.url).to_owned();
    let mut kept = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(get_on(&mut kept, "/health").await.0, 200);
    let mut second = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(get_on(&mut second, "/health").await.0, 200);

    // The third is accepted by the kernel, then closed by the server.
    let mut third = TcpStream::connect(&addr).await.unwrap();
    let _ = third.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    closed_within(&mut third, Duration::from_secs(3))
        .await
        .expect("the connection over the limit is closed");

    // The open connections still answer, and the refusal is counted.
    assert_eq!(
        get_on(&mut kept, "/health").await.0,
        200,
        "an open connection still answers"
    );
    let (status, text) = get_on(&mut kept, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metric(&text, "swapline_http_connections_refused_total") >= 1.0,
        "the refusal is counted: {text}"
    );
    assert_eq!(metric(&text, "swapline_http_connections"), 2.0, "{text}");

    // A closed connection gives its place back.
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match client::get(&engine.url, "/health").await {
            Ok(response) if response.status == 200 => break,
            other => assert!(Instant::now() < deadline, "no place came back: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn one_websocket_more_than_max_per_ip_gets_429_without_upgrade(backend: Backend) {
    // One claim a minute: of two orders, one finishes and the other waits,
    // unfinished, so its WebSockets stay open.
    let engine = Engine::start_on(
        backend,
        "[worker]\nrate_limit_per_minute = 1\n\n[websocket]\nmax_per_ip = 3\n",
    );
    let orders = [engine.order(sol_usdc(1.0)).await, engine.order(sol_usdc(1.0)).await];
    let deadline = Instant::now() + Duration::from_secs(10);
    let id = loop {
        let mut waiting = None;
        for id in &orders {
            let status = engine.status(id).await["status"].as_str().unwrap_or("").to_owned();
            if status == "confirmed" || status == "failed" {
                waiting = orders.iter().find(|other| *other != id).cloned();
            }
        }
        if let Some(id) = waiting {
            break id;
        }
        assert!(Instant::now() < deadline, "neither order finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(engine.watch(&id, None).await);
    }
    let upgrade: &[(&str, &str)] = &[
        ("upgrade", "websocket"),
        ("connection", "upgrade"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
    ];
    let path = format!("/api/orders/status/{id}");
    let refused = client::request(&engine.url, "GET", &path, upgrade, None).await.unwrap();
    assert_eq!(refused.status.as_u16(), 429, "the 4th WebSocket from one address");
    assert_eq!(refused.json()["error"]["code"], "too_many_connections");
    assert!(!refused.headers.contains_key("upgrade"), "no 101, no upgrade");
    assert_eq!(client::get(&engine.url, "/health").await.unwrap().status, 200);
    assert_eq!(
        client::get(&engine.url, &path).await.unwrap().status,
        200,
        "plain requests are not limited"
    );

    // Closing one gives its place back.
    let mut first = open.remove(0);
    first.close().await.unwrap();
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if client::connect(&engine.url, &path).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed WebSocket's place never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

crate::on_both_backends!(
    connections_that_never_finish_their_headers_are_closed_and_health_answers_throughout,
    an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout_not_the_header_one,
    a_post_whose_body_stops_halfway_gets_408_and_creates_nothing,
    a_connection_beyond_max_connections_is_refused_while_an_open_one_still_answers,
    one_websocket_more_than_max_per_ip_gets_429_without_upgrade,
);
