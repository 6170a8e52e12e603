//! The edge's count of requests in flight, one guard per request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use metrics::Gauge;

/// `plano_active_requests{component="edge"}`, registered once.
static ACTIVE: LazyLock<Gauge> = LazyLock::new(
    || metrics::gauge!(plano_common::metrics::ACTIVE_REQUESTS, "component" => "edge"),
);

/// Marks a request in flight (gauge `plano_active_requests{component="edge"}`).
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    pub(crate) fn new(counter: &Arc<AtomicUsize>) -> Self {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        ACTIVE.set(n as f64);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let n = self.0.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
        ACTIVE.set(n as f64);
    }
}
