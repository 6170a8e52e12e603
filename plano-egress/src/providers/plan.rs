//! How one request travels to one provider and back: which API it is sent in, the
//! upstream path and body, and how the answer is turned into what the client expects.
//! Every call into a family module (`anthropic`, `responses`, `bedrock`) is made here,
//! so the request path in `dispatch/` never sees a wire format.

use std::borrow::Cow;

use bytes::Bytes;
use plano_config::{Provider, ProviderApi};
use serde_json::{Map, Value};

use super::api::Api;
use super::body::{self, ClientBody};
use super::top_level;
use super::upstream_request::{self, Prepared};
use super::usage::Usage;
use super::{
    ClientStream, TranslateError, UpstreamStream, anthropic, bedrock, hosted, openai, responses,
};

/// The API a provider is spoken to in, for a client speaking `client`.
pub fn upstream_api(provider: &Provider, client: Api) -> Api {
    match provider.api {
        ProviderApi::Anthropic => Api::Messages,
        ProviderApi::Bedrock => Api::Converse,
        ProviderApi::OpenAi if client == Api::Responses && openai::serves_responses(provider) => {
            Api::Responses
        }
        ProviderApi::OpenAi | ProviderApi::AzureOpenAi => Api::Chat,
    }
}

/// `anthropic_version` in the body of Anthropic requests on Vertex AI.
pub const VERTEX_ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// The path (under the provider's base URL) for `api`.
pub fn upstream_path(provider: &Provider, api: Api, stream: bool) -> String {
    match api {
        Api::Messages if provider.prefix == "vertex_ai" => format!(
            "{}/publishers/anthropic/models/{}:{}",
            provider.path_prefix,
            encode_path_segment(&provider.model_id),
            if stream {
                "streamRawPredict"
            } else {
                "rawPredict"
            }
        ),
        Api::Chat | Api::Messages => provider.chat_path(),
        Api::Responses => format!("{}/responses", provider.path_prefix),
        Api::Converse => format!(
            "{}/model/{}/{}",
            provider.path_prefix,
            encode_path_segment(&provider.model_id),
            if stream {
                "converse-stream"
            } else {
                "converse"
            }
        ),
    }
}

/// The upstream URI for `api`: where [`upstream_path`] is the provider's chat path, the
/// one prepared with the runtime (formatting and parsing a URI per request was ~1,500
/// instructions).
pub fn upstream_uri(
    provider: &Provider,
    prepared: &Prepared,
    api: Api,
    stream: bool,
) -> Result<http::Uri, String> {
    match api {
        Api::Messages if provider.prefix == "vertex_ai" => {}
        Api::Chat | Api::Messages => return Ok(prepared.chat_uri().clone()),
        Api::Responses | Api::Converse => {}
    }
    upstream_request::uri(provider, &upstream_path(provider, api, stream))
}

/// Percent-encode everything but RFC 3986 unreserved characters: Bedrock model ids carry
/// `:` and inference-profile ARNs carry `/`.
fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One request's route: the client's API and the provider's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub client: Api,
    pub upstream: Api,
    /// OpenAI's own API (and Azure's) wants `max_completion_tokens`: its reasoning models
    /// refuse `max_tokens`, which the translations produce.
    completion_tokens_name: bool,
    /// What a translated request does with a hosted tool the provider has no equivalent
    /// for (`hosted_tools` in the provider's config).
    hosted: hosted::Policy,
    /// ChatGPT's Codex backend: Responses bodies adjusted as it wants them.
    chatgpt: bool,
    /// Vertex AI's OpenAI-compatible endpoint names models `<publisher>/<model>`: a bare
    /// Gemini id gets `google/`.
    vertex: bool,
}

/// What the client asked, as the translations need it.
pub struct ClientRequest<'a> {
    pub api: Api,
    /// The client's body (for Responses: with any stored conversation already prepended).
    pub body: &'a ClientBody<'a>,
    /// The `model` the client sent (echoed back in translated answers).
    pub model: &'a str,
    pub stream: bool,
    /// Responses: the id this answer will carry (so it can be stored under it).
    pub response_id: &'a str,
}

impl Route {
    pub fn new(provider: &Provider, client: Api) -> Self {
        Route {
            client,
            upstream: upstream_api(provider, client),
            completion_tokens_name: openai::wants_max_completion_tokens(provider),
            hosted: if provider.refuse_hosted_tools {
                hosted::Policy::Refuse
            } else {
                hosted::Policy::Drop
            },
            chatgpt: provider.prefix == "chatgpt",
            vertex: provider.prefix == "vertex_ai",
        }
    }

    /// Client and provider speak the same API: bodies pass through (model id replaced).
    pub fn native(&self) -> bool {
        self.client == self.upstream
    }

    /// The upstream request body for the provider's `model_id`.
    pub fn request_body(
        &self,
        req: &ClientRequest<'_>,
        model_id: &str,
    ) -> Result<Bytes, TranslateError> {
        let usage_on_stream = self.upstream == Api::Chat && req.stream;
        if self.native()
            && !self.vertex
            && !self.chatgpt
            && let Some(bytes) = req.body.pass_through(model_id, usage_on_stream)
        {
            // Only `model` (and a stream's usage request) change: the client's bytes are
            // rewritten, not parsed into a tree and serialised again.
            return Ok(Bytes::from(bytes));
        }
        if self.client == Api::Messages
            && self.upstream == Api::Chat
            && !self.chatgpt
            && let Some(raw) = req.body.pass_through("", false)
        {
            // A plain Messages request (text turns, no tools) is translated from its bytes
            // into the chat request's bytes, no trees (`anthropic/to_chat.rs`); any other
            // takes the tree translation below.
            let model = if self.vertex && !model_id.contains('/') {
                Cow::Owned(format!("google/{model_id}"))
            } else {
                Cow::Borrowed(model_id)
            };
            let target = anthropic::ChatTarget {
                model: &model,
                max_completion_tokens: self.completion_tokens_name,
                include_usage: usage_on_stream,
            };
            if let Some(bytes) = anthropic::plain_request_to_chat_json(&raw, &target) {
                return Ok(Bytes::from(bytes));
            }
        }
        let client_body = req.body.tree()?;
        let mut body = if self.native() {
            client_body.clone()
        } else {
            let mut chat = match self.client {
                Api::Chat => client_body.clone(),
                Api::Messages => anthropic::request_to_chat(client_body)?,
                Api::Responses => responses::request_to_chat(client_body)?,
                Api::Converse => {
                    return Err(TranslateError::new("Converse is not a client API"));
                }
            };
            chat.insert("model".into(), Value::String(model_id.to_string()));
            let hosted = hosted::resolve(&hosted::take(&mut chat), self.upstream, self.hosted)?;
            let mut body = match self.upstream {
                Api::Chat => {
                    if self.completion_tokens_name
                        && self.client != Api::Chat
                        && !chat.contains_key("max_completion_tokens")
                        && let Some(n) = chat.remove("max_tokens")
                    {
                        chat.insert("max_completion_tokens".into(), n);
                    }
                    chat
                }
                Api::Messages => anthropic::request_from_chat(&chat)?,
                Api::Converse => bedrock::request_from_chat(&chat)?,
                Api::Responses => {
                    return Err(TranslateError::new(
                        "Responses is only reached natively, never translated to",
                    ));
                }
            };
            if !hosted.mapped.is_empty()
                && let Value::Array(tools) = body
                    .entry("tools")
                    .or_insert_with(|| Value::Array(Vec::new()))
            {
                tools.extend(hosted.mapped);
            }
            body
        };
        if self.vertex && self.upstream == Api::Messages {
            // Anthropic on Vertex: the model is in the URL, the version in the body.
            body.remove("model");
            body.insert(
                "anthropic_version".into(),
                Value::String(VERTEX_ANTHROPIC_VERSION.into()),
            );
        } else if self.vertex && !model_id.contains('/') {
            body.insert("model".into(), Value::String(format!("google/{model_id}")));
        } else if self.upstream != Api::Converse {
            body.insert("model".into(), Value::String(model_id.to_string()));
        }
        if self.chatgpt && self.upstream == Api::Responses {
            openai::chatgpt_responses_body(&mut body);
        }
        if usage_on_stream {
            // Usage on streams: requested always, hidden again from a client that did not ask.
            let opts = body
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(o) = opts {
                o.insert("include_usage".into(), Value::Bool(true));
            }
        }
        serde_json::to_vec(&body)
            .map(Bytes::from)
            .map_err(|e| TranslateError::new(format!("cannot encode the request: {e}")))
    }

    /// The hosted tools of the client's request that this provider's request is sent
    /// without (their client `type`s, each once); empty when the body passes through.
    /// What `x-plano-dropped-tools` lists.
    pub fn dropped_tools(&self, req: &ClientRequest<'_>) -> Vec<String> {
        // Only `tools` can hold hosted tools: without it the body's tree is not built.
        if self.native() || !req.body.has("tools") {
            return Vec::new();
        }
        let Ok(body) = req.body.tree() else {
            return Vec::new();
        };
        let tools = hosted::of_client_request(self.client, body);
        hosted::resolve(&tools, self.upstream, hosted::Policy::Drop)
            .map(|r| r.dropped)
            .unwrap_or_default()
    }

    /// A whole upstream answer (2xx) turned into the client's, with its usage.
    pub fn response_body(
        &self,
        req: &ClientRequest<'_>,
        upstream: &Bytes,
    ) -> Result<(Bytes, Usage), TranslateError> {
        if self.native() {
            // Relayed as it is: only `usage` is read. The answer's top level is scanned for
            // it, not parsed (`top_level.rs`); the scan still checks the answer is one JSON
            // object (a 2xx HTML page from a misconfigured base URL, or a truncated answer,
            // is a broken answer, not one to relay), and `usage` itself is parsed whole.
            let not_an_object = |e: top_level::ScanError| {
                TranslateError::new(format!("the provider's answer is not a JSON object: {e}"))
            };
            let usage = match top_level::member(upstream, "usage").map_err(not_an_object)? {
                Some(raw) => Usage::of_usage_json(self.upstream, raw).map_err(not_an_object)?,
                None => Usage::default(),
            };
            return Ok((upstream.clone(), usage));
        }
        if self.client == Api::Messages && self.upstream == Api::Chat {
            // Read into the fields the Message needs and written as bytes, no trees
            // (`anthropic/from_chat.rs`).
            // Only `stop_sequences` is read from the client's body: without it the body's
            // tree is not built.
            let client = if req.body.has("stop_sequences") {
                tree_of(req)
            } else {
                body::empty_tree()
            };
            let ctx = anthropic::ResponseCtx::for_answer(client, req.model);
            let (bytes, usage) = anthropic::message_from_chat_json(upstream, &ctx)?;
            return Ok((Bytes::from(bytes), usage));
        }
        let value: Value = serde_json::from_slice(upstream).map_err(|e| {
            TranslateError::new(format!("the provider's answer is not valid JSON: {e}"))
        })?;
        let chat = match self.upstream {
            Api::Chat => value,
            Api::Messages => anthropic::response_to_chat(&value)?,
            Api::Converse => bedrock::response_to_chat(&value, req.model)?,
            Api::Responses => {
                return Err(TranslateError::new(
                    "Responses is only reached natively, never translated from",
                ));
            }
        };
        let usage = Usage::of(Api::Chat, &chat);
        let out = match self.client {
            Api::Chat => chat,
            Api::Messages => anthropic::response_from_chat(&chat, anthropic_ctx(req))?,
            Api::Responses => responses::response_from_chat(&chat, &responses_ctx(req))?,
            Api::Converse => return Err(TranslateError::new("Converse is not a client API")),
        };
        let bytes = serde_json::to_vec(&out)
            .map_err(|e| TranslateError::new(format!("cannot encode the answer: {e}")))?;
        Ok((Bytes::from(bytes), usage))
    }

    /// How a streamed answer is carried: relayed as is, or translated event by event.
    pub fn stream_shape(&self, req: &ClientRequest<'_>, client_wants_usage: bool) -> StreamShape {
        if self.native() {
            return StreamShape::Relay {
                api: self.upstream,
                client_wants_usage,
            };
        }
        let upstream: Option<Box<dyn UpstreamStream>> = match self.upstream {
            Api::Messages => Some(Box::new(anthropic::StreamToChat::new(req.model))),
            Api::Converse => Some(Box::new(bedrock::StreamToChat::new(req.model))),
            Api::Chat | Api::Responses => None,
        };
        let client = match self.client {
            Api::Messages => {
                ClientSide::Translated(Box::new(anthropic::StreamFromChat::new(anthropic_ctx(req))))
            }
            Api::Responses => {
                ClientSide::Translated(Box::new(responses::StreamFromChat::new(responses_ctx(req))))
            }
            Api::Chat | Api::Converse => ClientSide::Chat { client_wants_usage },
        };
        StreamShape::Translate {
            binary: self.upstream == Api::Converse,
            upstream,
            client,
        }
    }
}

/// The client's body as a tree, for the translated answers: [`Route::request_body`]
/// built it for the same request before any answer came back.
fn tree_of<'a>(req: &'a ClientRequest<'_>) -> &'a Map<String, Value> {
    req.body.tree().unwrap_or_else(|_| body::empty_tree())
}

fn anthropic_ctx(req: &ClientRequest<'_>) -> anthropic::ResponseCtx {
    let mut ctx = anthropic::ResponseCtx::from_request(tree_of(req));
    ctx.model = req.model.to_string();
    ctx
}

fn responses_ctx(req: &ClientRequest<'_>) -> responses::ResponseCtx {
    responses::ResponseCtx {
        id: req.response_id.to_string(),
        model: req.model.to_string(),
        request: tree_of(req).clone(),
    }
}

/// The client end of a translated stream.
pub enum ClientSide {
    /// Chat chunks as `data:` events, `[DONE]` at the end; the usage-only chunk hidden
    /// unless the client asked for it.
    Chat {
        client_wants_usage: bool,
    },
    Translated(Box<dyn ClientStream>),
}

pub enum StreamShape {
    /// Same API both sides: upstream events are relayed as they are; usage is read on the way.
    Relay { api: Api, client_wants_usage: bool },
    /// Upstream events → chat chunks (`upstream`, none when the provider speaks chat) →
    /// the client's events. `binary`: the upstream frames are AWS event-stream, not SSE.
    Translate {
        binary: bool,
        upstream: Option<Box<dyn UpstreamStream>>,
        client: ClientSide,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn providers() -> plano_config::Config {
        let yaml = "version: v0.4.0\nmodel_providers:\n  - model: openai/gpt-5\n    access_key: k\n    default: true\n  - model: groq/llama\n    access_key: k\n";
        plano_config::load_str(yaml, None, &|_| None).unwrap()
    }

    fn upstream_of(provider: &Provider, client: Api, body: serde_json::Value) -> Value {
        let route = Route::new(provider, client);
        let Value::Object(body) = body else {
            unreachable!()
        };
        let body = ClientBody::from_tree(body);
        let req = ClientRequest {
            api: client,
            body: &body,
            model: "m",
            stream: false,
            response_id: "resp_1",
        };
        serde_json::from_slice(&route.request_body(&req, &provider.model_id).unwrap()).unwrap()
    }

    #[test]
    fn chatgpt_speaks_responses_natively_with_its_backend_rules() {
        let yaml = "version: v0.4.0\nmodel_providers:\n  - model: chatgpt/gpt-5.2\n  - model: mistral/large\n    access_key: k\n";
        let config = plano_config::load_str(yaml, None, &|_| None).unwrap();
        let chatgpt = &config.providers[0];
        assert_eq!(upstream_api(chatgpt, Api::Responses), Api::Responses);
        assert_eq!(
            upstream_path(chatgpt, Api::Responses, true),
            "/backend-api/codex/responses"
        );
        let body = upstream_of(
            chatgpt,
            Api::Responses,
            serde_json::json!({"model": "chatgpt/gpt-5.2", "input": "2+2?", "store": true}),
        );
        assert_eq!(body["model"], "gpt-5.2");
        assert_eq!(body["store"], false);
        assert_eq!(
            body["input"],
            serde_json::json!([{"type": "message", "role": "user", "content": "2+2?"}])
        );
        // Other OpenAI-style providers get Responses translated to chat.
        assert_eq!(
            upstream_api(&config.providers[1], Api::Responses),
            Api::Chat
        );
    }

    #[test]
    fn anthropic_on_vertex_streams_through_stream_raw_predict() {
        let yaml = "version: v0.4.0\nmodel_providers:\n  - model: vertex_ai/claude-opus-4\n    base_url: https://us-east5-aiplatform.googleapis.com/v1/projects/p/locations/us-east5\n";
        let config = plano_config::load_str(yaml, None, &|_| None).unwrap();
        let p = &config.providers[0];
        assert_eq!(upstream_api(p, Api::Chat), Api::Messages);
        assert_eq!(
            upstream_path(p, Api::Messages, true),
            "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-opus-4:streamRawPredict"
        );
        let body = upstream_of(
            p,
            Api::Messages,
            serde_json::json!({"model": "x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
        );
        assert_eq!(body["anthropic_version"], VERTEX_ANTHROPIC_VERSION);
        assert!(body.get("model").is_none());
    }

    #[test]
    fn openai_gets_max_completion_tokens_from_translated_requests() {
        let config = providers();
        let msg = serde_json::json!({"model": "m", "max_tokens": 77, "messages": [{"role": "user", "content": "hi"}]});
        let openai = upstream_of(&config.providers[0], Api::Messages, msg.clone());
        assert_eq!(openai["max_completion_tokens"], 77);
        assert!(openai.get("max_tokens").is_none());
        assert_eq!(openai["model"], "gpt-5");
        // Other OpenAI-style providers keep the widely understood `max_tokens`.
        let groq = upstream_of(&config.providers[1], Api::Messages, msg);
        assert_eq!(groq["max_tokens"], 77);
        // A chat client's own choice passes through untouched.
        let chat = serde_json::json!({"model": "m", "max_tokens": 5, "messages": []});
        assert_eq!(
            upstream_of(&config.providers[0], Api::Chat, chat)["max_tokens"],
            5
        );
    }

    #[test]
    fn a_native_answer_that_is_not_json_is_refused() {
        let config = providers();
        let route = Route::new(&config.providers[1], Api::Chat);
        let body = ClientBody::from_tree(Map::new());
        let req = ClientRequest {
            api: Api::Chat,
            body: &body,
            model: "m",
            stream: false,
            response_id: "",
        };
        let html = Bytes::from_static(b"<html><body>Welcome to nginx!</body></html>");
        assert!(route.response_body(&req, &html).is_err());
        assert!(
            route
                .response_body(&req, &Bytes::from_static(b"[1]"))
                .is_err()
        );
        let ok = Bytes::from_static(br#"{"usage": {"prompt_tokens": 2, "completion_tokens": 3}}"#);
        assert_eq!(route.response_body(&req, &ok).unwrap().1.total(), 5);
        // Truncated, two objects, trailing bytes, a malformed `usage`: broken answers too.
        for bad in [
            &br#"{"id":"x","choices":[{"message":{"content":"cut off"#[..],
            br#"{"id":"x","usage":{"prompt_tokens":2"#,
            br#"{"id":"x"}{"id":"y"}"#,
            br#"{"id":"x"} <!-- -->"#,
            br#"{"id":"x","usage":{"prompt_tokens" 2}}"#,
            b"",
        ] {
            let e = route
                .response_body(&req, &Bytes::from_static(bad))
                .unwrap_err();
            assert!(e.message.contains("not a JSON object"), "{}", e.message);
        }
        // Relayed byte for byte; usage read from the top level only (the last one given).
        let answer = Bytes::from_static(
            br#" {"choices":[{"message":{"content":""usage":{"prompt_tokens":99}"},"usage":{"prompt_tokens":50}}],"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":2,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":1}}} "#,
        );
        let (body, usage) = route.response_body(&req, &answer).unwrap();
        assert_eq!(body, answer);
        assert_eq!((usage.input, usage.output, usage.cached_input), (2, 3, 1));
    }

    #[test]
    fn a_native_body_is_rewritten_in_place_and_says_what_the_tree_would() {
        let config = providers();
        let route = Route::new(&config.providers[1], Api::Chat);
        let raw = br#"{"model":"alias","stream":true,"messages":[{"role":"user","content":"hi"}],"temperature":0.25}"#;
        let send = |body: &ClientBody<'_>| {
            let req = ClientRequest {
                api: Api::Chat,
                body,
                model: "alias",
                stream: true,
                response_id: "",
            };
            route.request_body(&req, "llama").unwrap()
        };
        let split = send(&ClientBody::split(raw).unwrap());
        assert_eq!(
            std::str::from_utf8(&split).unwrap(),
            r#"{"model":"llama","stream":true,"messages":[{"role":"user","content":"hi"}],"temperature":0.25,"stream_options":{"include_usage":true}}"#
        );
        let tree = send(&ClientBody::from_tree(serde_json::from_slice(raw).unwrap()));
        assert_eq!(
            serde_json::from_slice::<Value>(&split).unwrap(),
            serde_json::from_slice::<Value>(&tree).unwrap()
        );
    }

    #[test]
    fn the_prepared_chat_uri_is_the_one_upstream_path_names() {
        let yaml = "version: v0.4.0\nmodel_providers:\n  - model: openai/gpt-5\n    access_key: k\n    default: true\n  - model: anthropic/claude\n    access_key: k\n  - model: vertex_ai/claude-opus-4\n    base_url: https://us-east5-aiplatform.googleapis.com/v1/projects/p/locations/us-east5\n    access_key: k\n  - model: azure_openai/d\n    base_url: https://x.openai.azure.com\n    access_key: k\n";
        let config = plano_config::load_str(yaml, None, &|_| None).unwrap();
        for p in &config.providers {
            let prepared = Prepared::new(p).unwrap();
            for api in [Api::Chat, Api::Messages, Api::Responses, Api::Converse] {
                for stream in [false, true] {
                    assert_eq!(
                        upstream_uri(p, &prepared, api, stream).unwrap(),
                        upstream_request::uri(p, &upstream_path(p, api, stream)).unwrap(),
                        "{} {api:?} {stream}",
                        p.name
                    );
                }
            }
        }
    }

    #[test]
    fn bedrock_model_ids_are_one_path_segment() {
        assert_eq!(
            encode_path_segment("anthropic.claude-3-5-sonnet-20240620-v1:0"),
            "anthropic.claude-3-5-sonnet-20240620-v1%3A0"
        );
        assert_eq!(
            encode_path_segment("arn:aws:bedrock:us-east-1:1:inference-profile/x"),
            "arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fx"
        );
    }
}
