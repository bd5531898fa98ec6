//! Hot reload: watch the config directory and reload it when it changes.
//!
//! File events are debounced (an editor's save, or a ConfigMap update swapping its `..data`
//! symlink, is several events): the directory is reloaded once the events have been quiet for
//! [`EnvoyOptions::reload_debounce`](crate::EnvoyOptions::reload_debounce). A valid config is
//! swapped in atomically (requests in flight finish on the config they started with); an invalid
//! one is logged and counted, and the config in force stays. A symlink swapped above the
//! directory (so the path now leads elsewhere) is noticed within [`RETARGET_CHECK`].

use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tollgate::Store;

use crate::config::EnvoyConfigError;
use crate::service::EnvoyService;

/// A running watcher. Dropping it stops watching.
#[derive(Debug)]
pub struct Reloader {
    /// The task owning the file watcher.
    task: JoinHandle<()>,
}

impl Drop for Reloader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<S: Store> EnvoyService<S> {
    /// Start watching the config directory (call inside a Tokio runtime). Keep the returned
    /// [`Reloader`] for as long as reloads should happen.
    pub fn spawn_reloader(&self) -> Result<Reloader, EnvoyConfigError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| EnvoyConfigError::NoRuntime)?;
        let dir = self.config_dir().to_owned();
        let watch_error = |source| EnvoyConfigError::Watch {
            dir: dir.clone(),
            source,
        };
        let (changed, mut changes) = mpsc::unbounded_channel::<()>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                match event {
                    // Reading the files (our own reload among them) is not a change.
                    Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
                    Ok(_) => {
                        let _ = changed.send(());
                    }
                    Err(error) => tracing::warn!(%error, "config directory watch error"),
                }
            })
            .map_err(watch_error)?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(watch_error)?;
        let service = self.clone();
        let debounce = self.options().reload_debounce;
        // The directory the path leads to now: a symlink above it may be swapped to another.
        let mut target = std::fs::canonicalize(&dir).ok();
        let task = runtime.spawn(async move {
            let mut retarget = tokio::time::interval(RETARGET_CHECK);
            retarget.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    event = changes.recv() => {
                        if event.is_none() || !settle(&mut changes, debounce).await {
                            return;
                        }
                    }
                    _ = retarget.tick() => {
                        let now = std::fs::canonicalize(service.config_dir()).ok();
                        if now == target {
                            continue;
                        }
                        target = now;
                        // Watch the new directory; the old one's events no longer matter.
                        let dir = service.config_dir();
                        let _ = watcher.unwatch(dir);
                        if let Err(error) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                            tracing::warn!(%error, dir = %dir.display(), "cannot watch the config directory");
                        }
                    }
                }
                let service = service.clone();
                // Reading files blocks: keep it off the request threads. Errors are logged and
                // counted by `reload` itself.
                let _ = tokio::task::spawn_blocking(move || service.reload()).await;
            }
        });
        tracing::info!(dir = %dir.display(), "watching the envoy rate limit config for changes");
        Ok(Reloader { task })
    }
}

/// How often the watcher checks whether the config path now leads to another directory
/// (upstream's `RUNTIME_WATCH_ROOT` style: a symlink above the directory swapped atomically).
pub const RETARGET_CHECK: Duration = Duration::from_secs(1);

/// Wait until no event arrived for `debounce`. False if the watcher is gone.
async fn settle(changes: &mut mpsc::UnboundedReceiver<()>, debounce: Duration) -> bool {
    loop {
        match tokio::time::timeout(debounce, changes.recv()).await {
            Ok(Some(())) => continue,
            Ok(None) => return false,
            Err(_quiet) => return true,
        }
    }
}
