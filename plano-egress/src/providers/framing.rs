//! How a provider frames a streamed answer: SSE, or AWS event-stream (Bedrock Converse)
//! decoded into the same [`SseEvent`]s; and what makes a stream's opening trustworthy
//! enough to commit to (the content type, and a first event that is one of the API's).

use http::HeaderMap;
use plano_common::sse::{DEFAULT_MAX_EVENT_BYTES, SseDecoder, SseEvent};

use super::api::Api;
use super::eventstream;

/// An upstream stream's decoder.
pub enum Framing {
    Sse(SseDecoder),
    Binary(eventstream::Decoder),
}

impl Framing {
    /// The framing `api` streams in.
    pub fn of(api: Api) -> Self {
        match api {
            Api::Converse => Framing::Binary(eventstream::Decoder::new(
                eventstream::DEFAULT_MAX_MESSAGE_BYTES,
            )),
            Api::Chat | Api::Messages | Api::Responses => {
                Framing::Sse(SseDecoder::new(DEFAULT_MAX_EVENT_BYTES))
            }
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        match self {
            Framing::Sse(d) => d.push(data),
            Framing::Binary(d) => d.push(data),
        }
    }

    /// The next whole event (SSE comments and keep-alives are no events).
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, String> {
        match self {
            Framing::Sse(d) => d.next_event().map_err(|e| e.to_string()),
            Framing::Binary(d) => d.next_event().map_err(|e| e.to_string()),
        }
    }

    /// End of body: the event still pending, if any.
    pub fn finish(&mut self) -> Result<Option<SseEvent>, String> {
        match self {
            Framing::Sse(d) => d.finish().map_err(|e| e.to_string()),
            Framing::Binary(d) => d.finish().map_err(|e| e.to_string()),
        }
    }
}

/// Whether a 2xx stream's `content-type` can be `api`'s stream. A missing content type is
/// let through (the first event decides); any other type (an HTML error page, a whole JSON
/// answer where a stream was asked for) cannot.
pub fn check_stream_content_type(api: Api, headers: &HeaderMap) -> Result<(), String> {
    let Some(value) = headers.get(http::header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let expected = match api {
        Api::Converse => eventstream::CONTENT_TYPE,
        Api::Chat | Api::Messages | Api::Responses => "text/event-stream",
    };
    if essence == expected {
        Ok(())
    } else {
        Err(format!(
            "the provider answered a stream request with content type `{}`, not `{expected}`",
            bounded(&essence)
        ))
    }
}

/// Whether `event` can open a stream of `api`: an SSE event must carry a JSON object (a
/// provider's own error event included: it is relayed or translated as the stream's
/// answer), never `[DONE]` before anything else.
pub fn check_first_event(api: Api, event: &SseEvent) -> Result<(), String> {
    if api == Api::Converse {
        // The decoder already checked the frame's checksums and headers.
        return Ok(());
    }
    if event.is_done() {
        return Err("the stream ended before its first event".into());
    }
    match serde_json::from_str::<serde_json::Value>(&event.data) {
        Ok(v) if v.is_object() => Ok(()),
        _ => Err(format!(
            "the provider's first event is not a JSON object: `{}`",
            bounded(&event.data)
        )),
    }
}

fn bounded(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        assert!(check_stream_content_type(Api::Chat, &h).is_ok());
        h.insert(
            "content-type",
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        assert!(check_stream_content_type(Api::Chat, &h).is_ok());
        assert!(check_stream_content_type(Api::Converse, &h).is_err());
        h.insert("content-type", HeaderValue::from_static("text/html"));
        let err = check_stream_content_type(Api::Messages, &h).unwrap_err();
        assert!(err.contains("text/html"), "{err}");
        h.insert(
            "content-type",
            HeaderValue::from_static(eventstream::CONTENT_TYPE),
        );
        assert!(check_stream_content_type(Api::Converse, &h).is_ok());
    }

    #[test]
    fn first_events() {
        assert!(check_first_event(Api::Chat, &SseEvent::data(r#"{"choices":[]}"#)).is_ok());
        assert!(check_first_event(Api::Chat, &SseEvent::data("[DONE]")).is_err());
        assert!(
            check_first_event(Api::Messages, &SseEvent::named("message_start", "<html>")).is_err()
        );
        assert!(check_first_event(Api::Responses, &SseEvent::data("42")).is_err());
    }

    #[test]
    fn comments_are_not_events() {
        let mut f = Framing::of(Api::Chat);
        f.push(b": keep-alive\n\n: still here\n\n");
        assert_eq!(f.next_event().unwrap(), None);
        f.push(b"data: {}\n\n");
        assert_eq!(f.next_event().unwrap(), Some(SseEvent::data("{}")));
    }
}
