//! The API families a request can be spoken in, on either side of the proxy.

/// An API family, as a client speaks it to us or as we speak it to a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// OpenAI chat completions (also Azure OpenAI, Gemini, Groq, Ollama, …).
    Chat,
    /// Anthropic Messages.
    Messages,
    /// OpenAI Responses.
    Responses,
    /// Amazon Bedrock Converse (upstream only).
    Converse,
}

impl Api {
    pub fn name(self) -> &'static str {
        match self {
            Api::Chat => "chat",
            Api::Messages => "messages",
            Api::Responses => "responses",
            Api::Converse => "converse",
        }
    }
}
