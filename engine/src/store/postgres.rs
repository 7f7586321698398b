//! The production store: PostgreSQL through a deadpool pool. Every write is
//! one transaction; an event's `seq` comes from the order row it locks.
//! Pool size, timeouts and `statement_timeout` come from `[postgres]`.
//! Every call runs through [`PostgresStore::run`]: a client-side deadline
//! (`query_timeout`) turns a silent connection into
//! [`StoreError::Unavailable`], and the connection is closed, not pooled.
//! Imports `domain`, `config`, `telemetry::PoolStatus` and its own seam
//! only; never `api`, `pipeline` or `venues`.

use super::{
    KeyRecord, KeyedCreate, ListQuery, NewEvent, NewIdempotencyKey, OrderPage, PostgresConfig, Store, StoreError,
    StoredAnswer, StreamCursor, StreamItem, StreamPage, cut_page, rows_for_page, unfinished_sql,
};
use crate::domain::{
    ApiKey, Event, EventKind, KeyId, NewKey, NewOrder, Order, OrderId, OrderType, SecretHash, Status, Ticket,
    Timestamp, parse_scopes, scopes_text,
};
use crate::telemetry::{PoolStatus, event};
use async_trait::async_trait;
use deadpool_postgres::{
    ClientWrapper, Hook, HookError, Manager, ManagerConfig, Metrics, Pool, RecyclingMethod, Runtime,
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use std::{
    sync::LazyLock,
    time::{Duration, SystemTime},
};
use tokio_postgres::{NoTls, Row};
use uuid::Uuid;

mod chain;

/// Migrations: (version, name, SQL); the versions match SQLite's.
pub(crate) const MIGRATIONS: &[(u32, &str, &str)] = &[
    (1, "orders", include_str!("migrations/postgres/0001_orders.sql")),
    (
        2,
        "unfinished_index",
        include_str!("migrations/postgres/0002_unfinished_index.sql"),
    ),
    (3, "auth", include_str!("migrations/postgres/0003_auth.sql")),
    (
        4,
        "idempotency_keys",
        include_str!("migrations/postgres/0004_idempotency_keys.sql"),
    ),
    (
        5,
        "signing_secrets",
        include_str!("migrations/postgres/0005_signing_secrets.sql"),
    ),
    (
        6,
        "order_control",
        include_str!("migrations/postgres/0006_order_control.sql"),
    ),
    (7, "chain", include_str!("migrations/postgres/0007_chain.sql")),
    (
        8,
        "event_stream",
        include_str!("migrations/postgres/0008_event_stream.sql"),
    ),
    (
        9,
        "drop_executions",
        include_str!("migrations/postgres/0009_drop_executions.sql"),
    ),
    (
        10,
        "idempotency_keys_by_rowid",
        include_str!("migrations/postgres/0010_idempotency_keys_by_rowid.sql"),
    ),
];

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// A database error with the server's own words ("db error" alone says
/// nothing).
fn db_error(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::Unavailable(format!("{e}: {} ({})", db.message(), db.code().code())),
        None => unavailable(e),
    }
}

/// PostgreSQL-backed [`Store`] and [`ChainStore`](super::ChainStore).
pub struct PostgresStore {
    pool: Pool,
    schema: String,
    /// `postgres.query_timeout`.
    query_timeout: Duration,
    /// The longest a call waits for a connection.
    checkout_timeout: Duration,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Builds the pool (connections open lazily, so a database that is down
    /// at start is reported by the first call, not here).
    ///
    /// Every socket has TCP keepalive (`postgres.keepalive_*`); a
    /// connection not handed out for `postgres.verify_after_idle` is checked
    /// with an empty query before reuse, one that fails or misses
    /// `connect_timeout` is dropped and the pool opens or picks another.
    pub fn connect(config: &PostgresConfig) -> Result<Self, StoreError> {
        let mut pg: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|e| StoreError::Unavailable(format!("postgres.url: {e}")))?;
        pg.connect_timeout(config.connect_timeout.0);
        pg.keepalives(true)
            .keepalives_idle(config.keepalive_idle.0)
            .keepalives_interval(config.keepalive_interval.0)
            .keepalives_retries(config.keepalive_retries);
        // Keepalive probes only an idle socket; a socket with unacknowledged
        // data (a query sent into a black hole) is given up after this
        // (TCP_USER_TIMEOUT, RFC 5482), so a connection abandoned on a
        // deadline really closes instead of lingering for minutes.
        pg.tcp_user_timeout(config.keepalive_idle.0 + config.keepalive_interval.0 * config.keepalive_retries);
        // The server ends a session whose client left it inside a
        // transaction (an abandoned call), so no lock outlives its caller.
        pg.options(format!(
            "-c search_path={} -c statement_timeout={} -c idle_in_transaction_session_timeout={}",
            config.schema,
            config.statement_timeout.0.as_millis(),
            config.query_timeout.0.as_millis().max(1)
        ));
        pg.application_name("swapline");
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                // `is_closed` only: free for a connection in use a moment
                // ago; the idle ones are verified by the hook below.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let (verify_after, verify_within) = (config.verify_after_idle.0, config.connect_timeout.0);
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .wait_timeout(Some(config.pool_wait_timeout.0))
            .create_timeout(Some(config.connect_timeout.0))
            .recycle_timeout(Some(config.connect_timeout.0))
            .pre_recycle(Hook::async_fn(move |client: &mut ClientWrapper, metrics: &Metrics| {
                Box::pin(async move {
                    if metrics.last_used() < verify_after {
                        return Ok(());
                    }
                    match tokio::time::timeout(verify_within, client.simple_query("")).await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => Err(HookError::Backend(e)),
                        Err(_) => Err(HookError::message("idle connection did not answer")),
                    }
                })
            }))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(unavailable)?;
        Ok(PostgresStore {
            pool,
            schema: config.schema.clone(),
            query_timeout: config.query_timeout.0,
            // deadpool bounds each wait, connect and verification, but
            // verifies dead idle connections one after another: this caps
            // the whole checkout.
            checkout_timeout: config.pool_wait_timeout.0 + config.connect_timeout.0,
        })
    }

    /// A pooled connection, within `checkout_timeout`.
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        match tokio::time::timeout(self.checkout_timeout, self.pool.get()).await {
            Ok(client) => client.map_err(unavailable),
            Err(_) => {
                // Nothing was closed: a missed deadline, not a reconnect.
                crate::telemetry::connection_health::timed_out("store", "checkout");
                Err(StoreError::Unavailable(format!(
                    "no PostgreSQL connection within {:?} (postgres.pool_wait_timeout + connect_timeout)",
                    self.checkout_timeout
                )))
            }
        }
    }

    /// Runs the statements of one store call on a pooled connection within
    /// `postgres.query_timeout`.
    async fn run<T>(
        &self,
        call: impl AsyncFnOnce(&mut deadpool_postgres::Object) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.run_within(self.query_timeout, call).await
    }

    /// Runs `call` on a pooled connection; past `deadline` (counted once the
    /// connection is held) the call fails as [`StoreError::Unavailable`] and
    /// the connection is taken out of the pool and closed: it may be dead,
    /// or owe the answer of a query nobody reads, so it is never reused.
    /// The pool's idle connections are closed with it (after a silent
    /// network they are all dead; verifying them one by one would cost a
    /// `connect_timeout` each). A call abandoned by its caller (a probe's
    /// or a worker's deadline, a client that left) is treated the same:
    /// its connection never goes back to the pool.
    async fn run_within<T>(
        &self,
        deadline: Duration,
        call: impl AsyncFnOnce(&mut deadpool_postgres::Object) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut held = Held(Some(self.client().await?));
        let client = held.0.as_mut().expect("held until the call ends");
        match tokio::time::timeout(deadline, call(client)).await {
            Ok(answer) => {
                // Finished: the connection may serve the next call.
                drop(held.0.take());
                answer
            }
            Err(_) => {
                drop(held);
                let closed = self.pool.retain(|_, _| false).removed.len();
                event::backend_timeout("store");
                tracing::warn!(
                    closed_idle = closed,
                    "PostgreSQL missed its deadline; idle connections closed too"
                );
                Err(StoreError::Unavailable(format!(
                    "no answer from PostgreSQL within {deadline:?} (postgres.query_timeout)"
                )))
            }
        }
    }
}

/// A connection held by a call: unless the call finished (and took it
/// back), dropping it takes it out of the pool and closes it, so a call
/// cancelled mid-query never hands its connection to the next caller.
struct Held(Option<deadpool_postgres::Object>);

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

fn json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("domain types serialise")
}

fn parse<T: DeserializeOwned>(value: Value, what: &str) -> Result<T, StoreError> {
    serde_json::from_value(value).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

const ORDER_COLUMNS: &str = "id, job_id, order_type, token_in, token_out, amount_in::text, slippage_bps, status,
    last_kind, last_seq, quotes, quoted_at, route, strategy, attempts, last_error, tx_hash, dex, amount_out::text,
    executed_price, created_at, updated_at, created_seq, owner, expires_at, retry_of, retried_by";

fn order_from_row(row: &Row) -> Result<Order, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("order column {what}"));
    let get =
        |name: &str| -> Result<String, StoreError> { row.try_get::<_, String>(name).map_err(|_| corrupt("text")) };
    let units = |text: Option<String>, what: &str| -> Result<Option<u128>, StoreError> {
        text.map(|t| t.parse::<u128>().map_err(|_| corrupt(what))).transpose()
    };
    let value = |name: &str| -> Result<Option<Value>, StoreError> { row.try_get(name).map_err(unavailable) };
    Ok(Order {
        id: OrderId(row.try_get::<_, Uuid>("id").map_err(unavailable)?),
        job_id: get("job_id")?,
        order_type: match get("order_type")?.as_str() {
            "market" => OrderType::Market,
            _ => return Err(corrupt("order_type")),
        },
        token_in: get("token_in")?,
        token_out: get("token_out")?,
        amount_in: units(Some(get("amount_in")?), "amount_in")?.unwrap_or_default(),
        slippage_bps: row.try_get::<_, i32>("slippage_bps").map_err(unavailable)? as u32,
        status: Status::parse(&get("status")?).ok_or_else(|| corrupt("status"))?,
        last_kind: EventKind::parse(&get("last_kind")?).ok_or_else(|| corrupt("last_kind"))?,
        last_seq: row.try_get::<_, i64>("last_seq").map_err(unavailable)? as u64,
        quotes: parse(value("quotes")?.unwrap_or(Value::Array(vec![])), "quotes")?,
        quoted_at: row
            .try_get::<_, Option<SystemTime>>("quoted_at")
            .map_err(unavailable)?
            .map(Timestamp),
        route: value("route")?.map(|v| parse(v, "route")).transpose()?,
        strategy: value("strategy")?.map(|v| parse(v, "strategy")).transpose()?,
        attempts: row.try_get::<_, i32>("attempts").map_err(unavailable)? as u32,
        last_error: value("last_error")?.map(|v| parse(v, "last_error")).transpose()?,
        tx_hash: row.try_get("tx_hash").map_err(unavailable)?,
        dex: row.try_get("dex").map_err(unavailable)?,
        amount_out: units(row.try_get("amount_out").map_err(unavailable)?, "amount_out")?,
        executed_price: row.try_get("executed_price").map_err(unavailable)?,
        created_at: Timestamp(row.try_get("created_at").map_err(unavailable)?),
        updated_at: Timestamp(row.try_get("updated_at").map_err(unavailable)?),
        created_seq: row.try_get("created_seq").map_err(unavailable)?,
        owner: row.try_get::<_, Option<Uuid>>("owner").map_err(unavailable)?.map(KeyId),
        expires_at: row
            .try_get::<_, Option<SystemTime>>("expires_at")
            .map_err(unavailable)?
            .map(Timestamp),
        retry_of: row
            .try_get::<_, Option<Uuid>>("retry_of")
            .map_err(unavailable)?
            .map(OrderId),
        retried_by: row
            .try_get::<_, Option<Uuid>>("retried_by")
            .map_err(unavailable)?
            .map(OrderId),
    })
}

const KEY_COLUMNS: &str = "id, name, scopes, orders_per_minute, created_at, revoked_at";

fn key_from_row(row: &Row) -> Result<ApiKey, StoreError> {
    let scopes: String = row.try_get("scopes").map_err(unavailable)?;
    Ok(ApiKey {
        id: KeyId(row.try_get("id").map_err(unavailable)?),
        name: row.try_get("name").map_err(unavailable)?,
        scopes: parse_scopes(&scopes).map_err(|_| StoreError::Corrupt("api key column scopes".into()))?,
        orders_per_minute: row
            .try_get::<_, Option<i32>>("orders_per_minute")
            .map_err(unavailable)?
            .map(|n| n.max(0) as u32),
        created_at: Timestamp(row.try_get("created_at").map_err(unavailable)?),
        revoked_at: row
            .try_get::<_, Option<SystemTime>>("revoked_at")
            .map_err(unavailable)?
            .map(Timestamp),
    })
}

/// Unix milliseconds of an instant (0 before 1970).
/// An order's first event (seq 1), stamped now.
fn first_event(order_id: OrderId, first: NewEvent) -> Event {
    Event {
        order_id,
        seq: 1,
        timestamp: Timestamp::now(),
        message: first.message,
        progress: first.progress,
        data: first.data,
    }
}

fn millis(at: Timestamp) -> i64 {
    at.0.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Appends an event in one statement (one round trip): lock the order row,
/// insert the event with the next seq, apply the patch; a finished or missing
/// order inserts nothing. Answers `status` (NULL: no such order) and `seq`
/// (NULL: nothing appended).
fn append_sql() -> &'static str {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "
WITH locked AS (
    SELECT id, last_seq, status, attempts > 0 OR status = 'submitted' AS submitted,
           expires_at IS NOT NULL AND expires_at <= $4 AS expired,
           $16::bigint IS NOT NULL AND last_seq <> $16::bigint AS moved
    FROM orders WHERE id = $1 FOR UPDATE
), inserted AS (
    INSERT INTO order_events (order_id, seq, kind, body, created_at)
    SELECT id, last_seq + 1, $2, jsonb_set($3::jsonb, '{{seq}}', to_jsonb(last_seq + 1)), $4
    FROM locked WHERE {unfinished}
        AND NOT ($2 = 'cancelled' AND submitted)
        AND NOT ($2 = 'submitted' AND NOT submitted AND expired)
        AND NOT moved
    RETURNING seq
), updated AS (
    UPDATE orders SET
        last_seq = inserted.seq, last_kind = $2, updated_at = $4,
        status = COALESCE($5, orders.status),
        quotes = COALESCE($6, orders.quotes), quoted_at = COALESCE($7, orders.quoted_at),
        route = COALESCE($8, orders.route), strategy = COALESCE($9, orders.strategy),
        attempts = COALESCE($10, orders.attempts), last_error = COALESCE($11, orders.last_error),
        tx_hash = COALESCE($12, orders.tx_hash), dex = COALESCE($13, orders.dex),
        amount_out = COALESCE(CAST($14::text AS NUMERIC), orders.amount_out),
        executed_price = COALESCE($15, orders.executed_price)
    FROM inserted WHERE orders.id = $1
    RETURNING orders.last_seq
)
SELECT (SELECT status FROM locked) AS status, (SELECT last_seq FROM updated) AS seq,
       (SELECT submitted FROM locked) AS submitted, (SELECT expired FROM locked) AS expired,
       (SELECT moved FROM locked) AS moved",
            unfinished = unfinished_sql()
        )
    });
    &SQL
}

async fn append(client: &deadpool_postgres::Object, id: OrderId, new: &NewEvent) -> Result<Event, StoreError> {
    let kind = new.data.kind();
    let mut event = Event {
        order_id: id,
        seq: 0,
        timestamp: Timestamp::now(),
        message: new.message.clone(),
        progress: new.progress,
        data: new.data.clone(),
    };
    let at = event.timestamp.0;
    let patch = &new.patch;
    let (quotes, quoted_at) = match &patch.quotes {
        Some((quotes, at)) => (Some(json(quotes)), Some(at.0)),
        None => (None, None),
    };
    let statement = client.prepare_cached(append_sql()).await.map_err(unavailable)?;
    let row = client
        .query_one(
            &statement,
            &[
                &id.0,
                &kind.as_str(),
                &json(&event),
                &at,
                &kind.status().map(Status::as_str),
                &quotes,
                &quoted_at,
                &patch.route.as_ref().map(json),
                &patch.strategy.as_ref().map(json),
                &patch.attempts.map(|a| a as i32),
                &patch.last_error.as_ref().map(json),
                &patch.tx_hash,
                &patch.dex,
                &patch.amount_out.map(|v| v.to_string()),
                &patch.executed_price,
                &new.after_seq.map(|seq| seq as i64),
            ],
        )
        .await
        .map_err(unavailable)?;
    match (row.get::<_, Option<String>>("status"), row.get::<_, Option<i64>>("seq")) {
        (None, _) => Err(StoreError::NotFound(id)),
        (Some(status), None) => Err(refusal(id, kind, &status, &row)),
        (Some(_), Some(seq)) => {
            event.seq = seq as u64;
            Ok(event)
        }
    }
}

/// Why `append` stored nothing for an order that exists (the rules of
/// [`Store::append_event`], as the statement applied them).
fn refusal(id: OrderId, kind: EventKind, status: &str, row: &Row) -> StoreError {
    let flag = |name: &str| row.get::<_, Option<bool>>(name).unwrap_or(false);
    if Status::parse(status).is_some_and(Status::is_terminal) {
        StoreError::Finished(id)
    } else if flag("moved") {
        StoreError::Conflict(id)
    } else if kind == EventKind::Cancelled && flag("submitted") {
        StoreError::Submitted(id)
    } else if kind == EventKind::Submitted && flag("expired") {
        StoreError::Expired(id)
    } else {
        StoreError::Corrupt(format!("order {id}: event refused for no known reason"))
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn migrate(&self) -> Result<Vec<u32>, StoreError> {
        // Each migration statement may take up to `query_timeout`, plus the
        // lock, the bookkeeping and the commit.
        let deadline = self.query_timeout * (MIGRATIONS.len() as u32 * 2 + 4);
        self.run_within(deadline, async |client| {
            let tx = client.transaction().await.map_err(unavailable)?;
            // One migrator at a time across every node.
            tx.execute("SELECT pg_advisory_xact_lock(hashtext('swapline-migrate'))", &[])
                .await
                .map_err(unavailable)?;
            tx.batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
                 CREATE TABLE IF NOT EXISTS \"{schema}\".schema_migrations (
                     version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                schema = self.schema
            ))
            .await
            .map_err(unavailable)?;
            let applied: Vec<i32> = tx
                .query("SELECT version FROM schema_migrations", &[])
                .await
                .map_err(unavailable)?
                .iter()
                .map(|r| r.get("version"))
                .collect();
            let mut now = Vec::new();
            for (version, name, sql) in MIGRATIONS {
                if applied.contains(&(*version as i32)) {
                    continue;
                }
                tx.batch_execute(sql)
                    .await
                    .map_err(|e| unavailable(format!("migration {version} ({name}): {e}")))?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    &[&(*version as i32), name],
                )
                .await
                .map_err(unavailable)?;
                now.push(*version);
            }
            tx.commit().await.map_err(unavailable)?;
            Ok(now)
        })
        .await
    }

    async fn pending_migrations(&self) -> Result<Vec<u32>, StoreError> {
        self.run(async |client| {
            let exists: bool = client
                .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL AS exists", &[])
                .await
                .map_err(unavailable)?
                .get("exists");
            let applied: Vec<i32> = if exists {
                client
                    .query("SELECT version FROM schema_migrations", &[])
                    .await
                    .map_err(unavailable)?
                    .iter()
                    .map(|r| r.get("version"))
                    .collect()
            } else {
                Vec::new()
            };
            Ok(MIGRATIONS
                .iter()
                .map(|(v, _, _)| *v)
                .filter(|v| !applied.contains(&(*v as i32)))
                .collect())
        })
        .await
    }

    async fn create_order(&self, order: &NewOrder, first: NewEvent) -> Result<Event, StoreError> {
        self.run(async |client| {
            let event = first_event(order.id, first);
            let kind = event.data.kind();
            // One statement: the order and its first event commit together.
            let statement = client
                .prepare_cached(
                    // The retried order's link is set in the same statement, and
                    // only when it has no retry yet; otherwise nothing is
                    // inserted.
                    "WITH linked AS (
                         UPDATE orders SET retried_by = $1::uuid
                         WHERE id = $14::uuid AND retried_by IS NULL
                         RETURNING id
                     ), created AS (
                         INSERT INTO orders (id, job_id, order_type, token_in, token_out, amount_in, slippage_bps,
                                             status, last_kind, last_seq, created_at, updated_at, owner,
                                             expires_at, retry_of)
                         SELECT $1::uuid, $2::text, $3::text, $4::text, $5::text, CAST($6::text AS NUMERIC),
                                $7::int4, $8::text, $9::text, 1, $10::timestamptz, $10::timestamptz, $12::uuid,
                                $13::timestamptz, $14::uuid
                         WHERE $14::uuid IS NULL OR EXISTS (SELECT 1 FROM linked)
                         RETURNING id
                     )
                     INSERT INTO order_events (order_id, seq, kind, body, created_at)
                     SELECT id, 1, $9::text, $11::jsonb, $10::timestamptz FROM created",
                )
                .await
                .map_err(unavailable)?;
            let inserted = client
                .execute(
                    &statement,
                    &[
                        &order.id.0,
                        &order.job_id,
                        &order.order_type.as_str(),
                        &order.token_in,
                        &order.token_out,
                        &order.amount_in.to_string(),
                        &(order.slippage_bps as i32),
                        &kind.status().unwrap_or(Status::Pending).as_str(),
                        &kind.as_str(),
                        &event.timestamp.0,
                        &json(&event),
                        &order.owner.map(|k| k.0),
                        &order.expires_at.map(|t| t.0),
                        &order.retry_of.map(|id| id.0),
                    ],
                )
                .await
                .map_err(unavailable)?;
            if inserted == 1 {
                return Ok(event);
            }
            let Some(original) = order.retry_of else {
                return Err(unavailable("the order was not inserted"));
            };
            let exists = client
                .query_opt("SELECT 1 FROM orders WHERE id = $1", &[&original.0])
                .await
                .map_err(unavailable)?;
            Err(match exists {
                Some(_) => StoreError::AlreadyRetried(original),
                None => StoreError::NotFound(original),
            })
        })
        .await
    }

    async fn create_order_keyed(
        &self,
        order: &NewOrder,
        first: NewEvent,
        key: &NewIdempotencyKey,
    ) -> Result<KeyedCreate, StoreError> {
        self.run(async |client| {
            let event = first_event(order.id, first);
            let kind = event.data.kind();
            // One statement, so one transaction: the key first (a record that
            // holds it returns no row, and then neither the order nor its event
            // is inserted). DO NOTHING, not DO UPDATE: a duplicate must not
            // lock the record, which the first request still has to settle.
            let statement = client
                .prepare_cached(
                    "WITH taken AS (
                         INSERT INTO idempotency_keys
                             (scope, idem_key, fingerprint, order_id, status, body, completed, created_at, expires_at)
                         VALUES ($12::text, $13::text, $14::text, $1::uuid, $15::int4, $16::text, FALSE,
                                 $10::timestamptz, $17::timestamptz)
                         ON CONFLICT (scope, idem_key) DO NOTHING
                         RETURNING order_id
                     ), created AS (
                         INSERT INTO orders (id, job_id, order_type, token_in, token_out, amount_in, slippage_bps,
                                             status, last_kind, last_seq, created_at, updated_at, owner, expires_at)
                         SELECT order_id, $2::text, $3::text, $4::text, $5::text, CAST($6::text AS NUMERIC),
                                $7::int4, $8::text, $9::text, 1, $10::timestamptz, $10::timestamptz, $18::uuid,
                                $19::timestamptz
                         FROM taken
                         RETURNING id
                     )
                     INSERT INTO order_events (order_id, seq, kind, body, created_at)
                     SELECT id, 1, $9::text, $11::jsonb, $10::timestamptz FROM created",
                )
                .await
                .map_err(db_error)?;
            let owner = order.owner.map(|k| k.0);
            let expires_at = order.expires_at.map(|t| t.0);
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 19] = [
                &order.id.0,
                &order.job_id,
                &order.order_type.as_str(),
                &order.token_in,
                &order.token_out,
                &order.amount_in.to_string(),
                &(order.slippage_bps as i32),
                &kind.status().unwrap_or(Status::Pending).as_str(),
                &kind.as_str(),
                &event.timestamp.0,
                &json(&event),
                &key.scope,
                &key.key,
                &key.fingerprint,
                &i32::from(key.answer.status),
                &key.answer.body,
                &key.expires_at.0,
                &owner,
                &expires_at,
            ];
            if client.execute(&statement, &params).await.map_err(db_error)? == 1 {
                return Ok(KeyedCreate::Created(Box::new(event)));
            }
            // Held, or held by a record that expired and was not swept yet:
            // remove that one and try once more (someone else may take the key
            // in between; then it is theirs).
            let expired = client
                .execute(
                    "DELETE FROM idempotency_keys WHERE scope = $1 AND idem_key = $2 AND expires_at <= $3",
                    &[&key.scope, &key.key, &event.timestamp.0],
                )
                .await
                .map_err(db_error)?;
            if expired == 1 && client.execute(&statement, &params).await.map_err(db_error)? == 1 {
                return Ok(KeyedCreate::Created(Box::new(event)));
            }
            Ok(KeyedCreate::Taken)
        })
        .await
    }

    async fn key_record(&self, scope: &str, key: &str) -> Result<Option<KeyRecord>, StoreError> {
        self.run(async |client| {
            let statement = client
                .prepare_cached(
                    "SELECT fingerprint, order_id, status, body, completed, created_at FROM idempotency_keys
                     WHERE scope = $1 AND idem_key = $2 AND expires_at > $3",
                )
                .await
                .map_err(db_error)?;
            let row = client
                .query_opt(&statement, &[&scope, &key, &SystemTime::now()])
                .await
                .map_err(db_error)?;
            row.map(|row| {
                let status: i32 = row.try_get("status").map_err(db_error)?;
                Ok(KeyRecord {
                    fingerprint: row.try_get("fingerprint").map_err(unavailable)?,
                    order_id: OrderId(row.try_get("order_id").map_err(unavailable)?),
                    answer: StoredAnswer {
                        status: u16::try_from(status)
                            .map_err(|_| StoreError::Corrupt(format!("idempotency key status {status}")))?,
                        body: row.try_get("body").map_err(unavailable)?,
                    },
                    completed: row.try_get("completed").map_err(unavailable)?,
                    created_at: Timestamp(row.try_get("created_at").map_err(unavailable)?),
                })
            })
            .transpose()
        })
        .await
    }

    async fn settle_key(&self, scope: &str, key: &str, answer: &StoredAnswer) -> Result<(), StoreError> {
        self.run(async |client| {
            client
                .execute(
                    "UPDATE idempotency_keys SET completed = TRUE, status = $3, body = $4
                     WHERE scope = $1 AND idem_key = $2",
                    &[&scope, &key, &i32::from(answer.status), &answer.body],
                )
                .await
                .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn sweep_keys(&self) -> Result<u64, StoreError> {
        self.run(async |client| {
            client
                .execute(
                    "DELETE FROM idempotency_keys WHERE expires_at <= $1",
                    &[&SystemTime::now()],
                )
                .await
                .map_err(db_error)
        })
        .await
    }

    async fn append_event(&self, id: OrderId, event: NewEvent) -> Result<Event, StoreError> {
        self.run(async |client| append(client, id, &event).await).await
    }

    async fn order(&self, id: OrderId) -> Result<Option<Order>, StoreError> {
        self.run(async |client| {
            let statement = client
                .prepare_cached(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"))
                .await
                .map_err(unavailable)?;
            client
                .query_opt(&statement, &[&id.0])
                .await
                .map_err(unavailable)?
                .as_ref()
                .map(order_from_row)
                .transpose()
        })
        .await
    }

    async fn events(&self, id: OrderId, after: u64) -> Result<Vec<Event>, StoreError> {
        self.run(async |client| {
            let statement = client
                .prepare_cached("SELECT body FROM order_events WHERE order_id = $1 AND seq > $2 ORDER BY seq")
                .await
                .map_err(unavailable)?;
            client
                .query(&statement, &[&id.0, &(after as i64)])
                .await
                .map_err(unavailable)?
                .into_iter()
                .map(|row| parse(row.get::<_, Value>("body"), "event"))
                .collect()
        })
        .await
    }

    async fn list_orders(&self, query: &ListQuery) -> Result<OrderPage, StoreError> {
        self.run(async |client| {
            let statement = client
                .prepare_cached(&format!(
                    "SELECT {ORDER_COLUMNS} FROM orders
                     WHERE ($1::text IS NULL OR status = $1) AND ($2::bigint IS NULL OR created_seq < $2)
                       AND ($4::uuid IS NULL OR owner = $4)
                       AND ($5::text IS NULL OR last_error->>'code' = $5)
                     ORDER BY created_seq DESC LIMIT $3"
                ))
                .await
                .map_err(unavailable)?;
            let rows = client
                .query(
                    &statement,
                    &[
                        &query.status.map(Status::as_str),
                        &query.cursor,
                        &rows_for_page(query.limit),
                        &query.owner.map(|k| k.0),
                        &query.code,
                    ],
                )
                .await
                .map_err(unavailable)?;
            let orders = rows.iter().map(order_from_row).collect::<Result<Vec<_>, _>>()?;
            Ok(cut_page(orders, query.limit))
        })
        .await
    }

    async fn unfinished_orders(&self) -> Result<Vec<OrderId>, StoreError> {
        self.run(async |client| {
            Ok(client
                .query(
                    &format!("SELECT id FROM orders WHERE {} ORDER BY created_seq", unfinished_sql()),
                    &[],
                )
                .await
                .map_err(unavailable)?
                .iter()
                .map(|row| OrderId(row.get("id")))
                .collect())
        })
        .await
    }

    async fn stuck_orders(&self, older_than: Duration) -> Result<(u64, Option<Duration>), StoreError> {
        let cutoff = SystemTime::now() - older_than;
        let row = self
            .run(async |client| {
                client
                    .query_one(
                        &format!(
                            "SELECT COUNT(*) AS stuck, MIN(updated_at) AS oldest FROM orders
                         WHERE {} AND updated_at < $1",
                            unfinished_sql()
                        ),
                        &[&cutoff],
                    )
                    .await
                    .map_err(unavailable)
            })
            .await?;
        let oldest: Option<SystemTime> = row.get("oldest");
        Ok((
            row.get::<_, i64>("stuck") as u64,
            oldest.map(|t| SystemTime::now().duration_since(t).unwrap_or_default()),
        ))
    }

    fn pool_status(&self) -> Option<PoolStatus> {
        Some(PoolStatus::from(("postgres", self.pool.status())))
    }

    async fn create_key(&self, key: &NewKey) -> Result<ApiKey, StoreError> {
        let row = self
            .run(async |client| {
                client
                    .query_one(
                        &format!(
                            "INSERT INTO api_keys (id, name, scopes, orders_per_minute, secret_hash, created_at)
                         VALUES ($1, $2, $3, $4, $5, now()) RETURNING {KEY_COLUMNS}"
                        ),
                        &[
                            &key.id.0,
                            &key.name,
                            &scopes_text(&key.scopes),
                            &key.orders_per_minute.map(|n| n.min(i32::MAX as u32) as i32),
                            &&key.secret_hash.0[..],
                        ],
                    )
                    .await
                    .map_err(unavailable)
            })
            .await?;
        key_from_row(&row)
    }

    async fn key_by_secret(&self, hash: &SecretHash) -> Result<Option<ApiKey>, StoreError> {
        self.run(async |client| {
            let statement = client
                .prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE secret_hash = $1"))
                .await
                .map_err(unavailable)?;
            client
                .query_opt(&statement, &[&&hash.0[..]])
                .await
                .map_err(unavailable)?
                .as_ref()
                .map(key_from_row)
                .transpose()
        })
        .await
    }

    async fn keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        self.run(async |client| {
            client
                .query(
                    &format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"),
                    &[],
                )
                .await
                .map_err(unavailable)?
                .iter()
                .map(key_from_row)
                .collect()
        })
        .await
    }

    async fn revoke_key(&self, id: KeyId) -> Result<Option<ApiKey>, StoreError> {
        self.run(async |client| {
            client
                .query_opt(
                    &format!(
                        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1
                         RETURNING {KEY_COLUMNS}"
                    ),
                    &[&id.0],
                )
                .await
                .map_err(unavailable)?
                .as_ref()
                .map(key_from_row)
                .transpose()
        })
        .await
    }

    async fn use_ticket(&self, ticket: &Ticket) -> Result<bool, StoreError> {
        // One statement: forget expired used tickets, record this one
        // unless it is recorded already.
        self.run(async |client| {
            let inserted = client
                .execute(
                    "WITH swept AS (DELETE FROM ws_tickets WHERE expires_at <= $5)
                     INSERT INTO ws_tickets (hash, order_id, key_id, expires_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (hash) DO NOTHING",
                    &[
                        &&ticket.hash.0[..],
                        &ticket.order_id.0,
                        &ticket.key.map(|k| k.0),
                        &millis(ticket.expires_at),
                        &millis(Timestamp::now()),
                    ],
                )
                .await
                .map_err(unavailable)?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn signing_secret(&self, name: &str, candidate: [u8; 32]) -> Result<[u8; 32], StoreError> {
        self.run(async |client| {
            // A node racing this one for the first insert may commit after
            // this statement's snapshot: then neither branch sees a row,
            // and the next statement (a new snapshot) does.
            for _ in 0..3 {
                let row = client
                    .query_opt(
                        "WITH new AS (
                             INSERT INTO signing_secrets (name, secret) VALUES ($1, $2)
                             ON CONFLICT (name) DO NOTHING RETURNING secret)
                         SELECT secret FROM new UNION ALL SELECT secret FROM signing_secrets WHERE name = $1
                         LIMIT 1",
                        &[&name, &&candidate[..]],
                    )
                    .await
                    .map_err(unavailable)?;
                if let Some(row) = row {
                    let secret: Vec<u8> = row.get(0);
                    return secret
                        .try_into()
                        .map_err(|_| StoreError::Corrupt(format!("signing secret {name:?} is not 32 bytes")));
                }
            }
            Err(StoreError::Unavailable(format!(
                "signing secret {name:?} could not be read"
            )))
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(async |client| client.simple_query("SELECT 1").await.map(|_| ()).map_err(unavailable))
            .await
    }

    async fn stream_events(
        &self,
        after: StreamCursor,
        owner: Option<KeyId>,
        limit: u32,
    ) -> Result<StreamPage, StoreError> {
        self.run(async |client| {
            // Only settled rows (below the snapshot's xmin) are read, so the
            // scan stops at the horizon; a page that is not full then asks
            // with a `LIMIT 1` probe whether committed rows wait behind a
            // running transaction ("ask again soon").
            let by_owner = if owner.is_some() { " AND owner = $4" } else { "" };
            let sql = format!(
                "SELECT stream_xid::text AS xid, position, owner, body
                 FROM order_events
                 WHERE (stream_xid, position) > ($1::text::xid8, $2)
                   AND stream_xid < pg_snapshot_xmin(pg_current_snapshot()){by_owner}
                 ORDER BY stream_xid, position LIMIT $3"
            );
            let statement = client.prepare_cached(&sql).await.map_err(unavailable)?;
            let (xid, position, limit) = (after.xid.to_string(), after.position as i64, i64::from(limit.max(1)));
            let owner = owner.map(|key| key.0);
            let rows = match &owner {
                Some(owner) => client.query(&statement, &[&xid, &position, &limit, owner]).await,
                None => client.query(&statement, &[&xid, &position, &limit]).await,
            }
            .map_err(db_error)?;
            let number = |text: String| {
                text.parse::<u64>()
                    .map_err(|e| StoreError::Corrupt(format!("stream xid {text:?}: {e}")))
            };
            let full = rows.len() as i64 >= limit;
            let mut events = Vec::with_capacity(rows.len());
            for row in rows {
                let at = StreamCursor {
                    xid: number(row.get("xid"))?,
                    position: row.get::<_, i64>("position") as u64,
                };
                events.push(StreamItem {
                    at,
                    owner: row.get::<_, Option<Uuid>>("owner").map(KeyId),
                    event: parse(row.get::<_, Value>("body"), "event")?,
                });
            }
            if full {
                return Ok(StreamPage { events, more: true });
            }
            let probe = format!(
                "SELECT 1 FROM order_events
                 WHERE (stream_xid, position) > ($1::text::xid8, $2)
                   AND stream_xid >= pg_snapshot_xmin(pg_current_snapshot()){}
                 LIMIT 1",
                if owner.is_some() { " AND owner = $3" } else { "" }
            );
            let probe = client.prepare_cached(&probe).await.map_err(unavailable)?;
            let held = match &owner {
                Some(owner) => client.query_opt(&probe, &[&xid, &position, owner]).await,
                None => client.query_opt(&probe, &[&xid, &position]).await,
            }
            .map_err(db_error)?;
            Ok(StreamPage {
                events,
                more: held.is_some(),
            })
        })
        .await
    }

    async fn stream_head(&self) -> Result<StreamCursor, StoreError> {
        self.run(async |client| {
            let statement = client
                .prepare_cached(
                    "SELECT stream_xid::text AS xid, position FROM order_events
                     WHERE stream_xid < pg_snapshot_xmin(pg_current_snapshot())
                     ORDER BY stream_xid DESC, position DESC LIMIT 1",
                )
                .await
                .map_err(unavailable)?;
            let row = client.query_opt(&statement, &[]).await.map_err(db_error)?;
            row.map_or(Ok(StreamCursor::START), |row| {
                let xid: String = row.get("xid");
                Ok(StreamCursor {
                    xid: xid
                        .parse()
                        .map_err(|e| StoreError::Corrupt(format!("stream xid {xid:?}: {e}")))?,
                    position: row.get::<_, i64>("position") as u64,
                })
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{domain::Dur, store::conformance::TempSchema};
    use std::sync::Arc;

    /// A fresh, unmigrated store in a schema of its own, dropped with the
    /// guard. Fails, naming how to start it, when PostgreSQL is down.
    async fn fresh() -> (TempSchema, Arc<PostgresStore>) {
        let schema = TempSchema::new();
        let store = connect(&schema);
        (schema, store)
    }

    /// A second pool on the schema of `fresh` (another process on the
    /// database).
    fn again(schema: &TempSchema) -> Arc<PostgresStore> {
        connect(schema)
    }

    fn connect(schema: &TempSchema) -> Arc<PostgresStore> {
        let store = PostgresStore::connect(&PostgresConfig {
            url: crate::store::conformance::POSTGRES.into(),
            schema: schema.name.clone(),
            pool_size: 8,
            connect_timeout: Dur(Duration::from_secs(5)),
            pool_wait_timeout: Dur(Duration::from_secs(10)),
            statement_timeout: Dur(Duration::from_secs(10)),
            query_timeout: Dur(Duration::from_secs(10)),
            keepalive_idle: Dur(Duration::from_secs(10)),
            keepalive_interval: Dur(Duration::from_secs(5)),
            keepalive_retries: 3,
            verify_after_idle: Dur(Duration::from_secs(10)),
        })
        .expect("building the PostgreSQL pool");
        Arc::new(store)
    }

    crate::store::conformance::store_contract!(fresh);

    /// A connection of its own in the test's schema, for transactions held
    /// open by hand.
    async fn raw(schema: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(crate::store::conformance::POSTGRES, NoTls)
            .await
            .expect("connecting to PostgreSQL");
        tokio::spawn(connection);
        client
            .batch_execute(&format!("SET search_path TO \"{schema}\""))
            .await
            .unwrap();
        client
    }

    /// Inserts event `seq` of `order` (a `routing` event) on `client`, as
    /// the store would inside a transaction.
    async fn insert_event(client: &tokio_postgres::Client, order: OrderId, seq: u64) {
        let event = Event {
            order_id: order,
            seq,
            timestamp: Timestamp::now(),
            message: "m".into(),
            progress: 0,
            data: crate::domain::EventData::Routing {
                quotes_fetched: None,
                quotes: None,
            },
        };
        client
            .execute(
                "INSERT INTO order_events (order_id, seq, kind, body, created_at) VALUES ($1, $2, 'routing', $3, now())",
                &[&order.0, &(seq as i64), &serde_json::to_value(&event).unwrap()],
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn migration_0008_numbers_stored_events_oldest_first_whatever_their_place_on_disk() {
        use crate::store::conformance;
        let (schema, store) = fresh().await;
        let client = raw(&schema.name).await;
        client
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{}\"", schema.name))
            .await
            .unwrap();
        for (_, _, sql) in MIGRATIONS.iter().filter(|(version, _, _)| *version < 8) {
            client.batch_execute(sql).await.unwrap();
        }
        let (first, second) = (OrderId::new(), OrderId::new());
        for id in [first, second] {
            let order = NewOrder {
                id,
                ..conformance::new_order()
            };
            store
                .create_order(&order, conformance::event(conformance::pending()))
                .await
                .unwrap();
        }
        // A row's new version goes after the others on disk: the first
        // order's event is now scanned last.
        client
            .execute("UPDATE order_events SET body = body WHERE order_id = $1", &[&first.0])
            .await
            .unwrap();
        client
            .batch_execute(MIGRATIONS.iter().find(|(version, _, _)| *version == 8).unwrap().2)
            .await
            .unwrap();
        let read = conformance::read_stream(&*store, StreamCursor::START, None, 10).await;
        let got: Vec<_> = read.iter().map(|(_, order, _)| *order).collect();
        assert_eq!(got, [first, second], "oldest first, as created");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_stream_never_skips_an_event_whose_transaction_commits_after_a_later_numbered_one() {
        use crate::store::conformance::{self, read_stream};
        let (schema, store) = fresh().await;
        store.migrate().await.unwrap();
        let new = |id| NewOrder {
            id,
            ..conformance::new_order()
        };
        let pending = || conformance::event(conformance::pending());
        let (a_order, b_order) = (OrderId::new(), OrderId::new());
        store.create_order(&new(a_order), pending()).await.unwrap();
        store.create_order(&new(b_order), pending()).await.unwrap();
        let created = read_stream(&*store, StreamCursor::START, None, 10).await;
        assert_eq!(created.len(), 2);
        let mut cursor = created[1].0;

        // A takes the smaller position, B the larger; B commits first.
        let (a, b) = (raw(&schema.name).await, raw(&schema.name).await);
        a.batch_execute("BEGIN").await.unwrap();
        insert_event(&a, a_order, 2).await;
        b.batch_execute("BEGIN").await.unwrap();
        insert_event(&b, b_order, 2).await;
        b.batch_execute("COMMIT").await.unwrap();
        let during = store.stream_events(cursor, None, 10).await.unwrap();
        assert!(during.events.is_empty(), "B waits behind A, still running: {during:?}");
        assert!(during.more, "held back, so ask again");
        a.batch_execute("COMMIT").await.unwrap();
        let read = read_stream(&*store, cursor, None, 10).await;
        let got: Vec<_> = read.iter().map(|(_, o, s)| (*o, *s)).collect();
        assert_eq!(got, [(a_order, 2), (b_order, 2)], "both, once, in commit-safe order");
        cursor = read[1].0;
        assert_eq!(store.stream_head().await.unwrap(), cursor);

        // C gets its transaction id before D, yet appends the later event of
        // the same order: the stream still keeps the order's seq order.
        let (c, d) = (raw(&schema.name).await, raw(&schema.name).await);
        c.batch_execute("BEGIN; SELECT pg_current_xact_id()").await.unwrap();
        d.batch_execute("BEGIN").await.unwrap();
        insert_event(&d, a_order, 3).await;
        d.batch_execute("COMMIT").await.unwrap();
        insert_event(&c, a_order, 4).await;
        c.batch_execute("COMMIT").await.unwrap();
        let read = read_stream(&*store, cursor, None, 10).await;
        let got: Vec<_> = read.iter().map(|(_, o, s)| (*o, *s)).collect();
        assert_eq!(got, [(a_order, 3), (a_order, 4)]);
        assert!(
            read_stream(&*store, read[1].0, None, 10).await.is_empty(),
            "nothing repeats"
        );
    }
    crate::store::conformance::chain_contract!(fresh, again);
}
