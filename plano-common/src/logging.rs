//! Tracing setup: human-readable lines (coloured on a terminal) or one JSON object per line
//! for log collectors. Level and per-crate filters come from `RUST_LOG` (default [`DEFAULT_FILTER`]: `info`, AWS SDK crates at `warn`).
//!
//! Logs go to stderr so stdout stays free for command output (`--check` prints its summary
//! there). Access-log lines (target [`ACCESS_TARGET`]) are formatted by hand
//! ([`access_format`]) and written in batches ([`sink`]); every other line is formatted by
//! tracing-subscriber and written at once.
//!
//! With a [`Telemetry`], spans from Plano's crates also become OpenTelemetry spans. That
//! layer has its own filter, independent of `RUST_LOG`: INFO-and-above spans from `plano*`
//! targets, and WARN-and-above events inside them (as span events).

use std::io::IsTerminal;

use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::filter::FilterFn;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::telemetry::Telemetry;

pub mod access_format;
pub mod sink;

pub use sink::flush;

/// `tracing` target of access-log events (the edge's `plano::access`): their lines are
/// formatted by hand and written in batches; `RUST_LOG=plano::access=off` turns them off.
pub const ACCESS_TARGET: &str = "plano::access";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable; coloured when stderr is a terminal.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// The filter without `RUST_LOG`: INFO, except the AWS SDK crates, whose INFO lines name
/// the credential source and the access key ID they loaded (not a secret, but not ours to
/// print either); their warnings and errors still show.
pub const DEFAULT_FILTER: &str =
    "info,aws_config=warn,aws_credential_types=warn,aws_smithy_runtime=warn,aws_sigv4=warn";

/// Install the global subscriber. Safe to call more than once (tests): only the first call
/// installs anything; it returns whether this call did.
pub fn init(format: LogFormat) -> bool {
    init_with(format, None)
}

/// [`init`], exporting spans through `telemetry` when given.
pub fn init_with(format: LogFormat, telemetry: Option<&Telemetry>) -> bool {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // Log lines are events only: the request path's spans are trace spans (`otel.*` fields,
    // exported by the OpenTelemetry layer) and every event names its request itself
    // (`request_id`). Letting the log layer see spans would format their fields on every
    // request (about a tenth of the egress's CPU in the profile in BENCHMARKS.md) and, with
    // no trace export configured, keep spans alive that nothing reads.
    let filter = filter.and(filter_fn(|meta| meta.is_event()));
    let writer = sink::MakeSinkWriter(sink::global());
    let fmt = fmt_layer(format, std::io::stderr().is_terminal(), writer).with_filter(filter);
    let registry = tracing_subscriber::registry().with(fmt);
    // Not `.with(Option<layer>)`: an absent layer still makes the registry create every
    // span (a `None` layer answers "always interested"), which costs per request.
    let installed = match telemetry {
        Some(t) => registry.with(otel_layer(t)).try_init().is_ok(),
        None => registry.try_init().is_ok(),
    };
    if installed {
        sink::flush_on_panic();
    }
    installed
}

/// The log lines' `fmt` layer (unfiltered) in `format`, with ANSI colours or not, writing
/// to `writer`: the binaries' layer, and the tests' (which compare it with
/// [`reference_fmt_layer`]).
pub fn fmt_layer<S, W>(format: LogFormat, ansi: bool, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        LogFormat::Pretty => {
            let fmt = fmt.with_ansi(ansi);
            let inner = tracing_subscriber::fmt::format::Format::default().with_ansi(ansi);
            fmt.event_format(access_format::AccessFormat { inner, json: false })
                .boxed()
        }
        LogFormat::Json => {
            let fmt = fmt
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false);
            let inner = tracing_subscriber::fmt::format::Format::default()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false);
            fmt.event_format(access_format::AccessFormat { inner, json: true })
                .boxed()
        }
    }
}

/// tracing-subscriber's own formatter for `format`, without ANSI (what [`fmt_layer`] must
/// write the same as, for tests).
pub fn reference_fmt_layer<S, W>(format: LogFormat, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(false);
    match format {
        LogFormat::Pretty => fmt.boxed(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .boxed(),
    }
}

/// The `tracing-opentelemetry` layer for `telemetry`, filtered to what is worth exporting.
/// Tests install it in a scoped subscriber next to their own receiver.
pub fn otel_layer<S>(telemetry: &Telemetry) -> impl Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    tracing_opentelemetry::layer()
        .with_tracer(telemetry.tracer())
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_level(false)
        .with_target(false)
        .with_filter(FilterFn::new(exported))
}

/// Plano's spans at INFO and above, and WARN-and-above events (they land on the span they
/// happen in).
fn exported(meta: &Metadata<'_>) -> bool {
    let ours = meta.target().starts_with("plano");
    if meta.is_span() {
        ours && *meta.level() <= Level::INFO
    } else {
        ours && *meta.level() <= Level::WARN
    }
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
