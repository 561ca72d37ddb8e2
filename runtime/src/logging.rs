//! Where the programs' logs go and how they look: stderr, filtered by `--log` (or `RUST_LOG`),
//! as text for people or as one JSON object per line for a log shipper (`--log-format json`).
//! Colour codes only on a terminal — a log redirected to a file or collected by Docker stays
//! plain text — and never with `NO_COLOR` set.

use std::io::IsTerminal;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields`, `target`).
    Json,
}

/// Whether text logs on stderr may use colour: a terminal, and no `NO_COLOR`.
pub fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber: `RUST_LOG` if set, else `filter`; in `format`, on stderr.
pub fn init(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(colour()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}
