//! The hook priority table, in one place: handlers of an event run from the highest priority
//! down (equal priorities in hook order). For a message to a local user the order is
//! blocking → archive → push → carbons → feature handlers → the router's delivery.
//! Modules hook with these names, never with literals.

/// Policy that may stop a stanza before anything else sees it (XEP-0191 blocking).
pub const BLOCKING: i32 = 1000;
/// Observers that record and pass on, ahead of every feature (XEP-0012 last activity at logout).
pub const OBSERVE: i32 = 100;
/// The message archive (XEP-0313): stores the message and stamps its XEP-0359 stanza id, so the
/// hooks after it (carbons) see the id.
pub const ARCHIVE: i32 = 50;
/// Push notifications (XEP-0357): after the archive, before copies and delivery.
pub const PUSH: i32 = 40;
/// Message carbons (XEP-0280): copies carry the archive's stanza id and go out before delivery.
pub const CARBONS: i32 = 10;
/// A module that looks at another module's request first and passes it on (bookmarks over
/// private storage, vCard avatar conversion over vcard-temp).
pub const INTERCEPT: i32 = 10;
/// Hooks that must see broadcast presence before the presence module consumes it (PEP caps).
pub const BEFORE_PRESENCE: i32 = 5;
/// The feature handler of an event.
pub const HANDLER: i32 = 0;
/// Hooks that run once the feature handlers let the event pass (offline flush after the
/// initial presence broadcast).
pub const AFTER_HANDLERS: i32 = -10;

// The order above is the contract: a reordering that breaks it does not compile.
const _: () = assert!(
    BLOCKING > OBSERVE
        && OBSERVE > ARCHIVE
        && ARCHIVE > PUSH
        && PUSH > CARBONS
        && CARBONS > BEFORE_PRESENCE
        && INTERCEPT > BEFORE_PRESENCE
        && BEFORE_PRESENCE > HANDLER
        && HANDLER > AFTER_HANDLERS
);
