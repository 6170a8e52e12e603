//! Paths to handlers, and nothing else (the request path is `dispatch/`).
//!
//! The egress serves seven fixed paths, so they are matched by a `match` on the path, not
//! by a router: axum's `Router`, its `from_fn` metrics middleware and a tower span layer
//! cost ~7k instructions of every request (three boxed futures, a cloned header map, a
//! route-table lookup, the matched path stored in the request), which was 7 % of a chat
//! pass-through (BENCHMARKS.md, "Instructions per request").
//!
//! What every request gets, in this order: its server span (traces), the HTTP metrics
//! (`plano_http_requests_total`, `plano_http_request_duration_seconds`, labelled by the
//! route, `unmatched` for unknown paths), then its handler.

use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use plano_common::errors::{ApiError, ApiShape, bounded_path};
use plano_common::telemetry::{self, SpanAttributes, SpanBody};
use tracing::Instrument;

use crate::dispatch::record::TimedBody;
use crate::dispatch::{self, count_tokens, models};
use crate::providers::api::Api;
use crate::state::AppState;

/// What a path is served by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Messages,
    CountTokens,
    Responses,
    Models,
    Root,
    Healthz,
}

impl Endpoint {
    /// The endpoint of a request path.
    fn of(path: &str) -> Option<Self> {
        Some(match path {
            "/v1/chat/completions" => Self::Chat,
            "/v1/messages" => Self::Messages,
            "/v1/messages/count_tokens" => Self::CountTokens,
            "/v1/responses" => Self::Responses,
            "/v1/models" => Self::Models,
            "/" => Self::Root,
            "/healthz" => Self::Healthz,
            _ => return None,
        })
    }

    /// Its route label: the path itself (fixed, so labels stay bounded).
    fn route(self) -> &'static str {
        match self {
            Self::Chat => "/v1/chat/completions",
            Self::Messages => "/v1/messages",
            Self::CountTokens => "/v1/messages/count_tokens",
            Self::Responses => "/v1/responses",
            Self::Models => "/v1/models",
            Self::Root => "/",
            Self::Healthz => "/healthz",
        }
    }

    /// The APIs are `POST`; the rest answer `GET` and `HEAD`.
    fn allows(self, method: &Method) -> bool {
        match self {
            Self::Chat | Self::Messages | Self::CountTokens | Self::Responses => {
                method == Method::POST
            }
            Self::Models | Self::Root | Self::Healthz => {
                method == Method::GET || method == Method::HEAD
            }
        }
    }

    /// The route a server span is named after: the API paths, none for `/` (as before
    /// this module matched by hand, span names did not change).
    fn span_route(self) -> &'static str {
        match self {
            Self::Root => "",
            _ => self.route(),
        }
    }
}

/// The model listener's request handler: span, metrics, then the endpoint.
pub struct Routes {
    state: Arc<AppState>,
    span_attributes: Arc<SpanAttributes>,
}

impl Routes {
    pub fn new(state: Arc<AppState>, span_attributes: Arc<SpanAttributes>) -> Self {
        Self {
            state,
            span_attributes,
        }
    }

    /// Serve one request. Never fails: every problem is an error answer.
    pub async fn serve<B>(&self, req: Request<B>) -> Response<SpanBody<TimedBody>>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let endpoint = Endpoint::of(req.uri().path());
        let span = telemetry::server_span(
            "egress",
            endpoint.map_or("", Endpoint::span_route),
            &req,
            &self.span_attributes,
        );
        let started = tokio::time::Instant::now();
        let method = req.method().clone();
        let mut response = self.endpoint(endpoint, req).instrument(span.clone()).await;
        telemetry::record_status(&span, response.status());
        if method == Method::HEAD {
            // HTTP/1 drops a HEAD answer's body by itself; HTTP/2 must not get one either.
            *response.body_mut() = Body::empty();
        }
        let rt = self.state.runtime();
        let route = endpoint.map_or("unmatched", Endpoint::route);
        dispatch::record::http_response(
            response,
            &rt.config.model_listener.name,
            route,
            &method,
            started,
        )
        .map(|body| SpanBody::new(body, span))
    }

    async fn endpoint<B>(&self, endpoint: Option<Endpoint>, req: Request<B>) -> Response
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let Some(endpoint) = endpoint else {
            return not_found(req.method(), req.uri().path());
        };
        if !endpoint.allows(req.method()) {
            return method_not_allowed(req.method(), req.uri().path());
        }
        let state = self.state.clone();
        let (parts, body) = req.into_parts();
        let body = Body::new(body);
        // The request's future is boxed here, apart from this one: the listener boxes this
        // future per request and a box copies every byte of its future's type, so this one
        // must stay small (with `dispatch::serve`'s ~5 KB future inline it was copied whole,
        // and the copy cost more than the router it replaced; BENCHMARKS.md).
        let api = match endpoint {
            Endpoint::Chat => Api::Chat,
            Endpoint::Messages => Api::Messages,
            Endpoint::Responses => Api::Responses,
            Endpoint::CountTokens => {
                return Box::pin(count_tokens::serve(state, parts.headers, body)).await;
            }
            Endpoint::Models => {
                return axum::Json(models::list(&state.runtime().config)).into_response();
            }
            Endpoint::Root => return models::root(),
            Endpoint::Healthz => return "ok".into_response(),
        };
        Box::pin(dispatch::serve(state, api, parts.headers, body)).await
    }
}

fn not_found(method: &Method, path: &str) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {method} {}", bounded_path(path)),
    )
    .with_shape(ApiShape::for_path(path))
    .into_response()
}

fn method_not_allowed(method: &Method, path: &str) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {path}"),
    )
    .with_shape(ApiShape::for_path(path))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_has_its_endpoint_and_methods() {
        let post = [
            ("/v1/chat/completions", Endpoint::Chat),
            ("/v1/messages", Endpoint::Messages),
            ("/v1/messages/count_tokens", Endpoint::CountTokens),
            ("/v1/responses", Endpoint::Responses),
        ];
        for (path, want) in post {
            let e = Endpoint::of(path).unwrap();
            assert_eq!((e, e.route()), (want, path));
            assert!(e.allows(&Method::POST));
            assert!(!e.allows(&Method::GET) && !e.allows(&Method::HEAD));
            assert_eq!(e.span_route(), path);
        }
        for (path, want) in [
            ("/v1/models", Endpoint::Models),
            ("/", Endpoint::Root),
            ("/healthz", Endpoint::Healthz),
        ] {
            let e = Endpoint::of(path).unwrap();
            assert_eq!((e, e.route()), (want, path));
            assert!(e.allows(&Method::GET) && e.allows(&Method::HEAD));
            assert!(!e.allows(&Method::POST) && !e.allows(&Method::DELETE));
        }
        assert_eq!(Endpoint::Root.span_route(), "");
        for unknown in [
            "",
            "/v1/chat/completions/",
            "/v1",
            "/V1/models",
            "/v2/nothing",
        ] {
            assert!(Endpoint::of(unknown).is_none(), "{unknown}");
        }
    }

    /// The listener boxes this future per request, copying all of it: the request's own
    /// future (`dispatch::serve`'s, ~5 KB) must stay boxed apart, not inline here.
    #[tokio::test]
    async fn the_future_the_listener_boxes_stays_small() {
        let routes = Routes::new(
            AppState::for_tests().await,
            Arc::new(SpanAttributes::of(None)),
        );
        let future = routes.serve(Request::new(Body::empty()));
        let size = std::mem::size_of_val(&future);
        assert!(size <= 1536, "Routes::serve's future is {size} bytes");
    }
}
