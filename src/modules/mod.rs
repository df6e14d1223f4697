//! Built-in feature modules, one file each, and the registry that names them.

pub mod admin_rest;
pub mod blocking;
pub mod bookmarks;
pub mod carbons;
pub mod csi;
pub mod disco;
pub mod last;
pub mod mam;
pub mod offline;
pub mod pep;
pub mod ping;
pub mod presence;
pub mod private;
pub mod push;
pub mod register;
pub mod roster;
pub mod smacks;
pub mod time;
pub mod vcard;
pub mod vcard_legacy;
pub mod vcard_text;
pub mod version;

use std::sync::Arc;

use crate::core::modules::Module;

/// Constructs one built-in module.
type Constructor = fn() -> Arc<dyn Module>;

/// The single list of built-in modules: name and constructor (add new modules here only).
const BUILTIN: &[(&str, Constructor)] = &[
    ("admin_rest", || Arc::new(admin_rest::AdminRest)),
    ("blocking", || Arc::new(blocking::Blocking)),
    ("bookmarks", || Arc::new(bookmarks::Bookmarks)),
    ("carbons", || Arc::new(carbons::Carbons)),
    ("csi", || Arc::new(csi::Csi)),
    ("disco", || Arc::new(disco::Disco)),
    ("push", || Arc::new(push::Push)),
    ("smacks", || Arc::new(smacks::Smacks)),
    ("last", || Arc::new(last::Last)),
    ("mam", || Arc::new(mam::Mam)),
    ("offline", || Arc::new(offline::Offline)),
    ("pep", || Arc::new(pep::Pep)),
    ("ping", || Arc::new(ping::Ping)),
    ("presence", || Arc::new(presence::Presence)),
    ("private", || Arc::new(private::Private)),
    ("register", || Arc::new(register::Register)),
    ("roster", || Arc::new(roster::Roster)),
    ("time", || Arc::new(time::Time)),
    ("vcard", || Arc::new(vcard::Vcard)),
    ("vcard_legacy", || Arc::new(vcard_legacy::VcardLegacy)),
    ("version", || Arc::new(version::Version)),
];

/// Names of every built-in module.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _)| *n).collect()
}

/// Every option name a built-in module reads (config keys outside the core settings).
pub fn option_names() -> Vec<&'static str> {
    BUILTIN
        .iter()
        .flat_map(|(_, make)| make().options().iter().copied())
        .collect()
}

/// A fresh instance of the built-in module `name`.
pub fn builtin(name: &str) -> Option<Arc<dyn Module>> {
    BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, make)| make())
}
