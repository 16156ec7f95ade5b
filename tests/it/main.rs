//! One integration binary: the real server over loopback sockets, in front
//! of a fake Clever Cloud API.

mod dance;
mod fake_api_dance;
mod fake_api_vectors;
mod proxy;
mod support;
mod tokens;
mod ui;
