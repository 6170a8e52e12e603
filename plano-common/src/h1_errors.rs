//! hyper's own HTTP/1 error answers, given the API's error body.
//!
//! When hyper cannot parse a request head (bad request line or header, a head over the
//! buffer limit, a URI too long) it answers by itself, before any of our code sees a
//! request: `Server::on_error` writes a fixed head with `content-length: 0` and closes the
//! connection, with no hook to change it. [`ErrorBodies`] wraps the connection's byte
//! stream and recognises that head on its way out, writing instead a complete response with
//! the same status, `content-type: application/json`, `connection: close`, hyper's `date`
//! and the API's error body (the OpenAI shape of `errors.rs`: the request was never read,
//! so its path — and so its API — is unknown).
//!
//! The check on each write is a few byte comparisons at the end of the buffer: hyper's
//! error head is the last thing it writes on a connection (it closes right after), and our
//! own 4xx answers always carry a body and a `content-type`, so they never end that way.
//! Measured cost: docs/hardening.md.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::errors::ApiError;

/// Between hyper's status line and its `date` value, in the order hyper 1.x writes them.
const MIDDLE: &[u8] = b"\r\nconnection: close\r\ncontent-length: 0\r\ndate: ";
/// An IMF-fixdate (`Tue, 01 Dec 2026 10:41:00 GMT`) is always 29 bytes.
const DATE_LEN: usize = 29;
const END: &[u8] = b"\r\n\r\n";

/// The automatic answers of `hyper::proto::h1::role::Server::on_error`: status line (no
/// CRLF), status, stable code and the message the client reads.
const ANSWERS: [(&[u8], StatusCode, &str, &str); 3] = [
    (
        b"HTTP/1.1 400 Bad Request",
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "bad request line or header: the request head is not valid HTTP/1.1",
    ),
    (
        b"HTTP/1.1 431 Request Header Fields Too Large",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "request_head_too_large",
        "request head too large: at most 64 KiB and 100 header fields",
    ),
    (
        b"HTTP/1.1 414 URI Too Long",
        StatusCode::URI_TOO_LONG,
        "uri_too_long",
        "URI too long",
    ),
];

/// Where hyper's error head starts in `buf` (it is always at the end) and which answer it
/// is. A handful of comparisons for any other write.
fn find_error_head(buf: &[u8]) -> Option<(usize, usize)> {
    let tail = MIDDLE.len() + DATE_LEN + END.len();
    if buf.len() < tail || !buf.ends_with(END) {
        return None;
    }
    let middle_at = buf.len() - tail;
    if &buf[middle_at..middle_at + MIDDLE.len()] != MIDDLE
        || !buf[..buf.len() - END.len()].ends_with(b" GMT")
    {
        return None;
    }
    let before = &buf[..middle_at];
    ANSWERS
        .iter()
        .position(|(line, ..)| before.ends_with(line))
        .map(|i| (middle_at - ANSWERS[i].0.len(), i))
}

/// The complete response that replaces hyper's head `head` (answer `i`).
fn replacement(head: &[u8], i: usize) -> Vec<u8> {
    let (line, status, code, message) = ANSWERS[i];
    let date_at = line.len() + MIDDLE.len();
    let date = &head[date_at..date_at + DATE_LEN];
    let body = ApiError::new(status, code, message).body();
    let mut out = Vec::with_capacity(head.len() + body.len() + 64);
    out.extend_from_slice(line);
    out.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\nconnection: close\r\ndate: ");
    out.extend_from_slice(date);
    out.extend_from_slice(END);
    out.extend_from_slice(&body);
    out
}

/// A replacement being written: hyper is told its `head_len` bytes were written only once
/// all of `bytes` are.
struct Pending {
    bytes: Vec<u8>,
    written: usize,
    head_len: usize,
}

/// A connection's byte stream that gives hyper's bodiless error answers the API's body.
pub(crate) struct ErrorBodies<I> {
    inner: I,
    pending: Option<Pending>,
}

impl<I> ErrorBodies<I> {
    pub(crate) fn new(inner: I) -> Self {
        ErrorBodies {
            inner,
            pending: None,
        }
    }

    #[cfg(test)]
    fn get_ref(&self) -> &I {
        &self.inner
    }
}

impl<I: AsyncWrite + Unpin> ErrorBodies<I> {
    /// Write what is left of the replacement. The replacement stays pending (all written)
    /// until hyper's next write of its head is answered by [`Self::finish`].
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(p) = self.pending.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        while p.written < p.bytes.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &p.bytes[p.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            p.written += n;
        }
        Poll::Ready(Ok(()))
    }

    /// hyper writes its head (again): `Ready(Ok(head_len))` once the replacement is out.
    fn finish(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        ready!(self.drain(cx))?;
        let head_len = self.pending.take().map_or(0, |p| p.head_len);
        Poll::Ready(Ok(head_len))
    }

    /// `buf` ends with hyper's error head at `at`: write what comes before it as is, then
    /// the replacement in its place.
    fn replace(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        at: usize,
        i: usize,
    ) -> Poll<io::Result<usize>> {
        if at > 0 {
            return Pin::new(&mut self.inner).poll_write(cx, &buf[..at]);
        }
        self.pending = Some(Pending {
            bytes: replacement(buf, i),
            written: 0,
            head_len: buf.len(),
        });
        self.finish(cx)
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for ErrorBodies<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for ErrorBodies<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.is_some() {
            // hyper writes the same bytes again until told they were written.
            return this.finish(cx);
        }
        match find_error_head(buf) {
            Some((at, i)) => this.replace(cx, buf, at, i),
            None => Pin::new(&mut this.inner).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.is_some() {
            return this.finish(cx);
        }
        // hyper's error head sits alone in its head buffer, the last slice it hands over.
        let Some(last) = bufs.iter().rposition(|b| !b.is_empty()) else {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        };
        let Some((at, i)) = find_error_head(&bufs[last]) else {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        };
        if last > 0 && bufs[..last].iter().any(|b| !b.is_empty()) {
            // Something before the head: write that first (hyper comes back for the rest).
            return Pin::new(&mut this.inner).poll_write_vectored(cx, &bufs[..last]);
        }
        this.replace(cx, &bufs[last], at, i)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const DATE: &str = "Tue, 01 Dec 2026 10:41:00 GMT";

    fn hyper_head(line: &str) -> Vec<u8> {
        format!("{line}\r\nconnection: close\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n")
            .into_bytes()
    }

    fn parse(out: &[u8]) -> (String, serde_json::Value) {
        let text = String::from_utf8_lossy(out).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        let v = serde_json::from_str(body).unwrap_or_default();
        (head.to_owned(), v)
    }

    #[test]
    fn recognises_each_automatic_answer_and_nothing_else() {
        for (line, status, ..) in ANSWERS {
            let head = hyper_head(std::str::from_utf8(line).unwrap_or_default());
            let (at, i) = find_error_head(&head).unwrap_or((usize::MAX, 0));
            assert_eq!((at, ANSWERS[i].1), (0, status));
            // After the end of an earlier response in the same buffer.
            let mut both = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec();
            both.extend_from_slice(&head);
            assert_eq!(find_error_head(&both).map(|f| f.0), Some(40));
        }
        for other in [
            // Ours: a body and a content type.
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 2\r\ndate: Tue, 01 Dec 2026 10:41:00 GMT\r\n\r\n{}"[..],
            b"HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 10:41:00 GMT\r\n\r\n",
            b"0\r\n\r\n",
            b"data: x\n\n",
            b"",
        ] {
            assert_eq!(find_error_head(other), None, "{}", String::from_utf8_lossy(other));
        }
    }

    #[tokio::test]
    async fn the_replacement_is_a_complete_json_answer_with_hyper_status_and_date() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let mut w = ErrorBodies::new(server);
        w.write_all(&hyper_head("HTTP/1.1 431 Request Header Fields Too Large"))
            .await
            .unwrap();
        w.shutdown().await.unwrap();
        drop(w);
        let mut out = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut { client }, &mut out)
            .await
            .unwrap();
        let (head, v) = parse(&out);
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(
            head.contains("\r\ncontent-type: application/json\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
        assert!(head.contains(&format!("\r\ndate: {DATE}")), "{head}");
        let body_len = out.len() - head.len() - 4;
        assert!(
            head.contains(&format!("content-length: {body_len}\r\n")),
            "{head}"
        );
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "request_head_too_large");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("request head too large")
        );
    }

    /// A writer that takes at most `n` bytes per call and is `Pending` every other call.
    struct Trickle {
        out: Vec<u8>,
        n: usize,
        flip: bool,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.flip = !this.flip;
            if this.flip {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(this.n);
            this.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn partial_writes_report_hyper_bytes_only_when_the_replacement_is_out() {
        let before = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec();
        let mut buf = before.clone();
        buf.extend_from_slice(&hyper_head("HTTP/1.1 400 Bad Request"));
        let mut w = ErrorBodies::new(Trickle {
            out: Vec::new(),
            n: 7,
            flip: false,
        });
        // hyper's loop: write what is left until all of it was accepted.
        let mut left = &buf[..];
        while !left.is_empty() {
            let n = w.write(left).await.unwrap();
            assert!(n > 0);
            left = &left[n..];
            // hyper's head is accepted all at once, after the replacement drained.
            assert!(left.is_empty() || left.len() >= buf.len() - before.len());
        }
        w.flush().await.unwrap();
        let out = &w.get_ref().out;
        assert_eq!(&out[..before.len()], &before[..]);
        let (head, v) = parse(&out[before.len()..]);
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert_eq!(v["error"]["code"], "invalid_request");
        // Anything hyper writes after it passes through untouched.
        w.write_all(b"x").await.unwrap();
        assert_eq!(w.get_ref().out.last(), Some(&b'x'));
    }

    #[tokio::test]
    async fn vectored_writes_replace_the_head_slice() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let mut w = ErrorBodies::new(server);
        let head = hyper_head("HTTP/1.1 414 URI Too Long");
        let slices = [io::IoSlice::new(b""), io::IoSlice::new(&head)];
        let n = std::future::poll_fn(|cx| Pin::new(&mut w).poll_write_vectored(cx, &slices))
            .await
            .unwrap();
        assert_eq!(n, head.len());
        w.shutdown().await.unwrap();
        drop(w);
        let mut out = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut { client }, &mut out)
            .await
            .unwrap();
        let (head, v) = parse(&out);
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert_eq!(v["error"]["code"], "uri_too_long");
    }
}
