//! `POST /v1/messages/count_tokens` (Claude Code asks it before long requests). An
//! Anthropic provider is asked natively, once (no retries: it is a hint, not a call the
//! client pays for); for any other provider the input is estimated the way rate limits
//! estimate it (tiktoken for OpenAI models, bytes / 4 otherwise) and the answer says so in
//! `x-plano-estimate: true`.

use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, header};
use serde_json::{Map, Value};

use super::attempt::{Reply, exchange};
use super::parse::{bad, parse, read_body};
use super::{Limits, record, respond, select};
use crate::error::{AttemptError, EgressError};
use crate::providers::api::Api;
use crate::providers::upstream_request;
use crate::state::{AppState, Runtime};

pub async fn serve(state: Arc<AppState>, headers: HeaderMap, body: Body) -> Response {
    let request_id = plano_common::request_id::ensure(&headers);
    let rt = state.runtime();
    let limits = Limits::of(&rt.config);
    let result = async {
        let body = read_body(body, limits.max_body_bytes).await?;
        count(&rt, &headers, &request_id, limits, &body).await
    }
    .await;
    let mut response = match result {
        Ok(r) => r,
        Err(e) => respond::error(&rt.config, Api::Messages, e, &request_id),
    };
    response.headers_mut().insert("x-request-id", request_id);
    response
}

async fn count(
    rt: &Runtime,
    headers: &HeaderMap,
    request_id: &HeaderValue,
    limits: Limits,
    body: &bytes::Bytes,
) -> Result<Response, EgressError> {
    let ask = parse(Api::Messages, body)?;
    let selection = select::select(&rt.config, headers, ask.model.as_deref())?;
    if let Some(header) = selection.hint_missed {
        record::hint_miss(header);
    }
    let Some(candidate) = selection.candidates.first() else {
        return Err(EgressError::ModelNotFound(ask.model.unwrap_or_default()));
    };
    let provider = &rt.config.providers[candidate.provider];
    let mut counted = ask.body.tree().map_err(super::parse::tree_error)?.clone();
    if provider.api == plano_config::ProviderApi::Anthropic {
        counted.insert("model".into(), Value::String(candidate.model_id.clone()));
        counted.remove("max_tokens");
        counted.remove("stream");
        let bytes = serde_json::to_vec(&counted)
            .map(bytes::Bytes::from)
            .map_err(|e| bad("invalid_request", e.to_string()))?;
        let failed = |e: AttemptError| EgressError::AllFailed(vec![(provider.name.clone(), e)]);
        let uri = upstream_request::uri(
            provider,
            &format!("{}/messages/count_tokens", provider.path_prefix),
        )
        .map_err(|e| failed(AttemptError::Unaddressable(e)))?;
        let prepared = rt
            .prepared
            .get(candidate.provider)
            .ok_or_else(|| failed(AttemptError::Unaddressable("not prepared".into())))?;
        let req =
            upstream_request::build_request(provider, prepared, uri, headers, request_id, bytes);
        return match exchange(&rt.client, req, None, limits.timeout).await {
            Ok(Reply::Whole { status, body }) => {
                Ok((status, [(header::CONTENT_TYPE, "application/json")], body).into_response())
            }
            Ok(Reply::Stream(_)) => Err(failed(AttemptError::Protocol("unexpected stream".into()))),
            Err(e) => Err(failed(e)),
        };
    }
    // Only what the model reads: system, messages, tools.
    let mut input = Map::new();
    for key in ["system", "messages", "tools"] {
        if let Some(v) = counted.remove(key) {
            input.insert(key.into(), v);
        }
    }
    let text = serde_json::to_vec(&input).unwrap_or_default();
    let n = crate::ratelimit::tokens::estimate(&candidate.model_id, &text);
    let mut res = axum::Json(serde_json::json!({ "input_tokens": n })).into_response();
    res.headers_mut()
        .insert("x-plano-estimate", HeaderValue::from_static("true"));
    Ok(res)
}
