//! One integration binary: the real server over loopback sockets, in front
//! of a fake Clever Cloud API.

mod dance;
mod deploy;
mod edge;
mod fake_api_dance;
mod fake_api_vectors;
mod lifecycle;
mod log_streams;
mod logs;
mod operate;
mod proxy;
mod redis;
mod relay;
mod scopes;
mod store_conformance;
mod support;
mod tokens;
mod trust;
mod ui;
mod workers;
