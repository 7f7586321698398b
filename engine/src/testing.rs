//! Test support shared by the backends' contract suites: where the real
//! services live and the check that fails (never skips) a test when one is
//! down, with the same words as the e2e harness (`tests/e2e/harness.rs`).
//! Test-only; imports nothing of ours.

use std::time::Duration;

/// The Redis the tests use.
pub(crate) const REDIS: &str = "redis://127.0.0.1:6379";
/// The PostgreSQL database the tests use (trust auth).
pub(crate) const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Panics, saying how to start it, unless Redis answers on 127.0.0.1:6379.
pub(crate) fn require_redis() {
    require(
        "Redis",
        "127.0.0.1:6379",
        "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no",
    );
}

/// Panics, saying how to start it, unless PostgreSQL answers on
/// 127.0.0.1:5432.
pub(crate) fn require_postgres() {
    require(
        "PostgreSQL",
        "127.0.0.1:5432",
        "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    );
}

fn require(service: &str, addr: &str, start: &str) {
    let addr: std::net::SocketAddr = addr.parse().expect("a socket address");
    if std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
        panic!("{service} is not reachable on {addr}; these tests need it. Start it with: {start}");
    }
}

/// A name no other test uses (`t_` and 16 hex digits): a PostgreSQL schema
/// or a Redis key prefix.
pub(crate) fn unique_name() -> String {
    format!("t_{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

/// Runs `cleanup` to completion on a thread and runtime of its own, so it
/// works from `Drop` (also while a failed test unwinds) whatever runtime the
/// test used.
pub(crate) fn clean_up<F>(cleanup: impl FnOnce() -> F + Send + 'static)
where
    F: std::future::Future<Output = ()>,
{
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the cleanup");
        runtime.block_on(cleanup());
    })
    .join();
}
