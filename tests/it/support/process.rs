//! The real server binary as a child process, for what only a process
//! shows: signals, exit codes, what it writes to stdout and stderr.

use super::free_port;
use std::io::{BufRead as _, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::app::{ConsumerMode, Options, TestApp};
use super::fake_api::FakeApi;

/// The server binary cargo built for these tests.
pub const BINARY: &str = env!("CARGO_BIN_EXE_oauth-consumer-server");

/// Longest wait for the server to start or stop, so a broken one fails the
/// test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(30);

/// A running server process, killed when dropped.
pub struct ServerProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The browser helpers, pointed at this process and its fake API.
    pub app: TestApp,
    output: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl ServerProcess {
    /// Starts the binary in front of `api` with a clean environment: the
    /// fake's consumer as the operator's, `vars` on top. Returns once
    /// `/health` answers.
    pub async fn start(api: FakeApi, vars: &[(&str, &str)]) -> Self {
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut command = Command::new(BINARY);
        command
            .env_clear()
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("APP_URL", format!("http://{addr}/"))
            .env("API_HOST", api.url())
            .env("OAUTH_CONSUMER_KEY", FakeApi::CONSUMER_KEY)
            .env("OAUTH_CONSUMER_SECRET", FakeApi::CONSUMER_SECRET)
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start the server binary");
        let output = Arc::new(Mutex::new(Vec::new()));
        let readers = [
            collect_lines(child.stdout.take(), &output),
            collect_lines(child.stderr.take(), &output),
        ]
        .into_iter()
        .flatten()
        .collect();
        let app = TestApp::attach(
            api,
            addr,
            Options {
                consumer: ConsumerMode::Operator,
                ..Options::default()
            },
        );
        let mut server = Self {
            child,
            addr,
            app,
            output,
            readers,
        };
        server.wait_until_serving().await;
        server
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn at(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn wait_until_serving(&mut self) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the server") {
                panic!("the server exited with {status}: {}", self.output());
            }
            let healthy = reqwest::Client::new()
                .get(self.at("/health"))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if healthy {
                return;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "the server never answered /health: {}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM, as a platform does to stop an instance.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends the signal named `name` (`TERM`, `INT`, …).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits (boundedly) for the process to exit.
    pub async fn wait_for_exit(&mut self) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the server") {
                return status;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "the server did not exit: {}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether a new connection to the server's port is refused.
    pub fn refuses_connections(&self) -> bool {
        TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_err()
    }

    /// Every line the process wrote, once it has exited (waits for the
    /// readers to reach the end of its output).
    pub async fn lines_after_exit(&mut self) -> Vec<String> {
        self.wait_for_exit().await;
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        self.lines()
    }

    /// Every line written so far to stdout and stderr.
    pub fn lines(&self) -> Vec<String> {
        self.output
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Everything written so far, as one string.
    pub fn output(&self) -> String {
        self.lines().join("\n")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect_lines(
    stream: Option<impl Read + Send + 'static>,
    into: &Arc<Mutex<Vec<String>>>,
) -> Option<std::thread::JoinHandle<()>> {
    let stream = stream?;
    let into = Arc::clone(into);
    Some(std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            into.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(line);
        }
    }))
}
