//! Text → value tree (figment's YAML provider) → environment substitution → typed raw
//! sections. Every step records problems instead of stopping at the first.

use std::path::Path;

use figment::Figment;
use figment::providers::{Format, Yaml};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{ConfigError, Location};

/// Collects problems and warnings while a config is loaded and validated.
pub(crate) struct Problems {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<String>,
    file: Option<std::path::PathBuf>,
}

impl Problems {
    pub fn new(file: Option<&Path>) -> Self {
        Self {
            errors: Vec::new(),
            warnings: Vec::new(),
            file: file.map(Path::to_path_buf),
        }
    }

    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: message.into(),
            // Semantic problems are located by key path; only syntax errors have a line.
            location: None,
        });
    }

    pub fn warn(&mut self, path: &str, what: &str) {
        self.warnings.push(format!("`{path}`: {what}"));
    }
}

/// Parse the YAML document into a JSON-like tree. Syntax errors carry line and column.
pub(crate) fn parse(text: &str, p: &mut Problems) -> Option<Map<String, Value>> {
    if text.trim().is_empty()
        || text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        p.error("", "the configuration file is empty");
        return None;
    }
    // figment nests a YAML document under its default profile; a document that is not a
    // mapping at the top is reported as such.
    match Figment::from(Yaml::string(text)).extract::<Value>() {
        Ok(Value::Object(map)) => Some(map),
        Ok(other) => {
            p.error(
                "",
                format!(
                    "expected a mapping of keys at the top level, found {}",
                    kind(&other)
                ),
            );
            None
        }
        Err(e) => {
            for err in e {
                let msg = err.kind.to_string();
                let (line, column) = yaml_position(&msg);
                p.errors.push(ConfigError {
                    path: err.path.join("."),
                    message: format!("not valid YAML: {msg}"),
                    location: Some(Location {
                        file: p.file.clone(),
                        line,
                        column,
                    }),
                });
            }
            None
        }
    }
}

/// serde_yaml messages end with "at line L column C"; pull those out for the location.
fn yaml_position(msg: &str) -> (usize, usize) {
    let num_after = |word: &str| -> usize {
        msg.rfind(word)
            .map(|i| &msg[i + word.len()..])
            .and_then(|rest| {
                rest.split(|c: char| !c.is_ascii_digit())
                    .find(|s| !s.is_empty())
                    .and_then(|s| s.parse().ok())
            })
            .unwrap_or(0)
    };
    (num_after("line "), num_after("column "))
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Replace `$VAR` and `${VAR}` in every string scalar. A missing variable is an error that
/// names the variable and the key path; `$$` is a literal `$`. A scalar that was exactly one
/// variable and whose value looks like a number or boolean takes that type (so
/// `port: $PORT` works).
pub(crate) fn substitute_env(
    value: &mut Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    p: &mut Problems,
) {
    match value {
        Value::String(s) if s.contains('$') => {
            let whole_var = is_single_var(s);
            match expand(s, env) {
                Ok(expanded) => {
                    *value = match whole_var {
                        true => typed_scalar(expanded),
                        false => Value::String(expanded),
                    }
                }
                Err(missing) => {
                    for var in missing {
                        p.error(path, format!("environment variable `{var}` is not set"));
                    }
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute_env(item, &format!("{path}[{i}]"), env, p);
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                substitute_env(v, &join(path, k), env, p);
            }
        }
        _ => {}
    }
}

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn is_single_var(s: &str) -> bool {
    let name = if let Some(inner) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        inner
    } else if let Some(inner) = s.strip_prefix('$') {
        inner
    } else {
        return false;
    };
    !name.is_empty() && name.chars().all(is_var_char)
}

fn is_var_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn typed_scalar(s: String) -> Value {
    if let Ok(n) = s.parse::<u64>() {
        return Value::from(n);
    }
    match s.as_str() {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(s),
    }
}

/// Expand variables in `s`; on failure, the names of every missing variable.
fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(s.len());
    let mut missing = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
            continue;
        }
        let (name, consumed) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = after
                .char_indices()
                .find(|&(_, c)| !is_var_char(c))
                .map_or(after.len(), |(j, _)| j);
            (&after[..end], end)
        };
        if name.is_empty() || !name.chars().all(is_var_char) {
            // Not a variable reference (`$` alone, `${` unterminated): keep it as written.
            out.push('$');
            rest = after;
            continue;
        }
        match env(name) {
            Some(v) => out.push_str(&v),
            None => missing.push(name.to_string()),
        }
        rest = &after[consumed..];
    }
    out.push_str(rest);
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing)
    }
}

/// Deserialise one section or item; on failure record the problem at its full key path.
pub(crate) fn section<T: DeserializeOwned>(
    value: &Value,
    path: &str,
    p: &mut Problems,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value.clone()) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let full = if inner == "." || inner.is_empty() {
                path.to_string()
            } else if inner.starts_with('[') {
                format!("{path}{inner}")
            } else {
                join(path, &inner)
            };
            p.error(full, humanise(&e.into_inner().to_string()));
            None
        }
    }
}

/// Deserialise a list item by item, so every bad item is reported.
pub(crate) fn list<T: DeserializeOwned>(value: &Value, path: &str, p: &mut Problems) -> Vec<T> {
    match value {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| section(item, &format!("{path}[{i}]"), p))
            .collect(),
        Value::Null => Vec::new(),
        other => {
            p.error(path, format!("expected a list, found {}", kind(other)));
            Vec::new()
        }
    }
}

/// A mapping whose values are deserialised one by one (`endpoints`, `model_aliases`).
pub(crate) fn map<T: DeserializeOwned>(
    value: &Value,
    path: &str,
    p: &mut Problems,
) -> Vec<(String, T)> {
    match value {
        Value::Object(m) => m
            .iter()
            .filter_map(|(k, v)| section(v, &join(path, k), p).map(|t| (k.clone(), t)))
            .collect(),
        Value::Null => Vec::new(),
        other => {
            p.error(path, format!("expected a mapping, found {}", kind(other)));
            Vec::new()
        }
    }
}

/// serde's messages mention Rust types; say it in YAML terms.
fn humanise(msg: &str) -> String {
    // `expected RawRouting` (a struct of raw.rs) → `expected a mapping`.
    let msg = msg.replace("expected struct ", "expected ");
    let msg = match msg.find("expected Raw") {
        Some(i) => {
            let rest = &msg[i + "expected ".len()..];
            let end = rest
                .find(|c: char| !c.is_ascii_alphanumeric())
                .unwrap_or(rest.len());
            format!("{}expected a map{}", &msg[..i], &rest[end..])
        }
        None => msg,
    };
    msg.replace("u32", "an integer")
        .replace("u64", "an integer")
        .replace("f64", "a number")
        .replace("invalid type: ", "wrong type: ")
        .replace("struct ", "")
        .replace("map", "mapping")
        .replace("sequence", "list")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "A" => Some("alpha".into()),
            "PORT" => Some("8080".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_both_forms_and_reports_missing() {
        assert_eq!(expand("x-$A-${A}", &env).as_deref(), Ok("x-alpha-alpha"));
        assert_eq!(expand("cost $$5", &env).as_deref(), Ok("cost $5"));
        assert_eq!(expand("$ alone", &env).as_deref(), Ok("$ alone"));
        assert_eq!(
            expand("$NOPE ${ALSO}", &env),
            Err(vec!["NOPE".into(), "ALSO".into()])
        );
    }

    #[test]
    fn single_var_takes_scalar_type() {
        let mut p = Problems::new(None);
        let mut v = serde_json::json!({"port": "$PORT", "name": "${A}:${PORT}"});
        substitute_env(&mut v, "", &env, &mut p);
        assert_eq!(v["port"], 8080);
        assert_eq!(v["name"], "alpha:8080");
        assert!(p.errors.is_empty());
    }

    #[test]
    fn substituted_text_is_never_parsed_as_yaml() {
        let mut p = Problems::new(None);
        let e = |_: &str| Some("a: b # c".to_string());
        let mut v = serde_json::json!({"k": "$X"});
        substitute_env(&mut v, "", &e, &mut p);
        assert_eq!(v["k"], "a: b # c");
    }
}
