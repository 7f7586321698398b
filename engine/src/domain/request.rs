//! The order request and its validation: every rule a `POST` must pass, as a
//! pure function from JSON to a [`NewOrder`] or the first problem found.
//!
//! Numbers are read from the text the client sent ([`RawValue`]), never
//! through `f64`: `1.0000000000000001` SOL is refused as too precise rather
//! than rounded to `1`.

use crate::domain::{AmountError, NewOrder, OrderId, OrderType, Timestamp, TokenRegistry, parse_units};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, value::RawValue};
use std::collections::BTreeMap;

/// The body of `POST /api/orders/execute` (for the schema; validation reads
/// the JSON itself so that each problem names its field).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderRequest {
    /// Token sold: symbol (any case) or mint address.
    pub token_in: String,
    /// Token bought: symbol (any case) or mint address.
    pub token_out: String,
    /// Amount of `tokenIn` in whole tokens: a number or a decimal string,
    /// greater than zero, with no more decimals than the token has.
    pub amount: AmountInput,
    /// Slippage tolerance in percent, in (0, 50], at most 2 decimals
    /// (read exactly as written: `0.50000000000000001` is refused, not
    /// rounded). Defaults to `orders.default_slippage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slippage: Option<serde_json::Number>,
    /// Only `market` exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_type: Option<OrderType>,
    /// Deadline (RFC 3339 UTC, `Z`): the order is never submitted after
    /// it and fails with `deadline_exceeded` instead. Defaults to now plus
    /// `orders.default_ttl` (none when that is off). One already past is
    /// accepted: the order is created and fails `deadline_exceeded`
    /// without being submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

/// An amount given as a JSON number or a decimal string. Either form is
/// read exactly as written (a number's digits are never rounded through
/// `f64`); exponents are allowed (`1e-9`, `"5E-7"`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum AmountInput {
    /// `10.5`
    Number(serde_json::Number),
    /// `"10.5"`
    Text(String),
}

/// What is wrong with a request; each kind has a stable snake_case code
/// ([`RequestError::as_str`]) that clients match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestError {
    /// `invalid_body`.
    InvalidBody,
    /// `unknown_field`.
    UnknownField,
    /// `missing_field`.
    MissingField,
    /// `invalid_type`.
    InvalidType,
    /// `invalid_amount`.
    InvalidAmount,
    /// `amount_too_large`.
    AmountTooLarge,
    /// `invalid_slippage`.
    InvalidSlippage,
    /// `unknown_token`.
    UnknownToken,
    /// `same_token`.
    SameToken,
    /// `unsupported_order_type`.
    UnsupportedOrderType,
    /// `unsupported_pair`.
    UnsupportedPair,
    /// `invalid_expires_at`.
    InvalidExpiresAt,
}

impl RequestError {
    /// Every kind, in the order the README's error table lists them.
    pub const ALL: [RequestError; 12] = [
        RequestError::InvalidBody,
        RequestError::UnknownField,
        RequestError::MissingField,
        RequestError::InvalidType,
        RequestError::InvalidAmount,
        RequestError::AmountTooLarge,
        RequestError::InvalidSlippage,
        RequestError::UnknownToken,
        RequestError::SameToken,
        RequestError::UnsupportedOrderType,
        RequestError::UnsupportedPair,
        RequestError::InvalidExpiresAt,
    ];

    /// The stable snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestError::InvalidBody => "invalid_body",
            RequestError::UnknownField => "unknown_field",
            RequestError::MissingField => "missing_field",
            RequestError::InvalidType => "invalid_type",
            RequestError::InvalidAmount => "invalid_amount",
            RequestError::AmountTooLarge => "amount_too_large",
            RequestError::InvalidSlippage => "invalid_slippage",
            RequestError::UnknownToken => "unknown_token",
            RequestError::SameToken => "same_token",
            RequestError::UnsupportedOrderType => "unsupported_order_type",
            RequestError::UnsupportedPair => "unsupported_pair",
            RequestError::InvalidExpiresAt => "invalid_expires_at",
        }
    }

    /// Whether the request is well formed but asks for something no venue
    /// can do (`unsupported_pair`): HTTP answers 422 rather than 400.
    pub fn is_unprocessable(self) -> bool {
        self == RequestError::UnsupportedPair
    }
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validation problem, naming the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FieldError {
    /// What is wrong, as a stable code.
    pub code: RequestError,
    /// Human words.
    pub message: String,
    /// The JSON field at fault.
    pub field: Option<String>,
}

impl FieldError {
    fn new(code: RequestError, field: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: Some(field.to_owned()),
        }
    }
}

const FIELDS: [&str; 6] = ["tokenIn", "tokenOut", "amount", "slippage", "orderType", "expiresAt"];
const MAX_SLIPPAGE_BPS: u32 = 5_000;

/// The ids a new order gets (minted by the caller, so validation stays a
/// pure function of its inputs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIds {
    /// The order's id.
    pub order: OrderId,
    /// Its job's id on the queue.
    pub job: String,
}

/// A field's JSON as the client wrote it.
enum Raw<'a> {
    /// A JSON number: its original text (`1.0000000000000001`, `5E-7`).
    Number(&'a str),
    /// Any other JSON value, parsed.
    Other(Value),
}

impl<'a> Raw<'a> {
    fn of(raw: &'a RawValue) -> Self {
        let text = raw.get().trim();
        if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            Raw::Number(text)
        } else {
            // Syntax was checked when the body was parsed; a failure here
            // cannot happen, and null is as good an answer as any.
            Raw::Other(serde_json::from_str(text).unwrap_or(Value::Null))
        }
    }

    fn value(&self) -> Value {
        match self {
            Raw::Number(text) => serde_json::from_str(text).unwrap_or(Value::Null),
            Raw::Other(value) => value.clone(),
        }
    }
}

/// Validates a JSON body, kept as its original text so that numbers are
/// exact, into the order it asks for, with `ids`; `tradable` says whether
/// a pair has a venue.
///
/// # Errors
/// The first [`FieldError`] found, naming its field.
pub fn validate_request(
    body: &RawValue,
    tokens: &TokenRegistry,
    default_slippage_bps: u32,
    tradable: impl Fn(&str, &str) -> bool,
    ids: NewIds,
) -> Result<NewOrder, FieldError> {
    // An object's members, each as written; anything but an object fails.
    let raw: BTreeMap<String, &RawValue> = serde_json::from_str(body.get()).map_err(|_| FieldError {
        code: RequestError::InvalidBody,
        message: "the body must be a JSON object".into(),
        field: None,
    })?;
    let object: BTreeMap<&str, Raw<'_>> = raw.iter().map(|(k, v)| (k.as_str(), Raw::of(v))).collect();
    if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(k)) {
        return Err(FieldError {
            code: RequestError::UnknownField,
            message: format!("unknown field `{unknown}`; expected one of {}", FIELDS.join(", ")),
            field: Some((*unknown).to_owned()),
        });
    }

    let token = |field: &'static str| {
        let value = object
            .get(field)
            .ok_or_else(|| FieldError::new(RequestError::MissingField, field, format!("`{field}` is required")))?;
        let symbol = match value {
            Raw::Other(Value::String(symbol)) => Some(symbol.as_str()),
            _ => None,
        }
        .ok_or_else(|| FieldError::new(RequestError::InvalidType, field, format!("`{field}` must be a string")))?;
        tokens.get(symbol).ok_or_else(|| {
            let known: Vec<&str> = tokens.iter().map(|t| t.symbol.as_str()).collect();
            FieldError::new(
                RequestError::UnknownToken,
                field,
                format!("unknown token {symbol:?}; known tokens: {}", known.join(", ")),
            )
        })
    };
    let token_in = token("tokenIn")?;
    let token_out = token("tokenOut")?;
    if token_in.symbol == token_out.symbol {
        return Err(FieldError::new(
            RequestError::SameToken,
            "tokenOut",
            "`tokenIn` and `tokenOut` must differ",
        ));
    }

    let amount_text = match object.get("amount") {
        None => {
            return Err(FieldError::new(
                RequestError::MissingField,
                "amount",
                "`amount` is required",
            ));
        }
        Some(Raw::Number(text)) => (*text).to_owned(),
        Some(Raw::Other(Value::String(s))) => s.clone(),
        Some(_) => {
            return Err(FieldError::new(
                RequestError::InvalidType,
                "amount",
                "`amount` must be a number or a decimal string",
            ));
        }
    };
    let amount_in = parse_units(&amount_text, token_in.decimals).map_err(|e| match e {
        AmountError::Overflow => FieldError::new(
            RequestError::AmountTooLarge,
            "amount",
            format!("`amount` {amount_text} is too large"),
        ),
        other => FieldError::new(
            RequestError::InvalidAmount,
            "amount",
            format!("`amount` {amount_text:?} {other}"),
        ),
    })?;
    if amount_in > token_in.max_amount {
        return Err(FieldError::new(
            RequestError::AmountTooLarge,
            "amount",
            format!(
                "`amount` exceeds the maximum of {} {}",
                crate::domain::format_units(token_in.max_amount, token_in.decimals),
                token_in.symbol
            ),
        ));
    }

    let slippage_bps = match object.get("slippage") {
        None | Some(Raw::Other(Value::Null)) => default_slippage_bps,
        Some(Raw::Number(text)) => slippage_bps(text)?,
        Some(_) => {
            return Err(FieldError::new(
                RequestError::InvalidType,
                "slippage",
                "`slippage` must be a number",
            ));
        }
    };

    let order_type = match object.get("orderType").map(Raw::value) {
        None | Some(Value::Null) => OrderType::Market,
        Some(Value::String(s)) if s == "market" => OrderType::Market,
        Some(other) => {
            return Err(FieldError::new(
                RequestError::UnsupportedOrderType,
                "orderType",
                format!("order type {other} is not supported; only \"market\" is"),
            ));
        }
    };

    if !tradable(&token_in.symbol, &token_out.symbol) {
        return Err(FieldError::new(
            RequestError::UnsupportedPair,
            "tokenOut",
            format!("no venue trades {} → {}", token_in.symbol, token_out.symbol),
        ));
    }

    let expires_at = match object.get("expiresAt").map(Raw::value) {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(Timestamp::parse(&text).ok_or_else(|| {
            FieldError::new(
                RequestError::InvalidExpiresAt,
                "expiresAt",
                format!("`expiresAt` {text:?} is not an RFC 3339 UTC time such as 2026-11-23T10:30:00Z"),
            )
        })?),
        Some(_) => {
            return Err(FieldError::new(
                RequestError::InvalidType,
                "expiresAt",
                "`expiresAt` must be an RFC 3339 string",
            ));
        }
    };

    Ok(NewOrder {
        id: ids.order,
        job_id: ids.job,
        order_type,
        token_in: token_in.symbol.clone(),
        token_out: token_out.symbol.clone(),
        amount_in,
        slippage_bps,
        owner: None,
        expires_at,
        retry_of: None,
    })
}

/// Percent with at most two decimals, in (0, 50] → basis points.
pub fn slippage_bps(text: &str) -> Result<u32, FieldError> {
    let invalid = |why: &str| {
        FieldError::new(
            RequestError::InvalidSlippage,
            "slippage",
            format!("`slippage` {text} {why}"),
        )
    };
    let bps = match parse_units(text, 2) {
        Ok(bps) => bps,
        Err(AmountError::NotPositive) => return Err(invalid("must be greater than 0")),
        Err(AmountError::TooPrecise(_)) => {
            return Err(invalid("allows at most 2 decimal places (1 basis point)"));
        }
        Err(_) => return Err(invalid("must be a percentage between 0 and 50")),
    };
    if bps > u128::from(MAX_SLIPPAGE_BPS) {
        return Err(invalid("must be at most 50 (percent)"));
    }
    Ok(bps as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn registry() -> TokenRegistry {
        TokenRegistry::new([
            (
                "SOL".into(),
                "So11111111111111111111111111111111111111112".into(),
                9,
                "10000".into(),
            ),
            (
                "USDC".into(),
                "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v".into(),
                6,
                "1000000".into(),
            ),
            (
                "BONK".into(),
                "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263".into(),
                5,
                "1000000000".into(),
            ),
        ])
        .unwrap()
    }

    fn check(body: Value) -> Result<NewOrder, FieldError> {
        check_text(&body.to_string())
    }

    /// Validates a body given as text, so numbers keep their digits.
    fn check_text(body: &str) -> Result<NewOrder, FieldError> {
        let ids = NewIds {
            order: OrderId::new(),
            job: "job-1".into(),
        };
        let body: &RawValue = serde_json::from_str(body).expect("the test body is JSON");
        validate_request(body, &registry(), 50, |a, b| !(a == "BONK" || b == "BONK"), ids)
    }

    fn code_and_field<T: std::fmt::Debug>(result: Result<T, FieldError>) -> (&'static str, Option<String>) {
        let err = result.expect_err("refused");
        (err.code.as_str(), err.field)
    }

    #[test]
    fn numbers_more_precise_than_allowed_are_refused_not_rounded() {
        let cases = [
            (
                r#"{"tokenIn":"SOL","tokenOut":"USDC","amount":1.0000000000000001}"#,
                "invalid_amount",
                "amount",
            ),
            (
                r#"{"tokenIn":"USDC","tokenOut":"SOL","amount":1999999.99999999999}"#,
                "invalid_amount",
                "amount",
            ),
            (
                r#"{"tokenIn":"SOL","tokenOut":"USDC","amount":1,"slippage":0.50000000000000001}"#,
                "invalid_slippage",
                "slippage",
            ),
            (
                r#"{"tokenIn":"SOL","tokenOut":"USDC","amount":1e-10}"#,
                "invalid_amount",
                "amount",
            ),
            (
                r#"{"tokenIn":"SOL","tokenOut":"USDC","amount":1,"slippage":1E-3}"#,
                "invalid_slippage",
                "slippage",
            ),
        ];
        for (body, code, field) in cases {
            assert_eq!(
                code_and_field(check_text(body)),
                (code, Some(field.to_owned())),
                "{body}"
            );
        }
    }

    #[test]
    fn numbers_are_read_from_their_text_in_every_form() {
        let amount = |text: &str| check_text(&format!(r#"{{"tokenIn":"SOL","tokenOut":"USDC","amount":{text}}}"#));
        for (text, units) in [
            ("1e-9", 1),
            ("1E-9", 1),
            (r#""5E-7""#, 500),
            ("1.000000000000000000", 1_000_000_000),
            ("123.456789012", 123_456_789_012),
            ("9999.999999999", 9_999_999_999_999),
            ("0.1e+1", 1_000_000_000),
        ] {
            assert_eq!(amount(text).map(|o| o.amount_in), Ok(units), "{text}");
        }
        let slippage = |text: &str| {
            check_text(&format!(
                r#"{{"tokenIn":"SOL","tokenOut":"USDC","amount":1,"slippage":{text}}}"#
            ))
            .map(|o| o.slippage_bps)
        };
        assert_eq!(slippage("0.50000000000000000"), Ok(50));
        assert_eq!(slippage("5e-1"), Ok(50));
        assert_eq!(slippage("12.34"), Ok(1_234));
    }

    /// The exact value of `int.frac × 10^exp` in base units of a token with
    /// `decimals`, computed apart from `parse_units`: `None` when it is not
    /// a whole number of base units, `Some(None)` when it overflows.
    fn exact_units(int: &str, frac: &str, exp: i32, decimals: u8) -> Option<Option<u128>> {
        let digits: u128 = format!("{int}{frac}").parse().expect("at most 36 digits fit");
        if digits == 0 {
            return Some(Some(0));
        }
        let shift = exp - frac.len() as i32 + i32::from(decimals);
        if shift >= 0 {
            Some(10u128.checked_pow(shift as u32).and_then(|p| digits.checked_mul(p)))
        } else {
            let divisor = 10u128.checked_pow(shift.unsigned_abs());
            match divisor {
                Some(d) if digits.is_multiple_of(d) => Some(Some(digits / d)),
                // Non-zero digits beyond the last decimal place.
                _ => None,
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(512))]

        /// For any decimal text, sent as a JSON number or as a string, the
        /// stored amount is its exact value in base units, or it is refused
        /// (`invalid_amount`, or `amount_too_large` above the token's
        /// maximum); never a rounded value.
        #[test]
        fn amounts_are_stored_exactly_or_refused(
            int in "(0|[1-9][0-9]{0,14})",
            frac in proptest::option::of("[0-9]{1,20}"),
            exp in proptest::option::of((proptest::bool::ANY, proptest::bool::ANY, -30i32..30)),
            as_string in proptest::bool::ANY,
        ) {
            let frac = frac.unwrap_or_default();
            let mut text = int.clone();
            if !frac.is_empty() {
                text = format!("{text}.{frac}");
            }
            let exponent = exp.map_or(0, |(_, _, e)| e);
            if let Some((upper, plus, e)) = exp {
                let sign = if e >= 0 && plus { "+" } else { "" };
                text = format!("{text}{}{sign}{e}", if upper { 'E' } else { 'e' });
            }
            let amount = if as_string { format!("{text:?}") } else { text.clone() };
            let result = check_text(&format!(r#"{{"tokenIn":"SOL","tokenOut":"USDC","amount":{amount}}}"#));
            let max = 10_000 * 10u128.pow(9);
            match exact_units(&int, &frac, exponent, 9) {
                Some(Some(0)) | None => {
                    proptest::prop_assert_eq!(code_and_field(result), ("invalid_amount", Some("amount".to_owned())), "{}", amount);
                }
                Some(Some(units)) if units <= max => {
                    proptest::prop_assert_eq!(result.map(|o| o.amount_in), Ok(units), "{}", amount);
                }
                Some(_) => {
                    proptest::prop_assert_eq!(code_and_field(result), ("amount_too_large", Some("amount".to_owned())), "{}", amount);
                }
            }
        }

        /// Slippage, as a JSON number, is exact basis points or refused
        /// with `invalid_slippage`.
        #[test]
        fn slippage_is_exact_basis_points_or_refused(
            int in "(0|[1-9][0-9]{0,2})",
            frac in proptest::option::of("[0-9]{1,20}"),
            exp in proptest::option::of(-4i32..3),
        ) {
            let frac = frac.unwrap_or_default();
            let mut text = int.clone();
            if !frac.is_empty() {
                text = format!("{text}.{frac}");
            }
            if let Some(e) = exp {
                text = format!("{text}e{e}");
            }
            let result = check_text(&format!(
                r#"{{"tokenIn":"SOL","tokenOut":"USDC","amount":1,"slippage":{text}}}"#
            ))
            .map(|o| o.slippage_bps);
            match exact_units(&int, &frac, exp.unwrap_or(0), 2) {
                Some(Some(bps)) if (1..=5_000).contains(&bps) => {
                    proptest::prop_assert_eq!(result, Ok(bps as u32), "{}", text);
                }
                _ => {
                    proptest::prop_assert_eq!(code_and_field(result), ("invalid_slippage", Some("slippage".to_owned())), "{}", text);
                }
            }
        }
    }

    #[test]
    fn the_accepted_fields_are_the_request_schema_s_properties() {
        let schema = serde_json::to_value(schemars::schema_for!(OrderRequest)).unwrap();
        let mut properties: Vec<&str> = schema["properties"]
            .as_object()
            .expect("OrderRequest has properties")
            .keys()
            .map(String::as_str)
            .collect();
        let mut fields = FIELDS.to_vec();
        properties.sort_unstable();
        fields.sort_unstable();
        assert_eq!(fields, properties);
    }

    #[test]
    fn the_order_gets_the_ids_it_is_given() {
        let order = check(json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1"})).unwrap();
        assert_eq!(order.job_id, "job-1");
    }

    #[test]
    fn accepts_a_valid_order_and_fills_defaults() {
        let order = check(json!({"tokenIn": "sol", "tokenOut": "USDC", "amount": 10})).unwrap();
        assert_eq!(order.token_in, "SOL");
        assert_eq!(order.amount_in, 10_000_000_000);
        assert_eq!(order.slippage_bps, 50);
        let order = check(
            json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": "0.5", "slippage": 1.25, "orderType": "market"}),
        )
        .unwrap();
        assert_eq!(order.amount_in, 500_000_000);
        assert_eq!(order.slippage_bps, 125);
    }

    #[test]
    fn rejects_each_bad_input_with_its_code_and_field() {
        let cases: Vec<(Value, &str, Option<&str>)> = vec![
            (json!([1, 2]), "invalid_body", None),
            (
                json!({"tokenOut": "USDC", "amount": 1}),
                "missing_field",
                Some("tokenIn"),
            ),
            (
                json!({"tokenIn": "SOL", "amount": 1}),
                "missing_field",
                Some("tokenOut"),
            ),
            (
                json!({"tokenIn": "SOL", "tokenOut": "USDC"}),
                "missing_field",
                Some("amount"),
            ),
            (
                json!({"tokenIn": 5, "tokenOut": "USDC", "amount": 1}),
                "invalid_type",
                Some("tokenIn"),
            ),
            (
                json!({"tokenIn": "DOGE", "tokenOut": "USDC", "amount": 1}),
                "unknown_token",
                Some("tokenIn"),
            ),
            (
                json!({"tokenIn": "SOL", "tokenOut": "sol", "amount": 1}),
                "same_token",
                Some("tokenOut"),
            ),
            (
                json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": 0}),
                "invalid_amount",
                Some("amount"),
            ),
            (
                json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": -3}),
                "invalid_amount",
                Some("amount"),
            ),
            (
                json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": "ten"}),
                "invalid_amount",
                Some("amount"),
            ),
            (
                json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": true}),
                "invalid_type",
                Some("amount"),
            ),
            (
                json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": "0.0000000001"}),
                "invalid_amount",
                Some("amount"),
            ),
            (
                json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": 10001}),
                "amount_too_large",
                Some("amount"),
            ),
            (
                json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": 1, "slippage": 0}),
                "invalid_slippage",
                Some("slippage"),
            ),
            (
                json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": 1, "slippage": 50.01}),
                "invalid_slippage",
                Some("slippage"),
            ),
            (
                json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": 1, "slippage": -1}),
                "invalid_slippage",
                Some("slippage"),
            ),
            (
                json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": 1, "slippage": 0.001}),
                "invalid_slippage",
                Some("slippage"),
            ),
            (
                json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": 1, "slippage": "1"}),
                "invalid_type",
                Some("slippage"),
            ),
            (
                json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": 1, "orderType": "limit"}),
                "unsupported_order_type",
                Some("orderType"),
            ),
            (
                json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": 1, "extra": 1}),
                "unknown_field",
                Some("extra"),
            ),
            (
                json!({"tokenIn": "SOL", "tokenOut": "BONK", "amount": 1}),
                "unsupported_pair",
                Some("tokenOut"),
            ),
        ];
        for (body, code, field) in cases {
            let err = check(body.clone()).unwrap_err();
            assert_eq!(
                (err.code.as_str(), err.field.as_deref()),
                (code, field),
                "{body} → {err:?}"
            );
            assert!(!err.message.is_empty());
        }
    }

    #[test]
    fn slippage_at_the_bounds() {
        assert_eq!(slippage_bps("50").unwrap(), 5_000);
        assert_eq!(slippage_bps("0.01").unwrap(), 1);
    }
}
