//! The harness itself: each topology starts, answers, and its processes die with their handle.

use std::time::Duration;

use tollgate_testkit::{RedisCluster, RedisSentinel, RedisServer, info_field};

fn pid_alive(pid: u32) -> bool {
    // A killed child is reaped by the harness, so its pid no longer exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

#[test]
fn standalone_starts_pauses_restarts_and_dies_on_drop() {
    let server = RedisServer::start().unwrap();
    let pong: String = server.query(&["PING"]).unwrap();
    assert_eq!(pong, "PONG");
    let save: Vec<String> = server.query(&["CONFIG", "GET", "save"]).unwrap();
    assert_eq!(save, ["save", ""]);

    let mut connection = server.connection().unwrap();
    server.pause().unwrap();
    connection
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(redis::cmd("PING").query::<String>(&mut connection).is_err());
    server.resume().unwrap();
    assert_eq!(server.query::<String>(&["PING"]).unwrap(), "PONG");

    let port = server.port();
    let first = server.pid().unwrap();
    server.restart().unwrap();
    assert_eq!(server.port(), port);
    assert_ne!(server.pid().unwrap(), first);
    assert!(!pid_alive(first));

    let pid = server.pid().unwrap();
    drop(server);
    assert!(!pid_alive(pid));
}

#[test]
fn cluster_forms_and_fails_over() {
    let cluster = RedisCluster::start().unwrap();
    let url = cluster.url();
    assert!(url.starts_with("redis+cluster://127.0.0.1:"));
    let masters = cluster
        .nodes()
        .iter()
        .filter(|n| {
            let info = n.query_string(&["INFO", "replication"]).unwrap();
            info_field(&info, "role") == Some("master")
        })
        .count();
    assert_eq!(masters, 3);

    let killed = cluster.kill_master_of("{user-1}").unwrap();
    cluster.wait_healthy(Duration::from_secs(20)).unwrap();
    let promoted = cluster.master_of("{user-1}").unwrap();
    assert_ne!(killed, promoted);
    // The old master comes back as a replica of the new one.
    cluster.nodes()[killed].restart().unwrap();
    cluster.wait_healthy(Duration::from_secs(20)).unwrap();
    let pids: Vec<u32> = cluster.nodes().iter().filter_map(|n| n.pid()).collect();
    assert_eq!(pids.len(), 6);
    drop(cluster);
    assert!(pids.iter().all(|&p| !pid_alive(p)));
}

#[test]
fn sentinel_promotes_the_replica() {
    let deployment = RedisSentinel::start().unwrap();
    assert_eq!(deployment.master_index().unwrap(), 0);
    let old = deployment.kill_master().unwrap();
    let new = deployment.wait_failover(old).unwrap();
    assert_eq!(new, 1);
}
