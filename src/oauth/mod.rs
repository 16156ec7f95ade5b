//! OAuth 1.0a: the signer (RFC 5849), the token endpoints, and the dance.

pub mod signature;

pub use signature::{Credentials, SignatureMethod, Signer};
