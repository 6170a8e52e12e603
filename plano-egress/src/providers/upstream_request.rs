//! The upstream HTTP request for any provider: the URL from the provider table and
//! `base_url` rules, the provider's auth style, `http_host`, extra `headers`, and the client
//! headers we propagate or strip. What is fixed by the config is prepared once per runtime
//! ([`Prepared`], built when a config is loaded or reloaded), so an attempt only copies it.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use std::sync::Arc;

use plano_common::request_id::X_REQUEST_ID;
use plano_config::{AuthStyle, Provider};

use super::aws;

/// Headers never forwarded from the client besides the hop-by-hop ones: framing, and
/// credentials (the provider's own key is added instead, unless `passthrough_auth`).
const STRIPPED: &[&str] = &[
    "host",
    "content-length",
    "authorization",
    "x-api-key",
    "api-key",
    "accept-encoding",
];

/// Client headers worth passing upstream as they are (besides `x-request-id`, which is
/// always ours by then). Names, not strings: a lookup by `&str` parses the name each time.
const PROPAGATED: [HeaderName; 7] = [
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("tracestate"),
    header::USER_AGENT,
    HeaderName::from_static("openai-organization"),
    HeaderName::from_static("openai-project"),
    HeaderName::from_static("anthropic-beta"),
    ANTHROPIC_VERSION_HEADER,
];

const ANTHROPIC_VERSION_HEADER: HeaderName = HeaderName::from_static("anthropic-version");

pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// A provider's headers as its config fixes them, parsed once.
#[derive(Debug, Clone)]
pub struct Prepared {
    host: Option<HeaderValue>,
    /// The provider's own key in its auth style (absent with `passthrough_auth`).
    auth: Option<(HeaderName, HeaderValue)>,
    anthropic_version: bool,
    /// Bedrock without a key: the SigV4 signer and its cached credentials, shared by
    /// every request of this runtime.
    sigv4: Option<Arc<aws::SigV4>>,
    /// Vertex AI without a key: Google access tokens, cached, shared likewise.
    google: Option<Arc<super::google::GoogleAuth>>,
    /// `headers`, in file order (stripped names other than `authorization` dropped).
    extra: Vec<(HeaderName, HeaderValue)>,
    /// The URI of the provider's chat path (chat and Messages requests to most providers).
    chat_uri: Uri,
}

impl Prepared {
    /// Parse the provider's `http_host`, key and `headers`, and check that its base URL
    /// makes a valid request URI. An error names the bad key (validation refuses these
    /// before they get here; this is the runtime's own guard).
    pub fn new(provider: &Provider) -> Result<Self, String> {
        let host = provider
            .http_host
            .as_deref()
            .map(|h| {
                HeaderValue::from_str(h)
                    .map_err(|_| format!("http_host `{h}` is not a valid Host header"))
            })
            .transpose()?;
        let auth = match (&provider.access_key, provider.passthrough_auth) {
            (Some(_), false) if provider.auth == AuthStyle::AwsSigV4 => None,
            (Some(key), false) => {
                let mut value = match provider.auth {
                    AuthStyle::Bearer => HeaderValue::from_str(&format!("Bearer {}", key.expose())),
                    AuthStyle::AnthropicKey
                    | AuthStyle::AzureApiKey
                    | AuthStyle::None
                    | AuthStyle::AwsSigV4
                    | AuthStyle::GoogleOAuth => HeaderValue::from_str(key.expose()),
                }
                .map_err(|_| "access_key is not a valid header value".to_string())?;
                value.set_sensitive(true);
                let name = match provider.auth {
                    AuthStyle::Bearer
                    | AuthStyle::None
                    | AuthStyle::AwsSigV4
                    | AuthStyle::GoogleOAuth => header::AUTHORIZATION,
                    AuthStyle::AnthropicKey => HeaderName::from_static("x-api-key"),
                    AuthStyle::AzureApiKey => HeaderName::from_static("api-key"),
                };
                Some((name, value))
            }
            _ => None,
        };
        let mut extra = Vec::with_capacity(provider.headers.len());
        for (k, v) in &provider.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("headers: `{k}` is not a valid header name"))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| format!("headers: the value of `{k}` is not a valid header value"))?;
            if is_stripped(name.as_str()) && name != header::AUTHORIZATION {
                continue;
            }
            extra.push((name, value));
        }
        // ChatGPT's Codex backend groups a client's requests by `session_id`; Plano's
        // config generator sets a random one per generated config, we set one per loaded
        // config (unless `headers` names its own).
        if provider.prefix == "chatgpt" && !extra.iter().any(|(n, _)| n == "session_id") {
            extra.push((
                HeaderName::from_static("session_id"),
                HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                    .map_err(|_| "session_id is not a valid header value".to_string())?,
            ));
        }
        let chat_uri = uri(provider, &provider.chat_path())?;
        let sigv4 = match (provider.auth, &provider.region) {
            (AuthStyle::AwsSigV4, Some(region)) if !provider.passthrough_auth => {
                Some(aws::SigV4::new(region, aws::BEDROCK_SERVICE))
            }
            (AuthStyle::AwsSigV4, None) => {
                return Err("AWS SigV4 auth needs a region".to_string());
            }
            _ => None,
        };
        let google = match provider.auth {
            AuthStyle::GoogleOAuth if !provider.passthrough_auth => {
                Some(super::google::GoogleAuth::from_env()?)
            }
            _ => None,
        };
        Ok(Prepared {
            host,
            auth,
            sigv4,
            google,
            anthropic_version: provider.auth == AuthStyle::AnthropicKey,
            extra,
            chat_uri,
        })
    }

    /// The URI of the provider's chat path, built once.
    pub fn chat_uri(&self) -> &Uri {
        &self.chat_uri
    }
}

/// The full upstream URI for `path` (e.g. `chat_path()`) on this provider.
pub fn uri(provider: &Provider, path: &str) -> Result<Uri, String> {
    let base = provider.base_url.as_str().trim_end_matches('/');
    let mut s = format!("{base}{path}");
    if let Some(q) = &provider.query {
        s.push('?');
        s.push_str(q);
    }
    s.parse::<Uri>()
        .map_err(|e| format!("bad upstream URL `{s}`: {e}"))
}

/// The request for one attempt. `client_headers` are the client's request headers.
pub fn build_request(
    provider: &Provider,
    prepared: &Prepared,
    uri: Uri,
    client_headers: &HeaderMap,
    request_id: &HeaderValue,
    body: bytes::Bytes,
) -> Request<http_body_util::Full<bytes::Bytes>> {
    let mut headers = HeaderMap::with_capacity(16);
    // One pass over the client's headers (a handful) instead of a hashed lookup per
    // propagated name. A name given twice passes its first value, as `get` would: the
    // map yields a name's values one after another.
    let mut previous: Option<&HeaderName> = None;
    for (name, value) in client_headers {
        if previous == Some(name) {
            continue;
        }
        previous = Some(name);
        if PROPAGATED.contains(name) {
            headers.insert(name.clone(), value.clone());
        }
    }
    headers.insert(X_REQUEST_ID, request_id.clone());
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_static("application/json, text/event-stream"),
    );
    if let Some(host) = &prepared.host {
        headers.insert(header::HOST, host.clone());
    }
    if provider.passthrough_auth {
        for name in ["authorization", "x-api-key"] {
            if let Some(v) = client_headers.get(name) {
                headers.insert(HeaderName::from_static(name), v.clone());
            }
        }
    } else if let Some((name, value)) = &prepared.auth {
        headers.insert(name.clone(), value.clone());
    }
    if prepared.anthropic_version && !headers.contains_key(&ANTHROPIC_VERSION_HEADER) {
        headers.insert(
            ANTHROPIC_VERSION_HEADER,
            HeaderValue::from_static(ANTHROPIC_VERSION),
        );
    }
    for (name, value) in &prepared.extra {
        headers.insert(name.clone(), value.clone());
    }
    let mut req = Request::new(http_body_util::Full::new(body));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    req
}

/// The last step before sending: sign the request when the provider's auth is computed
/// per request (AWS SigV4), after every other header is set. Credentials come from the
/// signer's cache; an error means none could be had (the attempt fails without sending).
pub async fn authorize(
    prepared: &Prepared,
    req: &mut Request<http_body_util::Full<bytes::Bytes>>,
    body: &[u8],
) -> Result<(), String> {
    // Boxed: the token and credential fetches are large futures that would otherwise
    // make every attempt's future (and the request's, which axum boxes) that much larger.
    if let Some(google) = &prepared.google {
        let value = Box::pin(google.authorization()).await?;
        req.headers_mut().insert(header::AUTHORIZATION, value);
    }
    match &prepared.sigv4 {
        Some(signer) => Box::pin(signer.sign_request(req, body)).await,
        None => Ok(()),
    }
}

/// Whether a client header may ever be forwarded (used by tests and the edge's rules).
pub fn is_stripped(name: &str) -> bool {
    STRIPPED.contains(&name) || plano_common::headers::is_hop_by_hop(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use plano_config::{ProviderApi, Secret};

    fn provider(auth: AuthStyle) -> Provider {
        Provider {
            name: "p".into(),
            model: "openai/gpt".into(),
            prefix: "openai".into(),
            model_id: "gpt".into(),
            wildcard: false,
            api: ProviderApi::OpenAi,
            base_url: url::Url::parse("https://api.example.com").unwrap(),
            path_prefix: "/v1".into(),
            query: None,
            http_host: Some("llm.example.com".into()),
            access_key: Some(Secret::new("sk-provider")),
            auth,
            region: None,
            passthrough_auth: false,
            headers: vec![("x-team".into(), "a".into())],
            default: false,
            refuse_hosted_tools: false,
        }
    }

    #[test]
    fn provider_key_replaces_client_credentials() {
        let p = provider(AuthStyle::Bearer);
        let mut client = HeaderMap::new();
        client.insert(
            "authorization",
            HeaderValue::from_static("Bearer client-key"),
        );
        client.insert("traceparent", HeaderValue::from_static("00-abc-def-01"));
        client.insert("x-private", HeaderValue::from_static("mine"));
        client.append("traceparent", HeaderValue::from_static("00-second-01"));
        client.insert("user-agent", HeaderValue::from_static("sdk/1"));
        client.insert("connection", HeaderValue::from_static("close"));
        let uri = uri(&p, &p.chat_path()).unwrap();
        assert_eq!(
            uri.to_string(),
            "https://api.example.com/v1/chat/completions"
        );
        let req = build_request(
            &p,
            &Prepared::new(&p).unwrap(),
            uri,
            &client,
            &HeaderValue::from_static("rid"),
            bytes::Bytes::new(),
        );
        let h = req.headers();
        assert_eq!(h["authorization"], "Bearer sk-provider");
        assert!(h["authorization"].is_sensitive());
        assert_eq!(h["traceparent"], "00-abc-def-01");
        assert_eq!(h.get_all("traceparent").iter().count(), 1);
        assert_eq!(h["user-agent"], "sdk/1");
        assert!(!h.contains_key("x-private"));
        assert_eq!(h["host"], "llm.example.com");
        assert_eq!(h["x-team"], "a");
        assert_eq!(h["x-request-id"], "rid");
        assert!(!h.contains_key("connection"));
    }

    #[test]
    fn anthropic_and_azure_styles() {
        let p = provider(AuthStyle::AnthropicKey);
        let u = uri(&p, "/v1/messages").unwrap();
        let req = build_request(
            &p,
            &Prepared::new(&p).unwrap(),
            u,
            &HeaderMap::new(),
            &HeaderValue::from_static("r"),
            bytes::Bytes::new(),
        );
        assert_eq!(req.headers()["x-api-key"], "sk-provider");
        assert_eq!(req.headers()["anthropic-version"], ANTHROPIC_VERSION);
        assert!(!req.headers().contains_key("authorization"));

        let mut p = provider(AuthStyle::AzureApiKey);
        p.query = Some("api-version=2024-10-21".into());
        let u = uri(&p, "/openai/deployments/d/chat/completions").unwrap();
        assert_eq!(u.query(), Some("api-version=2024-10-21"));
        let req = build_request(
            &p,
            &Prepared::new(&p).unwrap(),
            u,
            &HeaderMap::new(),
            &HeaderValue::from_static("r"),
            bytes::Bytes::new(),
        );
        assert_eq!(req.headers()["api-key"], "sk-provider");
    }

    #[test]
    fn passthrough_forwards_client_credentials_only() {
        let mut p = provider(AuthStyle::Bearer);
        p.passthrough_auth = true;
        let mut client = HeaderMap::new();
        client.insert(
            "authorization",
            HeaderValue::from_static("Bearer virtual-key"),
        );
        let u = uri(&p, "/v1/chat/completions").unwrap();
        let req = build_request(
            &p,
            &Prepared::new(&p).unwrap(),
            u,
            &client,
            &HeaderValue::from_static("r"),
            bytes::Bytes::new(),
        );
        assert_eq!(req.headers()["authorization"], "Bearer virtual-key");
    }
}

#[cfg(test)]
mod prepared_tests {
    use super::*;
    use plano_config::{ProviderApi, Secret};

    #[test]
    fn chatgpt_gets_a_session_id_unless_configured() {
        let mut p = Provider {
            name: "c".into(),
            model: "chatgpt/gpt-5".into(),
            prefix: "chatgpt".into(),
            model_id: "gpt-5".into(),
            wildcard: false,
            api: ProviderApi::OpenAi,
            base_url: url::Url::parse("https://chatgpt.com").unwrap(),
            path_prefix: "/backend-api/codex".into(),
            query: None,
            http_host: None,
            access_key: None,
            auth: AuthStyle::Bearer,
            region: None,
            passthrough_auth: true,
            headers: vec![],
            default: false,
            refuse_hosted_tools: false,
        };
        let session = |p: &Provider| {
            let prepared = Prepared::new(p).unwrap();
            let req = build_request(
                p,
                &prepared,
                uri(p, "/backend-api/codex/responses").unwrap(),
                &HeaderMap::new(),
                &HeaderValue::from_static("r"),
                bytes::Bytes::new(),
            );
            req.headers()
                .get("session_id")
                .map(|v| v.to_str().unwrap().to_string())
        };
        let id = session(&p).unwrap();
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        p.headers = vec![("session_id".into(), "mine".into())];
        assert_eq!(session(&p).as_deref(), Some("mine"));
        p.prefix = "openai".into();
        p.headers.clear();
        assert_eq!(session(&p), None);
    }

    #[test]
    fn bad_configured_headers_are_refused_once_not_per_request() {
        let mut p = Provider {
            name: "p".into(),
            model: "openai/gpt".into(),
            prefix: "openai".into(),
            model_id: "gpt".into(),
            wildcard: false,
            api: ProviderApi::OpenAi,
            base_url: url::Url::parse("https://api.example.com").unwrap(),
            path_prefix: "/v1".into(),
            query: None,
            http_host: None,
            access_key: Some(Secret::new("k")),
            auth: AuthStyle::Bearer,
            region: None,
            passthrough_auth: false,
            headers: vec![("bad name".into(), "a".into())],
            default: false,
            refuse_hosted_tools: false,
        };
        assert!(Prepared::new(&p).unwrap_err().contains("bad name"));
        p.headers = vec![("x-ok".into(), "line\nbreak".into())];
        assert!(Prepared::new(&p).unwrap_err().contains("x-ok"));
        p.headers.clear();
        p.http_host = Some("bad\nhost".into());
        assert!(Prepared::new(&p).unwrap_err().contains("http_host"));
        p.http_host = None;
        p.access_key = Some(Secret::new("bad\nkey"));
        let err = Prepared::new(&p).unwrap_err();
        assert!(
            err.contains("access_key") && !err.contains("bad\nkey"),
            "{err}"
        );
    }
}
