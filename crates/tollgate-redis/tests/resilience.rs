//! Fault injection against real Redis processes: the resilience layer ([`Resilient`]) in front of
//! a [`RedisStore`] while Redis is frozen (SIGSTOP), killed and restarted, failed over by Sentinel
//! or loses a Cluster master under load; and the over-limit cache in front of a flood.
//!
//! Each test starts the topology it breaks (a test that freezes or kills a server cannot share
//! it). `docs/resilience.md` states the guarantees these tests check.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tollgate::PolicyName;
use tollgate::resilience::{BreakerConfig, BreakerState};
use tollgate::{
    Algorithm, Check, LeaseId, LeaseOp, Limiter, Mode, OnError, Policy, ResilienceConfig,
    Resilient, Store, StoreDecision, StoreError, Verdict,
};
use tollgate_redis::{RedisOptions, RedisStore, RedisStoreError, ReplicaAck};
use tollgate_testkit::{RedisCluster, RedisNode, RedisSentinel, RedisServer, info_field};

/// The store timeout under test (the default).
const TIMEOUT: Duration = Duration::from_millis(50);

/// What a decision may take beyond the timeout on this shared, loaded machine.
const MARGIN: Duration = Duration::from_millis(100);

/// Consecutive failures that open the breaker (the default).
const THRESHOLD: u32 = 5;

/// The tests that time single decisions hold this exclusively; those that burn CPU (the flood,
/// starting Sentinel and Cluster topologies) share it. Timing bounds then measure the code, not
/// the test binary's own load on a 2-core machine.
static CPU: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn options(prefix: &str) -> RedisOptions {
    RedisOptions {
        prefix: prefix.into(),
        connect_timeout: Duration::from_millis(500),
        response_timeout: Duration::from_secs(1),
        ..RedisOptions::default()
    }
}

fn resilience(on_error: OnError, instances: u32) -> ResilienceConfig {
    ResilienceConfig {
        timeout: TIMEOUT,
        on_error,
        instances,
        breaker: BreakerConfig {
            failure_threshold: THRESHOLD,
            probe_interval: Duration::from_secs(1),
        },
        ..ResilienceConfig::default()
    }
}

fn per_hour(algorithm: Algorithm, limit: u64) -> Policy {
    Policy::new(algorithm, limit, Duration::from_secs(3600), None).unwrap()
}

async fn check<S: Store>(limiter: &Limiter<S>, key: &str) -> Verdict {
    limiter.check_all(&["p"], key, 1).await.unwrap()
}

/// One decision, timed.
async fn timed_check<S: Store>(limiter: &Limiter<S>, key: &str) -> (Verdict, Duration) {
    let started = Instant::now();
    let verdict = check(limiter, key).await;
    (verdict, started.elapsed())
}

/// Decide every 20 ms until a decision is made by Redis again; returns it and how long it took.
async fn until_not_degraded<S: Store>(
    limiter: &Limiter<Resilient<S>>,
    key: &str,
    within: Duration,
) -> (Verdict, Duration) {
    let started = Instant::now();
    loop {
        let verdict = check(limiter, key).await;
        if !verdict.degraded {
            return (verdict, started.elapsed());
        }
        assert!(
            started.elapsed() < within,
            "still degraded after {within:?} (breaker {:?})",
            limiter.store().breaker().state()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The count a fixed-window key holds (window and count, two little-endian doubles), 0 when
/// absent.
fn stored_count(node: &RedisNode, key: &str) -> u64 {
    let value: Option<Vec<u8>> = node.query(&["GET", key]).unwrap();
    value.map_or(0, |v| {
        let count: [u8; 8] = v[8..16].try_into().expect("window, count");
        f64::from_le_bytes(count) as u64
    })
}

/// Store calls that failed or timed out.
fn failed_calls<S: Store>(resilient: &Resilient<S>) -> u64 {
    let stats = resilient.stats();
    stats.timeouts.get() + stats.store_errors.get()
}

// ------------------------------------------------------------------------------------------
// Redis frozen with SIGSTOP, and the breaker state `/ready` reports meanwhile.
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_is_decided_by_policy_within_the_timeout_then_used_again() {
    let _timing = CPU.write().await;
    let server = RedisServer::start().unwrap();
    let store = RedisStore::connect(&server.url(), options("frozen"))
        .await
        .unwrap();
    let policy = per_hour(Algorithm::FixedWindow, 10);
    // Three limiters on one connection, one per failure policy (`local` as one of 2 instances).
    let limiters: Vec<(OnError, Limiter<Resilient<RedisStore>>)> =
        [(OnError::Deny, 1), (OnError::Allow, 1), (OnError::Local, 2)]
            .into_iter()
            .map(|(on_error, instances)| {
                let resilient = Resilient::new(store.clone(), resilience(on_error, instances));
                let limiter = Limiter::new(resilient)
                    .with_policy("p", policy.clone())
                    .unwrap();
                (on_error, limiter)
            })
            .collect();
    // A fourth one with a long timeout and a breaker that opens at the first failure, to watch
    // the breaker half-open while its probe hangs.
    let watched = Limiter::new(Resilient::new(
        store.clone(),
        ResilienceConfig {
            timeout: Duration::from_millis(400),
            on_error: OnError::Deny,
            breaker: BreakerConfig {
                failure_threshold: 1,
                probe_interval: Duration::from_secs(1),
            },
            ..ResilienceConfig::default()
        },
    ))
    .with_policy("p", policy.clone())
    .unwrap();
    for (on_error, limiter) in &limiters {
        let (v, _) = timed_check(limiter, on_error.name()).await;
        assert!(v.allowed() && !v.degraded, "{on_error:?}: {v:?}");
    }
    assert!(!check(&watched, "watched").await.degraded);

    server.pause().unwrap();

    for (on_error, limiter) in &limiters {
        let key = on_error.name();
        let resilient = limiter.store();
        let mut allowed = 0;
        for i in 0..20 {
            let (v, took) = timed_check(limiter, key).await;
            assert!(
                took < TIMEOUT + MARGIN,
                "{on_error:?} decision {i} took {took:?}"
            );
            assert!(v.degraded, "{on_error:?} decision {i}: {v:?}");
            match on_error {
                OnError::Deny => assert!(!v.allowed() && v.decision.retry_after_us > 0),
                OnError::Allow => assert!(v.allowed()),
                OnError::Local => {}
            }
            allowed += usize::from(v.allowed());
        }
        if *on_error == OnError::Local {
            // Exactly this instance's share (10 / 2) on the local store.
            assert_eq!(allowed, 5);
        }
        // The first THRESHOLD calls waited for the timeout; then the breaker opened.
        assert_eq!(resilient.breaker().state(), BreakerState::Open);
        assert_eq!(resilient.stats().timeouts.get(), u64::from(THRESHOLD));

        // Open: decisions are immediate, and the store is not called (at most one probe, if
        // one fell due meanwhile). 200 waits for the timeout would take 10 s.
        let calls = failed_calls(resilient);
        let started = Instant::now();
        for _ in 0..200 {
            let (v, took) = timed_check(limiter, key).await;
            assert!(v.degraded && took < TIMEOUT + MARGIN);
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        let probes = failed_calls(resilient) - calls;
        assert!(probes <= 1, "{probes} store calls while open");
        assert_eq!(resilient.stats().degraded.get(), 220);
    }

    // What `/ready` reports: open while Redis is frozen, half-open while a probe is in flight.
    let resilient = watched.store().clone();
    assert!(check(&watched, "watched").await.degraded);
    assert_eq!(resilient.breaker().state(), BreakerState::Open);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let probe = tokio::spawn({
        let watched = watched.clone();
        async move { check(&watched, "watched").await }
    });
    let started = Instant::now();
    while resilient.breaker().state() != BreakerState::HalfOpen {
        assert!(
            started.elapsed() < Duration::from_millis(300),
            "the probe never started"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Meanwhile everyone else is decided at once, without the store.
    let (v, took) = timed_check(&watched, "watched").await;
    assert!(v.degraded && took < MARGIN, "{took:?}");
    assert!(probe.await.unwrap().degraded);
    assert_eq!(resilient.breaker().state(), BreakerState::Open);

    server.resume().unwrap();

    // Within about a probe interval every limiter is back on Redis, with no restart.
    for (on_error, limiter) in &limiters {
        let (v, took) = until_not_degraded(limiter, on_error.name(), Duration::from_secs(5)).await;
        println!("{on_error:?}: back on Redis {took:?} after SIGCONT");
        assert!(took < Duration::from_millis(2500), "{on_error:?}: {took:?}");
        assert_eq!(limiter.store().breaker().state(), BreakerState::Closed);
        assert!(!v.degraded);
    }
    // Calls that timed out were not taken back: Redis may have run them when it thawed. So the
    // count holds the decisions Redis answered, plus at most the timed-out ones.
    let limiter = &limiters[0].1;
    let key = limiter.store().inner().key(&Check {
        name: &PolicyName::from_static("p"),
        policy: &policy,
        key: "deny",
    });
    let answered = 2;
    let timed_out = limiter.store().stats().timeouts.get();
    let count = stored_count(&server, &key);
    println!(
        "deny key: count {count} in Redis for {answered} answered and {timed_out} timed-out calls"
    );
    assert!(
        (answered..=answered + timed_out).contains(&count),
        "count {count}, answered {answered}, timed out {timed_out}"
    );
}

// ------------------------------------------------------------------------------------------
// Redis killed and restarted on the same port.
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_restarted_redis_is_used_again_by_the_same_limiter() {
    let _timing = CPU.write().await;
    let server = RedisServer::start().unwrap();
    let store = RedisStore::connect(&server.url(), options("restart"))
        .await
        .unwrap();
    let limiter = Limiter::new(Resilient::new(store, resilience(OnError::Deny, 1)))
        .with_policy("p", per_hour(Algorithm::SlidingLog, 5))
        .unwrap();
    for remaining in [4, 3, 2] {
        let v = check(&limiter, "k").await;
        assert!(v.allowed() && !v.degraded);
        assert_eq!(v.decision.remaining, remaining);
    }

    server.kill();
    for i in 0..10 {
        let (v, took) = timed_check(&limiter, "k").await;
        assert!(v.degraded && !v.allowed(), "decision {i}: {v:?}");
        assert!(took < TIMEOUT + MARGIN, "decision {i} took {took:?}");
    }
    assert_eq!(limiter.store().breaker().state(), BreakerState::Open);

    server.restart().unwrap();
    // No request arrives (a load balancer took the instance out of rotation): the readiness
    // check's PING is the probe that finds Redis back. (Spawned: it must be Send for a server.)
    let readiness = limiter.clone();
    let took = tokio::spawn(async move {
        let started = Instant::now();
        loop {
            let resilient = readiness.store();
            // Not ready while open, or after a probe that found the client still reconnecting.
            if resilient
                .ready(async |redis| redis.ping().await)
                .await
                .is_ok()
            {
                return started.elapsed();
            }
            assert!(started.elapsed() < Duration::from_secs(5), "never ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    println!("ready {took:?} after the restart");
    assert!(took < Duration::from_millis(2500), "{took:?}");
    assert_eq!(limiter.store().breaker().state(), BreakerState::Closed);
    // The server kept nothing on disk: the limit starts over, and is exact again.
    let v = check(&limiter, "k").await;
    assert!(v.allowed() && !v.degraded);
    assert_eq!(v.decision.remaining, 4);
    for remaining in [3, 2, 1, 0] {
        let v = check(&limiter, "k").await;
        assert!(v.allowed() && !v.degraded);
        assert_eq!(v.decision.remaining, remaining);
    }
    for _ in 0..3 {
        let v = check(&limiter, "k").await;
        assert!(!v.allowed() && !v.degraded);
    }
}

// ------------------------------------------------------------------------------------------
// Replica acknowledgement (`ReplicaAck`) on a master and its replica.
// ------------------------------------------------------------------------------------------

/// The replicas a write reached and those it wanted, of a call that failed for want of them
/// (`NotReplicated`); any other outcome fails the test.
fn not_replicated(result: Result<(), StoreError>) -> (u32, u32) {
    match result {
        Err(StoreError::Backend(e)) => match e.downcast_ref::<RedisStoreError>() {
            Some(RedisStoreError::NotReplicated { acked, wanted }) => (*acked, *wanted),
            _ => panic!("expected NotReplicated, got {e}"),
        },
        other => panic!("expected NotReplicated, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_decision_is_on_the_replica_when_it_is_answered() {
    let _busy = CPU.read().await;
    // Nothing else runs yet: waiting on this thread blocks no one.
    let (master, replica) = RedisServer::start_replicated().unwrap();
    // A long wait (the replica shares two cores with the rest of this binary), under the
    // client's 1 s response timeout.
    let wait = Duration::from_millis(500);
    let options = RedisOptions {
        replica_ack: Some(ReplicaAck {
            replicas: 1,
            timeout: wait,
        }),
        ..options("ack")
    };
    let store = RedisStore::connect(&master.url(), options).await.unwrap();
    let policy = per_hour(Algorithm::FixedWindow, 1000);
    let checks = [Check {
        name: &PolicyName::from_static("p"),
        policy: &policy,
        key: "k",
    }];
    let key = store.key(&checks[0]);
    let started = Instant::now();

    // Each answered decision is already on the replica: read it there at once.
    for count in 1..=20 {
        let answer = store
            .decide(&checks, 1, Mode::Consume)
            .await
            .unwrap_or_else(|e| panic!("decision {count} after {:?}: {e}", started.elapsed()));
        assert_eq!(answer.decisions[0].remaining, 1000 - count);
        assert_eq!(stored_count(&replica, &key), count);
        if count == 10 {
            // A node without the script (restarted, newly promoted) is sent its source.
            let _: String = master.query(&["SCRIPT", "FLUSH"]).unwrap();
        }
    }

    // With the replica frozen, a write cannot be acknowledged: the decision fails, and says so.
    replica.pause().unwrap();
    let started = Instant::now();
    let refused = store.decide(&checks, 1, Mode::Consume).await;
    let took = started.elapsed();
    let peek = store.decide(&checks, 1, Mode::Peek).await;
    replica.resume().unwrap();
    assert_eq!(not_replicated(refused.map(|_| ())), (0, 1));
    assert!(took >= wait, "{took:?}");
    // It still counted on the master (it will reach the replica once it thaws); a peek writes
    // nothing, so it needs no acknowledgement.
    assert_eq!(stored_count(&master, &key), 21);
    assert_eq!(peek.unwrap().decisions[0].remaining, 1000 - 21);
    let answer = store.decide(&checks, 1, Mode::Consume).await.unwrap();
    assert_eq!(answer.decisions[0].remaining, 1000 - 22);
    assert_eq!(stored_count(&replica, &key), 22);

    // Leases follow the same rule: a granted acquire is on the replica when answered; with the
    // replica frozen an acquire fails (and still holds its unit on the master), while a release
    // waits for no replica.
    let jobs = Policy::concurrency(5, Duration::from_secs(60)).unwrap();
    let lease_check = Check {
        name: &PolicyName::from_static("jobs"),
        policy: &jobs,
        key: "k",
    };
    let lease_key = store.key(&lease_check);
    let held_on = |node: &RedisNode| -> i64 { node.query(&["ZCARD", &lease_key]).unwrap() };
    let first = LeaseId::new(1);
    let granted = store
        .lease(lease_check, LeaseOp::Acquire(first))
        .await
        .unwrap();
    assert!(granted.decision.allowed);
    assert_eq!(held_on(&replica), 1);
    replica.pause().unwrap();
    let refused = store
        .lease(lease_check, LeaseOp::Acquire(LeaseId::new(1)))
        .await;
    let released = store.lease(lease_check, LeaseOp::Release(first)).await;
    replica.resume().unwrap();
    not_replicated(refused.map(|_| ()));
    assert!(
        released.unwrap().decision.allowed,
        "a release waits for no replica"
    );
    assert_eq!(
        held_on(&master),
        1,
        "the unacknowledged lease, until it expires"
    );

    // An adjustment always writes: it is acknowledged, or it fails.
    let charged = store.adjust(checks[0], 5).await.unwrap();
    assert_eq!(
        charged.remaining,
        1000 - 22 - 5,
        "a look at the key after the charge"
    );
    assert_eq!(stored_count(&replica, &key), 27);
    replica.pause().unwrap();
    let unacknowledged = store.adjust(checks[0], 5).await;
    replica.resume().unwrap();
    not_replicated(unacknowledged.map(|_| ()));
}

// ------------------------------------------------------------------------------------------
// A flood on an over-limit key.
// ------------------------------------------------------------------------------------------

/// Script calls the server has run (`EVALSHA` and `EVAL`).
fn script_calls(node: &RedisNode) -> u64 {
    let stats = node.query_string(&["INFO", "commandstats"]).unwrap();
    ["cmdstat_evalsha", "cmdstat_eval"]
        .iter()
        .filter_map(|name| info_field(&stats, name))
        .map(|fields| {
            let calls = fields
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))
                .unwrap();
            calls.parse::<u64>().unwrap()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_on_an_over_limit_key_costs_under_100_redis_calls_for_every_algorithm() {
    let _busy = CPU.read().await;
    const LIMIT: u64 = 10;
    const FLOOD: u64 = 100_000;
    // Its own server, so that nothing else moves its command counters.
    let server = RedisServer::start().unwrap();
    let store = RedisStore::connect(&server.url(), options("flood"))
        .await
        .unwrap();
    for algorithm in [
        Algorithm::FixedWindow,
        Algorithm::SlidingLog,
        Algorithm::SlidingWindow,
        Algorithm::TokenBucket,
        Algorithm::Gcra,
    ] {
        // A generous timeout: what is measured here is the number of calls, and a call that
        // timed out on this loaded machine would be decided without Redis.
        let config = ResilienceConfig {
            timeout: Duration::from_secs(1),
            ..ResilienceConfig::default()
        };
        let limiter = Limiter::new(Resilient::new(store.clone(), config))
            .with_policy("p", per_hour(algorithm, LIMIT))
            .unwrap();
        let before = script_calls(&server);
        let started = Instant::now();
        for i in 0..FLOOD {
            let v = check(&limiter, "hot").await;
            assert!(!v.degraded, "{algorithm} check {i}");
            assert_eq!(v.allowed(), i < LIMIT, "{algorithm} check {i}: {v:?}");
        }
        let calls = script_calls(&server) - before;
        let hits = limiter.store().stats().cache_hits.get();
        println!(
            "flood {algorithm}: {FLOOD} checks, {calls} Redis script calls, {hits} cache hits, {:?}",
            started.elapsed()
        );
        assert!(calls < 100, "{algorithm}: {calls} Redis calls");
        // Redis decided the allowed ones and the first rejection of each second (a cached
        // rejection answers for at most a second, `MAX_ANSWERING_US`); the cache all the
        // others. Redis counts one more call for the first, refused with NOSCRIPT and sent
        // again.
        let by_redis = calls - 1;
        assert!(by_redis > LIMIT, "{algorithm}: {calls} calls");
        assert_eq!(hits, FLOOD - by_redis, "{algorithm}: {calls} calls");
    }
}

// ------------------------------------------------------------------------------------------
// Failover under load: Sentinel, and a Cluster master killed.
// ------------------------------------------------------------------------------------------

/// What became of one store call, as the caller saw it.
#[derive(Debug, Clone, Copy)]
enum Call {
    /// Redis answered (and, with replica acknowledgement, a replica holds the write).
    Answered { allowed: bool, remaining: u64 },
    /// Nothing ran: the connection was refused, or Redis refused before running the script.
    NotRun,
    /// It may or may not have counted: the connection broke after sending, the caller's timeout
    /// dropped it, or it wrote but was not acknowledged by a replica in time.
    Unknown,
}

/// The real Redis store, with a log of every call's outcome per identifier.
struct Observed {
    inner: RedisStore,
    log: Mutex<HashMap<String, Vec<Call>>>,
}

impl Observed {
    fn record(&self, key: &str, call: Call) {
        self.log
            .lock()
            .unwrap()
            .entry(key.to_owned())
            .or_default()
            .push(call);
    }
}

/// Records `Unknown` if the call's future is dropped before it finishes.
struct InFlight<'a> {
    store: &'a Observed,
    key: &'a str,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.store.record(self.key, Call::Unknown);
    }
}

/// Whether a failed call certainly did not run the script.
fn not_run(error: &StoreError) -> bool {
    let StoreError::Backend(source) = error else {
        return false;
    };
    let Some(e) = source.downcast_ref::<redis::RedisError>() else {
        return false;
    };
    use redis::{ErrorKind, ServerErrorKind};
    e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::MasterNameNotFoundBySentinel
                | ErrorKind::Server(
                    ServerErrorKind::ClusterDown
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                        | ServerErrorKind::Moved
                        | ServerErrorKind::Ask
                        | ServerErrorKind::BusyLoading
                )
        )
}

impl Store for Observed {
    async fn decide(
        &self,
        checks: &[Check<'_>],
        cost: u64,
        mode: Mode,
    ) -> Result<StoreDecision, StoreError> {
        let key = checks[0].key;
        let in_flight = InFlight { store: self, key };
        let result = self.inner.decide(checks, cost, mode).await;
        std::mem::forget(in_flight);
        let call = match &result {
            Ok(answer) => Call::Answered {
                allowed: answer.decisions[0].allowed,
                remaining: answer.decisions[0].remaining,
            },
            Err(e) if not_run(e) => Call::NotRun,
            // Among them a write that no replica acknowledged in time (`NotReplicated`): it
            // counts on the master, and stays counted unless that master dies before a replica
            // has it.
            Err(_) => Call::Unknown,
        };
        self.record(key, call);
        result
    }

    async fn reset(&self, checks: &[Check<'_>]) -> Result<(), StoreError> {
        self.inner.reset(checks).await
    }
}

/// A limit no load here comes near, over a window that does not roll during the test.
const HUGE: u64 = 1_000_000_000;

fn counting_policy() -> Policy {
    let ten_years = Duration::from_secs(10 * 365 * 24 * 3600);
    Policy::new(Algorithm::FixedWindow, HUGE, ten_years, None).unwrap()
}

/// Identifiers loaded in parallel, each by its own sequential task.
const KEYS: [&str; 4] = ["load-0", "load-1", "load-2", "load-3"];

/// What one load task saw.
#[derive(Debug, Default)]
struct Tally {
    /// Allowed and not degraded: Redis counted these, and a replica holds them.
    acked: u64,
    /// Decided without Redis.
    degraded: u64,
}

/// Tasks deciding in a loop until told to stop (or until a bound on decisions).
struct LoadRun {
    limiter: Limiter<Resilient<Observed>>,
    acked: Vec<Arc<AtomicU64>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
}

impl LoadRun {
    fn start(store: RedisStore) -> LoadRun {
        let observed = Observed {
            inner: store,
            log: Mutex::new(HashMap::new()),
        };
        // The failover is under test, not the timeout: twice the default spares this loaded
        // machine most timeouts of healthy calls (each would be a call of unknown outcome).
        let config = ResilienceConfig {
            timeout: 2 * TIMEOUT,
            ..resilience(OnError::Local, 1)
        };
        let limiter = Limiter::new(Resilient::new(observed, config))
            .with_policy("p", counting_policy())
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Vec<Arc<AtomicU64>> = KEYS.iter().map(|_| Arc::default()).collect();
        let tasks = KEYS
            .iter()
            .zip(&acked)
            .map(|(key, acked)| {
                let (limiter, stop, acked) = (limiter.clone(), stop.clone(), acked.clone());
                tokio::spawn(async move {
                    let mut tally = Tally::default();
                    // Bounded, whatever happens: about 100 s at most.
                    for _ in 0..50_000 {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let v = check(&limiter, key).await;
                        if v.degraded {
                            tally.degraded += 1;
                        } else {
                            assert!(v.allowed(), "{v:?}");
                            tally.acked += 1;
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    tally
                })
            })
            .collect();
        LoadRun {
            limiter,
            acked,
            stop,
            tasks,
        }
    }

    fn resilient(&self) -> &Resilient<Observed> {
        self.limiter.store()
    }

    /// Wait until every task has had `more` decisions answered by Redis from now on.
    async fn wait_answered(&self, more: u64, within: Duration) {
        let targets: Vec<u64> = self
            .acked
            .iter()
            .map(|a| a.load(Ordering::SeqCst) + more)
            .collect();
        let started = Instant::now();
        while self
            .acked
            .iter()
            .zip(&targets)
            .any(|(a, t)| a.load(Ordering::SeqCst) < *t)
        {
            assert!(
                started.elapsed() < within,
                "Redis did not answer {more} more decisions per key within {within:?} (breaker {:?})",
                self.resilient().breaker().state()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) -> (Limiter<Resilient<Observed>>, Vec<Tally>) {
        self.stop.store(true, Ordering::SeqCst);
        let mut tallies = Vec::new();
        for task in self.tasks {
            tallies.push(task.await.expect("a load task panicked"));
        }
        (self.limiter, tallies)
    }

    /// The Redis key of an identifier's counter.
    fn redis_key(limiter: &Limiter<Resilient<Observed>>, id: &str) -> String {
        let policy = counting_policy();
        limiter.store().inner().inner.key(&Check {
            name: &PolicyName::from_static("p"),
            policy: &policy,
            key: id,
        })
    }
}

/// How one run's decisions compare with the counts Redis holds.
#[derive(Debug, Default)]
struct Audit {
    /// Sum of the counts in Redis at the end.
    total: u64,
    /// Calls Redis answered (each a non-degraded allowed decision).
    answered: u64,
    /// Counted in Redis without an answer: calls of unknown outcome that did run.
    unanswered: u64,
    /// Calls of unknown outcome.
    unknown: u64,
    /// Answered (acknowledged) increments that Redis no longer holds.
    lost: u64,
    /// Increments no call can account for: a call counted twice.
    doubled: u64,
}

impl Audit {
    /// Redis answered `count` after `last`, with `unknown` calls of unknown outcome between.
    fn settle(&mut self, count: u64, last: u64, unknown: u64) {
        if count <= last {
            self.lost += last - count + 1;
        } else {
            let unaccounted = count - last - 1;
            self.unanswered += unaccounted.min(unknown);
            self.doubled += unaccounted.saturating_sub(unknown);
        }
    }
}

/// Match each identifier's log of calls against the count Redis holds at the end.
///
/// Every script call adds exactly one to its identifier's count, so the counts Redis answered
/// for one identifier must rise strictly: a repeated or smaller count means acknowledged
/// increments were lost. A rise of more than one must be covered by calls of unknown outcome
/// since the previous answer: anything more was counted twice. The same holds between the last
/// answer and the count Redis holds at the end.
fn audit(log: &HashMap<String, Vec<Call>>, counts: &HashMap<String, u64>) -> Audit {
    let mut audit = Audit::default();
    for id in KEYS {
        let calls = log.get(id).map_or(&[][..], Vec::as_slice);
        let (mut last, mut unknown) = (0u64, 0u64);
        for (i, call) in calls.iter().enumerate() {
            match *call {
                Call::Answered { allowed, remaining } => {
                    assert!(allowed, "{id} call {i} rejected under a limit of {HUGE}");
                    let count = HUGE - remaining;
                    audit.settle(count, last, unknown);
                    audit.answered += 1;
                    last = count;
                    unknown = 0;
                }
                Call::NotRun => {}
                Call::Unknown => {
                    unknown += 1;
                    audit.unknown += 1;
                }
            }
        }
        // The end is like one more answer, one above what Redis holds.
        let count = counts[id];
        audit.settle(count + 1, last, unknown);
        audit.total += count;
    }
    audit
}

/// Stop the load, read the counts with `count_of`, and compare them with the decisions.
async fn stop_and_audit(run: LoadRun, count_of: &impl Fn(&str) -> u64) -> (Audit, u64) {
    // Recovery is shown by the decisions Redis answered after the fault (only a closed breaker,
    // or its successful probe, lets a call through); a burst of timeouts on this loaded machine
    // may have opened it again since.
    let (limiter, tallies) = run.stop().await;
    let resilient = limiter.store();
    let counts: HashMap<String, u64> = KEYS
        .iter()
        .map(|id| (id.to_string(), count_of(&LoadRun::redis_key(&limiter, id))))
        .collect();
    let log = resilient.inner().log.lock().unwrap().clone();
    let audit = audit(&log, &counts);
    let acked: u64 = tallies.iter().map(|t| t.acked).sum();
    let degraded: u64 = tallies.iter().map(|t| t.degraded).sum();
    assert_eq!(
        audit.answered, acked,
        "each non-degraded allowed decision is one answered call"
    );
    println!(
        "{}: count in Redis {} for {acked} non-degraded allowed decisions; {} counted without an \
         answer (of {} calls of unknown outcome), {} lost, {} counted twice; {degraded} degraded \
         decisions; breaker opened {} times",
        resilient.inner().inner.prefix(),
        audit.total,
        audit.unanswered,
        audit.unknown,
        audit.lost,
        audit.doubled,
        resilient.breaker().times_opened()
    );
    (audit, degraded)
}

/// The two runs of a failover test: one whose writes replicas acknowledge, and a control
/// without acknowledgement that shows what the same failover does to unacknowledged writes.
struct Runs {
    acknowledged: LoadRun,
    control: LoadRun,
}

impl Runs {
    async fn start(url: &str) -> Runs {
        let options = RedisOptions {
            replica_ack: Some(ReplicaAck {
                replicas: 1,
                timeout: Duration::from_millis(25),
            }),
            ..options("acknowledged")
        };
        let acknowledged = RedisStore::connect(url, options).await.unwrap();
        let control = RedisStore::connect(url, self::options("control"))
            .await
            .unwrap();
        Runs {
            acknowledged: LoadRun::start(acknowledged),
            control: LoadRun::start(control),
        }
    }

    async fn wait_answered(&self, more: u64, within: Duration) {
        self.acknowledged.wait_answered(more, within).await;
        self.control.wait_answered(more, within).await;
    }

    /// Stop both, then check: with acknowledgement the count in Redis is exactly the
    /// non-degraded allowed decisions plus calls of unknown outcome that ran (none lost, none
    /// counted twice); without, the same failover lost acknowledged increments.
    async fn stop_and_check(self, count_of: impl Fn(&str) -> u64) {
        let breaker_opened = self.acknowledged.resilient().breaker().times_opened();
        let (acknowledged, degraded) = stop_and_audit(self.acknowledged, &count_of).await;
        let (control, _) = stop_and_audit(self.control, &count_of).await;
        assert!(
            breaker_opened >= 1 && degraded > 0,
            "the fault was not felt"
        );
        assert_eq!(acknowledged.lost, 0, "{acknowledged:?}");
        assert_eq!(acknowledged.doubled, 0, "{acknowledged:?}");
        assert_eq!(
            acknowledged.total,
            acknowledged.answered + acknowledged.unanswered
        );
        assert!(
            control.lost > 0,
            "the control lost nothing: the failover did not test replication ({control:?})"
        );
    }
}

/// Cut a replica off just before its master dies, so that the master's last writes never
/// reach it: freeze the replica (it cannot reconnect), close the master's link to it, let the
/// load run on the master alone for a moment, kill the master, thaw the replica.
fn cut_off_then_kill(master: &RedisNode, replica: &RedisNode) {
    replica.pause().unwrap();
    let killed: i64 = master
        .query(&["CLIENT", "KILL", "TYPE", "replica"])
        .unwrap();
    assert_eq!(killed, 1);
    std::thread::sleep(Duration::from_millis(200));
    master.kill();
    replica.resume().unwrap();
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

fn wait_synced(replica: &RedisNode) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = replica
            .query_string(&["INFO", "replication"])
            .unwrap_or_default();
        if info_field(&info, "master_link_status") == Some("up") {
            return;
        }
        assert!(Instant::now() < deadline, "the replica never synced");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_under_load_loses_nothing_and_counts_nothing_twice() {
    let _busy = CPU.read().await;
    let deployment = Arc::new(blocking(|| RedisSentinel::start().unwrap()).await);
    let runs = Runs::start(&deployment.url()).await;
    runs.wait_answered(30, Duration::from_secs(10)).await;

    // The master dies mid-load with its replica behind; Sentinel promotes the replica. The old
    // master comes back empty as the new master's replica (as an operator or Sentinel would make
    // it), so that writes are acknowledged again.
    let new = blocking({
        let deployment = deployment.clone();
        move || {
            let old = deployment.master_index().unwrap();
            let nodes = deployment.data_nodes();
            cut_off_then_kill(&nodes[old], &nodes[1 - old]);
            let new = deployment.wait_failover(old).unwrap();
            nodes[old].restart().unwrap();
            let port = nodes[new].port().to_string();
            let _: String = nodes[old]
                .query(&["REPLICAOF", "127.0.0.1", &port])
                .unwrap();
            wait_synced(&nodes[old]);
            new
        }
    })
    .await;
    runs.wait_answered(30, Duration::from_secs(20)).await;

    let master = &deployment.data_nodes()[new];
    runs.stop_and_check(|key| stored_count(master, key)).await;
}

/// The index of the running replica of the Cluster node at `master`.
fn replica_of(cluster: &RedisCluster, master: usize) -> usize {
    let port = cluster.nodes()[master].port().to_string();
    cluster
        .nodes()
        .iter()
        .position(|node| {
            let info = node.query_string(&["INFO", "replication"]).unwrap();
            info_field(&info, "role") == Some("slave")
                && info_field(&info, "master_port") == Some(&*port)
        })
        .expect("every master has a replica")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_master_killed_under_load_loses_nothing_and_counts_nothing_twice() {
    let _busy = CPU.read().await;
    let cluster = Arc::new(blocking(|| RedisCluster::start().unwrap()).await);
    let runs = Runs::start(&cluster.url()).await;
    runs.wait_answered(30, Duration::from_secs(10)).await;

    // The master of the first identifier dies mid-load with its replica behind; the replica
    // takes over. The killed node restarts and rejoins as the new master's replica.
    blocking({
        let cluster = cluster.clone();
        move || {
            let master = cluster.master_of(&format!("{{{}}}", KEYS[0])).unwrap();
            let replica = replica_of(&cluster, master);
            cut_off_then_kill(&cluster.nodes()[master], &cluster.nodes()[replica]);
            cluster.wait_healthy(Duration::from_secs(30)).unwrap();
            cluster.nodes()[master].restart().unwrap();
            cluster.wait_healthy(Duration::from_secs(30)).unwrap();
        }
    })
    .await;
    runs.wait_answered(30, Duration::from_secs(20)).await;

    runs.stop_and_check(|key| {
        let id = key.rsplit_once('{').unwrap().1.trim_end_matches('}');
        let master = cluster.master_of(&format!("{{{id}}}")).unwrap();
        stored_count(&cluster.nodes()[master], key)
    })
    .await;
}
