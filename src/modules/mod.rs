//! Built-in feature modules, one file each, and the registry that names them.

pub mod admin_adhoc;
pub mod admin_rest;
pub mod blocking;
pub mod bookmarks;
pub mod carbons;
pub mod client_management;
pub mod csi;
pub mod disco;
pub mod external_services;
pub mod http_upload;
pub mod last;
pub mod mam;
pub mod metrics;
pub mod muc;
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

use crate::core::modules::ModuleTable;

/// The built-in modules, by name: the table `Server` hands to the core (add new modules here only).
pub const BUILTIN: ModuleTable = ModuleTable::new(&[
    ("admin_rest", || Arc::new(admin_rest::AdminRest)),
    ("admin_adhoc", || Arc::new(admin_adhoc::AdminAdhoc)),
    ("blocking", || Arc::new(blocking::Blocking)),
    ("bookmarks", || Arc::new(bookmarks::Bookmarks)),
    ("carbons", || Arc::new(carbons::Carbons)),
    ("client_management", || {
        Arc::new(client_management::ClientManagement)
    }),
    ("csi", || Arc::new(csi::Csi)),
    ("disco", || Arc::new(disco::Disco)),
    ("external_services", || {
        Arc::new(external_services::ExternalServices)
    }),
    ("http_upload", || Arc::new(http_upload::HttpUpload)),
    ("push", || Arc::new(push::Push)),
    ("smacks", || Arc::new(smacks::Smacks)),
    ("last", || Arc::new(last::Last)),
    ("mam", || Arc::new(mam::Mam)),
    ("metrics", || Arc::new(metrics::Metrics)),
    ("muc", || Arc::new(muc::Muc)),
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
]);

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn the_reference_config_names_only_known_modules_and_options() {
        let text = include_str!("../../config/oxpecker.toml");
        let cfg = Config::parse(text).unwrap();
        cfg.check_modules(&super::BUILTIN.catalog()).unwrap();
        let e = Config::parse("offline_max_mesages = 5\n")
            .unwrap()
            .check_modules(&super::BUILTIN.catalog())
            .unwrap_err();
        assert!(e.to_string().contains("offline_max_mesages"), "{e}");
    }

    #[tokio::test]
    async fn every_module_keeping_account_data_cleans_it_up_through_the_api() {
        let core = crate::core::Core::new(
            Config::default(),
            crate::storage::Store::memory(),
            super::BUILTIN,
        )
        .unwrap();
        let host = core.host("localhost").unwrap();
        let mut cleanups: Vec<(String, String)> = host
            .user_cleanups()
            .iter()
            .map(|c| (c.module().to_string(), c.what().to_string()))
            .collect();
        cleanups.sort();
        let mut want: Vec<(String, String)> = [
            ("blocking", "cleanup"),
            ("last", super::last::STORE),
            ("mam", super::mam::STORE),
            ("offline", super::offline::STORE),
            ("private", super::private::STORE),
            ("push", "push"),
            ("vcard", super::vcard::STORE),
        ]
        .iter()
        .map(|(m, w)| (m.to_string(), w.to_string()))
        .collect();
        want.sort();
        assert_eq!(cleanups, want);
    }
}
