//! # Oxpecker
//!
//! An XMPP server with an HTTP-first admin control plane. One process, two faces — the XMPP
//! engine and the HTTP API — both thin shells around the same managers in [`core::Core`].
//!
//! ## The map of the house
//! | room | what lives there |
//! |---|---|
//! | [`xmpp`] | the protocol, no business logic: [`xmpp::jid`] (RFC 7622), [`xmpp::element`], the incremental [`xmpp::parser`] on quick-xml, namespaces, stream/stanza errors |
//! | [`auth`] | credentials (argon2id + SCRAM keys) and SASL mechanisms (SCRAM-SHA-256/-1 and their `-PLUS` channel-binding variants, PLAIN, FAST `HT-SHA-256-NONE`/`-ENDP`/`-EXPR` in [`auth::fast`], the XEP-0474 downgrade-protection hash in [`auth::ssdp`]) |
//! | [`storage`] | the [`storage::Store`] with Prosody's three store kinds (keyval, map, archive) on fjall (the default), sled, memory or PostgreSQL ([`storage::PostgresBackend`]: one table keyed by tree and key, a batch per transaction, versioned migrations), the engine chosen in one place ([`storage::Store::open_configured`], from `[storage] backend`), a sled directory converted to fjall once at start (`upgrade`), archive appends batched by one writer thread, archive items in a length-prefixed binary form with a per-partner (`with`) index, archive totals counted once and kept current, export/import of [`storage::Record`] lines (the one record shape the importers write too) |
//! | [`config`] | TOML loading, defaults, validation that names the key |
//! | [`logging`] | log output of `oxpecker serve`: text (colours only on a terminal) or JSON lines, standard output or a rotated file, the `audit` target in its own file |
//! | [`tls`] | certificates (self-signed on first start), the rustls configuration, and the certificate's RFC 5929 `tls-server-end-point` channel-binding value |
//! | [`core`] | the shared managers in [`core::Core`]: hosts (user hosts and `[[component]]` hosts, [`core::modules::HostType`]; the set grows at run time when `host:activate` serves a host a reload added: [`core::host_map`], an append-only table behind an `ArcSwap` index, read per stanza with no lock, hosts switched off kept in place) and their event buses ([`core::events`]), the module system ([`core::modules`]: the `Module` trait, hosts, the module table the server hands in; [`core::module_api`]: one submodule per concern — status, hooks (host and global `*` bus), stream-level elements ([`core::module_api::tags`]), disco, items, typed options, send, timers and cron, shared state, stores with account cleanup, metrics, resource files; HTTP routes, exact or streaming under a prefix with file bodies, [`core::module_api::http`]), sessions ([`core::sessions`], incl. XEP-0198 state and hibernation, [`core::stream_management`]; each session's send queue, [`core::sessions::queue`], holds no heap while empty), the one delivery decision ([`core::delivery`]: who receives a stanza, who gets a carbon copy, what waits offline; sessions on other cluster nodes included), the other cluster nodes as the core sees them ([`core::cluster`]: their sessions, forwarding, kicks and closes), the hook priority table ([`core::priority`]), the router, accounts and their lifecycle with the lifecycle events ([`core::lifecycle`]), rosters and shared groups, server-sent IQs ([`core::iq`]; in a cluster their ids name the sending node, so an answer that reaches another node is forwarded back), metrics ([`core::metrics`]: client stanzas counted per host through counters resolved once per connection, stream errors by listener and condition; the process's own use from procfs, and the heap in use from the allocator's statistics, in [`core::process`]), config reload, API tokens, the grant store ([`core::grants`]: clients with access to an account, FAST tokens stored hashed, listing and revocation for every face), the admin API's allowlists ([`core::allowlist`]), the defences against hostile peers (failed logins per address and account in [`core::throttle::AuthGuard`], connection flood limits of the client and server listeners in [`core::admission`], the global budget for bytes queued to sessions in [`core::budget`]), how a failed storage write reaches the peer ([`core::faults`]: stanza `internal-server-error`/`wait`; REST's 503 is its `ApiError` twin), the admin operations every admin face calls ([`core::admin`]: list and close sessions, host activate/deactivate, shutdown with a reason, server info, config get, users and roles; [`core::admin_ops`]: module, config and host operations run here and on the other cluster nodes, one outcome per node) |
//! | [`modules`] | one file per feature module, registered in one table ([`modules::BUILTIN`], which [`server`] hands to the core and to config validation): roster, presence, offline, disco, ping, time, version, last, vcard, private, blocking, register, mam, carbons, smacks, csi, push, pep (with caps), bookmarks, vcard_legacy, admin_rest, admin_adhoc (XEP-0133), client_management (manage-clients IQ), and the global metrics (`/metrics`, OpenMetrics); [`modules::muc`], group chat on a component host (the room rules in `room`, the forms in `form`, stanza handlers in `handlers`, `room_iq` and `hats` (XEP-0317 commands), the MUC manager with the admin operations in `service`); [`modules::vcard_text`], the text/vcard ⇄ vcard-temp converter; [`modules::http_upload`], XEP-0363 file upload on a component host (signed slots in `slot`, the files on disk and their records in `files`, the PUT/GET/HEAD routes in `serve`); and [`modules::external_services`], XEP-0215 STUN/TURN with shared-secret TURN credentials |
//! | [`c2s`] | client listeners: negotiation (STARTTLS, SASL, bind, XEP-0198 resume, XEP-0077 pre-auth registration; SASL2 with FAST and inline requests in [`c2s::sasl2`], Bind2 in [`c2s::bind2`]), the session, whose reader and writer run side by side in the connection's one task (reading through [`c2s::read_buffer`], which holds no memory while a connection is idle), XEP-0198 counting on the wire, the brute-force guard's c2s side (`guard`) and read bandwidth shaping (`shaper`); other stream-level elements go to the modules hooking their tags; the same negotiation and session over an in-memory duplex for the web transports ([`c2s::duplex`]) |
//! | [`s2s`] | federation: the server listeners, where remote servers are found ([`s2s::resolve`]: `[s2s.hosts]`, DNS SRV per RFC 6120/XEP-0368, A/AAAA, happy eyeballs), the outgoing pool (one stream per local/remote domain pair, bounded queue, bounce on failure, idle close; further pairs to the same server piggybacked on an authenticated connection by dialback), STARTTLS, SASL EXTERNAL with certificate identities read from the subjectAltName and trust anchors re-read after a reload ([`s2s::cert`]) and Server Dialback with XEP-0185 keys ([`s2s::dialback`]), policy (`secure_auth`, allow/deny); installed in the core as its [`core::remote::Federation`], which the router hands stanzas for other domains |
//! | [`http`] | the axum router on HTTP and HTTPS: `/health`, the web dashboard at `/admin/` ([`http::dashboard`]: `web/admin/` embedded, a client of the admin REST API only), request counts and latency by route ([`http::metrics`]), the routes modules serve ([`http::module_routes`], e.g. `/metrics`, `/upload/…`; streamed request and file bodies) and the admin REST API ([`http::admin_rest`]: allowlist and auth before every route, the route table and its one 404/405 rule in [`http::admin_rest::routes`], one file per resource, OpenAPI in `openapi/admin_rest.yaml`) |
//! | [`web`] | web client transports on the HTTP listeners, mounted through [`http::Http::with_routes`]: WebSocket (RFC 7395, [`web::websocket`]) and BOSH (XEP-0124/0206, [`web::bosh`]: sid/rid windows, held requests, replay, inactivity), XEP-0156 host-meta ([`web::discovery`]), CORS ([`web::cors`]). A transport owns framing and I/O only: each client stream runs the one c2s negotiation and session over an in-memory duplex ([`c2s::duplex`]), fed with the client's XML (`<open/>` becomes the stream header) and read back into whole elements for frames and `<body/>` responses ([`web::framing`]) |
//! | [`control`] | the local control socket through which the CLI manages a running server, audited per Unix user; the admin shell: its command table ([`control::console`]; `s2s:*` through `core.federation`, `muc:*` through the MUC services), how a line reads in both spellings ([`control::line`]), and the interactive client ([`control::shell`]) |
//! | [`migrate`] | moving in and out with the server stopped: XEP-0227 export/import ([`migrate::xep0227`]), Prosody data directories ([`migrate::prosody`], its serialised tables read by the strict [`migrate::lua`] parser, its SQLite `prosody.sqlite` by [`migrate::prosody_sql`], its MUC component's rooms by [`migrate::prosody_muc`]); PEP nodes and XEP-0048 bookmarks turned into XEP-0402 in [`migrate::pep`]; every source becomes stored records ([`storage::Record`], grouped per account in [`migrate::model`]) checked (SASLprep of clear passwords) and written per account by [`migrate::import`] |
//! | [`cluster`] | several nodes as one server, through NATS ([`cluster::Node`], installed in the core as its [`core::cluster::Cluster`]): each node's own subject `oxpecker.node.<name>` for forwarded stanzas ([`cluster::wire`]: serialised once, delivered there by local delivery only), kicks and admin closes (request/reply), answers to server-sent IQs that reached the wrong node; the session directory in JetStream key-value with a heartbeat per node and a watched local copy that routing reads with no round trip ([`cluster::directory`]; its entries also say which sessions enabled carbons or fetched their roster); a dead node's sessions announced unavailable by one survivor ([`cluster::departed`]); group chat rooms hosted by one node at a time, the holder of the room's lease, with stanzas for a room forwarded to it and a dead holder's rooms taken over from storage ([`cluster::rooms`]); s2s stream leases, one outgoing stream per domain pair in the cluster with the other nodes forwarding to the holder, and the shared dialback secret ([`cluster::s2s`]); admin operations asked of other nodes ([`cluster::ops`]) |
//! | [`server`] | [`server::Server`]: opens the store, builds the core, starts listeners, shuts down |
//!
//! Dependencies point downward: `web` → `http`, `c2s`; `c2s`, `s2s`, `cluster`, `http`, `control`, `modules` → `core` → `storage`,
//! `auth`, `config`, `xmpp`. `core` never imports `c2s` or `http`; `xmpp` imports nothing of ours.
//! `storage` reads only its own section of `config` (`StorageConfig`, to pick the engine).
//! `core` and `config` never name `modules`: `server` (and `main`) hand the module table to
//! [`core::Core::new`] and to [`config::Config::check_modules`]. One deliberate exception:
//! `http` and `c2s` call a few module functions that are the module's public API (vCards for
//! `/vcards`, in-band registration before authentication).
//!
//! ## The way data flows
//! ```text
//! socket ─► TLS ─► StreamParser ─► c2s session (stamp `from`) ─► Core::route ─► host event
//!        ─► module handlers by priority ─► core::delivery decides ─► SessionHandle queue ─► writer task ─► socket
//! curl ─► axum ─► admin_rest::entry (host, allowlist, auth, route family) ─► handler ─► the same managers and Core::route
//! ```
//! A stanza is parsed once into an owned [`xmpp::Element`], routed once, and serialised once per
//! recipient by that recipient's writer task. The router never knows features: it fires events
//! named like Prosody's (`iq-get/host/urn:xmpp:ping:ping`, `message/bare`, `presence/full`,
//! `message/offline`) and applies RFC 6120/6121 defaults (e.g. `service-unavailable`) when no
//! module handles them. Which sessions receive a stanza is decided once, in [`core::delivery`]:
//! the router, carbons, push and the admin API ask it; a new path that delivers asks it too.
//! A caller that answers for a stanza (the admin API's messages) routes it with
//! [`core::Core::route_with_outcome`], which says whether it was refused (a bounce, or a
//! module's error such as an offline store that could not write).
//!
//! ## Where a new feature goes
//! A new XMPP feature is a module: a file in `src/modules/` implementing
//! [`core::modules::Module`], listed in [`modules::BUILTIN`]. It hooks events and adds disco
//! features through its [`core::modules::ModuleContext`], which tracks everything so unloading
//! removes it all. State it keeps goes through [`storage::Store`]; logic the HTTP side also
//! needs goes in a manager under `core/` that both faces call.

/// The memory allocator of every program built on this crate: jemalloc (issue #19). Against
/// glibc's `malloc` it cut the server CPU per routed message and the memory per idle session,
/// and it reports its own use through a safe call ([`core::process::heap_bytes`]); the figures
/// are in README.md, "Benchmarks". This `static` holds no state of ours: it is an immutable unit
/// value naming the allocator (jemalloc's own arenas and caches are its business, as glibc's
/// were), so two servers in one process still share nothing through it, and it needs no
/// `unsafe`. Fuzz builds (`--cfg fuzzing`) keep the system allocator for AddressSanitizer.
#[cfg(not(fuzzing))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

pub mod auth;
pub mod c2s;
pub mod cluster;
pub mod config;
pub mod control;
pub mod core;
pub mod http;
pub mod logging;
pub mod migrate;
pub mod modules;
pub mod s2s;
pub mod server;
pub mod storage;
pub mod tls;
pub mod web;
pub mod xmpp;

pub use server::Server;
