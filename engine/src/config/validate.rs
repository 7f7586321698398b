//! Validation of the whole tree, vector-style: each `check_*` returns every
//! problem it finds as `"key: what is wrong"`, and [`validate`] collects
//! them all, so one run reports everything. Per-section rules live beside
//! their section (`fn problems(&self, key)` on each config type); the
//! checks here are the ones that span sections.
//!
//! Start-up calls [`validate_for`] before it builds anything, and
//! `swapline config check` calls the same function, so the two refuse
//! exactly the same configurations with the same words.

use super::Config;
use crate::{queue::QueueBackend, venues::PoolConfig};

/// What a process runs; some configurations suit one role and not another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The API, plus an in-process worker when `with_worker`.
    Serve {
        /// Run a worker too.
        with_worker: bool,
    },
    /// A worker only.
    Worker,
}

/// Every rule serde cannot check, whatever the role.
///
/// # Errors
/// Every problem, each starting with its key (`worker.concurrency: …`).
pub fn validate(config: &Config) -> Result<(), Vec<String>> {
    let problems: Vec<String> = [
        check_sections(config),
        check_pipelines(config),
        check_instance_slots(config),
        check_tokens_and_pools(config),
    ]
    .into_iter()
    .flatten()
    .collect();
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

/// [`validate`] plus the rules of one role (a worker needs a shared queue).
///
/// # Errors
/// Every problem, each starting with its key.
pub fn validate_for(config: &Config, role: Role) -> Result<(), Vec<String>> {
    let mut problems = validate(config).err().unwrap_or_default();
    problems.extend(check_role(config, role));
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

/// Each section's own rules.
pub fn check_sections(config: &Config) -> Vec<String> {
    [
        config.server.problems("server"),
        config.auth.problems("auth"),
        config.websocket.problems("websocket"),
        config.orders.problems("orders"),
        config.limits.problems("limits"),
        config.worker.problems("worker"),
        config.retry.problems("retry"),
        config.bus.problems("bus"),
        config.postgres.problems("postgres"),
        config.redis.problems("redis"),
        config.queue.problems("queue"),
        config.reconciler.problems("reconciler"),
        config.metrics.problems("metrics"),
        config.monitor.problems("monitor"),
        config.plugins.problems("plugins"),
        config.venues.problems("venues"),
        config.chain.problems("chain"),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Every order type has a pipeline (`market` at least), each with a valid
/// strategy chain.
pub fn check_pipelines(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    if !config.pipelines.contains_key("market") {
        problems.push("pipelines.market: missing; every order type needs a pipeline".to_owned());
    }
    // One leg's call, and the store write after it, must fit inside the
    // stall rule, or a healthy but slow call is cut and re-run.
    let store_deadline = match config.store.backend {
        crate::store::StoreBackend::Postgres => config.postgres.query_timeout.0,
        crate::store::StoreBackend::Sqlite => std::time::Duration::ZERO,
    };
    for (name, pipeline) in &config.pipelines {
        problems.extend(pipeline.problems(&format!("pipelines.{name}")));
        let longest = pipeline.execute_timeout.0 + store_deadline;
        if config.worker.stall_timeout.0 <= longest {
            problems.push(format!(
                "worker.stall_timeout: must be greater than pipelines.{name}.execute_timeout{} ({longest:?})",
                if store_deadline.is_zero() {
                    ""
                } else {
                    " + postgres.query_timeout"
                }
            ));
        }
    }
    problems
}

/// The pooling allocator has more instance slots than the worker runs
/// orders at once, so a routing call always finds a free slot.
pub fn check_instance_slots(config: &Config) -> Vec<String> {
    let (slots, concurrency) = (config.plugins.pooled_instances, config.worker.concurrency);
    if slots == 0 || slots as usize > concurrency {
        return Vec::new();
    }
    vec![format!(
        "plugins.pooled_instances: {slots} must be 0 (on demand) or more than worker.concurrency ({concurrency}), \
         or routing calls could find no free instance slot"
    )]
}

/// The token list forms a registry, and every pool trades two different
/// listed tokens with reserves that parse at those tokens' decimals.
pub fn check_tokens_and_pools(config: &Config) -> Vec<String> {
    let tokens = match config.token_registry() {
        Ok(tokens) => tokens,
        Err(e) => return vec![format!("tokens: {e}")],
    };
    let mut problems = Vec::new();
    for (i, pool) in config.venues.pools.iter().enumerate() {
        let key = format!("venues.pools[{i}]");
        let (base, quote) = pool.pair();
        for symbol in [base, quote] {
            if tokens.get(symbol).is_none() {
                problems.push(format!("{key}: unknown token {symbol:?}"));
            }
        }
        if base == quote {
            problems.push(format!("{key}: base and quote must differ"));
        }
        if let PoolConfig::ConstantProduct {
            reserve_base,
            reserve_quote,
            ..
        } = pool
        {
            for (field, symbol, text) in [
                ("reserve_base", base, reserve_base),
                ("reserve_quote", quote, reserve_quote),
            ] {
                if let Some(token) = tokens.get(symbol)
                    && let Err(e) = crate::domain::parse_units(text, token.decimals)
                {
                    problems.push(format!("{key}.{field}: {text:?} {e}"));
                }
            }
        }
    }
    problems
}

/// A process without a worker, or a worker process, needs a queue that
/// other processes share.
pub fn check_role(config: &Config, role: Role) -> Vec<String> {
    if config.queue.backend != QueueBackend::Memory {
        return Vec::new();
    }
    match role {
        Role::Serve { with_worker: true } => Vec::new(),
        Role::Serve { with_worker: false } => vec![
            "worker.enabled: false, but queue.backend is \"memory\": nothing else can run the orders this node \
             accepts; enable the worker (or pass --with-worker)"
                .to_owned(),
        ],
        Role::Worker => vec![
            "queue.backend: `swapline worker` needs a queue shared between processes, but queue.backend is \
             \"memory\", which lives inside one process; run `swapline serve` (its in-process worker is on by \
             default)"
                .to_owned(),
        ],
    }
}
