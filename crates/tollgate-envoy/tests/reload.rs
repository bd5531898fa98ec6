//! Hot reload when a symlink above the config directory is swapped to another directory
//! (upstream's default `RUNTIME_WATCH_ROOT` layout), and when files are removed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate::MemoryStore;
use tollgate_envoy::{EnvoyOptions, EnvoyService};

fn domains(service: &EnvoyService<MemoryStore>) -> Vec<String> {
    let mut names: Vec<String> = service
        .config()
        .domains
        .keys()
        .map(|d| d.to_string())
        .collect();
    names.sort();
    names
}

async fn wait_for(service: &EnvoyService<MemoryStore>, expected: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while domains(service) != expected {
        assert!(
            Instant::now() < deadline,
            "still {:?}, expected {expected:?}",
            domains(service)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_swapped_symlink_and_removed_files_are_reloaded() {
    let root = tempfile::tempdir().expect("tempdir");
    for (version, domain) in [("v1", "one"), ("v2", "two")] {
        let config = root.path().join(version).join("config");
        std::fs::create_dir_all(&config).expect("mkdir");
        std::fs::write(config.join("a.yaml"), format!("domain: {domain}\n")).expect("write");
    }
    let current = root.path().join("current");
    std::os::unix::fs::symlink(root.path().join("v1"), &current).expect("symlink");
    let options = EnvoyOptions {
        reload_debounce: Duration::from_millis(20),
        ..EnvoyOptions::default()
    };
    let service = EnvoyService::new(
        Arc::new(MemoryStore::new()),
        current.join("config"),
        options,
    )
    .expect("valid config");
    let _reloader = service.spawn_reloader().expect("watcher");
    assert_eq!(domains(&service), ["one"]);

    // Swap atomically, as deploy tools do: a new link renamed over the old one.
    let next = root.path().join("next");
    std::os::unix::fs::symlink(root.path().join("v2"), &next).expect("symlink");
    std::fs::rename(&next, &current).expect("rename");
    wait_for(&service, &["two"]).await;

    // The new directory is the one watched now.
    let config = root.path().join("v2").join("config");
    std::fs::write(config.join("b.yaml"), "domain: three\n").expect("write");
    wait_for(&service, &["three", "two"]).await;
    std::fs::remove_file(config.join("a.yaml")).expect("remove");
    wait_for(&service, &["three"]).await;
}
