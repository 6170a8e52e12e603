//! Raw sections → normalised [`Config`]. Every check records its problem with the key path
//! and carries on, so one run reports everything that is wrong.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};
use url::Url;

use crate::load::{Problems, join, kind, list, map, section};
use crate::model::*;
use crate::providers;
use crate::raw::*;

const VERSIONS: &[&str] = &[
    "v0.1",
    "v0.1.0",
    "0.1-beta",
    "v0.1-beta",
    "0.2.0",
    "v0.2.0",
    "v0.3.0",
    "v0.4.0",
];
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_MAX_RETRIES: u32 = 2;
const DEFAULT_MAX_BODY: usize = 10 * 1024 * 1024;
const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Keys Plano accepts that this data plane parses but does not act on yet.
const NOT_ACTED_ON: &[&str] = &["mode", "routing", "prompt_guards", "routing_preferences"];

const TOP_LEVEL: &[&str] = &[
    "version",
    "listeners",
    "model_providers",
    "llm_providers",
    "model_aliases",
    "agents",
    "filters",
    "endpoints",
    "prompt_targets",
    "system_prompt",
    "ratelimits",
    "ratelimit_storage",
    "overrides",
    "tracing",
    "state_storage",
    "egress",
    "admin",
    "mode",
    "routing",
    "prompt_guards",
    "routing_preferences",
];

pub(crate) fn build(
    doc: Map<String, Value>,
    p: &mut Problems,
    source: Option<PathBuf>,
) -> Option<Config> {
    for key in doc.keys() {
        if !TOP_LEVEL.contains(&key.as_str()) {
            p.error(key.clone(), "unknown key");
        }
    }
    for key in NOT_ACTED_ON {
        if doc.contains_key(*key) {
            p.warn(key, "parsed but not acted on yet");
        }
    }
    let get = |k: &str| doc.get(k).cloned().unwrap_or(Value::Null);

    let version = match get("version") {
        Value::String(v) if VERSIONS.contains(&v.as_str()) => v,
        Value::String(v) => {
            p.error(
                "version",
                format!("`{v}` is not a supported version (v0.1 … v0.4.0)"),
            );
            v
        }
        Value::Null => {
            p.error(
                "version",
                "missing: set `version: v0.4.0` (v0.1 … v0.4.0 are accepted)",
            );
            String::new()
        }
        other => {
            p.error(
                "version",
                format!("expected a string, found {}", kind(&other)),
            );
            String::new()
        }
    };

    let filters = filters(&get("filters"), p);
    let agents: Vec<Agent> = list::<RawAgent>(&get("agents"), "agents", p)
        .into_iter()
        .enumerate()
        .filter_map(|(i, a)| {
            let url = http_url(&a.url, &format!("agents[{i}].url"), p)?;
            Some(Agent { id: a.id, url })
        })
        .collect();
    unique(agents.iter().map(|a| a.id.as_str()), "agents", "id", p);

    let providers = model_providers(&doc, p);
    let aliases = aliases(&get("model_aliases"), &providers, p);
    let endpoints = endpoints(&get("endpoints"), p);
    let prompt_targets = prompt_targets(&get("prompt_targets"), &endpoints, p);
    let overrides = overrides(&get("overrides"), &providers, &aliases, p);
    let ratelimits = ratelimits(&get("ratelimits"), &providers, &aliases, p);
    let ratelimit_storage = ratelimit_storage(&get("ratelimit_storage"), p);
    let state_storage = state_storage(&get("state_storage"), p);
    let tracing = match get("tracing") {
        Value::Null => None,
        v => section::<RawTracing>(&v, "tracing", p).map(|t| {
            p.warn("tracing", "parsed but not acted on yet (no trace export)");
            TracingConfig {
                random_sampling: t.random_sampling,
                opentracing_grpc_endpoint: t.opentracing_grpc_endpoint,
            }
        }),
    };
    let system_prompt = match get("system_prompt") {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => {
            p.error(
                "system_prompt",
                format!("expected a string, found {}", kind(&other)),
            );
            None
        }
    };
    let admin = admin(&get("admin"), p);
    let mut listeners = listeners(&get("listeners"), p);
    check_listener_refs(&listeners, &filters, &agents, p);
    check_addresses(&listeners, &admin, p);
    if !listeners.iter().any(|l| l.kind == ListenerKind::Model) {
        listeners.push(predefined_model_listener());
    }
    let egress = egress(&get("egress"), &listeners, &admin, p);

    if !p.errors.is_empty() {
        return None;
    }
    let egress = egress?;
    Some(Config {
        version,
        source,
        listeners,
        providers,
        aliases,
        agents,
        filters,
        endpoints,
        prompt_targets,
        system_prompt,
        ratelimits,
        ratelimit_storage,
        overrides,
        egress,
        admin,
        state_storage,
        tracing,
        warnings: std::mem::take(&mut p.warnings),
    })
}

// ---------------------------------------------------------------- listeners

fn predefined_model_listener() -> Listener {
    Listener {
        name: "model_listener".into(),
        kind: ListenerKind::Model,
        origin: ListenerOrigin::Predefined,
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 12000)),
        timeout: DEFAULT_TIMEOUT,
        first_token_timeout: DEFAULT_TIMEOUT,
        max_retries: DEFAULT_MAX_RETRIES,
        max_body_bytes: DEFAULT_MAX_BODY,
        input_filters: Vec::new(),
        output_filters: Vec::new(),
        agents: Vec::new(),
        router: None,
        tls: None,
        auth: None,
    }
}

fn listeners(value: &Value, p: &mut Problems) -> Vec<Listener> {
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

fn legacy_listeners(value: &Value, p: &mut Problems) -> Vec<Listener> {
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
        let mut listener = predefined_model_listener();
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

fn list_listener(l: ListListener, path: &str, p: &mut Problems) -> Option<Listener> {
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
    })
}

fn check_message_format(f: Option<&str>, path: &str, p: &mut Problems) {
    if let Some(f) = f
        && f != "openai"
    {
        p.error(
            join(path, "message_format"),
            format!("`{f}` is not supported (openai)"),
        );
    }
}

fn tls(t: RawTls, path: &str, p: &mut Problems) -> Option<TlsConfig> {
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

fn socket_addr(
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
        Some(n) if (1..=65535).contains(&n) => u16::try_from(n).ok(),
        Some(n) => {
            p.error(
                join(path, "port"),
                format!("{n} is not a valid port (1–65535)"),
            );
            None
        }
    };
    Some(SocketAddr::new(ip?, port?))
}

fn check_listener_refs(
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
                p.error(
                    format!("{path}.agents[{j}].id"),
                    format!("`{}` is not an agent id in `agents`", a.id),
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
fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && (a.ip() == b.ip()
            || (a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified())))
}

fn check_addresses(listeners: &[Listener], admin: &Admin, p: &mut Problems) {
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

fn admin(value: &Value, p: &mut Problems) -> Admin {
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

fn egress(
    value: &Value,
    listeners: &[Listener],
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
    let model = listeners
        .iter()
        .find(|l| l.kind == ListenerKind::Model)
        .map_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 12000)), |l| l.addr);
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

// ---------------------------------------------------------------- providers

fn model_providers(doc: &Map<String, Value>, p: &mut Problems) -> Vec<Provider> {
    let (key, value) = match (doc.get("model_providers"), doc.get("llm_providers")) {
        (Some(_), Some(_)) => {
            p.error(
                "llm_providers",
                "`llm_providers` is the deprecated spelling of `model_providers`; use only one",
            );
            return Vec::new();
        }
        (Some(v), None) => ("model_providers", v),
        (None, Some(v)) => {
            p.warn(
                "llm_providers",
                "deprecated spelling; rename to `model_providers`",
            );
            ("llm_providers", v)
        }
        (None, None) => return Vec::new(),
    };
    let raws = list::<RawProvider>(value, key, p);
    let mut out: Vec<Provider> = Vec::new();
    let mut defaults = Vec::new();
    for (i, r) in raws.into_iter().enumerate() {
        let path = format!("{key}[{i}]");
        if r.default == Some(true) {
            defaults.push(path.clone());
        }
        if let Some(pr) = provider(r, &path, p) {
            if let Some(prev) = out.iter().position(|o| o.name == pr.name) {
                p.error(
                    join(&path, "name"),
                    format!(
                        "provider name `{}` is already used by {key}[{prev}]",
                        pr.name
                    ),
                );
            }
            out.push(pr);
        }
    }
    if defaults.len() > 1 {
        p.error(
            key,
            format!(
                "more than one provider has `default: true`: {}",
                defaults.join(", ")
            ),
        );
    }
    out
}

fn provider(r: RawProvider, path: &str, p: &mut Problems) -> Option<Provider> {
    if r.routing_preferences.is_some() {
        p.warn(
            &join(path, "routing_preferences"),
            "parsed but not acted on yet",
        );
    }
    let Some((prefix, model_id)) = r
        .model
        .split_once('/')
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
    else {
        p.error(
            join(path, "model"),
            format!(
                "`{}` must be `<provider>/<model-id>` (e.g. openai/gpt-4o)",
                r.model
            ),
        );
        return None;
    };
    let defaults = match &r.provider_interface {
        Some(iface) => match providers::interface(iface) {
            Some(d) => Some(d),
            None => {
                p.error(
                    join(path, "provider_interface"),
                    format!("`{iface}` is not a known provider interface"),
                );
                return None;
            }
        },
        None => providers::lookup(prefix),
    };
    let Some(defaults) = defaults else {
        p.error(
            join(path, "model"),
            format!("unknown provider prefix `{prefix}`: set `base_url` and `provider_interface` (e.g. openai)"),
        );
        return None;
    };
    let (base_url, path_prefix) = match &r.base_url {
        Some(b) => {
            let url = http_url(b, &join(path, "base_url"), p)?;
            let own_path = url.path().trim_end_matches('/').to_string();
            let mut origin = url.clone();
            origin.set_path("");
            origin.set_query(None);
            let prefix_path = if own_path.is_empty() {
                defaults.path_prefix.to_string()
            } else {
                own_path
            };
            (origin, prefix_path)
        }
        None => match defaults.base_url.and_then(|u| Url::parse(u).ok()) {
            Some(u) => (u, defaults.path_prefix.to_string()),
            None => {
                p.error(
                    join(path, "base_url"),
                    format!("required for `{prefix}` providers (there is no public default)"),
                );
                return None;
            }
        },
    };
    let access_key = r.access_key.filter(|k| !k.is_empty()).map(Secret::new);
    let auth = match (defaults.auth, &access_key) {
        (AuthStyle::None, Some(_)) => AuthStyle::Bearer,
        (style, _) => style,
    };
    let wildcard = model_id == "*";
    let refuse_hosted_tools = match r.hosted_tools.as_deref() {
        None | Some("drop") => false,
        Some("refuse") => true,
        Some(other) => {
            p.error(
                join(path, "hosted_tools"),
                format!("`{other}` must be `drop` or `refuse`"),
            );
            return None;
        }
    };
    Some(Provider {
        name: r.name.unwrap_or_else(|| r.model.clone()),
        prefix: prefix.to_string(),
        model_id: model_id.to_string(),
        model: r.model.clone(),
        wildcard,
        api: defaults.api,
        base_url,
        path_prefix,
        query: defaults.query.map(str::to_string),
        http_host: r.http_host,
        access_key,
        auth,
        passthrough_auth: r.passthrough_auth.unwrap_or(false),
        headers: r.headers.unwrap_or_default().into_iter().collect(),
        default: r.default.unwrap_or(false),
        refuse_hosted_tools,
    })
}

fn http_url(s: &str, path: &str, p: &mut Problems) -> Option<Url> {
    match Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
        Ok(u) => {
            p.error(
                path,
                format!(
                    "`{s}` must be an http:// or https:// URL with a host (scheme is `{}`)",
                    u.scheme()
                ),
            );
            None
        }
        Err(e) => {
            p.error(path, format!("`{s}` is not a URL: {e}"));
            None
        }
    }
}

/// Resolve a model reference (alias target, fallback, rate-limit model, override) to a
/// provider name: exact provider name, `provider/model`, a bare model id that only one
/// provider serves, or a `provider/*` wildcard (the reference is kept as written: the
/// egress resolves it against the wildcard at request time).
pub fn resolve_model(reference: &str, providers: &[Provider]) -> Result<String, String> {
    if let Some(pr) = providers
        .iter()
        .find(|pr| pr.name == reference || pr.model == reference)
    {
        return Ok(pr.name.clone());
    }
    let bare: Vec<&Provider> = providers
        .iter()
        .filter(|pr| !pr.wildcard && pr.model_id == reference)
        .collect();
    match bare.len() {
        1 => return Ok(bare[0].name.clone()),
        n if n > 1 => {
            let names: Vec<&str> = bare.iter().map(|pr| pr.name.as_str()).collect();
            return Err(format!(
                "`{reference}` is ambiguous: served by {}",
                names.join(", ")
            ));
        }
        _ => {}
    }
    if let Some((prefix, _)) = reference.split_once('/')
        && providers
            .iter()
            .any(|pr| pr.wildcard && pr.prefix == prefix)
    {
        return Ok(reference.to_string());
    }
    Err(format!("`{reference}` is not a configured model"))
}

fn aliases(value: &Value, providers: &[Provider], p: &mut Problems) -> BTreeMap<String, Alias> {
    let raws = map::<RawAlias>(value, "model_aliases", p);
    let names: BTreeSet<&str> = raws.iter().map(|(k, _)| k.as_str()).collect();
    let mut out = BTreeMap::new();
    for (name, raw) in &raws {
        let path = format!("model_aliases.{name}");
        // Alias → alias chains: follow them (cycles are reported) to a provider.
        let resolve = |r: &str, key: &str, p: &mut Problems| -> Option<String> {
            let mut seen: Vec<String> = vec![name.clone()];
            let mut cur = r.to_string();
            while names.contains(cur.as_str()) {
                let cycle = seen.contains(&cur);
                seen.push(cur.clone());
                if cycle {
                    p.error(
                        join(&path, key),
                        format!("alias cycle: {}", seen.join(" → ")),
                    );
                    return None;
                }
                cur = raws
                    .iter()
                    .find(|(k, _)| *k == cur)
                    .map(|(_, a)| a.target.clone())
                    .unwrap_or_default();
            }
            match resolve_model(&cur, providers) {
                Ok(n) => Some(n),
                Err(e) => {
                    p.error(join(&path, key), e);
                    None
                }
            }
        };
        let target = resolve(&raw.target, "target", p);
        let fallbacks: Vec<String> = raw
            .fallbacks
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, f)| resolve(f, &format!("fallbacks[{i}]"), p))
            .collect();
        if let Some(target) = target {
            out.insert(name.clone(), Alias { target, fallbacks });
        }
    }
    out
}

// ---------------------------------------------------------------- the rest

fn filters(value: &Value, p: &mut Problems) -> Vec<Filter> {
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

fn endpoints(value: &Value, p: &mut Problems) -> BTreeMap<String, Endpoint> {
    map::<RawEndpoint>(value, "endpoints", p)
        .into_iter()
        .filter_map(|(name, e)| {
            let path = format!("endpoints.{name}");
            let scheme = e.protocol.as_deref().unwrap_or("http");
            if !matches!(scheme, "http" | "https") {
                p.error(
                    join(&path, "protocol"),
                    format!("`{scheme}` is not http or https"),
                );
                return None;
            }
            let connect_timeout = duration_or(
                e.connect_timeout.as_ref(),
                &join(&path, "connect_timeout"),
                Duration::from_secs(5),
                p,
            );
            let timeout = duration_or(
                e.timeout.as_ref(),
                &join(&path, "timeout"),
                DEFAULT_TIMEOUT,
                p,
            );
            let base_url = http_url(
                &format!("{scheme}://{}", e.endpoint),
                &join(&path, "endpoint"),
                p,
            )?;
            Some((
                name.clone(),
                Endpoint {
                    name,
                    base_url,
                    connect_timeout,
                    timeout,
                    http_host: e.http_host,
                },
            ))
        })
        .collect()
}

fn prompt_targets(
    value: &Value,
    endpoints: &BTreeMap<String, Endpoint>,
    p: &mut Problems,
) -> Vec<PromptTarget> {
    let raws = list::<RawPromptTarget>(value, "prompt_targets", p);
    let out: Vec<PromptTarget> = raws
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let path = format!("prompt_targets[{i}]");
            let parameters = t
                .parameters
                .unwrap_or_default()
                .into_iter()
                .enumerate()
                .filter_map(|(j, prm)| {
                    let ppath = format!("{path}.parameters[{j}]");
                    let ty = match prm.ty.as_str() {
                        "str" | "string" => ParamType::String,
                        "int" | "integer" => ParamType::Int,
                        "float" | "number" => ParamType::Float,
                        "bool" | "boolean" => ParamType::Bool,
                        "list" | "array" => ParamType::List,
                        "dict" | "object" => ParamType::Dict,
                        other => {
                            p.error(join(&ppath, "type"), format!("`{other}` is not a parameter type (str, int, float, bool, list, dict)"));
                            return None;
                        }
                    };
                    Some(PromptParameter {
                        name: prm.name,
                        description: prm.description,
                        required: prm.required.unwrap_or(false),
                        ty,
                        format: prm.format,
                        enum_values: prm.enum_values.unwrap_or_default(),
                        default: prm.default,
                    })
                })
                .collect();
            let Some(ep) = t.endpoint else {
                p.error(join(&path, "endpoint"), "missing: a prompt target needs an endpoint");
                return None;
            };
            if !endpoints.contains_key(&ep.name) {
                p.error(join(&path, "endpoint.name"), format!("`{}` is not an endpoint in `endpoints`", ep.name));
            }
            let method = match ep.http_method.as_deref().map(str::to_ascii_uppercase).as_deref() {
                None | Some("POST") => HttpMethod::Post,
                Some("GET") => HttpMethod::Get,
                Some(other) => {
                    p.error(join(&path, "endpoint.http_method"), format!("`{other}` is not GET or POST"));
                    HttpMethod::Post
                }
            };
            Some(PromptTarget {
                name: t.name,
                description: t.description,
                parameters,
                endpoint: PromptTargetEndpoint {
                    name: ep.name,
                    path: ep.path.unwrap_or_else(|| "/".into()),
                    method,
                    http_headers: ep.http_headers.unwrap_or_default().into_iter().collect(),
                },
                system_prompt: t.system_prompt,
                auto_llm_dispatch_on_response: t.auto_llm_dispatch_on_response.unwrap_or(true),
                default: t.default.unwrap_or(false),
            })
        })
        .collect();
    unique(
        out.iter().map(|t| t.name.as_str()),
        "prompt_targets",
        "name",
        p,
    );
    out
}

fn model_ref_ok(
    r: &str,
    providers: &[Provider],
    aliases: &BTreeMap<String, Alias>,
) -> Result<(), String> {
    if aliases.contains_key(r) {
        return Ok(());
    }
    resolve_model(r, providers).map(|_| ())
}

fn overrides(
    value: &Value,
    providers: &[Provider],
    aliases: &BTreeMap<String, Alias>,
    p: &mut Problems,
) -> Overrides {
    let mut out = Overrides {
        upstream_connect_timeout: Duration::from_secs(5),
        upstream_tls_ca_path: None,
        agent_orchestration_model: None,
        function_calling_model: None,
    };
    if value.is_null() {
        return out;
    }
    let Some(raw) = section::<RawOverrides>(value, "overrides", p) else {
        return out;
    };
    for (key, set) in [
        (
            "prompt_target_intent_matching_threshold",
            raw.prompt_target_intent_matching_threshold.is_some(),
        ),
        (
            "optimize_context_window",
            raw.optimize_context_window.is_some(),
        ),
        (
            "use_agent_orchestrator",
            raw.use_agent_orchestrator.is_some(),
        ),
        ("disable_signals", raw.disable_signals.is_some()),
        ("llm_routing_model", raw.llm_routing_model.is_some()),
        (
            "orchestrator_model_context_length",
            raw.orchestrator_model_context_length.is_some(),
        ),
    ] {
        if set {
            p.warn(&format!("overrides.{key}"), "parsed but not acted on yet");
        }
    }
    out.upstream_connect_timeout = duration_or(
        raw.upstream_connect_timeout.as_ref(),
        "overrides.upstream_connect_timeout",
        out.upstream_connect_timeout,
        p,
    );
    out.upstream_tls_ca_path = raw.upstream_tls_ca_path.map(PathBuf::from);
    for (key, v, slot) in [
        (
            "agent_orchestration_model",
            raw.agent_orchestration_model,
            &mut out.agent_orchestration_model,
        ),
        (
            "function_calling_model",
            raw.function_calling_model,
            &mut out.function_calling_model,
        ),
    ] {
        if let Some(v) = v {
            if let Err(e) = model_ref_ok(&v, providers, aliases) {
                p.error(format!("overrides.{key}"), e);
            }
            *slot = Some(v);
        }
    }
    out
}

fn ratelimits(
    value: &Value,
    providers: &[Provider],
    aliases: &BTreeMap<String, Alias>,
    p: &mut Problems,
) -> Vec<RateLimit> {
    list::<RawRateLimit>(value, "ratelimits", p)
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let path = format!("ratelimits[{i}]");
            if let Err(e) = model_ref_ok(&r.model, providers, aliases) {
                p.error(join(&path, "model"), e);
            }
            let unit = match r.limit.unit.as_str() {
                "second" => LimitUnit::Second,
                "minute" => LimitUnit::Minute,
                "hour" => LimitUnit::Hour,
                "day" => LimitUnit::Day,
                other => {
                    p.error(
                        join(&path, "limit.unit"),
                        format!("`{other}` is not second, minute, hour or day"),
                    );
                    return None;
                }
            };
            let (kind, amount) = match (r.limit.tokens, r.limit.requests) {
                (Some(t), None) => (LimitKind::Tokens, t),
                (None, Some(n)) => (LimitKind::Requests, n),
                _ => {
                    p.error(
                        join(&path, "limit"),
                        "set exactly one of `tokens` or `requests`",
                    );
                    return None;
                }
            };
            if amount == 0 {
                p.error(join(&path, "limit"), "the limit must be greater than 0");
            }
            if r.selector.key.trim().is_empty() {
                p.error(join(&path, "selector.key"), "must name a request header");
            }
            Some(RateLimit {
                model: r.model,
                selector: Selector {
                    key: r.selector.key.to_ascii_lowercase(),
                    value: if r.selector.value == "*" {
                        SelectorValue::Any
                    } else {
                        SelectorValue::Exact(r.selector.value)
                    },
                },
                kind,
                amount,
                unit,
            })
        })
        .collect()
}

fn ratelimit_storage(value: &Value, p: &mut Problems) -> RateLimitStorage {
    if value.is_null() {
        return RateLimitStorage::Memory;
    }
    let Some(raw) = section::<RawRateLimitStorage>(value, "ratelimit_storage", p) else {
        return RateLimitStorage::Memory;
    };
    match raw.kind.as_str() {
        "memory" => RateLimitStorage::Memory,
        "redis" => {
            let timeout = duration_or(
                raw.timeout.as_ref(),
                "ratelimit_storage.timeout",
                Duration::from_millis(100),
                p,
            );
            let url = match raw.url {
                Some(u) if u.starts_with("redis://") || u.starts_with("rediss://") => u,
                Some(_) => {
                    p.error(
                        "ratelimit_storage.url",
                        "must be a redis:// or rediss:// URL",
                    );
                    String::new()
                }
                None => {
                    p.error("ratelimit_storage.url", "required when `type: redis`");
                    String::new()
                }
            };
            RateLimitStorage::Redis {
                url: Secret::new(url),
                timeout,
                fail_open: raw.fail_open.unwrap_or(true),
            }
        }
        other => {
            p.error(
                "ratelimit_storage.type",
                format!("`{other}` is not memory or redis"),
            );
            RateLimitStorage::Memory
        }
    }
}

fn state_storage(value: &Value, p: &mut Problems) -> StateStorage {
    if value.is_null() {
        return StateStorage::Memory;
    }
    let Some(raw) = section::<RawStateStorage>(value, "state_storage", p) else {
        return StateStorage::Memory;
    };
    match (raw.kind.as_str(), raw.connection_string) {
        ("memory", _) => StateStorage::Memory,
        ("postgres", Some(c)) => {
            p.warn(
                "state_storage",
                "`type: postgres` is parsed but not acted on yet",
            );
            StateStorage::Postgres {
                connection_string: Secret::new(c),
            }
        }
        ("postgres", None) => {
            p.error(
                "state_storage.connection_string",
                "required when `type: postgres`",
            );
            StateStorage::Memory
        }
        (other, _) => {
            p.error(
                "state_storage.type",
                format!("`{other}` is not memory or postgres"),
            );
            StateStorage::Memory
        }
    }
}

fn unique<'a>(ids: impl Iterator<Item = &'a str>, list: &str, key: &str, p: &mut Problems) {
    let mut seen = BTreeSet::new();
    for (i, id) in ids.enumerate() {
        if !seen.insert(id) {
            p.error(
                format!("{list}[{i}].{key}"),
                format!("`{id}` is used more than once"),
            );
        }
    }
}

/// `30s`, `0.5s`, `500ms`, `5m`, `1h`, or a bare number of seconds.
pub(crate) fn parse_duration(raw: &RawDuration) -> Result<Duration, String> {
    let text = match raw {
        RawDuration::Seconds(s) => {
            return Duration::try_from_secs_f64(*s).map_err(|_| format!("`{s}` is not a duration"));
        }
        RawDuration::Text(t) => t.trim(),
    };
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (e.g. 30s, 0.5s, 500ms, 5m)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "`{text}` is not a duration (e.g. 30s, 0.5s, 500ms, 5m)"
            ));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{text}` is out of range"))
}

fn duration_or(
    raw: Option<&RawDuration>,
    path: &str,
    default: Duration,
    p: &mut Problems,
) -> Duration {
    match raw.map(parse_duration) {
        None => default,
        Some(Ok(d)) if d.is_zero() => {
            p.error(path, "must be greater than 0");
            default
        }
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            p.error(path, e);
            default
        }
    }
}
