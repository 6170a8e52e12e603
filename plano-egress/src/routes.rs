//! Paths to handlers, and nothing else.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, Method, StatusCode};
use metrics::{counter, histogram};
use plano_common::errors::{ApiError, ApiShape};
use plano_common::metrics as m;
use tokio::time::Instant;

use http_body_util::BodyExt;
use plano_common::filters::FilterCtx;
use plano_common::filters::output::{BoxError, Inner, OutputChain};

use bytes::Bytes;
use plano_config::Config;

use crate::dispatch;
use crate::providers::plan::Api;
use crate::state::AppState;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/v1/responses", post(responses))
        .route("/v1/models", get(models))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(http_metrics))
        .with_state(state)
}

async fn chat_completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    serve(state, Api::Chat, headers, body).await
}

async fn messages(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    serve(state, Api::Messages, headers, body).await
}

async fn count_tokens(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match read_body(&state.runtime().config, Api::Messages, body).await {
        Ok(bytes) => dispatch::count_tokens(state, headers, bytes).await,
        Err(res) => res,
    }
}

/// The request body, up to the model listener's `max_body_bytes` (413 in the client's
/// API shape beyond it).
async fn read_body(config: &Config, api: Api, body: Body) -> Result<Bytes, Response> {
    let limit = config.model_listener.max_body_bytes;
    dispatch::read_request_body(body, limit)
        .await
        .map_err(|e| e.into_api_error(dispatch::shape_of(api)).into_response())
}

async fn responses(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    serve(state, Api::Responses, headers, body).await
}

/// Body limit, the model listener's `input_filters`, the request path, `output_filters`.
async fn serve(state: Arc<AppState>, api: Api, mut headers: HeaderMap, body: Body) -> Response {
    let rt = state.runtime();
    let shape = dispatch::shape_of(api);
    let listener = &rt.config.model_listener;
    // One id for the filters, the providers and the answer.
    let request_id = plano_common::request_id::ensure(&headers);
    headers.insert("x-request-id", request_id.clone());
    let mut bytes = match read_body(&rt.config, api, body).await {
        Ok(b) => b,
        Err(res) => return res,
    };
    let (input_filters, output_filters) =
        (&listener.input_filters[..], &listener.output_filters[..]);
    let path = api_path(api);
    if !input_filters.is_empty() {
        let ctx = FilterCtx {
            path,
            headers: &headers,
            request_id: &request_id,
        };
        match state
            .filters
            .run_input(&rt.config, input_filters, &ctx, bytes)
            .await
        {
            Ok(b) => bytes = b,
            Err(e) => return with_id(e.to_api_error(shape).into_response(), &request_id),
        }
    }
    if output_filters.is_empty() {
        drop(rt);
        return dispatch::serve(state, api, headers, bytes).await;
    }
    // The output chain outlives the handler (streams): it owns what it needs.
    let output_filters = output_filters.to_vec();
    let config = rt.config.clone();
    drop(rt);
    let request_headers = headers.clone();
    let response = dispatch::serve(state.clone(), api, headers, bytes).await;
    if !response.status().is_success() {
        return response;
    }
    let chain = OutputChain {
        runner: state.filters.clone(),
        config,
        ids: output_filters,
        path: path.to_string(),
        request_headers,
        request_id: request_id.clone(),
        shape,
    };
    let (mut parts, body) = response.into_parts();
    let body: Inner = body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync();
    match chain.apply(&mut parts.headers, body).await {
        Ok(filtered) => Response::from_parts(parts, Body::new(filtered)),
        Err(e) => with_id(e.into_response(), &request_id),
    }
}

fn api_path(api: Api) -> &'static str {
    match api {
        Api::Messages => "/v1/messages",
        Api::Responses => "/v1/responses",
        Api::Chat | Api::Converse => "/v1/chat/completions",
    }
}

fn with_id(mut res: Response, request_id: &http::HeaderValue) -> Response {
    res.headers_mut().insert("x-request-id", request_id.clone());
    res
}

async fn models(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(dispatch::models(&state.runtime().config)).into_response()
}

async fn not_found(method: Method, uri: http::Uri) -> Response {
    let path = uri.path();
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {method} {path}"),
    )
    .with_shape(ApiShape::for_path(path))
    .into_response()
}

async fn method_not_allowed(method: Method, uri: http::Uri) -> Response {
    let path = uri.path();
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {path}"),
    )
    .with_shape(ApiShape::for_path(path))
    .into_response()
}

/// Requests and durations by route template (never the raw path: bounded labels).
async fn http_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = m::method_label(req.method());
    let res = next.run(req).await;
    let class = m::status_class(res.status().as_u16());
    counter!(m::HTTP_REQUESTS_TOTAL, "component" => "egress", "route" => route.clone(), "method" => method, "status_class" => class)
        .increment(1);
    histogram!(m::HTTP_REQUEST_DURATION_SECONDS, "component" => "egress", "route" => route)
        .record(start.elapsed().as_secs_f64());
    res
}
