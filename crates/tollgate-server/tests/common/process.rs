//! The built `tollgate` binary as a child process, its stderr log read in the background.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

/// A `tollgate` command in `dir` with none of the TOLLGATE_* variables of the caller.
pub fn tollgate(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command.current_dir(dir);
    for (name, _) in std::env::vars() {
        if name.starts_with("TOLLGATE_") {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_LOG");
    command
}

/// A running `tollgate serve` whose stderr is read in the background.
pub struct Running {
    pub child: Child,
    pub addr: SocketAddr,
    /// The startup log line.
    pub startup: String,
    /// Log lines after the startup line, as they come.
    lines: mpsc::Receiver<String>,
}

impl Running {
    /// Spawn and wait for the "tollgate listening" line.
    pub fn spawn(mut command: Command) -> Running {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tollgate starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if line.contains("tollgate listening") {
                let addr = listen_addr(&line);
                return Running {
                    child,
                    addr,
                    startup: line,
                    lines: rx,
                };
            }
            seen.push(line);
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("no startup line; stderr: {seen:#?}");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The next log line containing `needle`, waiting at most `limit` (the lines before it
    /// are consumed).
    pub fn log_line(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if line.contains(needle) {
                return line;
            }
            seen.push(line);
        }
        panic!("no log line with {needle:?} within {limit:?}; saw {seen:#?}");
    }

    /// Send `signal` to the process.
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// Send SIGTERM and wait for the exit.
    pub fn terminate(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        wait(&mut self.child, Duration::from_secs(15))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "tollgate did not exit in {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The address in a startup line, text (`listen=ADDR`) or JSON (`"listen":"ADDR"`).
fn listen_addr(line: &str) -> SocketAddr {
    if let Ok(json) = serde_json::from_str::<Value>(line) {
        return json["fields"]["listen"].as_str().unwrap().parse().unwrap();
    }
    let start = line.find("listen=").expect("listen= in startup line") + "listen=".len();
    line[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}
