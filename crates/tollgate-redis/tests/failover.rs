//! Redis going away and coming back: a restarted server, a paused one, a Sentinel failover
//! (master killed, then a graceful switch back), and a Cluster master killed. Calls may fail
//! while Redis is gone — as typed errors, never panics — and decisions resume on their own.

use std::time::{Duration, Instant};

use tollgate::{Algorithm, Check, Mode, Policy, Store, StoreError};
use tollgate_redis::{RedisOptions, RedisStore};
use tollgate_testkit::{RedisCluster, RedisNode, RedisSentinel, RedisServer, info_field};

fn options() -> RedisOptions {
    RedisOptions {
        prefix: "failover".into(),
        connect_timeout: Duration::from_millis(300),
        response_timeout: Duration::from_millis(300),
        ..RedisOptions::default()
    }
}

fn policy() -> Policy {
    Policy::new(
        Algorithm::FixedWindow,
        1000,
        Duration::from_secs(3600),
        None,
    )
    .unwrap()
}

/// Decide once for `key`; `Ok(remaining)`.
async fn consume(store: &RedisStore, key: &str) -> Result<u64, StoreError> {
    let policy = policy();
    let check = [Check {
        name: "p",
        policy: &policy,
        key,
    }];
    let d = store.decide(&check, 1, Mode::Consume).await?;
    assert!(d.decisions[0].allowed);
    Ok(d.decisions[0].remaining)
}

/// Retry until a decision succeeds; returns it and the errors seen (all typed backend errors).
async fn until_decided(store: &RedisStore, key: &str, within: Duration) -> (u64, usize) {
    let deadline = Instant::now() + within;
    let mut errors = 0;
    loop {
        match consume(store, key).await {
            Ok(remaining) => return (remaining, errors),
            Err(StoreError::Backend(_)) if Instant::now() < deadline => {
                errors += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("no decision within {within:?}: {e}"),
        }
    }
}

#[tokio::test]
async fn a_restarted_server_is_used_again() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::connect(&server.url(), options()).await.unwrap();
    assert_eq!(consume(&store, "u").await.unwrap(), 999);

    server.restart().unwrap();
    // The server kept nothing: the count starts over, on a reconnected connection.
    let (remaining, _) = until_decided(&store, "u", Duration::from_secs(10)).await;
    assert_eq!(remaining, 999);

    // A frozen server makes calls fail (response timeout), and they work again once it thaws.
    server.pause().unwrap();
    let frozen = consume(&store, "u").await;
    server.resume().unwrap();
    assert!(matches!(frozen, Err(StoreError::Backend(_))), "{frozen:?}");
    let (remaining, _) = until_decided(&store, "u", Duration::from_secs(10)).await;
    assert!(remaining <= 998);

    // A store built while Redis is down works once it is up.
    server.kill();
    assert!(RedisStore::connect(&server.url(), options()).await.is_err());
    let lazy = RedisStore::connect_lazy(&server.url(), options()).unwrap();
    assert!(consume(&lazy, "v").await.is_err());
    server.restart().unwrap();
    let (remaining, _) = until_decided(&lazy, "v", Duration::from_secs(10)).await;
    assert_eq!(remaining, 999);
}

fn role(node: &RedisNode) -> Option<String> {
    let info = node.query_string(&["INFO", "replication"]).ok()?;
    info_field(&info, "role").map(str::to_owned)
}

#[tokio::test]
async fn sentinel_failover_moves_decisions_to_the_new_master() {
    let deployment = RedisSentinel::start().unwrap();
    let store = RedisStore::connect(&deployment.url(), options())
        .await
        .unwrap();
    for expected in [999, 998, 997] {
        assert_eq!(consume(&store, "s").await.unwrap(), expected);
    }
    let key = "failover:p:fixed-window:{s}";
    // Wait until the replica has the state, so the failover loses nothing.
    let replica = &deployment.data_nodes()[1];
    let deadline = Instant::now() + Duration::from_secs(5);
    while replica.query::<i64>(&["EXISTS", key]).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "replica never got the key");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 1. The master dies; Sentinel promotes the replica; decisions resume there.
    let old = deployment.kill_master().unwrap();
    let new = deployment.wait_failover(old).unwrap();
    let (remaining, _) = until_decided(&store, "s", Duration::from_secs(20)).await;
    assert_eq!(
        remaining, 996,
        "the state replicated before the failover is kept"
    );
    let on_new: i64 = deployment.data_nodes()[new]
        .query(&["EXISTS", key])
        .unwrap();
    assert_eq!(on_new, 1);

    // 2. The old master comes back, as a replica of the new one (as an operator would bring
    //    it back); a graceful failover switches back while the store holds a connection to the
    //    master being demoted, which then answers READONLY: the store asks the Sentinels again.
    let returning = &deployment.data_nodes()[old];
    returning.restart().unwrap();
    let new_port = deployment.data_nodes()[new].port().to_string();
    let _: String = returning
        .query(&["REPLICAOF", "127.0.0.1", &new_port])
        .unwrap();
    wait_until("the old master to sync as a replica", || {
        let info = returning
            .query_string(&["INFO", "replication"])
            .unwrap_or_default();
        info_field(&info, "master_link_status") == Some("up")
    })
    .await;
    // Sentinel refuses (NOGOODSLAVE) until it has seen the replica healthy again.
    wait_until("sentinel to accept a failover", || {
        deployment.sentinels()[0]
            .query::<String>(&["SENTINEL", "FAILOVER", deployment.master_name()])
            .is_ok()
    })
    .await;
    let back = deployment.wait_failover(new).unwrap();
    assert_eq!(back, old);
    // Sentinel reconfigures the demoted master at its next INFO poll (up to 10 s); do it now.
    let demoted = &deployment.data_nodes()[new];
    let back_port = deployment.data_nodes()[back].port().to_string();
    let _: String = demoted
        .query(&["REPLICAOF", "127.0.0.1", &back_port])
        .unwrap();
    assert_eq!(role(demoted).as_deref(), Some("slave"));
    // The refused call wrote nothing, so it is retried on the new master: no error at all.
    let (remaining, errors) = until_decided(&store, "s", Duration::from_secs(20)).await;
    assert_eq!((remaining, errors), (995, 0));
    let on_back: i64 = deployment.data_nodes()[back]
        .query(&["EXISTS", key])
        .unwrap();
    assert_eq!(on_back, 1);
}

/// A graceful `SENTINEL FAILOVER`: once the Sentinels name the new master, decisions go there
/// within seconds (the store follows `+switch-master`), not to the old master, which keeps
/// taking writes until Sentinel demotes it (up to 10 s later) and then loses them all.
#[tokio::test]
async fn sentinel_switch_moves_decisions_at_once() {
    let deployment = RedisSentinel::start().unwrap();
    let store = RedisStore::connect(&deployment.url(), options())
        .await
        .unwrap();
    consume(&store, "warm").await.unwrap();
    let old = deployment.master_index().unwrap();
    // Sentinel refuses (NOGOODSLAVE) until it has seen the replica healthy.
    wait_until("sentinel to accept a failover", || {
        deployment.sentinels()[0]
            .query::<String>(&["SENTINEL", "FAILOVER", deployment.master_name()])
            .is_ok()
    })
    .await;
    let new = deployment.wait_failover(old).unwrap();
    let new_master = &deployment.data_nodes()[new];
    let started = Instant::now();
    for attempt in 0.. {
        let key = format!("after-{attempt}");
        // A call may fail while the connection moves; the next one goes on.
        let _ = consume(&store, &key).await;
        let stored = format!("failover:p:fixed-window:{{{key}}}");
        if new_master.query::<i64>(&["EXISTS", &stored]).unwrap_or(0) == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "decisions still go elsewhere {:?} after the switch (old master's role: {:?})",
            started.elapsed(),
            role(&deployment.data_nodes()[old])
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn cluster_master_failover_is_followed() {
    let cluster = RedisCluster::start().unwrap();
    let store = RedisStore::connect(&cluster.url(), options())
        .await
        .unwrap();
    assert_eq!(consume(&store, "c").await.unwrap(), 999);
    let killed = cluster.kill_master_of("{c}").unwrap();
    cluster.wait_healthy(Duration::from_secs(20)).unwrap();
    let promoted = cluster.master_of("{c}").unwrap();
    assert_ne!(killed, promoted);
    let (remaining, _) = until_decided(&store, "c", Duration::from_secs(20)).await;
    // Replication is asynchronous: the one decision before the kill may or may not have
    // reached the replica in time.
    assert!(remaining == 998 || remaining == 999, "{remaining}");
}
