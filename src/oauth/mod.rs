//! OAuth 1.0a: the signer (RFC 5849), the token endpoints, and what a
//! login produces. The dance itself, which needs the browser's session,
//! is `web::dance`.

pub mod client;
pub mod grant;
pub mod pending;
pub mod signature;

pub use client::{OAuthClient, OAuthError};
pub use signature::{Credentials, SignatureMethod, Signer};
