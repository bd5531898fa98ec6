//! A Cluster resharded under load (`redis-cli --cluster reshard`: slots opened, their keys
//! moved with `MIGRATE`, then handed over) while many callers decide on thousands of keys
//! across the slots, batched per node: every decision stays exact, none is lost and none is
//! counted twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tollgate::PolicyName;
use tollgate::{Algorithm, Check, Mode, Policy, Store};
use tollgate_redis::{RedisOptions, RedisStore};
use tollgate_testkit::{RedisCluster, RedisNode, info_field};

/// Callers deciding at once on one store.
const CALLERS: usize = 48;
/// Identifiers they pick from (spread over every slot).
const IDENTIFIERS: u64 = 4_000;
/// Each identifier's quota; no refill while the test runs (a day's period).
const LIMIT: u64 = 8;
/// Slots moved by each of the two reshards (a third of the Cluster's, then back).
const SLOTS_MOVED: u32 = 2_000;

/// A `commandstats` field of `command` summed over `nodes`.
fn command_stat(nodes: &[&RedisNode], command: &str, field: &str) -> u64 {
    nodes
        .iter()
        .map(|node| {
            let info = node.query_string(&["INFO", "commandstats"]).unwrap();
            info_field(&info, &format!("cmdstat_{command}"))
                .and_then(|stats| {
                    stats
                        .split(',')
                        .find_map(|f| f.strip_prefix(&format!("{field}=")))
                })
                .map_or(0, |value| value.parse().unwrap())
        })
        .sum()
}

/// What one identifier's decisions were.
#[derive(Debug, Default)]
struct Seen {
    allowed: u64,
    refused: u64,
    errors: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_under_load_loses_nothing_and_counts_nothing_twice() {
    let cluster = Arc::new(
        tokio::task::spawn_blocking(|| RedisCluster::start().unwrap())
            .await
            .unwrap(),
    );
    let masters = cluster.masters().unwrap();
    assert_eq!(masters.len(), 3);
    let master_nodes: Vec<&RedisNode> = masters.iter().map(|&i| &cluster.nodes()[i]).collect();
    let options = RedisOptions {
        prefix: "reshard".into(),
        ..RedisOptions::default()
    };
    let store = RedisStore::connect(&cluster.url(), options).await.unwrap();
    let policy = Policy::new(Algorithm::Gcra, LIMIT, Duration::from_secs(86_400), None).unwrap();
    let name_p = PolicyName::from_static("p");
    let check = |key| Check {
        name: &name_p,
        policy: &policy,
        key,
    };
    // The first call loads the slot map; from then on calls queue per node.
    store.decide(&[check("warm")], 1, Mode::Peek).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let calls_before = command_stat(&master_nodes, "evalsha", "calls");
    let refused_inside_before = command_stat(&master_nodes, "hgetall", "rejected_calls");

    let done = Arc::new(AtomicBool::new(false));
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..CALLERS {
        let (store, policy, done) = (store.clone(), policy.clone(), done.clone());
        callers.spawn(async move {
            let mut seen: BTreeMap<u64, Seen> = BTreeMap::new();
            // A simple LCG per caller: every caller visits every identifier, in its own order.
            let mut state = caller as u64 * 7_919 + 1;
            while !done.load(Ordering::Relaxed) {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                let id = (state >> 33) % IDENTIFIERS;
                let key = format!("id{id}");
                let check = Check {
                    name: &PolicyName::from_static("p"),
                    policy: &policy,
                    key: &key,
                };
                let entry = seen.entry(id).or_default();
                match store.decide(&[check], 1, Mode::Consume).await {
                    Ok(d) if d.decisions[0].allowed => entry.allowed += 1,
                    Ok(_) => entry.refused += 1,
                    Err(e) => entry.errors.push(e.to_string()),
                }
            }
            seen
        });
    }
    // Two reshards while they run: a third of the slots from the first master to the second,
    // then as many from the second to the third.
    let resharder = cluster.clone();
    let moves = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(300));
        resharder.reshard(masters[0], masters[1], SLOTS_MOVED)?;
        resharder.reshard(masters[1], masters[2], SLOTS_MOVED)
    });
    moves.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    done.store(true, Ordering::Relaxed);

    let mut seen: BTreeMap<u64, Seen> = BTreeMap::new();
    while let Some(caller) = callers.join_next().await {
        for (id, s) in caller.unwrap() {
            let entry = seen.entry(id).or_default();
            entry.allowed += s.allowed;
            entry.refused += s.refused;
            entry.errors.extend(s.errors);
        }
    }
    let decisions: u64 = seen.values().map(|s| s.allowed + s.refused).sum();
    let errors: Vec<(u64, &String)> = seen
        .iter()
        .flat_map(|(id, s)| s.errors.iter().map(move |e| (*id, e)))
        .collect();
    assert!(
        errors.is_empty(),
        "{} errors: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    // Every identifier was allowed exactly as often as its quota lets: a decision lost (its
    // write gone with a moved slot) would allow one more, one counted twice one fewer.
    for (id, s) in &seen {
        let attempts = s.allowed + s.refused;
        assert_eq!(s.allowed, attempts.min(LIMIT), "id{id}: {s:?}");
    }
    // And the state in Redis, wherever its slot went, agrees.
    for (id, s) in &seen {
        let key = format!("id{id}");
        let checks = [Check {
            name: &PolicyName::from_static("p"),
            policy: &policy,
            key: &key,
        }];
        let peek = store.decide(&checks, 1, Mode::Peek).await.unwrap();
        assert_eq!(peek.decisions[0].remaining, LIMIT - s.allowed, "id{id}");
    }
    // The decisions went in node batches, and some of their checks met a slot that was
    // moving or gone (refused inside the script, at its first read, then sent again alone).
    let calls = command_stat(&master_nodes, "evalsha", "calls") - calls_before;
    assert!(
        calls * 2 <= decisions,
        "{calls} EVALSHA calls for {decisions} decisions"
    );
    let refused_inside =
        command_stat(&master_nodes, "hgetall", "rejected_calls") - refused_inside_before;
    assert!(refused_inside > 0, "no check met a moved slot in a batch");
    eprintln!(
        "{decisions} decisions in {calls} EVALSHA calls over {} identifiers; \
         {refused_inside} checks refused in a batch by a node that no longer (or not yet) served their slot",
        seen.len()
    );
}
