//! Server-sent events: an incremental, size-capped decoder and an encoder (shared: the egress
//! translates streams, the edge filters them, MCP filters may answer in SSE).
//!
//! The decoder is fed arbitrary byte chunks (events may be split anywhere, even inside a
//! UTF-8 sequence or a `\r\n`) and yields complete events. A single event larger than the
//! cap is an error rather than unbounded buffering: an upstream that never sends a blank
//! line cannot make us hold its whole body.

use bytes::{BufMut, Bytes, BytesMut};

/// Default cap on one event (field lines included): 4 MiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// One decoded event. `data` is the `data:` lines joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
    pub id: Option<String>,
}

impl SseEvent {
    pub fn data(data: impl Into<String>) -> Self {
        Self {
            data: data.into(),
            ..Self::default()
        }
    }

    pub fn named(event: impl Into<String>, data: impl Into<String>) -> Self {
        Self {
            event: Some(event.into()),
            data: data.into(),
            id: None,
        }
    }

    /// OpenAI's end-of-stream sentinel.
    pub fn is_done(&self) -> bool {
        self.data.trim() == "[DONE]"
    }

    /// Wire form, ending with the blank line.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.data.len() + 32);
        self.encode_into(&mut out);
        out.freeze()
    }

    pub fn encode_into(&self, out: &mut BytesMut) {
        if let Some(event) = &self.event {
            out.put_slice(b"event: ");
            out.put_slice(event.as_bytes());
            out.put_u8(b'\n');
        }
        if let Some(id) = &self.id {
            out.put_slice(b"id: ");
            out.put_slice(id.as_bytes());
            out.put_u8(b'\n');
        }
        for line in self.data.split('\n') {
            out.put_slice(b"data: ");
            out.put_slice(line.as_bytes());
            out.put_u8(b'\n');
        }
        out.put_u8(b'\n');
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an upstream event exceeded {limit} bytes without ending")]
    EventTooLarge { limit: usize },
    #[error("upstream event is not valid UTF-8")]
    InvalidUtf8,
}

/// Incremental decoder. Feed bytes with [`SseDecoder::push`], then drain with
/// [`SseDecoder::next_event`]; call [`SseDecoder::finish`] at end of body to get a final
/// event that lacked its terminating blank line.
#[derive(Debug)]
pub struct SseDecoder {
    buf: BytesMut,
    /// Offset up to which `buf` has been scanned for line ends (so re-scans are linear).
    scanned: usize,
    pending: SseEvent,
    has_fields: bool,
    data_seen: bool,
    event_bytes: usize,
    max_event_bytes: usize,
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_EVENT_BYTES)
    }
}

impl SseDecoder {
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            scanned: 0,
            pending: SseEvent::default(),
            has_fields: false,
            data_seen: false,
            event_bytes: 0,
            max_event_bytes,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event, if the buffered bytes hold one.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, SseError> {
        loop {
            let Some(line_end) = self.find_line_end() else {
                if self.event_bytes + self.buf.len() > self.max_event_bytes {
                    return Err(SseError::EventTooLarge {
                        limit: self.max_event_bytes,
                    });
                }
                return Ok(None);
            };
            let (line_len, term_len) = line_end;
            let line = self.buf.split_to(line_len + term_len);
            self.scanned = 0;
            self.event_bytes += line.len();
            if self.event_bytes > self.max_event_bytes {
                return Err(SseError::EventTooLarge {
                    limit: self.max_event_bytes,
                });
            }
            let line = std::str::from_utf8(&line[..line_len]).map_err(|_| SseError::InvalidUtf8)?;
            if line.is_empty() {
                if let Some(ev) = self.take_pending() {
                    return Ok(Some(ev));
                }
                continue;
            }
            self.apply_line(line);
        }
    }

    /// End of body: the event still pending (a stream that ended without a blank line).
    pub fn finish(&mut self) -> Result<Option<SseEvent>, SseError> {
        if !self.buf.is_empty() {
            let rest = self.buf.split();
            let line = std::str::from_utf8(&rest).map_err(|_| SseError::InvalidUtf8)?;
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            if !line.is_empty() {
                self.apply_line(&line);
            }
        }
        Ok(self.take_pending())
    }

    fn take_pending(&mut self) -> Option<SseEvent> {
        self.event_bytes = 0;
        if !self.has_fields {
            self.pending = SseEvent::default();
            return None;
        }
        self.has_fields = false;
        self.data_seen = false;
        Some(std::mem::take(&mut self.pending))
    }

    /// (line length, terminator length) of the first complete line. A lone `\r` at the very
    /// end of the buffer is not yet a terminator: a `\n` may follow in the next chunk.
    fn find_line_end(&mut self) -> Option<(usize, usize)> {
        let bytes = &self.buf[..];
        // memchr2 looks at many bytes per step: a byte-at-a-time loop here was the
        // largest self cost of a relayed stream (BENCHMARKS.md, "Instructions per request").
        let Some(at) = memchr::memchr2(b'\n', b'\r', &bytes[self.scanned..]) else {
            self.scanned = bytes.len();
            return None;
        };
        let i = self.scanned + at;
        if bytes[i] == b'\n' {
            return Some((i, 1));
        }
        if i + 1 < bytes.len() {
            return Some((i, if bytes[i + 1] == b'\n' { 2 } else { 1 }));
        }
        // A `\r` at the end: whether a `\n` follows is not known yet.
        self.scanned = i;
        None
    }

    fn apply_line(&mut self, line: &str) {
        if line.starts_with(':') {
            return; // comment / keep-alive
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data() {
                    self.pending.data.push('\n');
                }
                self.pending.data.push_str(value);
                self.mark_data();
            }
            "event" => {
                self.pending.event = Some(value.to_string());
                self.has_fields = true;
            }
            "id" => {
                self.pending.id = Some(value.to_string());
                self.has_fields = true;
            }
            _ => {} // `retry` and unknown fields are ignored, as the spec says
        }
    }

    fn has_data(&self) -> bool {
        self.has_fields && self.data_seen
    }

    fn mark_data(&mut self) {
        self.has_fields = true;
        self.data_seen = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut d = SseDecoder::default();
        let mut out = Vec::new();
        for c in chunks {
            d.push(c);
            while let Some(ev) = d.next_event().unwrap() {
                out.push(ev);
            }
        }
        out.extend(d.finish().unwrap());
        out
    }

    #[test]
    fn events_split_anywhere() {
        let wire = b"event: message_start\r\ndata: {\"a\":1}\r\n\r\n: keep-alive\n\ndata: x\ndata: y\n\ndata: [DONE]\n\n";
        let whole = decode_all(&[wire]);
        assert_eq!(
            whole,
            vec![
                SseEvent::named("message_start", "{\"a\":1}"),
                SseEvent::data("x\ny"),
                SseEvent::data("[DONE]"),
            ]
        );
        assert!(whole[2].is_done());
        for split in 1..wire.len() {
            let (a, b) = wire.split_at(split);
            assert_eq!(decode_all(&[a, b]), whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(decode_all(&bytes), whole);
        // Lone `\r` line ends (allowed by the SSE spec), split anywhere too.
        let cr = b"data: a\rdata: b\r\revent: e\rdata: c\r\r";
        let want = vec![SseEvent::data("a\nb"), SseEvent::named("e", "c")];
        for split in 1..cr.len() {
            let (a, b) = cr.split_at(split);
            assert_eq!(decode_all(&[a, b]), want, "split at {split}");
        }
    }

    #[test]
    fn final_event_without_blank_line() {
        assert_eq!(decode_all(&[b"data: last"]), vec![SseEvent::data("last")]);
        assert_eq!(decode_all(&[b"data: last\n"]), vec![SseEvent::data("last")]);
        assert!(decode_all(&[b""]).is_empty());
    }

    #[test]
    fn oversized_event_is_an_error() {
        let mut d = SseDecoder::new(16);
        d.push(b"data: 0123456789abcdefghij");
        assert_eq!(d.next_event(), Err(SseError::EventTooLarge { limit: 16 }));
        let mut d = SseDecoder::new(16);
        d.push(b"data: 01234\ndata: 56789\ndata: abcdef\n");
        assert!(d.next_event().is_err());
    }

    #[test]
    fn encode_round_trips() {
        let ev = SseEvent {
            event: Some("content_block_delta".into()),
            data: "line1\nline2".into(),
            id: Some("7".into()),
        };
        assert_eq!(decode_all(&[&ev.encode()]), vec![ev]);
    }
}
