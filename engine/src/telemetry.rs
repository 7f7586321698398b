//! Logging setup: human-readable lines in `dev`, JSON in `production`.
//! Every order state change is one line carrying `order_id` (see
//! `pipeline::Pipeline::emit`).

use crate::config::{LogConfig, LogFormat};
use tracing_subscriber::{EnvFilter, fmt};

/// Installs the global subscriber; `RUST_LOG` overrides `log.level`.
/// Calling it twice is harmless (the second call does nothing).
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match config.format {
        LogFormat::Pretty => builder.compact().try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
