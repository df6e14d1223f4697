//! The XMPP protocol layer, free of business logic: JIDs, elements, the stream parser, namespaces, errors.

pub mod datetime;
pub mod element;
pub mod error;
pub mod jid;
pub mod ns;
pub mod parser;
pub mod stanza;

pub use element::Element;
pub use error::{StanzaError, StanzaErrorCondition, StreamError, StreamErrorCondition};
pub use jid::Jid;
