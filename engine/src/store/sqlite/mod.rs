//! The embedded store: one SQLite file in WAL mode. Imports `domain`,
//! `config` and its own seam only; never `api`, `pipeline` or `venues`.
//!
//! Writes go through one writer thread that commits whatever is waiting as a
//! single transaction (group commit), each write in its own savepoint so one
//! failing write never spoils another. Reads use a small pool of read
//! connections, which WAL lets run beside the writer.

use super::{
    Advance, Broadcast, ChainHead, ChainStore, ChainTx, KeyRecord, KeyedCreate, Lander, ListQuery, NewEvent,
    NewIdempotencyKey, OrderPage, PoolRow, SqliteSync, Store, StoreError, StoredAnswer, StreamCursor, StreamItem,
    StreamPage, cut_page, rows_for_page, unfinished_sql,
};
mod chain;
mod keys;
mod rows;

use crate::domain::{
    ApiKey, Event, EventKind, KeyId, NewKey, NewOrder, Order, OrderId, SecretHash, Status, Ticket, Timestamp,
};
use async_trait::async_trait;
use rows::{ORDER_COLUMNS, OrderRow, json, parse_json, read_row, to_i64};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::sync::{mpsc, oneshot};

/// Migrations: (version, name, SQL). The same versions exist for every backend.
pub(crate) const MIGRATIONS: &[(u32, &str, &str)] = &[
    (1, "orders", include_str!("../migrations/sqlite/0001_orders.sql")),
    (
        2,
        "unfinished_index",
        include_str!("../migrations/sqlite/0002_unfinished_index.sql"),
    ),
    (3, "auth", include_str!("../migrations/sqlite/0003_auth.sql")),
    (
        4,
        "idempotency_keys",
        include_str!("../migrations/sqlite/0004_idempotency_keys.sql"),
    ),
    (
        5,
        "signing_secrets",
        include_str!("../migrations/sqlite/0005_signing_secrets.sql"),
    ),
    (
        6,
        "order_control",
        include_str!("../migrations/sqlite/0006_order_control.sql"),
    ),
    (7, "chain", include_str!("../migrations/sqlite/0007_chain.sql")),
    (
        8,
        "event_stream",
        include_str!("../migrations/sqlite/0008_event_stream.sql"),
    ),
    (
        9,
        "drop_executions",
        include_str!("../migrations/sqlite/0009_drop_executions.sql"),
    ),
    (
        10,
        "idempotency_keys_by_rowid",
        include_str!("../migrations/sqlite/0010_idempotency_keys_by_rowid.sql"),
    ),
];
/// Writes committed together at most.
const MAX_BATCH: usize = 256;
const READERS: usize = 4;

/// SQLite-backed [`Store`] and [`ChainStore`].
pub struct SqliteStore {
    path: PathBuf,
    options: Options,
    writer: mpsc::Sender<WriteJob>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: AtomicUsize,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy)]
struct Options {
    synchronous: SqliteSync,
    busy_timeout: Duration,
}

enum WriteOp {
    Create(Box<NewOrder>, Box<NewEvent>),
    CreateKeyed(Box<NewOrder>, Box<NewEvent>, Box<NewIdempotencyKey>),
    Append(OrderId, Box<NewEvent>),
    CreateKey(Box<NewKey>),
    RevokeKey(KeyId),
    UseTicket(Box<Ticket>),
    SigningSecret(String, [u8; 32]),
    SettleKey(String, String, StoredAnswer),
    SweepKeys,
    ChainStart(u64, Vec<PoolRow>),
    ChainBroadcast(Box<ChainTx>),
    ChainAdvance(u64, Arc<dyn Lander>),
}

enum WriteOut {
    Event(Box<Event>),
    Key(Option<Box<ApiKey>>),
    Used(bool),
    Secret([u8; 32]),
    Keyed(Box<KeyedCreate>),
    Count(u64),
    ChainHead(ChainHead),
    Broadcast(Broadcast),
    Advance(Box<Advance>),
}

struct WriteJob {
    op: WriteOp,
    reply: oneshot::Sender<Result<WriteOut, StoreError>>,
}

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn open(path: &Path, options: Options) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|e| unavailable(format!("opening {}: {e}", path.display())))?;
    conn.busy_timeout(options.busy_timeout).map_err(unavailable)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(unavailable)?;
    let sync = match options.synchronous {
        SqliteSync::Normal => "NORMAL",
        SqliteSync::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync).map_err(unavailable)?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(unavailable)?;
    // Every statement of the hot path is cached (parsing was a tenth of
    // the writer's time); rusqlite keeps 16 by default.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and starts the writer.
    pub fn open(path: &Path, synchronous: SqliteSync, busy_timeout: Duration) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| unavailable(format!("creating {}: {e}", dir.display())))?;
        }
        let options = Options {
            synchronous,
            busy_timeout,
        };
        let writer_conn = open(path, options)?;
        let readers = (0..READERS)
            .map(|_| open(path, options).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        let (writer, rx) = mpsc::channel(4 * MAX_BATCH);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_loop(writer_conn, rx))
            .map_err(unavailable)?;
        Ok(SqliteStore {
            path: path.to_owned(),
            options,
            writer,
            readers: Arc::new(readers),
            next_reader: AtomicUsize::new(0),
        })
    }

    async fn write(&self, op: WriteOp) -> Result<WriteOut, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(WriteJob { op, reply })
            .await
            .map_err(|_| unavailable("the writer thread stopped"))?;
        rx.await.map_err(|_| unavailable("the writer thread stopped"))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = self.readers.clone();
        let index = self.next_reader.fetch_add(1, Ordering::Relaxed) % readers.len();
        tokio::task::spawn_blocking(move || {
            let conn = readers[index].lock().unwrap_or_else(|p| p.into_inner());
            f(&conn)
        })
        .await
        .map_err(unavailable)?
    }
}

fn write_loop(mut conn: Connection, mut rx: mpsc::Receiver<WriteJob>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let results = commit_batch(&mut conn, &batch);
        match results {
            Ok(results) => {
                for (job, result) in batch.into_iter().zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                for job in batch {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

fn commit_batch(conn: &mut Connection, batch: &[WriteJob]) -> Result<Vec<Result<WriteOut, StoreError>>, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(unavailable)?;
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        let result = in_savepoint(&tx, |savepoint| match &job.op {
            WriteOp::Create(order, first) => create(savepoint, order, first).map(|e| WriteOut::Event(Box::new(e))),
            WriteOp::Append(id, event) => append(savepoint, *id, event).map(|e| WriteOut::Event(Box::new(e))),
            WriteOp::CreateKey(key) => keys::create_key(savepoint, key).map(|k| WriteOut::Key(Some(Box::new(k)))),
            WriteOp::RevokeKey(id) => keys::revoke_key(savepoint, *id).map(|k| WriteOut::Key(k.map(Box::new))),
            WriteOp::UseTicket(ticket) => keys::use_ticket(savepoint, ticket).map(WriteOut::Used),
            WriteOp::SigningSecret(name, candidate) => {
                keys::signing_secret(savepoint, name, candidate).map(WriteOut::Secret)
            }
            WriteOp::CreateKeyed(order, first, key) => {
                create_keyed(savepoint, order, first, key).map(|k| WriteOut::Keyed(Box::new(k)))
            }
            WriteOp::SettleKey(scope, key, answer) => {
                settle_key(savepoint, scope, key, answer).map(|()| WriteOut::Count(1))
            }
            WriteOp::SweepKeys => sweep_keys(savepoint).map(WriteOut::Count),
            WriteOp::ChainStart(genesis_ms, pools) => {
                chain::start(savepoint, *genesis_ms, pools).map(WriteOut::ChainHead)
            }
            WriteOp::ChainBroadcast(tx) => chain::broadcast(savepoint, tx).map(WriteOut::Broadcast),
            WriteOp::ChainAdvance(to, lander) => {
                chain::advance(savepoint, *to, lander.as_ref()).map(|a| WriteOut::Advance(Box::new(a)))
            }
        })?;
        results.push(result);
    }
    tx.commit().map_err(unavailable)?;
    Ok(results)
}

/// Runs one write inside its own savepoint of the batch's transaction: a
/// write that fails is rolled back alone, and the batch goes on. The three
/// statements are cached (rusqlite's `Savepoint` parses its SQL on every
/// use, three parses per write).
///
/// # Errors
/// The outer error when the savepoint itself failed (the batch fails); the
/// write's own outcome is the inner result.
fn in_savepoint<T>(
    conn: &Connection,
    write: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<Result<T, StoreError>, StoreError> {
    let run = |sql: &str| {
        conn.prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute([]))
            .map_err(unavailable)
    };
    run("SAVEPOINT write_op")?;
    let result = write(conn);
    if result.is_err() {
        run("ROLLBACK TO write_op")?;
    }
    run("RELEASE write_op")?;
    Ok(result)
}

fn create(conn: &Connection, order: &NewOrder, first: &NewEvent) -> Result<Event, StoreError> {
    let now = Timestamp::now().to_string();
    conn.prepare_cached(
        "INSERT INTO orders (id, created_seq, job_id, order_type, token_in, token_out, amount_in, slippage_bps,
                             status, last_kind, last_seq, created_at, updated_at, owner, expires_at, retry_of)
         VALUES (?1, (SELECT COALESCE(MAX(created_seq), 0) + 1 FROM orders), ?2, ?3, ?4, ?5, ?6, ?7,
                 'pending', 'pending', 0, ?8, ?8, ?9, ?10, ?11)",
    )
    .map_err(unavailable)?
    .execute(params![
        order.id.to_string(),
        order.job_id,
        order.order_type.as_str(),
        order.token_in,
        order.token_out,
        to_i64(order.amount_in, "amount")?,
        order.slippage_bps,
        now,
        order.owner.map(|k| k.to_string()),
        order.expires_at.map(|t| t.to_string()),
        order.retry_of.map(|id| id.to_string()),
    ])
    .map_err(unavailable)?;
    if let Some(original) = order.retry_of {
        link_retry(conn, original, order.id)?;
    }
    append(conn, order.id, first)
}

/// Sets `retried_by` of `original` unless it already has a retry (the
/// caller's savepoint then drops the new order with it).
fn link_retry(conn: &Connection, original: OrderId, retry: OrderId) -> Result<(), StoreError> {
    let linked = conn
        .execute(
            "UPDATE orders SET retried_by = ?2 WHERE id = ?1 AND retried_by IS NULL",
            params![original.to_string(), retry.to_string()],
        )
        .map_err(unavailable)?;
    if linked == 1 {
        return Ok(());
    }
    let exists = conn
        .query_row("SELECT 1 FROM orders WHERE id = ?1", [original.to_string()], |_| Ok(()))
        .optional()
        .map_err(unavailable)?;
    Err(match exists {
        Some(()) => StoreError::AlreadyRetried(original),
        None => StoreError::NotFound(original),
    })
}

/// Takes the key (a new record, or one replacing an expired record), then
/// creates the order; a key held by an unexpired record stores nothing.
fn create_keyed(
    conn: &Connection,
    order: &NewOrder,
    first: &NewEvent,
    key: &NewIdempotencyKey,
) -> Result<KeyedCreate, StoreError> {
    let taken = conn
        .prepare_cached(
            "INSERT INTO idempotency_keys
                 (scope, idem_key, fingerprint, order_id, status, body, completed, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?8)
             ON CONFLICT (scope, idem_key) DO UPDATE SET
                 fingerprint = excluded.fingerprint, order_id = excluded.order_id, status = excluded.status,
                 body = excluded.body, completed = 0, created_at = excluded.created_at,
                 expires_at = excluded.expires_at
             WHERE idempotency_keys.expires_at <= excluded.created_at",
        )
        .map_err(unavailable)?
        .execute(params![
            key.scope,
            key.key,
            key.fingerprint,
            order.id.to_string(),
            key.answer.status,
            key.answer.body,
            Timestamp::now().to_string(),
            key.expires_at.to_string(),
        ])
        .map_err(unavailable)?;
    if taken == 0 {
        return Ok(KeyedCreate::Taken);
    }
    create(conn, order, first).map(|e| KeyedCreate::Created(Box::new(e)))
}

fn settle_key(conn: &Connection, scope: &str, key: &str, answer: &StoredAnswer) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE idempotency_keys SET completed = 1, status = ?3, body = ?4 WHERE scope = ?1 AND idem_key = ?2",
        params![scope, key, answer.status, answer.body],
    )
    .map_err(unavailable)?;
    Ok(())
}

fn sweep_keys(conn: &Connection) -> Result<u64, StoreError> {
    conn.execute(
        "DELETE FROM idempotency_keys WHERE expires_at <= ?1",
        [Timestamp::now().to_string()],
    )
    .map(|n| n as u64)
    .map_err(unavailable)
}

fn key_record(conn: &Connection, scope: &str, key: &str) -> Result<Option<KeyRecord>, StoreError> {
    conn.prepare_cached(
        "SELECT fingerprint, order_id, status, body, completed, created_at FROM idempotency_keys
         WHERE scope = ?1 AND idem_key = ?2 AND expires_at > ?3",
    )
    .map_err(unavailable)?
    .query_row(params![scope, key, Timestamp::now().to_string()], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, u16>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, bool>(4)?,
            row.get::<_, String>(5)?,
        ))
    })
    .optional()
    .map_err(unavailable)?
    .map(|(fingerprint, order_id, status, body, completed, created_at)| {
        Ok(KeyRecord {
            fingerprint,
            order_id: order_id
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("idempotency key order id: {e}")))?,
            answer: StoredAnswer { status, body },
            completed,
            created_at: Timestamp::parse(&created_at)
                .ok_or_else(|| StoreError::Corrupt("idempotency key created_at".into()))?,
        })
    })
    .transpose()
}

fn append(conn: &Connection, id: OrderId, new: &NewEvent) -> Result<Event, StoreError> {
    let key = id.to_string();
    type Guard = (i64, String, u32, Option<String>);
    let (last_seq, status, attempts, expires_at): Guard = conn
        .prepare_cached("SELECT last_seq, status, attempts, expires_at FROM orders WHERE id = ?1")
        .map_err(unavailable)?
        .query_row([&key], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))
        .optional()
        .map_err(unavailable)?
        .ok_or(StoreError::NotFound(id))?;
    let status = Status::parse(&status);
    if status.is_some_and(Status::is_terminal) {
        return Err(StoreError::Finished(id));
    }
    if new.after_seq.is_some_and(|seq| seq != last_seq as u64) {
        return Err(StoreError::Conflict(id));
    }
    let kind = new.data.kind();
    let submitted = attempts > 0 || status == Some(Status::Submitted);
    if kind == EventKind::Cancelled && submitted {
        return Err(StoreError::Submitted(id));
    }
    let expired = expires_at
        .as_deref()
        .and_then(Timestamp::parse)
        .is_some_and(|at| at.0 <= std::time::SystemTime::now());
    if kind == EventKind::Submitted && !submitted && expired {
        return Err(StoreError::Expired(id));
    }
    let event = Event {
        order_id: id,
        seq: last_seq as u64 + 1,
        timestamp: Timestamp::now(),
        message: new.message.clone(),
        progress: new.progress,
        data: new.data.clone(),
    };
    let at = event.timestamp.to_string();
    conn.prepare_cached("INSERT INTO order_events (order_id, seq, kind, body, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")
        .map_err(unavailable)?
        .execute(params![key, event.seq as i64, kind.as_str(), json(&event), at])
        .map_err(unavailable)?;

    let patch = &new.patch;
    let status = kind.status().map(Status::as_str);
    let (quotes, quoted_at) = match &patch.quotes {
        Some((quotes, at)) => (Some(json(quotes)), Some(at.to_string())),
        None => (None, None),
    };
    let amount_out = patch.amount_out.map(|v| to_i64(v, "amount_out")).transpose()?;
    conn.prepare_cached(
        "UPDATE orders SET
            last_seq = ?2, last_kind = ?3, updated_at = ?4,
            status = COALESCE(?5, status),
            quotes = COALESCE(?6, quotes), quoted_at = COALESCE(?7, quoted_at),
            route = COALESCE(?8, route), strategy = COALESCE(?9, strategy),
            attempts = COALESCE(?10, attempts), last_error = COALESCE(?11, last_error),
            tx_hash = COALESCE(?12, tx_hash), dex = COALESCE(?13, dex),
            amount_out = COALESCE(?14, amount_out), executed_price = COALESCE(?15, executed_price)
         WHERE id = ?1",
    )
    .map_err(unavailable)?
    .execute(params![
        key,
        event.seq as i64,
        kind.as_str(),
        at,
        status,
        quotes,
        quoted_at,
        patch.route.as_ref().map(json),
        patch.strategy.as_ref().map(json),
        patch.attempts,
        patch.last_error.as_ref().map(json),
        patch.tx_hash,
        patch.dex,
        amount_out,
        patch.executed_price,
    ])
    .map_err(unavailable)?;
    Ok(event)
}

fn applied_versions(conn: &Connection) -> Result<Vec<u32>, StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
    )
    .map_err(unavailable)?;
    let mut stmt = conn
        .prepare("SELECT version FROM schema_migrations ORDER BY version")
        .map_err(unavailable)?;
    stmt.query_map([], |row| row.get(0))
        .map_err(unavailable)?
        .collect::<Result<Vec<u32>, _>>()
        .map_err(unavailable)
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<Vec<u32>, StoreError> {
        let (path, options) = (self.path.clone(), self.options);
        tokio::task::spawn_blocking(move || {
            let mut conn = open(&path, options)?;
            let mut applied_now = Vec::new();
            for (version, name, sql) in MIGRATIONS {
                // IMMEDIATE: two processes migrating at once apply each version once.
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(unavailable)?;
                if applied_versions(&tx)?.contains(version) {
                    continue;
                }
                tx.execute_batch(sql)
                    .map_err(|e| unavailable(format!("migration {version} ({name}): {e}")))?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                    params![version, name, Timestamp::now().to_string()],
                )
                .map_err(unavailable)?;
                tx.commit().map_err(unavailable)?;
                applied_now.push(*version);
            }
            Ok(applied_now)
        })
        .await
        .map_err(unavailable)?
    }

    async fn pending_migrations(&self) -> Result<Vec<u32>, StoreError> {
        self.read(|conn| {
            let applied = applied_versions(conn)?;
            Ok(MIGRATIONS
                .iter()
                .map(|(v, _, _)| *v)
                .filter(|v| !applied.contains(v))
                .collect())
        })
        .await
    }

    async fn create_order(&self, order: &NewOrder, first: NewEvent) -> Result<Event, StoreError> {
        match self
            .write(WriteOp::Create(Box::new(order.clone()), Box::new(first)))
            .await?
        {
            WriteOut::Event(event) => Ok(*event),
            _ => unreachable!("create answers with an event"),
        }
    }

    async fn create_order_keyed(
        &self,
        order: &NewOrder,
        first: NewEvent,
        key: &NewIdempotencyKey,
    ) -> Result<KeyedCreate, StoreError> {
        let op = WriteOp::CreateKeyed(Box::new(order.clone()), Box::new(first), Box::new(key.clone()));
        match self.write(op).await? {
            WriteOut::Keyed(created) => Ok(*created),
            _ => unreachable!("a keyed create answers with its outcome"),
        }
    }

    async fn key_record(&self, scope: &str, key: &str) -> Result<Option<KeyRecord>, StoreError> {
        let (scope, key) = (scope.to_owned(), key.to_owned());
        self.read(move |conn| key_record(conn, &scope, &key)).await
    }

    async fn settle_key(&self, scope: &str, key: &str, answer: &StoredAnswer) -> Result<(), StoreError> {
        self.write(WriteOp::SettleKey(scope.to_owned(), key.to_owned(), answer.clone()))
            .await
            .map(|_| ())
    }

    async fn sweep_keys(&self) -> Result<u64, StoreError> {
        match self.write(WriteOp::SweepKeys).await? {
            WriteOut::Count(n) => Ok(n),
            _ => unreachable!("a sweep answers with a count"),
        }
    }

    async fn append_event(&self, id: OrderId, event: NewEvent) -> Result<Event, StoreError> {
        match self.write(WriteOp::Append(id, Box::new(event))).await? {
            WriteOut::Event(event) => Ok(*event),
            _ => unreachable!("append answers with an event"),
        }
    }

    async fn order(&self, id: OrderId) -> Result<Option<Order>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1"))
                .map_err(unavailable)?
                .query_row([id.to_string()], read_row)
                .optional()
                .map_err(unavailable)?
                .map(OrderRow::into_order)
                .transpose()
        })
        .await
    }

    async fn events(&self, id: OrderId, after: u64) -> Result<Vec<Event>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT body FROM order_events WHERE order_id = ?1 AND seq > ?2 ORDER BY seq")
                .map_err(unavailable)?;
            let bodies = stmt
                .query_map(params![id.to_string(), after as i64], |row| row.get::<_, String>(0))
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            bodies.iter().map(|body| parse_json(body, "event")).collect()
        })
        .await
    }

    async fn list_orders(&self, query: &ListQuery) -> Result<OrderPage, StoreError> {
        let query = query.clone();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {ORDER_COLUMNS} FROM orders
                     WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR created_seq < ?2)
                       AND (?4 IS NULL OR owner = ?4)
                       AND (?5 IS NULL OR json_extract(last_error, '$.code') = ?5)
                     ORDER BY created_seq DESC LIMIT ?3"
                ))
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(
                    params![
                        query.status.map(Status::as_str),
                        query.cursor,
                        rows_for_page(query.limit),
                        query.owner.map(|k| k.to_string()),
                        query.code
                    ],
                    read_row,
                )
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            let orders = rows
                .into_iter()
                .map(OrderRow::into_order)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(cut_page(orders, query.limit))
        })
        .await
    }

    async fn unfinished_orders(&self) -> Result<Vec<OrderId>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT id FROM orders WHERE {} ORDER BY created_seq",
                    unfinished_sql()
                ))
                .map_err(unavailable)?;
            let ids = stmt
                .query_map([], |row| row.get::<_, String>(0))
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            ids.iter()
                .map(|id| {
                    id.parse()
                        .map_err(|e| StoreError::Corrupt(format!("order id {id}: {e}")))
                })
                .collect()
        })
        .await
    }

    async fn stuck_orders(&self, older_than: Duration) -> Result<(u64, Option<Duration>), StoreError> {
        let cutoff = Timestamp(std::time::SystemTime::now() - older_than).to_string();
        self.read(move |conn| {
            let (count, oldest): (i64, Option<String>) = conn
                .query_row(
                    &format!(
                        "SELECT COUNT(*), MIN(updated_at) FROM orders WHERE {} AND updated_at < ?1",
                        unfinished_sql()
                    ),
                    [cutoff],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .map_err(unavailable)?;
            let oldest = oldest.as_deref().and_then(Timestamp::parse).map(|t| t.elapsed());
            Ok((count as u64, oldest))
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(unavailable))
            .await
    }

    async fn create_key(&self, key: &NewKey) -> Result<ApiKey, StoreError> {
        match self.write(WriteOp::CreateKey(Box::new(key.clone()))).await? {
            WriteOut::Key(Some(key)) => Ok(*key),
            _ => unreachable!("create_key answers with the key"),
        }
    }

    async fn key_by_secret(&self, hash: &SecretHash) -> Result<Option<ApiKey>, StoreError> {
        let hash = *hash;
        self.read(move |conn| keys::key_by_secret(conn, &hash)).await
    }

    async fn keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        self.read(keys::keys).await
    }

    async fn revoke_key(&self, id: KeyId) -> Result<Option<ApiKey>, StoreError> {
        match self.write(WriteOp::RevokeKey(id)).await? {
            WriteOut::Key(key) => Ok(key.map(|k| *k)),
            _ => unreachable!("revoke_key answers with the key"),
        }
    }

    async fn use_ticket(&self, ticket: &Ticket) -> Result<bool, StoreError> {
        match self.write(WriteOp::UseTicket(Box::new(ticket.clone()))).await? {
            WriteOut::Used(first) => Ok(first),
            _ => unreachable!("use_ticket answers whether it was the first use"),
        }
    }

    async fn signing_secret(&self, name: &str, candidate: [u8; 32]) -> Result<[u8; 32], StoreError> {
        match self.write(WriteOp::SigningSecret(name.to_owned(), candidate)).await? {
            WriteOut::Secret(secret) => Ok(secret),
            _ => unreachable!("signing_secret answers the secret"),
        }
    }

    async fn stream_events(
        &self,
        after: StreamCursor,
        owner: Option<KeyId>,
        limit: u32,
    ) -> Result<StreamPage, StoreError> {
        // One writer: positions are in commit order, nothing is held back.
        self.read(move |conn| {
            let limit = i64::from(limit.max(1));
            // Two statements, so each is a range scan of its own index.
            let sql = if owner.is_some() {
                "SELECT position, owner, body FROM order_events WHERE owner = ?3 AND position > ?1
                 ORDER BY position LIMIT ?2"
            } else {
                "SELECT position, owner, body FROM order_events WHERE position > ?1 ORDER BY position LIMIT ?2"
            };
            let mut stmt = conn.prepare_cached(sql).map_err(unavailable)?;
            let read = |row: &rusqlite::Row<'_>| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, Option<String>>(1)?,
                    row.get::<_, String>(2)?,
                ))
            };
            let after = after.position as i64;
            let rows = match owner {
                Some(owner) => stmt.query_map(params![after, limit, owner.to_string()], read),
                None => stmt.query_map(params![after, limit], read),
            }
            .map_err(unavailable)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)?;
            let more = rows.len() as i64 >= limit;
            let events = rows
                .iter()
                .map(|(position, owner, body)| {
                    let at = StreamCursor {
                        xid: 0,
                        position: *position as u64,
                    };
                    let owner = match owner {
                        Some(text) => {
                            Some(KeyId(text.parse().map_err(|e| {
                                StoreError::Corrupt(format!("event owner {text:?}: {e}"))
                            })?))
                        }
                        None => None,
                    };
                    Ok(StreamItem {
                        at,
                        owner,
                        event: parse_json(body, "event")?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            Ok(StreamPage { events, more })
        })
        .await
    }

    async fn stream_head(&self) -> Result<StreamCursor, StoreError> {
        self.read(|conn| {
            let position: Option<i64> = conn
                .query_row("SELECT MAX(position) FROM order_events", [], |row| row.get(0))
                .map_err(unavailable)?;
            Ok(StreamCursor {
                xid: 0,
                position: position.unwrap_or(0) as u64,
            })
        })
        .await
    }
}

#[async_trait]
impl ChainStore for SqliteStore {
    async fn chain_start(&self, genesis_ms: u64, pools: &[PoolRow]) -> Result<ChainHead, StoreError> {
        match self.write(WriteOp::ChainStart(genesis_ms, pools.to_vec())).await? {
            WriteOut::ChainHead(head) => Ok(head),
            _ => unreachable!("chain_start answers the head"),
        }
    }

    async fn chain_head(&self) -> Result<Option<ChainHead>, StoreError> {
        self.read(chain::head).await
    }

    async fn broadcast(&self, tx: &ChainTx) -> Result<Broadcast, StoreError> {
        match self.write(WriteOp::ChainBroadcast(Box::new(tx.clone()))).await? {
            WriteOut::Broadcast(broadcast) => Ok(broadcast),
            _ => unreachable!("broadcast answers what it found"),
        }
    }

    async fn advance(&self, to: u64, lander: Arc<dyn Lander>) -> Result<Advance, StoreError> {
        // A cheap read first: most calls find the tip already there.
        if let Some(head) = self.read(chain::head).await?
            && head.tip >= to
        {
            return Ok(Advance {
                tip: head.tip,
                advanced: None,
            });
        }
        match self.write(WriteOp::ChainAdvance(to, lander)).await? {
            WriteOut::Advance(advance) => Ok(*advance),
            _ => unreachable!("advance answers the advance"),
        }
    }

    async fn chain_txs(&self, order: Option<OrderId>) -> Result<Vec<ChainTx>, StoreError> {
        self.read(move |conn| chain::txs(conn, order)).await
    }

    async fn chain_statuses(&self, signatures: &[String]) -> Result<Vec<Option<ChainTx>>, StoreError> {
        let signatures = signatures.to_vec();
        self.read(move |conn| chain::statuses(conn, &signatures)).await
    }

    async fn landed_fees(&self, after: u64) -> Result<Vec<u64>, StoreError> {
        self.read(move |conn| chain::landed_fees(conn, after)).await
    }

    async fn chain_pools(&self) -> Result<Vec<PoolRow>, StoreError> {
        self.read(chain::pools).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh, unmigrated store in a temp dir (removed with the guard).
    async fn fresh() -> (tempfile::TempDir, Arc<SqliteStore>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("t.db"), SqliteSync::Normal, Duration::from_secs(5))
            .expect("opening a SQLite store in a temp dir");
        (dir, Arc::new(store))
    }

    crate::store::conformance::store_contract!(fresh);

    /// A second handle on the store of `fresh` (another process on the file).
    fn again(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
        Arc::new(
            SqliteStore::open(&dir.path().join("t.db"), SqliteSync::Normal, Duration::from_secs(5))
                .expect("opening the SQLite store again"),
        )
    }

    crate::store::conformance::chain_contract!(fresh, again);

    /// Records kept before 0010 (clustered on the key) are carried over,
    /// and the key stays unique and settles afterwards.
    #[test]
    fn migration_0010_keeps_every_idempotency_record_and_the_key_unique() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = open(
            &dir.path().join("t.db"),
            Options {
                synchronous: SqliteSync::Normal,
                busy_timeout: Duration::from_secs(5),
            },
        )
        .unwrap();
        for (version, _, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v < 10) {
            conn.execute_batch(sql)
                .unwrap_or_else(|e| panic!("migration {version}: {e}"));
        }
        let insert = "INSERT INTO idempotency_keys
                          (scope, idem_key, fingerprint, order_id, status, body, completed, created_at, expires_at)
                      VALUES (?1, ?2, 'f', '00000000-0000-4000-8000-000000000001', 201, ?3, ?4, '2026-12-07T00:00:00.000Z', '2099-01-01T00:00:00.000Z')";
        conn.execute(insert, params!["key:a", "k1", "{\"a\":1}", 1]).unwrap();
        conn.execute(insert, params!["key:a", "k2", "{\"a\":2}", 0]).unwrap();
        let (_, _, sql) = MIGRATIONS.iter().find(|(v, _, _)| *v == 10).unwrap();
        conn.execute_batch(sql).unwrap();

        let tx = conn.transaction().unwrap();
        let first = key_record(&tx, "key:a", "k1").unwrap().expect("k1 carried over");
        assert_eq!((first.answer.body.as_str(), first.completed), ("{\"a\":1}", true));
        let failed = StoredAnswer {
            status: 503,
            body: "{}".into(),
        };
        settle_key(&tx, "key:a", "k2", &failed).unwrap();
        assert!(
            key_record(&tx, "key:a", "k2").unwrap().unwrap().completed,
            "settles after 0010"
        );
        let duplicate = tx.execute(insert, params!["key:a", "k1", "{}", 0]);
        assert!(duplicate.is_err(), "the key is still unique: {duplicate:?}");
    }
}
