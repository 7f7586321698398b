//! Every bad request gets its status and code, and creates nothing.

use crate::harness::{Backend, Engine};
use bytes::Bytes;
use serde_json::Value;
use swapline::client;

async fn post_raw(engine: &Engine, content_type: &str, body: &str) -> (u16, Value) {
    let response = client::request(
        &engine.url,
        "POST",
        "/api/orders/execute",
        &[("content-type", content_type)],
        Some(Bytes::from(body.to_owned())),
    )
    .await
    .unwrap();
    (response.status.as_u16(), response.json())
}

async fn bad_requests_get_their_status_and_code_and_create_nothing(backend: Backend) {
    let engine = Engine::start_on(backend, "");
    let json = "application/json";
    let too_big = format!(
        r#"{{"tokenIn":"SOL","tokenOut":"USDC","amount":1,"pad":"{}"}}"#,
        "x".repeat(70_000)
    );
    let cases: Vec<(&str, String, u16, &str, Option<&str>)> = vec![
        (json, "{not json".into(), 400, "invalid_json", None),
        (json, "[1,2]".into(), 400, "invalid_body", None),
        (
            json,
            r#"{"tokenOut":"USDC","amount":1}"#.into(),
            400,
            "missing_field",
            Some("tokenIn"),
        ),
        (
            json,
            r#"{"tokenIn":"SOL","amount":1}"#.into(),
            400,
            "missing_field",
            Some("tokenOut"),
        ),
        (
            json,
            r#"{"tokenIn":"SOL","tokenOut":"USDC"}"#.into(),
            400,
            "missing_field",
            Some("amount"),
        ),
        (
            json,
            r#"{"tokenIn":1,"tokenOut":"USDC","amount":1}"#.into(),
            400,
            "invalid_type",
            Some("tokenIn"),
        ),
        (
            json,
            r#"{"tokenIn":"DOGE","tokenOut":"USDC","amount":1}"#.into(),
            400,
            "unknown_token",
            Some("tokenIn"),
        ),
        (
            json,
            r#"{"tokenIn":"SOL","tokenOut":"SOL","amount":1}"#.into(),
            400,
            "same_token",
            Some("tokenOut"),
        ),
        (
            json,
            r#"{"tokenIn":"SOL","tokenOut":"USDC","amount":0}"#.into(),
            400,
            "invalid_amount",
            Some("amount"),
        ),
        (
            json,
            r#"{"tokenIn":"SOL","tokenOut":"USDC","amount":-5}"#.into(),
            400,
            "invalid_amount",
            Some("amount"),
        ),
        (
            json,
            r#"{"tokenIn":"SOL","tokenOut":"USDC","amount":"lots"}"#.into(),
            400,
            "invalid_amount",
            Some("amount"),
        ),
        (
            json,
            r#"{"tokenIn":"SOL","tokenOut":"USDC","amount":[1]}"#.into(),
            400,
            "invalid_type",
            Some("amount"),
        ),
        (
            json,
            r#"{"tokenIn":"SOL","tokenOut":"USDC","amount":"1.0000000001"}"#.into(),
            400,
            "invalid_amount",
            Some("amount"),
        ),
        (
            json,
            r#"{"tokenIn":"SOL","tokenOut":"USDC","amount":10001}"#.into(),
            400,
            "amount_too_large",
            Some("amount"),
        ),
        (
            json,
            r#"{"tokenIn":"SOL","tokenOut":"USDC","amount":1,"slippage":0}"#.into(),
            400,
            "invalid_slippage",
            Some("slippage"),
        ),
        (
            json,
            r#"{"tokenIn":"SOL","tokenOut":"USDC","amount":1,"slippage":51}"#.into(),
            400,
            "invalid_slippage",
            Some("slippage"),
        ),
        (
            json,
            r#"{"tokenIn":"SOL","tokenOut":"USDC","amount":1,"slippage":"1"}"#.into(),
            400,
            "invalid_type",
            Some("slippage"),
        ),
        (
            json,
            r#"{"tokenIn":"SOL","tokenOut":"USDC","amount":1,"orderType":"limit"}"#.into(),
            400,
            "unsupported_order_type",
            Some("orderType"),
        ),
        (
            json,
            r#"{"tokenIn":"SOL","tokenOut":"USDC","amount":1,"extra":true}"#.into(),
            400,
            "unknown_field",
            Some("extra"),
        ),
        (json, too_big, 413, "payload_too_large", None),
        (
            "text/plain",
            r#"{"tokenIn":"SOL","tokenOut":"USDC","amount":1}"#.into(),
            415,
            "unsupported_media_type",
            None,
        ),
    ];
    for (content_type, body, status, code, field) in cases {
        let (got_status, answer) = post_raw(&engine, content_type, &body).await;
        let shown: String = body.chars().take(80).collect();
        assert_eq!(got_status, status, "{shown} → {answer}");
        assert_eq!(answer["success"], false, "{shown}");
        assert_eq!(answer["error"]["code"], code, "{shown} → {answer}");
        assert!(answer["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(answer["error"]["field"].as_str(), field, "{shown} → {answer}");
    }

    let list = client::get(&engine.url, "/api/orders").await.unwrap().json();
    assert_eq!(
        list["orders"].as_array().unwrap().len(),
        0,
        "no order may exist: {list}"
    );
}

/// JSON numbers are read from their text: digits beyond a token's decimals
/// (or slippage's two) are refused, never rounded through `f64` into a
/// valid order; the same digits as strings were always refused.
async fn numbers_more_precise_than_allowed_are_refused_and_create_nothing(backend: Backend) {
    let engine = Engine::start_on(backend, "");
    let json = "application/json";
    let cases = [
        (
            r#"{"tokenIn":"SOL","tokenOut":"USDC","amount":1.0000000000000001}"#,
            "invalid_amount",
            "amount",
        ),
        (
            r#"{"tokenIn":"USDT","tokenOut":"USDC","amount":1999999.99999999999}"#,
            "invalid_amount",
            "amount",
        ),
        (
            r#"{"tokenIn":"SOL","tokenOut":"USDC","amount":1,"slippage":0.50000000000000001}"#,
            "invalid_slippage",
            "slippage",
        ),
    ];
    for (body, code, field) in cases {
        let (status, answer) = post_raw(&engine, json, body).await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert_eq!(answer["error"]["code"], code, "{body} → {answer}");
        assert_eq!(answer["error"]["field"], field, "{body} → {answer}");
    }
    let list = client::get(&engine.url, "/api/orders").await.unwrap().json();
    assert_eq!(
        list["orders"].as_array().unwrap().len(),
        0,
        "no order may exist: {list}"
    );

    // Exponent forms still work, exactly: 1e-9 SOL is one lamport.
    let (status, answer) = post_raw(
        &engine,
        json,
        r#"{"tokenIn":"SOL","tokenOut":"USDC","amount":1e-9,"slippage":5E-1}"#,
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let order = engine.status(answer["orderId"].as_str().unwrap()).await;
    assert_eq!(order["amount"], "0.000000001", "{order}");
    assert_eq!(order["slippage"], 0.5, "{order}");
}

async fn unknown_routes_methods_and_orders_are_refused(backend: Backend) {
    let engine = Engine::start_on(backend, "");
    let unknown = "3f1c1f4e-8f5c-4a8e-9a3e-3b1f2f9d8c7a";
    let upgrade: &[(&str, &str)] = &[
        ("upgrade", "websocket"),
        ("connection", "upgrade"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
    ];
    // (method, path, headers, status, code)
    type Case<'a> = (&'a str, String, &'a [(&'a str, &'a str)], u16, &'a str);
    let cases: Vec<Case> = vec![
        ("GET", "/nope".into(), &[], 404, "not_found"),
        ("GET", "/api/orders/execute".into(), &[], 405, "method_not_allowed"),
        (
            "DELETE",
            format!("/api/orders/status/{unknown}"),
            &[],
            405,
            "method_not_allowed",
        ),
        (
            "GET",
            format!("/api/orders/status/{unknown}"),
            &[],
            404,
            "order_not_found",
        ),
        (
            "GET",
            "/api/orders/status/not-a-uuid".into(),
            &[],
            400,
            "invalid_order_id",
        ),
        (
            "GET",
            format!("/api/orders/{unknown}/events"),
            &[],
            404,
            "order_not_found",
        ),
        (
            "GET",
            format!("/api/orders/status/{unknown}"),
            upgrade,
            404,
            "order_not_found",
        ),
        ("GET", "/api/orders/status/xyz".into(), upgrade, 400, "invalid_order_id"),
        ("GET", "/api/orders?status=done".into(), &[], 400, "invalid_status"),
        ("GET", "/api/orders?limit=0".into(), &[], 400, "invalid_limit"),
        ("GET", "/api/orders?cursor=abc".into(), &[], 400, "invalid_cursor"),
    ];
    for (method, path, headers, status, code) in cases {
        let response = client::request(&engine.url, method, &path, headers, None)
            .await
            .unwrap();
        assert_eq!(response.status.as_u16(), status, "{method} {path}");
        assert_eq!(response.json()["error"]["code"], code, "{method} {path}");
        if status == 405 {
            assert!(response.headers.contains_key("allow"), "405 names the allowed method");
        }
    }
}

crate::on_both_backends!(
    bad_requests_get_their_status_and_code_and_create_nothing,
    numbers_more_precise_than_allowed_are_refused_and_create_nothing,
    unknown_routes_methods_and_orders_are_refused,
);
