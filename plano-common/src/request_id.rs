//! Request ids: kept from the client's `x-request-id` when it is a sane token, generated
//! otherwise, and sent upstream and back to the client.

use http::{HeaderMap, HeaderName, HeaderValue};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client-supplied id we keep; longer ones are replaced (they end up in logs).
const MAX_LEN: usize = 128;

/// The request id for this request: the client's when valid, else a new UUID v4.
pub fn ensure(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID)
        && is_acceptable(v)
    {
        return v.clone();
    }
    generate()
}

pub fn generate() -> HeaderValue {
    // Encoded into a stack buffer, not through `Display` into a `String` (half the
    // instructions). A UUID is always a valid header value.
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn is_acceptable(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_LEN
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':' | b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_client_id() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(ensure(&h), "abc-123");
    }

    #[test]
    fn replaces_hostile_or_missing_ids() {
        let mut h = HeaderMap::new();
        assert_eq!(ensure(&h).len(), 36);
        h.insert(X_REQUEST_ID, HeaderValue::from_static("a b\"c"));
        assert_ne!(ensure(&h), "a b\"c");
        let long = "a".repeat(200);
        h.insert(
            X_REQUEST_ID,
            HeaderValue::from_str(&long).unwrap_or(HeaderValue::from_static("x")),
        );
        assert_eq!(ensure(&h).len(), 36);
    }

    #[test]
    fn a_generated_id_is_a_lowercase_uuid_v4() {
        let id = generate();
        let text = id.to_str().unwrap();
        let parsed = uuid::Uuid::parse_str(text).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(text, parsed.hyphenated().to_string());
        assert_ne!(generate(), id);
    }
}
