//! Helpers for tests: a `Config` without going through the loader, and a body that yields
//! given data frames. Compiled for this crate's own tests, and for other crates' tests
//! through the `test-support` feature, which only their `[dev-dependencies]` turn on (a
//! release binary never compiles this module).

use std::collections::{BTreeMap, VecDeque};
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;

use plano_config::{
    Admin, Config, EgressLink, Overrides, PromptCaching, RateLimitStorage, Routing, StateStorage,
};

/// A config with nothing configured: no listeners, no providers. Valid enough for tests of
/// the admin plane and reload, which never look inside it.
pub fn bare_config() -> Config {
    Config {
        version: "v0.1".into(),
        source: None,
        model_listener: plano_config::Listener::predefined_model(),
        listeners: Vec::new(),
        providers: Vec::new(),
        aliases: BTreeMap::new(),
        models: Default::default(),
        agents: Vec::new(),
        filters: Vec::new(),
        endpoints: BTreeMap::new(),
        prompt_targets: Vec::new(),
        system_prompt: None,
        ratelimits: Vec::new(),
        ratelimit_storage: RateLimitStorage::Memory,
        overrides: Overrides::default(),
        egress: EgressLink {
            url: url("http://127.0.0.1:12000"),
            health: url("http://127.0.0.1:9902"),
        },
        admin: Admin {
            edge: ([127, 0, 0, 1], 9901).into(),
            egress: ([127, 0, 0, 1], 9902).into(),
        },
        state_storage: StateStorage::default(),
        tracing: None,
        routing: Routing::default(),
        routing_preferences: Vec::new(),
        model_metrics_sources: Vec::new(),
        prompt_caching: PromptCaching::default(),
        mode: None,
        prompt_guards: None,
        warnings: Vec::new(),
    }
}

#[allow(
    clippy::unwrap_used,
    reason = "test support (also compiled by the `test-support` feature): constant URLs"
)]
fn url(s: &str) -> url::Url {
    url::Url::parse(s).unwrap()
}

/// The error type of most boxed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body that yields its parts as separate data frames, in order, then ends without
/// saying so in advance (`is_end_stream` stays false, the size hint stays open), as a
/// stream does. `E` is the error type the code under test expects; none is ever yielded.
pub struct Frames<E = BoxError> {
    parts: VecDeque<Bytes>,
    error: PhantomData<fn() -> E>,
}

impl<E> Frames<E> {
    pub fn new<P: Into<Bytes>>(parts: impl IntoIterator<Item = P>) -> Self {
        Self {
            parts: parts.into_iter().map(Into::into).collect(),
            error: PhantomData,
        }
    }
}

impl<E> http_body::Body for Frames<E> {
    type Data = Bytes;
    type Error = E;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, E>>> {
        Poll::Ready(self.get_mut().parts.pop_front().map(|b| Ok(Frame::data(b))))
    }
}
