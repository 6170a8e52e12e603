//! What both Plano binaries share: the admin plane (HTTP `/metrics`, `/healthz`, `/readyz`
//! and gRPC `grpc.health.v1.Health` on one port), the health registry and peer watcher, the
//! metric catalogue, graceful shutdown, tracing setup, request ids, error bodies and the
//! outbound HTTP client builder (`http_client`).

pub mod admin;
pub mod cli;
pub mod errors;
pub mod filters;
mod h1_errors;
pub mod headers;
pub mod health;
pub mod http_client;
pub mod listen;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod peer;
pub mod reload;
pub mod request_id;
pub mod runtime;
pub mod sse;
pub mod telemetry;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;

pub use runtime::{Component, Context, Control, Shutdown};
