//! One `redis-server` (or Sentinel) process on a loopback port, stopped by pid.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::Error;
use crate::ports::free_port;
use crate::spawner;

/// How long a process may take to answer `PING` after it was spawned.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts at starting on a fresh port when the port was taken in the meantime.
const START_ATTEMPTS: usize = 5;

/// What a node runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A data node: `redis-server`.
    Server,
    /// A Sentinel: `redis-sentinel`, or `redis-server <conf> --sentinel`.
    Sentinel,
}

/// One process. Dropping it kills the process (SIGKILL, then reaped) and removes its directory.
#[derive(Debug)]
pub struct RedisNode {
    port: u16,
    dir: PathBuf,
    role: Role,
    /// For a node that listens with TLS only (`port 0`, `tls-port`): how the testkit's own
    /// connections reach it.
    tls: Option<TlsClient>,
    /// Arguments after the program name, including the port.
    args: Vec<OsString>,
    child: Mutex<Option<Child>>,
}

/// How the testkit connects to a node that listens with TLS only.
#[derive(Debug, Clone)]
pub(crate) struct TlsClient {
    /// What the connections trust and present.
    pub(crate) certificates: redis::TlsCertificates,
    /// The name they connect to, which the node's certificate must carry: `127.0.0.1`, or
    /// `localhost` for a node whose certificate names only that.
    pub(crate) host: &'static str,
}

impl RedisNode {
    /// Start a node on a free port. `config` is the node's configuration apart from `port`,
    /// `bind`, `dir` and the log file, which are set here; for a Sentinel it is written to
    /// `sentinel.conf` (Sentinel must be able to rewrite its configuration file).
    pub(crate) fn start(role: Role, label: &str, config: &[(&str, String)]) -> Result<Self, Error> {
        RedisNode::start_on(role, label, config, None)
    }

    /// Start a data node that listens with TLS only: its port is its `tls-port` (`port 0`: no
    /// plain listener), `config` holds the server's TLS files, and `client` is how the
    /// testkit's own connections reach it.
    pub(crate) fn start_tls_only(
        label: &str,
        config: &[(&str, String)],
        client: TlsClient,
    ) -> Result<Self, Error> {
        RedisNode::start_on(Role::Server, label, config, Some(client))
    }

    fn start_on(
        role: Role,
        label: &str,
        config: &[(&str, String)],
        tls: Option<TlsClient>,
    ) -> Result<Self, Error> {
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let dir = crate::ports::scratch_dir(&format!("{label}-{port}"))
                .map_err(|e| Error::io("creating a scratch directory", e))?;
            let args = arguments(role, port, tls.is_some(), &dir, config)?;
            let node = RedisNode {
                port,
                dir,
                role,
                tls: tls.clone(),
                args,
                child: Mutex::new(None),
            };
            match node.spawn_and_wait() {
                Ok(()) => return Ok(node),
                // Dropping the node kills whatever was spawned and removes the directory.
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Start("no attempt made".into())))
    }

    fn spawn_and_wait(&self) -> Result<(), Error> {
        let program = match self.role {
            Role::Sentinel if which("redis-sentinel") => "redis-sentinel",
            _ => "redis-server",
        };
        let mut command = Command::new(program);
        command
            .args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = spawner::spawn(command).map_err(|e| Error::io("spawning redis-server", e))?;
        let pid = child.id();
        *self.lock() = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .lock()
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(Error::Start(format!(
                    "{program} on port {} exited with {status}: {}",
                    self.port,
                    self.log_tail()
                )));
            }
            // The port may have been taken by someone else between the check and the bind:
            // accept only the server whose process id is ours.
            let ours = self
                .query_string(&["INFO", "server"])
                .is_ok_and(|info| info_field(&info, "process_id") == Some(&*pid.to_string()));
            if ours {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(Error::Start(format!(
                    "{program} on port {} did not answer within {START_TIMEOUT:?}: {}",
                    self.port,
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The name clients connect to: `127.0.0.1`, or `localhost` for a TLS node whose
    /// certificate names only that.
    pub fn host(&self) -> &str {
        self.tls.as_ref().map_or("127.0.0.1", |tls| tls.host)
    }

    /// `redis://127.0.0.1:<port>`, or `rediss://<host>:<port>` for a node that listens with TLS
    /// only.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://{}:{}", self.host(), self.port)
    }

    /// Whether the node listens with TLS only (no plain port).
    pub fn is_tls_only(&self) -> bool {
        self.tls.is_some()
    }

    /// The node's scratch directory (configuration, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process id, while the process runs.
    pub fn pid(&self) -> Option<u32> {
        let mut child = self.lock();
        let c = child.as_mut()?;
        matches!(c.try_wait(), Ok(None)).then(|| c.id())
    }

    /// Whether the process runs (possibly paused).
    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    fn signal(&self, signal: libc::c_int) -> Result<(), Error> {
        let pid = self
            .pid()
            .ok_or_else(|| Error::Start(format!("node on port {} is not running", self.port)))?;
        // SAFETY: plain kill(2) on the pid of our own, not yet reaped, child.
        if unsafe { libc::kill(pid as libc::pid_t, signal) } != 0 {
            return Err(Error::io(
                "signalling a node",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Freeze the process (SIGSTOP): it keeps its sockets but answers nothing.
    pub fn pause(&self) -> Result<(), Error> {
        self.signal(libc::SIGSTOP)
    }

    /// Thaw a paused process (SIGCONT).
    pub fn resume(&self) -> Result<(), Error> {
        self.signal(libc::SIGCONT)
    }

    /// Kill the process (SIGKILL) and reap it. Does nothing if it is not running.
    pub fn kill(&self) {
        if let Some(mut child) = self.lock().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start the process again on the same port with the same configuration (killing it first
    /// if it runs). A Cluster node rejoins from its `nodes.conf`; a Sentinel from its rewritten
    /// configuration.
    pub fn restart(&self) -> Result<(), Error> {
        self.kill();
        // The port was ours a moment ago; wait for the kernel to release it.
        let deadline = Instant::now() + START_TIMEOUT;
        while std::net::TcpListener::bind(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                return Err(Error::Start(format!("port {} stays busy", self.port)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.spawn_and_wait()
    }

    /// A new synchronous connection (1 s timeouts), over TLS to a node that listens with TLS
    /// only.
    pub fn connection(&self) -> Result<redis::Connection, Error> {
        let client = match &self.tls {
            Some(tls) => redis::Client::build_with_tls(self.url(), tls.certificates.clone()),
            None => redis::Client::open(self.url()),
        }
        .map_err(Error::Redis)?;
        let connection = client
            .get_connection_with_timeout(Duration::from_secs(1))
            .map_err(Error::Redis)?;
        connection
            .set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(Error::Redis)?;
        Ok(connection)
    }

    /// Run one command on a fresh connection and return its reply.
    pub fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> Result<T, Error> {
        let mut connection = self.connection()?;
        let mut command = redis::cmd(args.first().copied().unwrap_or("PING"));
        for arg in args.iter().skip(1) {
            command.arg(*arg);
        }
        command.query(&mut connection).map_err(Error::Redis)
    }

    /// Run one command and return its reply as a string (e.g. `INFO`).
    pub fn query_string(&self, args: &[&str]) -> Result<String, Error> {
        self.query(args)
    }

    /// The last lines of the node's log, for error messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(8)..].join(" | ")
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The value of `field:` in an `INFO` reply.
pub fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Command-line arguments for a node: data nodes take everything on the command line; a
/// Sentinel needs a configuration file it can rewrite. A TLS-only node listens on `port` with
/// TLS and has no plain port.
fn arguments(
    role: Role,
    port: u16,
    tls_only: bool,
    dir: &Path,
    config: &[(&str, String)],
) -> Result<Vec<OsString>, Error> {
    let listen = if tls_only {
        vec![("port", "0".to_owned()), ("tls-port", port.to_string())]
    } else {
        vec![("port", port.to_string())]
    };
    let mut settings: Vec<(&str, String)> = listen;
    settings.extend([
        ("bind", "127.0.0.1".into()),
        ("dir", dir.display().to_string()),
        ("logfile", "redis.log".into()),
        ("daemonize", "no".into()),
        ("protected-mode", "no".into()),
    ]);
    settings.extend(config.iter().cloned());
    match role {
        Role::Server => {
            let mut args = Vec::new();
            for (name, value) in settings {
                args.push(OsString::from(format!("--{name}")));
                // `save ""` disables snapshots: an empty argument, not the two quote characters.
                for part in value.split_whitespace() {
                    args.push(OsString::from(part));
                }
                if value.is_empty() {
                    args.push(OsString::new());
                }
            }
            Ok(args)
        }
        Role::Sentinel => {
            let file = dir.join("sentinel.conf");
            let text: String = settings
                .iter()
                .map(|(name, value)| format!("{name} {value}\n"))
                .collect();
            std::fs::write(&file, text).map_err(|e| Error::io("writing sentinel.conf", e))?;
            let mut args = vec![file.into_os_string()];
            if !which("redis-sentinel") {
                args.push("--sentinel".into());
            }
            Ok(args)
        }
    }
}
