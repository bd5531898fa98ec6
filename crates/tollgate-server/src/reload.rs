//! Reloading `policies:` from the config file while requests flow (docs/architecture.md,
//! "Changing limits at runtime").
//!
//! The file is read every [`POLL_INTERVAL`] and compared with what was last applied, rather
//! than watched with inotify: a read of a small file costs nothing, and a poll sees every way a
//! file is changed alike (written in place, replaced by rename as editors and `kubectl` do, a
//! ConfigMap's symlink swapped, a network file system) where a watch on the file follows the
//! old inode after a rename. A change is applied once two polls in a row read the same bytes,
//! so a file caught half written is never applied. SIGHUP applies the file at once.
//!
//! A file that loads replaces the policies in one step ([`Service::replace_policies`]); one that
//! does not (unreadable, bad YAML, an invalid value) leaves them as they are. Either way the
//! outcome is logged (an error with file, line and field) and counted in
//! `tollgate_config_reloads_total{result="ok"|"error"}`. Other keys cannot change without a
//! restart: a file that changes them is still applied for its policies, with a warning naming
//! the keys.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tollgate::{Policy, PolicyName};

use crate::config::{ConfigError, FileConfig};
use crate::service::Service;

/// How often the config file is read for changes; a change is applied within two of these.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// The file's text as read, or why it could not be read.
type Contents = Result<String, String>;

/// Start reloading: on SIGHUP, and when the file at `path` changes. Without a file, SIGHUP only
/// logs that there is nothing to reload (it no longer ends the process). Call inside the
/// runtime; the signal handler is installed by this call.
pub fn spawn(service: Arc<Service>, path: Option<PathBuf>) -> io::Result<JoinHandle<()>> {
    let mut hangup = Hangup::install()?;
    Ok(tokio::spawn(async move {
        let Some(path) = path else {
            loop {
                hangup.recv().await;
                tracing::warn!("SIGHUP received: no config file to reload (started without one)");
            }
        };
        let mut reloader = Reloader::start(service, path).await;
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = poll.tick() => reloader.poll().await,
                () = hangup.recv() => {
                    tracing::info!("SIGHUP received: reloading the config file");
                    reloader.reload().await;
                }
            }
        }
    }))
}

/// Applies the config file to a running service.
#[derive(Debug)]
pub struct Reloader {
    service: Arc<Service>,
    path: PathBuf,
    /// The file as the server started with it: the keys a reload cannot change are compared
    /// with it, so each reload that differs there says so.
    started: FileConfig,
    /// The contents last applied (or refused): not applied again until they change.
    applied: Contents,
    /// The contents the last poll read.
    seen: Contents,
}

impl Reloader {
    /// Read the file as it is now. Should it differ from the running policies already (changed
    /// since the server loaded it), it is applied at once.
    pub async fn start(service: Arc<Service>, path: PathBuf) -> Reloader {
        let contents = read(&path).await;
        let started = match &contents {
            Ok(text) => FileConfig::parse(text, &path.display().to_string()).ok(),
            Err(_) => None,
        };
        let mut reloader = Reloader {
            service,
            path,
            started: started.clone().unwrap_or_default(),
            applied: contents.clone(),
            seen: contents.clone(),
        };
        let in_force = started.is_some_and(|file| {
            let (live, policies) = (reloader.service.live(), file.policies());
            let in_file = policies.iter().map(|(name, p)| (name.as_str(), p));
            live.policies().eq(in_file)
        });
        if !in_force {
            reloader.apply(contents);
        }
        reloader
    }

    /// Read the file; apply it if it changed and read the same twice in a row.
    pub async fn poll(&mut self) {
        let now = read(&self.path).await;
        let settled = now == self.seen;
        self.seen = now;
        if settled && self.seen != self.applied {
            self.apply(self.seen.clone());
        }
    }

    /// Read the file and apply it, changed or not (SIGHUP).
    pub async fn reload(&mut self) {
        self.seen = read(&self.path).await;
        self.apply(self.seen.clone());
    }

    /// Apply `contents`, or keep the running policies if they do not load; log and count.
    fn apply(&mut self, contents: Contents) {
        let result = contents.as_ref().map_err(Clone::clone).and_then(|text| {
            FileConfig::parse(text, &self.path.display().to_string()).map_err(|e| e.to_string())
        });
        self.applied = contents;
        let file = match result {
            Ok(file) => file,
            Err(error) => {
                self.service.metrics().record_reload(false);
                tracing::error!(%error, "config reload failed; the running policies stay in force");
                return;
            }
        };
        let restart = self.started.restart_keys(&file);
        if !restart.is_empty() {
            tracing::warn!(
                keys = %restart.join(","),
                file = %self.path.display(),
                "config keys changed that apply only at restart; their running values stay"
            );
        }
        let policies = file.policies();
        let change = Change::between(&self.service, &policies);
        self.service.replace_policies(&policies);
        self.service.metrics().record_reload(true);
        tracing::info!(
            file = %self.path.display(),
            policies = %policies.keys().map(PolicyName::as_str).collect::<Vec<_>>().join(","),
            added = %change.added.join(","),
            removed = %change.removed.join(","),
            changed = %change.changed.join(","),
            "config reloaded"
        );
    }
}

/// Policy names added, removed and changed by a reload (for the log).
struct Change {
    added: Vec<String>,
    removed: Vec<String>,
    changed: Vec<String>,
}

impl Change {
    fn between(service: &Service, next: &BTreeMap<PolicyName, Policy>) -> Change {
        let live = service.live();
        let current: BTreeMap<&str, &Policy> = live.policies().collect();
        let names = |filter: &dyn Fn(&str, &Policy) -> bool| {
            next.iter()
                .filter(|(name, policy)| filter(name, policy))
                .map(|(name, _)| name.to_string())
                .collect()
        };
        Change {
            added: names(&|name, _| !current.contains_key(name)),
            changed: names(&|name, policy| current.get(name).is_some_and(|p| *p != policy)),
            removed: current
                .keys()
                .filter(|name| !next.contains_key(**name))
                .map(|name| (*name).to_owned())
                .collect(),
        }
    }
}

/// The file's text, or the error `tollgate config check` would give for it.
async fn read(path: &Path) -> Contents {
    tokio::fs::read_to_string(path).await.map_err(|source| {
        ConfigError::Read {
            file: path.display().to_string(),
            source,
        }
        .to_string()
    })
}

/// SIGHUP, where there is such a signal.
struct Hangup(#[cfg(unix)] tokio::signal::unix::Signal);

impl Hangup {
    #[cfg(unix)]
    fn install() -> io::Result<Hangup> {
        use tokio::signal::unix::{SignalKind, signal};
        signal(SignalKind::hangup()).map(Hangup)
    }

    #[cfg(not(unix))]
    fn install() -> io::Result<Hangup> {
        Ok(Hangup())
    }

    /// The next SIGHUP (never, once the handler is gone or without SIGHUP).
    async fn recv(&mut self) {
        #[cfg(unix)]
        if self.0.recv().await.is_some() {
            return;
        }
        std::future::pending::<()>().await;
    }
}
