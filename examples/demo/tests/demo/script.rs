//! `scripts/demo.sh` end to end, on free ports (`DEMO_PORT`) with the binary cargo built for
//! this test (`DEMO_BIN`): its output, its exit status, and that it leaves nothing behind —
//! when it finishes and when it is interrupted like Ctrl-C does.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{DEMO, port_is_free, process_exists, three_free_ports};

fn script() -> Command {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut command = Command::new(root.join("scripts/demo.sh"));
    command
        .env("DEMO_PORT", three_free_ports().to_string())
        .env("DEMO_BIN", DEMO)
        .stdin(Stdio::null());
    command
}

/// What the script said it started: pids, ports and its temporary directory.
#[derive(Debug, Default)]
struct Started {
    pids: Vec<u32>,
    ports: Vec<u16>,
    dir: Option<PathBuf>,
}

impl Started {
    /// Read from lines like `redis-server on 127.0.0.1:23456 (pid 42), data in /tmp/x` and
    /// `instance 127.0.0.1:8081 (pid 43), log ...`.
    fn parse(output: &str) -> Started {
        let mut started = Started::default();
        for line in output.lines() {
            if !(line.starts_with("redis-server on ") || line.starts_with("instance ")) {
                continue;
            }
            let port = line
                .split("127.0.0.1:")
                .nth(1)
                .and_then(|s| s.split(' ').next());
            let pid = line.split("(pid ").nth(1).and_then(|s| s.split(')').next());
            started.ports.push(port.unwrap().parse().unwrap());
            started.pids.push(pid.unwrap().parse().unwrap());
            if let Some(dir) = line.split(", data in ").nth(1) {
                started.dir = Some(PathBuf::from(dir));
            }
        }
        started
    }

    /// Nothing the script started is running, listening, or left on disk.
    fn assert_all_gone(&self, output: &str) {
        for pid in &self.pids {
            assert!(!process_exists(*pid), "pid {pid} still runs:\n{output}");
        }
        for port in &self.ports {
            assert!(port_is_free(*port), "port {port} still taken:\n{output}");
        }
        if let Some(dir) = &self.dir {
            assert!(!dir.exists(), "{} left behind:\n{output}", dir.display());
        }
    }
}

#[test]
fn demo_script_prints_ten_200_then_five_429_and_leaves_nothing_behind() {
    let Output {
        status,
        stdout,
        stderr,
    } = script().output().unwrap();
    let out = String::from_utf8(stdout).unwrap();
    let err = String::from_utf8(stderr).unwrap();
    assert!(status.success(), "{status}\n{out}\n{err}");

    let started = Started::parse(&out);
    assert_eq!(
        started.pids.len(),
        4,
        "redis-server and three instances:\n{out}"
    );
    let instances = &started.ports[1..];

    // One line per request: number, the instance that answered (round robin), status.
    let requests: Vec<(usize, String, u16)> = out
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let n = fields.first()?.parse().ok()?;
            Some((n, fields[1].to_owned(), fields[2].parse().ok()?))
        })
        .collect();
    assert_eq!(requests.len(), 15, "{out}");
    for (i, (n, instance, status)) in requests.iter().enumerate() {
        assert_eq!(*n, i + 1);
        assert_eq!(
            *instance,
            format!("127.0.0.1:{}", instances[i % 3]),
            "{out}"
        );
        assert_eq!(*status, if i < 10 { 200 } else { 429 }, "{out}");
    }
    assert!(out.contains("  429  retry after "), "{out}");
    assert!(out.contains("\"remaining\":0"), "the status line:\n{out}");
    assert!(out.contains("\nallowed 10, limited 5\n"), "{out}");

    started.assert_all_gone(&out);
}

#[test]
fn ctrl_c_stops_everything_the_script_started() {
    // Its own process group, so the signal reaches the script and its children together, as a
    // terminal's Ctrl-C does.
    let mut child = script()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut out = String::new();
    while !out.contains("all three instances are healthy") {
        let read = stdout.read_line(&mut out).unwrap();
        assert!(read > 0, "the script ended early:\n{out}");
    }
    let group = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill has no memory-safety preconditions; the group is the script's own.
    assert_eq!(unsafe { libc::kill(-group, libc::SIGINT) }, 0);

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the script did not stop:\n{out}");
        std::thread::sleep(Duration::from_millis(20));
    };
    stdout.read_to_string(&mut out).unwrap();
    let started = Started::parse(&out);
    assert_eq!(started.pids.len(), 4, "{out}");
    assert_eq!(status.code(), Some(130), "{out}");
    assert!(
        !out.contains("allowed 10"),
        "the run was not interrupted:\n{out}"
    );
    started.assert_all_gone(&out);
}
