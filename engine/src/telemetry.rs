//! Logging setup and the metrics, in one place: every metric name with its
//! unit lives in [`names`] (mirrored by `ops/metrics.md`), and each typed
//! event below records its metric and, where it matters, its log line, so
//! the two cannot drift. Order ids go to logs, never to metric labels.
//!
//! May import: nothing of ours.

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::{sync::OnceLock, time::Duration};
use tracing_subscriber::{EnvFilter, fmt};

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `pretty` for people, `json` for collectors.
    pub format: LogFormat,
    /// Filter in `tracing` syntax, e.g. `info,swapline=debug`; `RUST_LOG`
    /// wins when set.
    pub level: String,
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` (on the API port, and on `listen` when set).
    pub enabled: bool,
    /// A separate address for `/metrics`, e.g. `127.0.0.1:9101`, for worker
    /// processes (which have no API port); empty: none.
    pub listen: String,
}

impl MetricsConfig {
    /// Rule problems, each starting with `key` (the section's path).
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.listen.is_empty() && self.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "{key}.listen: {:?} must be empty or an address such as 127.0.0.1:9101",
                self.listen
            ));
        }
        problems
    }
}

/// Installs the global log subscriber; `RUST_LOG` overrides `log.level`.
/// Calling it twice is harmless (the second call does nothing).
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match config.format {
        LogFormat::Pretty => builder.compact().try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Every metric name, with its unit in the name.
pub mod names {
    /// Gauge, `state`: jobs by queue state.
    pub const QUEUE_DEPTH: &str = "swapline_queue_depth";
    /// Gauge: age of the oldest waiting job.
    pub const QUEUE_OLDEST_WAITING: &str = "swapline_queue_oldest_waiting_seconds";
    /// Counter: jobs claimed.
    pub const QUEUE_CLAIMS: &str = "swapline_queue_claims_total";
    /// Counter: jobs acknowledged.
    pub const QUEUE_ACKS: &str = "swapline_queue_acks_total";
    /// Counter: jobs put back with a delay.
    pub const QUEUE_RETRIES: &str = "swapline_queue_retries_total";
    /// Counter: stalled jobs handed back.
    pub const QUEUE_RECOVERED: &str = "swapline_queue_recovered_total";
    /// Counter: claims that waited for the rate limit.
    pub const RATE_LIMIT_WAITS: &str = "swapline_rate_limit_waits_total";
    /// Counter: orders accepted.
    pub const ORDERS_CREATED: &str = "swapline_orders_created_total";
    /// Counter: order requests refused with 429 by `limits.orders_per_minute`.
    pub const ORDERS_RATE_LIMITED: &str = "swapline_orders_rate_limited_total";
    /// Counter: answers replayed for a repeated `Idempotency-Key`.
    pub const IDEMPOTENT_REPLAYS: &str = "swapline_idempotent_replays_total";
    /// Counter, `reason` = `in_use` | `reused`: `Idempotency-Key` requests
    /// refused with 409 or 422.
    pub const IDEMPOTENCY_CONFLICTS: &str = "swapline_idempotency_conflicts_total";
    /// Counter: expired `Idempotency-Key` records swept.
    pub const IDEMPOTENCY_KEYS_SWEPT: &str = "swapline_idempotency_keys_swept_total";
    /// Counter, `status`, `dex`: orders finished.
    pub const ORDERS_FINISHED: &str = "swapline_orders_finished_total";
    /// Histogram, `status`: creation to terminal event.
    pub const ORDER_DURATION: &str = "swapline_order_duration_seconds";
    /// Histogram, `stage`: time per pipeline stage.
    pub const STAGE_DURATION: &str = "swapline_stage_duration_seconds";
    /// Histogram: submission attempts per finished order.
    pub const ORDER_ATTEMPTS: &str = "swapline_order_attempts";
    /// Gauge: unfinished orders without progress for `monitor.stuck_after`.
    pub const ORDERS_STUCK: &str = "swapline_orders_stuck";
    /// Gauge: time since the last event of the longest-stuck order.
    pub const ORDERS_STUCK_OLDEST: &str = "swapline_orders_stuck_oldest_seconds";
    /// Gauge: open WebSockets.
    pub const WS_CONNECTIONS: &str = "swapline_ws_connections";
    /// Gauge: orders with a local WebSocket client.
    pub const WS_ORDERS_WATCHED: &str = "swapline_ws_orders_watched";
    /// Gauge: open `GET /api/stream` sessions.
    pub const WS_STREAM_SESSIONS: &str = "swapline_ws_stream_sessions";
    /// Counter: WebSocket messages sent.
    pub const WS_MESSAGES: &str = "swapline_ws_messages_sent_total";
    /// Counter: WebSocket payload bytes sent.
    pub const WS_BYTES: &str = "swapline_ws_bytes_sent_total";
    /// Counter: events replayed from the store.
    pub const WS_REPLAYED: &str = "swapline_ws_replayed_events_total";
    /// Counter: slow clients closed with 1013.
    pub const WS_SLOW_CLOSES: &str = "swapline_ws_slow_consumer_closes_total";
    /// Counter: clients closed for missing pongs.
    pub const WS_PING_TIMEOUTS: &str = "swapline_ws_ping_timeouts_total";
    /// Counter, `route`, `status`: HTTP requests.
    pub const HTTP_REQUESTS: &str = "swapline_http_requests_total";
    /// Histogram, `route`: HTTP latency.
    pub const HTTP_DURATION: &str = "swapline_http_request_duration_seconds";
    /// Gauge: open TCP connections on the API port (WebSockets included).
    pub const HTTP_CONNECTIONS: &str = "swapline_http_connections";
    /// Counter: connections closed at accept, `server.max_connections` open.
    pub const HTTP_CONNECTIONS_REFUSED: &str = "swapline_http_connections_refused_total";
    /// Counter, `reason`: connections closed for running out of time.
    pub const HTTP_CONNECTION_TIMEOUTS: &str = "swapline_http_connection_timeouts_total";
    /// Counter, `status` (`401`, `403`), `reason`: requests refused by
    /// authentication, scope or origin.
    pub const AUTH_REJECTIONS: &str = "swapline_auth_rejections_total";
    /// Counter: WebSocket tickets issued.
    pub const WS_TICKETS: &str = "swapline_ws_tickets_issued_total";
    /// Histogram, `plugin`: one strategy call.
    pub const PLUGIN_DURATION: &str = "swapline_plugin_call_duration_seconds";
    /// Counter, `plugin`: fuel consumed.
    pub const PLUGIN_FUEL: &str = "swapline_plugin_fuel_consumed_total";
    /// Counter, `plugin`, `reason`: failed strategy calls.
    pub const PLUGIN_FAILURES: &str = "swapline_plugin_failures_total";
    /// Counter, `result`: strategy hot reloads.
    pub const PLUGIN_RELOADS: &str = "swapline_plugin_reloads_total";
    /// Gauge, `pool`: connections open.
    pub const POOL_CONNECTIONS: &str = "swapline_pool_connections";
    /// Gauge, `pool`: connections idle.
    pub const POOL_IDLE: &str = "swapline_pool_idle";
    /// Gauge, `pool`: callers waiting for a connection.
    pub const POOL_WAITING: &str = "swapline_pool_waiting";
    /// Counter, `backend`: failed backend calls.
    pub const BACKEND_ERRORS: &str = "swapline_backend_errors_total";
    /// Gauge: worker loops running here.
    pub const WORKERS: &str = "swapline_workers";
    /// Counter: jobs released for making no progress within
    /// `worker.stall_timeout`.
    pub const JOBS_STALLED: &str = "swapline_jobs_stalled_total";
}

use names::*;

const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const COUNTS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 10.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// A connection pool's state, as adapters report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStatus {
    /// The pool's name, the `pool` label of the pool gauges (`postgres`,
    /// `redis`).
    pub pool: &'static str,
    /// Connections open.
    pub connections: usize,
    /// Of those, idle.
    pub idle: usize,
    /// Callers waiting for one.
    pub waiting: usize,
}

/// Installs the Prometheus recorder once per process and describes every
/// metric; returns the handle that renders `/metrics`.
pub fn metrics() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(SECONDS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(ORDER_ATTEMPTS.into()),
                    COUNTS,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(chain::LANDING_SLOTS.into()),
                    chain::SLOT_BUCKETS,
                )
            })
            .expect("bucket lists are not empty");
        let handle = match builder.install_recorder() {
            Ok(handle) => handle,
            // Another recorder is installed (tests): render from a private one.
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        };
        describe();
        handle
    })
}

fn describe() {
    describe_gauge!(QUEUE_DEPTH, "Jobs in the queue by state.");
    describe_gauge!(
        QUEUE_OLDEST_WAITING,
        metrics::Unit::Seconds,
        "Age of the oldest waiting job."
    );
    describe_counter!(QUEUE_CLAIMS, "Jobs claimed by this worker.");
    describe_counter!(QUEUE_ACKS, "Jobs acknowledged by this worker.");
    describe_counter!(QUEUE_RETRIES, "Jobs put back with a delay.");
    describe_counter!(QUEUE_RECOVERED, "Stalled jobs handed back to the queue.");
    describe_counter!(RATE_LIMIT_WAITS, "Claims that waited for the rate limit.");
    describe_counter!(ORDERS_CREATED, "Orders accepted.");
    describe_counter!(
        ORDERS_RATE_LIMITED,
        "Order requests refused with 429 by limits.orders_per_minute."
    );
    describe_counter!(IDEMPOTENT_REPLAYS, "Answers replayed for a repeated Idempotency-Key.");
    describe_counter!(
        IDEMPOTENCY_CONFLICTS,
        "Idempotency-Key requests refused: in_use (409) or reused (422)."
    );
    describe_counter!(IDEMPOTENCY_KEYS_SWEPT, "Expired Idempotency-Key records swept.");
    describe_counter!(ORDERS_FINISHED, "Orders that reached a terminal state.");
    describe_histogram!(
        ORDER_DURATION,
        metrics::Unit::Seconds,
        "Order creation to terminal event."
    );
    describe_histogram!(STAGE_DURATION, metrics::Unit::Seconds, "Time per pipeline stage.");
    describe_histogram!(ORDER_ATTEMPTS, "Submission attempts per finished order.");
    describe_gauge!(
        ORDERS_STUCK,
        "Unfinished orders without progress for monitor.stuck_after."
    );
    describe_gauge!(
        ORDERS_STUCK_OLDEST,
        metrics::Unit::Seconds,
        "Time since the last event of the longest-stuck order."
    );
    describe_gauge!(WS_CONNECTIONS, "Open WebSocket connections.");
    describe_gauge!(WS_ORDERS_WATCHED, "Orders with at least one local WebSocket client.");
    describe_gauge!(WS_STREAM_SESSIONS, "Open GET /api/stream sessions on this node.");
    describe_counter!(WS_MESSAGES, "WebSocket messages sent.");
    describe_counter!(WS_BYTES, metrics::Unit::Bytes, "WebSocket payload bytes sent.");
    describe_counter!(WS_REPLAYED, "Events replayed from the store.");
    describe_counter!(WS_SLOW_CLOSES, "Clients closed with 1013 for falling behind.");
    describe_counter!(WS_PING_TIMEOUTS, "Clients closed for not answering pings.");
    describe_counter!(HTTP_REQUESTS, "HTTP requests by route and status.");
    describe_histogram!(HTTP_DURATION, metrics::Unit::Seconds, "HTTP request latency.");
    describe_gauge!(HTTP_CONNECTIONS, "Open TCP connections on the API port.");
    describe_counter!(
        HTTP_CONNECTIONS_REFUSED,
        "Connections closed at accept because server.max_connections were open."
    );
    describe_counter!(
        HTTP_CONNECTION_TIMEOUTS,
        "Connections closed for not sending headers in time or idling too long."
    );
    describe_counter!(
        AUTH_REJECTIONS,
        "Requests refused by authentication (401), scope or origin (403), by reason."
    );
    describe_counter!(WS_TICKETS, "WebSocket tickets issued.");
    describe_histogram!(
        PLUGIN_DURATION,
        metrics::Unit::Seconds,
        "One strategy call through the wasm host."
    );
    describe_counter!(PLUGIN_FUEL, "Fuel consumed by strategies.");
    describe_counter!(PLUGIN_FAILURES, "Failed strategy calls by reason.");
    describe_counter!(PLUGIN_RELOADS, "Strategy hot reloads by result.");
    describe_gauge!(POOL_CONNECTIONS, "Connections open in a pool.");
    describe_gauge!(POOL_IDLE, "Idle connections in a pool.");
    describe_gauge!(POOL_WAITING, "Callers waiting for a pooled connection.");
    describe_counter!(BACKEND_ERRORS, "Failed backend calls.");
    describe_gauge!(WORKERS, "Worker loops running in this process.");
    describe_counter!(JOBS_STALLED, "Jobs released for making no progress.");
    counter!(JOBS_STALLED).absolute(0);
    connection_health::describe();
    chain::describe();
    // Counters start at zero so dashboards and alerts see the series at once.
    for name in [
        QUEUE_CLAIMS,
        QUEUE_ACKS,
        QUEUE_RETRIES,
        QUEUE_RECOVERED,
        RATE_LIMIT_WAITS,
        ORDERS_CREATED,
        ORDERS_RATE_LIMITED,
        IDEMPOTENT_REPLAYS,
        IDEMPOTENCY_KEYS_SWEPT,
        WS_MESSAGES,
        WS_BYTES,
        WS_REPLAYED,
        WS_SLOW_CLOSES,
        WS_PING_TIMEOUTS,
        HTTP_CONNECTIONS_REFUSED,
        WS_TICKETS,
    ] {
        counter!(name).absolute(0);
    }
    for reason in ["header_read", "keep_alive"] {
        counter!(HTTP_CONNECTION_TIMEOUTS, "reason" => reason).absolute(0);
    }
    for (status, reason) in AUTH_REASONS {
        counter!(AUTH_REJECTIONS, "status" => status.to_string(), "reason" => *reason).absolute(0);
    }
    for result in ["ok", "refused"] {
        counter!(PLUGIN_RELOADS, "result" => result).absolute(0);
    }
    for reason in ["in_use", "reused"] {
        counter!(IDEMPOTENCY_CONFLICTS, "reason" => reason).absolute(0);
    }
    for backend in ["store", "queue", "bus"] {
        counter!(BACKEND_ERRORS, "backend" => backend).absolute(0);
    }
    for name in [
        ORDERS_STUCK,
        ORDERS_STUCK_OLDEST,
        WS_CONNECTIONS,
        WS_ORDERS_WATCHED,
        WS_STREAM_SESSIONS,
        QUEUE_OLDEST_WAITING,
        WORKERS,
        HTTP_CONNECTIONS,
    ] {
        gauge!(name).set(0.0);
    }
}

/// The `(status, reason)` labels of [`names::AUTH_REJECTIONS`]: the 401
/// reasons are `pipeline::Rejection::reason`'s.
pub const AUTH_REASONS: &[(u16, &str)] = &[
    (401, "missing_credentials"),
    (401, "malformed_authorization"),
    (401, "unknown_key"),
    (401, "revoked_key"),
    (401, "unknown_ticket"),
    (401, "expired_ticket"),
    (401, "ticket_for_another_order"),
    (403, "scope"),
    (403, "origin"),
];

/// Typed events: each records its metrics (and logs where useful).
pub mod event {
    use super::*;

    /// An HTTP request was answered.
    pub fn http_request(route: &'static str, status: u16, took: Duration) {
        counter!(HTTP_REQUESTS, "route" => route, "status" => status.to_string()).increment(1);
        histogram!(HTTP_DURATION, "route" => route).record(took.as_secs_f64());
    }

    /// A connection on the API port opened (+1) or closed (−1).
    pub fn http_connection(delta: f64) {
        gauge!(HTTP_CONNECTIONS).increment(delta);
    }

    /// A connection was closed at accept: `max` were open already.
    pub fn http_connection_refused(max: u32) {
        counter!(HTTP_CONNECTIONS_REFUSED).increment(1);
        // Per connection, so debug: under a flood the counter is the signal.
        tracing::debug!(max_connections = max, "connection refused: server.max_connections open");
    }

    /// A connection was closed for running out of time; `reason` is
    /// `header_read` or `keep_alive`.
    pub fn http_connection_timed_out(reason: &'static str) {
        counter!(HTTP_CONNECTION_TIMEOUTS, "reason" => reason).increment(1);
        tracing::debug!(reason, "connection closed: out of time");
    }

    /// A request was refused with 401 or 403 for `reason` (never with the
    /// secret it carried).
    pub fn auth_rejected(status: u16, reason: &'static str) {
        counter!(AUTH_REJECTIONS, "status" => status.to_string(), "reason" => reason).increment(1);
        tracing::debug!(status, reason, "request refused");
    }

    /// A WebSocket ticket was issued.
    pub fn ws_ticket_issued() {
        counter!(WS_TICKETS).increment(1);
    }

    /// An order was accepted.
    pub fn order_created() {
        counter!(ORDERS_CREATED).increment(1);
    }

    /// An order request was refused by the caller's request limit (429).
    pub fn orders_rate_limited() {
        counter!(ORDERS_RATE_LIMITED).increment(1);
    }

    /// A stored answer was replayed for a repeated `Idempotency-Key`.
    pub fn idempotent_replay() {
        counter!(IDEMPOTENT_REPLAYS).increment(1);
    }

    /// An `Idempotency-Key` request was refused: `in_use` (409) or
    /// `reused` (422).
    pub fn idempotency_conflict(reason: &'static str) {
        counter!(IDEMPOTENCY_CONFLICTS, "reason" => reason).increment(1);
    }

    /// Expired `Idempotency-Key` records were swept.
    pub fn idempotency_keys_swept(n: u64) {
        counter!(IDEMPOTENCY_KEYS_SWEPT).increment(n);
        if n > 0 {
            tracing::debug!(swept = n, "expired idempotency keys swept");
        }
    }

    /// An order reached `confirmed` or `failed`.
    pub fn order_finished(status: &'static str, dex: &str, took: Duration, attempts: u32) {
        counter!(ORDERS_FINISHED, "status" => status, "dex" => dex.to_owned()).increment(1);
        histogram!(ORDER_DURATION, "status" => status).record(took.as_secs_f64());
        histogram!(ORDER_ATTEMPTS).record(f64::from(attempts));
    }

    /// A pipeline stage took this long.
    pub fn stage(stage: &'static str, took: Duration) {
        histogram!(STAGE_DURATION, "stage" => stage).record(took.as_secs_f64());
    }

    /// Queue operations of this worker.
    pub fn job_claimed() {
        counter!(QUEUE_CLAIMS).increment(1);
    }
    /// A job was acknowledged.
    pub fn job_acked() {
        counter!(QUEUE_ACKS).increment(1);
    }
    /// A job was put back with a delay.
    pub fn job_retried() {
        counter!(QUEUE_RETRIES).increment(1);
    }
    /// Stalled jobs were handed back.
    pub fn jobs_recovered(n: usize) {
        counter!(QUEUE_RECOVERED).increment(n as u64);
    }
    /// A claim waited for the rate limit.
    pub fn rate_limited() {
        counter!(RATE_LIMIT_WAITS).increment(1);
    }
    /// A worker loop started (+1) or stopped (−1).
    pub fn worker_running(delta: f64) {
        gauge!(WORKERS).increment(delta);
    }

    /// A backend call failed.
    pub fn backend_error(backend: &'static str) {
        counter!(BACKEND_ERRORS, "backend" => backend).increment(1);
    }

    /// A backend call missed its client-side deadline (its connection is
    /// closed and replaced).
    pub fn backend_timeout(backend: &'static str) {
        super::connection_health::timed_out(backend, "query");
        super::connection_health::reconnect(backend);
    }

    /// A job made no progress within the stall timeout and was released.
    pub fn job_stalled() {
        counter!(JOBS_STALLED).increment(1);
    }

    /// A WebSocket opened (+1) or closed (−1).
    pub fn ws_connection(delta: f64) {
        gauge!(WS_CONNECTIONS).increment(delta);
    }
    /// A stream session (`GET /api/stream`) opened (+1) or closed (−1).
    pub fn ws_stream_session(delta: f64) {
        gauge!(WS_STREAM_SESSIONS).increment(delta);
    }
    /// Orders watched on this node.
    pub fn ws_orders_watched(n: usize) {
        gauge!(WS_ORDERS_WATCHED).set(n as f64);
    }
    /// WebSocket messages went out (`bytes`: their payloads).
    pub fn ws_sent(messages: u64, bytes: u64) {
        counter!(WS_MESSAGES).increment(messages);
        counter!(WS_BYTES).increment(bytes);
    }
    /// `n` stored events were sent to WebSocket clients (also counted by
    /// [`ws_sent`]).
    pub fn ws_replayed(n: u64) {
        if n > 0 {
            counter!(WS_REPLAYED).increment(n);
        }
    }
    /// A slow client was closed.
    pub fn ws_slow_close() {
        counter!(WS_SLOW_CLOSES).increment(1);
    }
    /// A client missed its pong.
    pub fn ws_ping_timeout() {
        counter!(WS_PING_TIMEOUTS).increment(1);
    }

    /// A strategy call finished; `failure` is the `plugin_error` reason.
    pub fn plugin_call(plugin: &str, took: Duration, fuel: Option<u64>, failure: Option<&'static str>) {
        histogram!(PLUGIN_DURATION, "plugin" => plugin.to_owned()).record(took.as_secs_f64());
        if let Some(fuel) = fuel {
            counter!(PLUGIN_FUEL, "plugin" => plugin.to_owned()).increment(fuel);
        }
        if let Some(reason) = failure {
            counter!(PLUGIN_FAILURES, "plugin" => plugin.to_owned(), "reason" => reason).increment(1);
        }
    }
    /// Fuel one strategy call burnt.
    pub fn plugin_fuel(plugin: &str, fuel: u64) {
        counter!(PLUGIN_FUEL, "plugin" => plugin.to_owned()).increment(fuel);
    }

    /// A strategy was loaded: its series start at zero.
    pub fn plugin_loaded(plugin: &str, reasons: &[&'static str]) {
        counter!(PLUGIN_FUEL, "plugin" => plugin.to_owned()).increment(0);
        for reason in reasons {
            counter!(PLUGIN_FAILURES, "plugin" => plugin.to_owned(), "reason" => *reason).increment(0);
        }
    }

    /// A hot reload was applied or refused.
    pub fn plugin_reload(ok: bool) {
        counter!(PLUGIN_RELOADS, "result" => if ok { "ok" } else { "refused" }).increment(1);
    }

    /// Sampled queue state.
    pub fn queue_sampled(waiting: u64, active: u64, delayed: u64, oldest: Option<Duration>) {
        gauge!(QUEUE_DEPTH, "state" => "waiting").set(waiting as f64);
        gauge!(QUEUE_DEPTH, "state" => "active").set(active as f64);
        gauge!(QUEUE_DEPTH, "state" => "delayed").set(delayed as f64);
        gauge!(QUEUE_OLDEST_WAITING).set(oldest.map_or(0.0, |d| d.as_secs_f64()));
    }

    /// Sampled stuck orders.
    pub fn stuck_sampled(count: u64, oldest: Option<Duration>) {
        gauge!(ORDERS_STUCK).set(count as f64);
        gauge!(ORDERS_STUCK_OLDEST).set(oldest.map_or(0.0, |d| d.as_secs_f64()));
        if count > 0 {
            tracing::warn!(
                stuck = count,
                oldest_seconds = oldest.map_or(0, |d| d.as_secs()),
                "orders without progress"
            );
        }
    }

    /// Sampled pool state.
    pub fn pool_sampled(pool: &'static str, connections: usize, idle: usize, waiting: usize) {
        gauge!(POOL_CONNECTIONS, "pool" => pool).set(connections as f64);
        gauge!(POOL_IDLE, "pool" => pool).set(idle as f64);
        gauge!(POOL_WAITING, "pool" => pool).set(waiting as f64);
    }
}

/// Connection health of the backends: deadlines missed, connections
/// replaced, the bus subscriber's state. One block, apart from the rest, with
/// its names, descriptions and events.
pub mod connection_health {
    use metrics::{counter, describe_counter, describe_gauge, gauge};

    /// Counter, `backend`: commands that missed their client-side deadline
    /// (`postgres.query_timeout`, `redis.command_timeout`, a pool's wait, a
    /// subscriber PING).
    pub const BACKEND_TIMEOUTS: &str = "swapline_backend_timeouts_total";
    /// Counter, `backend`: connections closed as dead (timed out or
    /// dropped) and replaced by a new one.
    pub const BACKEND_RECONNECTS: &str = "swapline_backend_reconnects_total";
    /// Gauge: 1 while this node's bus subscriber is connected and answers
    /// its health PING, else 0 (always 1 on the memory bus).
    pub const BUS_SUBSCRIBER_UP: &str = "swapline_bus_subscriber_up";

    /// The `backend` labels of this block: the PostgreSQL store, the Redis
    /// queue's pool (queue, claim and request limits) and the Redis bus
    /// (publisher, subscriber).
    pub const BACKENDS: [&str; 3] = ["store", "queue", "bus"];

    pub(super) fn describe() {
        describe_counter!(
            BACKEND_TIMEOUTS,
            "Backend commands that missed their client-side deadline."
        );
        describe_counter!(BACKEND_RECONNECTS, "Backend connections closed as dead and replaced.");
        describe_gauge!(
            BUS_SUBSCRIBER_UP,
            "1 while this node's bus subscriber is connected and answers its health PING."
        );
        for backend in BACKENDS {
            counter!(BACKEND_TIMEOUTS, "backend" => backend).absolute(0);
            counter!(BACKEND_RECONNECTS, "backend" => backend).absolute(0);
        }
    }

    /// A command on `backend` missed its deadline.
    pub fn timed_out(backend: &'static str, what: &'static str) {
        counter!(BACKEND_TIMEOUTS, "backend" => backend).increment(1);
        tracing::warn!(backend, command = what, "backend command missed its deadline");
    }

    /// A connection to `backend` was closed as dead; a new one replaces it.
    pub fn reconnect(backend: &'static str) {
        counter!(BACKEND_RECONNECTS, "backend" => backend).increment(1);
    }

    /// The bus subscriber's state: `true` when connected and answering.
    pub fn bus_subscriber(up: bool) {
        gauge!(BUS_SUBSCRIBER_UP).set(if up { 1.0 } else { 0.0 });
    }
}

/// The chain: transactions sent, rebroadcast, landed, failed, dropped and
/// expired, how many slots landing took, and the tip. The engine's submit
/// stage calls [`chain::sent`] and [`chain::rebroadcast`]; the simulated
/// chain records the rest (only the process whose advance landed a
/// transaction counts it, so a sum over processes counts each once).
pub mod chain {
    use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

    /// Counter: transactions sent for the first time (each a new
    /// signature).
    pub const SENT: &str = "swapline_chain_transactions_sent_total";
    /// Counter: sends of a signature already sent (same bytes).
    pub const REBROADCASTS: &str = "swapline_chain_rebroadcasts_total";
    /// Counter: transactions landed and swapped.
    pub const LANDED: &str = "swapline_chain_transactions_landed_total";
    /// Counter: transactions landed with an error (no swap).
    pub const FAILED: &str = "swapline_chain_transactions_failed_total";
    /// Counter: transactions the chain dropped (never land).
    pub const DROPPED: &str = "swapline_chain_transactions_dropped_total";
    /// Counter: transactions still pending when their blockhash expired.
    pub const EXPIRED: &str = "swapline_chain_transactions_expired_total";
    /// Histogram: slots from the first send to landing.
    pub const LANDING_SLOTS: &str = "swapline_chain_landing_slots";
    /// Gauge: the latest slot this process saw.
    pub const TIP: &str = "swapline_chain_tip_slot";

    /// Buckets of [`LANDING_SLOTS`], slots.
    pub const SLOT_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 150.0];

    pub(super) fn describe() {
        describe_counter!(SENT, "Transactions sent for the first time.");
        describe_counter!(REBROADCASTS, "Sends of a signature already sent.");
        describe_counter!(LANDED, "Transactions landed and swapped.");
        describe_counter!(FAILED, "Transactions landed with an error (no swap).");
        describe_counter!(DROPPED, "Transactions the chain dropped.");
        describe_counter!(EXPIRED, "Transactions still pending when their blockhash expired.");
        describe_histogram!(LANDING_SLOTS, "Slots from the first send to landing.");
        describe_gauge!(TIP, "The latest slot this process saw.");
        for name in [SENT, REBROADCASTS, LANDED, FAILED, DROPPED, EXPIRED] {
            counter!(name).absolute(0);
        }
        gauge!(TIP).set(0.0);
        // Registered at once, so the series exists before the first landing.
        let _ = histogram!(LANDING_SLOTS);
    }

    /// The engine sent a new transaction.
    pub fn sent() {
        counter!(SENT).increment(1);
    }

    /// The engine sent a known transaction again.
    pub fn rebroadcast() {
        counter!(REBROADCASTS).increment(1);
    }

    /// A transaction landed and swapped, `slots` after it was first sent.
    pub fn landed(slots: u64) {
        counter!(LANDED).increment(1);
        histogram!(LANDING_SLOTS).record(slots as f64);
    }

    /// A transaction landed with an error.
    pub fn failed() {
        counter!(FAILED).increment(1);
    }

    /// The chain dropped a transaction.
    pub fn dropped() {
        counter!(DROPPED).increment(1);
    }

    /// `n` transactions expired.
    pub fn expired(n: u64) {
        if n > 0 {
            counter!(EXPIRED).increment(n);
        }
    }

    /// The tip this process saw.
    pub fn tip(slot: u64) {
        gauge!(TIP).set(slot as f64);
    }
}
