//! Helpers shared by the integration tests.

// Not every test uses every helper.
#[allow(dead_code)]
pub mod app;
#[allow(dead_code)]
pub mod browser;
#[allow(dead_code)]
pub mod fake_api;
#[allow(dead_code)]
pub mod process;
#[allow(dead_code)]
pub mod redis;
#[allow(dead_code)]
pub mod ws;

pub use app::{ConsumerMode, Options, TestApp, browser, element_text, location, service_client};
pub use fake_api::{FAKE_USER_ID, FakeApi, Mode};

/// A loopback port that was free a moment ago (whoever needs it binds it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

/// Logs of the servers the tests start in this process, on standard error,
/// only when `TEST_LOG` is set (`TEST_LOG=debug` for more): quiet otherwise.
pub fn init_test_log() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        if let Some(level) = std::env::var_os("TEST_LOG") {
            let level = level.to_string_lossy();
            let filter = if level.is_empty() || level == "1" {
                "info"
            } else {
                &level
            };
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}
