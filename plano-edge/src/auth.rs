//! Client authentication on inbound listeners (`auth.api_keys`).
//!
//! A client presents its key as `Authorization: Bearer <key>` or `x-api-key: <key>` (the
//! two styles the OpenAI and Anthropic SDKs send). The key is compared in constant time
//! against *every* configured key, so timing reveals neither which key matched nor how
//! much of a wrong key was right (only its length can leak, which is not secret).
//!
//! A request with two `Authorization` (or two `x-api-key`) headers is refused with 400:
//! which one counts would otherwise depend on which the edge reads first, and a proxy in
//! front might have checked the other.
//!
//! The key authenticates the client to the edge only. Once checked it is removed from the
//! request, so it never reaches the egress or a provider. On a listener *without* `auth`
//! the client's credentials pass through untouched: they may be meant for a provider with
//! `passthrough_auth`.

use http::{HeaderMap, HeaderName, header};
use plano_config::ClientAuth;
use subtle::{Choice, ConstantTimeEq};

use crate::error::EdgeError;

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Check the client's key. `Ok` when the listener is open or a configured key matched.
pub(crate) fn check(auth: Option<&ClientAuth>, headers: &HeaderMap) -> Result<(), EdgeError> {
    let Some(auth) = auth else {
        return Ok(());
    };
    for (name, shown) in [
        (header::AUTHORIZATION, "authorization"),
        (X_API_KEY, "x-api-key"),
    ] {
        if headers.get_all(&name).iter().nth(1).is_some() {
            return Err(EdgeError::DuplicateCredentials(shown));
        }
    }
    let Some(presented) = presented_key(headers) else {
        return Err(EdgeError::MissingApiKey);
    };
    let mut matched = Choice::from(0);
    for key in &auth.api_keys {
        matched |= key.expose().as_bytes().ct_eq(presented);
    }
    if bool::from(matched) {
        Ok(())
    } else {
        Err(EdgeError::InvalidApiKey)
    }
}

/// Remove the client's edge credentials so they are not forwarded.
pub(crate) fn strip(headers: &mut HeaderMap) {
    headers.remove(header::AUTHORIZATION);
    headers.remove(X_API_KEY);
}

/// The key the client presented: a Bearer token wins over `x-api-key`.
fn presented_key(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let b = v.as_bytes();
        // The scheme is case-insensitive (RFC 9110 §11.1).
        if b.len() > 7 && b[..7].eq_ignore_ascii_case(b"bearer ") {
            let token = trim(&b[7..]);
            if !token.is_empty() {
                return Some(token);
            }
        }
    }
    headers
        .get(X_API_KEY)
        .map(|v| trim(v.as_bytes()))
        .filter(|k| !k.is_empty())
}

fn trim(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, StatusCode};
    use plano_config::Secret;

    fn auth() -> ClientAuth {
        ClientAuth {
            api_keys: vec![Secret::new("key-web"), Secret::new("key-batch")],
        }
    }

    fn headers(name: &'static str, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn open_listener_accepts_anything() {
        assert!(check(None, &HeaderMap::new()).is_ok());
    }

    #[test]
    fn bearer_and_x_api_key_accepted() {
        let a = auth();
        assert!(check(Some(&a), &headers("authorization", "Bearer key-web")).is_ok());
        assert!(check(Some(&a), &headers("authorization", "bearer  key-batch ")).is_ok());
        assert!(check(Some(&a), &headers("x-api-key", "key-batch")).is_ok());
    }

    #[test]
    fn wrong_missing_or_prefix_keys_refused() {
        let a = auth();
        let e = check(Some(&a), &HeaderMap::new()).err();
        assert_eq!(
            e.map(|e| (e.status(), e.reason())),
            Some((StatusCode::UNAUTHORIZED, "missing_api_key"))
        );
        for (name, value) in [
            ("authorization", "Bearer key-we"),
            ("authorization", "Bearer key-web2"),
            ("authorization", "Basic a2V5LXdlYg=="),
            ("x-api-key", "nope"),
        ] {
            let e = check(Some(&a), &headers(name, value)).err();
            assert_eq!(
                e.map(|e| e.status()),
                Some(StatusCode::UNAUTHORIZED),
                "{name}: {value}"
            );
        }
    }

    #[test]
    fn two_keys_of_one_style_are_refused_even_when_one_is_valid() {
        let a = auth();
        for name in ["authorization", "x-api-key"] {
            let mut h = HeaderMap::new();
            let good = if name == "authorization" {
                "Bearer key-web"
            } else {
                "key-web"
            };
            h.append(name, HeaderValue::from_static(good));
            h.append(name, HeaderValue::from_static("other"));
            let e = check(Some(&a), &h).err();
            assert_eq!(
                e.map(|e| (e.status(), e.reason())),
                Some((StatusCode::BAD_REQUEST, "duplicate_credentials")),
                "{name}"
            );
        }
        // One of each style is not a duplicate: the Bearer token wins, as documented.
        let mut h = headers("authorization", "Bearer key-web");
        h.insert("x-api-key", HeaderValue::from_static("nope"));
        assert!(check(Some(&a), &h).is_ok());
    }

    #[test]
    fn strip_removes_both_styles() {
        let mut h = headers("authorization", "Bearer key-web");
        h.insert("x-api-key", HeaderValue::from_static("k"));
        h.insert("x-other", HeaderValue::from_static("kept"));
        strip(&mut h);
        assert!(h.get("authorization").is_none() && h.get("x-api-key").is_none());
        assert_eq!(h.get("x-other").map(|v| v.as_bytes()), Some(&b"kept"[..]));
    }
}
