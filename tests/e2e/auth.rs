//! Trusted intake, the auth matrix: API keys made with `swapline keys`,
//! scopes, ownership (another key's order is 404 everywhere), WebSocket
//! tickets and browser origins, against the real binary on both backends.

use crate::{
    harness::{Backend, Engine, Shared, read_stream, sol_usdc},
    on_both_backends,
};
use serde_json::{Value, json};
use std::time::Duration;
use swapline::client::{self, ClientError, Response};

const ORIGIN: &str = "https://app.example.com";

/// Auth required, one allowed browser origin, short-lived tickets, and a
/// short key cache (a revocation takes effect within it).
const AUTH: &str = r#"
[auth]
required = true
ticket_ttl = "1s"
key_cache_ttl = "1s"

[server]
allowed_origins = ["https://app.example.com"]
"#;

/// A key made through the CLI: (id, secret).
pub(crate) fn create_key(engine: &Engine, name: &str, scopes: &str) -> (String, String) {
    let output = engine.cli(&["keys", "create", "--name", name, "--scopes", scopes, "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let created: Value = serde_json::from_slice(&output.stdout).expect("keys create --json prints JSON");
    (
        created["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    )
}

fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

async fn get(engine: &Engine, secret: Option<&str>, path: &str) -> Response {
    let auth = secret.map(bearer);
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    client::request(&engine.url, "GET", path, &headers, None).await.unwrap()
}

/// POSTs JSON with the key `secret` (if any).
pub(crate) async fn post(engine: &Engine, secret: Option<&str>, path: &str, body: &Value) -> Response {
    let auth = secret.map(bearer);
    let mut headers = vec![("content-type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("authorization", auth.as_str()));
    }
    let body = bytes::Bytes::from(serde_json::to_vec(body).unwrap());
    client::request(&engine.url, "POST", path, &headers, Some(body))
        .await
        .unwrap()
}

/// Posts an order with a key; panics unless 201. Returns the answer.
async fn order(engine: &Engine, secret: &str) -> Value {
    let response = post(engine, Some(secret), "/api/orders/execute", &sol_usdc(1.0)).await;
    assert_eq!(response.status, 201, "{}", String::from_utf8_lossy(&response.body));
    response.json()
}

fn assert_error(response: &Response, status: u16, code: &str) {
    assert_eq!(
        (response.status.as_u16(), response.json()["error"]["code"].as_str()),
        (status, Some(code)),
        "{}",
        String::from_utf8_lossy(&response.body)
    );
}

fn assert_unauthorized(response: &Response) {
    assert_error(response, 401, "unauthorized");
    let challenge = response.headers["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Bearer realm=\"swapline\""), "{challenge}");
}

/// The path (and query) of a `ws://host/path` URL.
fn ws_path(url: &str) -> &str {
    let rest = url.strip_prefix("ws://").unwrap();
    &rest[rest.find('/').unwrap()..]
}

async fn upgrade(engine: &Engine, path: &str, headers: &[(&str, &str)]) -> Result<client::Socket, ClientError> {
    client::connect_with(&engine.url, path, headers).await
}

fn refused_with(result: Result<client::Socket, ClientError>, status: u16) {
    match result {
        Err(ClientError::Refused(got)) => assert_eq!(got, status),
        Err(e) => panic!("expected HTTP {status}, got {e}"),
        Ok(_) => panic!("expected HTTP {status}, the upgrade was accepted"),
    }
}

/// No key, an unknown key and a revoked key are 401 with a Bearer
/// challenge; a `read` key may not trade (403); probes stay open.
async fn missing_unknown_and_revoked_keys_are_401_and_a_read_key_may_not_trade(backend: Backend) {
    let engine = Engine::start_on(backend, AUTH);
    let (trader_id, trader) = create_key(&engine, "trader", "trade,read");
    let (_, reader) = create_key(&engine, "reader", "read");

    assert_unauthorized(&post(&engine, None, "/api/orders/execute", &sol_usdc(1.0)).await);
    assert_unauthorized(&get(&engine, None, "/api/orders").await);
    let unknown = get(&engine, Some("swl_not-a-key"), "/api/orders").await;
    assert_unauthorized(&unknown);
    assert!(
        unknown.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_token\"")
    );
    let basic = client::request(
        &engine.url,
        "GET",
        "/api/orders",
        &[("authorization", "Basic eDp5")],
        None,
    )
    .await
    .unwrap();
    assert_unauthorized(&basic);

    let forbidden = post(&engine, Some(&reader), "/api/orders/execute", &sol_usdc(1.0)).await;
    assert_error(&forbidden, 403, "forbidden");
    assert!(
        forbidden.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("insufficient_scope")
    );
    assert_eq!(get(&engine, Some(&reader), "/api/orders").await.status, 200);

    let created = order(&engine, &trader).await;
    assert!(created["wsUrl"].as_str().unwrap().contains("?ticket=swt_"), "{created}");
    assert_eq!(get(&engine, Some(&trader), "/api/orders").await.status, 200);

    let revoked = engine.cli(&["keys", "revoke", &trader_id]);
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    // The node may still hold the key's last lookup for `key_cache_ttl`.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert_unauthorized(&get(&engine, Some(&trader), "/api/orders").await);
    assert_unauthorized(&post(&engine, Some(&trader), "/api/orders/execute", &sol_usdc(1.0)).await);

    engine.assert_healthy().await;
    assert_eq!(client::get(&engine.url, "/ready").await.unwrap().status, 200);
    let metrics = client::get(&engine.url, "/metrics").await.unwrap();
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(r#"swapline_auth_rejections_total{status="401",reason="revoked_key"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"swapline_auth_rejections_total{status="403",reason="scope"} 1"#),
        "{text}"
    );
}

/// Key B cannot tell key A's order exists: 404 on status, events, ticket and
/// WebSocket, absent from its list; A and an admin see it.
async fn a_key_sees_only_its_own_orders_and_admin_sees_all(backend: Backend) {
    let engine = Engine::start_on(backend, AUTH);
    let (_, alice) = create_key(&engine, "alice", "trade,read");
    let (_, bob) = create_key(&engine, "bob", "trade,read");
    let (_, admin) = create_key(&engine, "admin", "admin");
    let a = order(&engine, &alice).await["orderId"].as_str().unwrap().to_owned();
    let b = order(&engine, &bob).await["orderId"].as_str().unwrap().to_owned();

    for path in [format!("/api/orders/status/{a}"), format!("/api/orders/{a}/events")] {
        assert_error(&get(&engine, Some(&bob), &path).await, 404, "order_not_found");
        assert_eq!(get(&engine, Some(&alice), &path).await.status, 200, "{path}");
        assert_eq!(get(&engine, Some(&admin), &path).await.status, 200, "{path}");
    }
    let ticket = post(&engine, Some(&bob), "/api/ws-tickets", &json!({"orderId": a})).await;
    assert_error(&ticket, 404, "order_not_found");
    let bob_auth = bearer(&bob);
    refused_with(
        upgrade(
            &engine,
            &format!("/api/orders/status/{a}"),
            &[("authorization", &bob_auth)],
        )
        .await,
        404,
    );

    let listed = |response: Response| -> Vec<String> {
        assert_eq!(response.status, 200);
        response.json()["orders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(listed(get(&engine, Some(&bob), "/api/orders").await), vec![b.clone()]);
    assert_eq!(listed(get(&engine, Some(&alice), "/api/orders").await), vec![a.clone()]);
    assert_eq!(
        listed(get(&engine, Some(&admin), "/api/orders").await),
        vec![b, a.clone()]
    );

    let alice_auth = bearer(&alice);
    let mut socket = upgrade(
        &engine,
        &format!("/api/orders/status/{a}"),
        &[("authorization", &alice_auth)],
    )
    .await
    .expect("the owner opens its order's stream with its key");
    assert_eq!(read_stream(&mut socket).await.types().last(), Some(&"confirmed"));
}

/// A ticket (from POST /api/ws-tickets or in a new order's wsUrl) opens its
/// order's stream once; reused or expired it is 401 and no 101; an upgrade
/// refused for another reason leaves it usable.
async fn a_ticket_opens_one_upgrade_once_and_not_after_it_expires(backend: Backend) {
    let engine = Engine::start_on(backend, AUTH);
    let (_, alice) = create_key(&engine, "alice", "trade,read");
    let created = order(&engine, &alice).await;
    let id = created["orderId"].as_str().unwrap().to_owned();

    let from_order = ws_path(created["wsUrl"].as_str().unwrap()).to_owned();
    let mut socket = upgrade(&engine, &from_order, &[])
        .await
        .expect("the wsUrl of a new order opens once");
    assert_eq!(read_stream(&mut socket).await.types().last(), Some(&"confirmed"));
    refused_with(upgrade(&engine, &from_order, &[]).await, 401);

    let issued = post(&engine, Some(&alice), "/api/ws-tickets", &json!({"orderId": id})).await;
    assert_eq!(issued.status, 201, "{}", String::from_utf8_lossy(&issued.body));
    crate::harness::schema("ws-ticket.schema.json").assert_valid(&issued.json());
    let ticket = issued.json()["ticket"].as_str().unwrap().to_owned();
    let path = ws_path(issued.json()["wsUrl"].as_str().unwrap()).to_owned();
    assert_eq!(path, format!("/api/orders/status/{id}?ticket={ticket}"));
    // Refused for another reason (a `since` past the history), the ticket
    // is not used up.
    refused_with(upgrade(&engine, &format!("{path}&since=999"), &[]).await, 400);
    let mut socket = upgrade(&engine, &path, &[])
        .await
        .expect("a fresh ticket opens the stream");
    assert_eq!(read_stream(&mut socket).await.types().first(), Some(&"pending"));
    refused_with(upgrade(&engine, &path, &[]).await, 401);
    refused_with(
        upgrade(&engine, &format!("/api/orders/status/{id}?ticket=swt_made-up"), &[]).await,
        401,
    );
    refused_with(upgrade(&engine, &format!("/api/orders/status/{id}"), &[]).await, 401);

    let late = post(&engine, Some(&alice), "/api/ws-tickets", &json!({"orderId": id})).await;
    let late_path = ws_path(late.json()["wsUrl"].as_str().unwrap()).to_owned();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    refused_with(upgrade(&engine, &late_path, &[]).await, 401);

    let metrics = String::from_utf8(client::get(&engine.url, "/metrics").await.unwrap().body.to_vec()).unwrap();
    assert!(
        metrics.contains(r#"swapline_auth_rejections_total{status="401",reason="expired_ticket"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("swapline_ws_tickets_issued_total 3"), "{metrics}");
}

/// Browsers: an allowed origin gets CORS headers and a 204 preflight; any
/// other origin gets 403 on a preflight and on a WebSocket upgrade.
async fn only_allowed_origins_get_cors_preflights_and_websockets(backend: Backend) {
    let engine = Engine::start_on(backend, AUTH);
    let (_, alice) = create_key(&engine, "alice", "trade,read");
    let id = order(&engine, &alice).await["orderId"].as_str().unwrap().to_owned();

    let preflight = |origin: &'static str| {
        let url = engine.url.clone();
        async move {
            client::request(
                &url,
                "OPTIONS",
                "/api/orders/execute",
                &[
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                    ("access-control-request-headers", "authorization, content-type"),
                ],
                None,
            )
            .await
            .unwrap()
        }
    };
    let allowed = preflight(ORIGIN).await;
    assert_eq!(allowed.status, 204);
    let header = |name: &str| allowed.headers[name].to_str().unwrap().to_owned();
    assert_eq!(header("access-control-allow-origin"), ORIGIN);
    assert!(header("access-control-allow-methods").contains("POST"));
    let allowed_headers = header("access-control-allow-headers").to_ascii_lowercase();
    assert!(allowed_headers.contains("authorization") && allowed_headers.contains("content-type"));
    assert_error(&preflight("https://evil.example").await, 403, "origin_not_allowed");

    let auth = bearer(&alice);
    let rest = client::request(
        &engine.url,
        "GET",
        "/api/orders",
        &[("authorization", &auth), ("origin", ORIGIN)],
        None,
    )
    .await
    .unwrap();
    assert_eq!(rest.status, 200);
    assert_eq!(rest.headers["access-control-allow-origin"], ORIGIN);
    let other = client::request(
        &engine.url,
        "GET",
        "/api/orders",
        &[("authorization", &auth), ("origin", "https://evil.example")],
        None,
    )
    .await
    .unwrap();
    assert!(other.headers.get("access-control-allow-origin").is_none());

    let path = format!("/api/orders/status/{id}");
    refused_with(
        upgrade(
            &engine,
            &path,
            &[("authorization", &auth), ("origin", "https://evil.example")],
        )
        .await,
        403,
    );
    let mut socket = upgrade(&engine, &path, &[("authorization", &auth), ("origin", ORIGIN)])
        .await
        .expect("an allowed origin opens the stream");
    assert_eq!(read_stream(&mut socket).await.types().last(), Some(&"confirmed"));
}

/// `swapline keys create/list/revoke` against the configured store: the
/// secret is printed once and stored only as a hash.
async fn keys_cli_creates_lists_and_revokes_keys_and_stores_no_secret(backend: Backend) {
    let shared = Shared::new(backend);
    let run = |args: &[&str]| {
        let output = shared.cli("", args);
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = run(&[
        "keys",
        "create",
        "--name",
        "ci bot",
        "--scopes",
        "read,trade",
        "--orders-per-minute",
        "30",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let created: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(created["name"], "ci bot");
    assert_eq!(created["scopes"], json!(["trade", "read"]));
    let secret = created["secret"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("swl_") && secret.len() > 40, "{secret}");

    let (ok, text, stderr) = run(&["keys", "create", "--name", "ops", "--scopes", "admin"]);
    assert!(ok, "{stderr}");
    assert!(
        text.contains("secret: swl_") && text.contains("Authorization: Bearer swl_"),
        "{text}"
    );

    let (ok, listed, _) = run(&["keys", "list", "--json"]);
    assert!(ok);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ci bot", "ops"]);
    assert_eq!(listed[0]["ordersPerMinute"], 30);
    assert!(listed[0]["revokedAt"].is_null());
    assert!(!listed.to_string().contains("swl_"), "list never shows a secret");

    let (ok, text, stderr) = run(&["keys", "revoke", &id]);
    assert!(ok, "{stderr}");
    assert!(text.contains(&format!("revoked key {id}")), "{text}");
    let (_, listed, _) = run(&["keys", "list", "--json"]);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert!(listed[0]["revokedAt"].is_string() && listed[1]["revokedAt"].is_null());
    let (_, table, _) = run(&["keys", "list"]);
    assert!(table.contains("revoked") && table.contains("active"), "{table}");

    let (ok, _, stderr) = run(&["keys", "revoke", &uuid::Uuid::new_v4().to_string()]);
    assert!(!ok && stderr.contains("no key"), "{stderr}");
    let (ok, _, stderr) = run(&["keys", "create", "--name", "x", "--scopes", "write"]);
    assert!(!ok && stderr.contains("unknown scope \"write\""), "{stderr}");

    let stored = match backend {
        Backend::Embedded => {
            let db = rusqlite::Connection::open(shared.dir.path().join("data/swapline.db")).unwrap();
            let dump: Vec<String> = db
                .prepare("SELECT id || name || scopes || hex(secret_hash) FROM api_keys")
                .unwrap()
                .query_map([], |row| row.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            dump.join("\n")
        }
        Backend::Production => {
            let client = shared.postgres().await;
            let rows = client.query("SELECT api_keys::text FROM api_keys", &[]).await.unwrap();
            rows.iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    assert!(stored.contains("ci bot"), "{stored}");
    assert!(!stored.contains(&secret) && !stored.contains("swl_"), "{stored}");
}

on_both_backends!(
    missing_unknown_and_revoked_keys_are_401_and_a_read_key_may_not_trade,
    a_key_sees_only_its_own_orders_and_admin_sees_all,
    a_ticket_opens_one_upgrade_once_and_not_after_it_expires,
    only_allowed_origins_get_cors_preflights_and_websockets,
    keys_cli_creates_lists_and_revokes_keys_and_stores_no_secret,
);

/// `swapline loadtest orders --api-key` drives an engine that requires keys.
#[tokio::test(flavor = "multi_thread")]
async fn loadtest_orders_sends_its_api_key_when_auth_is_required() {
    let engine = Engine::start_on(Backend::Embedded, AUTH);
    let (_, key) = create_key(&engine, "loadtest", "trade,read");
    let options = |api_key: Option<String>| swapline::loadtest::OrdersOptions {
        url: engine.url.clone(),
        count: 5,
        rate: None,
        concurrency: 5,
        token_in: "SOL".into(),
        token_out: "USDC".into(),
        amount: "0.5".into(),
        timeout: Duration::from_secs(60),
        api_key,
        idempotency_keys: false,
    };
    let report = swapline::loadtest::run_orders(options(Some(key.clone())), indicatif::ProgressBar::hidden()).await;
    assert!(report.is_clean(), "{report}");
    // With an Idempotency-Key on every order too: the key still owns each
    // order, so its WebSocket opens.
    let keyed = swapline::loadtest::OrdersOptions {
        idempotency_keys: true,
        ..options(Some(key))
    };
    let report = swapline::loadtest::run_orders(keyed, indicatif::ProgressBar::hidden()).await;
    assert!(report.is_clean(), "{report}");
    let refused = swapline::loadtest::run_orders(options(None), indicatif::ProgressBar::hidden()).await;
    assert!(!refused.is_clean(), "without a key every POST is 401: {refused}");
}

/// `POST /api/ws-tickets` reads its body under the same rules as an order:
/// JSON only (415), at most `server.body_limit_bytes` (413).
#[tokio::test(flavor = "multi_thread")]
async fn ws_ticket_requests_get_the_body_rules_of_every_post() {
    let engine = Engine::start_on(Backend::Embedded, AUTH);
    let (_, key) = create_key(&engine, "tickets", "trade,read");
    let auth = bearer(&key);
    let send = |content_type: &'static str, body: Vec<u8>| {
        let (url, auth) = (engine.url.clone(), auth.clone());
        async move {
            let headers = [("authorization", auth.as_str()), ("content-type", content_type)];
            client::request(&url, "POST", "/api/ws-tickets", &headers, Some(body.into()))
                .await
                .unwrap()
        }
    };
    let plain = send("text/plain", b"{}".to_vec()).await;
    assert_eq!(plain.status.as_u16(), 415, "{}", plain.json());
    let large = send("application/json", vec![b' '; 70_000]).await;
    assert_eq!(large.status.as_u16(), 413, "{}", large.json());
}
