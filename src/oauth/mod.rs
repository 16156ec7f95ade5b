//! OAuth 1.0a: the signer (RFC 5849), the token endpoints, and the dance.

pub mod client;
pub mod dance;
pub mod signature;

pub use client::{OAuthClient, OAuthError};
pub use signature::{Credentials, SignatureMethod, Signer};
