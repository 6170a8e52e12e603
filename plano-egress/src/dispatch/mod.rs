//! The egress request path for `POST /v1/chat/completions`, `/v1/messages` and
//! `/v1/responses`, top to bottom in [`serve`]; each phase in its own module:
//!
//! 0. one request id for the filters, the providers and the answer; the runtime (config,
//!    client, limiter) this request keeps even if a reload swaps it;
//! 1. the body, up to the listener's `max_body_bytes` (413), through the `input_filters`,
//!    then parsed (`parse.rs`: 400 naming the problem, in the client API's error shape;
//!    a Responses `previous_response_id` is looked up);
//! 2. route by preference (`routing/phase.rs`): when a router model and preferences are
//!    configured, it chooses the model to select for (falling back to the requested one);
//! 3. select the providers to try (`select.rs`): hint header, alias target then its
//!    fallbacks, or one model;
//! 4. admit against the rate limits (429 before anything is sent upstream);
//! 5. fail over through the candidates (`failover.rs`), retrying each with backoff;
//!    every try is one attempt (`attempt.rs`): send, wait, read the whole answer or a
//!    stream's first real event. A stream is committed only then, so every failure before
//!    that point can still be retried or failed over; nothing is retried once a byte
//!    reached the client;
//! 6. respond (`respond.rs`): the answer in the client's API, whole or event by event
//!    (`stream.rs`), with `x-request-id`, `x-plano-provider`, `x-plano-attempts`,
//!    `x-plano-overhead-ms`; tokens are metered when the body ends;
//! 7. the `output_filters` over a successful answer (`filters.rs`).
//!
//! Metrics are recorded through `record.rs`. `POST /v1/messages/count_tokens` and
//! `GET /v1/models` have their own small modules.

pub mod attempt;
pub mod circuit;
pub mod count_tokens;
pub mod failover;
pub mod filters;
pub mod models;
pub mod parse;
pub mod record;
pub mod remember;
pub mod respond;
pub mod retry;
pub mod select;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use plano_common::request_id::X_REQUEST_ID;
use plano_config::Config;
use tokio::time::Instant;

use crate::error::EgressError;
use crate::providers::api::Api;
use crate::ratelimit::{Decision, LimitRequest, Ticket};
use crate::state::{AppState, Runtime};
use select::Selection;

pub use respond::shape_of;

/// The model listener's bounds on one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The whole request, attempts and backoff included.
    pub timeout: Duration,
    /// A stream's first event, per attempt.
    pub first_token_timeout: Duration,
    pub max_retries: u32,
    pub max_body_bytes: usize,
}

impl Limits {
    pub fn of(config: &Config) -> Self {
        let l = &config.model_listener;
        Limits {
            timeout: l.timeout,
            first_token_timeout: l.first_token_timeout,
            max_retries: l.max_retries,
            max_body_bytes: l.max_body_bytes,
        }
    }
}

/// Time accounting for `x-plano-overhead-ms`: everything not spent waiting on an upstream
/// or sleeping between attempts is the proxy's own.
pub struct Clock {
    pub start: Instant,
    pub waited: Duration,
}

impl Clock {
    fn overhead(&self) -> Duration {
        self.start.elapsed().saturating_sub(self.waited)
    }
}

/// What one request carries through its phases.
pub struct Cx<'a> {
    pub state: &'a AppState,
    pub rt: &'a Runtime,
    pub api: Api,
    /// The client's headers (`x-request-id` set).
    pub headers: &'a HeaderMap,
    pub request_id: &'a HeaderValue,
    pub limits: Limits,
    pub clock: Clock,
    /// `clock.start + limits.timeout`: no attempt starts and no stream runs past it.
    pub deadline: Instant,
}

/// `POST /v1/chat/completions`, `/v1/messages` or `/v1/responses`, by `api`.
pub async fn serve(state: Arc<AppState>, api: Api, mut headers: HeaderMap, body: Body) -> Response {
    // 0. One id for the filters, the providers and the answer.
    let request_id = plano_common::request_id::ensure(&headers);
    headers.insert(X_REQUEST_ID, request_id.clone());
    let rt = state.runtime();
    let limits = Limits::of(&rt.config);
    let l = &rt.config.model_listener;
    let (input_ids, output_ids) = (&l.input_filters[..], &l.output_filters[..]);

    // 1. The body, through the input filters.
    let raw = match parse::read_body(body, limits.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return with_id(respond::error(&rt.config, api, e, &request_id), &request_id),
    };
    // The rarely used phases are boxed where they are called: their futures are large
    // (HTTP calls of their own) and would otherwise sit inside this one, which `routes.rs` boxes
    // (moving every byte of it) on every request.
    let raw = if input_ids.is_empty() {
        raw
    } else {
        let filtered = Box::pin(filters::input(
            &state,
            &rt.config,
            input_ids,
            api,
            &headers,
            &request_id,
            raw,
        ))
        .await;
        match filtered {
            Ok(b) => b,
            Err(res) => return with_id(res, &request_id),
        }
    };

    // 1–5. Parse, select, admit, fail over, respond.
    let start = Instant::now();
    let mut cx = Cx {
        state: &state,
        rt: &rt,
        api,
        headers: &headers,
        request_id: &request_id,
        limits,
        clock: Clock {
            start,
            waited: Duration::ZERO,
        },
        // `checked_add`: an absurdly long configured timeout means "no practical
        // deadline", not an overflow panic on the request path.
        deadline: start
            .checked_add(limits.timeout)
            .unwrap_or_else(|| start + Duration::from_secs(365 * 24 * 3600)),
    };
    let mut response = match handle(&mut cx, &raw).await {
        Ok(r) => r,
        Err(e) => respond::error(&rt.config, api, e, &request_id),
    };
    let overhead = cx.clock.overhead();
    record::overhead(overhead);
    let h = response.headers_mut();
    h.insert(X_REQUEST_ID, request_id.clone());
    h.insert(OVERHEAD_HEADER, overhead_ms(overhead));

    // 7. The output filters.
    if output_ids.is_empty() {
        return response;
    }
    let output_ids = output_ids.to_vec();
    let config = rt.config.clone();
    let response = Box::pin(filters::output(
        &state,
        config,
        output_ids,
        api,
        headers,
        &request_id,
        response,
    ))
    .await;
    with_id(response, &request_id)
}

async fn handle(cx: &mut Cx<'_>, raw: &Bytes) -> Result<Response, EgressError> {
    // 1. Parse.
    let mut ask = parse::parse(cx.api, raw)?;
    if cx.api == Api::Responses {
        Box::pin(parse::expand_history(&cx.state.conversations, &mut ask)).await?;
    }
    // 2. Route by preference (`routing/phase.rs`): which model to select for. Without a
    // router the phase only takes the request's own preferences out of its body (and the
    // body stays unparsed when it has none).
    let routing = if cx.rt.router.is_some() {
        Box::pin(crate::routing::phase::run(
            cx.rt,
            cx.api,
            cx.headers,
            ask.body.tree_mut().map_err(parse::tree_error)?,
            ask.history.as_deref().map(Vec::as_slice),
            cx.request_id,
        ))
        .await
    } else {
        if crate::routing::INLINE_PREFERENCE_FIELDS
            .iter()
            .any(|f| ask.body.has(f))
        {
            crate::routing::take_inline_preferences(
                ask.body.tree_mut().map_err(parse::tree_error)?,
            );
        }
        crate::routing::phase::Routing::default()
    };
    // 3. Select.
    let selection = routing.select(&cx.rt.config, cx.headers, ask.model.as_deref())?;
    if let Some(header) = selection.hint_missed {
        record::hint_miss(header);
    }
    // 4. Admit.
    let (mut ticket, limit_headers) = admit(cx, &selection, raw).await?;
    // 5. Fail over.
    let won = failover::run(cx, &ask, &selection.candidates).await;
    // 6. Respond.
    match won {
        Ok(won) => {
            let provider = won.provider;
            let mut response = respond::answer(
                cx,
                won,
                ask.client_wants_usage,
                &ask.response_id,
                ticket.take(),
                limit_headers,
            )
            .await;
            routing.answered(provider, response.headers_mut());
            Ok(response)
        }
        Err(e) => {
            if let (Some(l), Some(t)) = (cx.rt.limiter.as_ref(), ticket.take()) {
                l.reconcile(t, 0).await;
            }
            Err(e)
        }
    }
}

/// Limits are charged once per request, against the provider the request is for. The
/// ticket is reconciled with the real usage when the answer ends.
async fn admit(
    cx: &Cx<'_>,
    selection: &Selection,
    raw: &Bytes,
) -> Result<(Option<Ticket>, HeaderMap), EgressError> {
    let Some(first) = selection.candidates.first() else {
        return Err(EgressError::ModelNotFound(String::new()));
    };
    let Some(limiter) = cx.rt.limiter.as_ref().filter(|l| !l.is_empty()) else {
        return Ok((None, HeaderMap::new()));
    };
    let decision = limiter
        .check(&LimitRequest {
            provider: &cx.rt.config.providers[first.provider].name,
            alias: selection.alias.as_deref(),
            upstream_model: &first.model_id,
            headers: cx.headers,
            body: raw,
        })
        .await;
    match decision {
        Decision::Allow { ticket, headers } => Ok((Some(ticket), headers)),
        Decision::Deny {
            headers, message, ..
        } => Err(EgressError::RateLimited { message, headers }),
    }
}

fn with_id(mut res: Response, request_id: &HeaderValue) -> Response {
    res.headers_mut().insert(X_REQUEST_ID, request_id.clone());
    res
}

const OVERHEAD_HEADER: HeaderName = HeaderName::from_static("x-plano-overhead-ms");

/// `x-plano-overhead-ms`: milliseconds with three decimals (`0.412`), written by hand
/// (`format!` with a float was ~1,000 instructions of every request).
fn overhead_ms(overhead: Duration) -> HeaderValue {
    let micros = overhead.as_nanos().saturating_add(500) / 1000;
    let (ms, frac) = (micros / 1000, micros % 1000);
    let mut buf = [0u8; 48];
    let mut at = buf.len();
    let mut push = |b: u8| {
        at -= 1;
        buf[at] = b;
    };
    let mut f = frac;
    for _ in 0..3 {
        push(b'0' + (f % 10) as u8);
        f /= 10;
    }
    push(b'.');
    let mut m = ms;
    loop {
        push(b'0' + (m % 10) as u8);
        m /= 10;
        if m == 0 {
            break;
        }
    }
    HeaderValue::from_bytes(&buf[at..]).unwrap_or_else(|_| HeaderValue::from_static("0.000"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overhead_header_is_milliseconds_with_three_decimals() {
        let ms = |d| overhead_ms(d).to_str().unwrap().to_string();
        assert_eq!(ms(Duration::ZERO), "0.000");
        assert_eq!(ms(Duration::from_micros(412)), "0.412");
        assert_eq!(ms(Duration::from_micros(12_030)), "12.030");
        assert_eq!(ms(Duration::from_nanos(1_234_567_890)), "1234.568");
        assert_eq!(ms(Duration::from_nanos(999_600)), "1.000");
        assert_eq!(
            ms(Duration::from_secs(u64::MAX)),
            format!("{}.000", u64::MAX as u128 * 1000)
        );
    }

    /// `routes.rs` boxes each request's future, moving all of it: every phase's future
    /// nested in [`serve`] is copied on every request (it was 15 KB in a debug build, about
    /// 12 % of the egress's instructions per request, in `memcpy`). The rarely used phases
    /// (filters, routing by preference, Responses history and storage, signed auth,
    /// replicas) are boxed where they are called; this keeps them from creeping back.
    #[tokio::test]
    async fn the_request_future_stays_small() {
        let future = serve(
            AppState::for_tests().await,
            Api::Chat,
            HeaderMap::new(),
            Body::empty(),
        );
        let size = std::mem::size_of_val(&future);
        assert!(size <= 6 * 1024, "dispatch::serve's future is {size} bytes");
    }
}
