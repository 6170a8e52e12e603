//! `listeners` (list and legacy forms, the predefined model listener), `admin`, `egress`,
//! and the cross-checks between them (filter/agent references, clashing addresses).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde_json::Value;
use url::Url;

use super::{
    DEFAULT_MAX_BODY, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, duration_or, http_url, unique,
};
use crate::load::{Problems, join, kind, list, section};
use crate::model::*;
use crate::raw::*;

const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

pub(super) fn listeners(value: &Value, p: &mut Problems) -> Vec<Listener> {
    match value {
        Value::Null => Vec::new(),
        Value::Object(_) => legacy_listeners(value, p),
        Value::Array(_) => {
            let raws = list::<ListListener>(value, "listeners", p);
            let out: Vec<Listener> = raws
                .into_iter()
                .enumerate()
                .filter_map(|(i, l)| list_listener(l, &format!("listeners[{i}]"), p))
                .collect();
            let models = out.iter().filter(|l| l.kind == ListenerKind::Model).count();
            if models > 1 {
                p.error(
                    "listeners",
                    format!("{models} listeners have `type: model`; at most one is allowed"),
                );
            }
            unique(out.iter().map(|l| l.name.as_str()), "listeners", "name", p);
            out
        }
        other => {
            p.error(
                "listeners",
                format!("expected a list or a mapping, found {}", kind(other)),
            );
            Vec::new()
        }
    }
}

pub(super) fn legacy_listeners(value: &Value, p: &mut Problems) -> Vec<Listener> {
    let Some(raw) = section::<LegacyListeners>(value, "listeners", p) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, l, kind, default_addr, default_port) in [
        (
            "ingress_traffic",
            raw.ingress_traffic,
            ListenerKind::Prompt,
            Ipv4Addr::UNSPECIFIED,
            10000,
        ),
        (
            "egress_traffic",
            raw.egress_traffic,
            ListenerKind::Model,
            Ipv4Addr::LOCALHOST,
            12000,
        ),
    ] {
        let Some(l) = l else { continue };
        let path = format!("listeners.{name}");
        check_message_format(l.message_format.as_deref(), &path, p);
        let addr = socket_addr(
            l.address.as_deref(),
            l.port,
            IpAddr::V4(default_addr),
            default_port,
            &path,
            p,
        );
        let timeout = duration_or(
            l.timeout.as_ref(),
            &join(&path, "timeout"),
            DEFAULT_TIMEOUT,
            p,
        );
        let mut listener = Listener::predefined_model();
        listener.name = name.into();
        listener.kind = kind;
        listener.origin = ListenerOrigin::Legacy;
        listener.timeout = timeout;
        listener.first_token_timeout = timeout;
        if let Some(addr) = addr {
            listener.addr = addr;
            out.push(listener);
        }
    }
    out
}

pub(super) fn list_listener(l: ListListener, path: &str, p: &mut Problems) -> Option<Listener> {
    let kind = match l.kind.as_str() {
        "model" => ListenerKind::Model,
        "edge" => ListenerKind::Edge,
        "prompt" => ListenerKind::Prompt,
        "agent" => ListenerKind::Agent,
        other => {
            p.error(
                join(path, "type"),
                format!("`{other}` is not a listener type (model, edge, prompt, agent)"),
            );
            return None;
        }
    };
    check_message_format(l.message_format.as_deref(), path, p);
    let (default_addr, default_port) = match kind {
        ListenerKind::Model => (Ipv4Addr::LOCALHOST, 12000),
        _ => (Ipv4Addr::UNSPECIFIED, 10000),
    };
    let addr = socket_addr(
        l.address.as_deref(),
        l.port,
        IpAddr::V4(default_addr),
        default_port,
        path,
        p,
    );
    let timeout = duration_or(
        l.timeout.as_ref(),
        &join(path, "timeout"),
        DEFAULT_TIMEOUT,
        p,
    );
    let first_token_timeout = duration_or(
        l.first_token_timeout.as_ref(),
        &join(path, "first_token_timeout"),
        timeout,
        p,
    );
    if first_token_timeout > timeout {
        p.error(
            join(path, "first_token_timeout"),
            "must not be longer than the listener's `timeout`",
        );
    }
    let max_body_bytes = match l.max_body_bytes {
        Some(0) => {
            p.error(join(path, "max_body_bytes"), "must be greater than 0");
            DEFAULT_MAX_BODY
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        None => DEFAULT_MAX_BODY,
    };
    if kind == ListenerKind::Model {
        for (key, present) in [
            ("tls", l.tls.is_some()),
            ("auth", l.auth.is_some()),
            ("agents", l.agents.is_some()),
        ] {
            if present {
                p.error(join(path, key), "not allowed on a `model` listener");
            }
        }
    } else if l.max_retries.is_some() {
        p.error(
            join(path, "max_retries"),
            "only allowed on a `model` listener",
        );
    }
    if kind != ListenerKind::Agent && l.agents.is_some() && kind != ListenerKind::Model {
        p.error(join(path, "agents"), "only allowed on an `agent` listener");
    }
    if let Some(r) = &l.router
        && r != "plano_orchestrator_v1"
    {
        p.error(
            join(path, "router"),
            format!("`{r}` is not a known router (plano_orchestrator_v1)"),
        );
    }
    let agents: Vec<ListenerAgent> = l
        .agents
        .unwrap_or_default()
        .into_iter()
        .map(|a| ListenerAgent {
            id: a.id,
            description: a.description,
            default: a.default.unwrap_or(false),
            input_filters: a.input_filters.unwrap_or_default(),
        })
        .collect();
    if agents.iter().filter(|a| a.default).count() > 1 {
        p.error(
            join(path, "agents"),
            "more than one agent has `default: true`",
        );
    }
    let tls = l.tls.and_then(|t| tls(t, &join(path, "tls"), p));
    let auth = l.auth.and_then(|a| {
        let apath = join(path, "auth.api_keys");
        if a.api_keys.is_empty() {
            p.error(&apath, "must list at least one key");
            return None;
        }
        if a.api_keys.iter().any(|k| k.trim().is_empty()) {
            p.error(&apath, "keys must not be empty");
            return None;
        }
        Some(ClientAuth {
            api_keys: a.api_keys.into_iter().map(Secret::new).collect(),
        })
    });
    let (connections, problems) =
        crate::connections::connections(l.connections, &join(path, "connections"));
    for (key, message) in problems {
        p.error(key, message);
    }
    Some(Listener {
        name: l.name.unwrap_or_else(|| format!("{}_listener", l.kind)),
        kind,
        origin: ListenerOrigin::List,
        addr: addr?,
        timeout,
        first_token_timeout,
        max_retries: l.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
        max_body_bytes,
        input_filters: l.input_filters.unwrap_or_default(),
        output_filters: l.output_filters.unwrap_or_default(),
        agents,
        router: l.router,
        tls,
        auth,
        connections,
    })
}

pub(super) fn check_message_format(f: Option<&str>, path: &str, p: &mut Problems) {
    if let Some(f) = f
        && f != "openai"
    {
        p.error(
            join(path, "message_format"),
            format!("`{f}` is not supported (openai)"),
        );
    }
}

pub(super) fn tls(t: RawTls, path: &str, p: &mut Problems) -> Option<TlsConfig> {
    match (t.cert_path, t.key_path, t.acme) {
        (Some(cert), Some(key), None) => Some(TlsConfig::Static {
            cert_path: cert.into(),
            key_path: key.into(),
        }),
        (None, None, Some(a)) => {
            let apath = join(path, "acme");
            if a.domains.is_empty() {
                p.error(join(&apath, "domains"), "must list at least one domain");
            }
            let directory = a.directory.as_deref().unwrap_or(LETS_ENCRYPT);
            let directory = http_url(directory, &join(&apath, "directory"), p)?;
            Some(TlsConfig::Acme(AcmeConfig {
                domains: a.domains,
                contact: a.contact.unwrap_or_default(),
                directory,
                cache_dir: a
                    .cache_dir
                    .map_or_else(|| PathBuf::from("./acme-cache"), PathBuf::from),
                ca_path: a.ca_path.map(PathBuf::from),
            }))
        }
        (_, _, Some(_)) => {
            p.error(
                path,
                "use either `cert_path` + `key_path` or `acme`, not both",
            );
            None
        }
        _ => {
            p.error(path, "needs both `cert_path` and `key_path` (or `acme`)");
            None
        }
    }
}

pub(super) fn socket_addr(
    address: Option<&str>,
    port: Option<u32>,
    default_ip: IpAddr,
    default_port: u16,
    path: &str,
    p: &mut Problems,
) -> Option<SocketAddr> {
    let ip = match address {
        None => Some(default_ip),
        Some("localhost") => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        Some(a) => match a.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                p.error(join(path, "address"), format!("`{a}` is not an IP address"));
                None
            }
        },
    };
    let port = match port {
        None => Some(default_port),
        // 0: the OS picks a free port when the listener binds; the process logs it
        // (docs/deployment.md, "Port 0").
        Some(n) if (0..=65535).contains(&n) => u16::try_from(n).ok(),
        Some(n) => {
            p.error(
                join(path, "port"),
                format!("{n} is not a valid port (0–65535)"),
            );
            None
        }
    };
    Some(SocketAddr::new(ip?, port?))
}

pub(super) fn check_listener_refs(
    listeners: &[Listener],
    filters: &[Filter],
    agents: &[Agent],
    p: &mut Problems,
) {
    let filter_ids: BTreeSet<&str> = filters.iter().map(|f| f.id.as_str()).collect();
    let agent_ids: BTreeSet<&str> = agents.iter().map(|a| a.id.as_str()).collect();
    for (i, l) in listeners.iter().enumerate() {
        let path = match l.origin {
            ListenerOrigin::Legacy => format!("listeners.{}", l.name),
            _ => format!("listeners[{i}]"),
        };
        for (key, ids) in [
            ("input_filters", &l.input_filters),
            ("output_filters", &l.output_filters),
        ] {
            for (j, id) in ids.iter().enumerate() {
                if !filter_ids.contains(id.as_str()) {
                    p.error(
                        format!("{path}.{key}[{j}]"),
                        format!("`{id}` is not a filter id in `filters`"),
                    );
                }
            }
        }
        for (j, a) in l.agents.iter().enumerate() {
            if !agent_ids.contains(a.id.as_str()) {
                // Plano loads this too; a request routed to it is refused at request time.
                p.warn(
                    &format!("{path}.agents[{j}].id"),
                    &format!(
                        "`{}` is not an agent id in `agents`: requests routed to it answer 500 `agent_not_configured`",
                        a.id
                    ),
                );
            }
            for (k, id) in a.input_filters.iter().enumerate() {
                if !filter_ids.contains(id.as_str()) {
                    p.error(
                        format!("{path}.agents[{j}].input_filters[{k}]"),
                        format!("`{id}` is not a filter id in `filters`"),
                    );
                }
            }
        }
    }
}

/// Two sockets clash when their ports match and their IPs overlap (a wildcard address
/// overlaps every address of its family).
pub(super) fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    // Port 0 never clashes: each socket gets a port of its own from the OS.
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip()
            || (a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified())))
}

pub(super) fn check_addresses(listeners: &[Listener], admin: &Admin, p: &mut Problems) {
    for (i, a) in listeners.iter().enumerate() {
        for b in &listeners[i + 1..] {
            if clash(a.addr, b.addr) {
                p.error(
                    "listeners",
                    format!(
                        "listeners `{}` ({}) and `{}` ({}) bind the same port",
                        a.name, a.addr, b.name, b.addr
                    ),
                );
            }
        }
        for (name, addr) in [("admin.edge", admin.edge), ("admin.egress", admin.egress)] {
            if clash(a.addr, addr) {
                p.error(
                    "listeners",
                    format!(
                        "listener `{}` ({}) clashes with `{name}` ({addr})",
                        a.name, a.addr
                    ),
                );
            }
        }
    }
    if clash(admin.edge, admin.egress) {
        p.error("admin", "`edge` and `egress` admin addresses are the same");
    }
}

pub(super) fn admin(value: &Value, p: &mut Problems) -> Admin {
    let mut admin = Admin {
        edge: SocketAddr::from((Ipv4Addr::LOCALHOST, 9901)),
        egress: SocketAddr::from((Ipv4Addr::LOCALHOST, 9902)),
    };
    if value.is_null() {
        return admin;
    }
    if let Some(raw) = section::<RawAdmin>(value, "admin", p) {
        for (key, v, slot) in [
            ("edge", raw.edge, &mut admin.edge),
            ("egress", raw.egress, &mut admin.egress),
        ] {
            if let Some(v) = v {
                match v.replace("localhost", "127.0.0.1").parse::<SocketAddr>() {
                    Ok(a) => *slot = a,
                    Err(_) => p.error(
                        format!("admin.{key}"),
                        format!("`{v}` is not HOST:PORT with an IP host"),
                    ),
                }
            }
        }
    }
    admin
}

pub(super) fn egress(
    value: &Value,
    model_listener: &Listener,
    admin: &Admin,
    p: &mut Problems,
) -> Option<EgressLink> {
    let loopback = |a: SocketAddr| -> SocketAddr {
        let ip = match a.ip() {
            IpAddr::V4(v) if v.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v) if v.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        SocketAddr::new(ip, a.port())
    };
    let model = model_listener.addr;
    let fallback_url = |a: SocketAddr| Url::parse(&format!("http://{}", loopback(a))).ok();
    let raw = if value.is_null() {
        None
    } else {
        section::<RawEgress>(value, "egress", p)
    };
    let (url, health) = raw.map_or((None, None), |r| (r.url, r.health));
    let url = url
        .and_then(|u| http_url(&u, "egress.url", p))
        .or_else(|| fallback_url(model));
    let health = health
        .and_then(|u| http_url(&u, "egress.health", p))
        .or_else(|| fallback_url(admin.egress));
    Some(EgressLink {
        url: url?,
        health: health?,
    })
}
