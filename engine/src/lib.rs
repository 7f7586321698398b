//! Swapline: an order execution engine for Solana DEX swaps.
//!
//! An HTTP request becomes an order row, a job on a queue, a numbered
//! sequence of events, and a live stream to every WebSocket watching that
//! order; the routing decision in between is made by a sandboxed
//! WebAssembly plugin that a TOML file names.
//!
//! # Layout
//! Each component is a folder: `mod.rs` holds its seam (a trait) or its
//! use cases, `config.rs` its settings, one file per implementation. Every
//! root file states what it may import on a `//! May import:` line, and a
//! test (`architecture`) holds the code to it and finds no import circle.
//!
//! - [`app`]: the composition root; the only module that names adapters.
//! - [`config`]: the aggregate of every component's settings (figment:
//!   TOML, profile, env) and [`config::validate`], which start-up and
//!   `swapline config check` share.
//! - [`domain`]: pure types and rules: orders, statuses, events, amounts,
//!   tokens, quotes, routes, request validation, callers, API keys and
//!   tickets (as digests). No I/O.
//! - [`api`]: HTTP only: routes, authentication (Bearer keys, WebSocket
//!   tickets, origins and CORS), media type, body limit, JSON to request,
//!   error to status, views, the `Idempotency-Key` header and replays, the
//!   WebSocket sessions and hub.
//! - [`pipeline`]: the use cases: [`pipeline::Intake`] (a POST, at most
//!   once per `Idempotency-Key`, within the caller's request limit),
//!   [`pipeline::Recorder`] (every event stored, then published),
//!   [`pipeline::Keys`] (API keys and WebSocket tickets), and the
//!   worker's stages (`quote`, `route`, `submit`, `confirm`, `failure`),
//!   retry policy and backoff, reconciler.
//! - [`strategy`]: the `Strategy` seam: answer validation and fallback
//!   chains, free of wasmtime.
//! - [`plugins`]: the wasmtime adapter of `Strategy`: limits, the
//!   compiled-module cache, file watch for hot reload, the `swapline
//!   plugins` reports.
//! - [`chain`]: the `ChainRpc` seam (slots, blockhashes, send, signature
//!   statuses, priority fees), as a Solana RPC node answers.
//! - [`venues`]: the `Venue` seam, the simulated DEX pools and the
//!   simulated chain they live on.
//! - [`store`], [`queue`], [`bus`]: seams, each a trait plus implementations
//!   and a contract suite every implementation passes; `store` also holds
//!   the chain's durable state and `Idempotency-Key` records, `queue` the
//!   claim rate limit and the per-client request limit.
//! - [`telemetry`]: logging setup, metric names and typed metric events.
//! - [`monitor`]: the periodic sampler behind the queue, stuck-order and pool
//!   gauges.
//! - [`schemas`]: the JSON Schemas in `schemas/`, generated from the types.
//! - [`client`], [`loadtest`]: a small HTTP/WebSocket client and the
//!   `swapline loadtest` tool built on it (also used by the e2e tests).
//!
//! Dependencies point one way: `api → pipeline → domain + seams ← adapters`,
//! and `config → each component's settings`, never back.
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
pub mod chain;
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
