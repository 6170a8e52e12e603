//! OpenAI Responses API (`POST /v1/responses`), client side: a Responses request is
//! turned into a chat completions request, and the chat answer (whole or streamed) back
//! into a Response object or the Responses streaming events.
//!
//! Mappings that are not one to one:
//! - `instructions` becomes the first system message; `developer` messages become
//!   `system` messages, since most chat providers do not know the `developer` role.
//! - A `function_call` input item joins the assistant message right before it (or starts
//!   one), so an assistant turn with text and tool calls stays one chat message.
//! - A `refusal` part of an earlier assistant message is replayed as that message's
//!   text: chat providers other than OpenAI have no `refusal` field.
//! - `reasoning` input items are dropped: chat providers take no reasoning as input.
//!   Chat `reasoning_content` comes back as a `reasoning` output item with one
//!   `reasoning_text` part and an empty `summary`.
//! - `max_output_tokens` → `max_tokens`; `reasoning.effort` → `reasoning_effort`;
//!   `text.format` → `response_format`. `metadata`, `text.verbosity`, `top_logprobs`,
//!   `include`, `truncation`, `service_tier`, `prompt_cache_key`, `safety_identifier`,
//!   `max_tool_calls`, `store` and `previous_response_id` are not sent upstream (many chat
//!   providers reject unknown fields); the Response echoes the request's settings.
//!   `tool_choice` and `parallel_tool_calls` are sent only with tools, as chat requires.
//! - `namespace` tools: each member function becomes a chat function named
//!   `<namespace>__<name>`; calls to it come back as `function_call` items with `name`
//!   and `namespace` apart (what Codex routes), and such items in `input` go back under
//!   the flat name.
//! - Hosted tools (web search, file search, computer use, MCP, …) are set aside for
//!   `providers::hosted`: mapped to the provider's equivalent or dropped (named in
//!   `x-plano-dropped-tools`), or a 400 with `hosted_tools: refuse`. `file_id`
//!   references, `background`, `conversation` and `prompt` need OpenAI's own servers:
//!   they are a 400 naming the field rather than a silently different answer.
//! - Usage: `input_tokens` = `prompt_tokens`, `output_tokens` = `completion_tokens`,
//!   `input_tokens_details.cached_tokens` = `prompt_tokens_details.cached_tokens`,
//!   `input_tokens_details.cache_write_tokens` = `prompt_tokens_details.cache_write_tokens`
//!   (0 when the provider does not report it), `output_tokens_details.reasoning_tokens` =
//!   `completion_tokens_details.reasoning_tokens`.
//! - Status: finish reason `length` → `incomplete` with reason `max_output_tokens`,
//!   `content_filter` → `incomplete` with reason `content_filter`; anything else →
//!   `completed`.

mod request;
mod response;
mod stream;

pub use request::{conversation_items, request_to_chat};
pub use response::{ResponseCtx, new_response_id, output_items, response_from_chat};
pub use stream::StreamFromChat;
