//! XEP-0313 Message Archive Management (`urn:xmpp:mam:2`) with XEP-0359 stanza ids.
//!
//! Every chat/normal message with a body that a local user sends or receives is appended to that
//! user's archive (archive store [`STORE`], keyed by node) unless a XEP-0334 hint or the user's
//! preferences say otherwise. The recipient's copy gets a `<stanza-id by=USER/>` equal to its
//! archive id before delivery; stanza ids a client forged with our user's JID are stripped.
//!
//! Queries take the data-form fields `with`, `start`, `end`, `before-id`, `after-id`, `ids`
//! (`urn:xmpp:mam:2#extended`) and XEP-0059 result set management; results go to the querying
//! resource in chronological order, then the `<fin/>` IQ result. Items are indexed by the
//! partner's bare JID, so a full JID in `with` matches every resource of that contact. Archive
//! times have one-second resolution. Preferences (`default`,
//! `<always/>`, `<never/>`) live in keyval store [`PREFS_STORE`]. Retention
//! (`mam_archive_expires_after`) is applied by a periodic task the module owns; unloading the
//! module stops it.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::core::Core;
use crate::core::accounts::now;
use crate::core::events::{Flow, Origin, StanzaEvent, handler};
use crate::core::modules::{LoadError, Module, ModuleContext, StoreKind};
use crate::core::priority;
use crate::storage::{ArchiveItem, ArchiveQuery, ArchiveStore, StorageError};
use crate::xmpp::error::{StanzaError, StanzaErrorCondition as C};
use crate::xmpp::parser::parse_element;
use crate::xmpp::{Element, Jid, datetime, ns, stanza};

/// The archive store holding users' message archives.
pub const STORE: &str = "archive";
/// The keyval store holding users' archiving preferences.
pub const PREFS_STORE: &str = "mam_prefs";

/// Most items one page may hold, whatever the configuration says.
pub const MAX_PAGE_LIMIT: usize = 1000;
/// Most JIDs in each preference list and most ids in an `ids` query.
pub const MAX_LIST: usize = 1000;
/// Items deleted per storage call while expiring.
const EXPIRE_BATCH: usize = 10_000;

/// The `mam` module.
pub struct Mam;

impl Module for Mam {
    fn name(&self) -> &'static str {
        "mam"
    }

    fn options(&self) -> &'static [&'static str] {
        &[
            "mam_max_page",
            "mam_default_policy",
            "mam_archive_expires_after",
            "mam_expiry_interval",
        ]
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        // Opened through the API: what it holds for an account goes with the account.
        ctx.open_store(STORE, StoreKind::Archive);
        let max_page = ctx.option_integer("mam_max_page", 100, 1, MAX_PAGE_LIMIT as i64) as usize;
        let policy = ctx.option_enum("mam_default_policy", "always", &["never", "roster"]);
        let default_policy = Policy::parse(&policy).unwrap_or_default();
        if let Some(max_age) = ctx.option_period("mam_archive_expires_after", None) {
            let every = ctx
                .option_period("mam_expiry_interval", Some(Duration::from_secs(3600)))
                .unwrap_or(Duration::from_secs(3600))
                .max(Duration::from_secs(1));
            let max_age = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
            let core = ctx.core();
            let host = ctx.host().to_string();
            // Runs once right away, then every `every`; the timer is removed on unload.
            ctx.add_timer(Duration::ZERO, move || {
                let core = core.clone();
                let host = host.clone();
                async move {
                    let core = core.upgrade()?;
                    match expire(&core, &host, max_age).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(%host, deleted = n, "expired archived messages"),
                        Err(e) => tracing::warn!(%host, error = %e, "archive expiry failed"),
                    }
                    Some(every)
                }
            });
        }

        for f in [ns::MAM, ns::MAM_EXTENDED, ns::SID] {
            ctx.add_feature(f);
            ctx.add_item(super::disco::ACCOUNT_FEATURE, json!(f));
        }
        for event in ["message/bare", "message/full"] {
            ctx.hook(
                event,
                priority::ARCHIVE,
                handler(move |ev| async move { Flow::Continue(inbound(ev, default_policy).await) }),
            );
        }
        for event in ["pre-message/bare", "pre-message/full"] {
            ctx.hook(
                event,
                priority::ARCHIVE,
                handler(
                    move |ev| async move { Flow::Continue(outbound(ev, default_policy).await) },
                ),
            );
        }
        ctx.hook(
            &format!("iq-set/bare/{}:query", ns::MAM),
            priority::HANDLER,
            handler(move |ev| async move {
                query(&ev, max_page).await;
                Flow::Handled
            }),
        );
        ctx.hook(
            &format!("iq-get/bare/{}:query", ns::MAM),
            priority::HANDLER,
            handler(|ev| async move {
                if own(&ev).await {
                    let q = Element::new("query", ns::MAM).child(query_form());
                    ev.reply(stanza::iq_result(&ev.stanza, Some(q))).await;
                }
                Flow::Handled
            }),
        );
        ctx.hook(
            &format!("iq-get/bare/{}:metadata", ns::MAM),
            priority::HANDLER,
            handler(|ev| async move {
                metadata(&ev).await;
                Flow::Handled
            }),
        );
        ctx.hook(
            &format!("iq-get/bare/{}:prefs", ns::MAM),
            priority::HANDLER,
            handler(move |ev| async move {
                if own(&ev).await {
                    match load_prefs(&ev.core, &ev.to, default_policy).await {
                        Ok(p) => {
                            ev.reply(stanza::iq_result(&ev.stanza, Some(p.to_element())))
                                .await
                        }
                        Err(_) => ev.reply_error(C::InternalServerError.into()).await,
                    }
                }
                Flow::Handled
            }),
        );
        ctx.hook(
            &format!("iq-set/bare/{}:prefs", ns::MAM),
            priority::HANDLER,
            handler(|ev| async move {
                set_prefs(&ev).await;
                Flow::Handled
            }),
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Archiving

/// Whether a message is archived at all (XEP-0313 §5.1.1 with XEP-0334 hints): chat or normal,
/// with a body (or a `<store/>` hint), no `<no-store/>`/`<no-permanent-store/>`, not a carbon or
/// archive result wrapper.
pub fn archivable(msg: &Element) -> bool {
    if !matches!(msg.get_attr("type").unwrap_or("normal"), "chat" | "normal") {
        return false;
    }
    if msg.get_child("no-store", ns::HINTS).is_some()
        || msg.get_child("no-permanent-store", ns::HINTS).is_some()
        || msg.get_child("result", ns::MAM).is_some()
        || msg.get_child("received", ns::CARBONS).is_some()
        || msg.get_child("sent", ns::CARBONS).is_some()
    {
        return false;
    }
    msg.get_child("body", ns::CLIENT).is_some() || msg.get_child("store", ns::HINTS).is_some()
}

/// Removes `<stanza-id/>` elements claiming to be by `by` (XEP-0359 §4: only we may set them).
pub fn strip_stanza_ids(msg: &mut Element, by: &Jid) {
    if msg
        .children()
        .any(|c| c.is("stanza-id", ns::SID) && c.get_attr("by") == Some(by.as_str()))
    {
        let others: Vec<Element> = msg
            .children()
            .filter(|c| c.is("stanza-id", ns::SID) && c.get_attr("by") != Some(by.as_str()))
            .cloned()
            .collect();
        msg.remove_children("stanza-id", ns::SID);
        for c in others {
            msg.push(c);
        }
    }
}

/// The recipient's copy: archive, then stamp the delivered stanza with its archive id.
async fn inbound(mut ev: StanzaEvent, default: Policy) -> StanzaEvent {
    let user = ev.to.bare();
    if user.node().is_none() {
        return ev;
    }
    strip_stanza_ids(&mut ev.stanza, &user);
    if !archivable(&ev.stanza) || !ev.core.accounts.exists(&user).await.unwrap_or(false) {
        return ev;
    }
    let partner = ev.from.clone();
    if let Some(id) = archive(&ev.core, &user, &partner, &ev.stanza, "in", default).await {
        ev.stanza.push(
            Element::new("stanza-id", ns::SID)
                .attr("id", id)
                .attr("by", user.as_str()),
        );
    }
    ev
}

/// The sender's copy of a message a local client sends.
async fn outbound(mut ev: StanzaEvent, default: Policy) -> StanzaEvent {
    let user = ev.from.bare();
    if ev.origin.session().is_none() || user.node().is_none() {
        return ev;
    }
    strip_stanza_ids(&mut ev.stanza, &user);
    // A message to one's own account is archived once, on receipt.
    if archivable(&ev.stanza) && ev.to.bare() != user {
        let partner = ev.to.clone();
        archive(&ev.core, &user, &partner, &ev.stanza, "out", default).await;
    }
    ev
}

/// An archived message as stored: the JSON object `{xml, dir, with}` that queries read back,
/// serialised straight from borrowed parts (no `Value` tree: no map, no owned `dir` or `with`).
#[derive(Serialize)]
struct Stored<'a> {
    /// The stanza as sent.
    xml: &'a str,
    /// `in` (received) or `out` (sent).
    dir: &'a str,
    /// The partner's full JID.
    with: &'a str,
}

/// Appends `msg` to `user`'s archive if their preferences allow; returns the archive id.
async fn archive(
    core: &Arc<Core>,
    user: &Jid,
    partner: &Jid,
    msg: &Element,
    dir: &str,
    default: Policy,
) -> Option<String> {
    let prefs = match load_prefs(core, user, default).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(%user, error = %e, "cannot read archive preferences; not archiving");
            return None;
        }
    };
    let keep = match prefs.decide(partner) {
        Some(k) => k,
        None => matches!(core.roster_item(user, &partner.bare()).await, Ok(Some(_))),
    };
    if !keep {
        return None;
    }
    let node = user.node()?;
    let xml = msg.to_xml(ns::CLIENT);
    let value = Stored {
        xml: &xml,
        dir,
        with: partner.as_str(),
    };
    match core
        .store
        .archive(user.domain(), STORE)
        .append_lazy(node, None, now(), partner.bare().as_str(), value)
        .await
    {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::error!(%user, error = %e, "message archive append failed");
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Preferences

/// The default archiving policy (XEP-0313 §6.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Archive everything.
    #[default]
    Always,
    /// Archive nothing (except `<always/>` JIDs).
    Never,
    /// Archive messages with contacts in the roster.
    Roster,
}

impl Policy {
    /// Parses `always`, `never` or `roster`.
    pub fn parse(s: &str) -> Option<Policy> {
        match s {
            "always" => Some(Policy::Always),
            "never" => Some(Policy::Never),
            "roster" => Some(Policy::Roster),
            _ => None,
        }
    }

    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Always => "always",
            Policy::Never => "never",
            Policy::Roster => "roster",
        }
    }
}

/// A user's archiving preferences.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prefs {
    /// Policy for JIDs on neither list.
    pub default: Policy,
    /// JIDs always archived.
    #[serde(default)]
    pub always: Vec<String>,
    /// JIDs never archived.
    #[serde(default)]
    pub never: Vec<String>,
}

fn list_matches(list: &[String], jid: &Jid) -> bool {
    let bare = jid.bare();
    list.iter().any(|e| {
        e == jid.as_str() || e == bare.as_str() || (e == jid.domain() && jid.node().is_some())
    })
}

impl Prefs {
    /// Whether messages with `partner` are archived; `None` means "if on the roster".
    pub fn decide(&self, partner: &Jid) -> Option<bool> {
        if list_matches(&self.never, partner) {
            return Some(false);
        }
        if list_matches(&self.always, partner) {
            return Some(true);
        }
        match self.default {
            Policy::Always => Some(true),
            Policy::Never => Some(false),
            Policy::Roster => None,
        }
    }

    /// The `<prefs/>` element.
    pub fn to_element(&self) -> Element {
        let list = |name: &str, jids: &[String]| {
            let mut el = Element::new(name, ns::MAM);
            for j in jids {
                el.push(Element::new("jid", ns::MAM).text(j.clone()));
            }
            el
        };
        Element::new("prefs", ns::MAM)
            .attr("default", self.default.as_str())
            .child(list("always", &self.always))
            .child(list("never", &self.never))
    }

    /// Parses a `<prefs/>` element from a set request.
    pub fn from_element(el: &Element) -> Result<Prefs, String> {
        let default = match el.get_attr("default") {
            Some(d) => Policy::parse(d).ok_or_else(|| format!("unknown default {d:?}"))?,
            None => return Err("the default attribute is required".into()),
        };
        let list = |name: &str| -> Result<Vec<String>, String> {
            let mut out: Vec<String> = Vec::new();
            if let Some(l) = el.get_child(name, ns::MAM) {
                for j in l.children().filter(|c| c.is("jid", ns::MAM)) {
                    let jid = Jid::parse(j.text_content().trim())
                        .map_err(|_| format!("invalid JID in <{name}/>"))?;
                    if !out.iter().any(|x| x == jid.as_str()) {
                        out.push(jid.to_string());
                    }
                    if out.len() > MAX_LIST {
                        return Err(format!("at most {MAX_LIST} JIDs per list"));
                    }
                }
            }
            Ok(out)
        };
        Ok(Prefs {
            default,
            always: list("always")?,
            never: list("never")?,
        })
    }
}

/// The stored preferences of `user`, or the server default.
pub async fn load_prefs(core: &Core, user: &Jid, default: Policy) -> Result<Prefs, StorageError> {
    let Some(node) = user.node() else {
        return Ok(Prefs::default());
    };
    let stored = core
        .store
        .keyval(user.domain(), PREFS_STORE)
        .get(node)
        .await?;
    Ok(stored
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or(Prefs {
            default,
            ..Prefs::default()
        }))
}

async fn set_prefs(ev: &StanzaEvent) {
    if !own(ev).await {
        return;
    }
    let Some(el) = ev.stanza.get_child("prefs", ns::MAM) else {
        return;
    };
    let prefs = match Prefs::from_element(el) {
        Ok(p) => p,
        Err(e) => {
            ev.reply_error(StanzaError::with_text(C::BadRequest, e))
                .await;
            return;
        }
    };
    let node = ev.to.node().unwrap_or_default();
    let value = serde_json::to_value(&prefs).unwrap_or_default();
    match ev
        .core
        .store
        .keyval(ev.to.domain(), PREFS_STORE)
        .set(node, Some(value))
        .await
    {
        Ok(()) => {
            ev.reply(stanza::iq_result(&ev.stanza, Some(prefs.to_element())))
                .await
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot store archive preferences");
            ev.reply_error(C::InternalServerError.into()).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Queries

/// Filters of a query's data form (XEP-0313 §4.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Conversation partner (compared by bare JID).
    pub with: Option<Jid>,
    /// Only messages at or after this instant (unix seconds).
    pub start: Option<i64>,
    /// Only messages at or before this instant (unix seconds).
    pub end: Option<i64>,
    /// Only messages archived before this id (exclusive).
    pub before_id: Option<String>,
    /// Only messages archived after this id (exclusive).
    pub after_id: Option<String>,
    /// Only these ids.
    pub ids: Option<Vec<String>>,
}

/// Why a query failed; maps to a stanza error.
#[derive(Debug, PartialEq, Eq)]
pub enum QueryError {
    /// Malformed request.
    BadRequest(String),
    /// An id given by the client is not in the archive.
    ItemNotFound(String),
    /// A valid request we do not implement (RSM `<index/>`).
    NotImplemented(String),
    /// Storage failed.
    Internal,
}

impl QueryError {
    /// The stanza error a client gets for this failure.
    pub fn to_stanza_error(&self) -> StanzaError {
        match self {
            QueryError::BadRequest(t) => StanzaError::with_text(C::BadRequest, t.clone()),
            QueryError::ItemNotFound(id) => {
                StanzaError::with_text(C::ItemNotFound, format!("no archived item {id}"))
            }
            QueryError::NotImplemented(t) => {
                StanzaError::with_text(C::FeatureNotImplemented, t.clone())
            }
            QueryError::Internal => C::InternalServerError.into(),
        }
    }
}

impl From<StorageError> for QueryError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::ItemNotFound(id) => QueryError::ItemNotFound(id),
            e => {
                tracing::error!(error = %e, "archive query failed");
                QueryError::Internal
            }
        }
    }
}

fn field_values(field: &Element) -> Vec<String> {
    field
        .children()
        .filter(|c| c.is("value", ns::DATA))
        .map(|v| v.text_content().trim().to_string())
        .collect()
}

fn single(field: &Element, var: &str) -> Result<Option<String>, QueryError> {
    let mut v = field_values(field);
    match v.len() {
        0 => Ok(None),
        1 => Ok(v.pop().filter(|s| !s.is_empty())),
        _ => Err(QueryError::BadRequest(format!(
            "field {var} takes one value"
        ))),
    }
}

/// Parses the query's data form (absent form = no filters).
pub fn parse_form(x: Option<&Element>) -> Result<Filter, QueryError> {
    let mut f = Filter::default();
    let Some(x) = x else {
        return Ok(f);
    };
    if x.get_attr("type")
        .is_some_and(|t| t != "submit" && t != "form")
    {
        return Err(QueryError::BadRequest(
            "the form must be of type submit".into(),
        ));
    }
    for field in x.children().filter(|c| c.is("field", ns::DATA)) {
        let var = field.get_attr("var").unwrap_or_default();
        let bad = |what: &str| QueryError::BadRequest(format!("invalid {what} in field {var}"));
        match var {
            "FORM_TYPE" => {
                if single(field, var)?.as_deref() != Some(ns::MAM) {
                    return Err(QueryError::BadRequest(format!(
                        "FORM_TYPE must be {}",
                        ns::MAM
                    )));
                }
            }
            "with" => {
                f.with = single(field, var)?
                    .map(|s| Jid::parse(&s).map_err(|_| bad("JID")))
                    .transpose()?
            }
            "start" => {
                f.start = single(field, var)?
                    .map(|s| datetime::parse(&s).ok_or_else(|| bad("date-time")))
                    .transpose()?
            }
            "end" => {
                f.end = single(field, var)?
                    .map(|s| datetime::parse(&s).ok_or_else(|| bad("date-time")))
                    .transpose()?
            }
            "before-id" => f.before_id = single(field, var)?,
            "after-id" => f.after_id = single(field, var)?,
            "ids" => {
                let ids: Vec<String> = field_values(field)
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect();
                if ids.len() > MAX_LIST {
                    return Err(QueryError::BadRequest(format!("at most {MAX_LIST} ids")));
                }
                f.ids = Some(ids);
            }
            other => {
                return Err(QueryError::BadRequest(format!(
                    "unsupported field {other:?}"
                )));
            }
        }
    }
    Ok(f)
}

/// A XEP-0059 request: page size and position.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rsm {
    /// Requested page size.
    pub max: Option<usize>,
    /// Items after this id.
    pub after: Option<String>,
    /// `Some(None)` for an empty `<before/>` (the last page), `Some(Some(id))` for items before id.
    pub before: Option<Option<String>>,
}

/// Parses an optional `<set xmlns='http://jabber.org/protocol/rsm'/>`.
pub fn parse_rsm(set: Option<&Element>) -> Result<Rsm, QueryError> {
    let mut r = Rsm::default();
    let Some(set) = set else {
        return Ok(r);
    };
    if set.get_child("index", ns::RSM).is_some() {
        return Err(QueryError::NotImplemented(
            "paging by index is not supported".into(),
        ));
    }
    if let Some(m) = set.get_child("max", ns::RSM) {
        let n =
            m.text_content().trim().parse::<usize>().map_err(|_| {
                QueryError::BadRequest("<max/> must be a non-negative integer".into())
            })?;
        r.max = Some(n);
    }
    if let Some(a) = set.get_child("after", ns::RSM) {
        let id = a.text_content().trim().to_string();
        if id.is_empty() {
            return Err(QueryError::BadRequest("<after/> needs an id".into()));
        }
        r.after = Some(id);
    }
    if let Some(b) = set.get_child("before", ns::RSM) {
        let id = b.text_content().trim().to_string();
        r.before = Some((!id.is_empty()).then_some(id));
    }
    Ok(r)
}

/// One page of a query's results.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    /// The items, oldest first.
    pub items: Vec<ArchiveItem>,
    /// No further items in the paging direction.
    pub complete: bool,
    /// Items matching the whole query, when known.
    pub count: Option<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pick {
    Later,
    Earlier,
}

/// Of two bounds on the same side, the tighter one (both must exist).
async fn tighter(
    archive: &ArchiveStore,
    user: &str,
    a: Option<&String>,
    b: Option<&String>,
    pick: Pick,
) -> Result<Option<String>, QueryError> {
    let (a, b) = match (a, b) {
        (None, None) => return Ok(None),
        (Some(x), None) | (None, Some(x)) => return Ok(Some(x.clone())),
        (Some(a), Some(b)) => (a, b),
    };
    let probe = ArchiveQuery {
        ids: Some(vec![b.clone()]),
        limit: Some(1),
        ..ArchiveQuery::default()
    };
    if archive.find(user, &probe).await?.items.is_empty() {
        return Err(QueryError::ItemNotFound(b.clone()));
    }
    let probe = match pick {
        Pick::Later => ArchiveQuery {
            after: Some(a.clone()),
            ..probe
        },
        Pick::Earlier => ArchiveQuery {
            before: Some(a.clone()),
            ..probe
        },
    };
    let b_is_tighter = !archive.find(user, &probe).await?.items.is_empty();
    Ok(Some(if b_is_tighter { b.clone() } else { a.clone() }))
}

/// Runs a query on `user`'s archive: filters, then one RSM page of at most `cap` items.
pub async fn run_query(
    archive: &ArchiveStore,
    user: &str,
    filter: &Filter,
    rsm: &Rsm,
    cap: usize,
) -> Result<Page, QueryError> {
    let max = rsm.max.unwrap_or(cap).min(cap);
    let rsm_before = rsm.before.clone().flatten();
    let after = tighter(
        archive,
        user,
        filter.after_id.as_ref(),
        rsm.after.as_ref(),
        Pick::Later,
    )
    .await?;
    let before = tighter(
        archive,
        user,
        filter.before_id.as_ref(),
        rsm_before.as_ref(),
        Pick::Earlier,
    )
    .await?;
    let reverse = rsm.before.is_some();
    let q = ArchiveQuery {
        start: filter.start,
        end: filter.end,
        with: filter.with.as_ref().map(|w| w.bare().to_string()),
        before,
        after,
        limit: Some(max),
        reverse,
        // The store's total ignores before/after, which are filters only when given in the form.
        total: filter.before_id.is_none() && filter.after_id.is_none(),
        ids: filter.ids.clone(),
    };
    let page = archive.find(user, &q).await?;
    let mut items = page.items;
    if reverse {
        items.reverse();
    }
    Ok(Page {
        items,
        complete: page.complete,
        count: page.total,
    })
}

/// The query form offered to clients (XEP-0313 §4.1.2 form discovery).
pub fn query_form() -> Element {
    let field = |var: &str, ty: &str| {
        Element::new("field", ns::DATA)
            .attr("type", ty)
            .attr("var", var)
    };
    Element::new("x", ns::DATA)
        .attr("type", "form")
        .child(field("FORM_TYPE", "hidden").child(Element::new("value", ns::DATA).text(ns::MAM)))
        .child(field("with", "jid-single"))
        .child(field("start", "text-single"))
        .child(field("end", "text-single"))
        .child(field("before-id", "text-single"))
        .child(field("after-id", "text-single"))
        .child(field("ids", "list-multi"))
}

/// Whether the IQ is about the requester's own account; answers `forbidden` if not.
async fn own(ev: &StanzaEvent) -> bool {
    if ev.to == ev.from.bare() && ev.to.node().is_some() {
        return true;
    }
    ev.reply_error(StanzaError::with_text(
        C::Forbidden,
        "only the account owner may use its archive",
    ))
    .await;
    false
}

/// The `<message><result><forwarded>…` for one archived item.
pub fn result_message(
    user: &Jid,
    to: &Jid,
    queryid: Option<&str>,
    item: &ArchiveItem,
) -> Option<Element> {
    let original = item.value["xml"]
        .as_str()
        .and_then(|x| parse_element(x).ok())?;
    let mut result = Element::new("result", ns::MAM).attr("id", item.id.clone());
    if let Some(q) = queryid {
        result.set_attr("queryid", Some(q.to_string()));
    }
    result.push(
        Element::new("forwarded", ns::FORWARD)
            .child(Element::new("delay", ns::DELAY).attr("stamp", datetime::format(item.when)))
            .child(original),
    );
    Some(
        Element::new("message", ns::CLIENT)
            .attr("from", user.as_str())
            .attr("to", to.as_str())
            .attr("id", format!("mam-{}", item.id))
            .child(result),
    )
}

/// Answers a MAM query: the result messages, then the `<fin/>`.
async fn query(ev: &StanzaEvent, max_page: usize) {
    if !own(ev).await {
        return;
    }
    let Some(q) = ev.stanza.get_child("query", ns::MAM) else {
        ev.reply_error(C::BadRequest.into()).await;
        return;
    };
    let queryid = q.get_attr("queryid");
    let flip = q.get_child("flip-page", ns::MAM).is_some();
    let parsed = parse_form(q.get_child("x", ns::DATA))
        .and_then(|f| parse_rsm(q.get_child("set", ns::RSM)).map(|r| (f, r)));
    let (filter, rsm) = match parsed {
        Ok(p) => p,
        Err(e) => {
            ev.reply_error(e.to_stanza_error()).await;
            return;
        }
    };
    // A page must fit in the session's send queue with room to spare.
    let queue = ev.core.config.load().c2s.send_queue;
    let cap = max_page.min((queue / 2).max(1));
    let user = ev.to.clone();
    let node = user.node().unwrap_or_default().to_string();
    let archive = ev.core.store.archive(user.domain(), STORE);
    let page = match run_query(&archive, &node, &filter, &rsm, cap).await {
        Ok(p) => p,
        Err(e) => {
            ev.reply_error(e.to_stanza_error()).await;
            return;
        }
    };
    let session = match &ev.origin {
        Origin::Client(s) if s.jid == ev.from => Some(s.clone()),
        _ => None,
    };
    let mut items: Vec<&ArchiveItem> = page.items.iter().collect();
    if flip {
        items.reverse();
    }
    for item in &items {
        let Some(m) = result_message(&user, &ev.from, queryid, item) else {
            continue;
        };
        match &session {
            Some(s) => {
                if !s.send(m) {
                    return;
                }
            }
            None => ev.core.send(m).await,
        }
    }
    let mut set = Element::new("set", ns::RSM);
    if let (Some(first), Some(last)) = (page.items.first(), page.items.last()) {
        set.push(Element::new("first", ns::RSM).text(first.id.clone()));
        set.push(Element::new("last", ns::RSM).text(last.id.clone()));
    }
    if let Some(n) = page.count {
        set.push(Element::new("count", ns::RSM).text(n.to_string()));
    }
    let mut fin = Element::new("fin", ns::MAM);
    if page.complete {
        fin.set_attr("complete", Some("true".into()));
    }
    fin.push(set);
    ev.reply(stanza::iq_result(&ev.stanza, Some(fin))).await;
}

/// XEP-0313 §7 archive metadata: the first and last archived items.
async fn metadata(ev: &StanzaEvent) {
    if !own(ev).await {
        return;
    }
    let node = ev.to.node().unwrap_or_default();
    let archive = ev.core.store.archive(ev.to.domain(), STORE);
    let edge = |reverse| ArchiveQuery {
        limit: Some(1),
        reverse,
        ..ArchiveQuery::default()
    };
    let (first, last) = match (
        archive.find(node, &edge(false)).await,
        archive.find(node, &edge(true)).await,
    ) {
        (Ok(f), Ok(l)) => (f.items.into_iter().next(), l.items.into_iter().next()),
        _ => {
            ev.reply_error(C::InternalServerError.into()).await;
            return;
        }
    };
    let mut meta = Element::new("metadata", ns::MAM);
    for (name, item) in [("start", first), ("end", last)] {
        if let Some(i) = item {
            meta.push(
                Element::new(name, ns::MAM)
                    .attr("id", i.id)
                    .attr("timestamp", datetime::format(i.when)),
            );
        }
    }
    ev.reply(stanza::iq_result(&ev.stanza, Some(meta))).await;
}

// ---------------------------------------------------------------------------------------------
// Retention

/// Deletes every archived message on `host` older than `max_age` seconds; returns how many.
pub async fn expire(core: &Core, host: &str, max_age: i64) -> Result<usize, StorageError> {
    let archive = core.store.archive(host, STORE);
    let cutoff = now().saturating_sub(max_age);
    let q = ArchiveQuery {
        end: Some(cutoff.saturating_sub(1)),
        limit: Some(EXPIRE_BATCH),
        ..ArchiveQuery::default()
    };
    let mut total = 0;
    for user in archive.users().await? {
        loop {
            let n = archive.delete(&user, &q).await?;
            total += n;
            if n < EXPIRE_BATCH {
                break;
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::storage::Store;

    fn form(fields: &[(&str, &[&str])]) -> Element {
        let mut x = Element::new("x", ns::DATA).attr("type", "submit");
        for (var, values) in fields {
            let mut f = Element::new("field", ns::DATA).attr("var", *var);
            for v in *values {
                f.push(Element::new("value", ns::DATA).text(*v));
            }
            x.push(f);
        }
        x
    }

    #[test]
    fn form_fields_parse_and_bad_values_are_refused() {
        let f = parse_form(Some(&form(&[
            ("FORM_TYPE", &[ns::MAM]),
            ("with", &["Bob@Localhost/res"]),
            ("start", &["2020-01-01T00:00:00Z"]),
            ("end", &["2020-01-02T00:00:00.5+01:00"]),
            ("after-id", &["a1"]),
            ("before-id", &["b1"]),
            ("ids", &["x", "y"]),
        ])))
        .unwrap();
        assert_eq!(f.with.unwrap().as_str(), "bob@localhost/res");
        assert_eq!(f.start, Some(1_577_836_800));
        assert_eq!(f.end, Some(1_577_836_800 + 86_400 - 3600));
        assert_eq!(f.after_id.as_deref(), Some("a1"));
        assert_eq!(f.before_id.as_deref(), Some("b1"));
        assert_eq!(f.ids, Some(vec!["x".into(), "y".into()]));
        assert_eq!(parse_form(None).unwrap(), Filter::default());
        for bad in [
            form(&[("FORM_TYPE", &["urn:other"])]),
            form(&[("with", &["a@@b"])]),
            form(&[("start", &["yesterday"])]),
            // A 12-digit year would overflow the seconds: refused, never a panic.
            form(&[("start", &["999999999999-01-01T00:00:00Z"])]),
            form(&[("end", &["-99999999999-12-31T23:59:59Z"])]),
            form(&[("with", &["a@b", "c@d"])]),
            form(&[("fulltext", &["hi"])]),
        ] {
            assert!(
                matches!(parse_form(Some(&bad)), Err(QueryError::BadRequest(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rsm_parses_max_after_and_empty_before() {
        let set = Element::new("set", ns::RSM)
            .child(Element::new("max", ns::RSM).text("10"))
            .child(Element::new("after", ns::RSM).text("id1"));
        let r = parse_rsm(Some(&set)).unwrap();
        assert_eq!(
            r,
            Rsm {
                max: Some(10),
                after: Some("id1".into()),
                before: None
            }
        );
        let last = Element::new("set", ns::RSM).child(Element::new("before", ns::RSM));
        assert_eq!(parse_rsm(Some(&last)).unwrap().before, Some(None));
        let bad = Element::new("set", ns::RSM).child(Element::new("max", ns::RSM).text("-1"));
        assert!(matches!(
            parse_rsm(Some(&bad)),
            Err(QueryError::BadRequest(_))
        ));
        let idx = Element::new("set", ns::RSM).child(Element::new("index", ns::RSM).text("3"));
        assert!(matches!(
            parse_rsm(Some(&idx)),
            Err(QueryError::NotImplemented(_))
        ));
    }

    #[test]
    fn archivable_follows_types_bodies_and_hints() {
        let body = || Element::new("body", ns::CLIENT).text("hi");
        let msg = |ty: Option<&str>| {
            let mut m = Element::new("message", ns::CLIENT);
            if let Some(t) = ty {
                m.set_attr("type", Some(t.into()));
            }
            m
        };
        assert!(archivable(&msg(Some("chat")).child(body())));
        assert!(archivable(&msg(None).child(body())));
        assert!(!archivable(&msg(Some("headline")).child(body())));
        assert!(!archivable(&msg(Some("error")).child(body())));
        assert!(!archivable(&msg(Some("groupchat")).child(body())));
        assert!(!archivable(&msg(Some("chat"))));
        assert!(archivable(
            &msg(Some("chat")).child(Element::new("store", ns::HINTS))
        ));
        assert!(!archivable(
            &msg(Some("chat"))
                .child(body())
                .child(Element::new("no-store", ns::HINTS))
        ));
        assert!(!archivable(
            &msg(Some("chat"))
                .child(body())
                .child(Element::new("no-permanent-store", ns::HINTS))
        ));
    }

    #[test]
    fn forged_stanza_ids_are_stripped() {
        let me = Jid::parse("alice@localhost").unwrap();
        let mut m = Element::new("message", ns::CLIENT)
            .child(Element::new("body", ns::CLIENT).text("x"))
            .child(
                Element::new("stanza-id", ns::SID)
                    .attr("by", "alice@localhost")
                    .attr("id", "f"),
            )
            .child(
                Element::new("stanza-id", ns::SID)
                    .attr("by", "other@x")
                    .attr("id", "o"),
            );
        strip_stanza_ids(&mut m, &me);
        let ids: Vec<_> = m
            .children()
            .filter(|c| c.is("stanza-id", ns::SID))
            .collect();
        assert_eq!(ids.len(), 1);
        assert_eq!(ids[0].get_attr("by"), Some("other@x"));
        assert!(m.get_child("body", ns::CLIENT).is_some());
    }

    #[test]
    fn prefs_decide_and_round_trip() {
        let p = Prefs {
            default: Policy::Roster,
            always: vec!["a@x".into()],
            never: vec!["n@x".into(), "spam.example".into()],
        };
        let j = |s| Jid::parse(s).unwrap();
        assert_eq!(p.decide(&j("a@x/r")), Some(true));
        assert_eq!(p.decide(&j("n@x")), Some(false));
        assert_eq!(p.decide(&j("z@spam.example")), Some(false));
        assert_eq!(p.decide(&j("c@x")), None);
        assert_eq!(Prefs::from_element(&p.to_element()).unwrap(), p);
        assert!(Prefs::from_element(&Element::new("prefs", ns::MAM)).is_err());
    }

    async fn filled(n: usize) -> (ArchiveStore, Vec<String>) {
        let store = Store::memory();
        let a = store.archive("h", STORE);
        let mut ids = Vec::new();
        for i in 0..n {
            let with = if i % 2 == 0 { "even@h" } else { "odd@h" };
            ids.push(
                a.append("u", None, 1000 + i as i64, with, json!({ "n": i }))
                    .await
                    .unwrap(),
            );
        }
        (a, ids)
    }

    fn ids_of(p: &Page) -> Vec<String> {
        p.items.iter().map(|i| i.id.clone()).collect()
    }

    #[tokio::test]
    async fn rsm_pages_forward_and_backward() {
        let (a, ids) = filled(25).await;
        let f = Filter::default();
        // Forward pages of 10: 10, 10, 5 (complete), no overlap.
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let rsm = Rsm {
                max: Some(10),
                after: after.clone(),
                before: None,
            };
            let p = run_query(&a, "u", &f, &rsm, 100).await.unwrap();
            assert_eq!(p.count, Some(25));
            seen.extend(ids_of(&p));
            after = p.items.last().map(|i| i.id.clone());
            if p.complete {
                break;
            }
        }
        assert_eq!(seen, ids);
        // The last page, in chronological order.
        let last = Rsm {
            max: Some(10),
            after: None,
            before: Some(None),
        };
        let p = run_query(&a, "u", &f, &last, 100).await.unwrap();
        assert_eq!(ids_of(&p), ids[15..].to_vec());
        assert!(!p.complete);
        // Before an id.
        let before = Rsm {
            max: Some(10),
            after: None,
            before: Some(Some(ids[5].clone())),
        };
        let p = run_query(&a, "u", &f, &before, 100).await.unwrap();
        assert_eq!(ids_of(&p), ids[..5].to_vec());
        assert!(p.complete);
        // The cap wins over a larger max; max 0 only counts.
        let big = Rsm {
            max: Some(500),
            ..Rsm::default()
        };
        assert_eq!(
            run_query(&a, "u", &f, &big, 7).await.unwrap().items.len(),
            7
        );
        let zero = Rsm {
            max: Some(0),
            ..Rsm::default()
        };
        let p = run_query(&a, "u", &f, &zero, 7).await.unwrap();
        assert!(p.items.is_empty() && p.count == Some(25));
        // Unknown ids are item-not-found.
        let bad = Rsm {
            after: Some("nope".into()),
            ..Rsm::default()
        };
        assert!(matches!(
            run_query(&a, "u", &f, &bad, 10).await,
            Err(QueryError::ItemNotFound(_))
        ));
    }

    #[tokio::test]
    async fn form_filters_combine_with_rsm() {
        let (a, ids) = filled(20).await;
        let with = Filter {
            with: Some(Jid::parse("odd@h/x").unwrap()),
            ..Filter::default()
        };
        let p = run_query(&a, "u", &with, &Rsm::default(), 100)
            .await
            .unwrap();
        assert_eq!(p.count, Some(10));
        assert!(p.items.iter().all(|i| i.with == "odd@h"));
        let range = Filter {
            start: Some(1005),
            end: Some(1009),
            ..Filter::default()
        };
        let p = run_query(&a, "u", &range, &Rsm::default(), 100)
            .await
            .unwrap();
        assert_eq!(ids_of(&p), ids[5..10].to_vec());
        // after-id in the form and a later RSM after: the later one wins, and vice versa.
        let f = Filter {
            after_id: Some(ids[3].clone()),
            ..Filter::default()
        };
        let later = Rsm {
            after: Some(ids[10].clone()),
            max: Some(2),
            ..Rsm::default()
        };
        let p = run_query(&a, "u", &f, &later, 100).await.unwrap();
        assert_eq!(ids_of(&p), ids[11..13].to_vec());
        let f = Filter {
            after_id: Some(ids[10].clone()),
            ..Filter::default()
        };
        let earlier = Rsm {
            after: Some(ids[3].clone()),
            max: Some(2),
            ..Rsm::default()
        };
        let p = run_query(&a, "u", &f, &earlier, 100).await.unwrap();
        assert_eq!(ids_of(&p), ids[11..13].to_vec());
        // before-id with the last page.
        let f = Filter {
            before_id: Some(ids[10].clone()),
            ..Filter::default()
        };
        let last = Rsm {
            max: Some(3),
            before: Some(None),
            ..Rsm::default()
        };
        let p = run_query(&a, "u", &f, &last, 100).await.unwrap();
        assert_eq!(ids_of(&p), ids[7..10].to_vec());
        // ids.
        let f = Filter {
            ids: Some(vec![ids[4].clone(), ids[2].clone()]),
            ..Filter::default()
        };
        let p = run_query(&a, "u", &f, &Rsm::default(), 100).await.unwrap();
        assert_eq!(ids_of(&p), vec![ids[2].clone(), ids[4].clone()]);
    }
}
