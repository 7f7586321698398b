//! End-to-end tests: each starts the real `swapline` binary on a free
//! loopback port with its own data directory and a generated config, and
//! talks HTTP and WebSocket to it.

mod harness;
mod relay;

mod auth;
mod bad_input;
mod chain_cli;
mod chaos_chain;
mod cli;
mod cluster;
mod console;
mod control;
mod idempotency;
mod lifecycle;
mod limits;
mod metrics;
mod ops;
mod partition_pg;
mod partition_redis;
mod recovery;
mod reload;
mod retries;
mod sandbox;
mod scale;
mod strategies;
mod stream;
mod streams;
mod streams_many;
