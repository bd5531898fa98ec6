//! The core's conformance suite, unchanged, on every topology: the hand-written tables and
//! seeded differential traces against the pure transitions. Time is injected (the suite drives
//! a manual clock, and every call carries its time, batched or not); everything else is the
//! production path.
//!
//! The suite decides one check at a time, so nothing would ever wait to be batched: on
//! standalone, Cluster, Sentinel, TLS and TLS Cluster the store runs with `batch_always`, which
//! sends every one-policy check in the batch form of its script (the form a batch of any size
//! runs; on a Cluster, a node's cross-slot batch, keys in `ARGV`), and on standalone once more
//! without it (the single form).

use std::time::Duration;

use tollgate::conformance::{
    run_differential, run_lease_differential, run_lease_tables, run_override_tables, run_tables,
};
use tollgate::{Algorithm, Limiter, ManualClock, OverrideSpec, Policy};
use tollgate_redis::{OverrideChange, RedisOptions, RedisStore, ReplicaAck, TlsFiles};
use tollgate_testkit::{
    Certificates, RedisCluster, RedisSentinel, RedisServer, TlsCluster, shared_cluster,
    shared_standalone,
};

/// Seeds per topology, and steps per seed.
const SEEDS: u64 = 24;
const STEPS: usize = 1_500;
/// Lease traces per topology (of its seeds), and steps per lease trace.
const LEASE_SEEDS: usize = 6;
const LEASE_STEPS: usize = 600;

fn options(prefix: &str, clock: &ManualClock, batch_always: bool) -> RedisOptions {
    RedisOptions {
        prefix: prefix.to_owned(),
        clock_override: Some(clock.clone()),
        batch_always,
        ..RedisOptions::default()
    }
}

/// The tables (overrides and leases included), then `seeds` differential traces, on `url`;
/// returns the store, still connected.
async fn conforms(
    url: &str,
    mut options: RedisOptions,
    seeds: std::ops::Range<u64>,
    label: &str,
) -> RedisStore {
    let clock = options
        .clock_override
        .clone()
        .unwrap_or_else(|| ManualClock::new(0));
    options.clock_override = Some(clock.clone());
    let store = RedisStore::connect(url, options).await.unwrap();
    let failures = run_tables(&store, &clock, label).await;
    assert!(failures.is_empty(), "{label}\n{}", failures.join("\n"));
    let failures = run_override_tables(&store, &clock, label).await;
    assert!(
        failures.is_empty(),
        "{label} overrides\n{}",
        failures.join("\n")
    );
    let failures = run_lease_tables(&store, &clock, label).await;
    assert!(
        failures.is_empty(),
        "{label} leases\n{}",
        failures.join("\n")
    );
    for seed in seeds.clone().take(LEASE_SEEDS) {
        run_lease_differential(&store, &clock, seed, LEASE_STEPS, label)
            .await
            .unwrap();
    }
    for seed in seeds {
        run_differential(&store, &clock, seed, STEPS, label)
            .await
            .unwrap();
    }
    store
}

#[tokio::test]
async fn standalone_conforms_alone() {
    let clock = ManualClock::new(0);
    let options = options("conf-single", &clock, false);
    conforms(&shared_standalone().url(), options, 0..SEEDS, "s:").await;
}

#[tokio::test]
async fn standalone_conforms_in_batches() {
    let clock = ManualClock::new(0);
    let options = options("conf-batch", &clock, true);
    conforms(&shared_standalone().url(), options, SEEDS..2 * SEEDS, "b:").await;
}

#[tokio::test]
async fn cluster_conforms_in_node_batches() {
    let clock = ManualClock::new(0);
    let options = options("conf-cluster", &clock, true);
    // Other seeds than on standalone: more traces in all.
    conforms(&shared_cluster().url(), options, 2 * SEEDS..3 * SEEDS, "c:").await;
}

/// With replica acknowledgement every consuming decision goes with a `WAIT` behind its call
/// (here the batch form, as a batch of any size runs, on a master with one replica): the
/// decisions are the same.
#[tokio::test]
async fn standalone_conforms_in_batches_with_replica_ack() {
    let (master, _replica) = tokio::task::spawn_blocking(RedisServer::start_replicated)
        .await
        .unwrap()
        .unwrap();
    let clock = ManualClock::new(0);
    let options = RedisOptions {
        replica_ack: Some(ACK),
        ..options("conf-ack", &clock, true)
    };
    conforms(&master.url(), options, 6 * SEEDS..6 * SEEDS + 6, "a:").await;
}

/// The same per node on a Cluster (a replica per master): each node's batch has its `WAIT`.
#[tokio::test]
async fn cluster_conforms_in_node_batches_with_replica_ack() {
    let clock = ManualClock::new(0);
    let options = RedisOptions {
        replica_ack: Some(ACK),
        ..options("conf-cluster-ack", &clock, true)
    };
    conforms(
        &shared_cluster().url(),
        options,
        7 * SEEDS..7 * SEEDS + 6,
        "ca:",
    )
    .await;
}

/// One replica, waited for up to a second (under the 1 s response timeout on this shared,
/// loaded machine, and far over a loopback round trip).
const ACK: ReplicaAck = ReplicaAck {
    replicas: 1,
    timeout: Duration::from_millis(900),
};

#[tokio::test]
async fn sentinel_conforms_in_batches() {
    let sentinel = RedisSentinel::start().unwrap();
    let clock = ManualClock::new(0);
    let options = options("conf-sentinel", &clock, true);
    conforms(&sentinel.url(), options, 3 * SEEDS..3 * SEEDS + 6, "m:").await;
}

#[tokio::test]
async fn tls_conforms_in_batches() {
    let dir = std::env::temp_dir().join(format!("tollgate-conf-tls-{}", std::process::id()));
    let certs = Certificates::make(&dir).unwrap();
    let (_server, tls_port): (RedisServer, u16) = RedisServer::start_tls(&certs, false).unwrap();
    let clock = ManualClock::new(0);
    let options = RedisOptions {
        tls: Some(TlsFiles {
            ca_cert: Some(certs.path("ca.crt").into()),
            ..TlsFiles::default()
        }),
        ..options("conf-tls", &clock, true)
    };
    let url = format!("rediss://127.0.0.1:{tls_port}");
    conforms(&url, options, 4 * SEEDS..4 * SEEDS + 6, "t:").await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Managed Redis is usually a TLS Cluster, and here is one like it: three masters that listen
/// with TLS only (no plain port), talk to each other over TLS, want a client certificate
/// (mutual TLS), and announce a hostname, with certificates for that name only (so every
/// connection, to the URL's nodes and to those `CLUSTER SLOTS` names, is by name); reached
/// through a `rediss+cluster://` URL with the private CA, in per-node batches.
#[tokio::test]
async fn tls_cluster_conforms_in_node_batches() {
    let dir =
        std::env::temp_dir().join(format!("tollgate-conf-tls-cluster-{}", std::process::id()));
    let certs = Certificates::make(&dir).unwrap();
    let managed = TlsCluster {
        clients_need_certs: true,
        hostnames: true,
    };
    let cluster = RedisCluster::start_tls(&certs, managed).unwrap();
    let url = cluster.url();
    assert!(url.starts_with("rediss+cluster://localhost:"), "{url}");
    let slots: redis::Value = cluster.nodes()[0].query(&["CLUSTER", "SLOTS"]).unwrap();
    assert!(format!("{slots:?}").contains("localhost"), "{slots:?}");
    let clock = ManualClock::new(0);
    let trusting = TlsFiles {
        ca_cert: Some(certs.path("ca.crt").into()),
        ..TlsFiles::default()
    };
    let with_client_cert = TlsFiles {
        client_cert: Some(certs.path("client.crt").into()),
        client_key: Some(certs.path("client.key").into()),
        ..trusting.clone()
    };
    let options = RedisOptions {
        tls: Some(with_client_cert.clone()),
        ..options("conf-tls-cluster", &clock, true)
    };
    let store = conforms(&url, options, 5 * SEEDS..5 * SEEDS + 6, "tc:").await;

    // The store's Cluster connection is TLS: no node has a plain port (a plain client on the
    // TLS port gets no answer), the bus is TLS too, and every master has a client besides this
    // query: the store's.
    for node in cluster.nodes() {
        let port: Vec<String> = node.query(&["CONFIG", "GET", "port"]).unwrap();
        assert_eq!(port, ["port", "0"], "{}", node.addr());
        let bus: Vec<String> = node.query(&["CONFIG", "GET", "tls-cluster"]).unwrap();
        assert_eq!(bus, ["tls-cluster", "yes"], "{}", node.addr());
        let plain = redis::Client::open(format!("redis://{}", node.addr())).unwrap();
        let answered = plain
            .get_connection_with_timeout(Duration::from_millis(500))
            .and_then(|mut c| {
                c.set_read_timeout(Some(Duration::from_millis(500)))?;
                redis::cmd("PING").query::<String>(&mut c)
            });
        assert!(answered.is_err(), "{} answered in plain text", node.addr());
        let clients = node.query_string(&["CLIENT", "LIST"]).unwrap();
        assert!(clients.lines().count() >= 2, "{}: {clients}", node.addr());
    }

    // The other TLS client of a Cluster store: its subscription to override changes (to one
    // node, which hears what the Cluster broadcasts).
    let (tx, mut changes) = tokio::sync::mpsc::unbounded_channel();
    let _watch = store.watch_override_changes(move |change| {
        let _ = tx.send(match change {
            OverrideChange::Changed { policy, key } => format!("{policy} {key}"),
            OverrideChange::Resubscribed => "subscribed".to_owned(),
        });
    });
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(5), changes.recv())
            .await
            .expect("no override change heard within 5 s")
    };
    assert_eq!(next().await.as_deref(), Some("subscribed"));
    let policy = Policy::builder(Algorithm::FixedWindow)
        .rate("2/h")
        .build()
        .unwrap();
    let limiter = Limiter::new(store.clone())
        .with_policy("api", policy)
        .unwrap();
    limiter
        .set_override("api", "tenant-7", OverrideSpec::limit(5))
        .await
        .unwrap();
    assert_eq!(next().await.as_deref(), Some("api tenant-7"));
    drop((limiter, store));

    // Without the client certificate the nodes refuse the store; by IP, the store refuses the
    // nodes' certificates.
    let refused = RedisOptions {
        tls: Some(trusting),
        ..RedisOptions::default()
    };
    let error = RedisStore::connect(&url, refused).await.unwrap_err();
    assert!(error.to_string().contains("CertificateRequired"), "{error}");
    let by_ip = RedisOptions {
        tls: Some(with_client_cert),
        ..RedisOptions::default()
    };
    let url_by_ip = url.replace("localhost", "127.0.0.1");
    let error = RedisStore::connect(&url_by_ip, by_ip).await.unwrap_err();
    assert!(error.to_string().contains("not valid for name"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}
