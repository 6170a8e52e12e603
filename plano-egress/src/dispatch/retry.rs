//! Backoff between attempts on the same provider, and `Retry-After`.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

const BASE: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A `Retry-After` longer than this is not waited for: the next provider is tried instead.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Exponential backoff with "equal jitter": half fixed, half random, so synchronized
/// clients spread out while each still waits a predictable minimum.
pub fn backoff(attempt: u32) -> Duration {
    let exp = BASE
        .saturating_mul(1u32 << attempt.min(10))
        .min(MAX_BACKOFF);
    let half = exp / 2;
    let jitter = rand::random_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(jitter)
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<f64>() {
        // `try_`: an absurd value such as `1e30` must not panic on the request path; it is
        // simply not honoured.
        return Duration::try_from_secs_f64(secs).ok();
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 0..20 {
            let d = backoff(attempt);
            let exp = BASE
                .saturating_mul(1u32 << attempt.min(10))
                .min(MAX_BACKOFF);
            assert!(d >= exp / 2 && d <= exp, "{attempt}: {d:?}");
        }
    }

    #[test]
    fn parses_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        h.insert("retry-after", HeaderValue::from_str(&later).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(25) && d <= Duration::from_secs(30));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
        for absurd in ["1e30", "-1", "NaN", "inf"] {
            h.insert("retry-after", HeaderValue::from_static(absurd));
            assert_eq!(retry_after(&h), None, "{absurd}");
        }
    }
}
