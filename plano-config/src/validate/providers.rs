//! `model_providers` (or the deprecated `llm_providers`): each provider against the
//! provider table (`crate::providers`), its `base_url` path rules and auth style, and
//! the values that go on the wire as they are (`headers`, `http_host`, `access_key`), so a
//! bad one is refused here instead of failing every request.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use url::Url;

use super::http_url;
use crate::load::{Problems, join, list};
use crate::model::*;
use crate::providers;
use crate::raw::*;

/// A provider's deprecated inline `routing_preferences`: (key path, `model`, items).
pub(super) type InlinePreferences = Vec<(String, String, Vec<RawProviderPreference>)>;

/// Headers the proxy sets or strips itself: a `headers` entry for one would be ignored.
const PROXY_OWNED: &[(&str, &str)] = &[
    ("host", "use `http_host`"),
    ("content-length", "the proxy frames the body"),
    ("transfer-encoding", "the proxy frames the body"),
    ("connection", "hop-by-hop"),
    ("keep-alive", "hop-by-hop"),
    ("proxy-connection", "hop-by-hop"),
    ("te", "hop-by-hop"),
    ("trailer", "hop-by-hop"),
    ("upgrade", "hop-by-hop"),
    ("accept-encoding", "the proxy negotiates encoding"),
    ("x-api-key", "set from `access_key` or `passthrough_auth`"),
    ("api-key", "set from `access_key` or `passthrough_auth`"),
];

pub(super) fn model_providers(
    doc: &Map<String, Value>,
    env: &dyn Fn(&str) -> Option<String>,
    p: &mut Problems,
) -> (Vec<Provider>, InlinePreferences) {
    let (key, value) = match (doc.get("model_providers"), doc.get("llm_providers")) {
        (Some(_), Some(_)) => {
            p.error(
                "llm_providers",
                "`llm_providers` is the deprecated spelling of `model_providers`; use only one",
            );
            return (Vec::new(), Vec::new());
        }
        (Some(v), None) => ("model_providers", v),
        (None, Some(v)) => {
            p.warn(
                "llm_providers",
                "deprecated spelling; rename to `model_providers`",
            );
            ("llm_providers", v)
        }
        (None, None) => return (Vec::new(), Vec::new()),
    };
    let raws = list::<RawProvider>(value, key, p);
    let mut out: Vec<Provider> = Vec::new();
    let mut defaults = Vec::new();
    let mut inline = Vec::new();
    for (i, mut r) in raws.into_iter().enumerate() {
        let path = format!("{key}[{i}]");
        if r.default == Some(true) {
            defaults.push(path.clone());
        }
        if let Some(prefs) = r.routing_preferences.take() {
            inline.push((path.clone(), r.model.clone(), prefs));
        }
        if let Some(pr) = provider(r, &path, env, p) {
            if let Some(prev) = out.iter().position(|o| o.name == pr.name) {
                p.error(
                    join(&path, "name"),
                    format!(
                        "provider name `{}` is already used by {key}[{prev}]",
                        pr.name
                    ),
                );
            }
            out.push(pr);
        }
    }
    if defaults.len() > 1 {
        p.error(
            key,
            format!(
                "more than one provider has `default: true`: {}",
                defaults.join(", ")
            ),
        );
    }
    (out, inline)
}

pub(super) fn provider(
    r: RawProvider,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    p: &mut Problems,
) -> Option<Provider> {
    let Some((prefix, model_id)) = r
        .model
        .split_once('/')
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
    else {
        p.error(
            join(path, "model"),
            format!(
                "`{}` must be `<provider>/<model-id>` (e.g. openai/gpt-4o)",
                r.model
            ),
        );
        return None;
    };
    let defaults = match &r.provider_interface {
        Some(iface) => match providers::interface(iface) {
            Some(d) => Some(d),
            None => {
                p.error(
                    join(path, "provider_interface"),
                    format!("`{iface}` is not a known provider interface"),
                );
                return None;
            }
        },
        None => providers::lookup(prefix),
    };
    let Some(defaults) = defaults else {
        p.error(
            join(path, "model"),
            format!("unknown provider prefix `{prefix}`: set `base_url` and `provider_interface` (e.g. openai)"),
        );
        return None;
    };
    // Anthropic's models on Vertex AI speak the Messages API (rawPredict).
    let vertex_claude = defaults.prefix == "vertex_ai" && model_id.starts_with("claude");
    // Azure OpenAI: `?api-version=…` on `base_url` replaces the table's version.
    let mut api_version: Option<String> = None;
    let (base_url, path_prefix) = match &r.base_url {
        Some(b) => {
            let bpath = join(path, "base_url");
            let url = http_url(b, &bpath, p)?;
            if !url.username().is_empty() || url.password().is_some() {
                p.error(
                    &bpath,
                    "must not carry credentials (set `access_key` instead)",
                );
                return None;
            }
            if defaults.api == ProviderApi::AzureOpenAi
                && url.fragment().is_none()
                && let Some(q) = url.query()
            {
                match azure_api_version(q) {
                    Some(v) => api_version = Some(v),
                    None => {
                        p.error(
                            &bpath,
                            format!(
                                "`{b}`: an Azure OpenAI base_url may carry only `?api-version=<version>`"
                            ),
                        );
                        return None;
                    }
                }
            } else if url.query().is_some() || url.fragment().is_some() {
                p.error(
                    &bpath,
                    format!("`{b}`: a query or fragment would not be sent; remove it"),
                );
                return None;
            }
            let own_path = url.path().trim_end_matches('/').to_string();
            let mut origin = url.clone();
            origin.set_path("");
            origin.set_query(None);
            let prefix_path = if own_path.is_empty() && defaults.prefix == "vertex_ai" {
                match vertex_location(env) {
                    Some((project, location)) => vertex_path(&project, &location, vertex_claude),
                    None => {
                        p.error(
                            &bpath,
                            "a Vertex AI base_url without a path needs GOOGLE_CLOUD_PROJECT \
                             (or the path `/v1/projects/<project>/locations/<location>/endpoints/openapi`)",
                        );
                        return None;
                    }
                }
            } else if own_path.is_empty() {
                defaults.path_prefix.to_string()
            } else {
                own_path
            };
            (origin, prefix_path)
        }
        None => {
            match defaults.base_url.and_then(|u| Url::parse(u).ok()) {
                Some(u) => (u, defaults.path_prefix.to_string()),
                // Bedrock without `base_url`: the runtime endpoint of the region in the env.
                None if let Some(region) = (defaults.api == ProviderApi::Bedrock)
                    .then(|| aws_region_env(env))
                    .flatten() =>
                {
                    match Url::parse(&format!("https://bedrock-runtime.{region}.amazonaws.com")) {
                        Ok(u) => (u, defaults.path_prefix.to_string()),
                        Err(_) => {
                            p.error(
                                join(path, "base_url"),
                                format!("AWS_REGION `{region}` does not make a valid Bedrock URL"),
                            );
                            return None;
                        }
                    }
                }
                None if defaults.prefix == "vertex_ai" => match vertex_location(env) {
                    Some((project, location)) => {
                        let host = match location.as_str() {
                            "global" => "aiplatform.googleapis.com".to_string(),
                            l => format!("{l}-aiplatform.googleapis.com"),
                        };
                        match Url::parse(&format!("https://{host}")) {
                            Ok(u) => (u, vertex_path(&project, &location, vertex_claude)),
                            Err(_) => {
                                p.error(
                                join(path, "base_url"),
                                format!("GOOGLE_CLOUD_LOCATION `{location}` does not make a valid URL"),
                            );
                                return None;
                            }
                        }
                    }
                    None => {
                        p.error(
                        join(path, "base_url"),
                        "Vertex AI needs GOOGLE_CLOUD_PROJECT (and optionally GOOGLE_CLOUD_LOCATION, \
                         default us-central1), or a base_url with the full path",
                    );
                        return None;
                    }
                },
                None => {
                    p.error(
                        join(path, "base_url"),
                        format!("required for `{prefix}` providers (there is no public default)"),
                    );
                    return None;
                }
            }
        }
    };
    let access_key = r.access_key.filter(|k| !k.is_empty()).map(Secret::new);
    if let Some(k) = &access_key
        && http::HeaderValue::from_str(k.expose()).is_err()
    {
        // Never echo the key itself.
        p.error(
            join(path, "access_key"),
            "is not a valid HTTP header value (control characters or non-ASCII)",
        );
    }
    let upstream = format!(
        "{}{path_prefix}/chat/completions",
        base_url.as_str().trim_end_matches('/')
    );
    if upstream.parse::<http::Uri>().is_err() {
        p.error(
            join(path, "base_url"),
            format!("`{upstream}` is not a valid request URI"),
        );
    }
    if let Some(h) = &r.http_host {
        check_http_host(h, &join(path, "http_host"), p);
    }
    let headers = headers(r.headers.as_ref(), defaults, env, path, p);
    let passthrough_auth = r
        .passthrough_auth
        .unwrap_or(defaults.passthrough_by_default && access_key.is_none());
    let mut auth = match (defaults.auth, &access_key) {
        (AuthStyle::None | AuthStyle::GoogleOAuth, Some(_)) => AuthStyle::Bearer,
        (style, _) => style,
    };
    let mut region = None;
    if defaults.api == ProviderApi::Bedrock && access_key.is_none() && !passthrough_auth {
        // No Bedrock API key: SigV4 with the AWS credential chain, in the region of the
        // endpoint (or the environment's, for a private endpoint / proxy).
        match bedrock_region(&base_url).or_else(|| aws_region_env(env)) {
            Some(r) => {
                auth = AuthStyle::AwsSigV4;
                region = Some(r);
            }
            None => {
                p.error(
                    join(path, "base_url"),
                    "Bedrock without `access_key` signs with AWS SigV4 and needs a region: use \
                     `https://bedrock-runtime.<region>.amazonaws.com` or set AWS_REGION",
                );
                return None;
            }
        }
    }
    let wildcard = model_id == "*";
    let refuse_hosted_tools = match r.hosted_tools.as_deref() {
        None | Some("drop") => false,
        Some("refuse") => true,
        Some(other) => {
            p.error(
                join(path, "hosted_tools"),
                format!("`{other}` must be `drop` or `refuse`"),
            );
            return None;
        }
    };
    Some(Provider {
        name: r.name.unwrap_or_else(|| r.model.clone()),
        prefix: prefix.to_string(),
        model_id: model_id.to_string(),
        model: r.model.clone(),
        wildcard,
        api: if vertex_claude {
            ProviderApi::Anthropic
        } else {
            defaults.api
        },
        base_url,
        path_prefix,
        query: match api_version {
            Some(v) => Some(format!("api-version={v}")),
            None => defaults.query.map(str::to_string),
        },
        http_host: r.http_host,
        access_key,
        auth,
        region,
        passthrough_auth,
        headers,
        default: r.default.unwrap_or(false),
        refuse_hosted_tools,
    })
}

/// Vertex AI's project and location: `GOOGLE_CLOUD_PROJECT`, `GOOGLE_CLOUD_LOCATION`
/// (default `us-central1`).
fn vertex_location(env: &dyn Fn(&str) -> Option<String>) -> Option<(String, String)> {
    let project = env("GOOGLE_CLOUD_PROJECT").filter(|v| !v.trim().is_empty())?;
    let location = env("GOOGLE_CLOUD_LOCATION")
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "us-central1".to_string());
    Some((project.trim().to_string(), location.trim().to_string()))
}

/// The OpenAI-compatible endpoint's path prefix on Vertex AI.
/// Path prefix on Vertex AI: the OpenAI-compatible endpoint for Gemini, the location
/// itself for Anthropic's models (`…/publishers/anthropic/models/<id>:rawPredict`).
fn vertex_path(project: &str, location: &str, claude: bool) -> String {
    if claude {
        format!("/v1/projects/{project}/locations/{location}")
    } else {
        format!("/v1/projects/{project}/locations/{location}/endpoints/openapi")
    }
}

/// The version of a query that is exactly `api-version=<v>`, `<v>` made of letters,
/// digits and `-` / `.` (e.g. `2025-01-01-preview`).
fn azure_api_version(query: &str) -> Option<String> {
    let v = query.strip_prefix("api-version=")?;
    (!v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
    .then(|| v.to_string())
}

/// `AWS_REGION`, else `AWS_DEFAULT_REGION` (the AWS CLI and SDKs' order), when set.
fn aws_region_env(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .find_map(|k| env(k).filter(|v| !v.trim().is_empty()))
        .map(|v| v.trim().to_string())
}

/// The region of a Bedrock runtime endpoint: `bedrock-runtime[-fips].<region>.amazonaws.com`
/// (also `.amazonaws.com.cn`).
pub fn bedrock_region(base_url: &Url) -> Option<String> {
    let host = base_url.host_str()?;
    let rest = host
        .strip_prefix("bedrock-runtime-fips.")
        .or_else(|| host.strip_prefix("bedrock-runtime."))?;
    let region = rest
        .strip_suffix(".amazonaws.com")
        .or_else(|| rest.strip_suffix(".amazonaws.com.cn"))?;
    (!region.is_empty() && !region.contains('.')).then(|| region.to_string())
}

/// The table's default headers (ChatGPT's, plus `ChatGPT-Account-Id` from
/// `CHATGPT_ACCOUNT_ID` when set), then the provider's own `headers`, which replace a
/// default of the same name. Every name and value must be valid HTTP.
fn headers(
    configured: Option<&BTreeMap<String, String>>,
    defaults: &providers::ProviderDefaults,
    env: &dyn Fn(&str) -> Option<String>,
    path: &str,
    p: &mut Problems,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = defaults
        .headers
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    if defaults.prefix == "chatgpt"
        && let Some(id) = env(providers::CHATGPT_ACCOUNT_ENV).filter(|v| !v.is_empty())
    {
        out.push(("ChatGPT-Account-Id".into(), id));
    }
    for (k, v) in configured.into_iter().flatten() {
        let hpath = format!("{}.{k}", join(path, "headers"));
        let Ok(name) = http::HeaderName::from_bytes(k.as_bytes()) else {
            p.error(&hpath, format!("`{k}` is not a valid HTTP header name"));
            continue;
        };
        if let Some((_, why)) = PROXY_OWNED.iter().find(|(n, _)| *n == name.as_str()) {
            p.error(&hpath, format!("cannot be set here ({why})"));
            continue;
        }
        if http::HeaderValue::from_str(v).is_err() {
            p.error(
                &hpath,
                "the value is not a valid HTTP header value (control characters or non-ASCII)",
            );
            continue;
        }
        out.retain(|(d, _)| !d.eq_ignore_ascii_case(k));
        out.push((k.clone(), v.clone()));
    }
    out
}

/// `http_host` becomes the Host header: it must be a valid `host[:port]`.
pub(super) fn check_http_host(h: &str, path: &str, p: &mut Problems) {
    let ok = h
        .parse::<http::uri::Authority>()
        .is_ok_and(|a| !a.as_str().contains('@'))
        && http::HeaderValue::from_str(h).is_ok();
    if !ok {
        p.error(path, format!("`{h}` is not a valid host[:port]"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(providers: &str, env: &[(&str, &str)]) -> Result<crate::Config, String> {
        let yaml = format!(
            "version: v0.3.0\nlisteners:\n  - type: model\n    name: m\n    port: 12000\nmodel_providers:\n{providers}"
        );
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        crate::load_str(&yaml, None, &|k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn bedrock_without_key_signs_in_the_endpoint_region() {
        let c = load(
            "  - model: amazon_bedrock/anthropic.claude\n    base_url: https://bedrock-runtime.eu-west-1.amazonaws.com\n",
            &[("AWS_REGION", "us-east-1")],
        )
        .unwrap();
        let p = &c.providers[0];
        assert_eq!(p.auth, AuthStyle::AwsSigV4);
        assert_eq!(p.region.as_deref(), Some("eu-west-1"));
    }

    #[test]
    fn bedrock_without_base_url_uses_aws_region() {
        let c = load(
            "  - model: amazon_bedrock/anthropic.claude\n",
            &[("AWS_DEFAULT_REGION", "ap-south-1")],
        )
        .unwrap();
        let p = &c.providers[0];
        assert_eq!(
            p.base_url.as_str(),
            "https://bedrock-runtime.ap-south-1.amazonaws.com/"
        );
        assert_eq!(p.region.as_deref(), Some("ap-south-1"));
        // AWS_REGION wins over AWS_DEFAULT_REGION, as in the AWS CLI and SDKs.
        let c = load(
            "  - model: amazon_bedrock/m\n    base_url: http://127.0.0.1:9000\n",
            &[
                ("AWS_DEFAULT_REGION", "ap-south-1"),
                ("AWS_REGION", "us-west-2"),
            ],
        )
        .unwrap();
        assert_eq!(c.providers[0].region.as_deref(), Some("us-west-2"));
    }

    #[test]
    fn bedrock_needs_a_region_unless_keyed() {
        let err = load("  - model: amazon_bedrock/m\n", &[]).unwrap_err();
        assert!(err.contains("base_url"), "{err}");
        let err = load(
            "  - model: amazon_bedrock/m\n    base_url: http://127.0.0.1:9000\n",
            &[],
        )
        .unwrap_err();
        assert!(err.contains("AWS_REGION"), "{err}");
        // A Bedrock API key (bearer) needs no region.
        let c = load(
            "  - model: amazon_bedrock/m\n    base_url: http://127.0.0.1:9000\n    access_key: k\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.providers[0].auth, AuthStyle::Bearer);
        assert_eq!(c.providers[0].region, None);
    }

    #[test]
    fn azure_api_version_from_base_url() {
        let c = load(
            "  - model: azure_openai/gpt-4o\n    base_url: https://x.openai.azure.com?api-version=2025-01-01-preview\n    access_key: k\n",
            &[],
        )
        .unwrap();
        let p = &c.providers[0];
        assert_eq!(p.query.as_deref(), Some("api-version=2025-01-01-preview"));
        assert_eq!(p.base_url.query(), None);
        let c = load(
            "  - model: azure_openai/gpt-4o\n    base_url: https://x.openai.azure.com\n    access_key: k\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            c.providers[0].query.as_deref(),
            Some("api-version=2024-10-21")
        );
        for bad in ["?api-version=", "?foo=1", "?api-version=1&x=2"] {
            let err = load(
                &format!("  - model: azure_openai/gpt-4o\n    base_url: https://x.openai.azure.com{bad}\n    access_key: k\n"),
                &[],
            )
            .unwrap_err();
            assert!(err.contains("api-version"), "{bad}: {err}");
        }
        // Elsewhere a query is still refused.
        let err = load(
            "  - model: openai/gpt-4o\n    base_url: https://x.example.com?api-version=1\n    access_key: k\n",
            &[],
        )
        .unwrap_err();
        assert!(err.contains("query"), "{err}");
    }

    #[test]
    fn vertex_endpoint_from_project_and_location() {
        let env = [
            ("GOOGLE_CLOUD_PROJECT", "p1"),
            ("GOOGLE_CLOUD_LOCATION", "us-east5"),
        ];
        let c = load("  - model: vertex_ai/gemini-2.5-pro\n", &env).unwrap();
        let p = &c.providers[0];
        assert_eq!(
            p.base_url.as_str(),
            "https://us-east5-aiplatform.googleapis.com/"
        );
        assert_eq!(
            p.chat_path(),
            "/v1/projects/p1/locations/us-east5/endpoints/openapi/chat/completions"
        );
        assert_eq!(p.auth, AuthStyle::GoogleOAuth);
        let c = load(
            "  - model: vertex_ai/gemini-2.5-pro\n",
            &[
                ("GOOGLE_CLOUD_PROJECT", "p1"),
                ("GOOGLE_CLOUD_LOCATION", "global"),
            ],
        )
        .unwrap();
        assert_eq!(
            c.providers[0].base_url.as_str(),
            "https://aiplatform.googleapis.com/"
        );
        // Default location; an access_key is a static bearer token.
        let c = load(
            "  - model: vertex_ai/gemini-2.5-pro\n    access_key: ya29.x\n",
            &[("GOOGLE_CLOUD_PROJECT", "p1")],
        )
        .unwrap();
        assert!(
            c.providers[0]
                .chat_path()
                .contains("/locations/us-central1/")
        );
        assert_eq!(c.providers[0].auth, AuthStyle::Bearer);
        // A base_url with a path is used as is; without project nor path it is an error.
        let c = load(
            "  - model: vertex_ai/gemini\n    base_url: https://proxy.example.com/v1/projects/x/locations/y/endpoints/openapi\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            c.providers[0].chat_path(),
            "/v1/projects/x/locations/y/endpoints/openapi/chat/completions"
        );
        // Anthropic's models on Vertex speak Messages under the location itself.
        let c = load("  - model: vertex_ai/claude-sonnet-4@20250514\n", &env).unwrap();
        assert_eq!(c.providers[0].api, ProviderApi::Anthropic);
        assert_eq!(
            c.providers[0].path_prefix,
            "/v1/projects/p1/locations/us-east5"
        );
        assert_eq!(c.providers[0].auth, AuthStyle::GoogleOAuth);
        let err = load("  - model: vertex_ai/gemini\n", &[]).unwrap_err();
        assert!(err.contains("GOOGLE_CLOUD_PROJECT"), "{err}");
    }

    #[test]
    fn bedrock_region_from_endpoint_host() {
        let r = |u: &str| bedrock_region(&Url::parse(u).unwrap());
        assert_eq!(
            r("https://bedrock-runtime.us-east-1.amazonaws.com").as_deref(),
            Some("us-east-1")
        );
        assert_eq!(
            r("https://bedrock-runtime-fips.us-gov-west-1.amazonaws.com").as_deref(),
            Some("us-gov-west-1")
        );
        assert_eq!(
            r("https://bedrock-runtime.cn-north-1.amazonaws.com.cn").as_deref(),
            Some("cn-north-1")
        );
        assert_eq!(r("https://bedrock.example.com"), None);
        assert_eq!(r("https://bedrock-runtime.amazonaws.com"), None);
    }
}
