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

use crate::dispatch;
use crate::providers::plan::Api;
use crate::state::AppState;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/messages", post(messages))
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

async fn responses(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    serve(state, Api::Responses, headers, body).await
}

async fn serve(state: Arc<AppState>, api: Api, headers: HeaderMap, body: Body) -> Response {
    let limit = state
        .runtime()
        .config
        .model_listener()
        .map_or(10 * 1024 * 1024, |l| l.max_body_bytes);
    match dispatch::read_request_body(body, limit).await {
        Ok(bytes) => dispatch::serve(state, api, headers, bytes).await,
        Err(e) => e.into_api_error(dispatch::shape_of(api)).into_response(),
    }
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
    let method = req.method().as_str().to_string();
    let res = next.run(req).await;
    let class = m::status_class(res.status().as_u16());
    counter!(m::HTTP_REQUESTS_TOTAL, "component" => "egress", "route" => route.clone(), "method" => method, "status" => class)
        .increment(1);
    histogram!(m::HTTP_REQUEST_DURATION_SECONDS, "component" => "egress", "route" => route)
        .record(start.elapsed().as_secs_f64());
    res
}
