//! SASL authentication: SCRAM-SHA-1/-256 and PLAIN mechanisms, SCRAM downgrade protection
//! (XEP-0474), FAST hashed tokens, stored credentials.

pub mod credentials;
pub mod fast;
pub mod sasl;
pub mod scram;
pub mod ssdp;

pub use credentials::{CredentialError, Credentials, ScramKeys};
pub use sasl::{Mechanism, PlainCredentials, SaslError, decode_b64, encode_b64, parse_plain};
pub use scram::{ClientFirst, ScramClient, ScramHash, ScramServer};
