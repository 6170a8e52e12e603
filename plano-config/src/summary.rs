//! The short human summary `--check` prints.

use std::fmt::Write;

use crate::config::Config;
use crate::model::ListenerKind;

impl Config {
    /// e.g. `providers:\n  openai/gpt-4o  https://api.openai.com/v1 (default)`.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "configuration is valid (version {})", self.version);
        let _ = writeln!(s, "listeners:");
        for l in std::iter::once(&self.model_listener).chain(&self.listeners) {
            let kind = match l.kind {
                ListenerKind::Model => "model",
                ListenerKind::Edge => "edge",
                ListenerKind::Prompt => "prompt",
                ListenerKind::Agent => "agent",
            };
            let tls = if l.tls.is_some() { " tls" } else { "" };
            let auth = if l.auth.is_some() { " auth" } else { "" };
            let _ = writeln!(s, "  {:<24} {:<7} {}{tls}{auth}", l.name, kind, l.addr);
        }
        let _ = writeln!(s, "providers:");
        for p in &self.providers {
            let default = if p.default { " (default)" } else { "" };
            let _ = writeln!(
                s,
                "  {:<32} {}{}{default}",
                p.name,
                p.base_url.as_str().trim_end_matches('/'),
                p.path_prefix
            );
        }
        if !self.aliases.is_empty() {
            let _ = writeln!(s, "aliases:");
            for (name, a) in &self.aliases {
                let fb = if a.fallbacks.is_empty() {
                    String::new()
                } else {
                    format!(" then {}", a.fallbacks.join(", "))
                };
                let _ = writeln!(s, "  {name} → {}{fb}", a.target);
            }
        }
        for w in &self.warnings {
            let _ = writeln!(s, "warning: {w}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn provider_urls_have_no_double_slash() {
        let c = crate::load_str(
            "version: v0.4.0\nmodel_providers:\n  - model: openai/gpt-4o\n    default: true\n",
            None,
            &|_| None,
        )
        .unwrap();
        let s = c.summary();
        assert!(s.contains("https://api.openai.com/v1 (default)"), "{s}");
        assert!(!s.contains("//v1"), "{s}");
    }
}
