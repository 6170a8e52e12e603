//! Phase 1: the client's body, read up to the listener's limit and parsed once (400 naming
//! the problem); a Responses `previous_response_id` looked up; and per provider, the body
//! as that provider is sent it (the stored conversation prepended).

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::conversations::ConversationStore;
use crate::error::EgressError;
use crate::providers::api::Api;
use crate::providers::body::{BodyError, ClientBody};
use crate::providers::plan::Route;
use crate::providers::{TranslateError, responses};

/// What the request asked for, read once from the body.
pub struct Ask<'r> {
    pub api: Api,
    /// The body, split at its top level; parsed into a tree only when something needs it.
    pub body: ClientBody<'r>,
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

/// The body of a request to `api`: a JSON object with the fields that API requires. Only
/// its top level is split here (every value is checked to be JSON); the fields the egress
/// reads on every request are read from it.
pub fn parse(api: Api, raw: &Bytes) -> Result<Ask<'_>, EgressError> {
    let body = ClientBody::split(raw).map_err(|e| match e {
        BodyError::Json(e) => bad(
            "invalid_json",
            format!("request body is not valid JSON: {e}"),
        ),
        BodyError::NotAnObject => bad("invalid_request", "request body must be a JSON object"),
        BodyError::TooDeep => bad(
            "invalid_json",
            format!(
                "request body is not valid JSON: arrays and objects nested deeper than {} levels",
                crate::providers::body::MAX_DEPTH
            ),
        ),
    })?;
    let field = |name| body.sent(name).map(RawValue::get).filter(|v| *v != "null");
    let model = match field("model") {
        None => None,
        Some(v) if v.starts_with('"') => Some(
            serde_json::from_str::<String>(v)
                .map_err(|_| bad("invalid_request", "`model` must be a string"))?,
        ),
        Some(_) => return Err(bad("invalid_request", "`model` must be a string")),
    };
    let starts = |name, with: &[char]| field(name).is_some_and(|v| v.starts_with(with));
    match api {
        Api::Chat | Api::Messages if !starts("messages", &['[']) => {
            return Err(bad(
                "invalid_request",
                "`messages` must be a list of messages",
            ));
        }
        Api::Responses if !starts("input", &['[', '"']) => {
            return Err(bad(
                "invalid_request",
                "`input` must be a string or a list of input items",
            ));
        }
        _ => {}
    }
    let stream = match field("stream") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(bad("invalid_request", "`stream` must be a boolean")),
    };
    let client_wants_usage = field("stream_options")
        .and_then(|o| serde_json::from_str::<Value>(o).ok())
        .and_then(|o| o.get("include_usage").and_then(Value::as_bool))
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

/// A body whose tree could not be built (a value serde_json will not hold, such as a
/// number beyond `f64`): the client's mistake, as when it is not JSON at all.
pub fn tree_error(e: TranslateError) -> EgressError {
    bad("invalid_json", e.message)
}

/// Responses: look up `previous_response_id` (an unknown one is decided per provider in
/// [`body_for`]).
/// The store being unreachable is a 503: we cannot tell whether the id is ours.
pub async fn expand_history(
    conversations: &ConversationStore,
    ask: &mut Ask<'_>,
) -> Result<(), EgressError> {
    let Some(prev) = ask
        .body
        .tree()
        .map_err(tree_error)?
        .get("previous_response_id")
    else {
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
    ask: &'a Ask<'_>,
    route: &Route,
) -> Result<Cow<'a, ClientBody<'a>>, EgressError> {
    if ask.api != Api::Responses {
        return Ok(Cow::Borrowed(&ask.body));
    }
    let tree = ask.body.tree().map_err(tree_error)?;
    let Some(prev) = tree.get("previous_response_id").filter(|v| !v.is_null()) else {
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
    let mut body = tree.clone();
    body.remove("previous_response_id");
    let new_items = responses::conversation_items(tree).map_err(translate_error)?;
    let mut input: Vec<Value> = history.as_ref().clone();
    input.extend(new_items);
    body.insert("input".into(), Value::Array(input));
    Ok(Cow::Owned(ClientBody::from_tree(body)))
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
