//! AWS event-stream framing (`application/vnd.amazon.eventstream`), the binary body of
//! Bedrock's `converse-stream`: an incremental, size-capped decoder and a small encoder.
//!
//! A message is `total length (u32) | headers length (u32) | prelude CRC (u32) | headers |
//! payload | message CRC (u32)`, big-endian, both CRCs CRC-32/ISO-HDLC (the prelude CRC
//! covers the first 8 bytes, the message CRC everything before it). Headers are `name
//! length (u8) | name | value type (u8) | value`; every value type of the format is parsed
//! so that unknown headers can be skipped, but only string headers (type 7) are kept.
//!
//! The decoder mirrors [`plano_common::sse::SseDecoder`] so that the stream code treats both
//! framings alike: each message becomes an [`SseEvent`].
//! - `:message-type: event` → `SseEvent { event: <:event-type>, data: <payload as UTF-8> }`.
//! - `:message-type: exception` (and the older `error` type) → an *event*, not an `Err`:
//!   `SseEvent { event: "exception", data: {"type": <:exception-type>, "message": …} }`.
//!   The framing was intact, so it is the provider speaking; the upstream stream translator
//!   (`bedrock::StreamToChat`) turns it into an error with the provider's own words.
//!   `Err` is kept for broken framing, where nothing after it can be trusted.
//! - Other message types are skipped, as AWS SDKs do with types they do not know.
//!
//! The prelude CRC is checked as soon as 12 bytes are in, and a declared length above the
//! cap is an error before its body is buffered, so garbage or a hostile length cannot make
//! us wait for or hold gigabytes. After an `Err` the decoder must not be used again.

use bytes::{Buf, BytesMut};
use serde_json::{Value, json};

use plano_common::sse::SseEvent;

/// Default cap on one message: 4 MiB (Bedrock's events are a few hundred bytes).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The media type of an event-stream body.
pub const CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";

const PRELUDE_LEN: usize = 12;
/// Prelude plus message CRC: a message with no headers and no payload.
const MIN_MESSAGE_LEN: usize = PRELUDE_LEN + 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventStreamError {
    #[error("an upstream event-stream message of {len} bytes exceeds the {limit}-byte limit")]
    MessageTooLarge { len: usize, limit: usize },
    #[error("upstream event-stream prelude checksum mismatch")]
    PreludeCrc,
    #[error("upstream event-stream message checksum mismatch")]
    MessageCrc,
    #[error("malformed upstream event-stream message: {0}")]
    Malformed(&'static str),
    #[error("upstream event-stream payload is not valid UTF-8")]
    InvalidUtf8,
    #[error("upstream event stream ended inside a message ({0} bytes left over)")]
    Truncated(usize),
}

/// Incremental decoder: [`Decoder::push`] bytes as they arrive, drain with
/// [`Decoder::next_event`], and call [`Decoder::finish`] at the end of the body.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    max_message_bytes: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MESSAGE_BYTES)
    }
}

impl Decoder {
    pub fn new(max_message_bytes: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_message_bytes,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete message as an event, if the buffered bytes hold one.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, EventStreamError> {
        loop {
            let Some(message) = self.next_message()? else {
                return Ok(None);
            };
            if let Some(event) = to_event(&message)? {
                return Ok(Some(event));
            }
        }
    }

    /// End of body: bytes left over mean the upstream stopped inside a message. Never an
    /// event (every message carries its own length, unlike SSE's last event); the `Option`
    /// keeps the shape of [`plano_common::sse::SseDecoder::finish`].
    pub fn finish(&mut self) -> Result<Option<SseEvent>, EventStreamError> {
        match self.buf.len() {
            0 => Ok(None),
            n => Err(EventStreamError::Truncated(n)),
        }
    }

    /// Split off one whole, checksum-verified message.
    fn next_message(&mut self) -> Result<Option<BytesMut>, EventStreamError> {
        if self.buf.len() < PRELUDE_LEN {
            return Ok(None);
        }
        let total = be_u32(&self.buf[0..4]) as usize;
        let headers_len = be_u32(&self.buf[4..8]) as usize;
        if crc32fast::hash(&self.buf[0..8]) != be_u32(&self.buf[8..12]) {
            return Err(EventStreamError::PreludeCrc);
        }
        if total < MIN_MESSAGE_LEN {
            return Err(EventStreamError::Malformed(
                "total length shorter than a message",
            ));
        }
        if headers_len > total - MIN_MESSAGE_LEN {
            return Err(EventStreamError::Malformed(
                "headers length exceeds the message",
            ));
        }
        if total > self.max_message_bytes {
            return Err(EventStreamError::MessageTooLarge {
                len: total,
                limit: self.max_message_bytes,
            });
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let message = self.buf.split_to(total);
        let (body, crc) = message.split_at(total - 4);
        if crc32fast::hash(body) != be_u32(crc) {
            return Err(EventStreamError::MessageCrc);
        }
        Ok(Some(message))
    }
}

/// The headers this module acts on; all others are parsed only to be skipped.
#[derive(Debug, Default)]
struct Headers {
    message_type: Option<String>,
    event_type: Option<String>,
    exception_type: Option<String>,
    error_code: Option<String>,
    error_message: Option<String>,
}

fn to_event(message: &[u8]) -> Result<Option<SseEvent>, EventStreamError> {
    let headers_len = be_u32(&message[4..8]) as usize;
    let headers_end = PRELUDE_LEN + headers_len;
    let headers = parse_headers(&message[PRELUDE_LEN..headers_end])?;
    let payload = &message[headers_end..message.len() - 4];
    match headers.message_type.as_deref().unwrap_or("event") {
        "event" => {
            let name = headers
                .event_type
                .ok_or(EventStreamError::Malformed("event without :event-type"))?;
            let data = std::str::from_utf8(payload).map_err(|_| EventStreamError::InvalidUtf8)?;
            Ok(Some(SseEvent::named(name, data)))
        }
        "exception" => {
            let kind = headers
                .exception_type
                .unwrap_or_else(|| "exception".to_string());
            Ok(Some(exception_event(&kind, payload_message(payload))))
        }
        "error" => {
            let kind = headers.error_code.unwrap_or_else(|| "error".to_string());
            let message = headers
                .error_message
                .unwrap_or_else(|| payload_message(payload));
            Ok(Some(exception_event(&kind, message)))
        }
        _ => Ok(None),
    }
}

fn exception_event(kind: &str, message: String) -> SseEvent {
    SseEvent::named(
        "exception",
        json!({ "type": kind, "message": message }).to_string(),
    )
}

/// An exception's payload is `{"message": "..."}` (some services spell it `Message`); if it
/// is something else, its text is the best message there is.
fn payload_message(payload: &[u8]) -> String {
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(payload) {
        for key in ["message", "Message"] {
            if let Some(Value::String(m)) = map.get(key) {
                return m.clone();
            }
        }
    }
    String::from_utf8_lossy(payload).into_owned()
}

fn parse_headers(mut raw: &[u8]) -> Result<Headers, EventStreamError> {
    const SHORT: EventStreamError = EventStreamError::Malformed("header runs past its section");
    let mut headers = Headers::default();
    while raw.has_remaining() {
        let name_len = usize::from(raw.try_get_u8().map_err(|_| SHORT)?);
        if name_len == 0 {
            return Err(EventStreamError::Malformed("empty header name"));
        }
        let name = take(&mut raw, name_len).ok_or(SHORT)?;
        let value_type = raw.try_get_u8().map_err(|_| SHORT)?;
        let fixed = match value_type {
            0 | 1 => Some(0), // bool true / false: the type is the value
            2 => Some(1),     // byte
            3 => Some(2),     // short
            4 => Some(4),     // integer
            5 | 8 => Some(8), // long, timestamp (ms since epoch)
            9 => Some(16),    // uuid
            6 | 7 => None,    // byte array, string: u16 length prefix
            _ => return Err(EventStreamError::Malformed("unknown header value type")),
        };
        let value = match fixed {
            Some(n) => take(&mut raw, n).ok_or(SHORT)?,
            None => {
                let len = usize::from(raw.try_get_u16().map_err(|_| SHORT)?);
                take(&mut raw, len).ok_or(SHORT)?
            }
        };
        if value_type != 7 {
            continue;
        }
        let slot = match name {
            b":message-type" => &mut headers.message_type,
            b":event-type" => &mut headers.event_type,
            b":exception-type" => &mut headers.exception_type,
            b":error-code" => &mut headers.error_code,
            b":error-message" => &mut headers.error_message,
            _ => continue,
        };
        let value = std::str::from_utf8(value)
            .map_err(|_| EventStreamError::Malformed("header value is not valid UTF-8"))?;
        *slot = Some(value.to_string());
    }
    Ok(headers)
}

fn take<'a>(raw: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if raw.len() < n {
        return None;
    }
    let (head, rest) = raw.split_at(n);
    *raw = rest;
    Some(head)
}

fn be_u32(b: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    for (dst, src) in word.iter_mut().zip(b) {
        *dst = *src;
    }
    u32::from_be_bytes(word)
}

/// One message with string headers, as Bedrock sends them (for tests and mock providers).
/// A header name over 255 bytes or a value over 65,535 bytes cannot be framed: such a
/// header is left out rather than written corrupt.
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut header_bytes = Vec::new();
    for (name, value) in headers {
        let (Ok(name_len), Ok(value_len)) = (u8::try_from(name.len()), u16::try_from(value.len()))
        else {
            continue;
        };
        header_bytes.push(name_len);
        header_bytes.extend_from_slice(name.as_bytes());
        header_bytes.push(7);
        header_bytes.extend_from_slice(&value_len.to_be_bytes());
        header_bytes.extend_from_slice(value.as_bytes());
    }
    frame(&header_bytes, payload)
}

/// A message around already-encoded header bytes. Lengths beyond `u32` (4 GiB) saturate,
/// which yields a message decoders reject rather than a panic.
pub(crate) fn frame(header_bytes: &[u8], payload: &[u8]) -> Vec<u8> {
    let total = MIN_MESSAGE_LEN + header_bytes.len() + payload.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&u32::try_from(total).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(
        &u32::try_from(header_bytes.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(header_bytes);
    out.extend_from_slice(payload);
    let message_crc = crc32fast::hash(&out);
    out.extend_from_slice(&message_crc.to_be_bytes());
    out
}

/// A Bedrock stream event as the service frames it.
pub fn encode_event(event_type: &str, payload: &[u8]) -> Vec<u8> {
    encode(
        &[
            (":event-type", event_type),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload,
    )
}

/// A Bedrock stream exception as the service frames it; `message` is the human text.
pub fn encode_exception(exception_type: &str, message: &str) -> Vec<u8> {
    let payload = json!({ "message": message }).to_string();
    encode(
        &[
            (":exception-type", exception_type),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        payload.as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(chunks: &[&[u8]]) -> Result<Vec<SseEvent>, EventStreamError> {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for c in chunks {
            d.push(c);
            while let Some(ev) = d.next_event()? {
                out.push(ev);
            }
        }
        assert_eq!(d.finish()?, None);
        Ok(out)
    }

    #[test]
    fn framing_lengths_and_crc_algorithm() {
        let wire = encode(&[("event-type", "x")], b"{}");
        let header_len = 1 + 10 + 1 + 2 + 1;
        assert_eq!(wire.len(), 16 + header_len + 2);
        assert_eq!(be_u32(&wire[0..4]) as usize, wire.len());
        assert_eq!(be_u32(&wire[4..8]) as usize, header_len);
        assert_eq!(crc32fast::hash(&wire[0..8]), be_u32(&wire[8..12]));
        // CRC-32/ISO-HDLC check value, to pin the algorithm.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    }

    /// The byte-exact messages of the AWS C event-stream library's test suite, so that our
    /// framing is checked against an implementation other than our own.
    #[test]
    fn matches_the_aws_reference_vectors() {
        let empty = [
            0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98,
            0xc8, 0xff,
        ];
        assert_eq!(encode(&[], b""), empty);
        let mut one_header = vec![0x00, 0x00, 0x00, 0x3D, 0x00, 0x00, 0x00, 0x20];
        one_header.extend_from_slice(&[0x07, 0xFD, 0x83, 0x96, 0x0C]);
        one_header.extend_from_slice(b"content-type");
        one_header.extend_from_slice(&[0x07, 0x00, 0x10]);
        one_header.extend_from_slice(b"application/json");
        one_header.extend_from_slice(b"{'foo':'bar'}");
        one_header.extend_from_slice(&[0x8D, 0x9C, 0x08, 0xB1]);
        assert_eq!(
            encode(&[("content-type", "application/json")], b"{'foo':'bar'}"),
            one_header
        );
        let mut d = Decoder::default();
        d.push(&one_header);
        let message = d.next_message().unwrap().unwrap();
        assert_eq!(&message[..], &one_header[..]);
    }

    #[test]
    fn round_trip_split_at_every_offset() {
        let mut wire = encode_event("messageStart", br#"{"role":"assistant","p":"abc"}"#);
        wire.extend(encode_event(
            "contentBlockDelta",
            "{\"contentBlockIndex\":0,\"delta\":{\"text\":\"h\u{e9}llo\"}}".as_bytes(),
        ));
        wire.extend(encode_exception("throttlingException", "slow down"));
        let whole = decode_all(&[&wire]).unwrap();
        assert_eq!(
            whole,
            vec![
                SseEvent::named("messageStart", r#"{"role":"assistant","p":"abc"}"#),
                SseEvent::named(
                    "contentBlockDelta",
                    "{\"contentBlockIndex\":0,\"delta\":{\"text\":\"h\u{e9}llo\"}}"
                ),
                SseEvent::named(
                    "exception",
                    r#"{"message":"slow down","type":"throttlingException"}"#
                ),
            ]
        );
        for split in 0..=wire.len() {
            let (a, b) = wire.split_at(split);
            assert_eq!(decode_all(&[a, b]).unwrap(), whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(decode_all(&bytes).unwrap(), whole);
    }

    #[test]
    fn message_without_event_type_is_malformed() {
        let wire = encode(&[(":message-type", "event")], b"{}");
        assert_eq!(
            decode_all(&[&wire]),
            Err(EventStreamError::Malformed("event without :event-type"))
        );
    }

    #[test]
    fn unknown_message_types_are_skipped() {
        let mut wire = encode(&[(":message-type", "ping")], b"");
        wire.extend(encode_event("messageStop", b"{}"));
        assert_eq!(
            decode_all(&[&wire]).unwrap(),
            vec![SseEvent::named("messageStop", "{}")]
        );
    }

    #[test]
    fn error_message_type_becomes_an_exception_event() {
        let wire = encode(
            &[
                (":message-type", "error"),
                (":error-code", "InternalFailure"),
                (":error-message", "boom"),
            ],
            b"",
        );
        assert_eq!(
            decode_all(&[&wire]).unwrap(),
            vec![SseEvent::named(
                "exception",
                r#"{"message":"boom","type":"InternalFailure"}"#
            )]
        );
        // An exception whose payload is not JSON keeps its text.
        let wire = encode(
            &[
                (":message-type", "exception"),
                (":exception-type", "modelStreamErrorException"),
            ],
            b"plain words",
        );
        assert_eq!(
            decode_all(&[&wire]).unwrap(),
            vec![SseEvent::named(
                "exception",
                r#"{"message":"plain words","type":"modelStreamErrorException"}"#
            )]
        );
    }

    #[test]
    fn bad_prelude_crc() {
        let mut wire = encode_event("messageStop", b"{}");
        wire[9] ^= 0x01;
        let mut d = Decoder::default();
        // Reported as soon as the prelude is in, before the body arrives.
        d.push(&wire[..12]);
        assert_eq!(d.next_event(), Err(EventStreamError::PreludeCrc));
    }

    #[test]
    fn bad_message_crc() {
        for at in [14, 40] {
            let mut wire = encode_event("messageStop", br#"{"stopReason":"end_turn"}"#);
            assert!(at < wire.len() - 4);
            wire[at] ^= 0x20;
            assert_eq!(
                decode_all(&[&wire]),
                Err(EventStreamError::MessageCrc),
                "{at}"
            );
        }
        let mut wire = encode_event("messageStop", b"{}");
        let last = wire.len() - 1;
        wire[last] ^= 0xff;
        assert_eq!(decode_all(&[&wire]), Err(EventStreamError::MessageCrc));
    }

    /// Every header value type of the format, before and after the string we need.
    #[test]
    fn a_header_of_each_type() {
        let mut h = Vec::new();
        let string = |s: &str| {
            let mut v = (s.len() as u16).to_be_bytes().to_vec();
            v.extend_from_slice(s.as_bytes());
            v
        };
        let mut put = |name: &str, ty: u8, value: &[u8]| {
            h.push(name.len() as u8);
            h.extend_from_slice(name.as_bytes());
            h.push(ty);
            h.extend_from_slice(value);
        };
        put("t", 0, &[]);
        put("f", 1, &[]);
        put("byte", 2, &[0xff]);
        put("short", 3, &[0x80, 0x01]);
        put("int", 4, &[1, 2, 3, 4]);
        put("long", 5, &[1, 2, 3, 4, 5, 6, 7, 8]);
        put("bytes", 6, &[0, 3, 0xde, 0xad, 0xff]);
        put(":event-type", 7, &string("messageStop"));
        put("ts", 8, &[0, 0, 1, 0x8c, 0, 0, 0, 0]);
        put("uuid", 9, &[7; 16]);
        put(":message-type", 7, &string("event"));
        let wire = frame(&h, b"{}");
        assert_eq!(
            decode_all(&[&wire]).unwrap(),
            vec![SseEvent::named("messageStop", "{}")]
        );
        // An unknown value type cannot be skipped: the message is malformed.
        let mut bad = h.clone();
        bad.extend_from_slice(&[1, b'x', 10]);
        assert_eq!(
            decode_all(&[&frame(&bad, b"{}")]),
            Err(EventStreamError::Malformed("unknown header value type"))
        );
        // A value running past the headers section.
        let mut bad = h;
        bad.extend_from_slice(&[1, b'x', 7, 0, 9, b'a']);
        assert_eq!(
            decode_all(&[&frame(&bad, b"{}")]),
            Err(EventStreamError::Malformed("header runs past its section"))
        );
    }

    #[test]
    fn oversized_message_is_refused_before_buffering() {
        let wire = encode_event("contentBlockDelta", &[b'x'; 200]);
        let mut d = Decoder::new(100);
        d.push(&wire[..12]);
        assert_eq!(
            d.next_event(),
            Err(EventStreamError::MessageTooLarge {
                len: wire.len(),
                limit: 100
            })
        );
        // At the limit exactly is fine.
        let mut d = Decoder::new(wire.len());
        d.push(&wire);
        assert!(d.next_event().unwrap().is_some());
    }

    #[test]
    fn lengths_that_cannot_hold_a_message() {
        let mut short = Vec::new();
        short.extend_from_slice(&8u32.to_be_bytes());
        short.extend_from_slice(&0u32.to_be_bytes());
        short.extend_from_slice(&crc32fast::hash(&short).to_be_bytes());
        assert_eq!(
            decode_all(&[&short]),
            Err(EventStreamError::Malformed(
                "total length shorter than a message"
            ))
        );
        let mut long_headers = Vec::new();
        long_headers.extend_from_slice(&20u32.to_be_bytes());
        long_headers.extend_from_slice(&5u32.to_be_bytes());
        long_headers.extend_from_slice(&crc32fast::hash(&long_headers).to_be_bytes());
        assert_eq!(
            decode_all(&[&long_headers]),
            Err(EventStreamError::Malformed(
                "headers length exceeds the message"
            ))
        );
    }

    #[test]
    fn invalid_utf8_payload() {
        let wire = encode_event("contentBlockDelta", &[b'{', 0xff, b'}']);
        assert_eq!(decode_all(&[&wire]), Err(EventStreamError::InvalidUtf8));
    }

    #[test]
    fn trailing_garbage_and_truncation() {
        let mut wire = encode_event("messageStop", b"{}");
        wire.extend_from_slice(b"xyz");
        let mut d = Decoder::default();
        d.push(&wire);
        assert!(d.next_event().unwrap().is_some());
        assert_eq!(d.next_event(), Ok(None));
        assert_eq!(d.finish(), Err(EventStreamError::Truncated(3)));

        let wire = encode_event("messageStop", b"{}");
        let mut d = Decoder::default();
        d.push(&wire[..wire.len() - 1]);
        assert_eq!(d.next_event(), Ok(None));
        assert_eq!(d.finish(), Err(EventStreamError::Truncated(wire.len() - 1)));

        // Garbage that happens to be long enough fails on its prelude CRC, not by waiting.
        let mut d = Decoder::default();
        d.push(b"HTTP/1.1 500 Internal Server Error\r\n");
        assert_eq!(d.next_event(), Err(EventStreamError::PreludeCrc));
    }

    #[test]
    fn encode_skips_unframeable_headers() {
        let long_name = "n".repeat(256);
        let wire = encode(&[(&long_name, "v"), (":event-type", "e")], b"");
        assert_eq!(
            decode_all(&[&wire]).unwrap(),
            vec![SseEvent::named("e", "")]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            split in any::<prop::sample::Index>(),
        ) {
            let at = split.index(bytes.len() + 1);
            let (a, b) = bytes.split_at(at);
            let _ = decode_all(&[a, b]);
        }

        /// Valid frames with a few bytes flipped: an error or events, never a panic.
        #[test]
        fn corrupted_frames_never_panic(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut wire = encode_event("contentBlockDelta", br#"{"delta":{"text":"x"}}"#);
            wire.extend(encode_exception("validationException", "bad"));
            for (i, x) in flips {
                let i = i.index(wire.len());
                wire[i] ^= x;
            }
            let cut = cut.index(wire.len() + 1);
            let _ = decode_all(&[&wire[..cut], &wire[cut..]]);
        }

        #[test]
        fn round_trip(
            events in proptest::collection::vec(("[a-zA-Z]{1,20}", ".{0,64}"), 0..6),
            splits in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        ) {
            let mut wire = Vec::new();
            for (name, data) in &events {
                wire.extend(encode_event(name, data.as_bytes()));
            }
            let mut cuts: Vec<usize> = splits.iter().map(|s| s.index(wire.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut from = 0;
            for c in cuts {
                chunks.push(&wire[from..c]);
                from = c;
            }
            chunks.push(&wire[from..]);
            let decoded = decode_all(&chunks).unwrap();
            let expected: Vec<SseEvent> = events
                .iter()
                .map(|(n, d)| SseEvent::named(n.clone(), d.clone()))
                .collect();
            prop_assert_eq!(decoded, expected);
        }
    }
}
