//! `swapline`: parses the command line and calls the library.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use swapline::{
    app::{self, Role},
    config::{Config, Sources},
    loadtest::{FanoutOptions, OrdersOptions},
    telemetry,
};

/// Order execution engine for Solana DEX swaps.
#[derive(Parser, Debug)]
#[command(name = "swapline", version, about)]
struct Cli {
    /// Configuration profile: dev, staging, production, bench (or any
    /// <name>.toml in the config directory).
    #[arg(long, global = true, env = "SWAPLINE_PROFILE", default_value = "dev")]
    profile: String,
    /// Extra TOML file merged after the profile (repeatable).
    #[arg(long = "config", global = true, value_name = "FILE")]
    config: Vec<PathBuf>,
    /// Directory of default.toml and the overlays (default: ./configs if
    /// present, else the built-in copies).
    #[arg(long, global = true, value_name = "DIR")]
    config_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the HTTP/WebSocket API (the default command).
    Serve {
        /// Also run a worker in this process, whatever `worker.enabled` says.
        #[arg(long)]
        with_worker: bool,
    },
    /// Run a worker only (needs a shared queue).
    Worker,
    /// Apply pending store migrations and exit.
    Migrate,
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Inspect, check and try strategy plugins.
    Plugins {
        #[command(subcommand)]
        action: PluginsAction,
    },
    /// Write the JSON Schemas of the API, the WebSocket messages, the
    /// configuration and the plugin ABI (the files of `schemas/`) into a
    /// directory.
    Schemas {
        /// Directory to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Create, list and revoke API keys (kept in the configured store).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Operate orders of a running engine: list (the dead letters
    /// with `--status failed --code …`), show, cancel, retry.
    ///
    /// Through the engine's HTTP API rather than the store directly: a
    /// cancel must publish its event to the watchers and a retry must
    /// enqueue its job, which only the engine can do on every backend
    /// (the embedded queue and bus live inside the serving process), and
    /// the API applies the same rules to operators as to clients (scopes,
    /// owners, 409s); use an `admin` key to act on every order.
    Orders {
        #[command(flatten)]
        target: OrdersTarget,
        #[command(subcommand)]
        action: OrdersAction,
    },
    /// Inspect the simulated chain kept in the configured store: every
    /// transaction it has seen, and its pools.
    Chain {
        #[command(subcommand)]
        action: ChainAction,
    },
    /// Load-test a running engine.
    Loadtest {
        #[command(subcommand)]
        kind: LoadtestKind,
    },
}

#[derive(Subcommand, Debug)]
enum ChainAction {
    /// Every transaction the chain has seen (oldest first): signature,
    /// order, leg, blockhash, lastValidSlot, priority fee, state
    /// (pending, landed, failed, dropped, expired) and landed slot.
    Txs {
        /// Only the transactions of this order.
        #[arg(long, value_name = "ID")]
        order: Option<String>,
        /// Print a JSON array (camelCase fields, amounts as strings of
        /// base units) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The pools: their state (reserves or price) and the flows of their
    /// landed swaps.
    Pools {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum LoadtestKind {
    /// Post orders at a fixed rate and follow each over its WebSocket.
    Orders {
        #[command(flatten)]
        options: OrdersOptions,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Open many WebSockets over a few orders and check every client saw
    /// every event (run the engine with non-zero venue latency).
    Fanout {
        #[command(flatten)]
        options: FanoutOptions,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Which engine `swapline orders` talks to, and with which key.
#[derive(clap::Args, Debug)]
struct OrdersTarget {
    /// Engine base URL.
    #[arg(long, env = "SWAPLINE_URL", default_value = "http://127.0.0.1:3000")]
    url: String,
    /// API key secret (`swl_…`), sent as `Authorization: Bearer`; an `admin`
    /// key sees and acts on every order. Needed when `auth.required`.
    #[arg(long, env = "SWAPLINE_API_KEY", value_name = "SECRET", hide_env_values = true)]
    api_key: Option<String>,
    /// Print the API's JSON answer as it came.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum OrdersAction {
    /// Orders, newest first (`GET /api/orders`).
    List {
        /// Only this status (pending, routing, building, submitted,
        /// confirmed, failed, cancelled).
        #[arg(long)]
        status: Option<String>,
        /// Only this failure code (`lastError.code`), e.g.
        /// deadline_exceeded.
        #[arg(long)]
        code: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// `nextCursor` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One order (`GET /api/orders/status/{id}`).
    Show {
        /// The order's id.
        id: String,
    },
    /// Cancel an order not submitted yet (`POST /api/orders/{id}/cancel`).
    Cancel {
        /// The order's id.
        id: String,
    },
    /// Retry a failed or cancelled order as a new, linked order
    /// (`POST /api/orders/{id}/retry`).
    Retry {
        /// The order's id.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum KeysAction {
    /// Create a key and print its secret, once: it is stored only as a hash.
    Create {
        /// A name for people and logs.
        #[arg(long)]
        name: String,
        /// Comma-separated scopes: trade (create orders), read (status,
        /// events, lists, WebSocket), admin (everything, every order).
        #[arg(long)]
        scopes: String,
        /// This key's own order limit per minute (default: the configured
        /// `limits.orders_per_minute`).
        #[arg(long)]
        orders_per_minute: Option<u32>,
        /// Print `{"id","name","scopes","secret"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every key (never a secret).
    List {
        /// Print as a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: requests with it get 401 from now on.
    Revoke {
        /// The key's id.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum PluginsAction {
    /// Every built-in strategy and every module the pipelines name: source,
    /// sha256, ABI version, exports.
    List,
    /// Load a module (or built-in name) under the configured limits: ABI,
    /// imports, exports, params schema, then a dry run on a sample input.
    Check {
        /// A .wasm file (binary or WAT text) or a built-in name.
        file: String,
    },
    /// Route one input with a module: prints the decision, the host's
    /// verdict, fuel used and time.
    Test {
        /// A .wasm file (binary or WAT text) or a built-in name.
        file: String,
        /// A RouteInput as JSON (schemas/plugin-input.schema.json); default:
        /// the sample input of `plugins check`.
        #[arg(long, value_name = "FILE")]
        input: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigAction {
    /// Print the effective configuration as TOML.
    Show,
    /// Validate the configuration (types, rules and the JSON Schema) for
    /// the role a process would run: it refuses exactly what start-up
    /// refuses.
    Check {
        /// The command the configuration is for.
        #[arg(long, value_enum, default_value_t = CheckRole::Serve)]
        role: CheckRole,
        /// As `serve --with-worker`.
        #[arg(long)]
        with_worker: bool,
    },
}

/// The commands `config check` can check for.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum CheckRole {
    /// `swapline serve`.
    Serve,
    /// `swapline worker`.
    Worker,
}

fn sources(cli: &Cli) -> Sources {
    Sources {
        profile: cli.profile.clone(),
        config_dir: cli.config_dir.clone(),
        files: cli.config.clone(),
        env: true,
    }
}

fn load(cli: &Cli) -> Result<Config> {
    sources(cli).load().map_err(|e| anyhow::anyhow!("{e}"))
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let command = cli.command.as_ref().unwrap_or(&Command::Serve { with_worker: false });
    if let Command::Loadtest { kind } = command {
        return loadtest(kind).await;
    }
    if let Command::Orders { target, action } = command {
        return orders(target, action).await;
    }
    if let Command::Schemas { out } = command {
        let written = swapline::schemas::write_all(out).with_context(|| format!("writing into {}", out.display()))?;
        println!("wrote {} schemas into {}", written.len(), out.display());
        return Ok(());
    }
    let config = load(&cli)?;
    match command {
        Command::Config {
            action: ConfigAction::Show,
        } => {
            print!(
                "{}",
                toml::to_string_pretty(&config).context("rendering the configuration")?
            );
        }
        Command::Config {
            action: ConfigAction::Check { role, with_worker },
        } => {
            let role = match role {
                CheckRole::Serve => Role::Serve {
                    with_worker: *with_worker || config.worker.enabled,
                },
                CheckRole::Worker => Role::Worker,
            };
            if let Err(problems) = swapline::config::validate_for(&config, role) {
                bail!("{}", app::AppError::Invalid(problems));
            }
            let errors = swapline::config::schema_errors(&config);
            if !errors.is_empty() {
                bail!(
                    "the configuration breaks schemas/config.schema.json:\n  - {}",
                    errors.join("\n  - ")
                );
            }
            println!("configuration OK (profile {})", cli.profile);
        }
        Command::Plugins { action } => plugins(&config, action)?,
        Command::Keys { action } => keys(&config, action).await?,
        Command::Chain { action } => chain(&config, action).await?,
        Command::Migrate => {
            telemetry::init(&config.log);
            let applied = app::migrate(&config).await?;
            if applied.is_empty() {
                println!("store is up to date");
            } else {
                println!("applied migrations {applied:?}");
            }
        }
        Command::Serve { with_worker } => {
            telemetry::init(&config.log);
            let role = Role::Serve {
                with_worker: *with_worker || config.worker.enabled,
            };
            app::run_with_reload(config, role, shutdown_signal(), Some(sources(&cli))).await?;
        }
        Command::Worker => {
            telemetry::init(&config.log);
            app::run_with_reload(config, Role::Worker, shutdown_signal(), Some(sources(&cli))).await?;
        }
        Command::Loadtest { .. } | Command::Schemas { .. } | Command::Orders { .. } => {
            unreachable!("handled before loading the configuration")
        }
    }
    Ok(())
}

async fn chain(config: &Config, action: &ChainAction) -> Result<()> {
    use serde_json::json;
    use swapline::{domain::OrderId, venues::PoolView};
    let store = app::chain_store(config).await?;
    match action {
        ChainAction::Txs { order, json } => {
            let order = order
                .as_deref()
                .map(|id| id.parse::<OrderId>())
                .transpose()
                .map_err(|e| anyhow::anyhow!("--order: not an order id: {e}"))?;
            let txs = store.chain_txs(order).await?;
            if *json {
                let rows: Vec<_> = txs
                    .iter()
                    .map(|tx| {
                        json!({
                            "signature": tx.signature,
                            "orderId": tx.order_id.to_string(),
                            "leg": tx.leg,
                            "venue": tx.venue,
                            "tokenIn": tx.token_in,
                            "tokenOut": tx.token_out,
                            "amountIn": tx.amount_in.to_string(),
                            "minAmountOut": tx.min_amount_out.to_string(),
                            "blockhash": tx.blockhash,
                            "lastValidSlot": tx.last_valid_slot,
                            "priorityFee": tx.priority_fee,
                            "sentSlot": tx.sent_slot,
                            "state": tx.state.as_str(),
                            "landedSlot": tx.landed_slot,
                            "amountOut": tx.amount_out.map(|a| a.to_string()),
                            "error": tx.error,
                            "rebroadcasts": tx.rebroadcasts,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!(
                    "{:<88}  {:<36}  {:>3}  {:<8}  {:>10}  {:>10}  {:>10}  {:>12}",
                    "SIGNATURE", "ORDER", "LEG", "STATE", "SENT", "VALID TO", "LANDED", "PRIORITY FEE"
                );
                for tx in &txs {
                    println!(
                        "{:<88}  {:<36}  {:>3}  {:<8}  {:>10}  {:>10}  {:>10}  {:>12}",
                        tx.signature,
                        tx.order_id.to_string(),
                        tx.leg,
                        tx.state.as_str(),
                        tx.sent_slot,
                        tx.last_valid_slot,
                        tx.landed_slot.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                        tx.priority_fee,
                    );
                }
                println!("{} transactions", txs.len());
            }
        }
        ChainAction::Pools { json } => {
            let pools = store
                .chain_pools()
                .await?
                .iter()
                .map(PoolView::of)
                .collect::<Result<Vec<_>, _>>()?;
            if *json {
                println!("{}", serde_json::to_string(&pools)?);
            } else {
                println!(
                    "{:<24}  {:<16}  {:>24}  {:>24}  {:>14}  {:>7}",
                    "POOL", "KIND", "RESERVE BASE", "RESERVE QUOTE", "PRICE", "SWAPS"
                );
                for pool in &pools {
                    println!(
                        "{:<24}  {:<16}  {:>24}  {:>24}  {:>14.8}  {:>7}",
                        pool.pool,
                        pool.kind,
                        pool.reserve_base.as_deref().unwrap_or("-"),
                        pool.reserve_quote.as_deref().unwrap_or("-"),
                        pool.price,
                        pool.swaps,
                    );
                }
            }
        }
    }
    Ok(())
}

fn plugins(config: &Config, action: &PluginsAction) -> Result<()> {
    use swapline::plugins::{PluginHost, cli};
    // Inspection never writes the on-disk module cache.
    let host = PluginHost::new(config.plugins.clone(), None)?;
    match action {
        PluginsAction::List => {
            for plugin in cli::list(&config.pipelines, &host)? {
                println!("{plugin}\n");
            }
        }
        PluginsAction::Check { file } => {
            let report = cli::check(&host, file)?;
            println!("{report}");
            if !report.dry_run.passed() {
                bail!("the dry run did not produce a route the host accepts");
            }
        }
        PluginsAction::Test { file, input } => {
            let input = match input {
                Some(path) => {
                    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                    serde_json::from_str(&text).with_context(|| format!("{} is not a RouteInput", path.display()))?
                }
                None => cli::sample_input(),
            };
            let strategy = host.load_setting(file)?;
            let report = cli::test(&strategy, &input);
            print!("{report}");
            if !report.passed() {
                bail!("no route the host accepts");
            }
        }
    }
    Ok(())
}

async fn keys(config: &Config, action: &KeysAction) -> Result<()> {
    use serde_json::json;
    use swapline::domain::{ApiKey, parse_scopes, scopes_text};
    let keys = app::keys(config).await?;
    let view = |key: &ApiKey| {
        json!({
            "id": key.id.to_string(),
            "name": key.name,
            "scopes": key.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "ordersPerMinute": key.orders_per_minute,
            "createdAt": key.created_at,
            "revokedAt": key.revoked_at,
        })
    };
    match action {
        KeysAction::Create {
            name,
            scopes,
            orders_per_minute,
            json,
        } => {
            let scopes = parse_scopes(scopes).map_err(|e| anyhow::anyhow!("--scopes: {e}"))?;
            let created = keys.create(name, scopes, *orders_per_minute).await?;
            let key = &created.key;
            if *json {
                let out = json!({
                    "id": key.id.to_string(),
                    "name": key.name,
                    "scopes": key.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                    "secret": created.secret,
                });
                println!("{out}");
            } else {
                println!(
                    "created key {} ({}, scopes {})",
                    key.id,
                    key.name,
                    scopes_text(&key.scopes)
                );
                println!("secret: {}", created.secret);
                println!("Keep the secret now: it is stored only as a hash and cannot be shown again.");
                println!("Use it as: Authorization: Bearer {}", created.secret);
            }
        }
        KeysAction::List { json } => {
            let list = keys.list().await?;
            if *json {
                let out: Vec<_> = list.iter().map(view).collect();
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else if list.is_empty() {
                println!("no keys; create one with `swapline keys create --name NAME --scopes trade,read`");
            } else {
                println!(
                    "{:<36}  {:<20}  {:<16}  {:<8}  created",
                    "id", "name", "scopes", "state"
                );
                for key in &list {
                    let state = if key.is_active() { "active" } else { "revoked" };
                    println!(
                        "{:<36}  {:<20}  {:<16}  {:<8}  {}",
                        key.id,
                        key.name,
                        scopes_text(&key.scopes),
                        state,
                        key.created_at
                    );
                }
            }
        }
        KeysAction::Revoke { id } => {
            let id = id.parse().with_context(|| format!("{id:?} is not a key id (a UUID)"))?;
            let key = keys.revoke(id).await?;
            println!("revoked key {} ({})", key.id, key.name);
        }
    }
    Ok(())
}

async fn orders(target: &OrdersTarget, action: &OrdersAction) -> Result<()> {
    use swapline::client;
    let encode = |text: &str| form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
    let (method, path) = match action {
        OrdersAction::List {
            status,
            code,
            limit,
            cursor,
        } => {
            let mut query = format!("limit={limit}");
            for (name, value) in [("status", status), ("code", code), ("cursor", cursor)] {
                if let Some(value) = value {
                    query.push_str(&format!("&{name}={}", encode(value)));
                }
            }
            ("GET", format!("/api/orders?{query}"))
        }
        OrdersAction::Show { id } => ("GET", format!("/api/orders/status/{}", encode(id))),
        OrdersAction::Cancel { id } => ("POST", format!("/api/orders/{}/cancel", encode(id))),
        OrdersAction::Retry { id } => ("POST", format!("/api/orders/{}/retry", encode(id))),
    };
    let auth = target.api_key.as_ref().map(|key| format!("Bearer {key}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("authorization", auth.as_str()));
    }
    let body = (method == "POST").then(|| bytes::Bytes::from_static(b"{}"));
    let response = client::request(&target.url, method, &path, &headers, body)
        .await
        .with_context(|| format!("{method} {}{path}", target.url))?;
    let answer: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or_default();
    if !response.status.is_success() {
        let error = &answer["error"];
        bail!(
            "{} {}: {}",
            response.status.as_u16(),
            error["code"].as_str().unwrap_or("error"),
            error["message"].as_str().unwrap_or("")
        );
    }
    if target.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let line = |o: &serde_json::Value| {
        let text = |key: &str| o[key].as_str().unwrap_or("-").to_owned();
        format!(
            "{:<36}  {:<9}  {:>12} {:<5} → {:<5}  {:<20}  {}",
            text("id"),
            text("status"),
            text("amount"),
            text("tokenIn"),
            text("tokenOut"),
            o["lastError"]["code"].as_str().unwrap_or("-"),
            text("createdAt"),
        )
    };
    match action {
        OrdersAction::List { .. } => {
            let list = answer["orders"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("no orders");
            }
            for order in &list {
                println!("{}", line(order));
            }
            if let Some(next) = answer["nextCursor"].as_str() {
                println!("more: --cursor {next}");
            }
        }
        OrdersAction::Show { .. } => {
            println!("{}", line(&answer));
            for key in ["retryOf", "retriedBy", "expiresAt", "txHash", "dex", "amountOut"] {
                if let Some(value) = answer[key].as_str() {
                    println!("  {key}: {value}");
                }
            }
        }
        OrdersAction::Cancel { id } => println!("cancelled order {id}"),
        OrdersAction::Retry { id } => println!(
            "retried order {id} as order {}",
            answer["orderId"].as_str().unwrap_or("?")
        ),
    }
    Ok(())
}

async fn loadtest(kind: &LoadtestKind) -> Result<()> {
    use swapline::loadtest::{progress, run_fanout, run_orders};
    let (clean, text) = match kind {
        LoadtestKind::Orders { options, json } => {
            let report = run_orders(options.clone(), progress(options.count, "orders", *json)).await;
            let text = if *json {
                serde_json::to_string_pretty(&report)?
            } else {
                report.to_string()
            };
            (report.is_clean(), text)
        }
        LoadtestKind::Fanout { options, json } => {
            let report = run_fanout(options.clone(), progress(options.clients, "clients", *json)).await;
            let text = if *json {
                serde_json::to_string_pretty(&report)?
            } else {
                report.to_string()
            };
            (report.is_clean(), text)
        }
    };
    println!("{text}");
    if !clean {
        bail!("the run saw errors, missing events or unfinished orders");
    }
    Ok(())
}
