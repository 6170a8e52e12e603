//! One upstream attempt: build the request, send it, wait (bounded) for the answer, and
//! read it: a whole body (turned into the client's API), or for a stream the opening up to
//! its first real event. Records the attempt's outcome and duration and tells the
//! provider's circuit breaker. Nothing reaches the client here, so whatever fails can
//! still be retried or failed over (`failover.rs` decides).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use plano_config::Provider;
use tokio::time::Instant;

use super::circuit::Circuits;
use super::record::{self, ProviderMetrics};
use super::retry;
use super::stream::Opening;
use crate::error::AttemptError;
use crate::providers::api::Api;
use crate::providers::framing::{self, Framing};
use crate::providers::plan::{ClientRequest, Route};
use crate::providers::upstream_request::{self, Prepared};
use crate::providers::usage::Usage;
use crate::replicas::{self, Replicas};
use crate::routing::affinity::PREFIX_HASH_HEADER;
use crate::upstream::HttpClient;

/// Largest non-streaming upstream body we relay (a sane bound on a chat answer).
const MAX_UPSTREAM_BODY: usize = 64 * 1024 * 1024;
/// Largest upstream error body kept (for the client and the log).
const MAX_ERROR_BODY: usize = 1024 * 1024;

/// What one attempt sends, and to whom.
pub struct Attempt<'a> {
    pub client: &'a HttpClient,
    pub circuits: &'a Circuits,
    pub provider: &'a Provider,
    pub prepared: &'a Prepared,
    pub metrics: &'a ProviderMetrics,
    pub route: Route,
    pub request: &'a ClientRequest<'a>,
    /// The client's request headers (some are propagated) and our request id.
    pub headers: &'a HeaderMap,
    pub request_id: &'a HeaderValue,
    pub uri: http::Uri,
    pub body: Bytes,
    /// How long to wait for the whole answer, or for a stream's first event.
    pub wait: Duration,
    /// The attempt's client span; sent upstream as `traceparent`.
    pub span: tracing::Span,
    /// The provider's `prefix_affinity` replicas, when it has them.
    pub affinity: Option<Affinity<'a>>,
}

/// Where a request to a `prefix_affinity` provider goes: the replica its key picks on the
/// ring, or the next ones when that one cannot be connected to.
#[derive(Clone, Copy)]
pub struct Affinity<'a> {
    pub replicas: &'a Replicas,
    /// The prompt-prefix hash, else a hash of the request id (spread, stable across retries).
    pub key: u64,
    /// The prompt-prefix hash, sent as `x-plano-prefix-hash`.
    pub prefix_hash: Option<u64>,
}

/// An attempt's answer, in the client's API (whole) or about to be (stream).
pub enum Answer {
    Whole {
        status: StatusCode,
        body: Bytes,
        usage: Usage,
    },
    Stream(Box<Opening>),
}

impl Attempt<'_> {
    /// Send once. A 2xx whose body cannot be read in the provider's API counts as a
    /// broken attempt (retried, failed over), like a broken connection.
    pub async fn run(self) -> Result<Answer, AttemptError> {
        let stream = self.request.stream.then_some(self.route.upstream);
        let sent = Instant::now();
        let exchanged = match self.affinity {
            // Boxed: rare, and its future holds a whole `send_to` of its own.
            Some(affinity) => Box::pin(self.send_to_replicas(affinity, stream)).await,
            None => self
                .send_to(self.uri.clone(), None, stream, self.wait)
                .await
                .and_then(|r| r),
        };
        let result = match exchanged {
            Ok(Reply::Whole { status, body }) => {
                // The provider's own answer names the model and finish reasons.
                if plano_common::telemetry::is_recording(&self.span) {
                    plano_common::telemetry::ResponseFacts::of_body(&body)
                        .record(&[&self.span, &tracing::Span::current()]);
                }
                self.route
                    .response_body(self.request, &body)
                    .map(|(body, usage)| Answer::Whole {
                        status,
                        body,
                        usage,
                    })
                    .map_err(|e| AttemptError::Protocol(format!("unusable answer: {}", e.message)))
            }
            Ok(Reply::Stream(opening)) => Ok(Answer::Stream(opening)),
            Err(e) => Err(e),
        };
        match &result {
            Ok(_) => plano_common::telemetry::record_client_status(&self.span, StatusCode::OK),
            Err(AttemptError::Status { status, .. }) => {
                plano_common::telemetry::record_client_status(&self.span, *status);
            }
            Err(e) => plano_common::telemetry::record_error(&self.span, e.outcome()),
        }
        match &result {
            Ok(answer) => {
                // A stream's duration is recorded when its body ends.
                if matches!(answer, Answer::Whole { .. }) {
                    record::upstream_duration(self.metrics, sent.elapsed());
                }
                record::attempt(self.provider, self.metrics, "success");
                self.circuits.success(&self.provider.name);
            }
            Err(err) => {
                record::upstream_duration(self.metrics, sent.elapsed());
                record::attempt(self.provider, self.metrics, err.outcome());
                if err.counts_against_provider() {
                    self.circuits.failure(&self.provider.name);
                } else if matches!(err, AttemptError::Status { .. }) {
                    // A 4xx about the request still proves the provider is up (and
                    // settles a half-open probe).
                    self.circuits.success(&self.provider.name);
                }
            }
        }
        result
    }
}

impl Attempt<'_> {
    /// Send one request to `uri`, waiting at most `wait`. `Err`: it could not be sent at
    /// all (no credentials); `Ok(Err)`: it was sent and failed.
    async fn send_to(
        &self,
        uri: http::Uri,
        affinity: Option<(&HeaderValue, Option<&HeaderValue>)>,
        stream: Option<Api>,
        wait: Duration,
    ) -> Result<Result<Reply, AttemptError>, AttemptError> {
        let mut req = upstream_request::build_request(
            self.provider,
            self.prepared,
            uri,
            self.headers,
            self.request_id,
            self.body.clone(),
        );
        if let Some((host, prefix_hash)) = affinity {
            // Sent to an address: the host name stays the Host (unless `http_host` set it).
            req.headers_mut()
                .entry(http::header::HOST)
                .or_insert_with(|| host.clone());
            if let Some(h) = prefix_hash {
                req.headers_mut()
                    .insert(http::HeaderName::from_static(PREFIX_HASH_HEADER), h.clone());
            }
        }
        plano_common::telemetry::inject(&self.span, req.headers_mut());
        // Signed auth (Bedrock SigV4) last, over the headers as they will be sent.
        upstream_request::authorize(self.prepared, &mut req, &self.body)
            .await
            .map_err(AttemptError::Credentials)?;
        Ok(tracing::Instrument::instrument(
            exchange(self.client, req, stream, wait),
            self.span.clone(),
        )
        .await)
    }

    /// Send to the replicas in ring order from the request's key until one takes the
    /// connection, all within the attempt's `wait`. One that refuses is counted, logged
    /// and set aside; any other failure is the attempt's (retried or failed over as usual).
    async fn send_to_replicas(
        &self,
        affinity: Affinity<'_>,
        stream: Option<Api>,
    ) -> Result<Reply, AttemptError> {
        let host = self
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .ok_or_else(|| AttemptError::Unaddressable("no host in the upstream URL".into()))?;
        let prefix_hash = affinity
            .prefix_hash
            .and_then(|h| HeaderValue::from_str(&format!("{h:016x}")).ok());
        let order = affinity.replicas.order(affinity.key);
        if order.is_empty() {
            // Never resolved yet: the host name, as without prefix_affinity.
            return self
                .send_to(
                    self.uri.clone(),
                    Some((&host, prefix_hash.as_ref())),
                    stream,
                    self.wait,
                )
                .await?;
        }
        let until = Instant::now() + self.wait;
        let mut failed = None;
        for (i, replica) in order.iter().enumerate() {
            let Some(uri) = replicas::at(&self.uri, replica) else {
                continue;
            };
            let wait = until.saturating_duration_since(Instant::now());
            tracing_opentelemetry::OpenTelemetrySpanExt::set_attribute(
                &self.span,
                "plano.replica",
                replica.clone(),
            );
            let err = match self
                .send_to(uri, Some((&host, prefix_hash.as_ref())), stream, wait)
                .await?
            {
                Err(AttemptError::Connect(e)) => e,
                other => return other,
            };
            affinity.replicas.set_aside(replica);
            if i + 1 < order.len() {
                metrics::counter!(plano_common::metrics::ENDPOINT_REPLICA_SKIPS_TOTAL, "provider" => self.provider.name.clone()).increment(1);
                tracing::warn!(request_id = ?self.request_id, provider = %self.provider.name, endpoint = %affinity.replicas.endpoint, %replica, error = %err, "replica unreachable; trying the next one on the ring");
            }
            failed = Some(AttemptError::Connect(err));
        }
        Err(failed
            .unwrap_or_else(|| AttemptError::Unaddressable("no usable replica address".into())))
    }
}

/// What came back from one exchange, before translation.
pub enum Reply {
    Whole { status: StatusCode, body: Bytes },
    Stream(Box<Opening>),
}

/// Send `req` and wait at most `wait` for the whole body or, when `stream` names the
/// upstream API of a stream, for its first real event (SSE comments and keep-alives are
/// not events): only then is the stream committed to. A 2xx stream with the wrong content
/// type or a first event that is not one of the API's is a broken answer.
pub async fn exchange(
    client: &HttpClient,
    req: http::Request<http_body_util::Full<Bytes>>,
    stream: Option<Api>,
    wait: Duration,
) -> Result<Reply, AttemptError> {
    let work = async {
        let res = client
            .request(req)
            .await
            .map_err(|e| classify_client_error(&e))?;
        let status = res.status();
        if !status.is_success() {
            let retry_after = retry::retry_after(res.headers());
            let mut body = res.into_body();
            let bytes = read_limited(&mut body, MAX_ERROR_BODY)
                .await
                .unwrap_or_default();
            return Err(AttemptError::Status {
                status,
                body: bytes,
                retry_after,
            });
        }
        let Some(api) = stream else {
            let mut body = res.into_body();
            let bytes = read_limited(&mut body, MAX_UPSTREAM_BODY)
                .await
                .map_err(AttemptError::Protocol)?;
            return Ok(Reply::Whole {
                status,
                body: bytes,
            });
        };
        framing::check_stream_content_type(api, res.headers()).map_err(AttemptError::Protocol)?;
        let mut rest = res.into_body();
        let mut framing = Framing::of(api);
        loop {
            if let Some(first) = framing.next_event().map_err(AttemptError::Protocol)? {
                framing::check_first_event(api, &first).map_err(AttemptError::Protocol)?;
                return Ok(Reply::Stream(Box::new(Opening {
                    framing,
                    first,
                    rest,
                })));
            }
            match rest.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        framing.push(&data);
                    }
                }
                Some(Err(e)) => return Err(AttemptError::Protocol(e.to_string())),
                None => {
                    let first = framing
                        .finish()
                        .map_err(AttemptError::Protocol)?
                        .ok_or_else(|| {
                            AttemptError::Protocol("stream ended before its first event".into())
                        })?;
                    framing::check_first_event(api, &first).map_err(AttemptError::Protocol)?;
                    return Ok(Reply::Stream(Box::new(Opening {
                        framing,
                        first,
                        rest,
                    })));
                }
            }
        }
    };
    match tokio::time::timeout(wait, work).await {
        Ok(r) => r,
        Err(_) => Err(AttemptError::Timeout(if stream.is_some() {
            "the first event"
        } else {
            "the response"
        })),
    }
}

fn classify_client_error(e: &plano_common::http_client::PooledError) -> AttemptError {
    if e.is_connect() {
        let mut source: Option<&dyn std::error::Error> = Some(e);
        let mut detail = String::new();
        while let Some(s) = source {
            detail = s.to_string();
            source = s.source();
        }
        AttemptError::Connect(detail)
    } else {
        AttemptError::Protocol(e.to_string())
    }
}

async fn read_limited<B>(body: &mut B, limit: usize) -> Result<Bytes, String>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    // Most answers arrive as one frame: it is returned as it is, without a copy; a second
    // frame starts a buffer.
    let mut first: Option<Bytes> = None;
    let mut more: Option<bytes::BytesMut> = None;
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        len += data.len();
        if len > limit {
            return Err(format!("upstream body larger than {limit} bytes"));
        }
        if let Some(buf) = more.as_mut() {
            buf.extend_from_slice(&data);
        } else if let Some(head) = first.take() {
            let mut buf = bytes::BytesMut::with_capacity(len.saturating_mul(2).min(limit));
            buf.extend_from_slice(&head);
            buf.extend_from_slice(&data);
            more = Some(buf);
        } else {
            first = Some(data);
        }
    }
    Ok(match (more, first) {
        (Some(buf), _) => buf.freeze(),
        (None, Some(head)) => head,
        (None, None) => Bytes::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use plano_common::test_support::Frames;

    /// A body that yields `parts` as separate data frames.
    fn body(parts: &[&'static str]) -> Frames<String> {
        Frames::new(parts.iter().copied())
    }

    #[tokio::test]
    async fn an_answer_is_read_whole_in_one_frame_or_many_and_refused_past_the_limit() {
        assert_eq!(read_limited(&mut body(&[]), 10).await.unwrap(), "");
        assert_eq!(read_limited(&mut body(&["{}"]), 10).await.unwrap(), "{}");
        assert_eq!(
            read_limited(&mut body(&["{\"a\"", ":", "1}"]), 10)
                .await
                .unwrap(),
            "{\"a\":1}"
        );
        assert_eq!(
            read_limited(&mut body(&["0123456789"]), 10).await.unwrap(),
            "0123456789"
        );
        for parts in [&["0123456789a"][..], &["01234", "56789", "a"][..]] {
            let e = read_limited(&mut body(parts), 10).await.unwrap_err();
            assert_eq!(e, "upstream body larger than 10 bytes");
        }
    }
}
