//! Forwarding to the egress: the routes the edge passes through, the shared client, and
//! how a client request becomes an upstream request.
//!
//! Bodies stream both ways; nothing here buffers a body. Hop-by-hop headers (RFC 9110
//! §7.6.1, plus any the client lists in `Connection`) stop here; `x-request-id` is always
//! set, `traceparent`/`tracestate` pass through as the client sent them, and
//! `x-forwarded-for` / `x-forwarded-proto` tell the egress who the client was.

use std::net::SocketAddr;

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Uri};
use plano_common::http_client::{ClientSetupError, HttpClientBuilder, PooledClient};

use crate::body::Inner;

pub(crate) type Client = PooledClient<Inner>;

/// Route templates the edge forwards to the egress (also the metric `route` labels).
pub(crate) const ROUTES: &[&str] = &[
    "/v1/chat/completions",
    "/v1/messages",
    "/v1/responses",
    "/v1/models",
];

/// The route template for a path, when the edge forwards it.
pub(crate) fn route_for(path: &str) -> Option<&'static str> {
    ROUTES.iter().copied().find(|r| {
        // `/v1/models/{id}` and `/v1/responses/{id}` belong to their collection.
        path == *r || (path.starts_with(r) && path.as_bytes().get(r.len()) == Some(&b'/'))
    })
}

/// The pooled client for the edge's calls (egress, agents, endpoints): the common
/// builder's (`plano_common::http_client`), so `overrides.upstream_tls_ca_path` applies;
/// its HTTP/1 connections are driven by the requests' own tasks (no task per connection).
/// At most [`MAX_IDLE_PER_HOST`] idle connections are kept per host, as the egress keeps
/// towards each provider: after a burst of 1,000 streams the edge held 1,000 idle
/// connections to the egress until their idle timeout (BENCHMARKS.md, "Memory").
pub(crate) fn client(builder: &HttpClientBuilder) -> Result<Client, ClientSetupError> {
    builder
        .clone()
        .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
        .build_pooled()
}

/// Idle pooled connections kept per host (the egress, each agent, each endpoint).
pub(crate) const MAX_IDLE_PER_HOST: usize = 256;

/// Who the client was, for the forwarding headers.
pub(crate) struct ClientInfo {
    pub peer: SocketAddr,
    pub https: bool,
}

/// Turn the client's request into the egress request, in place of its URI and headers.
pub(crate) fn upstream_request(
    mut req: Request<Inner>,
    egress: &url::Url,
    request_id: &HeaderValue,
    client: &ClientInfo,
) -> Result<Request<Inner>, http::Error> {
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let base = egress.as_str().trim_end_matches('/');
    let uri: Uri = format!("{base}{path_and_query}").parse()?;
    *req.uri_mut() = uri;
    // The egress speaks HTTP/1.1 or h2 as its connection decides, not as the client did.
    *req.version_mut() = http::Version::HTTP_11;

    forwarding_headers(req.headers_mut(), request_id, client);
    Ok(req)
}

/// The client's headers made ready for the next hop (egress or agent): hop-by-hop and
/// `Host` removed, request id and forwarding headers set.
pub(crate) fn forwarding_headers(
    headers: &mut HeaderMap,
    request_id: &HeaderValue,
    client: &ClientInfo,
) {
    strip_hop_by_hop(headers);
    headers.remove(header::HOST);
    headers.insert(plano_common::request_id::X_REQUEST_ID, request_id.clone());
    append_forwarded_for(headers, client.peer);
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if client.https { "https" } else { "http" }),
    );
}

pub(crate) use plano_common::headers::strip_hop_by_hop;

fn append_forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let ip = peer.ip().to_string();
    let value = match headers.get(&xff).and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.trim().is_empty() => format!("{prior}, {ip}"),
        _ => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(xff, v);
    }
}

/// A body that is empty (for local answers built by the proxy).
#[cfg(test)]
pub(crate) fn empty() -> Inner {
    crate::body::ResponseBody::full(bytes::Bytes::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_sub_resources() {
        assert_eq!(
            route_for("/v1/chat/completions"),
            Some("/v1/chat/completions")
        );
        assert_eq!(route_for("/v1/models/gpt-4o"), Some("/v1/models"));
        assert_eq!(route_for("/v1/modelsx"), None);
        assert_eq!(route_for("/admin"), None);
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("traceparent", HeaderValue::from_static("00-abc-def-01"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("traceparent"));
    }

    #[test]
    fn upstream_request_rewrites_uri_and_headers() {
        let mut req = Request::new(empty());
        *req.uri_mut() = Uri::from_static("/v1/models?x=1");
        req.headers_mut()
            .insert("host", HeaderValue::from_static("gw.example.com"));
        req.headers_mut()
            .insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        let egress: url::Url = "http://127.0.0.1:12000/".parse().unwrap();
        let info = ClientInfo {
            peer: "192.0.2.7:5555".parse().unwrap(),
            https: true,
        };
        let out =
            upstream_request(req, &egress, &HeaderValue::from_static("rid-1"), &info).unwrap();
        assert_eq!(out.uri(), "http://127.0.0.1:12000/v1/models?x=1");
        assert!(out.headers().get("host").is_none());
        assert_eq!(out.headers()["x-request-id"], "rid-1");
        assert_eq!(out.headers()["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(out.headers()["x-forwarded-proto"], "https");
    }
}
