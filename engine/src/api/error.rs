//! Error bodies: `{"success": false, "error": {"code", "message", "field"}}`
//! with the right status.

use super::http::{Body, json_response};
use crate::{domain::FieldError, pipeline::QueueError, store::StoreError};
use hyper::{Response, StatusCode};
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
    pub challenge: Option<String>,
}

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

    /// The response.
    pub fn into_response(self) -> Response<Body> {
        let body = ErrorBody {
            success: false,
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
            },
        };
        let mut response = json_response(self.status, &body);
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
        }
    }
}
