//! Request handlers: one function per route, errors as `ApiError`. Every
//! API route authenticates first (`auth`) and needs a scope: `trade` to
//! create, `read` to look; a key sees only its own orders.

use super::{
    ApiState,
    auth::{self, Access},
    console, control,
    error::ApiError,
    http::{Body, json_response, query_param},
    idempotency, sse, stream,
    views::{Created, EventList, OrderList, OrderResponse, OrderView, TicketView},
    ws,
};
use crate::{
    domain::{Caller, Order, OrderId, Scope, Status, Ticket, Timestamp},
    store::{ListQuery, StreamCursor},
    telemetry::{self, event},
};
use http_body_util::{BodyExt, Limited};
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header};
use serde_json::json;
use std::{net::SocketAddr, sync::Arc};

/// The routes, matched once from the path; the metric label and the
/// allowed method come from the same match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Health,
    Ready,
    Metrics,
    Execute,
    List,
    Status(&'a str),
    Events(&'a str),
    WsTickets,
    /// `GET /api/stream`: the WebSocket of every order the key may see.
    Stream,
    /// The operator console: the page (`""`) or one of its assets.
    Console(&'a str),
    Cancel(&'a str),
    Retry(&'a str),
    Other,
}

impl<'a> Route<'a> {
    fn of(segments: &[&'a str], metrics: bool) -> Self {
        match *segments {
            ["health"] => Route::Health,
            ["ready"] => Route::Ready,
            ["metrics"] if metrics => Route::Metrics,
            ["api", "orders", "execute"] => Route::Execute,
            ["api", "orders"] => Route::List,
            ["api", "orders", "status", id] => Route::Status(id),
            ["api", "orders", id, "events"] => Route::Events(id),
            ["api", "ws-tickets"] => Route::WsTickets,
            ["api", "stream"] => Route::Stream,
            ["console"] => Route::Console(""),
            ["console", asset] => Route::Console(asset),
            ["api", "orders", id, "cancel"] => Route::Cancel(id),
            ["api", "orders", id, "retry"] => Route::Retry(id),
            _ => Route::Other,
        }
    }

    /// The route template, for metric labels (never an order id).
    fn template(self) -> &'static str {
        match self {
            Route::Health => "/health",
            Route::Ready => "/ready",
            Route::Metrics => "/metrics",
            Route::Execute => "/api/orders/execute",
            Route::List => "/api/orders",
            Route::Status(_) => "/api/orders/status/{id}",
            Route::Events(_) => "/api/orders/{id}/events",
            Route::WsTickets => "/api/ws-tickets",
            Route::Stream => "/api/stream",
            Route::Console(_) => "/console",
            Route::Cancel(_) => "/api/orders/{id}/cancel",
            Route::Retry(_) => "/api/orders/{id}/retry",
            Route::Other => "other",
        }
    }

    /// The one method the route answers.
    fn method(self) -> Option<Method> {
        match self {
            Route::Execute | Route::WsTickets | Route::Cancel(_) | Route::Retry(_) => Some(Method::POST),
            Route::Other => None,
            _ => Some(Method::GET),
        }
    }

    /// The scope a key needs here; `None`: open to anyone (probes, metrics).
    fn scope(self) -> Option<Scope> {
        match self {
            Route::Execute | Route::Cancel(_) | Route::Retry(_) => Some(Scope::Trade),
            Route::List | Route::Status(_) | Route::Events(_) | Route::WsTickets | Route::Stream => Some(Scope::Read),
            Route::Health | Route::Ready | Route::Metrics | Route::Console(_) | Route::Other => None,
        }
    }
}

/// Routes a request.
pub(super) async fn handle(state: Arc<ApiState>, request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let method = request.method().clone();
    let started = std::time::Instant::now();
    let route = Route::of(&segments, state.settings.metrics);
    let origin = auth::origin(request.headers());
    let result = match (route, route.method()) {
        (Route::Other, _) => Err(ApiError::no_route(&path)),
        (_, Some(allowed)) if method == Method::OPTIONS => auth::preflight(&state, origin.as_deref(), &allowed),
        (_, Some(allowed)) if allowed != method => Err(not_allowed(&method, allowed)),
        (Route::Metrics, _) => Ok(metrics_response()),
        (Route::Health, _) => health(&state).await,
        (Route::Ready, _) => ready(&state).await,
        // Open: the page holds no data; what it fetches needs a key.
        (Route::Console(name), _) => console::asset(name)
            .map(console::response)
            .ok_or_else(|| ApiError::no_route(&path)),
        _ => authenticated(&state, route, request, peer).await,
    };
    let mut response = result.unwrap_or_else(ApiError::into_response);
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        auth::add_cors(&state, origin.as_deref(), &mut response);
    }
    tracing::debug!(%method, path, status = response.status().as_u16(), "request");
    event::http_request(route.template(), response.status().as_u16(), started.elapsed());
    response
}

/// The API routes: origin (upgrades), credentials, scope, then the route.
async fn authenticated(
    state: &Arc<ApiState>,
    route: Route<'_>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, ApiError> {
    let upgrade =
        matches!(route, Route::Status(_) | Route::Stream) && fastwebsockets::upgrade::is_upgrade_request(&request);
    if upgrade {
        auth::check_upgrade_origin(state, request.headers())?;
    }
    let access = auth::access(state, &request, peer, upgrade).await?;
    if let Some(scope) = route.scope()
        && !access.caller.may(scope)
    {
        return Err(auth::forbidden(&access.caller, scope));
    }
    let caller = &access.caller;
    match route {
        Route::Execute => create_order(state, request, caller).await,
        Route::List => list_orders(state, &request, caller).await,
        Route::Status(id) => {
            let id = id.to_owned();
            order_status(state, request, &id, &access).await
        }
        Route::Events(id) => order_events(state, &request, id, caller).await,
        Route::WsTickets => create_ticket(state, request, caller).await,
        Route::Stream => open_stream(state, request, &access).await,
        Route::Cancel(id) => control::cancel_order(state, id, caller).await,
        Route::Retry(id) => control::retry_order(state, &request, id, caller).await,
        Route::Health | Route::Ready | Route::Metrics | Route::Console(_) | Route::Other => {
            unreachable!("answered before authentication")
        }
    }
}

/// `GET /metrics`: Prometheus text format.
pub(super) fn metrics_response() -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
        .body(Body::new(telemetry::metrics().render()))
        .expect("static response parts are valid")
}

/// 405 with the `Allow` header (RFC 9110, 15.5.6).
fn not_allowed(method: &Method, allowed: Method) -> ApiError {
    ApiError {
        allow: Some(allowed.clone()),
        ..ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed here; use {allowed}"),
        )
    }
}

pub(super) fn parse_id(id: &str) -> Result<OrderId, ApiError> {
    id.parse().map_err(|_| ApiError {
        field: Some("orderId".into()),
        ..ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_order_id",
            format!("{id:?} is not a UUID"),
        )
    })
}

fn order_not_found(id: OrderId) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "order_not_found", format!("no order {id}"))
}

pub(super) fn view(state: &ApiState, order: Order) -> OrderView {
    let decimals = |symbol: &str| state.tokens.get(symbol).map_or(0, |t| t.decimals);
    let (din, dout) = (decimals(&order.token_in), decimals(&order.token_out));
    OrderView::new(order, din, dout)
}

/// A backend check within `within` (`ApiSettings::probe_timeout`): a check
/// that misses it counts as down, so neither probe waits on a silent
/// backend.
async fn probe<T, E: std::fmt::Display>(
    within: std::time::Duration,
    check: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(within, check).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", within.as_millis())),
    }
}

/// `GET /health`, the liveness probe: always 200 (a failing backend is
/// reported, not fatal), answered within `probe_timeout`. `status` is
/// `degraded` when the store, the queue or this node's bus subscriber is
/// down.
async fn health(state: &ApiState) -> Result<Response<Body>, ApiError> {
    let hub = state.hub.stats();
    let within = state.settings.probe_timeout;
    let (store, queue) = tokio::join!(
        probe(within, state.store.ping()),
        probe(within, state.intake.queue_depth())
    );
    let store = match store {
        Ok(()) => json!({"status": "ok"}),
        Err(e) => json!({"status": "down", "error": e}),
    };
    let queue = match queue {
        Ok(depth) => {
            json!({"status": "ok", "waiting": depth.waiting, "active": depth.active, "delayed": depth.delayed})
        }
        Err(e) => json!({"status": "down", "error": e}),
    };
    let bus = match state.bus.health() {
        Ok(()) => json!({"status": "ok"}),
        Err(e) => json!({"status": "down", "error": e.to_string()}),
    };
    let healthy = [&store, &queue, &bus].iter().all(|check| check["status"] == "ok");
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "status": if healthy { "ok" } else { "degraded" },
            "timestamp": Timestamp::now(),
            "websocket": {"connectedOrders": hub.orders, "totalClients": hub.clients},
            "queue": queue,
            "store": store,
            "bus": bus,
        }),
    ))
}

/// `GET /ready`, the readiness probe: 200 only when this node's bus
/// subscriber is healthy, the store has no pending migration and answers,
/// and the queue answers, each within `probe_timeout`; else 503 with the
/// first reason.
async fn ready(state: &ApiState) -> Result<Response<Body>, ApiError> {
    let within = state.settings.probe_timeout;
    let problem = match state.bus.health() {
        Err(e) => Some(e.to_string()),
        Ok(()) => {
            let (migrations, queue) = tokio::join!(
                probe(within, state.store.pending_migrations()),
                probe(within, state.intake.queue_depth())
            );
            match (migrations, queue) {
                (Err(e), _) => Some(e),
                (Ok(pending), _) if !pending.is_empty() => Some(format!(
                    "migrations {pending:?} are not applied; run `swapline migrate`"
                )),
                (Ok(_), Err(e)) => Some(e),
                (Ok(_), Ok(_)) => None,
            }
        }
    };
    Ok(match problem {
        None => json_response(StatusCode::OK, &json!({"status": "ready"})),
        Some(reason) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "not_ready", "reason": reason}),
        ),
    })
}

/// The body of a JSON `POST`, read within the limits every client gets:
/// `Content-Type: application/json` (else 415), at most
/// `server.body_limit_bytes` declared or read (else 413), and all of it
/// within `server.header_read_timeout` of the headers (else 408), so a
/// client that stops halfway through its body cannot hold the connection.
async fn json_body(state: &ApiState, request: Request<Incoming>) -> Result<bytes::Bytes, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send JSON with Content-Type: application/json (got {content_type:?})"),
        ));
    }
    let limit = state.settings.body_limit;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body exceeds {limit} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    let read_timeout = state.settings.header_read_timeout;
    let reading = Limited::new(request.into_body(), limit as usize).collect();
    let body = tokio::time::timeout(read_timeout, reading)
        .await
        .map_err(|_| request_timeout(read_timeout))?
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                too_large()
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    format!("reading the body failed: {e}"),
                )
            }
        })?;
    Ok(body.to_bytes())
}

async fn create_order(
    state: &ApiState,
    request: Request<Incoming>,
    caller: &Caller,
) -> Result<Response<Body>, ApiError> {
    // The caller's request limit counts every POST, before any work.
    if let Some(allowance) = state.intake.admit(caller).await
        && !allowance.allowed
    {
        return Err(ApiError::rate_limited(allowance));
    }
    let idempotency_key = idempotency::key_of(request.headers(), state.settings.require_idempotency_key)?;
    let base_url = ws_base(state, &request);
    let bytes = json_body(state, request).await?;
    // Kept as written: numbers are read from their text, never via f64.
    let body: &serde_json::value::RawValue = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let order = state.intake.order_from(body)?;
    if let Some(key) = idempotency_key {
        // The answer is stored with the order, so a replay on any node is
        // this one, byte for byte (its ticket included).
        let answer = created(state, &base_url, order.id, order.job_id.clone(), caller).await;
        return idempotency::submit(state, order, caller, &key, &answer).await;
    }
    let accepted = state.intake.submit(order, caller).await.map_err(ApiError::from)?;
    let created = created(state, &base_url, accepted.order_id, accepted.job_id, caller).await;
    Ok(json_response(StatusCode::CREATED, &created))
}

/// The `201` answer for an order accepted on this node (with a fresh
/// WebSocket ticket in `wsUrl` when auth is required).
pub(super) async fn created(
    state: &ApiState,
    base_url: &str,
    order_id: OrderId,
    job_id: String,
    caller: &Caller,
) -> Created {
    Created {
        success: true,
        order_id: order_id.to_string(),
        job_id,
        status: Status::Pending,
        message: "Order created and enqueued for processing".into(),
        ws_url: order_ws_url(state, base_url, order_id, caller).await,
    }
}

/// The `wsUrl` of a new order: with a fresh ticket when `auth.required`
/// (a browser cannot send the key on the upgrade). Should the ticket fail
/// to store, the bare URL still answers: the order exists, and
/// `POST /api/ws-tickets` can issue one later.
async fn order_ws_url(state: &ApiState, base_url: &str, order: OrderId, caller: &Caller) -> String {
    let url = format!("{base_url}/api/orders/status/{order}");
    if !state.settings.auth_required {
        return url;
    }
    match state
        .keys
        .issue_ticket(order, caller.owner(), state.settings.ticket_ttl)
        .await
    {
        Ok(ticket) => {
            event::ws_ticket_issued();
            format!("{url}?ticket={}", ticket.secret)
        }
        Err(e) => {
            tracing::warn!(order_id = %order, error = %e, "could not issue a WebSocket ticket for a new order");
            url
        }
    }
}

/// `POST /api/ws-tickets` with `{"orderId": "…"}`: a single-use ticket for
/// an order the caller may read (another key's order is 404); with `{}` or
/// `{"orderId": null}`, a single-use ticket for `GET /api/stream`. Any other
/// field is 400 `unknown_field`; anything but an object, or an `orderId`
/// that is not a string, is 400 `invalid_order_id`.
async fn create_ticket(
    state: &ApiState,
    request: Request<Incoming>,
    caller: &Caller,
) -> Result<Response<Body>, ApiError> {
    let base_url = ws_base(state, &request);
    let bytes = json_body(state, request).await?;
    let body: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    if let Some(fields) = body.as_object()
        && let Some(unknown) = fields.keys().find(|name| *name != "orderId")
    {
        return Err(ApiError {
            field: Some(unknown.clone()),
            ..ApiError::new(
                StatusCode::BAD_REQUEST,
                "unknown_field",
                format!(
                    "unknown field `{unknown}`: send {{\"orderId\": \"<uuid>\"}} for an order's socket, or {{}} for the stream"
                ),
            )
        });
    }
    if body.is_object() && body.get("orderId").is_none_or(serde_json::Value::is_null) {
        // No order: a ticket for the stream of every order the key may see.
        let ticket = state
            .keys
            .issue_stream_ticket(caller.owner(), state.settings.ticket_ttl)
            .await
            .map_err(ApiError::store)?;
        event::ws_ticket_issued();
        return Ok(json_response(
            StatusCode::CREATED,
            &TicketView {
                success: true,
                ws_url: format!("{base_url}/api/stream?ticket={}", ticket.secret),
                ticket: ticket.secret,
                expires_at: ticket.expires_at,
            },
        ));
    }
    let Some(text) = body.get("orderId").and_then(|v| v.as_str()) else {
        return Err(ApiError {
            field: Some("orderId".into()),
            ..ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_order_id",
                "send {\"orderId\": \"<uuid>\"} for an order's socket, or {} for the stream",
            )
        });
    };
    let id = parse_id(text)?;
    visible_order(state, id, caller).await?;
    let ticket = state
        .keys
        .issue_ticket(id, caller.owner(), state.settings.ticket_ttl)
        .await
        .map_err(ApiError::store)?;
    event::ws_ticket_issued();
    Ok(json_response(
        StatusCode::CREATED,
        &TicketView {
            success: true,
            ws_url: format!("{base_url}/api/orders/status/{id}?ticket={}", ticket.secret),
            ticket: ticket.secret,
            expires_at: ticket.expires_at,
        },
    ))
}

/// The order, if `caller` may see it; another key's order is
/// `order_not_found`, like one that does not exist.
pub(super) async fn visible_order(state: &ApiState, id: OrderId, caller: &Caller) -> Result<Order, ApiError> {
    state
        .store
        .order(id)
        .await
        .map_err(ApiError::store)?
        .filter(|order| auth::may_see(caller, order))
        .ok_or_else(|| order_not_found(id))
}

/// `ws://host` from the configured public URL or the request's `Host`.
pub(super) fn ws_base(state: &ApiState, request: &Request<Incoming>) -> String {
    let public = state.settings.public_url.trim_end_matches('/');
    if let Some(rest) = public.strip_prefix("https://") {
        return format!("wss://{rest}");
    }
    if let Some(rest) = public.strip_prefix("http://") {
        return format!("ws://{rest}");
    }
    if !public.is_empty() {
        return public.to_owned();
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or("localhost");
    format!("ws://{host}")
}

async fn order_status(
    state: &Arc<ApiState>,
    mut request: Request<Incoming>,
    id: &str,
    access: &Access,
) -> Result<Response<Body>, ApiError> {
    let id = parse_id(id)?;
    let upgrade = fastwebsockets::upgrade::is_upgrade_request(&request);
    // Parsed on a plain `GET` and an upgrade too (which have no use for
    // them), so a malformed value is refused the same way everywhere.
    let since = since(&request)?;
    let last_event_id = sse::last_event_id(request.headers())?;
    // Checked now (signature, expiry, order); used up only once the
    // upgrade is certain, so a request refused for another reason (a bad
    // `since`, the address's limit) leaves the ticket usable.
    let ticket = match access.ticket.as_deref() {
        Some(secret) => Some(
            state
                .keys
                .check_ticket(secret, id)
                .await
                .map_err(ApiError::store)?
                .map_err(auth::unauthorized)?,
        ),
        None => None,
    };
    let order = visible_order(state, id, &access.caller).await?;
    if !upgrade && sse::wanted(request.headers()) {
        // Server-Sent Events: `Last-Event-ID` (a reconnect) wins over `?since`.
        let since = last_event_id.unwrap_or(since);
        check_since(since, &order)?;
        return Ok(sse::respond(state, id, since));
    }
    if !upgrade {
        let response = OrderResponse {
            success: true,
            order: view(state, order),
        };
        return Ok(json_response(StatusCode::OK, &response));
    }
    // Refused before the 101: a cursor past the order's history would skip
    // events (its terminal one included) that never come.
    check_since(since, &order)?;
    let session_state = state.clone();
    upgrade_to(state, &mut request, access, ticket.as_ref(), move |socket| {
        ws::session(socket, session_state, id, since)
    })
    .await
}

/// Answers a WebSocket upgrade with 101 and runs `session` on the socket
/// (tracked, so shutdown waits for it). The caller's address must have room
/// (`websocket.max_per_ip`, else 429); a ticket is used up only here, once
/// everything else about the request was fine, so a refused upgrade leaves
/// it usable.
async fn upgrade_to<F, S>(
    state: &Arc<ApiState>,
    request: &mut Request<Incoming>,
    access: &Access,
    ticket: Option<&Ticket>,
    session: F,
) -> Result<Response<Body>, ApiError>
where
    F: FnOnce(fastwebsockets::WebSocket<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>) -> S + Send + 'static,
    S: Future<Output = ()> + Send + 'static,
{
    let max_per_ip = state.settings.ws_max_per_ip;
    let slot = state
        .hub
        .claim_peer_slot(access.caller.ip, max_per_ip)
        .ok_or_else(|| too_many_connections(max_per_ip))?;
    let (response, upgraded) = fastwebsockets::upgrade::upgrade(request)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_websocket_request", e.to_string()))?;
    if let Some(ticket) = ticket {
        // One upgrade per ticket, on any node.
        state
            .keys
            .use_ticket(ticket)
            .await
            .map_err(ApiError::store)?
            .map_err(auth::unauthorized)?;
    }
    state.sessions.spawn(async move {
        // Held for the session's life: the address's allowance comes back
        // when the socket closes.
        let _slot = slot;
        match upgraded.await {
            Ok(socket) => session(socket).await,
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    });
    let (parts, _) = response.into_parts();
    Ok(Response::from_parts(parts, Body::empty()))
}

/// `GET /api/stream`: upgrades to the WebSocket of every event of every
/// order the caller may see (`stream`), after `?cursor=` when given (400
/// `invalid_cursor` for one that is not a stream cursor, or one past the
/// stream's head: no event has it, so the session would wait for nothing;
/// on SQLite every cursor's xid is 0). Same auth as an
/// order's socket (a key, or a stream ticket from `POST /api/ws-tickets {}`;
/// an order's ticket is refused), same per-address limit; a plain `GET` is
/// 426.
async fn open_stream(
    state: &Arc<ApiState>,
    mut request: Request<Incoming>,
    access: &Access,
) -> Result<Response<Body>, ApiError> {
    if !fastwebsockets::upgrade::is_upgrade_request(&request) {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "GET /api/stream is a WebSocket: send Connection: Upgrade and Upgrade: websocket",
        ));
    }
    let bad_cursor = |message: String| ApiError {
        field: Some("cursor".into()),
        ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_cursor", message)
    };
    let cursor = match query_param(request.uri().query(), "cursor") {
        None => None,
        Some(text) => Some(text.parse::<StreamCursor>().map_err(|e| bad_cursor(e.to_string()))?),
    };
    if let Some(cursor) = cursor {
        // As `check_since` for an order's `since`. The head only grows, so
        // a cursor a stream sent is never past it. (SQLite's head has xid
        // 0: a cursor with another xid is past it.)
        let head = state.store.stream_head().await.map_err(ApiError::store)?;
        if cursor > head {
            return Err(bad_cursor(format!(
                "cursor={cursor} is past the stream's last event ({head}); send the last cursor you saw, \
                 or none to start from now"
            )));
        }
    }
    // Checked now, used up once the upgrade is certain (as on an order's).
    let (ticket, audience, key) = match access.ticket.as_deref() {
        Some(secret) => {
            let (ticket, audience) = state
                .keys
                .check_stream_ticket(secret, state.settings.auth_required)
                .await
                .map_err(ApiError::store)?
                .map_err(auth::unauthorized)?;
            let key = ticket.key;
            (Some(ticket), audience, key)
        }
        None => (None, stream::audience(&access.caller), access.caller.owner()),
    };
    let session_state = state.clone();
    upgrade_to(state, &mut request, access, ticket.as_ref(), move |socket| {
        stream::session(socket, session_state, stream::Viewer { audience, key }, cursor)
    })
    .await
}

/// 408 Request Timeout (RFC 9110, section 15.5.9): the body did not arrive
/// within `server.header_read_timeout` of the headers.
fn request_timeout(limit: std::time::Duration) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        format!(
            "the request body did not arrive within {}",
            humantime::format_duration(limit)
        ),
    )
}

/// 429 Too Many Requests (RFC 6585, section 4) for a WebSocket upgrade
/// from an address that already holds `websocket.max_per_ip` sockets; no
/// 101 is sent and the connection stays usable for plain requests.
fn too_many_connections(max_per_ip: u32) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_connections",
        format!("this address already has {max_per_ip} WebSockets open here; close one first"),
    )
}

fn since(request: &Request<Incoming>) -> Result<u64, ApiError> {
    match query_param(request.uri().query(), "since") {
        None => Ok(0),
        Some(value) => value.parse().map_err(|_| ApiError {
            field: Some("since".into()),
            ..ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_since",
                format!("since={value:?} must be a non-negative integer (the last seq you saw)"),
            )
        }),
    }
}

/// 400 `invalid_since` when `since` is past the order's last stored event
/// (`lastSeq`): a client never saw such a seq, so its cursor is from
/// another order or made up. `since` equal to `lastSeq` is valid (nothing
/// new yet, or the order is finished).
fn check_since(since: u64, order: &Order) -> Result<(), ApiError> {
    if since <= order.last_seq {
        return Ok(());
    }
    Err(ApiError {
        field: Some("since".into()),
        ..ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_since",
            format!(
                "since={since} is past the order's last event (seq {}); send the last seq you saw",
                order.last_seq
            ),
        )
    })
}

async fn order_events(
    state: &ApiState,
    request: &Request<Incoming>,
    id: &str,
    caller: &Caller,
) -> Result<Response<Body>, ApiError> {
    let id = parse_id(id)?;
    let since = since(request)?;
    let order = visible_order(state, id, caller).await?;
    check_since(since, &order)?;
    let events = state.store.events(id, since).await.map_err(ApiError::store)?;
    Ok(json_response(
        StatusCode::OK,
        &EventList {
            success: true,
            order_id: id.to_string(),
            events,
        },
    ))
}

async fn list_orders(
    state: &ApiState,
    request: &Request<Incoming>,
    caller: &Caller,
) -> Result<Response<Body>, ApiError> {
    let query = request.uri().query();
    let bad = |field: &str, code: &'static str, message: String| ApiError {
        field: Some(field.to_owned()),
        ..ApiError::new(StatusCode::BAD_REQUEST, code, message)
    };
    let status = match query_param(query, "status") {
        None => None,
        Some(text) => Some(Status::parse(&text).ok_or_else(|| {
            let known: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
            bad(
                "status",
                "invalid_status",
                format!("unknown status {text:?}; one of {}", known.join(", ")),
            )
        })?),
    };
    let max = state.settings.max_page_size;
    let limit = match query_param(query, "limit") {
        None => 50.min(max),
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                bad(
                    "limit",
                    "invalid_limit",
                    format!("limit={text:?} must be between 1 and {max}"),
                )
            })?,
    };
    let cursor = match query_param(query, "cursor") {
        None => None,
        Some(text) => Some(text.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
            bad(
                "cursor",
                "invalid_cursor",
                format!("cursor={text:?} is not one this API gave"),
            )
        })?),
    };
    // Dead letters: `status=failed&code=deadline_exceeded`.
    let code = query_param(query, "code").filter(|c| !c.is_empty());
    let page = state
        .store
        .list_orders(&ListQuery {
            status,
            code,
            limit,
            cursor,
            // A key without `admin` lists its own orders only.
            owner: if caller.sees_all() { None } else { caller.owner() },
        })
        .await
        .map_err(ApiError::store)?;
    Ok(json_response(
        StatusCode::OK,
        &OrderList {
            success: true,
            orders: page.orders.into_iter().map(|o| view(state, o)).collect(),
            next_cursor: page.next_cursor.map(|c| c.to_string()),
        },
    ))
}
