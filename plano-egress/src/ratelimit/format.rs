//! Response headers in OpenAI's format, so clients that already read OpenAI's limits (the
//! official SDKs' retry logic, dashboards) understand ours.
//!
//! `x-ratelimit-reset-*` is a Go-style duration (`1s`, `6m0s`, `1h2m3s`, `20ms`, `1.5s`): the
//! time until the bucket is full again. `retry-after` is whole seconds, rounded up.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::LimitKind;

/// Format a duration the way OpenAI's headers do (Go's `time.Duration` string, ms precision).
pub fn go_duration(us: f64) -> String {
    let mut out = Vec::with_capacity(24);
    write_go_duration(&mut out, us);
    // Digits and unit letters only: always UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// [`go_duration`] appended to `out` with hand-written digits: `format!` here was ~1,000
/// instructions of every rate-limited answer (two headers per limit kind).
fn write_go_duration(out: &mut Vec<u8>, us: f64) {
    let ms = (us / 1000.0).ceil().max(0.0) as u64;
    if ms == 0 {
        out.extend_from_slice(b"0s");
        return;
    }
    if ms < 1000 {
        push_digits(out, ms);
        out.extend_from_slice(b"ms");
        return;
    }
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, frac) = (rest / 1000, rest % 1000);
    if h > 0 {
        push_digits(out, h);
        out.push(b'h');
    }
    if h > 0 || m > 0 {
        push_digits(out, m);
        out.push(b'm');
    }
    push_digits(out, s);
    if frac > 0 {
        // Milliseconds as a decimal fraction without trailing zeros: 500 → `.5`, 20 → `.02`.
        out.push(b'.');
        let digits = [frac / 100, frac / 10 % 10, frac % 10];
        let keep = if digits[2] != 0 {
            3
        } else if digits[1] != 0 {
            2
        } else {
            1
        };
        out.extend(digits[..keep].iter().map(|d| b'0' + *d as u8));
    }
    out.push(b's');
}

/// The decimal digits of `n`.
fn push_digits(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[at..]);
}

/// Whole seconds to wait, rounded up and at least 1 (a `retry-after: 0` invites a hot loop).
pub fn retry_after_secs(us: f64) -> u64 {
    ((us / 1_000_000.0).ceil() as u64).max(1)
}

/// The state of the most constraining rule of one kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KindState {
    pub kind: LimitKind,
    pub limit: u64,
    pub remaining: f64,
    pub reset_us: f64,
}

/// The three header names of a kind, fixed strings (parsing a formatted name on every
/// answer showed in the egress's profile).
fn names(kind: LimitKind) -> [HeaderName; 3] {
    match kind {
        LimitKind::Tokens => [
            HeaderName::from_static("x-ratelimit-limit-tokens"),
            HeaderName::from_static("x-ratelimit-remaining-tokens"),
            HeaderName::from_static("x-ratelimit-reset-tokens"),
        ],
        LimitKind::Requests => [
            HeaderName::from_static("x-ratelimit-limit-requests"),
            HeaderName::from_static("x-ratelimit-remaining-requests"),
            HeaderName::from_static("x-ratelimit-reset-requests"),
        ],
    }
}

pub fn put_state(headers: &mut HeaderMap, s: &KindState) {
    let [limit, remaining, reset] = names(s.kind);
    headers.insert(limit, HeaderValue::from(s.limit));
    headers.insert(
        remaining,
        HeaderValue::from(s.remaining.floor().max(0.0) as u64),
    );
    // A Go duration is ASCII digits and unit letters, so it is always a valid value.
    let mut duration = Vec::with_capacity(24);
    write_go_duration(&mut duration, s.reset_us);
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(duration)) {
        headers.insert(reset, v);
    }
}

pub fn put_retry_after(headers: &mut HeaderMap, wait_us: f64) {
    headers.insert(
        http::header::RETRY_AFTER,
        HeaderValue::from(retry_after_secs(wait_us)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_like_openai() {
        assert_eq!(go_duration(0.0), "0s");
        assert_eq!(go_duration(20_000.0), "20ms");
        assert_eq!(go_duration(1_000_000.0), "1s");
        assert_eq!(go_duration(1_500_000.0), "1.5s");
        assert_eq!(go_duration(360_000_000.0), "6m0s");
        assert_eq!(go_duration(3_723_000_000.0), "1h2m3s");
        assert_eq!(go_duration(86_400_000_000.0), "24h0m0s");
        // Sub-millisecond rounds up, never to a misleading 0s.
        assert_eq!(go_duration(1.0), "1ms");
        assert_eq!(go_duration(1_020_000.0), "1.02s");
        assert_eq!(go_duration(1_001_000.0), "1.001s");
        assert_eq!(go_duration(999_000.0), "999ms");
        assert_eq!(go_duration(60_000_000.0), "1m0s");
        assert_eq!(go_duration(3_600_000_000.0), "1h0m0s");
        assert_eq!(go_duration(3_601_500_000.0), "1h0m1.5s");
        assert_eq!(go_duration(-5.0), "0s");
        assert_eq!(go_duration(f64::NAN), "0s");
    }

    /// The `format!` version this module used before, as the reference.
    fn reference(us: f64) -> String {
        let ms = (us / 1000.0).ceil().max(0.0) as u64;
        if ms == 0 {
            return "0s".to_string();
        }
        if ms < 1000 {
            return format!("{ms}ms");
        }
        let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
        let (m, rest) = (rest / 60_000, rest % 60_000);
        let (s, frac) = (rest / 1000, rest % 1000);
        let secs = if frac == 0 {
            format!("{s}s")
        } else {
            let f = format!("{frac:03}");
            format!("{s}.{}s", f.trim_end_matches('0'))
        };
        match (h, m) {
            (0, 0) => secs,
            (0, m) => format!("{m}m{secs}"),
            (h, m) => format!("{h}h{m}m{secs}"),
        }
    }

    #[test]
    fn hand_written_digits_match_the_format_version() {
        let mut us = 0.0_f64;
        while us < 200_000_000_000.0 {
            assert_eq!(go_duration(us), reference(us), "{us}");
            us = us * 1.37 + 997.0;
        }
        for ms in 0..5000_u64 {
            let us = ms as f64 * 1000.0 - 1.0;
            assert_eq!(go_duration(us), reference(us), "{us}");
        }
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after_secs(0.0), 1);
        assert_eq!(retry_after_secs(1_000_001.0), 2);
        assert_eq!(retry_after_secs(2_000_000.0), 2);
    }

    #[test]
    fn headers_for_a_kind() {
        let mut h = HeaderMap::new();
        put_state(
            &mut h,
            &KindState {
                kind: LimitKind::Tokens,
                limit: 1000,
                remaining: -5.5,
                reset_us: 61_000_000.0,
            },
        );
        assert_eq!(h["x-ratelimit-limit-tokens"], "1000");
        assert_eq!(h["x-ratelimit-remaining-tokens"], "0");
        assert_eq!(h["x-ratelimit-reset-tokens"], "1m1s");
        put_state(
            &mut h,
            &KindState {
                kind: LimitKind::Requests,
                limit: 60,
                remaining: 59.9,
                reset_us: 1_000.0,
            },
        );
        assert_eq!(h["x-ratelimit-limit-requests"], "60");
        assert_eq!(h["x-ratelimit-remaining-requests"], "59");
        assert_eq!(h["x-ratelimit-reset-requests"], "1ms");
        put_retry_after(&mut h, 1_500_000.0);
        assert_eq!(h["retry-after"], "2");
        assert_eq!(h.len(), 7);
    }
}
