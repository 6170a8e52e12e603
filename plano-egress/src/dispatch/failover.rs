//! Phase 5: the candidates in order (the target, then an alias's fallbacks), each while
//! its circuit allows: route the request to the provider's API, attempt, and on a
//! retryable failure back off (honouring `Retry-After`) and attempt again, up to
//! `max_retries`; then fail over to the next candidate. A client error (4xx) ends the
//! request at once: another provider would say the same.

use std::borrow::Cow;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use plano_config::Provider;
use plano_config::resolve::Target;
use tokio::time::Instant;

use super::attempt::{Affinity, Answer, Attempt};
use super::parse::{Ask, body_for};
use super::record::ProviderMetrics;
use super::{Cx, record, retry};
use crate::error::{AttemptError, EgressError};
use crate::providers::api::Api;
use crate::providers::body::ClientBody;
use crate::providers::plan::{ClientRequest, Route, upstream_uri};

/// The attempt that answered.
pub struct Won<'a> {
    pub provider: &'a Provider,
    pub metrics: &'a ProviderMetrics,
    pub route: Route,
    /// The client's body as this provider was sent it (Responses: history included).
    pub client_body: Cow<'a, ClientBody<'a>>,
    /// The `model` echoed back in translated answers.
    pub echo_model: String,
    pub answer: Answer,
    /// When the winning attempt was sent.
    pub sent: Instant,
    /// Attempts made, over every provider.
    pub attempts: u32,
    /// The winning attempt's trace span (kept open by a stream until it ends).
    pub span: tracing::Span,
}

/// `gen_ai.operation.name` of an API.
fn operation_name(api: Api) -> &'static str {
    match api {
        Api::Responses => "responses",
        _ => "chat",
    }
}

pub async fn run<'a, 'c: 'a>(
    cx: &mut Cx<'c>,
    ask: &'a Ask<'_>,
    candidates: &[Target],
) -> Result<Won<'a>, EgressError> {
    let mut failures: Vec<(String, AttemptError)> = Vec::new();
    let mut attempts = 0u32;
    let mut previous: Option<&Provider> = None;
    // The prompt-prefix hash, read once, when a candidate has `prefix_affinity` replicas.
    let mut prefix_hash: Option<Option<u64>> = None;
    for candidate in candidates {
        let provider: &'a Provider = &cx.rt.config.providers[candidate.provider];
        if let Some(prev) = previous {
            record::failover(prev, provider);
            tracing::info!(request_id = ?cx.request_id, from = %prev.name, to = %provider.name, "failing over");
        }
        previous = Some(provider);
        let route = Route::new(provider, ask.api);
        let client_body = body_for(ask, &route)?;
        let echo_model = ask.model.clone().unwrap_or_else(|| provider.name.clone());
        let client_req = ClientRequest {
            api: ask.api,
            body: &client_body,
            model: &echo_model,
            stream: ask.stream,
            response_id: &ask.response_id,
        };
        // A body this provider's API cannot express is the client's problem only when no
        // other provider is left to try.
        let upstream_body = match route.request_body(&client_req, &candidate.model_id) {
            Ok(b) => b,
            Err(e) => {
                tracing::info!(request_id = ?cx.request_id, provider = %provider.name, error = %e, "request not translatable for this provider");
                failures.push((
                    provider.name.clone(),
                    AttemptError::Untranslatable(e.message),
                ));
                continue;
            }
        };
        let upstream_body =
            crate::routing::phase::upstream_body(cx.rt, route.upstream, upstream_body);
        let (Some(prepared), Some(metrics), Ok(uri)) = (
            cx.rt.prepared.get(candidate.provider),
            cx.rt.metrics.get(candidate.provider),
            cx.rt
                .prepared
                .get(candidate.provider)
                .ok_or_else(String::new)
                .and_then(|p| upstream_uri(provider, p, route.upstream, ask.stream)),
        ) else {
            // Checked when the runtime was built; never expected here.
            failures.push((
                provider.name.clone(),
                AttemptError::Unaddressable("no valid upstream URL".into()),
            ));
            continue;
        };
        let affinity = match cx.rt.replicas.get(candidate.provider) {
            Some(Some(replicas)) => {
                let hash = *prefix_hash.get_or_insert_with(|| {
                    let conversation = client_body
                        .tree()
                        .map(|body| crate::routing::prompt::Conversation::of(ask.api, body))
                        .unwrap_or_default();
                    crate::routing::affinity::prefix_hash(cx.headers, &conversation)
                });
                Some(Affinity {
                    replicas,
                    key: hash.unwrap_or_else(|| {
                        crate::routing::affinity::fnv1a(&[&String::from_utf8_lossy(
                            cx.request_id.as_bytes(),
                        )])
                    }),
                    prefix_hash: hash,
                })
            }
            _ => None,
        };
        for attempt in 0..=cx.limits.max_retries {
            if !cx.state.circuits.allow(&provider.name) {
                record::attempt(provider, metrics, AttemptError::CircuitOpen.outcome());
                failures.push((provider.name.clone(), AttemptError::CircuitOpen));
                break;
            }
            let now = Instant::now();
            if now >= cx.deadline {
                return Err(deadline_error(failures, cx.limits.timeout));
            }
            attempts += 1;
            let wait = if ask.stream {
                cx.limits.first_token_timeout.min(cx.deadline - now)
            } else {
                cx.deadline - now
            };
            // One client span per attempt (retries and failovers each get their own).
            let span = plano_common::telemetry::client_span("llm", &provider.name);
            let llm = plano_common::telemetry::LlmRequest {
                system: &provider.prefix,
                provider: &provider.name,
                model: &candidate.model_id,
                operation: Some(operation_name(ask.api)),
                streaming: ask.stream,
            };
            plano_common::telemetry::record_llm_request(&span, &llm);
            plano_common::telemetry::record_llm_request(&tracing::Span::current(), &llm);
            span.set_attribute("plano.attempt", i64::from(attempt) + 1);
            let sent = Instant::now();
            let result = Attempt {
                client: &cx.rt.client,
                circuits: &cx.state.circuits,
                provider,
                prepared,
                metrics,
                route,
                request: &client_req,
                headers: cx.headers,
                request_id: cx.request_id,
                uri: uri.clone(),
                body: upstream_body.clone(),
                wait,
                span: span.clone(),
                affinity,
            }
            .run()
            .await;
            cx.clock.waited += sent.elapsed();
            let err = match result {
                Ok(answer) => {
                    return Ok(Won {
                        provider,
                        metrics,
                        route,
                        client_body: client_body.clone(),
                        echo_model: echo_model.clone(),
                        answer,
                        sent,
                        attempts,
                        span,
                    });
                }
                Err(err) => err,
            };
            tracing::warn!(request_id = ?cx.request_id, provider = %provider.name, attempt = attempt + 1, error = %err.describe(), "upstream attempt failed");
            let retryable = err.is_retryable();
            let retry_after = match &err {
                AttemptError::Status { retry_after, .. } => *retry_after,
                _ => None,
            };
            failures.push((provider.name.clone(), err));
            if !retryable {
                // The client's own mistake (4xx): another provider would say the same.
                return Err(EgressError::AllFailed(failures));
            }
            if attempt == cx.limits.max_retries {
                break;
            }
            let pause = match retry_after {
                Some(d) if d > retry::MAX_RETRY_AFTER => break, // too long: fail over now
                Some(d) => d,
                None => retry::backoff(attempt),
            };
            if Instant::now() + pause >= cx.deadline {
                break;
            }
            if let Some((_, last)) = failures.last() {
                record::retry(provider, last);
            }
            let slept = Instant::now();
            tokio::time::sleep(pause).await;
            cx.clock.waited += slept.elapsed();
        }
    }
    if Instant::now() >= cx.deadline {
        return Err(deadline_error(failures, cx.limits.timeout));
    }
    Err(EgressError::AllFailed(failures))
}

fn deadline_error(
    failures: Vec<(String, AttemptError)>,
    timeout: std::time::Duration,
) -> EgressError {
    if failures.is_empty() {
        return EgressError::DeadlineExceeded(timeout);
    }
    let mut failures = failures;
    if let Some((name, _)) = failures.last().cloned() {
        failures.push((name, AttemptError::Timeout("the listener timeout")));
    }
    // A timeout is the last word: answer 504 even if an earlier attempt had a status.
    match EgressError::AllFailed(failures) {
        e if e.status() == http::StatusCode::GATEWAY_TIMEOUT => e,
        _ => EgressError::DeadlineExceeded(timeout),
    }
}
