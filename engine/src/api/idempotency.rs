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
/// (`0x20`–`0x7E`), taken as it is (as Stripe takes keys), unless it
/// starts with `"`: then it is a Structured Field Item that must be a
/// String (RFC 9651 §3.3.3, as the IETF draft defines the header), and
/// the key is the string it stands for: `"k1"` and `k1` are one key,
/// `"a\"b"` is `a"b`, and parameters (`"k1";p=1`) are ignored, as §2.2
/// says unknown ones must be.
///
/// # Errors
/// 400 `missing_idempotency_key` (none, and `required`);
/// 400 `invalid_idempotency_key` (empty, too long, other characters, a
/// quoted value that is not a valid Structured Field String, or the
/// header sent twice).
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
    let decoded;
    let key = if text.starts_with('"') {
        let item = sfv::Parser::new(text)
            .parse::<sfv::Item>()
            .map_err(|e| invalid(&format!("is not a valid Structured Field String ({e})")))?;
        let Some(string) = item.bare_item.as_string() else {
            return Err(invalid("is not a Structured Field String"));
        };
        decoded = string.as_str().to_owned();
        decoded.as_str()
    } else {
        text
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
        let key = |value: &[u8]| key_of(&headers(&[value]), false);
        assert_eq!(key(br#""k1""#).unwrap().as_deref(), Some("k1"));
        // RFC 9651 §3.3.3: `\"` and `\\` are the only escapes.
        assert_eq!(key(br#""e\"b""#).unwrap().as_deref(), Some(r#"e"b"#));
        assert_eq!(key(br#""back\\slash""#).unwrap().as_deref(), Some(r"back\slash"));
        // Parameters are not part of the key (§2.2: unknown ones are ignored).
        assert_eq!(key(br#""g";x=1"#).unwrap().as_deref(), Some("g"));
        // Written plain, a value is taken as it is.
        assert_eq!(key(br#"e"b"#).unwrap().as_deref(), Some(r#"e"b"#));
        assert_eq!(key(br"g;x=1").unwrap().as_deref(), Some("g;x=1"));
        for refused in [
            &br#""""#[..],  // empty
            br#""z\n""#,    // an escape the format does not have
            br#""abc"#,     // no closing quote
            br#""a" "b""#,  // two items
            br#""a", "b""#, // a list
        ] {
            assert_eq!(
                code(key(refused)),
                "invalid_idempotency_key",
                "{}",
                String::from_utf8_lossy(refused)
            );
        }
        let longest = format!("\"{}\"", "a".repeat(255));
        assert_eq!(key(longest.as_bytes()).unwrap().map(|k| k.len()), Some(255));
        let too_long = format!("\"{}\"", "a".repeat(256));
        assert_eq!(code(key(too_long.as_bytes())), "invalid_idempotency_key");
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
