//! One integration test binary: each module starts real components on 127.0.0.1.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test loudly; clippy only exempts #[test] functions themselves"
)]

mod abuse;
mod access_log;
mod acme;
mod admin;
mod agents;
mod apis;
mod cli;
mod cloud_auth;
mod coding_agents;
mod edge;
mod edge_requests;
mod egress;
mod egress_path;
mod filters;
mod limits;
mod mock;
mod prefix_affinity;
mod prometheus;
mod prompt_targets;
mod quickstart;
mod reload;
mod routing;
mod sdk;
mod state_storage;
mod support;
mod traces;
mod upstream_client;
