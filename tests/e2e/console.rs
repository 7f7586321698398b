//! The operator console in a real browser: headless Debian `chromium`
//! driven over WebDriver (`chromedriver` on a free loopback port) with
//! `fantoccini`, against the real binary with auth required. The test fails
//! (never skips) when either program is missing.

use crate::harness::Engine;
use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};
use swapline::client;

/// Auth on; a worker that claims two jobs at once and then one per 30 s
/// (an order behind two others waits, unsubmitted, long enough to be
/// cancelled from the page);
/// SOL/USDC pools that fill, and a USDC/USDT pool too small for any real
/// order, so USDC → USDT fails at routing with `no_quotes`.
const CONFIG: &str = r#"
[auth]
required = true

[worker]
concurrency = 4
rate_limit_per_minute = 2

[[venues.pools]]
kind = "constant_product"
venue = "raydium"
base = "SOL"
quote = "USDC"
reserve_base = "500000"
reserve_quote = "75000000"
fee_bps = 25

[[venues.pools]]
kind = "dlmm"
venue = "meteora"
base = "SOL"
quote = "USDC"
price = 150.1
bin_step_bps = 10
bins_per_side = 100
bin_liquidity = 2000.0
base_fee_bps = 20
variable_fee_bps = 1
max_fee_bps = 200

[[venues.pools]]
kind = "dlmm"
venue = "meteora"
base = "USDC"
quote = "USDT"
price = 1.0
bin_step_bps = 1
bins_per_side = 1
bin_liquidity = 1.0
base_fee_bps = 5
variable_fee_bps = 1
max_fee_bps = 100
"#;

/// How long any one thing the page should show may take to appear.
const DEADLINE: Duration = Duration::from_secs(30);

/// The path of `program`, or a failure that says how to install it.
fn require(program: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "`{program}` is not installed; the console test drives a real browser. \
             Install it with: apt-get install chromium chromium-driver"
        )
    })
}

/// A `chromedriver` on a free loopback port; killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start() -> Driver {
        let program = require("chromedriver");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(program)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        loop {
            if let Ok(status) = client::get(&driver.url, "/status").await
                && status.status == 200
            {
                return driver;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "chromedriver did not answer on {}",
                driver.url
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A headless Chromium session (no sandbox: CI runs as root).
    async fn browser(&self) -> Client {
        let chromium = require("chromium");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--window-size=1366,900",
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object")
        };
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a Chromium session from chromedriver")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A key made through the CLI; returns its secret.
fn create_key(engine: &Engine) -> String {
    let output = engine.cli(&[
        "keys",
        "create",
        "--name",
        "operator",
        "--scopes",
        "trade,read",
        "--json",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let created: Value = serde_json::from_slice(&output.stdout).expect("keys create --json prints JSON");
    created["secret"].as_str().expect("a secret").to_owned()
}

async fn api(engine: &Engine, secret: &str, method: &str, path: &str, body: Option<&Value>) -> client::Response {
    let auth = format!("Bearer {secret}");
    let mut headers = vec![("authorization", auth.as_str())];
    let body = body.map(|b| {
        headers.push(("content-type", "application/json"));
        bytes::Bytes::from(serde_json::to_vec(b).unwrap())
    });
    client::request(&engine.url, method, path, &headers, body)
        .await
        .unwrap()
}

/// Posts an order with the key; returns its id.
async fn create_order(engine: &Engine, secret: &str, body: Value) -> String {
    let response = api(engine, secret, "POST", "/api/orders/execute", Some(&body)).await;
    assert_eq!(response.status, 201, "{}", String::from_utf8_lossy(&response.body));
    response.json()["orderId"].as_str().unwrap().to_owned()
}

async fn status(engine: &Engine, secret: &str, id: &str) -> Value {
    let response = api(engine, secret, "GET", &format!("/api/orders/status/{id}"), None).await;
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    response.json()
}

/// Waits until the order's status is `wanted` (the API's view).
async fn api_reaches(engine: &Engine, secret: &str, id: &str, wanted: &str) -> Value {
    let started = Instant::now();
    loop {
        let order = status(engine, secret, id).await;
        if order["status"] == wanted {
            return order;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "order {id} did not reach {wanted}: {order}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The page's view: waits until the element at `css` exists and its text
/// satisfies `ok`; returns the text.
async fn text_when(browser: &Client, css: &str, ok: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    let mut last = String::from("(no such element)");
    loop {
        if let Ok(element) = browser.find(Locator::Css(css)).await
            && let Ok(text) = element.text().await
        {
            if ok(&text) {
                return text;
            }
            last = text;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{css}: the page shows {last:?}; alert: {:?}",
            alert(browser).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The element at `css`, once it exists and is shown.
async fn shown(browser: &Client, css: &str) -> Element {
    let started = Instant::now();
    loop {
        if let Ok(element) = browser.find(Locator::Css(css)).await
            && element.is_displayed().await.unwrap_or(false)
        {
            return element;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{css} is not shown; alert: {:?}",
            alert(browser).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until no element matches `css`.
async fn gone(browser: &Client, css: &str) {
    let started = Instant::now();
    while !browser.find_all(Locator::Css(css)).await.unwrap().is_empty() {
        assert!(started.elapsed() < DEADLINE, "{css} is still on the page");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the page's alert says (empty when hidden).
async fn alert(browser: &Client) -> String {
    match browser.find(Locator::Id("alert")).await {
        Ok(alert) => alert.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

fn row(id: &str, cell: &str) -> String {
    format!("tr[data-order-id=\"{id}\"] {cell}")
}

fn is_uuid(text: &str) -> bool {
    text.len() == 36 && text.parse::<uuid::Uuid>().is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_logs_in_submits_watches_filters_cancels_and_retries_from_the_console() {
    // Checked first: without the browser the test fails here, never skips.
    require("chromium");
    let driver = Driver::start().await;
    let engine = Engine::start(CONFIG);
    let secret = create_key(&engine);

    // The page and its assets are served without a key, with the policy.
    let page = client::get(&engine.url, "/console").await.unwrap();
    assert_eq!(page.status, 200);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("connect-src 'self' ws: wss:"),
        "{csp}"
    );
    let script = client::get(&engine.url, "/console/console.js").await.unwrap();
    assert_eq!(script.headers["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(client::get(&engine.url, "/console/nope.js").await.unwrap().status, 404);
    // …but its data is not.
    assert_eq!(client::get(&engine.url, "/api/orders").await.unwrap().status, 401);

    let browser = driver.browser().await;
    browser.goto(&format!("{}/console", engine.url)).await.unwrap();

    // A wrong key is refused on the page.
    shown(&browser, "#api-key")
        .await
        .send_keys("swl_not_a_key")
        .await
        .unwrap();
    browser
        .find(Locator::Id("login-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    text_when(&browser, "#alert", |t| t.contains("Could not sign in")).await;

    // Log in with the key; it stays in this tab only.
    let key_field = shown(&browser, "#api-key").await;
    key_field.clear().await.unwrap();
    key_field.send_keys(&secret).await.unwrap();
    browser
        .find(Locator::Id("login-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    shown(&browser, "#orders-table").await;
    let stored = browser
        .execute(
            "return [sessionStorage.getItem('swapline.apiKey'), localStorage.length];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(stored, json!([secret, 0]));
    // Live updates: the multi-order stream (GET /api/stream, opened with a
    // stream ticket), not the per-order fallback and never polling alone.
    text_when(&browser, "#stat-live", |t| t.starts_with("one stream")).await;

    // Submit an order from the page; see it reach `confirmed` in the table.
    browser
        .find(Locator::Id("submit-order"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let confirmed = text_when(&browser, "#created-id", is_uuid).await;
    text_when(&browser, &row(&confirmed, "td.status"), |t| t == "confirmed").await;
    let order = status(&engine, &secret, &confirmed).await;
    assert_eq!(order["status"], "confirmed");

    // Open its timeline: events in seq order, route, quotes, strategy and
    // the transaction.
    browser
        .find(Locator::Css(&row(&confirmed, "button.open")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    shown(&browser, "#timeline").await;
    text_when(&browser, "#timeline-id", |t| t == confirmed).await;
    text_when(&browser, "#timeline-events li[data-type=\"confirmed\"]", |t| {
        !t.is_empty()
    })
    .await;
    let types = browser
        .execute(
            "return [...document.querySelectorAll('#timeline-events li')].map(li => li.dataset.type);",
            vec![],
        )
        .await
        .unwrap();
    let types: Vec<&str> = types.as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"pending"), "{types:?}");
    assert_eq!(types.last(), Some(&"confirmed"), "{types:?}");
    let tx_hash = order["txHash"].as_str().unwrap();
    text_when(&browser, "dd[data-field=\"transaction\"]", |t| t == tx_hash).await;
    let strategy = order["strategy"]["name"].as_str().unwrap();
    text_when(&browser, "dd[data-field=\"strategy\"]", |t| t.starts_with(strategy)).await;
    let legs = browser
        .find_all(Locator::Css("#timeline-route tbody tr"))
        .await
        .unwrap();
    assert_eq!(legs.len(), order["route"]["legs"].as_array().unwrap().len());
    let quotes = browser
        .find_all(Locator::Css("#timeline-quotes tbody tr"))
        .await
        .unwrap();
    assert_eq!(quotes.len(), order["quotes"].as_array().unwrap().len());
    assert!(!quotes.is_empty());

    // A failed order: counted by code, and found by the filters.
    let failed = order_failing(&engine, &secret).await;
    text_when(&browser, &row(&failed, "td.status"), |t| t == "failed").await;
    text_when(&browser, "#failures", |t| t.contains("no_quotes: 1")).await;
    browser
        .find(Locator::Id("filter-status"))
        .await
        .unwrap()
        .select_by_value("failed")
        .await
        .unwrap();
    browser
        .find(Locator::Id("filter-code"))
        .await
        .unwrap()
        .send_keys("no_quotes")
        .await
        .unwrap();
    browser
        .find(Locator::Id("apply-filters"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    gone(&browser, &row(&confirmed, "td")).await;
    text_when(&browser, &row(&failed, "td.code"), |t| t == "no_quotes").await;
    browser
        .find(Locator::Id("clear-filters"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    text_when(&browser, &row(&confirmed, "td.status"), |t| t == "confirmed").await;

    // Cancel an order held before submission: two orders first empty the
    // worker's rate limit (two claims, then one per 30 s), so the third
    // waits, `pending`, for at least half a minute.
    let sol = json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": 1, "slippage": 0.5});
    for _ in 0..2 {
        create_order(&engine, &secret, sol.clone()).await;
    }
    let held = create_order(&engine, &secret, sol).await;
    text_when(&browser, &row(&held, "td.status"), |t| t == "pending").await;
    // The page follows an unfinished order live: its socket really opens (a
    // same-origin upgrade with a ticket); nothing else here opens one.
    let started = Instant::now();
    while ws_messages_sent(&engine).await == 0.0 {
        assert!(started.elapsed() < DEADLINE, "the page opened no WebSocket");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shown(&browser, &row(&held, "button.cancel"))
        .await
        .click()
        .await
        .unwrap();
    text_when(&browser, &row(&held, "td.status"), |t| t == "cancelled").await;
    let cancelled = status(&engine, &secret, &held).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert!(cancelled["txHash"].is_null(), "{cancelled}");

    // Retry the failed one: a new order, linked both ways.
    shown(&browser, &row(&failed, "button.retry"))
        .await
        .click()
        .await
        .unwrap();
    let retry = text_when(&browser, "#created-id", |t| is_uuid(t) && t != confirmed).await;
    text_when(&browser, &row(&retry, "td.pair"), |t| t == "USDC → USDT").await;
    let new = status(&engine, &secret, &retry).await;
    assert_eq!(new["retryOf"], failed, "{new}");
    let old = status(&engine, &secret, &failed).await;
    assert_eq!(old["retriedBy"], retry, "{old}");
    text_when(&browser, &row(&failed, ".note"), |t| t.starts_with("retried by")).await;

    browser.close().await.unwrap();
}

/// USDC → USDT, which no venue can fill here: fails with `no_quotes`.
async fn order_failing(engine: &Engine, secret: &str) -> String {
    let id = create_order(
        engine,
        secret,
        json!({"tokenIn": "USDC", "tokenOut": "USDT", "amount": 1000, "slippage": 0.5}),
    )
    .await;
    let failed = api_reaches(engine, secret, &id, "failed").await;
    assert_eq!(failed["lastError"]["code"], "no_quotes", "{failed}");
    id
}

/// `swapline_ws_messages_sent_total` of the engine.
async fn ws_messages_sent(engine: &Engine) -> f64 {
    let metrics = client::get(&engine.url, "/metrics").await.unwrap();
    String::from_utf8_lossy(&metrics.body)
        .lines()
        .find_map(|line| line.strip_prefix("swapline_ws_messages_sent_total "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

/// On an engine that requires no key (the `bench` profile the harness
/// uses), an empty key signs in and no `Authorization` header is sent (a
/// key that is sent is always checked).
#[tokio::test(flavor = "multi_thread")]
async fn without_auth_an_empty_key_signs_in_and_orders_confirm() {
    require("chromium");
    let driver = Driver::start().await;
    let engine = Engine::start("");
    let browser = driver.browser().await;
    browser.goto(&format!("{}/console", engine.url)).await.unwrap();
    shown(&browser, "#login-button").await.click().await.unwrap();
    shown(&browser, "#orders-table").await;
    text_when(&browser, "#who", |t| t == "Signed in without a key.").await;
    browser
        .find(Locator::Id("submit-order"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let id = text_when(&browser, "#created-id", is_uuid).await;
    text_when(&browser, &row(&id, "td.status"), |t| t == "confirmed").await;
    browser.close().await.unwrap();
}
