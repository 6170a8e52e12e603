//! Phase 6: the answer in the client's API: whole, or event by event (`stream.rs`), with
//! `x-plano-provider`, `x-plano-attempts` and any `x-ratelimit-*` headers; tokens are
//! metered and limits reconciled when the body ends. Errors are rendered here too.

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, header};
use plano_common::errors::ApiShape;
use plano_config::Config;
use serde_json::Value;

use super::Cx;
use super::attempt::Answer;
use super::failover::Won;
use super::record;
use super::remember::Remember;
use super::stream::{self, StreamPlan};
use crate::error::EgressError;
use crate::providers::api::Api;
use crate::providers::plan::{ClientRequest, Route};
use crate::ratelimit::Ticket;

const PROVIDER_HEADER: HeaderName = HeaderName::from_static("x-plano-provider");
const ATTEMPTS_HEADER: HeaderName = HeaderName::from_static("x-plano-attempts");

/// The error shape a client of `api` expects.
pub fn shape_of(api: Api) -> ApiShape {
    match api {
        Api::Messages => ApiShape::Anthropic,
        Api::Chat | Api::Responses | Api::Converse => ApiShape::OpenAi,
    }
}

/// The successful answer.
pub async fn answer(
    cx: &Cx<'_>,
    won: Won<'_>,
    client_wants_usage: bool,
    response_id: &str,
    ticket: Option<Ticket>,
    limit_headers: HeaderMap,
) -> Response {
    let Won {
        provider,
        metrics,
        route,
        client_body,
        echo_model,
        answer,
        sent,
        attempts,
        span,
    } = won;
    let server_span = tracing::Span::current();
    // Only Responses answers are remembered: the body's tree is not built for the others
    // (building it for every answer was ~3,300 instructions of a chat pass-through).
    let remember = match cx.api {
        Api::Responses => client_body.tree().ok().map(|request| Remember {
            conversations: cx.state.conversations.clone(),
            request: request.clone(),
        }),
        _ => None,
    };
    // Hosted tools this provider's request went without (docs/egress.md, "Coding agents").
    let dropped = route.dropped_tools(&ClientRequest {
        api: cx.api,
        body: &client_body,
        model: &echo_model,
        stream: false,
        response_id,
    });
    let mut response = match answer {
        Answer::Whole {
            status,
            body,
            usage,
        } => {
            record::tokens(metrics, &usage);
            super::stream::trace_usage(&[&span, &server_span], &usage);
            if let (Some(l), Some(t)) = (cx.rt.limiter.as_ref(), ticket) {
                l.reconcile(t, usage.total()).await;
            }
            if let Some(r) = remember
                && let Ok(answer) = serde_json::from_slice::<Value>(&body)
            {
                // Boxed: the store's future (Postgres) is large, and Responses-only.
                Box::pin(r.store(&answer)).await;
            }
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Answer::Stream(opening) => {
            record::time_to_first_token(metrics, cx.clock.start.elapsed());
            plano_common::telemetry::record_time_to_first_token(&span, cx.clock.start.elapsed());
            plano_common::telemetry::record_time_to_first_token(
                &server_span,
                cx.clock.start.elapsed(),
            );
            let request = ClientRequest {
                api: cx.api,
                body: &client_body,
                model: &echo_model,
                stream: true,
                response_id,
            };
            let plan = StreamPlan {
                provider: provider.clone(),
                metrics: metrics.clone(),
                shape: route.stream_shape(&request, client_wants_usage),
                deadline: cx.deadline,
                sent,
                limiter: cx.rt.limiter.clone(),
                ticket,
                remember,
                spans: vec![span, server_span],
            };
            stream::respond(opening, plan)
        }
    };
    let h = response.headers_mut();
    h.extend(limit_headers);
    if let Ok(v) = HeaderValue::from_str(&provider.name) {
        h.insert(PROVIDER_HEADER, v);
    }
    h.insert(ATTEMPTS_HEADER, HeaderValue::from(attempts));
    crate::providers::hosted::announce(h, &dropped, &provider.name, cx.request_id);
    response
}

/// An error in the client's API shape. A provider's own error body is relayed untouched
/// when the provider speaks the client's API; otherwise its status is kept and its message
/// carried in our body.
pub fn error(config: &Config, api: Api, e: EgressError, request_id: &HeaderValue) -> Response {
    if let Some((provider, status, upstream_body)) = e.upstream_body() {
        let same_shape = config
            .provider(&provider)
            .map(|p| Route::new(p, api).upstream)
            .is_some_and(|up| up != Api::Converse && shape_of(up) == shape_of(api));
        if same_shape {
            tracing::info!(request_id = ?request_id, status = status.as_u16(), "upstream error relayed");
            return (
                status,
                [(header::CONTENT_TYPE, "application/json")],
                upstream_body,
            )
                .into_response();
        }
    }
    tracing::info!(request_id = ?request_id, reason = e.reason(), "request failed");
    e.into_response(shape_of(api))
}
