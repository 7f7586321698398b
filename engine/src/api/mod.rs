//! The HTTP API: routes, handlers, error bodies, the WebSocket hub.
//!
//! `POST /api/orders/execute`, `GET /api/orders/status/{id}` (JSON, or a
//! WebSocket upgrade), `GET /api/orders/{id}/events`, `GET /api/orders`,
//! `GET /api/stream` (a WebSocket of every order a key may see, `stream`),
//! `POST /api/ws-tickets`, `GET /health`, `GET /ready`, and the operator
//! console's page and assets under `GET /console` (`console`). Requests
//! authenticate with an API key (`auth`); a key sees only its own orders. HTTP only: orders are created through
//! the intake use case (`pipeline::Intake`), events are read from the store
//! and heard on the bus; never the queue, `config` or an adapter.
//!
//! May import: `domain`, `pipeline`, `store`, `bus`, `telemetry`.

mod auth;
pub mod config;
mod conn;
pub mod console;
mod control;
mod error;
mod handlers;
pub mod http;
pub mod hub;
pub mod idempotency;
mod sse;
pub mod stream;
pub mod views;
pub mod ws;

use crate::{
    bus::Bus,
    domain::TokenRegistry,
    pipeline::{Intake, Keys},
    store::Store,
    telemetry::event,
};
pub use config::{AuthConfig, LimitsConfig, OrdersConfig, ServerConfig, WebSocketConfig};
pub use error::ApiError;
pub use hub::Hub;
use hyper::{Request, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use std::{sync::Arc, time::Duration};
pub use stream::StreamHub;
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// API settings from the configuration.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Base URL for `wsUrl`; empty: from the `Host` header.
    pub public_url: String,
    /// Largest request body, bytes.
    pub body_limit: u64,
    /// Largest page of `GET /api/orders`.
    pub max_page_size: u32,
    /// WebSocket ping period.
    pub ping_interval: Duration,
    /// WebSocket pong deadline.
    pub ping_timeout: Duration,
    /// Events buffered per WebSocket client.
    pub client_buffer: usize,
    /// Longest wait for the bus to confirm a WebSocket's subscription
    /// (`websocket.subscribe_timeout`).
    pub subscribe_timeout: Duration,
    /// Serve `/metrics`.
    pub metrics: bool,
    /// Time to receive a request's headers (`server.header_read_timeout`).
    pub header_read_timeout: Duration,
    /// Idle time before a keep-alive connection is closed
    /// (`server.keep_alive_timeout`).
    pub keep_alive_timeout: Duration,
    /// Most connections open at once (`server.max_connections`).
    pub max_connections: u32,
    /// Most WebSockets open at once per client address
    /// (`websocket.max_per_ip`).
    pub ws_max_per_ip: u32,
    /// Every API request needs a key (`auth.required`).
    pub auth_required: bool,
    /// Lifetime of a WebSocket ticket (`auth.ticket_ttl`).
    pub ticket_ttl: Duration,
    /// Browser origins allowed (`server.allowed_origins`).
    pub allowed_origins: Vec<String>,
    /// Refuse `POST /api/orders/execute` without an `Idempotency-Key`
    /// (`orders.require_idempotency_key`).
    pub require_idempotency_key: bool,
    /// Deadline of each backend check of `/health` and `/ready`: the
    /// longest a configured backend's own deadlines allow (checkout plus
    /// command), at least 2 s; a check that misses it counts as down.
    pub probe_timeout: Duration,
}

/// Everything handlers share.
pub struct ApiState {
    /// Source of truth (reads only: every write goes through `intake`).
    pub store: Arc<dyn Store>,
    /// The order-intake use case (POST).
    pub intake: Intake,
    /// API keys and WebSocket tickets.
    pub keys: Keys,
    /// Local WebSocket fan-out.
    pub hub: Arc<Hub>,
    /// This node's reader of the stream of every order (`GET /api/stream`).
    pub stream: Arc<StreamHub>,
    /// The bus, for its subscriber's health (`/ready`, `/health`).
    pub bus: Arc<dyn Bus>,
    /// Tradable tokens.
    pub tokens: Arc<TokenRegistry>,
    /// Settings.
    pub settings: ApiSettings,
    /// Cancelled on shutdown; sessions close with 1001.
    pub shutdown: CancellationToken,
    /// WebSocket sessions, awaited on shutdown.
    pub sessions: TaskTracker,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").finish_non_exhaustive()
    }
}

/// Serves only `GET /metrics` on `listener` until `shutdown` (for workers,
/// which have no API port).
pub async fn serve_metrics(listener: TcpListener, shutdown: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
        };
        tokio::spawn(async move {
            let service = service_fn(|request: Request<Incoming>| async move {
                let response = if request.uri().path() == "/metrics" {
                    handlers::metrics_response()
                } else {
                    ApiError::no_route(request.uri().path()).into_response()
                };
                Ok::<_, std::convert::Infallible>(response)
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Serves HTTP on `listener` until `state.shutdown`, then drains: open
/// connections finish their request, WebSockets close with 1001.
///
/// Abuse limits (see `conn`): at most `max_connections` sockets at once
/// (one more is accepted and closed at once, so the process never runs out
/// of file descriptors because of idle clients); a connection must send its
/// request headers within `header_read_timeout` and is closed after
/// `keep_alive_timeout` idle between requests. A connection out of time is
/// dropped (no request is in service then, so nothing is lost).
pub async fn serve(listener: TcpListener, state: Arc<ApiState>, drain: Duration) {
    let connections = TaskTracker::new();
    let shutdown = state.shutdown.clone();
    let max_connections = state.settings.max_connections;
    let permits = Arc::new(Semaphore::new(max_connections as usize));
    let limits = conn::Timeouts {
        header_read: state.settings.header_read_timeout,
        keep_alive: state.settings.keep_alive_timeout,
    };
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Closed at once rather than left in the backlog: the client
            // sees a closed connection, not a hang.
            event::http_connection_refused(max_connections);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let clock = conn::Clock::new();
        let stream = conn::Tracked::new(stream, clock.clone(), permit);
        let state = state.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let served = clock.clone();
            let service = service_fn(move |request: Request<Incoming>| {
                let state = state.clone();
                let busy = served.busy();
                async move {
                    let response = handlers::handle(state, request, peer).await;
                    drop(busy);
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            // No hyper timer: `conn::Clock` keeps the header and idle
            // limits apart (hyper's header timeout is also its idle one).
            let connection = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => Some(result),
                why = clock.expired(limits) => {
                    event::http_connection_timed_out(why.as_str());
                    None
                }
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    // A client still short of its headers would otherwise
                    // hold the drain until its end.
                    tokio::select! {
                        result = connection.as_mut() => Some(result),
                        why = clock.expired(limits) => {
                            event::http_connection_timed_out(why.as_str());
                            None
                        }
                    }
                }
            };
            if let Some(Err(e)) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    state.sessions.close();
    let drained = tokio::time::timeout(drain, async {
        connections.wait().await;
        state.sessions.wait().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections still open after the drain period");
    }
}
