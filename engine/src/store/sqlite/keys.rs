//! API keys and WebSocket tickets in SQLite: the statements, called from
//! the writer thread (writes) and the read pool (reads).

use super::unavailable;
use crate::{
    domain::{ApiKey, KeyId, NewKey, SecretHash, Ticket, Timestamp, parse_scopes, scopes_text},
    store::StoreError,
};
use rusqlite::{Connection, OptionalExtension, Row, params};
use std::time::{SystemTime, UNIX_EPOCH};

const KEY_COLUMNS: &str = "id, name, scopes, orders_per_minute, created_at, revoked_at";

/// Unix milliseconds of an instant (0 before 1970).
pub(super) fn millis(at: Timestamp) -> i64 {
    at.0.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

type KeyRow = (String, String, String, Option<u32>, String, Option<String>);

fn read_key(row: &Row<'_>) -> rusqlite::Result<KeyRow> {
    Ok((
        row.get("id")?,
        row.get("name")?,
        row.get("scopes")?,
        row.get("orders_per_minute")?,
        row.get("created_at")?,
        row.get("revoked_at")?,
    ))
}

fn into_key((id, name, scopes, orders_per_minute, created_at, revoked_at): KeyRow) -> Result<ApiKey, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("api key column {what}"));
    let time = |text: &str, what: &str| Timestamp::parse(text).ok_or_else(|| corrupt(what));
    Ok(ApiKey {
        id: id.parse().map_err(|_| corrupt("id"))?,
        name,
        scopes: parse_scopes(&scopes).map_err(|_| corrupt("scopes"))?,
        orders_per_minute,
        created_at: time(&created_at, "created_at")?,
        revoked_at: revoked_at.as_deref().map(|t| time(t, "revoked_at")).transpose()?,
    })
}

fn key_by_id(conn: &Connection, id: KeyId) -> Result<Option<ApiKey>, StoreError> {
    conn.query_row(
        &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"),
        [id.to_string()],
        read_key,
    )
    .optional()
    .map_err(unavailable)?
    .map(into_key)
    .transpose()
}

pub(super) fn create_key(conn: &Connection, key: &NewKey) -> Result<ApiKey, StoreError> {
    conn.execute(
        "INSERT INTO api_keys (id, name, scopes, orders_per_minute, secret_hash, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            key.id.to_string(),
            key.name,
            scopes_text(&key.scopes),
            key.orders_per_minute,
            &key.secret_hash.0[..],
            Timestamp::now().to_string()
        ],
    )
    .map_err(unavailable)?;
    key_by_id(conn, key.id)?.ok_or_else(|| StoreError::Corrupt("api key vanished".into()))
}

pub(super) fn revoke_key(conn: &Connection, id: KeyId) -> Result<Option<ApiKey>, StoreError> {
    conn.execute(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
        params![id.to_string(), Timestamp::now().to_string()],
    )
    .map_err(unavailable)?;
    key_by_id(conn, id)
}

pub(super) fn key_by_secret(conn: &Connection, hash: &SecretHash) -> Result<Option<ApiKey>, StoreError> {
    conn.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE secret_hash = ?1"))
        .map_err(unavailable)?
        .query_row([&hash.0[..]], read_key)
        .optional()
        .map_err(unavailable)?
        .map(into_key)
        .transpose()
}

pub(super) fn keys(conn: &Connection) -> Result<Vec<ApiKey>, StoreError> {
    let mut stmt = conn
        .prepare(&format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"))
        .map_err(unavailable)?;
    let rows = stmt
        .query_map([], read_key)
        .map_err(unavailable)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(unavailable)?;
    rows.into_iter().map(into_key).collect()
}

pub(super) fn use_ticket(conn: &Connection, ticket: &Ticket) -> Result<bool, StoreError> {
    conn.prepare_cached("DELETE FROM ws_tickets WHERE expires_at <= ?1")
        .map_err(unavailable)?
        .execute([millis(Timestamp(SystemTime::now()))])
        .map_err(unavailable)?;
    let inserted = conn
        .prepare_cached(
            "INSERT INTO ws_tickets (hash, order_id, key_id, expires_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (hash) DO NOTHING",
        )
        .map_err(unavailable)?
        .execute(params![
            &ticket.hash.0[..],
            ticket.order_id.to_string(),
            ticket.key.map(|k| k.to_string()),
            millis(ticket.expires_at)
        ])
        .map_err(unavailable)?;
    Ok(inserted == 1)
}

pub(super) fn signing_secret(conn: &Connection, name: &str, candidate: &[u8; 32]) -> Result<[u8; 32], StoreError> {
    conn.execute(
        "INSERT INTO signing_secrets (name, secret, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO NOTHING",
        params![name, &candidate[..], Timestamp::now().to_string()],
    )
    .map_err(unavailable)?;
    let secret: Vec<u8> = conn
        .query_row("SELECT secret FROM signing_secrets WHERE name = ?1", [name], |row| {
            row.get(0)
        })
        .map_err(unavailable)?;
    secret
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("signing secret {name:?} is not 32 bytes")))
}
