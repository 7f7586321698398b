//! Swapline: an order execution engine for Solana DEX swaps.
//!
//! An HTTP request becomes an order row, a job on a queue, a numbered
//! sequence of events, and a live stream to every WebSocket watching that
//! order; the routing decision in between is made by a sandboxed
//! WebAssembly plugin that a TOML file names.
//!
//! # Layout
//! - [`app`]: the composition root; the only module that names adapters.
//! - [`config`]: the typed configuration tree (figment: TOML + profile + env).
//! - [`domain`]: pure types and rules: orders, statuses, events, amounts,
//!   tokens, quotes and routes. No I/O.
//! - [`api`]: the hyper server: routes, handlers, errors, WebSocket hub.
//! - [`pipeline`]: the worker: stages, retry policy, error classes.
//! - [`venues`]: the `Venue` seam and the simulated DEX pools.
//! - [`strategy`]: the `Strategy` seam: answer validation and fallback chains.
//! - [`plugins`]: the wasmtime host for strategy plugins: limits, the
//!   compiled-module cache, file watch for hot reload, and the
//!   `swapline plugins` reports.
//! - [`queue`], [`store`], [`bus`]: seams, each a trait plus implementations.
//! - [`schemas`]: the JSON Schemas in `schemas/`, generated from the types.
//! - [`telemetry`]: logging setup, metric names and typed metric events.
//! - [`monitor`]: the periodic sampler behind the queue, stuck-order and pool
//!   gauges.
//! - [`client`], [`loadtest`]: a small HTTP/WebSocket client and the
//!   `swapline loadtest` tool built on it (also used by the e2e tests).
//!
//! Dependencies point one way: `api → pipeline → domain + traits ← adapters`.
// `deny`, not `forbid`: one function may opt out with `#[allow(unsafe_code)]`,
// `plugins::cache::deserialize_own_artifact`, because wasmtime's
// `Module::deserialize` (reading back the compiled-module cache) is
// `unsafe`. Everything else stays safe code; a new `unsafe` anywhere fails
// the build unless it is allowed explicitly and reviewed the same way.
#![deny(unsafe_code)]
#![warn(unreachable_pub, missing_docs, missing_debug_implementations)]

pub mod api;
pub mod app;
#[cfg(test)]
mod architecture;
pub mod bus;
pub mod client;
pub mod config;
pub mod domain;
pub mod loadtest;
pub mod monitor;
pub mod pipeline;
pub mod plugins;
pub mod queue;
pub mod schemas;
pub mod store;
pub mod strategy;
pub mod telemetry;
#[cfg(test)]
mod testing;
pub mod venues;
