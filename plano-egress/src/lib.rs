//! `plano-egress`: the model proxy.

pub mod providers;
pub mod ratelimit;
