//! The model listener's filter chains (`docs/filters.md`): `input_filters` see the
//! client's body before it is parsed, `output_filters` the successful answer (whole or
//! event by event) before the client does.

use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body_util::BodyExt;
use plano_common::filters::FilterCtx;
use plano_common::filters::output::{BoxError, Inner, OutputChain};
use plano_config::Config;

use super::respond::shape_of;
use crate::providers::api::Api;
use crate::state::AppState;

/// The path the filters are told the request came in on.
pub fn api_path(api: Api) -> &'static str {
    match api {
        Api::Messages => "/v1/messages",
        Api::Responses => "/v1/responses",
        Api::Chat | Api::Converse => "/v1/chat/completions",
    }
}

/// Run `ids` over the request body. `Err`: the answer (a block or a filter failure).
pub async fn input(
    state: &AppState,
    config: &Config,
    ids: &[String],
    api: Api,
    headers: &HeaderMap,
    request_id: &HeaderValue,
    body: Bytes,
) -> Result<Bytes, Response> {
    if ids.is_empty() {
        return Ok(body);
    }
    let ctx = FilterCtx {
        path: api_path(api),
        headers,
        request_id,
    };
    state
        .filters
        .run_input(config, ids, &ctx, body)
        .await
        .map_err(|e| e.to_api_error(shape_of(api)).into_response())
}

/// Wrap a successful answer in the output chain `ids` (it outlives the handler for
/// streams, so it owns what it needs). Error answers pass unfiltered.
pub async fn output(
    state: &Arc<AppState>,
    config: Arc<Config>,
    ids: Vec<String>,
    api: Api,
    request_headers: HeaderMap,
    request_id: &HeaderValue,
    response: Response,
) -> Response {
    if ids.is_empty() || !response.status().is_success() {
        return response;
    }
    let chain = OutputChain {
        runner: state.filters.clone(),
        config,
        ids,
        path: api_path(api).to_string(),
        request_headers,
        request_id: request_id.clone(),
        shape: shape_of(api),
    };
    let (mut parts, body) = response.into_parts();
    let body: Inner = body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync();
    match chain.apply(&mut parts.headers, body).await {
        Ok(filtered) => Response::from_parts(parts, Body::new(filtered)),
        Err(e) => e.into_response(),
    }
}
