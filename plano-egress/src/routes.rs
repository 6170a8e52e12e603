//! Paths to handlers, and nothing else (the request path is `dispatch/`).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, Method, StatusCode};
use plano_common::errors::{ApiError, ApiShape};

use crate::dispatch::{self, count_tokens, models};
use crate::providers::api::Api;
use crate::state::AppState;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/v1/responses", post(responses))
        .route("/v1/models", get(list_models))
        // `get` answers `HEAD` too.
        .route("/", get(models::root))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), http_metrics))
        .with_state(state)
}

async fn chat_completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    dispatch::serve(state, Api::Chat, headers, body).await
}

async fn messages(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    dispatch::serve(state, Api::Messages, headers, body).await
}

async fn responses(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    dispatch::serve(state, Api::Responses, headers, body).await
}

async fn count_tokens(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    count_tokens::serve(state, headers, body).await
}

async fn list_models(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(models::list(&state.runtime().config)).into_response()
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

/// `plano_http_requests_total` and `plano_http_request_duration_seconds` by route template
/// (never the raw path: bounded labels); the duration ends with the response body.
async fn http_metrics(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let started = tokio::time::Instant::now();
    let res = next.run(req).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let rt = state.runtime();
    dispatch::record::http_response(res, &rt.config.model_listener.name, route, &method, started)
}
