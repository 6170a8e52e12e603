//! Plano's configuration: load the YAML, substitute environment variables, validate every
//! key and normalise into an immutable [`Config`].
//!
//! Pipeline: text → YAML value tree (figment) → env substitution on string scalars (so a
//! value can never inject YAML structure) → raw serde mirror per section and per list item
//! (`raw.rs`, unknown keys rejected, no logic) → validation (`validate/`, one file per section, collects *all*
//! problems with key paths) → [`Config`] (`model.rs`).

mod config;
mod connections;
mod duration;
mod error;
mod load;
mod model;
pub mod providers;
mod raw;
pub mod resolve;
mod summary;
mod validate;

use std::path::{Path, PathBuf};

pub use config::Config;
pub use connections::{
    ConnectionLimits, DEFAULT_BODY_IDLE_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_KEEPALIVE_TIMEOUT,
};
pub use error::{ConfigError, ConfigErrors, Location};
pub use model::*;
pub use resolve::{ModelTable, Target};

/// Load and validate a config file, substituting variables from the process environment.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: String::new(),
            message: format!("cannot read {}: {e}", path.display()),
            location: None,
        }])
    })?;
    load_str(&text, Some(path), &|k| std::env::var(k).ok())
}

/// Load and validate config text; `env` resolves `$VAR` / `${VAR}`.
pub fn load_str(
    text: &str,
    source: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut problems = load::Problems::new(source);
    let config = load::parse(text, &mut problems).and_then(|mut doc| {
        for (k, v) in doc.iter_mut() {
            load::substitute_env(v, k, env, &mut problems);
        }
        validate::build(doc, &mut problems, source.map(Path::to_path_buf), env)
    });
    match config {
        Some(c) if problems.errors.is_empty() => Ok(c),
        _ => Err(ConfigErrors(problems.errors)),
    }
}

/// `./plano_config.yaml` if it exists, else `./config.yaml`.
pub fn default_config_path() -> PathBuf {
    let primary = PathBuf::from("plano_config.yaml");
    if primary.exists() {
        primary
    } else {
        PathBuf::from("config.yaml")
    }
}
