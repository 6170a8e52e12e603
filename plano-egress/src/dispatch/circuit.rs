//! Per-provider circuit breakers: after `THRESHOLD` consecutive failures a provider is
//! skipped for `COOL_DOWN`; then one request probes it (half-open): success closes the
//! circuit, failure opens it again. State is keyed by provider name, so it survives
//! config reloads, and is mirrored into the gRPC health service
//! `plano.egress.provider.<name>` and the gauge `plano_llm_circuit_open`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use plano_common::health::{HealthRegistry, provider_service};
use plano_common::metrics::CIRCUIT_OPEN;
use rustc_hash::FxBuildHasher;
use tokio::time::Instant;

pub const THRESHOLD: u32 = 5;
pub const COOL_DOWN: Duration = Duration::from_secs(30);

#[derive(Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
    /// When the half-open probe went out. A probe whose outcome never comes back (its
    /// client went away mid-attempt) must not keep the circuit shut forever, so after
    /// `COOL_DOWN` another request may probe.
    probe_started: Option<Instant>,
}

pub struct Circuits {
    /// Keyed by provider name with FxHash: the keys come from the config, not from clients,
    /// and SipHash was ~340 instructions per lookup, two lookups per request.
    states: Mutex<HashMap<String, State, FxBuildHasher>>,
    health: HealthRegistry,
}

impl Circuits {
    pub fn new(health: HealthRegistry) -> Self {
        Self {
            states: Mutex::new(HashMap::default()),
            health,
        }
    }

    /// Register a provider as SERVING (at start-up and for providers added by a reload).
    pub fn register(&self, provider: &str) {
        let Ok(mut map) = self.states.lock() else {
            return;
        };
        if !map.contains_key(provider) {
            map.insert(provider.to_string(), State::default());
            self.health.set(&provider_service(provider), true);
            metrics::gauge!(CIRCUIT_OPEN, "provider" => provider.to_string()).set(0.0);
        }
    }

    /// May a request go to this provider now? A half-open circuit lets one probe through.
    /// A closed circuit (the common case) is answered without allocating a key or reading
    /// the clock.
    pub fn allow(&self, provider: &str) -> bool {
        let Ok(mut map) = self.states.lock() else {
            return true;
        };
        // A provider never seen has a closed circuit (`failure` records it).
        let Some(s) = map.get_mut(provider) else {
            return true;
        };
        if s.open_until.is_none() {
            return true;
        }
        let now = Instant::now();
        match (s.open_until, s.probe_started) {
            (None, _) => true,
            (Some(until), _) if now < until => false,
            (Some(_), Some(started)) if now < started + COOL_DOWN => false,
            (Some(_), _) => {
                s.probe_started = Some(now);
                true
            }
        }
    }

    pub fn success(&self, provider: &str) {
        let Ok(mut map) = self.states.lock() else {
            return;
        };
        // A provider never seen has a closed circuit (`failure` records it).
        let Some(s) = map.get_mut(provider) else {
            return;
        };
        let was_open = s.open_until.is_some();
        *s = State::default();
        if was_open {
            tracing::info!(provider, "circuit closed: provider answered again");
            self.health.set(&provider_service(provider), true);
            metrics::gauge!(CIRCUIT_OPEN, "provider" => provider.to_string()).set(0.0);
        }
    }

    pub fn failure(&self, provider: &str) {
        let Ok(mut map) = self.states.lock() else {
            return;
        };
        let s = map.entry(provider.to_string()).or_default();
        s.failures += 1;
        let reopen =
            s.probe_started.is_some() || (s.open_until.is_none() && s.failures >= THRESHOLD);
        if reopen {
            s.open_until = Some(Instant::now() + COOL_DOWN);
            s.probe_started = None;
            tracing::warn!(
                provider,
                failures = s.failures,
                cool_down_s = COOL_DOWN.as_secs(),
                "circuit open: provider skipped"
            );
            self.health.set(&provider_service(provider), false);
            metrics::gauge!(CIRCUIT_OPEN, "provider" => provider.to_string()).set(1.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_then_probes() {
        let reg = HealthRegistry::new("plano.egress");
        let c = Circuits::new(reg.clone());
        c.register("p");
        for _ in 0..THRESHOLD - 1 {
            c.failure("p");
            assert!(c.allow("p"));
        }
        c.failure("p");
        assert!(!c.allow("p"));
        assert_eq!(reg.get("plano.egress.provider.p"), Some(false));
        tokio::time::advance(COOL_DOWN + Duration::from_millis(1)).await;
        assert!(c.allow("p"), "one probe after the cool-down");
        assert!(!c.allow("p"), "only one probe at a time");
        c.failure("p");
        assert!(!c.allow("p"), "a failed probe reopens");
        tokio::time::advance(COOL_DOWN + Duration::from_millis(1)).await;
        assert!(c.allow("p"));
        c.success("p");
        assert!(c.allow("p") && c.allow("p"));
        assert_eq!(reg.get("plano.egress.provider.p"), Some(true));
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_never_reports_back_does_not_shut_the_circuit_forever() {
        let c = Circuits::new(HealthRegistry::new("plano.egress"));
        c.register("p");
        for _ in 0..THRESHOLD {
            c.failure("p");
        }
        tokio::time::advance(COOL_DOWN + Duration::from_millis(1)).await;
        assert!(c.allow("p"), "the probe");
        // Its client disconnected: neither success nor failure is reported.
        assert!(!c.allow("p"));
        tokio::time::advance(COOL_DOWN + Duration::from_millis(1)).await;
        assert!(c.allow("p"), "a new probe once the lost one has expired");
    }
}
