//! `endpoints.<name>.prefix_affinity` for model providers: a provider whose `base_url` is
//! such an endpoint's address is served by every address its host resolves to, and each
//! request goes to the replica its prompt-prefix hash picks on a consistent-hash ring, so
//! a self-hosted server's KV cache for that prefix is reused (Plano: Envoy `STRICT_DNS` +
//! `RING_HASH` on `x-plano-prefix-hash`).
//!
//! The request is sent to the replica's `ip:port` (so the connection pool keeps
//! connections per replica) with the host's name kept for `Host` and TLS SNI
//! (`upstream::ReplicaNames`). The host is resolved when the config is loaded and again
//! every few seconds; a failed resolution keeps the last addresses. A replica that
//! refuses the connection is skipped to the next one on the ring, and set aside for a
//! few seconds so the next requests do not wait on it again.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::Uri;
use metrics::{counter, gauge};
use plano_common::metrics as m;
use plano_config::{Config, Endpoint, Provider};

use crate::routing::affinity::HashRing;
use crate::upstream::{ReplicaNames, host_without_port, unbracket};

/// How often a host is resolved again (Envoy's default `dns_refresh_rate`).
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// How long one resolution may take before it counts as failed.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a replica that could not be connected to goes to the end of every order.
const SET_ASIDE: Duration = Duration::from_secs(10);

/// The addresses a host name resolves to.
pub type Lookup<'a> = Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'a>>;

/// Name resolution for replicas: the system resolver in the binaries; tests and embedders
/// may answer themselves (e.g. a test name for several 127.0.0.x addresses).
pub trait Resolve: Send + Sync + 'static {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Lookup<'a>;
}

/// The system resolver (`getaddrinfo` through tokio), which honours `/etc/hosts`.
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Lookup<'a> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// A resolver and how often it is asked again.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<dyn Resolve>,
    every: Duration,
}

impl Resolver {
    pub fn new(inner: impl Resolve, every: Duration) -> Self {
        Self {
            inner: Arc::new(inner),
            every,
        }
    }

    pub fn system() -> Self {
        Self::new(SystemResolver, REFRESH_EVERY)
    }
}

/// What a resolution produced: the addresses and the ring over them.
struct Snapshot {
    addrs: Vec<SocketAddr>,
    ring: HashRing,
}

/// The replicas of one `prefix_affinity` endpoint, as one host name resolves.
pub struct Replicas {
    /// The endpoint's name (logs, metrics).
    pub endpoint: String,
    host: String,
    port: u16,
    /// The name presented as SNI: the provider's `http_host` (no port), else the host.
    server_name: String,
    names: ReplicaNames,
    current: ArcSwap<Snapshot>,
    /// Replicas that refused a connection, until when they go last.
    aside: Mutex<HashMap<String, Instant>>,
}

impl Replicas {
    fn new(endpoint: &Endpoint, provider: &Provider, names: ReplicaNames) -> Self {
        let host = unbracket(endpoint.base_url.host_str().unwrap_or_default()).to_string();
        let server_name = provider
            .http_host
            .as_deref()
            .map_or_else(|| host.clone(), |h| host_without_port(h).to_string());
        Self {
            endpoint: endpoint.name.clone(),
            port: endpoint.base_url.port_or_known_default().unwrap_or(80),
            host,
            server_name,
            names,
            current: ArcSwap::from_pointee(Snapshot {
                addrs: Vec::new(),
                ring: HashRing::new(&[]),
            }),
            aside: Mutex::new(HashMap::new()),
        }
    }

    /// Resolve the host again. A failure or an empty answer keeps the last addresses.
    pub async fn refresh(&self, resolver: &dyn Resolve) {
        let found = tokio::time::timeout(RESOLVE_TIMEOUT, resolver.resolve(&self.host, self.port))
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("timed out")));
        let addrs = match found {
            Ok(addrs) if !addrs.is_empty() => preferred(addrs),
            Ok(_) | Err(_) => {
                let error = match found {
                    Err(e) => e.to_string(),
                    Ok(_) => "no addresses".to_string(),
                };
                counter!(m::ENDPOINT_RESOLUTIONS_TOTAL, "endpoint" => self.endpoint.clone(), "outcome" => "error").increment(1);
                tracing::warn!(endpoint = %self.endpoint, host = %self.host, %error, kept = self.current.load().addrs.len(), "cannot resolve a prefix_affinity endpoint; keeping its last addresses");
                return;
            }
        };
        counter!(m::ENDPOINT_RESOLUTIONS_TOTAL, "endpoint" => self.endpoint.clone(), "outcome" => "ok").increment(1);
        let old = self.current.load();
        if old.addrs == addrs {
            return;
        }
        self.names.replace(&self.server_name, &old.addrs, &addrs);
        let nodes: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
        tracing::info!(endpoint = %self.endpoint, host = %self.host, replicas = ?nodes, "prefix_affinity replicas resolved");
        gauge!(m::ENDPOINT_REPLICAS, "endpoint" => self.endpoint.clone()).set(addrs.len() as f64);
        self.current.store(Arc::new(Snapshot {
            ring: HashRing::new(&nodes),
            addrs,
        }));
    }

    /// The replicas (`ip:port`) to try for this key, best first: ring order from the key,
    /// with replicas set aside after a refused connection moved to the end. Empty while
    /// the host has never resolved (the request then goes to the host name as usual).
    pub fn order(&self, key: u64) -> Vec<String> {
        let snapshot = self.current.load();
        let mut order: Vec<String> = snapshot.ring.walk(key).map(str::to_string).collect();
        let now = Instant::now();
        if let Ok(mut aside) = self.aside.lock()
            && !aside.is_empty()
        {
            aside.retain(|_, until| *until > now);
            // Stable: the set-aside replicas keep their ring order among themselves.
            order.sort_by_key(|r| aside.contains_key(r));
        }
        order
    }

    /// `replica` could not be connected to: put it last for a while.
    pub fn set_aside(&self, replica: &str) {
        if let Ok(mut aside) = self.aside.lock() {
            aside.insert(replica.to_string(), Instant::now() + SET_ASIDE);
        }
    }
}

/// IPv4 addresses when there are any (Plano resolves `V4_ONLY`; a dual-stack replica
/// would otherwise sit on the ring twice), else the IPv6 ones; sorted, no duplicates.
fn preferred(mut addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    if addrs.iter().any(SocketAddr::is_ipv4) {
        addrs.retain(SocketAddr::is_ipv4);
    }
    addrs.sort_unstable();
    addrs.dedup();
    addrs
}

/// `uri` sent to `replica` (`ip:port`) instead of its host; `None` if that makes no URI.
pub fn at(uri: &Uri, replica: &str) -> Option<Uri> {
    let mut parts = uri.clone().into_parts();
    parts.authority = Some(replica.parse().ok()?);
    Uri::from_parts(parts).ok()
}

/// Per provider (same index as `config.providers`): the replicas of its `prefix_affinity`
/// endpoint, resolved once before this returns and then every `resolver.every` for as
/// long as the returned sets live (each refresh task holds only a weak reference).
/// Providers on the same endpoint and `http_host` share one set.
pub async fn for_config(
    config: &Config,
    resolver: &Resolver,
    names: &ReplicaNames,
) -> Vec<Option<Arc<Replicas>>> {
    let mut shared: HashMap<(String, Option<String>), Arc<Replicas>> = HashMap::new();
    let mut out = Vec::with_capacity(config.providers.len());
    for p in &config.providers {
        let Some(e) = config.affinity_endpoint(p) else {
            out.push(None);
            continue;
        };
        let key = (e.name.clone(), p.http_host.clone());
        let set = match shared.get(&key) {
            Some(set) => set.clone(),
            None => {
                let set = Arc::new(Replicas::new(e, p, names.clone()));
                set.refresh(resolver.inner.as_ref()).await;
                spawn_refresh(Arc::downgrade(&set), resolver.clone());
                shared.insert(key, set.clone());
                set
            }
        };
        out.push(Some(set));
    }
    out
}

fn spawn_refresh(set: Weak<Replicas>, resolver: Resolver) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(resolver.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(set) = set.upgrade() else {
                return;
            };
            set.refresh(resolver.inner.as_ref()).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Mutex<std::io::Result<Vec<SocketAddr>>>);

    impl Resolve for Fixed {
        fn resolve<'a>(&'a self, _host: &'a str, _port: u16) -> Lookup<'a> {
            let answer = match &*self.0.lock().unwrap() {
                Ok(a) => Ok(a.clone()),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            Box::pin(async move { answer })
        }
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    fn config() -> Config {
        let yaml = r#"
version: v0.4.0
model_providers:
  - model: openai/llama
    base_url: https://vllm.internal:8443/v1
    http_host: llm.example:8443
    default: true
  - model: openai/qwen
    base_url: https://vllm.internal:8443/v1
    http_host: llm.example:8443
  - model: openai/gpt-4o
endpoints:
  vllm:
    endpoint: vllm.internal:8443
    protocol: https
    prefix_affinity: true
"#;
        plano_config::load_str(yaml, None, &|_| None).unwrap()
    }

    #[tokio::test]
    async fn providers_of_an_affinity_endpoint_share_one_resolved_ring() {
        let fixed = Arc::new(Fixed(Mutex::new(Ok(addrs(&[
            "10.0.0.2:8443",
            "10.0.0.1:8443",
            "[fd00::1]:8443",
            "10.0.0.1:8443",
        ])))));
        struct Shared(Arc<Fixed>);
        impl Resolve for Shared {
            fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Lookup<'a> {
                self.0.resolve(host, port)
            }
        }
        let names = ReplicaNames::default();
        let resolver = Resolver::new(Shared(fixed.clone()), Duration::from_secs(3600));
        let sets = for_config(&config(), &resolver, &names).await;
        let (Some(a), Some(b), None) = (&sets[0], &sets[1], &sets[2]) else {
            panic!("only the endpoint's providers get replicas");
        };
        assert!(Arc::ptr_eq(a, b));
        assert_eq!(a.server_name, "llm.example");
        // IPv4 preferred, sorted, no duplicates.
        let mut order = a.order(7);
        order.sort();
        assert_eq!(order, vec!["10.0.0.1:8443", "10.0.0.2:8443"]);

        // A failed resolution keeps the last addresses.
        *fixed.0.lock().unwrap() = Err(std::io::Error::other("SERVFAIL"));
        a.refresh(fixed.as_ref()).await;
        assert_eq!(a.order(7).len(), 2);
        *fixed.0.lock().unwrap() = Ok(vec![]);
        a.refresh(fixed.as_ref()).await;
        assert_eq!(a.order(7).len(), 2);
        // A new answer replaces them.
        *fixed.0.lock().unwrap() = Ok(addrs(&["10.0.0.3:8443"]));
        a.refresh(fixed.as_ref()).await;
        assert_eq!(a.order(7), vec!["10.0.0.3:8443"]);
    }

    /// Answers from a shared list and counts the questions.
    #[derive(Clone, Default)]
    struct Scripted(Arc<Mutex<(Vec<SocketAddr>, usize)>>);

    impl Resolve for Scripted {
        fn resolve<'a>(&'a self, _host: &'a str, _port: u16) -> Lookup<'a> {
            let mut s = self.0.lock().unwrap();
            s.1 += 1;
            let answer = s.0.clone();
            Box::pin(async move { Ok(answer) })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn hosts_are_resolved_again_while_their_sets_live() {
        let script = Scripted::default();
        script.0.lock().unwrap().0 = addrs(&["10.0.0.1:8443"]);
        let names = ReplicaNames::default();
        let resolver = Resolver::new(script.clone(), Duration::from_secs(5));
        let sets = for_config(&config(), &resolver, &names).await;
        let set = sets[0].clone().unwrap();
        assert_eq!(set.order(1), vec!["10.0.0.1:8443"]);
        script.0.lock().unwrap().0 = addrs(&["10.0.0.1:8443", "10.0.0.2:8443"]);
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(set.order(1).len(), 2);
        // Once the runtime holding the sets is gone, its refresh task stops asking.
        drop((sets, set));
        tokio::time::sleep(Duration::from_secs(6)).await;
        let asked = script.0.lock().unwrap().1;
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(script.0.lock().unwrap().1, asked);
    }

    #[tokio::test]
    async fn a_set_aside_replica_goes_last_and_comes_back() {
        let names = ReplicaNames::default();
        let resolver = Resolver::new(
            Fixed(Mutex::new(Ok(addrs(&[
                "10.0.0.1:8443",
                "10.0.0.2:8443",
                "10.0.0.3:8443",
            ])))),
            Duration::from_secs(3600),
        );
        let sets = for_config(&config(), &resolver, &names).await;
        let set = sets[0].clone().unwrap();
        let before = set.order(42);
        set.set_aside(&before[0]);
        let after = set.order(42);
        assert_eq!(after[..2], before[1..]);
        assert_eq!(after[2], before[0]);
        set.aside
            .lock()
            .unwrap()
            .insert(before[0].clone(), Instant::now());
        assert_eq!(set.order(42), before);
    }

    #[tokio::test]
    async fn the_system_resolver_resolves_localhost() {
        let found = SystemResolver.resolve("localhost", 8000).await.unwrap();
        assert!(
            found
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 8000)
        );
        assert!(!found.is_empty());
    }

    #[test]
    fn a_replica_takes_the_uri_s_authority_only() {
        let uri: Uri = "https://vllm.internal:8443/v1/chat/completions?x=1"
            .parse()
            .unwrap();
        assert_eq!(
            at(&uri, "10.0.0.1:8443").unwrap().to_string(),
            "https://10.0.0.1:8443/v1/chat/completions?x=1"
        );
        assert_eq!(
            at(&uri, "[fd00::1]:8443").unwrap().to_string(),
            "https://[fd00::1]:8443/v1/chat/completions?x=1"
        );
    }
}
