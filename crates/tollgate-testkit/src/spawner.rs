//! Spawning children that die with the test process.
//!
//! Each child is spawned with `prctl(PR_SET_PDEATHSIG, SIGKILL)`, so the kernel kills it when its
//! parent goes away — even when the test binary is killed, aborts, or never runs a destructor
//! (instances kept in a `static` are never dropped). The "parent" the kernel watches is the
//! *thread* that called `fork`, not the process: a child spawned from a test's thread would be
//! killed as soon as that test finished. So every spawn goes through one dedicated thread that
//! lives as long as the process.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Mutex, OnceLock};

type Request = (Command, Sender<io::Result<Child>>);

/// The spawner thread's inbox. It lives in a static, so it is never dropped and the thread's
/// `recv` never returns an error: the thread never exits.
static SPAWNER: OnceLock<Mutex<Sender<Request>>> = OnceLock::new();

fn spawner() -> &'static Mutex<Sender<Request>> {
    SPAWNER.get_or_init(|| {
        let (tx, rx) = channel::<Request>();
        std::thread::Builder::new()
            .name("testkit-spawner".into())
            .spawn(move || {
                while let Ok((mut command, reply)) = rx.recv() {
                    // The caller may have given up waiting; nothing to do then.
                    let _ = reply.send(spawn_here(&mut command));
                }
            })
            .expect("cannot start the testkit spawner thread");
        Mutex::new(tx)
    })
}

/// Spawn `command` on this thread with the parent-death signal set.
fn spawn_here(command: &mut Command) -> io::Result<Child> {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only calls async-signal-safe
    // functions (prctl, getppid, _exit).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody would signal us.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    command.spawn()
}

/// Spawn `command` so that it is killed when this process exits, whichever thread asks.
pub fn spawn(command: Command) -> io::Result<Child> {
    let (reply_tx, reply_rx) = channel();
    spawner()
        .lock()
        .map_err(|_| io::Error::other("testkit spawner lock poisoned"))?
        .send((command, reply_tx))
        .map_err(|_| io::Error::other("testkit spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("testkit spawner thread dropped the request"))?
}
