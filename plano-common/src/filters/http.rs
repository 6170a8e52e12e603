//! `type: http` filters: the body is POSTed to the filter's `url` joined with the client's
//! request path, and the filter's answer decides (see the module above for the outcomes).
//!
//! Join rule: the filter URL's path, without its trailing `/`, followed by the request
//! path; the filter URL's query is kept. `http://guard:8080` + `/v1/chat/completions` →
//! `http://guard:8080/v1/chat/completions`; `http://guard:8080/filters/pii?v=2` →
//! `http://guard:8080/filters/pii/v1/chat/completions?v=2`.
//!
//! Headers: the client's, minus hop-by-hop ones, minus credentials (a filter is a third
//! party: the client's API key, cookies and proxy credentials never reach it), minus the
//! ones that describe the client's body (we send our own), plus `x-request-id` and
//! `x-plano-filter-direction: input | output | output_event`.

use ::http::header::{self, HeaderName, HeaderValue};
use ::http::{HeaderMap, Method, Request, StatusCode, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use plano_config::Filter;

use super::{Client, Direction, FilterCtx, MAX_FILTER_BODY_BYTES, Outcome, block_message};

/// Client headers a filter never sees.
const NOT_FORWARDED: &[&str] = &[
    "authorization",
    "x-api-key",
    "api-key",
    "cookie",
    "proxy-authorization",
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "accept",
    "accept-encoding",
    "expect",
    "mcp-session-id",
    "mcp-protocol-version",
];

pub const DIRECTION_HEADER: HeaderName = HeaderName::from_static("x-plano-filter-direction");

pub(super) async fn call(
    client: &Client,
    filter: &Filter,
    direction: Direction,
    ctx: &FilterCtx<'_>,
    body: &Bytes,
) -> Outcome {
    let uri = match target(&filter.url, ctx.path) {
        Ok(u) => u,
        Err(e) => return Outcome::Failed(format!("cannot build its URL: {e}")),
    };
    let mut req = Request::new(Full::new(body.clone()));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri;
    *req.headers_mut() = forwarded_headers(ctx.headers);
    let h = req.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    h.insert(crate::request_id::X_REQUEST_ID, ctx.request_id.clone());
    h.insert(
        DIRECTION_HEADER,
        HeaderValue::from_static(direction.as_str()),
    );

    let res = match client.request(req).await {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("cannot be reached: {}", error_chain(&e))),
    };
    let status = res.status();
    let answer = match Limited::new(res.into_body(), MAX_FILTER_BODY_BYTES)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(e) => return Outcome::Failed(format!("its answer could not be read: {e}")),
    };
    match status {
        StatusCode::NO_CONTENT => Outcome::Pass(None),
        s if s.is_success() => match serde_json::from_slice::<serde::de::IgnoredAny>(&answer) {
            Ok(_) => Outcome::Pass(Some(answer)),
            Err(e) => Outcome::Failed(format!("answered {s} with a body that is not JSON ({e})")),
        },
        s if s.is_client_error() => Outcome::Blocked {
            status: s,
            message: block_message(s, &answer),
        },
        s => Outcome::Failed(format!("answered {s}")),
    }
}

/// The filter URL joined with the request path (rule in the module docs).
pub(super) fn target(base: &url::Url, path: &str) -> Result<Uri, ::http::uri::InvalidUri> {
    let mut url = base.clone();
    let joined = format!("{}{}", base.path().trim_end_matches('/'), path);
    url.set_path(&joined);
    url.as_str().parse()
}

fn forwarded_headers(client: &HeaderMap) -> HeaderMap {
    let mut out = client.clone();
    crate::headers::strip_hop_by_hop(&mut out);
    for name in NOT_FORWARDED {
        out.remove(*name);
    }
    out
}

pub(super) use crate::errors::error_chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_rule() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert_eq!(
            target(&u("http://guard:8080"), "/v1/chat/completions")
                .unwrap()
                .to_string(),
            "http://guard:8080/v1/chat/completions"
        );
        assert_eq!(
            target(&u("http://guard:8080/filters/pii/?v=2"), "/v1/messages")
                .unwrap()
                .to_string(),
            "http://guard:8080/filters/pii/v1/messages?v=2"
        );
    }

    #[test]
    fn credentials_and_body_headers_are_not_forwarded() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer sk-client"),
            ("x-api-key", "sk-ant"),
            ("cookie", "s=1"),
            ("content-length", "12"),
            ("connection", "close"),
            ("x-user", "alice"),
            ("traceparent", "00-1-2-01"),
        ] {
            h.insert(k, HeaderValue::from_static(v));
        }
        let out = forwarded_headers(&h);
        let mut names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["traceparent", "x-user"]);
    }
}
