//! TLS for tests: a private CA, a server certificate for 127.0.0.1 and a client certificate,
//! made with `openssl`, and standalone servers that listen with them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{Error, RedisServer, free_port};

/// A private CA (`ca.crt`), a server certificate for 127.0.0.1 (`server.crt`, `server.key`)
/// and a client certificate (`client.crt`, `client.key`), valid for two days, in one folder.
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
}

impl RedisServer {
    /// Start a server that also listens with TLS (these certificates) on a second free port,
    /// returned beside it; with `clients_need_certs` it asks clients for a certificate of the CA.
    pub fn start_tls(
        certs: &Certificates,
        clients_need_certs: bool,
    ) -> Result<(RedisServer, u16), Error> {
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
        ])?;
        Ok((server, tls_port))
    }
}
