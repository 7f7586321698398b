//! `Idempotency-Key` on `POST /api/orders/execute`: the header's rules, and
//! answers stored once and replayed byte for byte (Stripe's idempotent
//! requests, <https://docs.stripe.com/api/idempotent_requests>, and the IETF
//! httpapi draft,
//! <https://datatracker.ietf.org/doc/draft-ietf-httpapi-idempotency-key-header/>).
//! What is stored when, and what a repeat gets, is the intake's
//! ([`crate::pipeline::Intake::submit_once`]); this file is the HTTP side.

use super::{
    ApiState,
    error::{ApiError, answer_response},
    http::Body,
    views::Created,
};
use crate::{
    domain::{Caller, NewOrder},
    pipeline::{KeyedAnswer, KeyedRequest, SubmitError},
    store::StoredAnswer,
};
use hyper::{HeaderMap, Response, StatusCode, header::HeaderValue};

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// The header marking a replayed answer.
pub const REPLAYED: &str = "idempotent-replayed";
/// Longest key accepted, characters.
pub const MAX_LEN: usize = 255;

/// The `Idempotency-Key` of a request: `None` when it has none (allowed
/// unless `required`). A value is 1–255 printable ASCII characters
/// (`0x20`–`0x7E`); a value written as a Structured Field string (`"…"`,
/// as the IETF draft writes it) stands for its contents, so `"k1"` and
/// `k1` are one key.
///
/// # Errors
/// 400 `missing_idempotency_key` (none, and `required`);
/// 400 `invalid_idempotency_key` (empty, too long, other characters, or
/// the header sent twice).
pub fn key_of(headers: &HeaderMap, required: bool) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(HEADER).iter();
    let Some(value) = values.next() else {
        if required {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing_idempotency_key",
                "send an Idempotency-Key header (1–255 printable ASCII characters, unique per order)",
            ));
        }
        return Ok(None);
    };
    let invalid = |why: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            format!("the Idempotency-Key {why}; send 1–{MAX_LEN} printable ASCII characters"),
        )
    };
    if values.next().is_some() {
        return Err(invalid("header was sent more than once"));
    }
    let text = value
        .to_str()
        .map_err(|_| invalid("has characters outside printable ASCII"))?;
    let key = match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) => inner,
        None => text,
    };
    if key.is_empty() {
        return Err(invalid("is empty"));
    }
    if key.len() > MAX_LEN {
        return Err(invalid(&format!("is {} characters long", key.len())));
    }
    if !key.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(invalid("has characters outside printable ASCII"));
    }
    Ok(Some(key.to_owned()))
}

/// Submits `order` once per `key` of `caller`: the first request's answer
/// (201, or the 5xx of an order stored but not queued), or, for a repeat,
/// that answer replayed with `Idempotent-Replayed: true`.
///
/// # Errors
/// 422 `idempotency_key_reused`, 409 `idempotency_key_in_use`, and the
/// store's 5xx when nothing could be stored (not stored: a retry may
/// succeed).
pub async fn submit(
    state: &ApiState,
    order: NewOrder,
    caller: &Caller,
    key: &str,
    created: &Created,
) -> Result<Response<Body>, ApiError> {
    let created = StoredAnswer {
        status: StatusCode::CREATED.as_u16(),
        body: serde_json::to_string(created).expect("response bodies serialise"),
    };
    let failed = |error: &SubmitError| match error {
        SubmitError::Queue(e) => ApiError::queue(e.clone()).answer(),
        other => ApiError::internal("intake_error", other).answer(),
    };
    let request = KeyedRequest {
        key,
        created,
        failed: &failed,
    };
    match state.intake.submit_once(order, caller, request).await? {
        KeyedAnswer::First(answer) => Ok(answer_response(&answer)),
        KeyedAnswer::Replayed(answer) => {
            let mut response = answer_response(&answer);
            response
                .headers_mut()
                .insert(REPLAYED, HeaderValue::from_static("true"));
            Ok(response)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(HEADER, HeaderValue::from_bytes(value).unwrap());
        }
        map
    }

    fn code(result: Result<Option<String>, ApiError>) -> &'static str {
        result.unwrap_err().code
    }

    #[test]
    fn a_key_is_one_to_255_printable_ascii_characters() {
        assert_eq!(key_of(&headers(&[b"k1"]), false).unwrap().as_deref(), Some("k1"));
        let longest = "a".repeat(255);
        assert_eq!(key_of(&headers(&[longest.as_bytes()]), true).unwrap(), Some(longest));
        assert_eq!(
            key_of(&headers(&[b"order 7 ~!"]), false).unwrap().as_deref(),
            Some("order 7 ~!")
        );
        assert_eq!(code(key_of(&headers(&[b""]), false)), "invalid_idempotency_key");
        assert_eq!(
            code(key_of(&headers(&["a".repeat(256).as_bytes()]), false)),
            "invalid_idempotency_key"
        );
        assert_eq!(
            code(key_of(&headers(&[b"tab\there"]), false)),
            "invalid_idempotency_key"
        );
        assert_eq!(
            code(key_of(&headers(&["clé".as_bytes()]), false)),
            "invalid_idempotency_key"
        );
        assert_eq!(code(key_of(&headers(&[b"a", b"b"]), false)), "invalid_idempotency_key");
    }

    #[test]
    fn a_structured_field_string_stands_for_its_contents() {
        assert_eq!(key_of(&headers(&[br#""k1""#]), false).unwrap().as_deref(), Some("k1"));
        assert_eq!(code(key_of(&headers(&[br#""""#]), false)), "invalid_idempotency_key");
    }

    #[test]
    fn a_missing_key_is_refused_only_when_required() {
        assert_eq!(key_of(&HeaderMap::new(), false).unwrap(), None);
        let error = key_of(&HeaderMap::new(), true).unwrap_err();
        assert_eq!(
            (error.status, error.code),
            (StatusCode::BAD_REQUEST, "missing_idempotency_key")
        );
    }
}
