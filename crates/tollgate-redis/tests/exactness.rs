//! Exactness across processes: 3 OS processes × 32 concurrent clients (each with its own
//! connection) hammer one key per algorithm and together admit exactly the limit, on
//! standalone and on Cluster; and two processes whose system clocks differ by 40 s (one runs
//! under `faketime`) still admit exactly the limit, because time comes from Redis.
//!
//! The processes are this test binary re-executed with `--ignored --exact exactness_worker`; the
//! worker takes its orders from environment variables and reports on stdout.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tollgate::PolicyName;
use tollgate::{Algorithm, Check, ManualClock, Mode, Policy, Store};
use tollgate_redis::{RedisOptions, RedisStore};
use tollgate_testkit::{RedisNode, shared_cluster, shared_standalone};

/// Each algorithm's limit (and burst).
const LIMIT: u64 = 50;
/// Concurrent clients per process.
const CLIENTS: usize = 32;
/// Requests per client per algorithm: 3 × 32 × 4 = 384 attempts for 50 admissions.
const REQUESTS: usize = 4;
/// How long a scenario may take before its workers are killed.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(60);

fn system_now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The policies a worker enforces: window algorithms over `window`, buckets over a day (so no
/// token refills while the scenario runs).
fn policies(window: Duration) -> Vec<Policy> {
    Algorithm::ALL
        .into_iter()
        .map(|algorithm| {
            let period = if algorithm.has_burst() {
                Duration::from_secs(86_400)
            } else {
                window
            };
            Policy::new(algorithm, LIMIT, period, None).unwrap()
        })
        .collect()
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: this test is a worker"))
}

/// One worker process: connect 32 clients, say READY, wait for "go" on stdin, then run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a worker process of the exactness tests, which start it with its orders"]
async fn exactness_worker() {
    let url = env("TOLLGATE_EXACT_URL");
    let identifier = env("TOLLGATE_EXACT_ID");
    let window = Duration::from_secs(env("TOLLGATE_EXACT_WINDOW_S").parse().unwrap());
    // The negative control: decide on this process's own clock instead of Redis time.
    let client_clock = std::env::var_os("TOLLGATE_EXACT_CLIENT_CLOCK").map(|_| ManualClock::new(0));
    let policies = policies(window);

    let mut stores = Vec::new();
    for _ in 0..CLIENTS {
        let options = RedisOptions {
            prefix: "exact".into(),
            clock_override: client_clock.clone(),
            ..RedisOptions::default()
        };
        stores.push(RedisStore::connect(&url, options).await.unwrap());
    }
    println!("READY {}", system_now_us());
    std::io::stdout().flush().unwrap();
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    assert_eq!(go.trim(), "go");

    let mut tasks = Vec::new();
    for store in stores {
        let (policies, identifier, clock) =
            (policies.clone(), identifier.clone(), client_clock.clone());
        tasks.push(tokio::spawn(async move {
            let mut admitted = Vec::new();
            for (index, policy) in policies.iter().enumerate() {
                let check = [Check {
                    name: &PolicyName::from_static("p"),
                    policy,
                    key: &identifier,
                }];
                for _ in 0..REQUESTS {
                    if let Some(clock) = &clock {
                        clock.set_us(system_now_us());
                    }
                    let d = store.decide(&check, 1, Mode::Consume).await.unwrap();
                    if d.decisions[0].allowed {
                        admitted.push((index, d.decisions[0].remaining));
                    }
                }
            }
            admitted
        }));
    }
    let mut by_algorithm: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    for task in tasks {
        for (index, remaining) in task.await.unwrap() {
            by_algorithm.entry(index).or_default().push(remaining);
        }
    }
    for index in 0..policies.len() {
        let remaining = by_algorithm.remove(&index).unwrap_or_default();
        let list: Vec<String> = remaining.iter().map(u64::to_string).collect();
        println!("RESULT {index} {}", list.join(","));
    }
    println!("DONE");
    std::io::stdout().flush().unwrap();
}

/// A running worker and the lines it printed.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Worker {
    fn spawn(
        url: &str,
        identifier: &str,
        window: Duration,
        fake_offset: Option<&str>,
        client_clock: bool,
    ) -> Worker {
        let exe = std::env::current_exe().unwrap();
        let mut command = match fake_offset {
            Some(offset) => {
                let mut c = Command::new("faketime");
                c.args(["-m", "-f", offset]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        command
            .args([
                "exactness_worker",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TOLLGATE_EXACT_URL", url)
            .env("TOLLGATE_EXACT_ID", identifier)
            .env("TOLLGATE_EXACT_WINDOW_S", window.as_secs().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if client_clock {
            command.env("TOLLGATE_EXACT_CLIENT_CLOCK", "1");
        }
        // Spawned with a parent-death signal: a failing test never leaves workers behind.
        let mut child = tollgate_testkit::spawn(command).unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            // Read to the end even when nobody listens any more, so the worker never writes
            // into a closed pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Worker {
            child,
            stdin,
            lines,
        }
    }

    /// The next line with `marker`, from the marker on, skipping the test harness's own output.
    fn expect(&self, marker: &str, deadline: Instant) -> String {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                // libtest prints "test exactness_worker ... " without a newline before ours.
                Ok(line) if line.contains(marker) => {
                    return line[line.find(marker).unwrap_or(0)..].to_owned();
                }
                Ok(_) => continue,
                Err(e) => panic!("worker said no {marker}: {e}"),
            }
        }
    }
}

impl Worker {
    /// Wait for the worker to exit on its own and check that it succeeded.
    fn finish(&mut self, deadline: Instant) {
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "worker exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "worker did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Only a worker that is stuck is still running here.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the workers of one scenario reported.
struct Outcome {
    /// Per algorithm (in `Algorithm::ALL` order), the `remaining` of every admitted request.
    admitted: Vec<Vec<u64>>,
    /// Each worker's system clock when it was ready, µs.
    clocks: Vec<u64>,
}

/// Wait until Redis time is not within 5 s of the end of a `window`, so windows stay put.
fn avoid_window_edge(node: &RedisNode, window: Duration) {
    let (secs, micros): (u64, u64) = node.query(&["TIME"]).unwrap();
    let now = Duration::from_secs(secs) + Duration::from_micros(micros);
    let into = Duration::from_nanos((now.as_nanos() % window.as_nanos()) as u64);
    if window - into < Duration::from_secs(5) {
        std::thread::sleep(window - into + Duration::from_millis(100));
    }
}

fn run_scenario(
    url: &str,
    node: &RedisNode,
    window: Duration,
    fake_offsets: &[Option<&str>],
    client_clock: bool,
    sequential: bool,
) -> Outcome {
    let identifier = format!("run-{}-{}", std::process::id(), system_now_us());
    let deadline = Instant::now() + SCENARIO_TIMEOUT;
    let mut workers: Vec<Worker> = fake_offsets
        .iter()
        .map(|offset| Worker::spawn(url, &identifier, window, *offset, client_clock))
        .collect();
    let clocks = workers
        .iter()
        .map(|w| {
            let line = w.expect("READY ", deadline);
            line["READY ".len()..].parse::<u64>().unwrap()
        })
        .collect();
    avoid_window_edge(node, window);
    let go = |worker: &mut Worker| {
        writeln!(worker.stdin, "go").unwrap();
        worker.stdin.flush().unwrap();
    };
    if !sequential {
        workers.iter_mut().for_each(go);
    }
    let mut admitted = vec![Vec::new(); Algorithm::ALL.len()];
    for worker in &mut workers {
        if sequential {
            go(worker);
        }
        for _ in 0..Algorithm::ALL.len() {
            let line = worker.expect("RESULT ", deadline);
            let mut parts = line.split(' ').skip(1);
            let index: usize = parts.next().unwrap().parse().unwrap();
            admitted[index].extend(
                parts
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse::<u64>().unwrap()),
            );
        }
        worker.expect("DONE", deadline);
    }
    for worker in &mut workers {
        worker.finish(deadline);
    }
    Outcome { admitted, clocks }
}

/// Exactly `LIMIT` admissions per algorithm, and each `remaining` from LIMIT−1 down to 0 seen
/// exactly once: no two admissions ever saw the same state.
fn assert_exact(outcome: &Outcome) {
    for (algorithm, admitted) in Algorithm::ALL.iter().zip(&outcome.admitted) {
        let mut remaining = admitted.clone();
        remaining.sort_unstable();
        let expected: Vec<u64> = (0..LIMIT).collect();
        assert_eq!(
            remaining,
            expected,
            "{algorithm}: admitted {}",
            admitted.len()
        );
    }
}

#[test]
fn three_processes_admit_exactly_the_limit_on_standalone() {
    let server = shared_standalone();
    let outcome = run_scenario(
        &server.url(),
        server.node(),
        Duration::from_secs(3600),
        &[None, None, None],
        false,
        false,
    );
    assert_exact(&outcome);
}

#[test]
fn three_processes_admit_exactly_the_limit_on_cluster() {
    let cluster = shared_cluster();
    let outcome = run_scenario(
        &cluster.url(),
        &cluster.nodes()[0],
        Duration::from_secs(3600),
        &[None, None, None],
        false,
        false,
    );
    assert_exact(&outcome);
}

/// Make `faketime` available (Debian's package): `false`, after saying so, when it cannot be.
/// Checked once per test binary, so two tests never run apt-get at the same time.
fn faketime() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let works = || {
            Command::new("faketime")
                .args(["-f", "+40s", "true"])
                .status()
                .is_ok_and(|s| s.success())
        };
        let apt = |args: &[&str]| {
            Command::new("apt-get")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if works() {
            return true;
        }
        // The package lists may be missing on a fresh machine: update once, then install.
        if !apt(&["install", "-y", "-qq", "faketime"]) {
            apt(&["update", "-qq"]);
            apt(&["install", "-y", "-qq", "faketime"]);
        }
        if works() {
            return true;
        }
        eprintln!(
            "SKIPPED: `faketime` is not installed and apt-get could not install it \
             (install Debian's `faketime` package to run the clock-skew tests)"
        );
        false
    })
}

/// Windows of 30 s: a 40 s skew moves a client-clock process into another window entirely.
const SKEW_WINDOW: Duration = Duration::from_secs(30);

// The skew scenarios run the processes one after the other, the true clock first: the order in
// which a clock 40 s ahead would find the first process's state already expired (or its window
// already over) and admit a second full quota.

#[test]
fn processes_with_clocks_40s_apart_admit_exactly_the_limit() {
    if !faketime() {
        return;
    }
    let server = shared_standalone();
    let outcome = run_scenario(
        &server.url(),
        server.node(),
        SKEW_WINDOW,
        &[None, Some("+40s")],
        false,
        true,
    );
    let skew = outcome.clocks[1].abs_diff(outcome.clocks[0]);
    assert!(
        (35_000_000..45_000_000).contains(&skew),
        "the workers' clocks differ by {skew} µs, not about 40 s"
    );
    assert_exact(&outcome);
}

/// The control: the same skewed processes deciding on their own clocks over-admit, so the test
/// above passes because time comes from Redis, not by luck.
#[test]
fn client_clocks_40s_apart_would_over_admit() {
    if !faketime() {
        return;
    }
    let server = shared_standalone();
    let outcome = run_scenario(
        &server.url(),
        server.node(),
        SKEW_WINDOW,
        &[None, Some("+40s")],
        true,
        true,
    );
    let fixed_window = outcome.admitted[0].len() as u64;
    let sliding_log = outcome.admitted[1].len() as u64;
    assert!(
        fixed_window > LIMIT && sliding_log > LIMIT,
        "client clocks admitted {fixed_window} (fixed window) and {sliding_log} (sliding log)"
    );
}
