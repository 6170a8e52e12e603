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
use crate::listener::InFlight;

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
    }

    impl PinnedDrop for ResponseBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
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
        }
    }

    pub(crate) fn full(bytes: Bytes) -> Inner {
        http_body_util::Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync()
    }
}

/// Read a (size-limited) request body whole, for the input filters: over the limit is 413,
/// a client that stops sending mid-body is 400.
pub(crate) async fn read_request(
    body: Inner,
    max_body: usize,
    shape: plano_common::errors::ApiShape,
) -> Result<Bytes, plano_common::errors::ApiError> {
    use plano_common::errors::ApiError;
    match body.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::new(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body is larger than the limit of {max_body} bytes"),
            )
            .with_shape(shape))
        }
        Err(e) => Err(ApiError::new(
            http::StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("the request body could not be read: {e}"),
        )
        .with_shape(shape)),
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
        let this = self.project();
        if let Some(deadline) = this.deadline.as_pin_mut()
            && deadline.poll(cx).is_ready()
        {
            this.in_flight.take();
            return Poll::Ready(Some(Err(Box::new(DeadlineExceeded))));
        }
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.record.bytes_out += data.len() as u64;
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
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
