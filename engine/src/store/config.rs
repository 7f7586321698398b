//! Settings of the order store: which backend, SQLite and PostgreSQL. A leaf:
//! imports nothing of ours but `domain`.

use crate::domain::Dur;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Store backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    /// A SQLite file in `data_dir` (WAL mode).
    Sqlite,
    /// PostgreSQL, shared by every node.
    Postgres,
}

/// The order store.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Which store.
    pub backend: StoreBackend,
    /// Apply pending migrations when the engine starts.
    pub migrate_on_start: bool,
    /// SQLite file; empty: `<data_dir>/swapline.db`.
    pub sqlite_path: String,
    /// SQLite `synchronous`: `normal` survives a killed process, `full` also
    /// a power cut.
    pub sqlite_synchronous: SqliteSync,
    /// How long a SQLite call waits on a lock before failing.
    pub busy_timeout: Dur,
}

/// SQLite durability levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SqliteSync {
    /// Durable across process crashes.
    Normal,
    /// Durable across power loss.
    Full,
}

/// PostgreSQL connection settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Connection URL, e.g. `postgres://postgres@127.0.0.1:5432/postgres`.
    pub url: String,
    /// Schema holding Swapline's tables (created by the migrations); lets
    /// several deployments or tests share one database.
    pub schema: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// Time to open a connection.
    pub connect_timeout: Dur,
    /// Time to wait for a free pooled connection before answering 503.
    pub pool_wait_timeout: Dur,
    /// Server-side cap on one statement.
    pub statement_timeout: Dur,
    /// Client-side deadline on the statements of one store call, counted
    /// from the moment it holds a connection. A connection that misses it is
    /// closed, never reused, and the call fails as unavailable (503): a
    /// silent network is noticed in this time, where `statement_timeout`
    /// (enforced by the server) never fires because the server never sees
    /// the query.
    pub query_timeout: Dur,
    /// TCP keepalive: idle time on a connection before the first probe
    /// (`TCP_KEEPIDLE`; the operating system's default is 2 hours).
    pub keepalive_idle: Dur,
    /// TCP keepalive: time between unanswered probes (`TCP_KEEPINTVL`).
    pub keepalive_interval: Dur,
    /// TCP keepalive: unanswered probes before the kernel closes the
    /// connection (`TCP_KEEPCNT`).
    pub keepalive_retries: u32,
    /// A pooled connection not handed out for at least this long is checked
    /// with an empty query (one round trip, bounded by `connect_timeout`)
    /// before it is handed out again; one handed out more recently goes as
    /// is, so a busy pool pays nothing (checking every checkout, deadpool's
    /// `RecyclingMethod::Verified`, adds a round trip to every store call:
    /// 0.02 ms on loopback, a full network round trip elsewhere).
    pub verify_after_idle: Dur,
}

impl PostgresConfig {
    /// Rule problems, each starting with `key` (the section's path).
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let schema = &self.schema;
        let identifier = !schema.is_empty()
            && schema.len() <= 63
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !schema.starts_with(|c: char| c.is_ascii_digit());
        if !identifier {
            problems.push(format!(
                "{key}.schema: {schema:?} must be a lowercase identifier (a-z, 0-9, _)"
            ));
        }
        if self.pool_size < 1 {
            problems.push(format!("{key}.pool_size: must be at least 1"));
        }
        for (name, value) in [
            ("query_timeout", self.query_timeout),
            ("keepalive_idle", self.keepalive_idle),
            ("keepalive_interval", self.keepalive_interval),
        ] {
            if value.0.is_zero() {
                problems.push(format!("{key}.{name}: must be greater than 0"));
            }
        }
        if self.keepalive_retries < 1 {
            problems.push(format!("{key}.keepalive_retries: must be at least 1"));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn postgres() -> PostgresConfig {
        let second = Dur(Duration::from_secs(1));
        PostgresConfig {
            url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            schema: "swapline".into(),
            pool_size: 4,
            connect_timeout: second,
            pool_wait_timeout: second,
            statement_timeout: second,
            query_timeout: second,
            keepalive_idle: second,
            keepalive_interval: second,
            keepalive_retries: 3,
            verify_after_idle: second,
        }
    }

    #[test]
    fn zero_deadlines_and_keepalive_settings_are_refused_each_by_key() {
        assert_eq!(postgres().problems("postgres"), Vec::<String>::new());
        let zero = Dur(Duration::ZERO);
        let config = PostgresConfig {
            query_timeout: zero,
            keepalive_idle: zero,
            keepalive_interval: zero,
            keepalive_retries: 0,
            ..postgres()
        };
        let problems = config.problems("postgres");
        for key in [
            "postgres.query_timeout",
            "postgres.keepalive_idle",
            "postgres.keepalive_interval",
            "postgres.keepalive_retries",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "{key} missing from {problems:?}"
            );
        }
    }
}
