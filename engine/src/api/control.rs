//! Handlers of order control: `POST /api/orders/{id}/cancel` and
//! `POST /api/orders/{id}/retry` (scope `trade`; a key acts on its own
//! orders, `admin` on any). The rules live in the pipeline's use cases;
//! this file maps them to HTTP.

use super::{
    ApiState,
    error::ApiError,
    handlers::{created, parse_id, view, visible_order, ws_base},
    http::{Body, json_response},
    views::OrderResponse,
};
use crate::{domain::Caller, pipeline::Cancelled};
use hyper::{Request, Response, StatusCode, body::Incoming};

/// `POST /api/orders/{id}/cancel`: 200 with the order, now `cancelled`
/// (also when it was cancelled before: the call is idempotent); 409
/// `cannot_cancel` once it was submitted, confirmed or failed; 404 for an
/// order the caller may not see.
pub(super) async fn cancel_order(state: &ApiState, id: &str, caller: &Caller) -> Result<Response<Body>, ApiError> {
    let id = parse_id(id)?;
    let order = visible_order(state, id, caller).await?;
    match state.intake.cancel(&order).await? {
        Cancelled::Now => tracing::info!(order_id = %id, "order cancelled"),
        Cancelled::Already => tracing::debug!(order_id = %id, "order was already cancelled"),
    }
    let order = visible_order(state, id, caller).await?;
    Ok(json_response(
        StatusCode::OK,
        &OrderResponse {
            success: true,
            order: view(state, order),
        },
    ))
}

/// `POST /api/orders/{id}/retry`: 201 with the new order (the answer of
/// `POST /api/orders/execute`); it has `retryOf` = `id`, and the old order
/// `retriedBy` = the new id. 409 `cannot_retry` unless the order is
/// `failed` or `cancelled`; 409 `already_retried` when it has a retry.
pub(super) async fn retry_order(
    state: &ApiState,
    request: &Request<Incoming>,
    id: &str,
    caller: &Caller,
) -> Result<Response<Body>, ApiError> {
    let id = parse_id(id)?;
    let original = visible_order(state, id, caller).await?;
    let accepted = state.intake.retry(&original).await?;
    tracing::info!(order_id = %id, retry = %accepted.order_id, "order retried");
    let base_url = ws_base(state, request);
    let created = created(state, &base_url, accepted.order_id, accepted.job_id, caller).await;
    Ok(json_response(StatusCode::CREATED, &created))
}
