//! Secrets at rest: every record is sealed with XChaCha20-Poly1305 before it
//! reaches a backend, so a dump of the store (Redis or memory) holds no
//! token, token secret or consumer secret in a usable form.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use chacha20poly1305::aead::{Aead as _, AeadCore as _, KeyInit as _, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store;

use crate::secret::Secret;

/// The one field of a sealed record: nonce then ciphertext, base64. The
/// version in the name leaves room for another format later.
const SEALED_FIELD: &str = "ocs.sealed.v1";

/// Kept apart from the cookie key's derivation, so neither key tells
/// anything about the other.
const KEY_LABEL: &[u8] = b"oauth-consumer-server/store-encryption/v1";

const NONCE_LEN: usize = 24;

/// The key that seals stored records.
#[derive(Clone)]
pub struct SealingKey(chacha20poly1305::Key);

impl SealingKey {
    /// Derived from `SESSION_KEY`: every instance sharing it reads the
    /// others' records.
    pub fn derive(session_key: &Secret) -> Self {
        let mut mac = <Hmac<Sha256> as hmac::Mac>::new_from_slice(session_key.expose().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(KEY_LABEL);
        Self(mac.finalize().into_bytes())
    }

    /// A key for this process only (no `SESSION_KEY`: memory store).
    pub fn random() -> Self {
        Self(XChaCha20Poly1305::generate_key(&mut OsRng))
    }
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealingKey([redacted])")
    }
}

/// Seals records on their way to a backend and opens them on the way back.
/// A record that does not open (another key, altered bytes) reads as no
/// record at all.
pub(crate) struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl Sealer {
    /// Seals and opens with `key`.
    pub(crate) fn new(key: &SealingKey) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(&key.0),
        }
    }

    /// `record` with its data sealed, bound to its id.
    pub(crate) fn seal(&self, record: &Record) -> session_store::Result<Record> {
        let plaintext = serde_json::to_vec(&record.data)
            .map_err(|error| session_store::Error::Encode(error.to_string()))?;
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = associated_data(&record.id);
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| session_store::Error::Encode("sealing a record failed".to_owned()))?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        Ok(Record {
            id: record.id,
            data: HashMap::from([(
                SEALED_FIELD.to_owned(),
                STANDARD_NO_PAD.encode(sealed).into(),
            )]),
            expiry_date: record.expiry_date,
        })
    }

    /// The record inside `sealed`, or `None` when it does not open.
    pub(crate) fn open(&self, sealed: &Record) -> Option<Record> {
        let encoded = sealed.data.get(SEALED_FIELD)?.as_str()?;
        let bytes = STANDARD_NO_PAD.decode(encoded).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let aad = associated_data(&sealed.id);
        let plaintext = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .ok()?;
        Some(Record {
            id: sealed.id,
            data: serde_json::from_slice(&plaintext).ok()?,
            expiry_date: sealed.expiry_date,
        })
    }
}

/// Binds a sealed record to its id, so it cannot be copied under another.
fn associated_data(id: &Id) -> Vec<u8> {
    let mut aad = b"ocs/record/".to_vec();
    aad.extend_from_slice(&id.0.to_le_bytes());
    aad
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;

    fn record_holding(secret: &str) -> Record {
        Record {
            id: Id::default(),
            data: HashMap::from([("oauth.access".to_owned(), secret.into())]),
            expiry_date: OffsetDateTime::now_utc() + time::Duration::hours(1),
        }
    }

    fn key(text: &str) -> SealingKey {
        SealingKey::derive(&Secret::new(text))
    }

    #[test]
    fn records_round_trip_and_rest_sealed() -> session_store::Result<()> {
        let sealer = Sealer::new(&key("a key of at least thirty-two chars"));
        let record = record_holding("token-secret-in-clear");
        let sealed = sealer.seal(&record)?;

        let raw_text = serde_json::to_string(&sealed.data).unwrap_or_default();
        assert!(!raw_text.contains("token-secret"), "{raw_text}");
        assert_eq!(sealed.expiry_date, record.expiry_date);
        assert_eq!(sealer.open(&sealed).map(|r| r.data), Some(record.data));
        Ok(())
    }

    #[test]
    fn another_key_another_id_or_altered_bytes_do_not_open() -> session_store::Result<()> {
        let writer = Sealer::new(&key("the key the writer instance has ok"));
        let record = record_holding("secret");
        let sealed = writer.seal(&record)?;

        let other = Sealer::new(&key("a different key, of the right size"));
        assert!(other.open(&sealed).is_none());

        let mut moved = sealed.clone();
        moved.id = Id::default();
        assert!(
            writer.open(&moved).is_none(),
            "a sealed record copied under another id does not open"
        );

        let mut altered = sealed.clone();
        let encoded = altered.data[SEALED_FIELD].as_str().unwrap_or_default();
        let mut bytes = STANDARD_NO_PAD.decode(encoded).unwrap_or_default();
        if let Some(last) = bytes.last_mut() {
            *last ^= 1;
        }
        altered.data.insert(
            SEALED_FIELD.to_owned(),
            STANDARD_NO_PAD.encode(bytes).into(),
        );
        assert!(writer.open(&altered).is_none());

        assert!(writer.open(&record_holding("not sealed at all")).is_none());
        Ok(())
    }

    #[test]
    fn derived_keys_depend_on_the_session_key_only() {
        let (a, b) = (
            key("same session key, thirty-two chars"),
            key("same session key, thirty-two chars"),
        );
        assert_eq!(a.0, b.0);
        assert_ne!(a.0, key("another session key, thirty-two c").0);
        assert_ne!(SealingKey::random().0, SealingKey::random().0);
        assert_eq!(format!("{a:?}"), "SealingKey([redacted])");
    }
}
