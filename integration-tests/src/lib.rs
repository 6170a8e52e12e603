//! Test support for Plano: a scripted mock provider ([`mock`]) and an in-process harness
//! that starts the real egress from YAML ([`harness`]).

pub mod certs;
pub mod harness;
pub mod mock;
pub mod mock_filter;
pub mod mock_http;
pub mod otlp;
pub mod tls_upstream;
