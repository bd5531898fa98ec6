//! The external tools the deploy checks run: promtool (Debian's `prometheus` package) and the
//! Python virtualenv that `scripts/setup.sh` fills from `tests/deploy/requirements.txt`.
//! Each test binary uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root (deploy/ and docs/ live there).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A file of the workspace, by its path from the root.
pub fn repo_file(path: &str) -> PathBuf {
    workspace().join(path)
}

/// This directory's helper scripts.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/deploy")
        .join(name)
}

/// The tools' virtualenv, where scripts/setup.sh puts it.
fn venv() -> PathBuf {
    let tools = std::env::var_os("TOLLGATE_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(|t| PathBuf::from(t).join("tools")))
        .unwrap_or_else(|| workspace().join("target/tools"));
    tools.join("venv")
}

/// A program of the virtualenv (`kubectl`, `python`, ...).
pub fn venv_bin(name: &str) -> PathBuf {
    let path = venv().join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh (it installs the deploy checks' tools)",
        path.display()
    );
    path
}

/// `promtool`, from PATH.
pub fn promtool() -> Command {
    Command::new("promtool")
}

/// Run `command` to completion; panics, with its output, unless it exits 0.
pub fn run_ok(command: &mut Command) -> String {
    let output = run(command);
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Run `command` to completion and return its output, whatever its status.
pub fn run(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|error| {
        panic!("cannot run {command:?}: {error} (run scripts/setup.sh to install it)")
    })
}
