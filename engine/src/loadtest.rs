//! `swapline loadtest`: `orders` posts orders at a fixed offered rate (open
//! loop: latency counts from each order's scheduled start, so a slow server
//! cannot hide its queueing), follows each over its WebSocket, and checks
//! the event stream (gapless `seq` from 1, one terminal event, close 1000);
//! `fanout` spreads many WebSocket clients over a few orders and checks that
//! every client saw every event.
//!
//! May import: `client`, `domain`.

use crate::{
    client::{self, Message},
    domain::Timestamp,
};
use serde::Serialize;
use serde_json::{Value, json};
use std::{
    collections::BTreeMap,
    fmt,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};
use tokio::sync::Semaphore;

/// What to send.
#[derive(Debug, Clone, clap::Args)]
pub struct OrdersOptions {
    /// Engine base URL (loopback by default).
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub url: String,
    /// Orders to post.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// Offered rate in orders/s (default: as fast as --concurrency allows).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Orders in flight at most.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Token sold.
    #[arg(long, default_value = "SOL")]
    pub token_in: String,
    /// Token bought.
    #[arg(long, default_value = "USDC")]
    pub token_out: String,
    /// Amount per order, whole tokens.
    #[arg(long, default_value = "0.1")]
    pub amount: String,
    /// Give up on one order after this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// API key secret (`swl_…`, from `swapline keys create`), sent as
    /// `Authorization: Bearer` on every request and upgrade; needed when the
    /// engine runs with `auth.required`.
    #[arg(long, value_name = "SECRET")]
    pub api_key: Option<String>,
    /// Send a fresh `Idempotency-Key` with every order (to measure what
    /// keeping keys costs).
    #[arg(long)]
    pub idempotency_keys: bool,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 90th.
    pub p90: f64,
    /// 99th.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    /// From samples in milliseconds.
    pub fn of(mut samples: Vec<f64>) -> Self {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
        Percentiles {
            count: samples.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: *samples.last().expect("not empty"),
        }
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrdersReport {
    /// Orders attempted.
    pub orders: usize,
    /// Orders that ended `confirmed`.
    pub confirmed: usize,
    /// Orders that ended `failed` (the engine's verdict, not a tool error).
    pub failed: usize,
    /// Wall time from the first scheduled post to the last terminal event, s.
    pub elapsed_seconds: f64,
    /// Terminal orders per second over `elapsed_seconds`.
    pub orders_per_second: f64,
    /// From scheduled start (with `--rate`; else from the actual start) to
    /// the `201`.
    pub post_latency_ms: Percentiles,
    /// From scheduled start to the terminal event's arrival.
    pub terminal_latency_ms: Percentiles,
    /// Server timestamp to arrival, for events that arrived live.
    pub event_delivery_ms: Percentiles,
    /// Events seen in total.
    pub events: usize,
    /// Orders whose seq had a hole, a duplicate or went backwards.
    pub sequence_errors: usize,
    /// Orders that never reached a terminal event.
    pub unfinished: usize,
    /// Tool-side errors by kind (HTTP status, connect failure, timeout…).
    pub errors: BTreeMap<String, usize>,
}

impl OrdersReport {
    /// No errors, no sequence problems, every order terminal.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty() && self.sequence_errors == 0 && self.unfinished == 0
    }
}

impl fmt::Display for OrdersReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = |p: &Percentiles| {
            format!(
                "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                p.p50, p.p90, p.p99, p.max
            )
        };
        writeln!(
            f,
            "orders:            {} ({} confirmed, {} failed)",
            self.orders, self.confirmed, self.failed
        )?;
        writeln!(f, "elapsed:           {:.2} s", self.elapsed_seconds)?;
        writeln!(f, "throughput:        {:.1} orders/s", self.orders_per_second)?;
        writeln!(f, "POST latency:      {}", p(&self.post_latency_ms))?;
        writeln!(f, "to terminal:       {}", p(&self.terminal_latency_ms))?;
        writeln!(
            f,
            "event delivery:    {} ({} live events)",
            p(&self.event_delivery_ms),
            self.event_delivery_ms.count
        )?;
        writeln!(f, "events:            {}", self.events)?;
        writeln!(f, "sequence errors:   {}", self.sequence_errors)?;
        writeln!(f, "unfinished:        {}", self.unfinished)?;
        if self.errors.is_empty() {
            write!(f, "errors:            none")
        } else {
            write!(f, "errors:            {:?}", self.errors)
        }
    }
}

#[derive(Default)]
struct Trace {
    post_ms: Option<f64>,
    terminal_ms: Option<f64>,
    finished_at: Option<Instant>,
    outcome: Option<String>,
    delivery_ms: Vec<f64>,
    events: usize,
    sequence_ok: bool,
    error: Option<String>,
}

/// Runs the orders load test, ticking `bar` per finished order.
pub async fn run_orders(options: OrdersOptions, bar: indicatif::ProgressBar) -> OrdersReport {
    let options = Arc::new(options);
    let slots = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..options.count {
        let scheduled = match options.rate {
            Some(rate) if rate > 0.0 => started + Duration::from_secs_f64(index as f64 / rate),
            _ => started,
        };
        let (options, slots) = (options.clone(), slots.clone());
        tasks.spawn(async move {
            tokio::time::sleep_until(scheduled.into()).await;
            let _slot = slots.acquire_owned().await.expect("never closed");
            // Closed loop (no rate): an order starts when it gets a slot.
            let scheduled = if options.rate.is_some() {
                scheduled
            } else {
                Instant::now()
            };
            match tokio::time::timeout(options.timeout, follow(&options, scheduled)).await {
                Ok(trace) => trace,
                Err(_) => Trace {
                    error: Some("timeout".into()),
                    ..Trace::default()
                },
            }
        });
    }
    let mut report = OrdersReport {
        orders: options.count,
        ..OrdersReport::default()
    };
    let (mut post, mut terminal, mut delivery) = (Vec::new(), Vec::new(), Vec::new());
    let mut last_finish = started;
    while let Some(joined) = tasks.join_next().await {
        bar.inc(1);
        let trace = joined.unwrap_or_else(|e| Trace {
            error: Some(format!("task: {e}")),
            ..Trace::default()
        });
        post.extend(trace.post_ms);
        terminal.extend(trace.terminal_ms);
        delivery.extend(trace.delivery_ms);
        report.events += trace.events;
        if let Some(at) = trace.finished_at {
            last_finish = last_finish.max(at);
        }
        match trace.outcome.as_deref() {
            Some("confirmed") => report.confirmed += 1,
            Some("failed") => report.failed += 1,
            _ => report.unfinished += 1,
        }
        if trace.outcome.is_some() && !trace.sequence_ok {
            report.sequence_errors += 1;
        }
        if let Some(error) = trace.error {
            *report.errors.entry(error).or_default() += 1;
        }
    }
    bar.finish_and_clear();
    report.elapsed_seconds = last_finish.duration_since(started).as_secs_f64();
    report.orders_per_second = if report.elapsed_seconds > 0.0 {
        (report.confirmed + report.failed) as f64 / report.elapsed_seconds
    } else {
        0.0
    };
    report.post_latency_ms = Percentiles::of(post);
    report.terminal_latency_ms = Percentiles::of(terminal);
    report.event_delivery_ms = Percentiles::of(delivery);
    report
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `POST /api/orders/execute`, with the key when there is one.
async fn post_order(
    url: &str,
    api_key: Option<&str>,
    idempotency_key: Option<&str>,
    body: &serde_json::Value,
) -> Result<client::Response, client::ClientError> {
    let auth = api_key.map(|key| format!("Bearer {key}"));
    let mut headers = vec![("content-type", "application/json")];
    headers.extend(auth.as_deref().map(|a| ("authorization", a)));
    headers.extend(idempotency_key.map(|k| ("idempotency-key", k)));
    let bytes = bytes::Bytes::from(serde_json::to_vec(body).expect("JSON values serialise"));
    client::request(url, "POST", "/api/orders/execute", &headers, Some(bytes)).await
}

/// Opens an order's WebSocket, with the key when there is one.
async fn connect(url: &str, api_key: Option<&str>, id: &str) -> Result<client::Socket, client::ClientError> {
    let auth = api_key.map(|key| format!("Bearer {key}"));
    let headers: Vec<(&str, &str)> = auth.as_deref().map(|a| ("authorization", a)).into_iter().collect();
    client::connect_with(url, &format!("/api/orders/status/{id}"), &headers).await
}

async fn follow(options: &OrdersOptions, scheduled: Instant) -> Trace {
    let mut trace = Trace::default();
    let body = json!({"tokenIn": options.token_in, "tokenOut": options.token_out, "amount": options.amount});
    let idempotency_key = options.idempotency_keys.then(|| uuid::Uuid::new_v4().to_string());
    let posted = post_order(
        &options.url,
        options.api_key.as_deref(),
        idempotency_key.as_deref(),
        &body,
    )
    .await;
    let response = match posted {
        Ok(response) => response,
        Err(e) => {
            trace.error = Some(format!("post: {}", kind_of(&e.to_string())));
            return trace;
        }
    };
    trace.post_ms = Some(ms(scheduled.elapsed()));
    if response.status.as_u16() != 201 {
        trace.error = Some(format!("post: HTTP {}", response.status.as_u16()));
        return trace;
    }
    let Some(id) = response.json()["orderId"].as_str().map(str::to_owned) else {
        trace.error = Some("post: no orderId".into());
        return trace;
    };
    let connected_at = SystemTime::now();
    let mut socket = match connect(&options.url, options.api_key.as_deref(), &id).await {
        Ok(socket) => socket,
        Err(e) => {
            trace.error = Some(format!("websocket: {}", kind_of(&e.to_string())));
            return trace;
        }
    };
    let mut expected = 1u64;
    trace.sequence_ok = true;
    loop {
        match socket.next().await {
            Ok(Message::Text(text)) => {
                let arrived = SystemTime::now();
                let event: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let Some(seq) = event["seq"].as_u64() else {
                    continue; // greeting
                };
                trace.events += 1;
                if seq != expected {
                    trace.sequence_ok = false;
                }
                expected = seq + 1;
                if let Some(at) = event["timestamp"].as_str().and_then(Timestamp::parse)
                    && at.0 >= connected_at
                {
                    trace
                        .delivery_ms
                        .push(ms(arrived.duration_since(at.0).unwrap_or_default()));
                }
                if let Some(kind @ ("confirmed" | "failed")) = event["type"].as_str() {
                    if trace.outcome.is_some() {
                        trace.sequence_ok = false;
                    }
                    trace.outcome = Some(kind.to_owned());
                    trace.terminal_ms = Some(ms(scheduled.elapsed()));
                    trace.finished_at = Some(Instant::now());
                }
            }
            Ok(Message::Close(code, _)) => {
                if code != 1000 || trace.outcome.is_none() {
                    trace.error = Some(format!("websocket: closed with {code} before the end"));
                }
                return trace;
            }
            Err(e) => {
                trace.error = Some(format!("websocket: {}", kind_of(&e.to_string())));
                return trace;
            }
        }
    }
}

/// A short error kind: the message up to its first colon.
fn kind_of(message: &str) -> String {
    message.split(':').next().unwrap_or(message).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let p = Percentiles::of((1..=100).map(f64::from).collect());
        assert_eq!((p.count, p.p50, p.p90, p.p99, p.max), (100, 50.0, 90.0, 99.0, 100.0));
        assert_eq!(Percentiles::of(vec![]), Percentiles::default());
        assert_eq!(Percentiles::of(vec![7.0]).p99, 7.0);
    }
}

/// What `swapline loadtest fanout` does.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutOptions {
    /// Engine base URL (loopback by default).
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub url: String,
    /// WebSocket clients.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Orders the clients spread over (1: all on one order).
    #[arg(long, default_value_t = 1)]
    pub orders: usize,
    /// Connections opened at once.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Amount per order, whole tokens.
    #[arg(long, default_value = "0.1")]
    pub amount: String,
    /// Give up on a client after this long.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// API key secret, sent as `Authorization: Bearer` (as for `orders`).
    #[arg(long, value_name = "SECRET")]
    pub api_key: Option<String>,
}

/// The outcome of a fan-out run.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FanoutReport {
    /// Clients attempted.
    pub clients: usize,
    /// Orders watched.
    pub orders: usize,
    /// TCP connect + upgrade + `subscribed` greeting.
    pub connect_ms: Percentiles,
    /// Server timestamp to arrival, for events that arrived live.
    pub event_delivery_ms: Percentiles,
    /// Messages received by all clients.
    pub messages: usize,
    /// Messages per second over the run.
    pub messages_per_second: f64,
    /// Wall time from the first connect to the last close, s.
    pub elapsed_seconds: f64,
    /// Clients whose stream had a gap, a duplicate, no terminal event or a
    /// close other than 1000.
    pub clients_missing_events: usize,
    /// Tool-side errors by kind.
    pub errors: BTreeMap<String, usize>,
}

impl FanoutReport {
    /// Every client saw every event of its order and a clean close.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty() && self.clients_missing_events == 0
    }
}

impl fmt::Display for FanoutReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = |p: &Percentiles| {
            format!(
                "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                p.p50, p.p90, p.p99, p.max
            )
        };
        writeln!(f, "clients:           {} over {} orders", self.clients, self.orders)?;
        writeln!(f, "connect:           {}", p(&self.connect_ms))?;
        writeln!(
            f,
            "event delivery:    {} ({} live events)",
            p(&self.event_delivery_ms),
            self.event_delivery_ms.count
        )?;
        writeln!(
            f,
            "messages:          {} ({:.0}/s over {:.2} s)",
            self.messages, self.messages_per_second, self.elapsed_seconds
        )?;
        writeln!(f, "missing events:    {} clients", self.clients_missing_events)?;
        if self.errors.is_empty() {
            write!(f, "errors:            none")
        } else {
            write!(f, "errors:            {:?}", self.errors)
        }
    }
}

struct Watch {
    connect_ms: Option<f64>,
    delivery_ms: Vec<f64>,
    messages: usize,
    complete: bool,
    error: Option<String>,
}

/// A progress bar on stderr (hidden when `quiet`).
pub fn progress(len: usize, what: &str, quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} ({elapsed})")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Runs the fan-out test: `orders` orders, `clients` sockets spread over them.
pub async fn run_fanout(options: FanoutOptions, bar: indicatif::ProgressBar) -> FanoutReport {
    let mut report = FanoutReport {
        clients: options.clients,
        orders: options.orders.max(1),
        ..FanoutReport::default()
    };
    let mut ids = Vec::new();
    for _ in 0..report.orders {
        let body = json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": options.amount});
        match post_order(&options.url, options.api_key.as_deref(), None, &body).await {
            Ok(r) if r.status.as_u16() == 201 => {
                ids.push(r.json()["orderId"].as_str().unwrap_or_default().to_owned());
            }
            Ok(r) => {
                *report
                    .errors
                    .entry(format!("post: HTTP {}", r.status.as_u16()))
                    .or_default() += 1
            }
            Err(e) => {
                *report
                    .errors
                    .entry(format!("post: {}", kind_of(&e.to_string())))
                    .or_default() += 1
            }
        }
    }
    if ids.is_empty() {
        return report;
    }
    let started = Instant::now();
    let connecting = Arc::new(Semaphore::new(options.connect_concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..options.clients {
        let (url, api_key, id, connecting, timeout) = (
            options.url.clone(),
            options.api_key.clone(),
            ids[index % ids.len()].clone(),
            connecting.clone(),
            options.timeout,
        );
        tasks.spawn(async move {
            match tokio::time::timeout(timeout, watch(&url, api_key, &id, connecting)).await {
                Ok(watch) => watch,
                Err(_) => Watch {
                    connect_ms: None,
                    delivery_ms: Vec::new(),
                    messages: 0,
                    complete: false,
                    error: Some("timeout".into()),
                },
            }
        });
    }
    let (mut connect, mut delivery) = (Vec::new(), Vec::new());
    while let Some(joined) = tasks.join_next().await {
        bar.inc(1);
        let Ok(watch) = joined else {
            *report.errors.entry("task".into()).or_default() += 1;
            continue;
        };
        connect.extend(watch.connect_ms);
        delivery.extend(watch.delivery_ms);
        report.messages += watch.messages;
        if !watch.complete {
            report.clients_missing_events += 1;
        }
        if let Some(error) = watch.error {
            *report.errors.entry(error).or_default() += 1;
        }
    }
    bar.finish_and_clear();
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    report.messages_per_second = report.messages as f64 / report.elapsed_seconds.max(f64::EPSILON);
    report.connect_ms = Percentiles::of(connect);
    report.event_delivery_ms = Percentiles::of(delivery);
    report
}

async fn watch(url: &str, api_key: Option<String>, id: &str, connecting: Arc<Semaphore>) -> Watch {
    let mut watch = Watch {
        connect_ms: None,
        delivery_ms: Vec::new(),
        messages: 0,
        complete: false,
        error: None,
    };
    let slot = connecting.acquire_owned().await.expect("never closed");
    let started = Instant::now();
    let mut socket = match connect(url, api_key.as_deref(), id).await {
        Ok(socket) => socket,
        Err(e) => {
            watch.error = Some(format!("connect: {}", kind_of(&e.to_string())));
            return watch;
        }
    };
    let mut subscribed_at = None;
    let mut expected = 1;
    let mut sequence_ok = true;
    let mut terminal = false;
    let mut slot = Some(slot);
    loop {
        match socket.next().await {
            Ok(Message::Text(text)) => {
                let arrived = SystemTime::now();
                watch.messages += 1;
                let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let Some(seq) = value["seq"].as_u64() else {
                    if value["type"] == "subscribed" {
                        watch.connect_ms = Some(ms(started.elapsed()));
                        subscribed_at = Some(arrived);
                        // Connected: let the next client start.
                        slot.take();
                    }
                    continue;
                };
                sequence_ok &= seq == expected && !terminal;
                expected = seq + 1;
                terminal |= matches!(value["type"].as_str(), Some("confirmed" | "failed"));
                if let (Some(at), Some(joined)) =
                    (value["timestamp"].as_str().and_then(Timestamp::parse), subscribed_at)
                    && at.0 >= joined
                {
                    watch
                        .delivery_ms
                        .push(ms(arrived.duration_since(at.0).unwrap_or_default()));
                }
            }
            Ok(Message::Close(code, _)) => {
                watch.complete = sequence_ok && terminal && code == 1000;
                if code != 1000 {
                    watch.error = Some(format!("closed with {code}"));
                }
                return watch;
            }
            Err(e) => {
                watch.error = Some(format!("websocket: {}", kind_of(&e.to_string())));
                return watch;
            }
        }
    }
}
