//! oauth-consumer-server: a self-hosted gateway to the Clever Cloud API.

pub mod oauth;
pub mod secret;
