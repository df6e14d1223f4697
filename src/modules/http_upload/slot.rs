//! Upload slots: what a slot allows (who uploads which file of which size and type, until
//! when), signed into the PUT URL's token with the service's secret so that no state is kept
//! until the file arrives. A token is `base64url(claims JSON) . base64url(HMAC-SHA-256)`, the
//! MAC taken over the length-prefixed service host, slot id, file name and claims.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What a slot allows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The uploader's bare JID.
    #[serde(rename = "u")]
    pub owner: String,
    /// The exact size in bytes.
    #[serde(rename = "s")]
    pub size: u64,
    /// The content type the upload must carry (empty = none given).
    #[serde(rename = "t")]
    pub content_type: String,
    /// Unix time after which the slot is no longer accepted.
    #[serde(rename = "e")]
    pub expires: i64,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SlotError {
    /// Not a token of ours, or signed for another slot.
    #[error("bad slot signature")]
    BadSignature,
    /// The slot expired.
    #[error("slot expired")]
    Expired,
}

fn mac(secret: &[u8], host: &str, slot: &str, name: &str, claims: &[u8]) -> Option<Hmac<Sha256>> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).ok()?;
    for field in [host.as_bytes(), slot.as_bytes(), name.as_bytes(), claims] {
        // Every field is bounded by the stanza size limit, far below u32::MAX.
        let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
        mac.update(&len.to_be_bytes());
        mac.update(field);
    }
    Some(mac)
}

/// The token for slot `slot` of file `name` on service `host`.
pub fn sign(secret: &[u8], host: &str, slot: &str, name: &str, claims: &Claims) -> String {
    let json = serde_json::to_vec(claims).unwrap_or_default();
    let sig = mac(secret, host, slot, name, &json)
        .map(|m| m.finalize().into_bytes().to_vec())
        .unwrap_or_default();
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&json),
        URL_SAFE_NO_PAD.encode(sig)
    )
}

/// The claims of `token` if this service signed it for `slot` and `name` and it is valid at `now`.
pub fn verify(
    secret: &[u8],
    host: &str,
    slot: &str,
    name: &str,
    token: &str,
    now: i64,
) -> Result<Claims, SlotError> {
    let (claims, sig) = token.split_once('.').ok_or(SlotError::BadSignature)?;
    let json = URL_SAFE_NO_PAD
        .decode(claims)
        .map_err(|_| SlotError::BadSignature)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| SlotError::BadSignature)?;
    let mac = mac(secret, host, slot, name, &json).ok_or(SlotError::BadSignature)?;
    mac.verify_slice(&sig)
        .map_err(|_| SlotError::BadSignature)?;
    let claims: Claims = serde_json::from_slice(&json).map_err(|_| SlotError::BadSignature)?;
    if now > claims.expires {
        return Err(SlotError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_for_their_slot_secret_and_time() {
        let claims = Claims {
            owner: "alice@localhost".into(),
            size: 5,
            content_type: "text/plain".into(),
            expires: 1000,
        };
        let t = sign(b"secret", "upload.localhost", "s1", "a.txt", &claims);
        let check = |secret: &[u8], slot: &str, name: &str, token: &str, now| {
            verify(secret, "upload.localhost", slot, name, token, now)
        };
        assert_eq!(check(b"secret", "s1", "a.txt", &t, 999), Ok(claims.clone()));
        assert_eq!(
            check(b"secret", "s1", "a.txt", &t, 1001),
            Err(SlotError::Expired)
        );
        assert_eq!(
            check(b"other", "s1", "a.txt", &t, 999),
            Err(SlotError::BadSignature)
        );
        assert_eq!(
            check(b"secret", "s2", "a.txt", &t, 999),
            Err(SlotError::BadSignature)
        );
        assert_eq!(
            check(b"secret", "s1", "b.txt", &t, 999),
            Err(SlotError::BadSignature)
        );
        // Claims changed by the client (a bigger size) no longer match the signature.
        let (_, sig) = t.split_once('.').unwrap();
        let bigger = Claims {
            size: 5000,
            ..claims
        };
        let forged = format!(
            "{}.{sig}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&bigger).unwrap())
        );
        assert_eq!(
            check(b"secret", "s1", "a.txt", &forged, 999),
            Err(SlotError::BadSignature)
        );
        for junk in ["", ".", "abc", "a.b", "!!.??"] {
            assert_eq!(
                check(b"secret", "s1", "a.txt", junk, 0),
                Err(SlotError::BadSignature)
            );
        }
    }
}
