//! A fake Clever Cloud API for the integration tests.

pub mod verify;
