//! Phase 1: the client's body, read up to the listener's limit and parsed once (400 naming
//! the problem); a Responses `previous_response_id` looked up; and per provider, the body
//! as that provider is sent it (the stored conversation prepended).

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Map, Value};

use crate::conversations::ConversationStore;
use crate::error::EgressError;
use crate::providers::api::Api;
use crate::providers::plan::Route;
use crate::providers::{TranslateError, responses};

/// What the request asked for, read once from the body.
pub struct Ask {
    pub api: Api,
    pub body: Map<String, Value>,
    pub model: Option<String>,
    pub stream: bool,
    pub client_wants_usage: bool,
    /// Responses: the conversation stored under `previous_response_id`, when one was given
    /// and found (prepended to the input for every provider).
    pub history: Option<Arc<Vec<Value>>>,
    /// Responses: the id of the answer, chosen here so it can be stored under it.
    pub response_id: String,
}

pub fn bad(code: &'static str, message: impl Into<String>) -> EgressError {
    EgressError::BadRequest {
        code,
        message: message.into(),
    }
}

/// Read a request body up to the listener's limit (413 beyond it).
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, EgressError> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(EgressError::PayloadTooLarge { limit })
        }
        Err(e) => Err(bad(
            "invalid_request",
            format!("could not read the request body: {e}"),
        )),
    }
}

/// The body of a request to `api`: a JSON object with the fields that API requires.
pub fn parse(api: Api, body: &Bytes) -> Result<Ask, EgressError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        bad(
            "invalid_json",
            format!("request body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(body) = value else {
        return Err(bad("invalid_request", "request body must be a JSON object"));
    };
    let model = match body.get("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(bad("invalid_request", "`model` must be a string")),
    };
    match api {
        Api::Chat | Api::Messages if !matches!(body.get("messages"), Some(Value::Array(_))) => {
            return Err(bad(
                "invalid_request",
                "`messages` must be a list of messages",
            ));
        }
        Api::Responses
            if !matches!(body.get("input"), Some(Value::Array(_) | Value::String(_))) =>
        {
            return Err(bad(
                "invalid_request",
                "`input` must be a string or a list of input items",
            ));
        }
        _ => {}
    }
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("invalid_request", "`stream` must be a boolean")),
    };
    let client_wants_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Ask {
        api,
        body,
        model,
        stream,
        client_wants_usage,
        history: None,
        // Only Responses answers carry an id of ours; chat requests skip the UUID.
        response_id: if api == Api::Responses {
            format!("resp_{}", uuid::Uuid::new_v4().simple())
        } else {
            String::new()
        },
    })
}

/// Responses: look up `previous_response_id` (an unknown one is decided per provider in
/// [`body_for`]).
/// The store being unreachable is a 503: we cannot tell whether the id is ours.
pub async fn expand_history(
    conversations: &ConversationStore,
    ask: &mut Ask,
) -> Result<(), EgressError> {
    let Some(prev) = ask.body.get("previous_response_id") else {
        return Ok(());
    };
    let Value::String(id) = prev else {
        if prev.is_null() {
            return Ok(());
        }
        return Err(bad(
            "invalid_request",
            "`previous_response_id` must be a string",
        ));
    };
    ask.history = conversations
        .get(id)
        .await
        .map_err(|_| EgressError::StateUnavailable)?
        .map(Arc::new);
    Ok(())
}

/// The client's body as sent to a provider on `route`. Responses: a known
/// `previous_response_id` is replaced by the stored conversation prepended to the input
/// (so any provider, native or translated, sees the whole conversation); an unknown one is
/// passed through to a native provider (OpenAI keeps its own state) and is a 409 otherwise.
pub fn body_for<'a>(
    ask: &'a Ask,
    route: &Route,
) -> Result<Cow<'a, Map<String, Value>>, EgressError> {
    if ask.api != Api::Responses {
        return Ok(Cow::Borrowed(&ask.body));
    }
    let Some(prev) = ask
        .body
        .get("previous_response_id")
        .filter(|v| !v.is_null())
    else {
        return Ok(Cow::Borrowed(&ask.body));
    };
    let Some(history) = &ask.history else {
        if route.native() {
            return Ok(Cow::Borrowed(&ask.body));
        }
        return Err(EgressError::Conflict(format!(
            "previous_response_id `{}` is not known here: it expired, was stored with `store: false`, or was issued by another replica or by the provider directly",
            prev.as_str().unwrap_or_default()
        )));
    };
    let mut body = ask.body.clone();
    body.remove("previous_response_id");
    let new_items = responses::conversation_items(&ask.body).map_err(translate_error)?;
    let mut input: Vec<Value> = history.as_ref().clone();
    input.extend(new_items);
    body.insert("input".into(), Value::Array(input));
    Ok(Cow::Owned(body))
}

/// A client body a translation refused: 400 naming the field.
pub fn translate_error(e: TranslateError) -> EgressError {
    EgressError::BadRequest {
        code: "invalid_request",
        message: match &e.param {
            Some(p) => format!("{} (at `{p}`)", e.message),
            None => e.message,
        },
    }
}
