//! Config reload: on SIGHUP, and with `--watch` when the file changes, load the file again,
//! validate it, and publish it on the context's config channel. An invalid file is logged
//! with every problem and rejected; the config already serving stays.
//!
//! [`Reloader::reload`] does one attempt without any signal, so tests and other triggers
//! can drive it directly. File watching polls size and mtime once a second: cheap, works
//! on every filesystem (including Kubernetes ConfigMap symlink swaps, which inotify-based
//! watchers often miss), and needs no extra dependency.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use plano_config::{Config, ConfigErrors};
use tokio::sync::watch;

use crate::metrics::CONFIG_RELOADS_TOTAL;
use crate::runtime::Shutdown;

/// How often `--watch` looks at the file.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Loads and validates a config file (`plano_config::load_file` in the binaries).
pub type LoadFn = fn(&Path) -> Result<Config, ConfigErrors>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new config is valid and was published.
    Success,
    /// The new config was rejected; the old one keeps serving.
    Invalid,
}

impl ReloadOutcome {
    /// The `outcome` label of `plano_config_reloads_total`.
    pub fn label(self) -> &'static str {
        match self {
            ReloadOutcome::Success => "success",
            ReloadOutcome::Invalid => "invalid",
        }
    }
}

pub struct Reloader {
    path: PathBuf,
    load: LoadFn,
    config: watch::Sender<Arc<Config>>,
}

impl Reloader {
    /// A reloader for `path`, publishing on `config` (the `Control::config` sender).
    pub fn new(path: impl Into<PathBuf>, load: LoadFn, config: watch::Sender<Arc<Config>>) -> Self {
        Self {
            path: path.into(),
            load,
            config,
        }
    }

    /// Load, validate and publish once. Logs the result and counts it.
    pub fn reload(&self) -> ReloadOutcome {
        let outcome = match (self.load)(&self.path) {
            Ok(new) => {
                let old_warnings: BTreeSet<String> =
                    self.config.borrow().warnings.iter().cloned().collect();
                // Warnings already logged at start-up (or the last reload) are not repeated.
                for w in new.warnings.iter().filter(|w| !old_warnings.contains(*w)) {
                    tracing::warn!(warning = %w, "config");
                }
                self.config.send_replace(Arc::new(new));
                tracing::info!(path = %self.path.display(), "config reloaded");
                ReloadOutcome::Success
            }
            Err(errors) => {
                for e in &errors.0 {
                    tracing::error!(problem = %e, path = %self.path.display(), "config reload rejected");
                }
                tracing::error!(
                    path = %self.path.display(),
                    problems = errors.0.len(),
                    "config reload rejected; the previous config keeps serving"
                );
                ReloadOutcome::Invalid
            }
        };
        metrics::counter!(CONFIG_RELOADS_TOTAL, "outcome" => outcome.label()).increment(1);
        outcome
    }

    /// Reload on SIGHUP (Unix) and, when `watch_file`, whenever the file's size or mtime
    /// changes, until `shutdown` is requested.
    ///
    /// The SIGHUP handler is installed before this returns, so a SIGHUP sent any time after
    /// start-up reloads instead of killing the process (SIGHUP's default action).
    pub fn spawn(self, watch_file: bool, shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
        let hangup = hangup_signal();
        tokio::spawn(self.run(hangup, watch_file, shutdown))
    }

    async fn run(self, mut hangup: Hangup, watch_file: bool, shutdown: Shutdown) {
        let mut stamp = file_stamp(&self.path);
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.requested() => return,
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP: reloading config");
                    stamp = file_stamp(&self.path);
                    self.reload();
                }
                _ = poll.tick(), if watch_file => {
                    let now = file_stamp(&self.path);
                    if now != stamp {
                        stamp = now;
                        tracing::info!(path = %self.path.display(), "config file changed: reloading");
                        self.reload();
                    }
                }
            }
        }
    }
}

/// What `--watch` compares: size and modification time (`None` while the file is missing,
/// so a file deleted and re-created is noticed too).
fn file_stamp(path: &Path) -> Option<(u64, SystemTime)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

/// SIGHUP as a stream; on platforms without it, a stream that never yields.
struct Hangup {
    #[cfg(unix)]
    inner: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(sig) = self.inner.as_mut()
            && sig.recv().await.is_some()
        {
            return;
        }
        std::future::pending::<()>().await
    }
}

fn hangup_signal() -> Hangup {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let inner = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload by signal disabled");
                None
            }
        };
        Hangup { inner }
    }
    #[cfg(not(unix))]
    {
        Hangup {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::bare_config;

    /// A loader that "validates" by file content: `valid <version>` or anything else.
    fn fake_load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        match text.trim().strip_prefix("valid ") {
            Some(version) => {
                let mut c = bare_config();
                c.version = version.to_string();
                c.warnings = vec![format!("warning from {version}")];
                Ok(c)
            }
            None => Err(ConfigErrors(vec![plano_config::ConfigError {
                path: "version".into(),
                message: "not valid".into(),
                location: None,
            }])),
        }
    }

    #[tokio::test]
    async fn valid_config_is_published_invalid_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plano.yaml");
        let (tx, rx) = watch::channel(Arc::new(bare_config()));
        let reloader = Reloader::new(&path, fake_load, tx);

        std::fs::write(&path, "valid v0.2.0").unwrap();
        assert_eq!(reloader.reload(), ReloadOutcome::Success);
        assert_eq!(rx.borrow().version, "v0.2.0");

        std::fs::write(&path, "garbage").unwrap();
        assert_eq!(reloader.reload(), ReloadOutcome::Invalid);
        assert_eq!(rx.borrow().version, "v0.2.0", "old config keeps serving");

        std::fs::remove_file(&path).unwrap();
        assert_eq!(reloader.reload(), ReloadOutcome::Invalid);
        assert_eq!(rx.borrow().version, "v0.2.0");
    }

    #[tokio::test(start_paused = true)]
    async fn watch_reloads_when_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plano.yaml");
        std::fs::write(&path, "valid v0.1").unwrap();
        let (tx, mut rx) = watch::channel(Arc::new(bare_config()));
        let shutdown = Shutdown::new(Duration::from_secs(1));
        let task = Reloader::new(&path, fake_load, tx).spawn(true, shutdown.clone());

        // Let the watcher take its first stamp, then change the file (size changes too, so
        // coarse filesystem mtimes cannot hide the change).
        tokio::time::sleep(POLL_INTERVAL * 2).await;
        std::fs::write(&path, "valid v0.4.0").unwrap();
        tokio::time::timeout(POLL_INTERVAL * 5, rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rx.borrow().version, "v0.4.0");

        shutdown.trigger();
        task.await.unwrap();
    }
}
