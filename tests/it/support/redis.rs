//! A private `redis-server` per test, on a free loopback port, without
//! persistence: it can be stopped, frozen and restarted on the same port.
//! The machine's own Redis (6379) is never touched.

use super::app::Options;
use super::free_port;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fred::prelude::{
    Builder, ClientLike as _, Config, KeysInterface as _, ListInterface as _, SetsInterface as _,
};
use fred::types::config::TlsConnector;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::CertificateDer;

/// How long a server may take to start accepting connections.
const START_WAIT: Duration = Duration::from_secs(10);

/// The password of the TLS server.
pub const TLS_PASSWORD: &str = "p@ss:word/with-reserved";

/// A `redis-server` owned by a test.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
    tls: bool,
    child: Option<Child>,
}

impl RedisServer {
    /// A plain server (`redis://`), no password.
    pub fn start() -> Self {
        let port = free_port();
        let dir = scratch_dir(port);
        let args = vec!["--port".to_owned(), port.to_string()];
        Self::launch(port, dir, args, false)
    }

    /// A TLS-only server (`rediss://`) with a password, its certificate
    /// issued for 127.0.0.1 by a CA made for the test ([`Self::ca_file`]).
    pub fn start_tls() -> Self {
        let port = free_port();
        let dir = scratch_dir(port);
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "oauth-consumer-server test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");
        let server_key = KeyPair::generate().expect("server key");
        let server_cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("server params")
            .signed_by(&server_key, &ca)
            .expect("server certificate");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write CA");
        std::fs::write(dir.join("server.pem"), server_cert.pem()).expect("write cert");
        std::fs::write(dir.join("server.key"), server_key.serialize_pem()).expect("write key");
        let file = |name: &str| dir.join(name).display().to_string();
        let args = [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &file("server.pem"),
            "--tls-key-file",
            &file("server.key"),
            "--tls-ca-cert-file",
            &file("ca.pem"),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            TLS_PASSWORD,
        ]
        .map(str::to_owned)
        .to_vec();
        Self::launch(port, dir, args, true)
    }

    fn launch(port: u16, dir: PathBuf, args: Vec<String>, tls: bool) -> Self {
        let mut server = Self {
            port,
            dir,
            args,
            tls,
            child: None,
        };
        server.run();
        server
    }

    fn run(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.args)
            .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts (bash .ci/deps installs it)");
        self.child = Some(child);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + START_WAIT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The URL the server under test is given (with the password for TLS).
    pub fn url(&self) -> String {
        if self.tls {
            let password: String =
                url::form_urlencoded::byte_serialize(TLS_PASSWORD.as_bytes()).collect();
            format!("rediss://:{password}@127.0.0.1:{}", self.port)
        } else {
            format!("redis://127.0.0.1:{}", self.port)
        }
    }

    /// The PEM file of the CA that issued the TLS server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Kills the server (its data goes with it: there is no persistence).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// Freezes the process (SIGSTOP): connections stay open and nothing
    /// answers, like a hung or unreachable server. Its data is kept.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("server running").id();
        // The shell's own `kill`: no procps needed on a slim machine.
        let status = Command::new("sh")
            .args(["-c", &format!("kill {signal} {pid}")])
            .status()
            .expect("sh runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// A client of our own, to look at what the server under test stored.
    pub async fn client(&self) -> fred::clients::Client {
        let mut config = Config::from_url(&self.url()).expect("Redis URL");
        if self.tls {
            let pem = std::fs::read(self.ca_file()).expect("read CA");
            let mut roots = rustls::RootCertStore::empty();
            for cert in <CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(&pem)
            {
                roots.add(cert.expect("CA PEM")).expect("CA certificate");
            }
            let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
            config.tls = Some(TlsConnector::from(tls).into());
        }
        let client = Builder::from_config(config).build().expect("client");
        tokio::time::timeout(START_WAIT, client.init())
            .await
            .expect("connects in time")
            .expect("connects");
        client
    }

    /// Every key the server under test wrote, with its value (a set's
    /// members joined by commas, sorted; a list's entries by new lines) and
    /// TTL (s).
    pub async fn records(&self) -> Vec<(String, String, i64)> {
        let client = self.client().await;
        let keys: Vec<String> = client
            .custom(fred::cmd!("KEYS"), vec!["ocs:*"])
            .await
            .expect("KEYS");
        let mut records = Vec::new();
        for key in keys {
            let kind: String = client
                .custom(fred::cmd!("TYPE"), vec![key.clone()])
                .await
                .expect("TYPE");
            let value: Option<String> = if kind == "set" {
                let mut members: Vec<String> = client.smembers(&key).await.expect("SMEMBERS");
                members.sort();
                Some(members.join(","))
            } else if kind == "list" {
                let entries: Vec<String> = client.lrange(&key, 0, -1).await.expect("LRANGE");
                Some(entries.join("\n"))
            } else {
                client.get(&key).await.expect("GET")
            };
            let ttl: i64 = client.ttl(&key).await.expect("TTL");
            if let Some(value) = value {
                records.push((key, value, ttl));
            }
        }
        records.sort();
        records
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a frozen server too.
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn scratch_dir(port: u16) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ocs-test-redis-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// The session key the instances of a Redis test share.
pub const SESSION_KEY: &str = "redis-tests-session-key-0123456789abcdef";

/// Options of a server storing in `redis`, with `more` arguments.
pub fn options(redis: &RedisServer, more: &[&str]) -> Options {
    let mut extra_args = vec![
        "--redis-url".to_owned(),
        redis.url(),
        "--session-key".to_owned(),
        SESSION_KEY.to_owned(),
    ];
    extra_args.extend(more.iter().map(|&arg| arg.to_owned()));
    Options {
        extra_args,
        ..Options::default()
    }
}
