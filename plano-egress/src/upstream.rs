//! The egress's pooled upstream client: the shared builder of
//! `plano_common::http_client` (web PKI roots plus `overrides.upstream_tls_ca_path`,
//! `overrides.upstream_connect_timeout`, HTTP/1.1 and HTTP/2 by ALPN), its pooled client
//! whose HTTP/1 connections are driven by the requests' own tasks, with the egress's
//! settings: TCP keep-alive 60 s, up to 256 idle connections per host, and TLS server
//! names taken from a provider's `http_host` or, for a replica of a `prefix_affinity`
//! endpoint reached by its address, from the name it was resolved from.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use plano_common::http_client::{HttpClientBuilder, PooledClient};
use plano_config::Config;
use rustls::pki_types::{InvalidDnsNameError, ServerName};

pub type HttpClient = PooledClient<http_body_util::Full<Bytes>>;

/// The TLS server names of replica addresses (`prefix_affinity`, `replicas.rs`): a request
/// sent to a replica's `ip:port` presents the name the address was resolved from. Written
/// on every resolution, read when a connection opens; shared by every client of a process.
#[derive(Debug, Clone, Default)]
pub struct ReplicaNames(Arc<RwLock<HashMap<(String, u16), String>>>);

impl ReplicaNames {
    /// `name` is now served at `new` instead of `old`.
    pub fn replace(&self, name: &str, old: &[SocketAddr], new: &[SocketAddr]) {
        let Ok(mut map) = self.0.write() else {
            return;
        };
        for a in old {
            map.remove(&(a.ip().to_string(), a.port()));
        }
        for a in new {
            map.insert((a.ip().to_string(), a.port()), name.to_string());
        }
    }

    fn get(&self, host: &str, port: u16) -> Option<String> {
        let map = self.0.read().ok()?;
        map.get(&(host.to_string(), port)).cloned()
    }
}

/// Build the client from the config's overrides and providers.
pub fn client(config: &Config, replicas: &ReplicaNames) -> anyhow::Result<HttpClient> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(HttpClientBuilder::from_config(config)
        .tcp_keepalive(Some(Duration::from_secs(60)))
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .server_names(sni_resolver(config, replicas.clone()))
        .build_pooled()?)
}

/// TLS server names: a provider's `http_host` (without its port) for connections to its
/// `base_url`, else the URL's own host. Connections are pooled per scheme and authority,
/// so one authority has one name; should two providers share an authority with different
/// `http_host`s, the first one listed wins.
fn sni_resolver(
    config: &Config,
    replicas: ReplicaNames,
) -> impl Fn(&Uri) -> Result<ServerName<'static>, InvalidDnsNameError> + Send + Sync + 'static {
    let mut names: HashMap<(String, u16), String> = HashMap::new();
    for p in &config.providers {
        let (Some(name), Some(host), Some(port)) = (
            p.http_host.as_deref(),
            p.base_url.host_str(),
            p.base_url.port_or_known_default(),
        ) else {
            continue;
        };
        names
            .entry((unbracket(host).to_ascii_lowercase(), port))
            .or_insert_with(|| host_without_port(name).to_string());
    }
    move |uri: &Uri| {
        let host = unbracket(uri.host().unwrap_or_default());
        let port = uri.port_u16().unwrap_or(443);
        if let Some(name) = replicas.get(host, port) {
            return ServerName::try_from(name);
        }
        let name = names
            .get(&(host.to_ascii_lowercase(), port))
            .map_or(host, String::as_str);
        ServerName::try_from(name.to_string())
    }
}

/// `[::1]` → `::1`; any other host as it is.
pub(crate) fn unbracket(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// `llm.example.com:8443` → `llm.example.com`; `[::1]:8443` → `::1`.
pub(crate) fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.parse::<u16>().is_ok() => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_follows_http_host_for_its_base_url_only() {
        let yaml = r#"
version: v0.4.0
model_providers:
  - model: openai/gpt-4o
    base_url: https://10.0.0.7:8443
    http_host: llm.internal.example:8443
  - model: openai/gpt-4o-mini
"#;
        let config = plano_config::load_str(yaml, None, &|_| None).unwrap();
        let replicas = ReplicaNames::default();
        let resolve = sni_resolver(&config, replicas.clone());
        let name = |u: &str| resolve(&u.parse::<Uri>().unwrap()).unwrap();
        assert_eq!(
            name("https://10.0.0.7:8443/v1/chat/completions"),
            ServerName::try_from("llm.internal.example").unwrap()
        );
        assert_eq!(
            name("https://api.openai.com/v1/chat/completions"),
            ServerName::try_from("api.openai.com").unwrap()
        );
        assert_eq!(
            name("https://10.0.0.7:9443/"),
            ServerName::try_from("10.0.0.7").unwrap()
        );
        // A replica address presents the name it was resolved from, until it moves.
        let a: SocketAddr = "10.0.0.8:8443".parse().unwrap();
        let b: SocketAddr = "[fd00::8]:8443".parse().unwrap();
        replicas.replace("vllm.example", &[], &[a, b]);
        assert_eq!(
            name("https://10.0.0.8:8443/v1"),
            ServerName::try_from("vllm.example").unwrap()
        );
        assert_eq!(
            name("https://[fd00::8]:8443/v1"),
            ServerName::try_from("vllm.example").unwrap()
        );
        replicas.replace("vllm.example", &[a, b], &[b]);
        assert_eq!(
            name("https://10.0.0.8:8443/v1"),
            ServerName::try_from("10.0.0.8").unwrap()
        );
    }

    #[test]
    fn ports_are_stripped_from_http_host() {
        assert_eq!(host_without_port("a.example:8443"), "a.example");
        assert_eq!(host_without_port("a.example"), "a.example");
        assert_eq!(host_without_port("[::1]:8443"), "::1");
    }

    #[test]
    fn a_ca_file_without_certificates_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let yaml = format!(
            "version: v0.4.0\nmodel_providers:\n  - model: openai/gpt-4o\noverrides:\n  upstream_tls_ca_path: {}\n",
            path.display()
        );
        let config = plano_config::load_str(&yaml, None, &|_| None).unwrap();
        let err = client(&config, &ReplicaNames::default())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no usable PEM certificate"), "{err}");
    }
}
