//! `state_storage: postgres`: one row per stored response, shared by every egress replica
//! and kept across restarts. Rows carry `expires_at` (now + `ttl`); lookups ignore expired
//! rows and a cleanup task deletes them in batches.
//!
//! The schema is versioned in `plano_schema_migrations` and applied under an advisory
//! lock, so replicas starting together apply each migration once. Postgres being down at
//! start is not fatal: the pool reconnects on use and the schema is applied on the first
//! call that reaches the database.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::OnceCell;
use tokio_postgres::config::SslMode;
use tokio_postgres::types::Json;

use super::StoreError;

/// Migrations in order; a migration, once released, never changes (add a new one).
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "CREATE TABLE plano_conversations (
         response_id text PRIMARY KEY,
         items jsonb NOT NULL,
         size_bytes bigint NOT NULL,
         created_at timestamptz NOT NULL DEFAULT now(),
         expires_at timestamptz NOT NULL
     );
     CREATE INDEX plano_conversations_expires_at ON plano_conversations (expires_at);",
)];

/// `pg_advisory_xact_lock` key for migrations ("plano" in ASCII).
const MIGRATION_LOCK: i64 = 0x0070_6c61_6e6f;

/// Rows deleted per cleanup statement, and statements per cleanup round: a backlog is
/// worked off over several rounds instead of one long transaction.
const CLEANUP_BATCH: i64 = 5_000;
const CLEANUP_ROUNDS: usize = 20;

pub struct PostgresStore {
    pool: Pool,
    timeout: Duration,
    ttl_secs: f64,
    schema: OnceCell<()>,
}

impl PostgresStore {
    pub fn new(
        connection_string: &str,
        pool_size: usize,
        timeout: Duration,
        ttl: Duration,
    ) -> anyhow::Result<Self> {
        // The parser's messages quote no part of the string (it may hold a password).
        let mut pg = tokio_postgres::Config::from_str(connection_string)
            .map_err(|e| anyhow::anyhow!("state_storage.connection_string: {e}"))?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(timeout);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("plano-egress");
        }
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match pg.get_ssl_mode() {
            // `require`: TLS verified against the web PKI roots. `prefer` (the default)
            // connects in plain text, like `disable`: a certificate we could not verify
            // (a server's self-signed default) must not stop a plain connection either.
            SslMode::Require => {
                let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| anyhow::anyhow!("TLS setup: {e}"))?
                .with_root_certificates(rustls::RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                })
                .with_no_client_auth();
                Manager::from_config(
                    pg,
                    tokio_postgres_rustls::MakeRustlsConnect::new(tls),
                    manager_config,
                )
            }
            _ => {
                pg.ssl_mode(SslMode::Disable);
                Manager::from_config(pg, tokio_postgres::NoTls, manager_config)
            }
        };
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| anyhow::anyhow!("state_storage: {e}"))?;
        Ok(Self {
            pool,
            timeout,
            ttl_secs: ttl.as_secs_f64(),
            schema: OnceCell::new(),
        })
    }

    /// Apply pending migrations (once per process, retried until it succeeds).
    pub async fn ensure_schema(&self) -> Result<(), StoreError> {
        self.schema
            .get_or_try_init(|| self.bounded(self.migrate()))
            .await
            .map(|_| ())
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(unavailable)?;
        let tx = client.transaction().await.map_err(unavailable)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(unavailable)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS plano_schema_migrations (
                 version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(unavailable)?;
        let applied: Vec<i32> = tx
            .query("SELECT version FROM plano_schema_migrations", &[])
            .await
            .map_err(unavailable)?
            .iter()
            .filter_map(|r| r.try_get(0).ok())
            .collect();
        for (version, sql) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            tx.batch_execute(sql).await.map_err(unavailable)?;
            tx.execute(
                "INSERT INTO plano_schema_migrations (version) VALUES ($1)",
                &[version],
            )
            .await
            .map_err(unavailable)?;
            tracing::info!(version, "conversation store: postgres migration applied");
        }
        tx.commit().await.map_err(unavailable)
    }

    pub async fn get(&self, id: &str) -> Result<Option<Vec<Value>>, StoreError> {
        self.ensure_schema().await?;
        self.bounded(async {
            let client = self.pool.get().await.map_err(unavailable)?;
            let stmt = client
                .prepare_cached(
                    "SELECT items FROM plano_conversations WHERE response_id = $1 AND expires_at > now()",
                )
                .await
                .map_err(unavailable)?;
            let row = client.query_opt(&stmt, &[&id]).await.map_err(unavailable)?;
            match row {
                None => Ok(None),
                Some(row) => row
                    .try_get::<_, Json<Vec<Value>>>(0)
                    .map(|Json(items)| Some(items))
                    .map_err(unavailable),
            }
        })
        .await
    }

    pub async fn put(&self, id: &str, json: &RawValue) -> Result<(), StoreError> {
        self.ensure_schema().await?;
        let size = i64::try_from(json.get().len()).unwrap_or(i64::MAX);
        self.bounded(async {
            let client = self.pool.get().await.map_err(unavailable)?;
            let stmt = client
                .prepare_cached(
                    "INSERT INTO plano_conversations (response_id, items, size_bytes, expires_at)
                     VALUES ($1, $2, $3, now() + make_interval(secs => $4))
                     ON CONFLICT (response_id) DO UPDATE SET
                         items = EXCLUDED.items, size_bytes = EXCLUDED.size_bytes,
                         created_at = now(), expires_at = EXCLUDED.expires_at",
                )
                .await
                .map_err(unavailable)?;
            client
                .execute(&stmt, &[&id, &Json(json), &size, &self.ttl_secs])
                .await
                .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    /// Delete expired rows; how many went.
    pub async fn remove_expired(&self) -> Result<u64, StoreError> {
        self.ensure_schema().await?;
        let mut removed = 0;
        for _ in 0..CLEANUP_ROUNDS {
            let n = self
                .bounded(async {
                    let client = self.pool.get().await.map_err(unavailable)?;
                    client
                        .execute(
                            "DELETE FROM plano_conversations WHERE response_id IN (
                                 SELECT response_id FROM plano_conversations
                                 WHERE expires_at <= now() LIMIT $1)",
                            &[&CLEANUP_BATCH],
                        )
                        .await
                        .map_err(unavailable)
                })
                .await?;
            removed += n;
            if n < CLEANUP_BATCH.unsigned_abs() {
                break;
            }
        }
        Ok(removed)
    }

    /// Bound a database call by `timeout`: a black-holed server costs a request at most
    /// this long.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError(format!(
                    "no answer within state_storage.timeout ({:?})",
                    self.timeout
                )))
            })
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}
