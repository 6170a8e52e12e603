//! `connections` on a listener: how many client connections it holds and how long a slow or
//! idle client may keep one. Raw shape and validation live together here so the listener
//! validation only calls [`connections`]. Defaults and reasons: docs/hardening.md.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::{RawDuration, parse_duration};

/// Default `header_read_timeout`: LLM clients send their headers in one write; ten seconds
/// is generous for a slow network yet frees a slowloris slot six times sooner than nginx's
/// 60 s `client_header_timeout`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `body_idle_timeout` (nginx `client_body_timeout`): the longest pause allowed
/// between two reads of a request body.
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `keepalive_timeout` (nginx `keepalive_timeout`): how long a connection with no
/// request in flight stays open.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConnections {
    pub max: Option<u64>,
    pub header_read_timeout: Option<RawDuration>,
    pub body_idle_timeout: Option<RawDuration>,
    pub keepalive_timeout: Option<RawDuration>,
}

/// A listener's connection limits, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionLimits {
    /// `max`: open connections before idle ones are shed and then new ones refused. `None`:
    /// derived from the process's open-files limit when the listener starts.
    pub max: Option<usize>,
    /// `header_read_timeout`: a new connection must complete its first request's headers
    /// (TLS handshake and HTTP/2 preface included), and a keep-alive HTTP/1 connection that
    /// started a request must finish its headers, within this time.
    #[serde(with = "crate::duration::duration_str")]
    pub header_read_timeout: Duration,
    /// `body_idle_timeout`: the longest wait for the next piece of a request body.
    #[serde(with = "crate::duration::duration_str")]
    pub body_idle_timeout: Duration,
    /// `keepalive_timeout`: a connection with no request in flight is closed after this.
    #[serde(with = "crate::duration::duration_str")]
    pub keepalive_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max: None,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_idle_timeout: DEFAULT_BODY_IDLE_TIMEOUT,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
        }
    }
}

/// Validate `connections` at `path`; problems come back as (key path, message) pairs.
pub(crate) fn connections(
    raw: Option<RawConnections>,
    path: &str,
) -> (ConnectionLimits, Vec<(String, String)>) {
    let mut limits = ConnectionLimits::default();
    let mut problems = Vec::new();
    let Some(raw) = raw else {
        return (limits, problems);
    };
    match raw.max {
        Some(0) => problems.push((format!("{path}.max"), "must be greater than 0".into())),
        Some(n) => limits.max = Some(usize::try_from(n).unwrap_or(usize::MAX)),
        None => {}
    }
    for (key, raw, slot) in [
        (
            "header_read_timeout",
            raw.header_read_timeout,
            &mut limits.header_read_timeout,
        ),
        (
            "body_idle_timeout",
            raw.body_idle_timeout,
            &mut limits.body_idle_timeout,
        ),
        (
            "keepalive_timeout",
            raw.keepalive_timeout,
            &mut limits.keepalive_timeout,
        ),
    ] {
        let Some(raw) = raw else { continue };
        match parse_duration(&raw) {
            Ok(d) if d.is_zero() => {
                problems.push((format!("{path}.{key}"), "must be greater than 0".into()))
            }
            Ok(d) => *slot = d,
            Err(e) => problems.push((format!("{path}.{key}"), e)),
        }
    }
    (limits, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let (l, p) = connections(None, "listeners[0].connections");
        assert_eq!(l, ConnectionLimits::default());
        assert!(p.is_empty());
        let raw = RawConnections {
            max: Some(50),
            header_read_timeout: Some(RawDuration::Text("2s".into())),
            body_idle_timeout: Some(RawDuration::Seconds(3.0)),
            keepalive_timeout: Some(RawDuration::Text("500ms".into())),
        };
        let (l, p) = connections(Some(raw), "x");
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(l.max, Some(50));
        assert_eq!(l.header_read_timeout, Duration::from_secs(2));
        assert_eq!(l.body_idle_timeout, Duration::from_secs(3));
        assert_eq!(l.keepalive_timeout, Duration::from_millis(500));
    }

    #[test]
    fn zero_and_garbage_are_refused_with_paths() {
        let raw = RawConnections {
            max: Some(0),
            header_read_timeout: Some(RawDuration::Text("0s".into())),
            body_idle_timeout: Some(RawDuration::Text("soon".into())),
            keepalive_timeout: None,
        };
        let (_, p) = connections(Some(raw), "listeners[1].connections");
        let paths: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            paths,
            [
                "listeners[1].connections.max",
                "listeners[1].connections.header_read_timeout",
                "listeners[1].connections.body_idle_timeout"
            ]
        );
    }
}
