//! The response body the edge sends: the upstream's body streamed as it arrives (or a
//! small local answer), counting bytes and bounded by the listener's total deadline. When
//! it is dropped it writes the access log and releases the connection's in-flight mark.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use tokio::time::Sleep;

use crate::access_log::AccessRecord;
use crate::error::EdgeError;
use crate::in_flight::InFlight;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type Inner = UnsyncBoxBody<Bytes, BoxError>;

pin_project_lite::pin_project! {
    pub struct ResponseBody {
        #[pin]
        inner: Inner,
        #[pin]
        deadline: Option<Sleep>,
        record: AccessRecord,
        in_flight: Option<InFlight>,
        // A stream's last event when the deadline ends it (see `with_timeout_event`).
        timeout_event: Option<Bytes>,
        // Whether what was sent so far ends between two events.
        at_boundary: bool,
        done: bool,
    }

    impl PinnedDrop for ResponseBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // A body hyper never polled because it was empty from the start.
            if !*this.done && this.inner.is_end_stream() {
                this.record.completed = true;
            }
            this.record.emit();
        }
    }
}

impl ResponseBody {
    pub(crate) fn new(
        inner: Inner,
        deadline: Option<Sleep>,
        record: AccessRecord,
        in_flight: InFlight,
    ) -> Self {
        Self {
            inner,
            deadline,
            record,
            in_flight: Some(in_flight),
            timeout_event: None,
            at_boundary: true,
            done: false,
        }
    }

    /// End an event stream cut by the deadline with `event` (the API's error event) and a
    /// clean end of stream, instead of a reset the client cannot tell from a network fault.
    /// Not for a body of declared length, which must not grow.
    pub(crate) fn with_timeout_event(mut self, event: Bytes) -> Self {
        if self.inner.size_hint().exact().is_none() {
            self.timeout_event = Some(event);
        }
        self
    }

    pub(crate) fn full(bytes: Bytes) -> Inner {
        http_body_util::Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync()
    }
}

/// The client's request body, cut at `max_body`, its errors marked as the client's: an
/// error reading it (over the limit, broken chunked framing, an h2 stream reset) then
/// reaches the client as 413 or 400 even when it surfaces as the egress request failing.
pub(crate) fn limited_request(body: plano_common::listen::RequestBody, max_body: usize) -> Inner {
    http_body_util::Limited::new(body, max_body)
        .map_err(|e| -> BoxError { Box::new(ClientBodyError(e)) })
        .boxed_unsync()
}

/// An error reading the client's request body.
#[derive(Debug)]
pub(crate) struct ClientBodyError(BoxError);

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request body could not be read: {}", self.0)
    }
}

impl std::error::Error for ClientBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// When `e` (or one of its sources) is the client's body failing: 413 over the limit,
/// else 400.
pub(crate) fn client_body_error(
    e: &(dyn std::error::Error + 'static),
    max_body: usize,
) -> Option<EdgeError> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(ClientBodyError(inner)) = err.downcast_ref::<ClientBodyError>() {
            return Some(if inner.is::<http_body_util::LengthLimitError>() {
                EdgeError::BodyTooLarge { limit: max_body }
            } else {
                EdgeError::BadBody(plano_common::errors::error_chain(&**inner))
            });
        }
        cur = err.source();
    }
    None
}

/// Read a (size-limited, [`limited_request`]) request body whole, for the input filters
/// and the edge's own routing: over the limit is 413, a body that breaks off is 400.
pub(crate) async fn read_request(body: Inner, max_body: usize) -> Result<Bytes, EdgeError> {
    match body.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(client_body_error(&*e, max_body)
            .unwrap_or_else(|| EdgeError::BadBody(plano_common::errors::error_chain(&*e)))),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the response exceeded the listener's timeout and was cut off")]
pub(crate) struct DeadlineExceeded;

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        // What the upstream has ready goes out first; the deadline cuts a body only while
        // it waits (so an answer already complete is never lost to a deadline just passed).
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && !data.is_empty()
                {
                    this.record.bytes_out += data.len() as u64;
                    *this.at_boundary = data.ends_with(b"\n\n") || data.ends_with(b"\r\n\r\n");
                }
                // hyper stops polling a body that says it has ended (or that has sent its
                // declared length) after its last frame: `Ready(None)` below never comes.
                if this.inner.is_end_stream() {
                    this.record.completed = true;
                    this.in_flight.take();
                }
            }
            Poll::Ready(None) => {
                this.record.completed = true;
                // The connection counts as idle from here, not from when hyper drops us.
                this.in_flight.take();
            }
            Poll::Ready(Some(Err(_))) => {
                this.in_flight.take();
            }
            Poll::Pending => {
                if let Some(deadline) = this.deadline.as_pin_mut()
                    && deadline.poll(cx).is_ready()
                {
                    this.in_flight.take();
                    this.record.error = "timeout";
                    let Some(event) = this.timeout_event.take() else {
                        return Poll::Ready(Some(Err(Box::new(DeadlineExceeded))));
                    };
                    *this.done = true;
                    let event = if *this.at_boundary {
                        event
                    } else {
                        // Close the event the upstream left half-sent, so ours parses.
                        let mut b = bytes::BytesMut::from(&b"\n\n"[..]);
                        b.extend_from_slice(&event);
                        b.freeze()
                    };
                    this.record.bytes_out += event.len() as u64;
                    return Poll::Ready(Some(Ok(Frame::data(event))));
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plano_common::test_support::Frames;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn record() -> AccessRecord {
        AccessRecord {
            request_id: "rid".into(),
            listener: Arc::new(crate::access_log::ListenerMetrics::new("l")),
            method: http::Method::POST,
            path: "/v1/chat/completions".into(),
            route: "/v1/chat/completions",
            status: 200,
            bytes_out: 0,
            started: std::time::Instant::now(),
            upstream: "egress",
            completed: false,
            error: "-",
            span: tracing::Span::none(),
        }
    }

    /// hyper polls a body only until it says it has ended (`is_end_stream` after the last
    /// data frame, as a body of known length does): that is a complete answer, and the
    /// request is no longer in flight. (It used to count as incomplete: `completed=false`
    /// in the access log of every non-streamed answer.)
    #[tokio::test]
    async fn a_body_that_ends_with_its_last_frame_is_complete() {
        let counter = Arc::new(AtomicUsize::new(0));
        let inner = ResponseBody::full(Bytes::from_static(b"{\"ok\":true}"));
        let mut body = Box::pin(ResponseBody::new(
            inner,
            None,
            record(),
            InFlight::new(&counter),
        ));
        assert_eq!(counter.load(Ordering::SeqCst), 1);
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap().len(), 11);
        assert!(body.is_end_stream());
        assert!(body.record.completed);
        assert_eq!(body.record.bytes_out, 11);
        assert_eq!(counter.load(Ordering::SeqCst), 0);

        // A streamed body (no declared end) is complete at its `None`, not before.
        let events = Frames::<BoxError>::new([Bytes::from_static(b"data: 1\n\n")]).boxed_unsync();
        let mut body = Box::pin(ResponseBody::new(
            events,
            None,
            record(),
            InFlight::new(&counter),
        ));
        body.frame().await.unwrap().unwrap();
        assert!(!body.record.completed);
        assert_eq!(counter.load(Ordering::SeqCst), 1);
        assert!(body.frame().await.is_none());
        assert!(body.record.completed);
    }
}
