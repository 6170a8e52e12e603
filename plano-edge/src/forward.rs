//! Forwarding to the egress: the routes the edge passes through, the shared client, and
//! how a client request becomes an upstream request.
//!
//! Bodies stream both ways; nothing here buffers a body. Hop-by-hop headers (RFC 9110
//! §7.6.1, plus any the client lists in `Connection`) stop here; `x-request-id` is always
//! set, `traceparent`/`tracestate` pass through as the client sent them, and
//! `x-forwarded-for` / `x-forwarded-proto` tell the egress who the client was.

use std::net::SocketAddr;

use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
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

/// Where the edge forwards: `egress.url`, with the scheme and authority every request's
/// URI is built from, derived once per config load (`state::Loaded`) rather than per
/// request (formatting and parsing the whole URI per request cost ~1.9k instructions,
/// BENCHMARKS.md "Lane X").
pub(crate) struct EgressTarget {
    url: url::Url,
    /// `None` when the URL has a path or query of its own (a prefix), or is not one `http`
    /// reads: then the client's path and query are joined to it as text and parsed, so a
    /// URL that cannot be one fails each request with the parser's reason.
    origin: Option<(Scheme, Authority)>,
}

impl EgressTarget {
    pub(crate) fn new(url: &url::Url) -> Self {
        let prefixed = url.path() != "/" || url.query().is_some() || url.fragment().is_some();
        let origin = if prefixed {
            None
        } else {
            url.as_str()
                .trim_end_matches('/')
                .parse::<Uri>()
                .ok()
                .map(Uri::into_parts)
                .and_then(|parts| Some((parts.scheme?, parts.authority?)))
        };
        Self {
            url: url.clone(),
            origin,
        }
    }

    /// `egress.url` + the client's path and query. Without a prefix the client's path is
    /// reused as it is; with one they are joined as text.
    fn uri(&self, client: &Uri) -> Result<Uri, http::Error> {
        let path_and_query = client.path_and_query();
        if let Some((scheme, authority)) = &self.origin
            && path_and_query.is_none_or(|p| p.as_str().starts_with('/'))
        {
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(scheme.clone());
            parts.authority = Some(authority.clone());
            parts.path_and_query = Some(match path_and_query {
                Some(p) => p.clone(),
                None => PathAndQuery::from_static("/"),
            });
            return Ok(Uri::from_parts(parts)?);
        }
        let base = self.url.as_str().trim_end_matches('/');
        let path_and_query = path_and_query.map_or("/", PathAndQuery::as_str);
        Ok(format!("{base}{path_and_query}").parse()?)
    }
}

/// Turn the client's request into the egress request, in place of its URI and headers.
pub(crate) fn upstream_request(
    mut req: Request<Inner>,
    egress: &EgressTarget,
    request_id: &HeaderValue,
    client: &ClientInfo,
) -> Result<Request<Inner>, http::Error> {
    *req.uri_mut() = egress.uri(req.uri())?;
    // The egress speaks HTTP/1.1 or h2 as its connection decides, not as the client did.
    *req.version_mut() = http::Version::HTTP_11;

    forwarding_headers(req.headers_mut(), request_id, client);
    Ok(req)
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

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
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if client.https { "https" } else { "http" }),
    );
}

pub(crate) use plano_common::headers::strip_hop_by_hop;

fn append_forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
    let mut ip = IpText::default();
    let ip = ip.of(peer.ip());
    let value = match headers.get(&X_FORWARDED_FOR).map(HeaderValue::as_bytes) {
        Some(prior) if !prior.trim_ascii().is_empty() => {
            let mut v = Vec::with_capacity(prior.len() + 2 + ip.len());
            v.extend_from_slice(prior);
            v.extend_from_slice(b", ");
            v.extend_from_slice(ip);
            HeaderValue::from_bytes(&v)
        }
        _ => HeaderValue::from_bytes(ip),
    };
    if let Ok(v) = value {
        headers.insert(X_FORWARDED_FOR, v);
    }
}

/// An IP address as text without `fmt` (an IPv4 address's `Display` cost ~1.4k
/// instructions per request); IPv6 goes through `Display`.
struct IpText {
    buf: [u8; 45],
    len: usize,
}

impl Default for IpText {
    fn default() -> Self {
        Self {
            buf: [0; 45],
            len: 0,
        }
    }
}

impl IpText {
    fn of(&mut self, ip: std::net::IpAddr) -> &[u8] {
        match ip {
            std::net::IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.push(b'.');
                    }
                    if octet >= 100 {
                        self.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        self.push(b'0' + octet / 10 % 10);
                    }
                    self.push(b'0' + octet % 10);
                }
            }
            std::net::IpAddr::V6(v6) => {
                use std::io::Write;
                let mut w = &mut self.buf[..];
                let _ = write!(w, "{v6}");
                let left = w.len();
                self.len = self.buf.len() - left;
            }
        }
        &self.buf[..self.len]
    }

    fn push(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
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
        let egress = EgressTarget::new(&"http://127.0.0.1:12000/".parse().unwrap());
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

    #[test]
    fn forwarded_for_addresses_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "10.0.0.1",
            "99.100.109.255",
            "192.0.2.7",
            "255.255.255.255",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:192.0.2.128",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut text = IpText::default();
            assert_eq!(text.of(ip), ip.to_string().as_bytes(), "{ip}");
            let mut h = HeaderMap::new();
            append_forwarded_for(&mut h, SocketAddr::new(ip, 1));
            assert_eq!(h["x-forwarded-for"], ip.to_string());
            h.insert("x-forwarded-for", HeaderValue::from_static(" "));
            append_forwarded_for(&mut h, SocketAddr::new(ip, 1));
            assert_eq!(h["x-forwarded-for"], ip.to_string());
        }
    }

    #[test]
    fn egress_uri_with_and_without_a_path_prefix() {
        let client = Uri::from_static("/v1/chat/completions?a=b");
        let cases = [
            (
                "http://127.0.0.1:12000",
                "http://127.0.0.1:12000/v1/chat/completions?a=b",
            ),
            (
                "http://127.0.0.1:12000/",
                "http://127.0.0.1:12000/v1/chat/completions?a=b",
            ),
            (
                "https://egress.internal",
                "https://egress.internal/v1/chat/completions?a=b",
            ),
            ("http://[::1]:9/", "http://[::1]:9/v1/chat/completions?a=b"),
            (
                "http://h:1/base/",
                "http://h:1/base/v1/chat/completions?a=b",
            ),
            ("http://h:1/base", "http://h:1/base/v1/chat/completions?a=b"),
        ];
        for (url, want) in cases {
            let url: url::Url = url.parse().unwrap();
            let egress = EgressTarget::new(&url);
            let prefixed = url.path() != "/" || url.query().is_some();
            assert_eq!(egress.origin.is_none(), prefixed, "{url}");
            let uri = egress.uri(&client).unwrap();
            assert_eq!(uri, want, "{url}");
            assert_eq!(uri.scheme_str(), Some(url.scheme()));
        }
        let egress = EgressTarget::new(&"http://127.0.0.1:12000".parse().unwrap());
        assert_eq!(
            egress.uri(&Uri::from_static("/v1/models")).unwrap(),
            "http://127.0.0.1:12000/v1/models"
        );
        // A client URI without a path (authority form) goes to the egress's root.
        let authority_form = Uri::from_static("example.com:443");
        assert!(authority_form.path_and_query().is_none());
        assert_eq!(
            egress.uri(&authority_form).unwrap(),
            "http://127.0.0.1:12000/"
        );
    }
}
