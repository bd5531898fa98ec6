//! Batching (`src/batch.rs`, `scripts/one_policy.lua`), on standalone over plain TCP, over TLS,
//! on Sentinel and per node on a Cluster, plain and TLS: concurrent checks of one algorithm share script
//! calls, and every decision is the one it would have been as a call of its own: exact counts,
//! every state consumed once, a check that fails fails alone, and a batch answers byte for byte
//! as its checks sent one by one.

use std::collections::BTreeMap;
use std::time::Duration;

use tollgate::PolicyName;
use tollgate::{Algorithm, Check, Mode, Policy, Store, StoreError};
use tollgate_redis::TlsFiles;
use tollgate_redis::script::Shape;
use tollgate_redis::{RedisOptions, RedisStore, RedisStoreError, ReplicaAck};
use tollgate_testkit::{
    Certificates, RedisCluster, RedisNode, RedisSentinel, RedisServer, TlsCluster, info_field,
    shared_cluster,
};

/// Callers deciding at once on one store (one connection).
const TASKS: usize = 64;
/// Decisions per caller.
const ROUNDS: usize = 10;
/// Keys they share: 640 attempts on 8 keys, 80 per key.
const KEYS: usize = 8;
/// Each key's limit: 30 of its 80 attempts are allowed.
const LIMIT: u64 = 30;

async fn store(server: &RedisServer, prefix: &str) -> RedisStore {
    let options = RedisOptions {
        prefix: prefix.to_owned(),
        ..RedisOptions::default()
    };
    RedisStore::connect(&server.url(), options).await.unwrap()
}

/// A policy per algorithm with no refill while a test runs (a day for the buckets).
fn policy(algorithm: Algorithm) -> Policy {
    let period = if algorithm.has_burst() { 86_400 } else { 3_600 };
    Policy::new(algorithm, LIMIT, Duration::from_secs(period), None).unwrap()
}

/// `EVALSHA` calls the servers have run so far.
fn evalsha_calls(servers: &[&RedisNode]) -> u64 {
    servers
        .iter()
        .map(|server| {
            let info = server.query_string(&["INFO", "commandstats"]).unwrap();
            info_field(&info, "cmdstat_evalsha")
                .and_then(|stats| stats.split(',').find_map(|f| f.strip_prefix("calls=")))
                .map_or(0, |calls| calls.parse().unwrap())
        })
        .sum()
}

/// What each key's decisions were: `remaining` of every allowed one, and how many were refused.
type Outcomes = BTreeMap<String, (Vec<u64>, u64)>;

/// What a [`hammer`] saw.
struct Run {
    outcomes: Outcomes,
    /// The errors per key.
    errors: BTreeMap<String, Vec<String>>,
    /// `EVALSHA` calls Redis ran meanwhile.
    calls: u64,
}

/// `TASKS` callers at once, each deciding (`mode`) `ROUNDS` times on `keys` keys (a round's
/// callers on different keys, as far as there are), which `victim` takes part in when given.
async fn hammer(
    servers: &[&RedisNode],
    store: &RedisStore,
    policy: &Policy,
    victim: Option<&str>,
    mode: Mode,
    keys: usize,
) -> Run {
    let before = evalsha_calls(servers);
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let store = store.clone();
        let policy = policy.clone();
        let victim = victim.map(str::to_owned);
        tasks.spawn(async move {
            let mut seen = Vec::new();
            for round in 0..ROUNDS {
                let key = match &victim {
                    Some(victim) if (task + round) % 2 == 0 => victim.clone(),
                    _ => format!("k{}", (task + round) % keys),
                };
                let check = Check {
                    name: &PolicyName::from_static("p"),
                    policy: &policy,
                    key: &key,
                };
                let result = store.decide(&[check], 1, mode).await;
                seen.push((key, result.map(|d| d.decisions[0])));
            }
            seen
        });
    }
    let mut outcomes = Outcomes::new();
    let mut errors: BTreeMap<String, Vec<String>> = BTreeMap::new();
    while let Some(seen) = tasks.join_next().await {
        for (key, result) in seen.unwrap() {
            match result {
                Ok(decision) => {
                    let entry = outcomes.entry(key).or_default();
                    if decision.allowed {
                        entry.0.push(decision.remaining);
                    } else {
                        entry.1 += 1;
                    }
                }
                Err(StoreError::Backend(e)) => errors.entry(key).or_default().push(e.to_string()),
                Err(other) => panic!("{key}: {other:?}"),
            }
        }
    }
    let calls = evalsha_calls(servers) - before;
    Run {
        outcomes,
        errors,
        calls,
    }
}

/// Every key allowed exactly `LIMIT` times, each allowed decision on a state no other saw
/// (its `remaining` is LIMIT-1, ..., 0, once each), the rest refused.
fn assert_exact(algorithm: Algorithm, outcomes: &Outcomes, attempts_per_key: u64) {
    assert_exact_to(algorithm, outcomes, attempts_per_key, LIMIT);
}

/// The same for a limit of `limit`.
fn assert_exact_to(algorithm: Algorithm, outcomes: &Outcomes, attempts_per_key: u64, limit: u64) {
    for (key, (remaining, refused)) in outcomes {
        let mut remaining = remaining.clone();
        remaining.sort_unstable();
        let expected: Vec<u64> = (0..limit).collect();
        assert_eq!(remaining, expected, "{algorithm:?} {key}: remaining values");
        assert_eq!(*refused, attempts_per_key - limit, "{algorithm:?} {key}");
    }
}

/// Every algorithm hammered on `store` (on `server`): exact, and in far fewer calls.
async fn shares_calls_and_stays_exact(
    server: &RedisNode,
    store_for: impl AsyncFn(&str) -> RedisStore,
) {
    for algorithm in Algorithm::ALL {
        let store = store_for(&format!("batch{}", algorithm.name())).await;
        let policy = policy(algorithm);
        let Run {
            outcomes,
            errors,
            calls,
        } = hammer(&[server], &store, &policy, None, Mode::Consume, KEYS).await;
        assert!(errors.is_empty(), "{algorithm:?}: {errors:?}");
        assert_eq!(outcomes.len(), KEYS);
        assert_exact(algorithm, &outcomes, (TASKS * ROUNDS / KEYS) as u64);
        // 64 callers on one connection: the decisions go out in far fewer calls than one each
        // (one each without batching; a batch is rarely under 8 here).
        let decisions = (TASKS * ROUNDS) as u64;
        assert!(
            calls > 0 && calls * 2 <= decisions,
            "{algorithm:?}: {calls} EVALSHA calls for {decisions} decisions"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_share_script_calls_and_stay_exact() {
    let server = RedisServer::start().unwrap();
    shares_calls_and_stays_exact(&server, async |prefix: &str| store(&server, prefix).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batching_over_tls_is_exact() {
    let dir = std::env::temp_dir().join(format!("tollgate-batch-tls-{}", std::process::id()));
    let certs = Certificates::make(&dir).unwrap();
    let (server, tls_port) = RedisServer::start_tls(&certs, false).unwrap();
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let tls = TlsFiles {
        ca_cert: Some(certs.path("ca.crt").into()),
        ..TlsFiles::default()
    };
    shares_calls_and_stays_exact(&server, async |prefix: &str| {
        let options = RedisOptions {
            prefix: prefix.to_owned(),
            tls: Some(tls.clone()),
            ..RedisOptions::default()
        };
        RedisStore::connect(&url, options).await.unwrap()
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batching_on_sentinel_is_exact() {
    let deployment = RedisSentinel::start().unwrap();
    let master = &deployment.data_nodes()[deployment.master_index().unwrap()];
    shares_calls_and_stays_exact(master, async |prefix: &str| {
        let options = RedisOptions {
            prefix: prefix.to_owned(),
            ..RedisOptions::default()
        };
        RedisStore::connect(&deployment.url(), options)
            .await
            .unwrap()
    })
    .await;
}

/// On a Cluster, calls queue per node: 64 callers, each round on 64 different keys (so
/// hardly two on one slot at once), share script calls on each master, and stay exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batching_on_a_cluster_goes_per_node_and_is_exact() {
    goes_per_node_and_is_exact(shared_cluster(), None).await;
}

/// The same on a TLS Cluster (`rediss+cluster://`): the slot map and the per-node batches come
/// over TLS from nodes that have no plain port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batching_on_a_tls_cluster_goes_per_node_and_is_exact() {
    let dir =
        std::env::temp_dir().join(format!("tollgate-batch-tls-cluster-{}", std::process::id()));
    let certs = Certificates::make(&dir).unwrap();
    let cluster = RedisCluster::start_tls(&certs, TlsCluster::default()).unwrap();
    let tls = TlsFiles {
        ca_cert: Some(certs.path("ca.crt").into()),
        ..TlsFiles::default()
    };
    goes_per_node_and_is_exact(&cluster, Some(tls)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// One call, then a pause: until a Cluster store has loaded its slot map (at its first call),
/// calls queue per slot, not per node.
async fn warm_slot_map(store: &RedisStore, algorithm: Algorithm) {
    let warm = policy(algorithm);
    let check = Check {
        name: &PolicyName::from_static("warm"),
        policy: &warm,
        key: "w",
    };
    store.decide(&[check], 1, Mode::Consume).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
}

async fn goes_per_node_and_is_exact(cluster: &RedisCluster, tls: Option<TlsFiles>) {
    let masters = || -> Vec<&RedisNode> {
        cluster
            .nodes()
            .iter()
            .filter(|node| {
                let info = node.query_string(&["INFO", "replication"]).unwrap();
                info_field(&info, "role") == Some("master")
            })
            .collect()
    };
    let limit = 4;
    for algorithm in Algorithm::ALL {
        let options = RedisOptions {
            prefix: format!("cbatch{}", algorithm.name()),
            tls: tls.clone(),
            ..RedisOptions::default()
        };
        let store = RedisStore::connect(&cluster.url(), options).await.unwrap();
        warm_slot_map(&store, algorithm).await;
        let period = if algorithm.has_burst() { 86_400 } else { 3_600 };
        let policy = Policy::new(algorithm, limit, Duration::from_secs(period), None).unwrap();
        let masters = masters();
        assert_eq!(masters.len(), 3);
        let Run {
            outcomes,
            errors,
            calls,
        } = hammer(&masters, &store, &policy, None, Mode::Consume, TASKS).await;
        assert!(errors.is_empty(), "{algorithm:?}: {errors:?}");
        assert_eq!(outcomes.len(), TASKS);
        assert_exact_to(algorithm, &outcomes, ROUNDS as u64, limit);
        // Per slot, nothing would batch (one caller per key and slot at a time): per node,
        // a call carries several.
        let decisions = (TASKS * ROUNDS) as u64;
        assert!(
            calls > 0 && calls * 2 <= decisions,
            "{algorithm:?}: {calls} EVALSHA calls for {decisions} decisions"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_that_fails_in_a_batch_fails_alone() {
    let server = RedisServer::start().unwrap();
    for algorithm in Algorithm::ALL {
        let store = store(&server, &format!("victim{}", algorithm.name())).await;
        let policy = policy(algorithm);
        let victim = "victim";
        let key = store.key(&Check {
            name: &PolicyName::from_static("p"),
            policy: &policy,
            key: victim,
        });
        // Another program's value under the victim's key: a list for the sliding log (whose
        // state is a list), a text value for the others.
        if algorithm == Algorithm::SlidingLog {
            let _: i64 = server.query(&["RPUSH", &key, "1", "2"]).unwrap();
        } else {
            let _: String = server.query(&["SET", &key, "1700000000000000:3"]).unwrap();
        }
        let Run {
            outcomes,
            errors,
            calls,
        } = hammer(
            &[&server],
            &store,
            &policy,
            Some(victim),
            Mode::Consume,
            KEYS,
        )
        .await;
        let decisions = (TASKS * ROUNDS) as u64;
        assert!(calls * 2 <= decisions, "{algorithm:?}: {calls} calls");
        // Half the attempts went to the victim: every one an error naming its key.
        let failed = &errors[victim];
        assert_eq!(failed.len(), TASKS * ROUNDS / 2, "{algorithm:?}");
        assert!(
            failed
                .iter()
                .all(|e| e.contains("malformed") && e.contains(&key)),
            "{algorithm:?}: {:?}",
            failed.first()
        );
        assert_eq!(errors.len(), 1, "{algorithm:?}: {errors:?}");
        // The others, batched with it, decided as ever: the other 320 attempts went to the
        // odd keys, 80 each.
        assert_eq!(outcomes.len(), KEYS / 2, "{algorithm:?}");
        assert_exact(algorithm, &outcomes, (TASKS * ROUNDS / KEYS) as u64);
        // The foreign value is untouched.
        assert_eq!(server.query::<i64>(&["EXISTS", &key]).unwrap(), 1);
    }
}

/// Peeks batch too (the mode goes after every check's arguments): 64 callers peeking at once
/// all see what is left, and nothing is consumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_peeks_share_script_calls_and_consume_nothing() {
    let server = RedisServer::start().unwrap();
    for algorithm in Algorithm::ALL {
        let store = store(&server, &format!("peek{}", algorithm.name())).await;
        let policy = policy(algorithm);
        let keys: Vec<String> = (0..KEYS).map(|k| format!("k{k}")).collect();
        let name_p = PolicyName::from_static("p");
        let check = |key| Check {
            name: &name_p,
            policy: &policy,
            key,
        };
        for key in &keys {
            for _ in 0..3 {
                store.decide(&[check(key)], 1, Mode::Consume).await.unwrap();
            }
        }
        let run = hammer(&[&server], &store, &policy, None, Mode::Peek, KEYS).await;
        assert!(run.errors.is_empty(), "{algorithm:?}: {:?}", run.errors);
        for (remaining, refused) in run.outcomes.values() {
            assert_eq!(*refused, 0, "{algorithm:?}");
            assert!(remaining.iter().all(|&r| r == LIMIT - 3), "{algorithm:?}");
        }
        let decisions = (TASKS * ROUNDS) as u64;
        assert!(
            run.calls * 2 <= decisions,
            "{algorithm:?}: {} calls",
            run.calls
        );
        let after = store
            .decide(&[check(&keys[0])], 1, Mode::Peek)
            .await
            .unwrap();
        assert_eq!(after.decisions[0].remaining, LIMIT - 3, "{algorithm:?}");
    }
}

/// A caller that gives up while its call waits to be batched takes the call back: it never
/// runs (so it cannot land after what its caller does next), and the call ahead of it stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_given_up_while_waiting_is_never_sent() {
    let server = RedisServer::start().unwrap();
    let store = store(&server, "given-up").await;
    let policy = policy(Algorithm::FixedWindow);
    let name_p = PolicyName::from_static("p");
    let check = |key: &'static str| Check {
        name: &name_p,
        policy: &policy,
        key,
    };
    store
        .decide(&[check("warm")], 1, Mode::Consume)
        .await
        .unwrap();
    // Redis frozen: the first call goes out and waits for its reply, the second waits to be
    // batched behind it (fewer than 8 wait: no second command).
    server.pause().unwrap();
    let first_checks = [check("first")];
    let first = store.decide(&first_checks, 1, Mode::Consume);
    tokio::pin!(first);
    // Poll it once: a call is written during its first poll, so it is on the wire now.
    tokio::select! {
        biased;
        _ = &mut first => panic!("answered by a frozen server"),
        () = std::future::ready(()) => {}
    }
    let second = tokio::time::timeout(
        Duration::from_millis(100),
        store.decide(&[check("second")], 1, Mode::Consume),
    )
    .await;
    assert!(second.is_err(), "the second call cannot have been answered");
    server.resume().unwrap();
    let first = first.await.unwrap();
    assert!(first.decisions[0].allowed);
    let exists = |key: &'static str| -> i64 {
        let name = store.key(&check(key));
        server.query(&["EXISTS", &name]).unwrap()
    };
    assert_eq!(exists("first"), 1);
    assert_eq!(exists("second"), 0, "the call given up ran");
    // The connection goes on.
    store
        .decide(&[check("third")], 1, Mode::Consume)
        .await
        .unwrap();
    assert_eq!(exists("third"), 1);
}

/// The script as a batch (several keys, one call) answers what its checks answer as calls of
/// their own, in the same order, byte for byte: on an injected clock, with repeated keys and
/// differing costs, consuming and peeking, one key under an override, for every algorithm.
#[test]
fn a_batch_answers_as_its_checks_one_by_one() {
    let server = RedisServer::start().unwrap();
    let mut connection = server.connection().unwrap();
    // (key, cost): repeats, a cost that cannot fit, a peek between consuming calls.
    let checks: &[(&str, u64)] = &[("a", 1), ("b", 3), ("a", 2), ("a", 40), ("c", 1), ("a", 1)];
    let now_us = 1_700_000_000_123_456u64;
    for algorithm in Algorithm::ALL {
        let policy = Policy::new(algorithm, 5, Duration::from_secs(10), None).unwrap();
        let script = redis::Script::new(RedisStore::script_source(Shape::OnePolicy(algorithm)));
        for (step, mode) in [(0u64, "c"), (1, "p"), (2, "c")] {
            let now = (now_us + step * 700_000).to_string();
            let call = |prefix: &str, checks: &[(&str, u64)]| -> redis::Cmd {
                let mut call = redis::cmd("EVALSHA");
                call.arg(script.get_hash()).arg(2 * checks.len());
                for (key, _) in checks {
                    call.arg(format!("{prefix}:{key}"))
                        .arg(format!("{prefix}:override:{key}"));
                }
                for (_, cost) in checks {
                    call.arg(cost)
                        .arg(policy.limit())
                        .arg(policy.period_us())
                        .arg(policy.capacity());
                }
                call.arg(mode).arg(&now);
                call
            };
            let _: () = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(RedisStore::script_source(Shape::OnePolicy(algorithm)))
                .query::<String>(&mut connection)
                .map(|_| ())
                .unwrap();
            for prefix in ["b", "s"] {
                // "a" is held to 7 per 10 s (so its cost of 40 can never pass).
                let _: i64 = redis::cmd("HSET")
                    .arg(format!("{prefix}{}:override:a", algorithm.name()))
                    .arg(&["algorithm", algorithm.name(), "limit", "7"])
                    .arg(&["period_us", "10000000", "burst", "7"])
                    .query(&mut connection)
                    .unwrap();
            }
            let batched: Vec<u8> = call(&format!("b{}", algorithm.name()), checks)
                .query(&mut connection)
                .unwrap();
            let mut alone = Vec::new();
            for check in checks {
                let reply: Vec<u8> = call(&format!("s{}", algorithm.name()), &[*check])
                    .query(&mut connection)
                    .unwrap();
                alone.extend(reply);
            }
            assert_eq!(batched.len(), 48 * checks.len());
            // The override's limit and period are in every answer for "a".
            assert_eq!(f64::from_le_bytes(batched[32..40].try_into().unwrap()), 7.0);
            assert_eq!(f64::from_le_bytes(batched[40..48].try_into().unwrap()), 1e7);
            assert_eq!(batched, alone, "{algorithm:?} step {step} ({mode})");
        }
    }
}

// ------------------------------------------------------------------------------------------
// Replica acknowledgement (`RedisOptions::replica_ack`): consuming decisions still batch, with
// one `WAIT` behind each batch's script call.
// ------------------------------------------------------------------------------------------

/// Calls of `command` (lower case, as `INFO commandstats` names it: `wait`, `evalsha`) the
/// servers have run so far.
fn command_calls(servers: &[&RedisNode], command: &str) -> u64 {
    let field = format!("cmdstat_{command}");
    servers
        .iter()
        .map(|server| {
            let info = server.query_string(&["INFO", "commandstats"]).unwrap();
            info_field(&info, &field)
                .and_then(|stats| stats.split(',').find_map(|f| f.strip_prefix("calls=")))
                .map_or(0, |calls| calls.parse().unwrap())
        })
        .sum()
}

/// Script calls (`EVALSHA`, those refused with `NOSCRIPT` included, and `EVAL`) the servers have
/// run so far.
fn script_calls(servers: &[&RedisNode]) -> u64 {
    command_calls(servers, "evalsha") + command_calls(servers, "eval")
}

fn acknowledged(prefix: &str, timeout: Duration) -> RedisOptions {
    RedisOptions {
        prefix: prefix.to_owned(),
        replica_ack: Some(ReplicaAck {
            replicas: 1,
            timeout,
        }),
        // Batches wait their turn behind each other's `WAIT` on the one connection.
        response_timeout: Duration::from_secs(5),
        ..RedisOptions::default()
    }
}

/// Every key of `prefix` holds the same value on `master` and on `replica` (`DUMP`: the value
/// without its TTL), and there are `keys` of them. A Cluster replica is read after `READONLY`.
fn replica_holds_everything(master: &RedisNode, replica: &RedisNode, prefix: &str, keys: usize) {
    let names: Vec<String> = master.query(&["KEYS", &format!("{prefix}:*")]).unwrap();
    assert_eq!(names.len(), keys, "{prefix}: {names:?}");
    let mut on_replica = replica.connection().unwrap();
    let info = replica.query_string(&["INFO", "cluster"]).unwrap();
    if info_field(&info, "cluster_enabled") == Some("1") {
        redis::cmd("READONLY").query::<()>(&mut on_replica).unwrap();
    }
    for name in names {
        let there: Option<Vec<u8>> = master.query(&["DUMP", &name]).unwrap();
        let here: Option<Vec<u8>> = redis::cmd("DUMP")
            .arg(&name)
            .query(&mut on_replica)
            .unwrap();
        assert!(there.is_some(), "{name}");
        assert_eq!(there, here, "{name}: the replica lags the master");
    }
}

/// 64 callers on a master with one replica, every algorithm: the decisions share script calls,
/// each with one `WAIT` behind it (far fewer `WAIT`s than decisions), stay exact, and the
/// replica holds every write once all are answered (each was acknowledged before its answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_decisions_batch_with_one_wait_per_batch_and_stay_exact() {
    let (master, replica) = tokio::task::spawn_blocking(RedisServer::start_replicated)
        .await
        .unwrap()
        .unwrap();
    for algorithm in Algorithm::ALL {
        let prefix = format!("ack{}", algorithm.name());
        let options = acknowledged(&prefix, Duration::from_millis(500));
        let store = RedisStore::connect(&master.url(), options).await.unwrap();
        let policy = policy(algorithm);
        let (waits, scripts) = (command_calls(&[&master], "wait"), script_calls(&[&master]));
        let Run {
            outcomes,
            errors,
            calls,
        } = hammer(&[&master], &store, &policy, None, Mode::Consume, KEYS).await;
        let waits = command_calls(&[&master], "wait") - waits;
        let scripts = script_calls(&[&master]) - scripts;
        assert!(errors.is_empty(), "{algorithm:?}: {errors:?}");
        assert_eq!(outcomes.len(), KEYS);
        assert_exact(algorithm, &outcomes, (TASKS * ROUNDS / KEYS) as u64);
        let decisions = (TASKS * ROUNDS) as u64;
        assert!(
            calls > 0 && calls * 2 <= decisions,
            "{algorithm:?}: {calls} EVALSHA calls for {decisions} decisions"
        );
        // One `WAIT` behind each script call (those refused with `NOSCRIPT` and sent again by
        // source included).
        assert_eq!(waits, scripts, "{algorithm:?}: WAIT and script calls");
        replica_holds_everything(&master, &replica, &prefix, KEYS);
    }
}

/// With the replica frozen no `WAIT` is answered in time: in a batch, each decision that wrote
/// fails with `NotReplicated`, as a call alone does (and still counts on the master), while a
/// rejection, which wrote nothing, is answered. Thawed, the replica catches up and batches are
/// acknowledged again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_wait_falls_short_fails_its_writes_and_answers_its_rejections() {
    let (master, replica) = tokio::task::spawn_blocking(RedisServer::start_replicated)
        .await
        .unwrap()
        .unwrap();
    let prefix = "ack-short";
    let wait = Duration::from_millis(100);
    let store = RedisStore::connect(&master.url(), acknowledged(prefix, wait))
        .await
        .unwrap();
    let limit = 4;
    let policy = Policy::new(
        Algorithm::FixedWindow,
        limit,
        Duration::from_secs(3600),
        None,
    )
    .unwrap();
    let name = PolicyName::from_static("p");
    let decide_all = async |tasks: usize| {
        let mut set = tokio::task::JoinSet::new();
        for task in 0..tasks {
            let (store, policy, name) = (store.clone(), policy.clone(), name.clone());
            set.spawn(async move {
                let key = format!("k{}", task % KEYS);
                let check = Check {
                    name: &name,
                    policy: &policy,
                    key: &key,
                };
                (key.clone(), store.decide(&[check], 1, Mode::Consume).await)
            });
        }
        let mut results = Vec::new();
        while let Some(result) = set.join_next().await {
            results.push(result.unwrap());
        }
        results
    };
    // Every key at its limit but one: each key's next decision writes, the ones after are
    // rejected.
    for key in 0..KEYS {
        let check = Check {
            name: &name,
            policy: &policy,
            key: &format!("k{key}"),
        };
        for _ in 0..limit - 1 {
            store.decide(&[check], 1, Mode::Consume).await.unwrap();
        }
    }

    replica.pause().unwrap();
    let (waits, scripts) = (command_calls(&[&master], "wait"), script_calls(&[&master]));
    let results = decide_all(TASKS).await;
    let (waits, scripts) = (
        command_calls(&[&master], "wait") - waits,
        script_calls(&[&master]) - scripts,
    );
    replica.resume().unwrap();

    let (mut not_replicated, mut rejected) = (BTreeMap::<String, u64>::new(), 0);
    for (key, result) in results {
        match result {
            Ok(answer) => {
                assert!(
                    !answer.decisions[0].allowed,
                    "{key}: allowed unacknowledged"
                );
                rejected += 1;
            }
            Err(StoreError::Backend(e)) => {
                assert!(
                    matches!(
                        e.downcast_ref::<RedisStoreError>(),
                        Some(RedisStoreError::NotReplicated {
                            acked: 0,
                            wanted: 1
                        })
                    ),
                    "{key}: {e}"
                );
                *not_replicated.entry(key).or_default() += 1;
            }
            Err(other) => panic!("{key}: {other:?}"),
        }
    }
    // Each key's one write failed unacknowledged; its other attempts were rejections.
    assert_eq!(not_replicated.len(), KEYS, "{not_replicated:?}");
    assert!(
        not_replicated.values().all(|&n| n == 1),
        "{not_replicated:?}"
    );
    assert_eq!(rejected, TASKS - KEYS);
    // They went in batches, one `WAIT` each.
    assert!(
        scripts * 2 <= TASKS as u64 && waits == scripts,
        "{waits} WAIT and {scripts} EVALSHA calls for {TASKS} decisions"
    );
    // The failed writes still counted on the master (at the limit now), and reach the replica
    // once it thaws; then a decision is acknowledged again (a rejection now, as every key is
    // at its limit, and the next window's allowance is far away).
    let peek = Check {
        name: &name,
        policy: &policy,
        key: "k0",
    };
    let answer = store.decide(&[peek], 1, Mode::Peek).await.unwrap();
    assert_eq!(answer.decisions[0].remaining, 0);
    let fresh = Check {
        name: &name,
        policy: &policy,
        key: "fresh",
    };
    let answer = store.decide(&[fresh], 1, Mode::Consume).await.unwrap();
    assert!(answer.decisions[0].allowed);
    replica_holds_everything(&master, &replica, prefix, KEYS + 1);
}

/// On a Cluster with a replica per master, acknowledged decisions batch per node, each node's
/// batch followed by one `WAIT` on that node (the one whose connection took the writes): exact,
/// far fewer `WAIT`s than decisions, every master's replica holding its writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_decisions_on_a_cluster_batch_per_node_and_stay_exact() {
    let cluster = shared_cluster();
    let nodes = |role: &str| -> Vec<&RedisNode> {
        cluster
            .nodes()
            .iter()
            .filter(|node| {
                let info = node.query_string(&["INFO", "replication"]).unwrap();
                info_field(&info, "role") == Some(role)
            })
            .collect()
    };
    let limit = 4;
    for algorithm in [
        Algorithm::FixedWindow,
        Algorithm::Gcra,
        Algorithm::SlidingLog,
    ] {
        let prefix = format!("cack{}", algorithm.name());
        let options = acknowledged(&prefix, Duration::from_millis(500));
        let store = RedisStore::connect(&cluster.url(), options).await.unwrap();
        warm_slot_map(&store, algorithm).await;
        let period = if algorithm.has_burst() { 86_400 } else { 3_600 };
        let policy = Policy::new(algorithm, limit, Duration::from_secs(period), None).unwrap();
        let masters = nodes("master");
        assert_eq!(masters.len(), 3);
        let (waits, scripts) = (command_calls(&masters, "wait"), script_calls(&masters));
        let Run {
            outcomes,
            errors,
            calls,
        } = hammer(&masters, &store, &policy, None, Mode::Consume, TASKS).await;
        let waits = command_calls(&masters, "wait") - waits;
        let scripts = script_calls(&masters) - scripts;
        assert!(errors.is_empty(), "{algorithm:?}: {errors:?}");
        assert_eq!(outcomes.len(), TASKS);
        assert_exact_to(algorithm, &outcomes, ROUNDS as u64, limit);
        let decisions = (TASKS * ROUNDS) as u64;
        assert!(
            calls > 0 && calls * 2 <= decisions,
            "{algorithm:?}: {calls} EVALSHA calls for {decisions} decisions"
        );
        // At most one `WAIT` behind each node's script call, on that node, and far fewer than
        // decisions. (Other tests share this Cluster and run scripts, never `WAIT`: one per
        // script call exactly is checked on a private server above.)
        assert!(
            waits > 0 && waits <= scripts && waits * 2 <= decisions,
            "{algorithm:?}: {waits} WAIT calls for {scripts} script calls and {decisions} decisions"
        );
        // Each master's replica holds that master's keys of this test.
        for master in &masters {
            let port = master.port().to_string();
            let replica = nodes("slave")
                .into_iter()
                .find(|node| {
                    let info = node.query_string(&["INFO", "replication"]).unwrap();
                    info_field(&info, "master_port") == Some(&*port)
                })
                .expect("every master has a replica");
            let keys: Vec<String> = master.query(&["KEYS", &format!("{prefix}:*")]).unwrap();
            replica_holds_everything(master, replica, &prefix, keys.len());
        }
    }
}
