//! Connection options against real servers: ACL users with the least privileges the store
//! needs, a database number, wrong credentials as typed errors (password never printed), TLS
//! with a private CA, and mutual TLS; and what `replica_ack` can count on (`RedisStore::masters`).

use std::time::Duration;

use tollgate::PolicyName;
use tollgate::{Algorithm, Check, Mode, Policy, Store, StoreError};
use tollgate_redis::{MasterReplicas, RedisOptions, RedisStore, RedisStoreError, TlsFiles};
use tollgate_testkit::{Certificates, RedisServer, shared_cluster};

/// The commands the store sends, and those its script calls (ACLs apply inside scripts too).
const STORE_COMMANDS: &str = "+evalsha +eval +script|load +ping +del +select \
     +time +get +set +lrange +rpush +lset +ltrim +lpush +pexpire +hgetall";

async fn decide(store: &RedisStore, key: &str) -> Result<u64, StoreError> {
    let policy = Policy::new(Algorithm::SlidingLog, 3, Duration::from_secs(60), None).unwrap();
    let check = [Check {
        name: &PolicyName::from_static("login"),
        policy: &policy,
        key,
    }];
    Ok(store.decide(&check, 1, Mode::Consume).await?.decisions[0].remaining)
}

#[tokio::test]
async fn acl_user_with_least_privileges_and_a_database() {
    let acl = format!("app on >s3cret resetkeys ~tollgate:* resetchannels -@all {STORE_COMMANDS}");
    let server = RedisServer::start_with(&[("user", acl)]).unwrap();
    let url = format!("redis://app:s3cret@127.0.0.1:{}/3", server.port());
    let store = RedisStore::connect(&url, RedisOptions::default())
        .await
        .unwrap();
    assert_eq!(decide(&store, "alice").await.unwrap(), 2);
    assert_eq!(decide(&store, "alice").await.unwrap(), 1);

    // The state is in database 3.
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/3", server.port())).unwrap();
    let mut connection = client.get_connection().unwrap();
    let exists: i64 = redis::cmd("EXISTS")
        .arg("tollgate:login:sliding-log:{alice}")
        .query(&mut connection)
        .unwrap();
    assert_eq!(exists, 1);
    let in_db0: i64 = server
        .query(&["EXISTS", "tollgate:login:sliding-log:{alice}"])
        .unwrap();
    assert_eq!(in_db0, 0);

    // Deciding needs no `ROLE`; counting replicas does, and says so.
    let error = store.masters().await.unwrap_err();
    assert_eq!(
        error.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm),
        "{error}"
    );

    // Keys outside the user's pattern are refused by Redis: a typed error, not a panic.
    let other = RedisOptions {
        prefix: "other".into(),
        ..RedisOptions::default()
    };
    let store = RedisStore::connect(&url, other).await.unwrap();
    assert!(matches!(
        decide(&store, "alice").await,
        Err(StoreError::Backend(_))
    ));

    // A wrong password fails at connect, and the message does not carry it.
    let bad = format!("redis://app:wrong-pass@127.0.0.1:{}/3", server.port());
    let error = RedisStore::connect(&bad, RedisOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(error, RedisStoreError::Connect { .. }), "{error}");
    assert!(!error.to_string().contains("wrong-pass"), "{error}");
}

#[tokio::test]
async fn tls_with_a_private_ca_and_mutual_tls() {
    let dir = std::env::temp_dir().join(format!("tollgate-tls-{}", std::process::id()));
    let certs = Certificates::make(&dir).unwrap();

    // Server-authenticated TLS: the store trusts the private CA.
    let (server, tls_port) = RedisServer::start_tls(&certs, false).unwrap();
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let trusting = RedisOptions {
        tls: Some(TlsFiles {
            ca_cert: Some(certs.path("ca.crt").into()),
            ..TlsFiles::default()
        }),
        ..RedisOptions::default()
    };
    let store = RedisStore::connect(&url, trusting.clone()).await.unwrap();
    assert_eq!(decide(&store, "bob").await.unwrap(), 2);
    let exists: i64 = server
        .query(&["EXISTS", "tollgate:login:sliding-log:{bob}"])
        .unwrap();
    assert_eq!(exists, 1);
    // Without the CA the certificate is not trusted.
    assert!(
        RedisStore::connect(&url, RedisOptions::default())
            .await
            .is_err()
    );
    drop(server);

    // Mutual TLS: the server wants a client certificate.
    let (_server, tls_port) = RedisServer::start_tls(&certs, true).unwrap();
    let url = format!("rediss://127.0.0.1:{tls_port}");
    assert!(RedisStore::connect(&url, trusting).await.is_err());
    let with_client_cert = RedisOptions {
        tls: Some(TlsFiles {
            ca_cert: Some(certs.path("ca.crt").into()),
            client_cert: Some(certs.path("client.crt").into()),
            client_key: Some(certs.path("client.key").into()),
        }),
        ..RedisOptions::default()
    };
    let store = RedisStore::connect(&url, with_client_cert).await.unwrap();
    assert_eq!(decide(&store, "carol").await.unwrap(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A master alone, a master with its replica, that replica itself (not a master), and every
/// master of a Cluster of three masters with a replica each.
#[tokio::test]
async fn masters_and_the_replicas_they_have_now() {
    let masters = async |url: &str| {
        let store = RedisStore::connect(url, RedisOptions::default())
            .await
            .unwrap();
        store.masters().await.unwrap()
    };
    let alone = RedisServer::start().unwrap();
    assert_eq!(
        masters(&alone.url()).await,
        vec![MasterReplicas {
            master: alone.url(),
            replicas: Some(0)
        }]
    );

    let (master, replica) = RedisServer::start_replicated().unwrap();
    assert_eq!(masters(&master.url()).await[0].replicas, Some(1));
    assert_eq!(masters(&replica.url()).await[0].replicas, None);

    let cluster = shared_cluster();
    let found = masters(&cluster.url()).await;
    assert_eq!(found.len(), 3, "{found:?}");
    let addresses: Vec<String> = cluster
        .masters()
        .unwrap()
        .into_iter()
        .map(|index| cluster.nodes()[index].addr())
        .collect();
    for each in &found {
        assert!(
            addresses.contains(&each.master),
            "{each:?} not in {addresses:?}"
        );
        assert_eq!(each.replicas, Some(1), "{each:?}");
    }

    // A master's error is the call's error on a Cluster too, where redis-rs hands back one
    // reply per master: a user without `ROLE` gets NOPERM, not "not a master".
    for node in cluster.nodes() {
        let _: String = node
            .query(&[
                "ACL", "SETUSER", "norole", "on", ">pw", "~*", "&*", "+@all", "-role",
            ])
            .unwrap();
    }
    let url = cluster
        .url()
        .replace("redis+cluster://", "redis+cluster://norole:pw@");
    let store = RedisStore::connect(&url, RedisOptions::default())
        .await
        .unwrap();
    let error = store.masters().await.unwrap_err();
    assert_eq!(
        error.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm),
        "{error}"
    );
}
