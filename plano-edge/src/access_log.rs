//! The access log and the per-request HTTP metrics, emitted once when a response is over.
//!
//! The record is carried by the response body and written when the body is dropped, so a
//! stream that ends, fails, or is abandoned by the client is logged exactly once, with the
//! bytes actually sent. Fields are chosen so nothing secret can appear: the path without
//! its query string, ids we validated, and fixed words.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use http::Method;
use metrics::{Counter, Histogram, counter, histogram};
use plano_common::metrics::{
    HTTP_REQUEST_DURATION_SECONDS, HTTP_REQUESTS_TOTAL, method_label, status_class,
};

/// `tracing` target of access-log events, so operators can route or filter them.
pub const TARGET: &str = plano_common::logging::ACCESS_TARGET;

pub(crate) struct AccessRecord {
    pub request_id: String,
    pub listener: Arc<ListenerMetrics>,
    pub method: Method,
    pub path: String,
    /// Bounded route label (`/v1/chat/completions`, …, or `other`).
    pub route: &'static str,
    pub status: u16,
    pub bytes_out: u64,
    pub started: Instant,
    /// Where the request went (`egress`), or `-` when the edge answered itself.
    pub upstream: &'static str,
    /// False when the body stopped early (client gone, upstream failed mid-stream).
    pub completed: bool,
    /// The edge's own error (`EdgeError::reason`), or `-`.
    pub error: &'static str,
    /// The request's server span; it ends when this record is dropped (body over).
    pub span: tracing::Span,
}

/// One listener's handles for the metrics every request records (the request counter by
/// route, method and status class; the duration histogram by route and status class),
/// each registered the first time its labels occur. Registering by name and labels on
/// every request allocated the labels and hashed and looked up the key each time.
pub struct ListenerMetrics {
    name: String,
    requests: RwLock<Vec<(RequestLabels, Counter)>>,
    durations: RwLock<Vec<((&'static str, &'static str), Histogram)>>,
}

/// route, method, status class
type RequestLabels = (&'static str, &'static str, &'static str);

impl ListenerMetrics {
    pub fn new(listener: &str) -> Self {
        Self {
            name: listener.to_string(),
            requests: RwLock::default(),
            durations: RwLock::default(),
        }
    }

    /// The listener's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl AccessRecord {
    pub(crate) fn emit(&self) {
        let elapsed = self.started.elapsed();
        if let Ok(status) = http::StatusCode::from_u16(self.status) {
            plano_common::telemetry::record_status(&self.span, status);
        }
        if !self.completed {
            plano_common::telemetry::record_error(&self.span, "response_incomplete");
        }
        tracing::info!(
            target: TARGET,
            request_id = %self.request_id,
            listener = %self.listener.name,
            method = %self.method,
            path = %self.path,
            status = self.status,
            bytes_out = self.bytes_out,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            upstream = self.upstream,
            completed = self.completed,
            error = self.error,
            "request"
        );
        let class = status_class(self.status);
        let (route, method) = (self.route, method_label(&self.method));
        let listener = &self.listener;
        plano_common::metrics::cached_handle(&listener.requests, (route, method, class), || {
            counter!(
                HTTP_REQUESTS_TOTAL,
                "component" => "edge",
                "listener" => listener.name.clone(),
                "route" => route,
                "method" => method,
                "status_class" => class,
            )
        })
        .increment(1);
        plano_common::metrics::cached_handle(&listener.durations, (route, class), || {
            histogram!(
                HTTP_REQUEST_DURATION_SECONDS,
                "component" => "edge",
                "listener" => listener.name.clone(),
                "route" => route,
                "status_class" => class,
            )
        })
        .record(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plano_common::logging::{LogFormat, fmt_layer, reference_fmt_layer};
    use std::sync::Mutex;
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Captured {
        /// The lines, each without its timestamp (the two layers read the clock apart).
        fn lines(&self, format: LogFormat) -> Vec<String> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines()
                .map(|l| match format {
                    LogFormat::Pretty => l.split_once(' ').unwrap().1.to_string(),
                    LogFormat::Json => {
                        let v: serde_json::Value = serde_json::from_str(l).unwrap();
                        let ts = v["timestamp"].as_str().unwrap();
                        assert_eq!(ts.len(), "2026-12-01T16:46:56.123456Z".len(), "{ts}");
                        l.replacen(ts, "", 1)
                    }
                })
                .collect()
        }
    }

    fn record(
        path: &str,
        request_id: &str,
        upstream: &'static str,
        completed: bool,
    ) -> AccessRecord {
        AccessRecord {
            request_id: request_id.to_string(),
            listener: Arc::new(ListenerMetrics::new("main")),
            method: Method::POST,
            path: path.to_string(),
            route: "other",
            status: 502,
            bytes_out: 1234,
            started: Instant::now(),
            upstream,
            completed,
            error: "egress_unreachable",
            span: tracing::Span::none(),
        }
    }

    /// The hand-written access line (plano_common::logging::access_format) is byte for byte
    /// what tracing-subscriber writes for the same event, in both formats.
    #[test]
    fn the_access_line_is_written_as_tracing_subscriber_writes_it() {
        for format in [LogFormat::Pretty, LogFormat::Json] {
            let (ours, reference) = (Captured::default(), Captured::default());
            let (o, r) = (ours.clone(), reference.clone());
            let subscriber = tracing_subscriber::registry()
                .with(fmt_layer(format, false, move || o.clone()))
                .with(reference_fmt_layer(format, move || r.clone()));
            tracing::subscriber::with_default(subscriber, || {
                record("/v1/chat/completions", "3f1c-req", "egress", true).emit();
                record("/a\"quoted\\path/é/🦀\t", "id \"x\"", "-", false).emit();
                // Another event is not ours to format: it goes to tracing-subscriber.
                tracing::info!(target: TARGET, "other fields {}", 1);
                tracing::info!(n = 1, "not an access line");
            });
            let (ours, reference) = (ours.lines(format), reference.lines(format));
            assert_eq!(ours.len(), 4, "{ours:?}");
            assert_eq!(ours, reference);
            assert!(ours[0].contains("plano::access"), "{}", ours[0]);
            assert!(ours[0].contains("request_id"), "{}", ours[0]);
        }
    }
}
