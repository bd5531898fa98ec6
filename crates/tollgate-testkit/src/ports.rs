//! Free loopback ports and per-process scratch directories.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Ports are drawn from `[LOW, HIGH)`, so the Cluster bus port (`port + 10000`) stays below the
/// kernel's ephemeral range (32768+) where outgoing connections pick their source ports.
const LOW: u16 = 15_000;
const HIGH: u16 = 22_700;

/// Offset of the Cluster bus port.
pub const BUS_OFFSET: u16 = 10_000;

/// Ports handed out by this process: never handed out twice (a killed node keeps its port for a
/// restart).
static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

static RNG: AtomicU64 = AtomicU64::new(0);

fn next_random() -> u64 {
    let seed = RNG.load(Ordering::Relaxed);
    let seed = if seed == 0 {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        t ^ (u64::from(std::process::id()) << 32)
    } else {
        seed
    };
    // splitmix64
    let next = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    RNG.store(next, Ordering::Relaxed);
    let mut z = next;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A loopback port that is free now (and whose bus port is free too), never returned before by
/// this process. Another process may still take it before the server binds it: callers verify
/// that the server answering on the port is the one they started.
pub fn free_port() -> u16 {
    loop {
        let port = LOW + (next_random() % u64::from(HIGH - LOW)) as u16;
        let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
        let taken = taken.get_or_insert_with(HashSet::new);
        if taken.contains(&port) || !bindable(port) || !bindable(port + BUS_OFFSET) {
            continue;
        }
        taken.insert(port);
        return port;
    }
}

/// The directory holding every testkit scratch directory.
fn root() -> PathBuf {
    std::env::temp_dir().join("tollgate-testkit")
}

static DIRS: AtomicU64 = AtomicU64::new(0);

/// A new scratch directory `<tmp>/tollgate-testkit/<pid>-<n>`. Directories left behind by
/// processes that no longer exist (instances kept in statics are never dropped) are removed the
/// first time this runs in a process.
pub fn scratch_dir(label: &str) -> std::io::Result<PathBuf> {
    let n = DIRS.fetch_add(1, Ordering::Relaxed);
    if n == 0 {
        remove_stale_dirs();
    }
    let dir = root().join(format!("{}-{n}-{label}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(root()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
