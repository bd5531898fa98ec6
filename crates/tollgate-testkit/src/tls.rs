//! TLS for tests: a private CA, a server certificate for 127.0.0.1 and a client certificate,
//! made with `openssl`, standalone servers that listen with them, and what the testkit's own
//! connections to TLS-only nodes (a TLS Cluster's) trust and present.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{Error, RedisServer, free_port};

/// A private CA (`ca.crt`), a server certificate for 127.0.0.1 (`server.crt`, `server.key`), one
/// for the name `localhost` only (`host.crt`, `host.key`: clients must connect by that name, as
/// to managed Redis) and a client certificate (`client.crt`, `client.key`), valid for two days,
/// in one folder.
#[derive(Debug)]
pub struct Certificates {
    dir: PathBuf,
}

impl Certificates {
    /// Make them in `dir` (created if missing) with the `openssl` command.
    pub fn make(dir: &Path) -> Result<Certificates, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating the TLS folder", e))?;
        let run = |args: &[&str]| -> Result<(), Error> {
            let status = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(|e| Error::io("running openssl (needed for TLS tests)", e))?;
            if status.success() {
                Ok(())
            } else {
                Err(Error::Start(format!("openssl {args:?} failed: {status}")))
            }
        };
        let write = |name: &str, text: &str| {
            std::fs::write(dir.join(name), text).map_err(|e| Error::io("writing a TLS file", e))
        };
        write("server.ext", "subjectAltName=IP:127.0.0.1\n")?;
        write("host.ext", "subjectAltName=DNS:localhost\n")?;
        write("client.ext", "extendedKeyUsage=clientAuth\n")?;
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
        ])?;
        for name in ["server", "host", "client"] {
            let subject = if name == "host" {
                "/CN=localhost"
            } else {
                "/CN=127.0.0.1"
            };
            let (key, csr, crt, ext) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
                format!("{name}.ext"),
            );
            run(&[
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
                subject,
            ])?;
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
            ])?;
        }
        Ok(Certificates {
            dir: dir.to_owned(),
        })
    }

    /// The path of one of the files (`ca.crt`, `client.key`, ...).
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// The `redis-server` settings of a server that listens with these certificates (`server`
    /// or `host`); with `clients_need_certs` it asks clients for a certificate of the CA. Other
    /// nodes are clients too (the Cluster bus, replication): they present the same certificate,
    /// and check it against the CA, not against a name.
    pub(crate) fn server_config(
        &self,
        certificate: &str,
        clients_need_certs: bool,
    ) -> Vec<(&'static str, String)> {
        vec![
            ("tls-cert-file", self.path(&format!("{certificate}.crt"))),
            ("tls-key-file", self.path(&format!("{certificate}.key"))),
            ("tls-ca-cert-file", self.path("ca.crt")),
            (
                "tls-auth-clients",
                if clients_need_certs { "yes" } else { "no" }.into(),
            ),
        ]
    }

    /// What a redis-rs client trusts (the CA) and presents (the client certificate, when a
    /// server asks for one).
    pub(crate) fn client(&self) -> Result<redis::TlsCertificates, Error> {
        // rustls needs a process-wide crypto provider; the store (or a test) may have installed
        // one already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let read = |name: &str| {
            std::fs::read(self.dir.join(name)).map_err(|e| Error::io("reading a TLS file", e))
        };
        Ok(redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: read("client.crt")?,
                client_key: read("client.key")?,
            }),
            root_cert: Some(read("ca.crt")?),
        })
    }

    /// The `redis-cli` arguments of a client that trusts the CA and presents the client
    /// certificate.
    pub(crate) fn cli_args(&self) -> Vec<String> {
        vec![
            "--tls".into(),
            "--cacert".into(),
            self.path("ca.crt"),
            "--cert".into(),
            self.path("client.crt"),
            "--key".into(),
            self.path("client.key"),
        ]
    }
}

impl RedisServer {
    /// Start a server that also listens with TLS (these certificates) on a second free port,
    /// returned beside it; with `clients_need_certs` it asks clients for a certificate of the CA.
    pub fn start_tls(
        certs: &Certificates,
        clients_need_certs: bool,
    ) -> Result<(RedisServer, u16), Error> {
        let tls_port = free_port();
        let mut config = vec![("tls-port", tls_port.to_string())];
        config.extend(certs.server_config("server", clients_need_certs));
        let server = RedisServer::start_with(&config)?;
        Ok((server, tls_port))
    }
}
