//! `plano-egress`: the model proxy.

pub mod providers;
