//! Plano's configuration: load the YAML, substitute environment variables, validate every
//! key and normalise into an immutable [`Config`].
//!
//! Pipeline: text → env substitution → raw serde mirror (`raw.rs`, `deny_unknown_fields`,
//! no logic) → validation (`validate.rs`, collects *all* problems with key paths) →
//! [`Config`] (`model.rs`, no `Option` left where the runtime needs a value).

mod error;
mod model;

pub use error::{ConfigError, ConfigErrors, Location};
pub use model::*;
