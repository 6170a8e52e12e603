//! Top-level `filters` and `agents`.

use std::time::Duration;

use serde_json::Value;

use super::{duration_or, http_url, unique};
use crate::load::{Problems, join, list};
use crate::model::*;
use crate::raw::*;

pub(super) fn agents(value: &Value, p: &mut Problems) -> Vec<Agent> {
    let agents: Vec<Agent> = list::<RawAgent>(value, "agents", p)
        .into_iter()
        .enumerate()
        .filter_map(|(i, a)| {
            let url = http_url(&a.url, &format!("agents[{i}].url"), p)?;
            Some(Agent { id: a.id, url })
        })
        .collect();
    unique(agents.iter().map(|a| a.id.as_str()), "agents", "id", p);
    agents
}

pub(super) fn filters(value: &Value, p: &mut Problems) -> Vec<Filter> {
    let raws = list::<RawFilter>(value, "filters", p);
    let out: Vec<Filter> = raws
        .into_iter()
        .enumerate()
        .filter_map(|(i, f)| {
            let path = format!("filters[{i}]");
            let kind = match f.kind.as_deref() {
                None | Some("mcp") => FilterKind::Mcp,
                Some("http") => FilterKind::Http,
                Some(other) => {
                    p.error(
                        join(&path, "type"),
                        format!("`{other}` is not a filter type (http, mcp)"),
                    );
                    return None;
                }
            };
            if let Some(t) = &f.transport
                && t != "streamable-http"
            {
                p.error(
                    join(&path, "transport"),
                    format!("`{t}` is not supported (streamable-http)"),
                );
            }
            let timeout = duration_or(
                f.timeout.as_ref(),
                &join(&path, "timeout"),
                Duration::from_secs(5),
                p,
            );
            let url = http_url(&f.url, &join(&path, "url"), p)?;
            Some(Filter {
                tool: f.tool.unwrap_or_else(|| f.id.clone()),
                id: f.id,
                url,
                kind,
                fail_open: f.fail_open.unwrap_or(false),
                timeout,
            })
        })
        .collect();
    unique(out.iter().map(|f| f.id.as_str()), "filters", "id", p);
    out
}
