//! Calling a prompt target's endpoint with validated arguments.
//!
//! URL: the endpoint's `protocol://endpoint` + the target's `path`, each `{name}` replaced by
//! that argument (percent-encoded; it is then not sent again). GET: the other arguments as
//! the query string (a list as the key repeated, an object as JSON text). POST: the other
//! arguments as a JSON object. Headers: `http_headers`, `x-request-id`, trace context, and
//! `Host` from `http_host`; never the client's credentials. Bounded by the endpoint's
//! `connect_timeout` and `timeout` (and what is left of the listener's).

use bytes::Bytes;
use http::Method;
use http::header::{self, HeaderName, HeaderValue};
use plano_config::{HttpMethod, PromptTarget};
use serde_json::{Map, Value};

use crate::calls;
use crate::error::CallError;
use crate::error::{EdgeError, Failure};
use crate::route::RouteCtx;

/// The endpoint's answer text (see `answer_text`), after a 2xx.
pub(crate) async fn call(
    ctx: &RouteCtx<'_>,
    target: &PromptTarget,
    mut args: Map<String, Value>,
) -> Result<String, EdgeError> {
    let ep = &target.endpoint;
    let Some(endpoint) = ctx.config.endpoints.get(&ep.name) else {
        return Err(misconfigured(
            target,
            format!("endpoint `{}` is not in `endpoints`", ep.name),
        ));
    };
    let path = substitute(&ep.path, &mut args).map_err(|name| {
        misconfigured(
            target,
            format!("its path names `{{{name}}}`, which has no value"),
        )
    })?;
    let mut uri = format!(
        "{}{}",
        endpoint.base_url.as_str().trim_end_matches('/'),
        with_slash(&path)
    );
    let mut headers = calls::call_headers(ctx.headers, ctx.request_id, false);
    for (k, v) in &ep.http_headers {
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            (Ok(k), Ok(v)) => {
                headers.insert(k, v);
            }
            _ => {
                tracing::warn!(target = %target.name, header = %k, "http_headers entry is not a valid header; not sent")
            }
        }
    }
    if let Some(host) = endpoint
        .http_host
        .as_deref()
        .and_then(|h| HeaderValue::from_str(h).ok())
    {
        headers.insert(header::HOST, host);
    }
    let (method, body) = match ep.method {
        HttpMethod::Get => {
            headers.remove(header::CONTENT_TYPE);
            let query = query_string(&args);
            if !query.is_empty() {
                uri.push(if uri.contains('?') { '&' } else { '?' });
                uri.push_str(&query);
            }
            (Method::GET, Bytes::new())
        }
        HttpMethod::Post => (Method::POST, Bytes::from(Value::Object(args).to_string())),
    };
    let client = ctx
        .edge
        .endpoint_clients
        .get(
            &plano_common::http_client::HttpClientBuilder::new(endpoint.connect_timeout)
                .ca_path(ctx.config.overrides.upstream_tls_ca_path.clone()),
        )
        .map_err(|e| misconfigured(target, format!("client setup failed: {e}")))?;
    let limit = endpoint.timeout.min(ctx.remaining());
    let started = tokio::time::Instant::now();
    let req = calls::build(method, &uri, headers, body).map_err(|e| call_error(target, &e))?;
    let res = calls::send(&client, req, limit, "endpoint", &ep.name)
        .await
        .map_err(|e| call_error(target, &e))?;
    let status = res.status();
    let body = calls::read_body(res, limit.saturating_sub(started.elapsed()))
        .await
        .map_err(|e| call_error(target, &e))?;
    if !status.is_success() {
        tracing::warn!(target = %target.name, endpoint = %ep.name, %status, "prompt target endpoint failed");
        return Err(endpoint_error(target, Failure::status(status, &body)));
    }
    Ok(super::answer_text(&body))
}

fn with_slash(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}

fn misconfigured(target: &PromptTarget, why: String) -> EdgeError {
    EdgeError::PromptTargetMisconfigured {
        target: target.name.clone(),
        why,
    }
}

/// The endpoint's failure; its path is the configured template (arguments are the user's
/// and stay out of error bodies).
fn endpoint_error(target: &PromptTarget, failure: Failure) -> EdgeError {
    EdgeError::Endpoint {
        target: target.name.clone(),
        endpoint: target.endpoint.name.clone(),
        path: target.endpoint.path.clone(),
        failure,
    }
}

fn call_error(target: &PromptTarget, e: &CallError) -> EdgeError {
    endpoint_error(target, Failure::from(e))
}

/// Replace each `{name}` in `path` with the percent-encoded argument, removing it from
/// `args`; the name of a placeholder without a value is the error.
pub(crate) fn substitute(path: &str, args: &mut Map<String, Value>) -> Result<String, String> {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}').map(|c| open + c) else {
            break;
        };
        out.push_str(&rest[..open]);
        let name = &rest[open + 1..close];
        let value = args.remove(name).ok_or_else(|| name.to_string())?;
        out.push_str(&encode(&scalar_text(&value)));
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Percent-encode everything but RFC 3986 unreserved characters (safe in a path segment).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub(crate) fn query_string(args: &Map<String, Value>) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in args {
        match v {
            Value::Array(items) => {
                for item in items {
                    q.append_pair(k, &scalar_text(item));
                }
            }
            other => {
                q.append_pair(k, &scalar_text(other));
            }
        }
    }
    q.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn path_parameters_are_encoded_and_consumed() {
        let mut args = json!({"city": "San José/CA", "id": 7, "days": 2})
            .as_object()
            .cloned()
            .unwrap();
        let p = substitute("/weather/{city}/{id}", &mut args).unwrap();
        assert_eq!(p, "/weather/San%20Jos%C3%A9%2FCA/7");
        assert_eq!(Value::Object(args), json!({"days": 2}));
        let mut none = Map::new();
        assert_eq!(substitute("/a/{x}", &mut none), Err("x".into()));
        assert_eq!(
            substitute("/a/{unclosed", &mut none).unwrap(),
            "/a/{unclosed"
        );
    }

    #[test]
    fn query_strings() {
        let args = json!({"q": "a b&c", "n": 3, "tags": ["x", "y"], "f": {"k": 1}})
            .as_object()
            .cloned()
            .unwrap();
        assert_eq!(
            query_string(&args),
            "f=%7B%22k%22%3A1%7D&n=3&q=a+b%26c&tags=x&tags=y"
        );
    }
}
