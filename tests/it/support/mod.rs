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
