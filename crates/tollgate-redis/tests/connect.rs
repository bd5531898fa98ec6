//! Connection options against real servers: ACL users with the least privileges the store
//! needs, a database number, wrong credentials as typed errors (password never printed), TLS
//! with a private CA, and mutual TLS.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tollgate::{Algorithm, Check, Mode, Policy, Store, StoreError};
use tollgate_redis::{RedisOptions, RedisStore, RedisStoreError, TlsFiles};
use tollgate_testkit::{RedisServer, free_port};

/// The commands the store sends, and those its script calls (ACLs apply inside scripts too).
const STORE_COMMANDS: &str = "+evalsha +eval +script|load +ping +del +select \
     +time +get +set +lrange +rpush +lset +ltrim +lpush +pexpire +hmget";

async fn decide(store: &RedisStore, key: &str) -> Result<u64, StoreError> {
    let policy = Policy::new(Algorithm::SlidingLog, 3, Duration::from_secs(60), None).unwrap();
    let check = [Check {
        name: "login",
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

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with `openssl`.
struct Certificates {
    dir: PathBuf,
}

impl Certificates {
    fn make(dir: &Path) -> Certificates {
        std::fs::create_dir_all(dir).unwrap();
        let run = |args: &[&str]| {
            let status = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .expect("openssl is needed for the TLS tests");
            assert!(status.success(), "openssl {args:?}");
        };
        std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=tollgate test CA",
        ]);
        for name in ["server", "client"] {
            let (key, csr, crt, ext) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
                format!("{name}.ext"),
            );
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                "/CN=127.0.0.1",
            ]);
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext,
            ]);
        }
        Certificates {
            dir: dir.to_owned(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

fn tls_server(certs: &Certificates, clients_need_certs: bool) -> (RedisServer, u16) {
    let tls_port = free_port();
    let server = RedisServer::start_with(&[
        ("tls-port", tls_port.to_string()),
        ("tls-cert-file", certs.path("server.crt")),
        ("tls-key-file", certs.path("server.key")),
        ("tls-ca-cert-file", certs.path("ca.crt")),
        (
            "tls-auth-clients",
            if clients_need_certs { "yes" } else { "no" }.into(),
        ),
    ])
    .unwrap();
    (server, tls_port)
}

#[tokio::test]
async fn tls_with_a_private_ca_and_mutual_tls() {
    let dir = std::env::temp_dir().join(format!("tollgate-tls-{}", std::process::id()));
    let certs = Certificates::make(&dir);

    // Server-authenticated TLS: the store trusts the private CA.
    let (server, tls_port) = tls_server(&certs, false);
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
    let (_server, tls_port) = tls_server(&certs, true);
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
