//! OAuth 1.0a: the signer (RFC 5849), the token endpoints, the dance, and
//! what a login produces.

pub mod client;
pub mod dance;
pub mod grant;
pub mod pending;
pub mod signature;

pub use client::{OAuthClient, OAuthError};
pub use signature::{Credentials, SignatureMethod, Signer};
