//! The access log and the per-request HTTP metrics, emitted once when a response is over.
//!
//! The record is carried by the response body and written when the body is dropped, so a
//! stream that ends, fails, or is abandoned by the client is logged exactly once, with the
//! bytes actually sent. Fields are chosen so nothing secret can appear: the path without
//! its query string, ids we validated, and fixed words.

use std::time::Instant;

use http::Method;
use metrics::{counter, histogram};
use plano_common::metrics::{
    HTTP_REQUEST_DURATION_SECONDS, HTTP_REQUESTS_TOTAL, method_label, status_class,
};

/// `tracing` target of access-log events, so operators can route or filter them.
pub const TARGET: &str = "plano::access";

pub(crate) struct AccessRecord {
    pub request_id: String,
    pub listener: String,
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
}

impl AccessRecord {
    pub(crate) fn emit(&self) {
        let elapsed = self.started.elapsed();
        tracing::info!(
            target: TARGET,
            request_id = %self.request_id,
            listener = %self.listener,
            method = %self.method,
            path = %self.path,
            status = self.status,
            bytes_out = self.bytes_out,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            upstream = self.upstream,
            completed = self.completed,
            "request"
        );
        let class = status_class(self.status);
        counter!(
            HTTP_REQUESTS_TOTAL,
            "component" => "edge",
            "listener" => self.listener.clone(),
            "route" => self.route,
            "method" => method_label(&self.method),
            "status_class" => class,
        )
        .increment(1);
        histogram!(
            HTTP_REQUEST_DURATION_SECONDS,
            "component" => "edge",
            "listener" => self.listener.clone(),
            "route" => self.route,
            "status_class" => class,
        )
        .record(elapsed.as_secs_f64());
    }
}
