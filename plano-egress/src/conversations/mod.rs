//! Conversation state for the Responses API's `previous_response_id`: each stored response
//! keeps the whole conversation up to and including its output, as Responses input items,
//! so a follow-up request can be expanded into a full conversation for any provider.
//!
//! One async interface over two backends (`state_storage.type`):
//! - `memory` (default): per process, bounded by count and by bytes, oldest dropped first;
//! - `postgres`: shared by every egress replica and kept across restarts; rows expire
//!   after `ttl` and a cleanup task deletes them.
//!
//! Sizes are the conversation's serialised JSON; one larger than `max_conversation_bytes`
//! is not stored (logged and counted), so its id cannot be continued. A backend failure
//! while storing is logged and counted and never fails the answer it belongs to; a failed
//! lookup is the caller's 503 (`state_unavailable`).

mod memory;
mod postgres;

use std::sync::{Arc, Weak};
use std::time::Duration;

use metrics::counter;
use plano_common::metrics as m;
use plano_config::{StateBackend, StateStorage};
use serde_json::Value;
use serde_json::value::RawValue;

pub use memory::MemoryStore;
pub use postgres::PostgresStore;

/// The backend could not answer (unreachable, timed out, or refused the query).
#[derive(Debug, thiserror::Error)]
#[error("conversation store unavailable: {0}")]
pub struct StoreError(pub String);

/// Why a conversation was not stored (`plano_conversations_not_stored_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    TooLarge,
    Unavailable,
}

pub struct ConversationStore {
    backend: Backend,
    max_conversation_bytes: usize,
}

enum Backend {
    Memory(MemoryStore),
    Postgres(PostgresStore),
}

impl ConversationStore {
    /// The store `state_storage` asks for. Postgres is not contacted here: see
    /// [`ConversationStore::prepare`].
    pub fn new(config: &StateStorage) -> anyhow::Result<Self> {
        let backend = match &config.backend {
            StateBackend::Memory {
                max_conversations,
                max_total_bytes,
            } => Backend::Memory(MemoryStore::new(
                *max_conversations,
                *max_total_bytes,
                config.ttl,
            )),
            StateBackend::Postgres {
                connection_string,
                pool_size,
                timeout,
            } => Backend::Postgres(PostgresStore::new(
                connection_string.expose(),
                *pool_size,
                *timeout,
                config.ttl,
            )?),
        };
        Ok(Self {
            backend,
            max_conversation_bytes: config.max_conversation_bytes,
        })
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Memory(_) => "memory",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// At start: apply Postgres migrations, so a broken database shows in the first log
    /// lines. Failure is logged, not fatal: requests that need no stored state still work,
    /// and the schema is applied on first successful use.
    pub async fn prepare(&self) {
        if let Backend::Postgres(pg) = &self.backend {
            match pg.ensure_schema().await {
                Ok(()) => tracing::info!("conversation store: postgres ready (schema applied)"),
                Err(e) => {
                    counter!(m::STATE_STORAGE_ERRORS_TOTAL, "backend" => "postgres", "operation" => "migrate").increment(1);
                    tracing::error!(error = %e, "conversation store: postgres unavailable at start; requests with previous_response_id get 503 until it is reachable")
                }
            }
        }
    }

    /// The conversation that ended with response `id` (input and output items, in order);
    /// `None` when unknown or expired.
    pub async fn get(&self, id: &str) -> Result<Option<Vec<Value>>, StoreError> {
        let found = match &self.backend {
            Backend::Memory(mem) => Ok(mem.get(id)),
            Backend::Postgres(pg) => pg.get(id).await,
        };
        if let Err(e) = &found {
            counter!(m::STATE_STORAGE_ERRORS_TOTAL, "backend" => self.backend_name(), "operation" => "get").increment(1);
            tracing::warn!(error = %e, "conversation lookup failed");
        }
        found
    }

    /// Store the conversation ending with response `id`. Never fails the caller: a
    /// conversation over the size limit or a backend failure is logged and counted.
    pub async fn put(&self, id: &str, items: &[Value]) -> Result<(), NotStored> {
        let backend = self.backend_name();
        let json = match serde_json::to_string(items).map(RawValue::from_string) {
            Ok(Ok(json)) => json,
            // Values built from parsed JSON always serialise; count it all the same.
            _ => return Err(self.not_stored(id, NotStored::Unavailable, "not serialisable")),
        };
        let size = json.get().len();
        let limit = match &self.backend {
            Backend::Memory(mem) => self.max_conversation_bytes.min(mem.max_total_bytes()),
            Backend::Postgres(_) => self.max_conversation_bytes,
        };
        if size > limit {
            tracing::warn!(
                response_id = id,
                backend,
                size_bytes = size,
                limit_bytes = limit,
                "conversation not stored: larger than state_storage.max_conversation_bytes; previous_response_id={id} cannot be continued"
            );
            counter!(m::CONVERSATIONS_NOT_STORED_TOTAL, "backend" => backend, "reason" => "too_large").increment(1);
            return Err(NotStored::TooLarge);
        }
        let stored = match &self.backend {
            Backend::Memory(mem) => {
                mem.put(id, json);
                Ok(())
            }
            Backend::Postgres(pg) => pg.put(id, &json).await,
        };
        stored.map_err(|e| {
            counter!(m::STATE_STORAGE_ERRORS_TOTAL, "backend" => backend, "operation" => "put")
                .increment(1);
            self.not_stored(id, NotStored::Unavailable, &e.to_string())
        })
    }

    fn not_stored(&self, id: &str, why: NotStored, error: &str) -> NotStored {
        let backend = self.backend_name();
        tracing::warn!(
            response_id = id,
            backend,
            error,
            "conversation not stored; the answer was still sent"
        );
        let reason = match why {
            NotStored::TooLarge => "too_large",
            NotStored::Unavailable => "unavailable",
        };
        counter!(m::CONVERSATIONS_NOT_STORED_TOTAL, "backend" => backend, "reason" => reason)
            .increment(1);
        why
    }

    /// Drop expired conversations now.
    pub async fn cleanup(&self) {
        let removed = match &self.backend {
            Backend::Memory(mem) => Ok(mem.remove_expired()),
            Backend::Postgres(pg) => pg.remove_expired().await,
        };
        match removed {
            Ok(0) => {}
            Ok(n) => {
                counter!(m::CONVERSATIONS_EVICTED_TOTAL, "backend" => self.backend_name(), "reason" => "expired").increment(n);
                tracing::debug!(removed = n, "expired conversations removed");
            }
            Err(e) => {
                counter!(m::STATE_STORAGE_ERRORS_TOTAL, "backend" => self.backend_name(), "operation" => "cleanup").increment(1);
                tracing::warn!(error = %e, "expired conversations not removed; retrying at the next interval");
            }
        }
    }

    /// Remove expired conversations every `every` for as long as the store lives (the
    /// task holds only a weak reference).
    pub fn spawn_cleanup(self: &Arc<Self>, every: Duration) {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(store) = weak.upgrade() else { break };
                store.cleanup().await;
            }
        });
    }
}

/// How often expired conversations are removed: a tenth of the TTL, between 1 s and 60 s.
pub fn cleanup_interval(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}
