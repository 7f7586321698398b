//! Error bodies: `{"success": false, "error": {"code", "message", "field"}}`
//! with the right status.

use super::http::Body;
use crate::{
    domain::FieldError,
    pipeline::{Allowance, CancelError, QueueError, RetryError, SubmitError},
    store::{StoreError, StoredAnswer},
};

use hyper::{
    Response, StatusCode,
    header::{self, HeaderValue},
};
use serde::Serialize;

/// An error answered to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable snake_case code.
    pub code: &'static str,
    /// Human words.
    pub message: String,
    /// The request field at fault.
    pub field: Option<String>,
    /// The method to name in an `Allow` header (405 answers).
    pub allow: Option<hyper::Method>,
    /// The `WWW-Authenticate` challenge of a 401 or 403 answer
    /// (RFC 6750 §3, RFC 9110 §11.6.1), e.g. `Bearer realm="swapline"`.
    pub challenge: Option<Box<str>>,
    /// The request limit's state, for the `Retry-After`, `RateLimit-Policy`
    /// and `RateLimit` headers (429 answers).
    pub rate_limit: Option<Box<Allowance>>,
}

/// The policy name in the `RateLimit-Policy` and `RateLimit` fields.
pub(super) const ORDERS_POLICY: &str = "orders";

#[derive(Serialize)]
struct ErrorBody<'a> {
    success: bool,
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    /// An error without a field.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            allow: None,
            challenge: None,
            rate_limit: None,
        }
    }

    /// 429 `rate_limited`: the caller sent more order requests than its
    /// limit allows (RFC 6585, 4; RFC 9110, 10.2.3 for `Retry-After`).
    pub fn rate_limited(allowance: Allowance) -> Self {
        let wait = retry_after_secs(&allowance);
        ApiError {
            rate_limit: Some(Box::new(allowance)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "too many order requests: the limit is {} a minute; retry in {wait} s",
                    allowance.limit
                ),
            )
        }
    }

    /// 404 for a path no route matches.
    pub fn no_route(path: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("no route for {path}"))
    }

    /// 503 for a backend that is down.
    pub fn unavailable(code: &'static str, error: impl std::fmt::Display) -> Self {
        tracing::error!(code, error = %error, "backend unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code,
            format!("temporarily unavailable: {error}"),
        )
    }

    /// A store failure: 503 `store_unavailable` when trying again later may
    /// succeed ([`StoreError::is_transient`]), else 500 `store_error`.
    pub fn store(error: StoreError) -> Self {
        if error.is_transient() {
            Self::unavailable("store_unavailable", error)
        } else {
            Self::internal("store_error", error)
        }
    }

    /// A queue failure: 503 `queue_unavailable` when transient
    /// ([`QueueError::is_transient`]), else 500 `queue_error`.
    pub fn queue(error: QueueError) -> Self {
        if error.is_transient() {
            Self::unavailable("queue_unavailable", error)
        } else {
            Self::internal("queue_error", error)
        }
    }

    /// 500 for a backend that answered, but not as it should.
    pub fn internal(code: &'static str, error: impl std::fmt::Display) -> Self {
        tracing::error!(code, error = %error, "backend error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            code,
            format!("internal error: {error}"),
        )
    }

    /// The status and JSON body this error answers with, as stored for an
    /// `Idempotency-Key` replay.
    pub fn answer(&self) -> StoredAnswer {
        let body = ErrorBody {
            success: false,
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
            },
        };
        StoredAnswer {
            status: self.status.as_u16(),
            body: serde_json::to_string(&body).expect("error bodies serialise"),
        }
    }

    /// The response.
    pub fn into_response(self) -> Response<Body> {
        let mut response = answer_response(&self.answer());
        if let Some(allowance) = &self.rate_limit {
            let headers = response.headers_mut();
            for (name, value) in rate_limit_fields(allowance) {
                headers.insert(
                    name,
                    HeaderValue::from_str(&value).expect("numbers and quotes are valid"),
                );
            }
        }
        if let Some(allow) = &self.allow {
            let value =
                hyper::header::HeaderValue::from_str(allow.as_str()).expect("method names are valid header values");
            response.headers_mut().insert(hyper::header::ALLOW, value);
        }
        if let Some(challenge) = self
            .challenge
            .as_deref()
            .and_then(|c| hyper::header::HeaderValue::from_str(c).ok())
        {
            response
                .headers_mut()
                .insert(hyper::header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

/// A JSON response carrying exactly `answer`'s status and body.
pub(super) fn answer_response(answer: &StoredAnswer) -> Response<Body> {
    Response::builder()
        .status(answer.status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::new(answer.body.clone()))
        .expect("stored statuses are valid")
}

/// Whole seconds until a refused request may be sent again (at least 1).
fn retry_after_secs(allowance: &Allowance) -> u64 {
    allowance.retry_after.as_secs_f64().ceil().max(1.0) as u64
}

/// The header fields of a request limit's state, per the IETF httpapi
/// RateLimit header fields draft (draft-ietf-httpapi-ratelimit-headers-10,
/// <https://datatracker.ietf.org/doc/draft-ietf-httpapi-ratelimit-headers/>):
/// `RateLimit-Policy: "orders";q=<limit>;w=60` (a quota of `q` requests per
/// `w` seconds) and `RateLimit: "orders";r=<remaining>;t=<seconds until
/// the quota is fully restored>`; on a refusal also `Retry-After: <seconds>`
/// (RFC 9110, 10.2.3), which takes precedence for when to retry.
pub(super) fn rate_limit_fields(allowance: &Allowance) -> Vec<(header::HeaderName, String)> {
    let mut fields = vec![
        (
            header::HeaderName::from_static("ratelimit-policy"),
            format!("\"{ORDERS_POLICY}\";q={};w=60", allowance.limit),
        ),
        (
            header::HeaderName::from_static("ratelimit"),
            format!(
                "\"{ORDERS_POLICY}\";r={};t={}",
                allowance.remaining,
                allowance.reset.as_secs_f64().ceil() as u64
            ),
        ),
    ];
    if !allowance.allowed {
        fields.push((header::RETRY_AFTER, retry_after_secs(allowance).to_string()));
    }
    fields
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Invalid(e) => ApiError::from(e),
            SubmitError::Store(e) => ApiError::store(e),
            SubmitError::Queue(e) => ApiError::queue(e),
            // RFC 9110, 15.5.21: the content was understood but cannot be
            // processed (the key belongs to another request).
            SubmitError::KeyReused => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was already used with a different request; send a new key for a new order",
            ),
            // RFC 9110, 15.5.10: conflicts with the current state (the first
            // request with this key is still being handled).
            SubmitError::KeyInUse => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_in_use",
                "a request with this Idempotency-Key is still being handled; retry shortly to get its answer",
            ),
        }
    }
}

impl From<CancelError> for ApiError {
    fn from(e: CancelError) -> Self {
        match e {
            // RFC 9110, 15.5.10: conflicts with the order's current state.
            CancelError::Cannot(..) => ApiError::new(StatusCode::CONFLICT, "cannot_cancel", e.to_string()),
            CancelError::Store(e) => ApiError::store(e),
        }
    }
}

impl From<RetryError> for ApiError {
    fn from(e: RetryError) -> Self {
        match e {
            RetryError::NotFinishedBadly(..) => ApiError::new(StatusCode::CONFLICT, "cannot_retry", e.to_string()),
            RetryError::AlreadyRetried(..) => ApiError::new(StatusCode::CONFLICT, "already_retried", e.to_string()),
            RetryError::Submit(e) => ApiError::from(e),
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        let status = if e.code.is_unprocessable() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError {
            status,
            code: e.code.as_str(),
            message: e.message,
            field: e.field,
            allow: None,
            challenge: None,
            rate_limit: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_refusal_carries_retry_after_and_both_ratelimit_fields() {
        let refused = Allowance {
            allowed: false,
            limit: 600,
            remaining: 0,
            retry_after: Duration::from_millis(80),
            reset: Duration::from_millis(59_950),
        };
        let response = ApiError::rate_limited(refused).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
        assert_eq!(header("retry-after"), "1", "rounded up, never 0");
        assert_eq!(header("ratelimit-policy"), r#""orders";q=600;w=60"#);
        assert_eq!(header("ratelimit"), r#""orders";r=0;t=60"#);
    }

    #[test]
    fn an_error_answers_exactly_its_stored_answer() {
        let error = ApiError::new(StatusCode::CONFLICT, "idempotency_key_in_use", "busy");
        let answer = error.answer();
        assert_eq!(answer.status, 409);
        assert_eq!(
            answer.body,
            r#"{"success":false,"error":{"code":"idempotency_key_in_use","message":"busy"}}"#
        );
        assert!(error.into_response().headers().get("retry-after").is_none());
    }
}
