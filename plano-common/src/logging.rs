//! Tracing setup: human-readable lines (coloured on a terminal) or one JSON object per line
//! for log collectors. Level and per-crate filters come from `RUST_LOG` (default `info`).
//!
//! Logs go to stderr so stdout stays free for command output (`--check` prints its summary
//! there).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable; coloured when stderr is a terminal.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Install the global subscriber. Safe to call more than once (tests): only the first call
/// installs anything; it returns whether this call did.
pub fn init(format: LogFormat) -> bool {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Pretty => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    result.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_init_is_harmless() {
        let first = init(LogFormat::Json);
        assert!(!init(LogFormat::Pretty));
        // Whoever won (another test may have initialised first), logging still works.
        tracing::info!(first, "logging initialised");
    }
}
