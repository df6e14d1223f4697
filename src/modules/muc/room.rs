//! One room: its configuration, affiliations, occupants, subject and history, and the XEP-0045
//! rules that change them. Every rule returns the stanzas to send (each with its `to`), so the
//! caller sends them after releasing the room's lock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use crate::core::sessions::SharedStanza;
use crate::xmpp::error::{ErrorType, StanzaError, StanzaErrorCondition as C};
use crate::xmpp::{Element, Jid, ns};

/// A long-lived relation of a user to a room (XEP-0045 §5.2), in rising order of rights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Affiliation {
    /// Banned.
    Outcast,
    /// No affiliation.
    #[default]
    None,
    /// A member.
    Member,
    /// An administrator.
    Admin,
    /// An owner.
    Owner,
}

impl Affiliation {
    /// The protocol name.
    pub fn as_str(self) -> &'static str {
        match self {
            Affiliation::Outcast => "outcast",
            Affiliation::None => "none",
            Affiliation::Member => "member",
            Affiliation::Admin => "admin",
            Affiliation::Owner => "owner",
        }
    }

    /// Parses a protocol name.
    pub fn parse(s: &str) -> Option<Affiliation> {
        Some(match s {
            "outcast" => Affiliation::Outcast,
            "none" => Affiliation::None,
            "member" => Affiliation::Member,
            "admin" => Affiliation::Admin,
            "owner" => Affiliation::Owner,
            _ => return None,
        })
    }
}

/// An occupant's role while present (XEP-0045 §5.1), in rising order of rights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Not present.
    None,
    /// Present without voice.
    Visitor,
    /// Present with voice.
    Participant,
    /// May kick and grant voice.
    Moderator,
}

impl Role {
    /// The protocol name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Visitor => "visitor",
            Role::Participant => "participant",
            Role::Moderator => "moderator",
        }
    }

    /// Parses a protocol name.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "none" => Role::None,
            "visitor" => Role::Visitor,
            "participant" => Role::Participant,
            "moderator" => Role::Moderator,
            _ => return None,
        })
    }
}

/// A room's `muc#roomconfig` settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoomConfig {
    /// Natural-language name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Main language.
    pub language: String,
    /// Outlives its last occupant and a restart.
    pub persistent: bool,
    /// Listed in the service's disco#items.
    pub public: bool,
    /// Only members (and above) may enter.
    pub members_only: bool,
    /// Only participants (voice) may speak; newcomers without affiliation are visitors.
    pub moderated: bool,
    /// Password to enter; empty = none.
    pub password: String,
    /// Most occupants; 0 = the service limit.
    pub max_occupants: usize,
    /// Real JIDs visible to everyone (non-anonymous) rather than to moderators only.
    pub whois_anyone: bool,
    /// Messages of history sent on join.
    pub history_length: usize,
    /// Occupants may invite others (else only admins and owners).
    pub allow_invites: bool,
    /// Participants may change the subject (else only moderators).
    pub change_subject: bool,
    /// Who may send private messages: `anyone`, `participants`, `moderators` or `none`.
    pub allow_pm: String,
    /// Roles whose presence is broadcast.
    pub presence_broadcast: Vec<Role>,
    /// Messages are archived (XEP-0313 at the room JID).
    pub enable_archiving: bool,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            name: String::new(),
            description: String::new(),
            language: String::new(),
            persistent: false,
            public: true,
            members_only: false,
            moderated: false,
            password: String::new(),
            max_occupants: 0,
            whois_anyone: false,
            history_length: 20,
            allow_invites: false,
            change_subject: false,
            allow_pm: "anyone".into(),
            presence_broadcast: vec![Role::Visitor, Role::Participant, Role::Moderator],
            enable_archiving: true,
        }
    }
}

/// What of a room is stored for a persistent room.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Stored {
    /// The configuration.
    pub config: RoomConfig,
    /// Affiliations by bare JID.
    pub affiliations: BTreeMap<String, Affiliation>,
    /// The subject and who set it.
    pub subject: Option<(String, String)>,
    /// The shared-roster group whose members are the room's members (`create_default_muc`).
    pub group: Option<GroupLink>,
    /// SHA-1 of the room's avatar (its vCard photo), XEP-0486.
    pub avatar_hash: Option<String>,
    /// XEP-0317 hats by bare JID.
    pub hats: BTreeMap<String, Vec<Hat>>,
}

/// An XEP-0317 hat: a URI naming the hat and its human-readable title.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hat {
    /// The URI that identifies the hat.
    pub uri: String,
    /// The title shown to people.
    pub title: String,
}

/// Most hats one user may wear in one room.
pub const MAX_HATS_PER_USER: usize = 16;
/// Longest hat URI, in bytes.
pub const MAX_HAT_URI: usize = 512;
/// Longest hat title, in characters.
pub const MAX_HAT_TITLE: usize = 128;

/// Why a hat change is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HatRefused {
    /// The URI is empty or too long, or the title too long.
    #[error("a hat needs a URI of at most 512 bytes and a title of at most 128 characters")]
    Invalid,
    /// The user already wears the most hats allowed.
    #[error("this user wears too many hats")]
    TooMany,
    /// The user does not wear that hat.
    #[error("this user does not wear that hat")]
    NotWorn,
}

/// A room's shared-roster group: `id` on user host `host`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupLink {
    /// The user host of the group.
    pub host: String,
    /// The group id.
    pub id: String,
}

/// One occupant: a nick held by one bare JID, from one or more sessions.
#[derive(Clone, Debug)]
pub struct Occupant {
    /// The nick (the resource of its occupant JID).
    pub nick: String,
    /// The real bare JID.
    pub bare: Jid,
    /// The joined sessions (full JIDs) and the presence each last sent.
    pub sessions: Vec<(Jid, Element)>,
    /// The role.
    pub role: Role,
    /// The XEP-0421 occupant id.
    pub id: String,
    /// Its available presence as others see it, built once per view (see [`PresenceViews`]).
    pub views: PresenceViews,
}

/// An occupant's presence as other occupants see it, serialised once and shared by every
/// viewer: with its real JID hidden (index 0) or shown (index 1). Built on first use and
/// forgotten ([`Occupant::forget_views`]) whenever its presence, role, affiliation, hats or
/// nick change.
#[derive(Clone, Debug, Default)]
pub struct PresenceViews([OnceLock<Arc<SharedStanza>>; 2]);

impl Occupant {
    /// Forgets the cached presence views (something they show changed).
    pub fn forget_views(&mut self) {
        self.views = PresenceViews::default();
    }
}

/// A message kept for history on join.
#[derive(Clone, Debug)]
pub struct HistoryItem {
    /// The groupchat message as broadcast (without `to`).
    pub stanza: Element,
    /// When it was sent (Unix seconds).
    pub when: i64,
    /// Its size in characters, for `maxchars`.
    pub chars: usize,
}

/// What a joining user asked for (`<history/>` of XEP-0045 §7.2.15) and may do.
#[derive(Clone, Debug, Default)]
pub struct JoinRequest {
    /// `maxstanzas`.
    pub max_stanzas: Option<usize>,
    /// `maxchars`.
    pub max_chars: Option<usize>,
    /// `seconds`.
    pub seconds: Option<i64>,
    /// `since` (Unix seconds).
    pub since: Option<i64>,
    /// The password given.
    pub password: Option<String>,
    /// The occupant id this user gets.
    pub occupant_id: String,
    /// The user is a server admin (treated as an owner).
    pub server_admin: bool,
    /// The service's occupant limit.
    pub max_occupants: usize,
    /// Now (Unix seconds).
    pub now: i64,
    /// The service changed the nick asked for (its nick rules): the self-presence says so
    /// with status 210.
    pub nick_changed: bool,
}

/// Stanzas to send: each recipient's full JID and the stanza (its `to` already set).
pub type Out = Vec<(Jid, Element)>;

/// One stanza (without `to`), serialised once, for many sessions: each recipient gets its
/// own `to`.
#[derive(Debug)]
pub struct Fanout {
    /// The stanza, without `to`.
    pub stanza: Arc<SharedStanza>,
    /// The recipients' full JIDs.
    pub to: Vec<Jid>,
}

/// The present occupants' cached presences for a newcomer's session.
#[derive(Debug)]
pub struct Roster {
    /// The newcomer's full JID.
    pub to: Jid,
    /// One presence per present occupant, in room order.
    pub presences: Vec<Arc<SharedStanza>>,
}

/// What a presence to the room sends: the roster (if a session joined), then stanzas for one
/// session each, then fan-outs.
#[derive(Debug, Default)]
pub struct Outgoing {
    /// The others' presences to a joining session, sent first.
    pub roster: Option<Roster>,
    /// Stanzas each addressed to one session, in order.
    pub each: Out,
    /// Stanzas for many sessions.
    pub shared: Vec<Fanout>,
}

impl Outgoing {
    /// Whether nothing is to be sent.
    pub fn is_empty(&self) -> bool {
        self.roster.is_none() && self.each.is_empty() && self.shared.is_empty()
    }
}

impl Outgoing {
    /// Appends what `more` sends after what `self` sends (only a join has a roster, so at most
    /// one of them carries one).
    pub fn extend(&mut self, more: impl Into<Outgoing>) {
        let more = more.into();
        if self.roster.is_none() {
            self.roster = more.roster;
        }
        self.each.extend(more.each);
        self.shared.extend(more.shared);
    }
}

impl From<Fanout> for Outgoing {
    fn from(f: Fanout) -> Self {
        Outgoing {
            roster: None,
            each: Out::new(),
            shared: vec![f],
        }
    }
}

impl From<Out> for Outgoing {
    fn from(each: Out) -> Self {
        Outgoing {
            roster: None,
            each,
            shared: Vec::new(),
        }
    }
}

/// Why an affiliation change is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AffiliationRefused {
    /// The actor's own affiliation does not allow it.
    #[error("you may not change this affiliation")]
    Forbidden,
    /// It would leave the room without an owner.
    #[error("a room needs an owner")]
    LastOwner,
}

/// A live room.
#[derive(Debug)]
pub struct Room {
    /// The room's bare JID.
    pub jid: Jid,
    /// Its configuration.
    pub config: RoomConfig,
    /// Affiliations by bare JID (`none` is not kept).
    pub affiliations: BTreeMap<String, Affiliation>,
    /// Occupants by nick.
    pub occupants: BTreeMap<String, Occupant>,
    /// Nick of each joined session, by full JID.
    sessions: HashMap<Jid, String>,
    /// The subject text and the nick that set it.
    pub subject: Option<(String, String)>,
    /// Recent messages, oldest first.
    pub history: VecDeque<HistoryItem>,
    /// Created and awaiting its owner's configuration (XEP-0045 §10.1).
    pub locked: bool,
    /// The group whose members are members here.
    pub group: Option<GroupLink>,
    /// SHA-1 of the room's avatar, if it has one.
    pub avatar_hash: Option<String>,
    /// XEP-0317 hats by bare JID (they stay while the user is away).
    pub hats: BTreeMap<String, Vec<Hat>>,
}

fn modify(condition: C, text: &str) -> StanzaError {
    StanzaError {
        kind: ErrorType::Modify,
        ..StanzaError::with_text(condition, text)
    }
}

fn status(code: u16) -> Element {
    Element::new("status", ns::MUC_USER).attr("code", code.to_string())
}

impl Room {
    /// A new empty room.
    pub fn new(jid: Jid, config: RoomConfig) -> Room {
        Room {
            jid,
            config,
            affiliations: BTreeMap::new(),
            occupants: BTreeMap::new(),
            sessions: HashMap::new(),
            subject: None,
            history: VecDeque::new(),
            locked: false,
            group: None,
            avatar_hash: None,
            hats: BTreeMap::new(),
        }
    }

    /// A room restored from storage.
    pub fn restore(jid: Jid, stored: Stored) -> Room {
        let mut room = Room::new(jid, stored.config);
        room.affiliations = stored.affiliations;
        room.subject = stored.subject;
        room.group = stored.group;
        room.avatar_hash = stored.avatar_hash;
        room.hats = stored.hats;
        room
    }

    /// What is stored of the room.
    pub fn stored(&self) -> Stored {
        Stored {
            config: self.config.clone(),
            affiliations: self.affiliations.clone(),
            subject: self.subject.clone(),
            group: self.group.clone(),
            avatar_hash: self.avatar_hash.clone(),
            hats: self.hats.clone(),
        }
    }

    /// The affiliation of a bare JID.
    pub fn affiliation(&self, bare: &Jid) -> Affiliation {
        self.affiliations
            .get(bare.as_str())
            .copied()
            .unwrap_or_default()
    }

    /// The occupant a session (full JID) has joined as.
    pub fn occupant_of(&self, full: &Jid) -> Option<&Occupant> {
        self.sessions.get(full).and_then(|n| self.occupants.get(n))
    }

    /// The occupant JID `room@service/nick`.
    pub fn occupant_jid(&self, nick: &str) -> String {
        format!("{}/{}", self.jid, nick)
    }

    /// Every joined session's full JID.
    pub fn session_jids(&self) -> impl Iterator<Item = &Jid> {
        self.occupants
            .values()
            .flat_map(|o| o.sessions.iter().map(|(j, _)| j))
    }

    fn default_role(&self, affiliation: Affiliation) -> Role {
        match affiliation {
            Affiliation::Owner | Affiliation::Admin => Role::Moderator,
            Affiliation::Member => Role::Participant,
            _ if self.config.moderated => Role::Visitor,
            _ => Role::Participant,
        }
    }

    fn sees_real_jids(&self, viewer: &Occupant) -> bool {
        self.config.whois_anyone || viewer.role == Role::Moderator
    }

    /// Whether `viewer` sees `occ`'s real JID.
    fn shows_jid(&self, occ: &Occupant, viewer: &Occupant) -> bool {
        self.sees_real_jids(viewer) || viewer.bare == occ.bare
    }

    /// `occ`'s presence as `viewer` sees it, with `codes` added.
    fn presence_for(&self, occ: &Occupant, viewer: &Occupant, codes: &[u16]) -> Element {
        self.presence_view(occ, self.shows_jid(occ, viewer), codes)
    }

    /// `occ`'s presence with its real JID shown or not, with `codes` added.
    fn presence_view(&self, occ: &Occupant, show_jid: bool, codes: &[u16]) -> Element {
        let mut p = match occ.sessions.last() {
            Some((_, p)) => {
                let mut p = p.clone();
                p.remove_children("x", ns::MUC);
                p.remove_children("x", ns::MUC_USER);
                p.remove_children("occupant-id", ns::OCCUPANT_ID);
                p.remove_children("hats", ns::HATS);
                p
            }
            None => Element::new("presence", ns::CLIENT),
        };
        p.set_attr("from", Some(self.occupant_jid(&occ.nick)));
        p.set_attr("id", None);
        let mut item = Element::new("item", ns::MUC_USER)
            .attr("affiliation", self.affiliation(&occ.bare).as_str())
            .attr("role", occ.role.as_str());
        if show_jid && let Some((j, _)) = occ.sessions.last() {
            item.set_attr("jid", Some(j.to_string()));
        }
        let mut x = Element::new("x", ns::MUC_USER).child(item);
        for c in codes {
            x.push(status(*c));
        }
        p.push(x);
        p.push(Element::new("occupant-id", ns::OCCUPANT_ID).attr("id", occ.id.clone()));
        if let Some(hats) = self.hats.get(occ.bare.as_str()).filter(|h| !h.is_empty()) {
            p.push(hats.iter().fold(Element::new("hats", ns::HATS), |x, h| {
                x.child(
                    Element::new("hat", ns::HATS)
                        .attr("uri", h.uri.clone())
                        .attr("title", h.title.clone()),
                )
            }));
        }
        p
    }

    /// The nicks of the occupant(s) whose real bare JID is `bare`.
    fn nicks_of(&self, bare: &Jid) -> Vec<String> {
        self.occupants
            .values()
            .filter(|o| &o.bare == bare)
            .map(|o| o.nick.clone())
            .collect()
    }

    /// `occ`'s available presence with its real JID shown or not, as cached in `occ.views`.
    fn cached_view(&self, occ: &Occupant, show_jid: bool) -> Arc<SharedStanza> {
        occ.views.0[usize::from(show_jid)]
            .get_or_init(|| SharedStanza::new(self.presence_view(occ, show_jid, &[])))
            .clone()
    }

    /// Forgets the cached presence views of every occupant (after a bulk affiliation change).
    pub fn forget_all_views(&mut self) {
        for occ in self.occupants.values_mut() {
            occ.forget_views();
        }
    }

    /// Puts hat `hat` on `bare` (`on`; a hat already worn gets the new title) or takes it off
    /// (XEP-0317); every present occupant of that user has its presence broadcast again.
    pub fn set_hat(&mut self, bare: &Jid, hat: Hat, on: bool) -> Result<Outgoing, HatRefused> {
        if hat.uri.trim().is_empty()
            || hat.uri.len() > MAX_HAT_URI
            || hat.title.chars().count() > MAX_HAT_TITLE
        {
            return Err(HatRefused::Invalid);
        }
        let worn = self.hats.entry(bare.to_string()).or_default();
        let at = worn.iter().position(|h| h.uri == hat.uri);
        match (on, at) {
            (true, Some(i)) => {
                if let Some(h) = worn.get_mut(i) {
                    h.title = hat.title;
                }
            }
            (true, None) if worn.len() >= MAX_HATS_PER_USER => return Err(HatRefused::TooMany),
            (true, None) => worn.push(hat),
            (false, Some(i)) => {
                worn.remove(i);
            }
            (false, None) => {
                if worn.is_empty() {
                    self.hats.remove(bare.as_str());
                }
                return Err(HatRefused::NotWorn);
            }
        }
        if worn.is_empty() {
            self.hats.remove(bare.as_str());
        }
        let nicks = self.nicks_of(bare);
        let mut out = Outgoing::default();
        for nick in nicks {
            if let Some(occ) = self.occupants.get_mut(&nick) {
                occ.forget_views();
            }
            self.broadcast_presence(&nick, &[], &mut out);
        }
        Ok(out)
    }

    /// `p` addressed to each session of `viewer`.
    fn to_sessions(viewer: &Occupant, p: Element, out: &mut Out) {
        let mut sessions = viewer.sessions.iter().peekable();
        let mut p = Some(p);
        while let Some((j, _)) = sessions.next() {
            let Some(mut copy) = (if sessions.peek().is_some() {
                p.clone()
            } else {
                p.take()
            }) else {
                break;
            };
            copy.set_attr("to", Some(j.to_string()));
            out.push((j.clone(), copy));
        }
    }

    /// Broadcasts `nick`'s current presence: its own sessions get it with 110 and `self_codes`,
    /// every other occupant that receives it the cached view (at most two fan-outs).
    fn broadcast_presence(&self, nick: &str, self_codes: &[u16], out: &mut Outgoing) {
        let Some(occ) = self.occupants.get(nick) else {
            return;
        };
        let mut codes = self_codes.to_vec();
        codes.push(110);
        Room::to_sessions(occ, self.presence_for(occ, occ, &codes), &mut out.each);
        out.shared.extend(self.presence_fanouts(occ));
    }

    /// `occ`'s cached presence for every other occupant that receives it, as at most two
    /// fan-outs: with its real JID (for those who see it) and without.
    fn presence_fanouts(&self, occ: &Occupant) -> Vec<Fanout> {
        if !self.config.presence_broadcast.contains(&occ.role) {
            return Vec::new();
        }
        self.fanouts_to_others(occ, |show| self.cached_view(occ, show))
    }

    /// A stanza about `occ` for every other occupant, as at most two fan-outs: `view(true)`
    /// for those who see its real JID, `view(false)` for the others (each built once).
    fn fanouts_to_others(
        &self,
        occ: &Occupant,
        view: impl Fn(bool) -> Arc<SharedStanza>,
    ) -> Vec<Fanout> {
        let (mut shown, mut hidden) = (Vec::new(), Vec::new());
        for viewer in self.occupants.values().filter(|v| v.nick != occ.nick) {
            let to = if self.shows_jid(occ, viewer) {
                &mut shown
            } else {
                &mut hidden
            };
            to.extend(viewer.sessions.iter().map(|(j, _)| j.clone()));
        }
        [(true, shown), (false, hidden)]
            .into_iter()
            .filter(|(_, to)| !to.is_empty())
            .map(|(show, to)| Fanout {
                stanza: view(show),
                to,
            })
            .collect()
    }

    /// Handles an available presence to `room/nick` from `from`: a join, a second session of
    /// an occupant, a presence update or a nick change (XEP-0045 §7.2, §7.6, §7.7).
    pub fn presence(
        &mut self,
        from: &Jid,
        nick: &str,
        presence: Element,
        req: &JoinRequest,
        created: bool,
    ) -> Result<Outgoing, StanzaError> {
        let mut out = Out::new();
        if let Some(current) = self.sessions.get(from).cloned() {
            if current == nick {
                // A presence update.
                if let Some(occ) = self.occupants.get_mut(nick)
                    && let Some(s) = occ.sessions.iter_mut().find(|(j, _)| j == from)
                {
                    s.1 = presence;
                    occ.forget_views();
                }
                let mut out = Outgoing::default();
                self.broadcast_presence(nick, &[], &mut out);
                return Ok(out);
            }
            return self.change_nick(from, &current, nick, presence, req.nick_changed);
        }
        let bare = from.bare();
        let mut affiliation = self.affiliation(&bare);
        if req.server_admin && affiliation < Affiliation::Owner {
            affiliation = Affiliation::Owner;
        }
        if affiliation == Affiliation::Outcast {
            return Err(StanzaError::with_text(C::Forbidden, "you are banned"));
        }
        if let Some(occ) = self.occupants.get(nick)
            && occ.bare != bare
        {
            return Err(StanzaError::with_text(C::Conflict, "that nick is taken"));
        }
        let joining_existing = self.occupants.contains_key(nick);
        if self.locked && affiliation != Affiliation::Owner {
            return Err(StanzaError::with_text(
                C::ItemNotFound,
                "the room is being configured",
            ));
        }
        if self.config.members_only && affiliation < Affiliation::Member {
            return Err(StanzaError::with_text(
                C::RegistrationRequired,
                "the room is members-only",
            ));
        }
        if !self.config.password.is_empty()
            && affiliation < Affiliation::Owner
            && req.password.as_deref() != Some(self.config.password.as_str())
        {
            return Err(StanzaError::with_text(
                C::NotAuthorized,
                "a password is required",
            ));
        }
        let limit = match self.config.max_occupants {
            0 => req.max_occupants,
            n => n.min(req.max_occupants),
        };
        if !joining_existing && self.occupants.len() >= limit && affiliation < Affiliation::Admin {
            return Err(StanzaError::with_text(
                C::ServiceUnavailable,
                "the room is full",
            ));
        }
        self.sessions.insert(from.clone(), nick.to_string());
        let role = self.default_role(affiliation);
        let occ = self
            .occupants
            .entry(nick.to_string())
            .or_insert_with(|| Occupant {
                nick: nick.to_string(),
                bare: bare.clone(),
                sessions: Vec::new(),
                role,
                id: req.occupant_id.clone(),
                views: PresenceViews::default(),
            });
        occ.sessions.push((from.clone(), presence));
        // The shown view names the last session.
        occ.forget_views();
        let Some(me) = self.occupants.get(nick) else {
            return Ok(out.into());
        };
        // Everyone else's cached presence to the newcomer's session, then its own to everyone.
        let only_new = Occupant {
            sessions: me
                .sessions
                .iter()
                .filter(|(j, _)| j == from)
                .cloned()
                .collect(),
            ..me.clone()
        };
        let sees_all = self.sees_real_jids(&only_new);
        let presences = self
            .occupants
            .values()
            .filter(|o| o.nick != nick && self.config.presence_broadcast.contains(&o.role))
            .map(|o| self.cached_view(o, sees_all || o.bare == only_new.bare))
            .collect();
        let roster = Some(Roster {
            to: from.clone(),
            presences,
        });
        let mut self_codes = Vec::new();
        if self.config.whois_anyone {
            self_codes.push(100);
        }
        if self.config.enable_archiving {
            self_codes.push(170);
        }
        if created {
            self_codes.push(201);
        }
        if req.nick_changed {
            self_codes.push(210);
        }
        if joining_existing {
            // Another session of a present occupant (§7.2, multi-session nicks): everyone sees
            // the occupant's presence again (its other sessions with 110, the others its cached
            // view as at most two fan-outs), the new session its self-presence with the join's
            // codes.
            let others = Occupant {
                sessions: me
                    .sessions
                    .iter()
                    .filter(|(j, _)| j != from)
                    .cloned()
                    .collect(),
                ..me.clone()
            };
            Room::to_sessions(&others, self.presence_for(me, &others, &[110]), &mut out);
            let mut codes = self_codes.clone();
            codes.push(110);
            Room::to_sessions(
                &only_new,
                self.presence_for(me, &only_new, &codes),
                &mut out,
            );
        } else {
            // A new occupant: its self-presence, and one fan-out (per view) to everyone else.
            let mut codes = self_codes;
            codes.push(110);
            Room::to_sessions(me, self.presence_for(me, me, &codes), &mut out);
        }
        // Either way the others get the occupant's cached presence as at most two fan-outs.
        let shared = self.presence_fanouts(me);
        // The room's avatar hash (XEP-0486), then history, then the subject (§7.2.15, §7.2.16).
        if let Some(hash) = &self.avatar_hash {
            out.push((from.clone(), self.avatar_presence(hash, from)));
        }
        for item in self.history_for(req) {
            let mut m = item.stanza.clone();
            m.set_attr("to", Some(from.to_string()));
            m.push(
                Element::new("delay", ns::DELAY)
                    .attr("from", self.jid.to_string())
                    .attr("stamp", crate::xmpp::datetime::format(item.when)),
            );
            out.push((from.clone(), m));
        }
        let (by, text) = self.subject.clone().unwrap_or_default();
        let from_subject = if by.is_empty() {
            self.jid.to_string()
        } else {
            self.occupant_jid(&by)
        };
        out.push((
            from.clone(),
            Element::new("message", ns::CLIENT)
                .attr("type", "groupchat")
                .attr("from", from_subject)
                .attr("to", from.to_string())
                .attr("id", crate::core::sessions::random_resource())
                .child(Element::new("subject", ns::CLIENT).text(text)),
        ));
        Ok(Outgoing {
            roster,
            each: out,
            shared,
        })
    }

    fn history_for(&self, req: &JoinRequest) -> Vec<&HistoryItem> {
        let mut picked = Vec::new();
        let mut chars = 0usize;
        let max = req
            .max_stanzas
            .unwrap_or(usize::MAX)
            .min(self.config.history_length);
        for item in self.history.iter().rev() {
            if picked.len() >= max {
                break;
            }
            if let Some(s) = req.seconds
                && item.when < req.now.saturating_sub(s)
            {
                break;
            }
            if let Some(since) = req.since
                && item.when < since
            {
                break;
            }
            chars = chars.saturating_add(item.chars);
            if let Some(mc) = req.max_chars
                && chars > mc
            {
                break;
            }
            picked.push(item);
        }
        picked.reverse();
        picked
    }

    fn change_nick(
        &mut self,
        from: &Jid,
        old: &str,
        new: &str,
        presence: Element,
        nick_changed: bool,
    ) -> Result<Outgoing, StanzaError> {
        if self.occupants.contains_key(new) {
            return Err(StanzaError::with_text(C::Conflict, "that nick is taken"));
        }
        let mut out = Outgoing::default();
        let Some(mut occ) = self.occupants.get(old).cloned() else {
            return Ok(out);
        };
        // 303 unavailable under the old nick (naming the new one), then the new nick's
        // presence; the others get each as at most two fan-outs.
        let gone = |show: bool, codes: &[u16]| {
            let mut p = self.presence_view(&occ, show, codes);
            p.set_attr("type", Some("unavailable".into()));
            if let Some(item) = p
                .get_child_mut("x", ns::MUC_USER)
                .and_then(|x| x.get_child_mut("item", ns::MUC_USER))
            {
                item.set_attr("nick", Some(new.to_string()));
            }
            p
        };
        Room::to_sessions(&occ, gone(true, &[303, 110]), &mut out.each);
        out.shared = self.fanouts_to_others(&occ, |show| SharedStanza::new(gone(show, &[303])));
        self.occupants.remove(old);
        occ.nick = new.to_string();
        occ.forget_views();
        if let Some(s) = occ.sessions.iter_mut().find(|(j, _)| j == from) {
            s.1 = presence;
        }
        for (j, _) in &occ.sessions {
            self.sessions.insert(j.clone(), new.to_string());
        }
        self.occupants.insert(new.to_string(), occ);
        let self_codes: &[u16] = if nick_changed { &[210] } else { &[] };
        self.broadcast_presence(new, self_codes, &mut out);
        Ok(out)
    }

    /// Handles an unavailable presence from a joined session (XEP-0045 §7.14).
    pub fn leave(&mut self, from: &Jid, presence: Option<&Element>) -> Outgoing {
        let mut out = Out::new();
        let Some(nick) = self.sessions.remove(from) else {
            return out.into();
        };
        let Some(occ) = self.occupants.get_mut(&nick) else {
            return out.into();
        };
        let last = occ.sessions.len() <= 1;
        if !last {
            occ.sessions.retain(|(j, _)| j != from);
            occ.forget_views();
        }
        let Some(occ) = self.occupants.get(&nick).cloned() else {
            return out.into();
        };
        let mut gone = occ.clone();
        gone.role = Role::None;
        if let Some(p) = presence {
            gone.sessions = vec![(from.clone(), p.clone())];
        }
        let mut self_view = gone.clone();
        self_view.sessions = vec![(from.clone(), Element::new("presence", ns::CLIENT))];
        let mut p = self.presence_for(&gone, &self_view, &[110]);
        p.set_attr("type", Some("unavailable".into()));
        Room::to_sessions(&self_view, p, &mut out);
        let mut shared = Vec::new();
        if last {
            self.occupants.remove(&nick);
            // Everyone else: the unavailable presence in at most two views, each built once.
            shared = self.fanouts_to_others(&gone, |show| {
                let mut p = self.presence_view(&gone, show, &[]);
                p.set_attr("type", Some("unavailable".into()));
                SharedStanza::new(p)
            });
        }
        Outgoing {
            roster: None,
            each: out,
            shared,
        }
    }

    /// Removes the session `from` after its server bounced a stanza to it (the s2s link
    /// failed, the session is gone): the last session of an occupant takes the occupant out,
    /// everyone seeing status 333 (removed because of an error reply) and `reason`.
    pub fn remove_on_error(&mut self, from: &Jid, reason: &str) -> Outgoing {
        let Some(nick) = self.sessions.get(from).cloned() else {
            return Outgoing::default();
        };
        match self.occupants.get(&nick) {
            Some(occ) if occ.sessions.len() > 1 => self.leave(from, None),
            Some(_) => self.remove_occupant(&nick, &[333], Some(reason)),
            None => Outgoing::default(),
        }
    }

    /// Removes an occupant with all its sessions, telling everyone why (`codes`: 307 kicked,
    /// 301 banned, 321 affiliation change, 322 members-only).
    pub fn remove_occupant(&mut self, nick: &str, codes: &[u16], reason: Option<&str>) -> Outgoing {
        let mut out = Outgoing::default();
        let Some(mut occ) = self.occupants.remove(nick) else {
            return out;
        };
        for (j, _) in &occ.sessions {
            self.sessions.remove(j);
        }
        occ.role = Role::None;
        let with_reason = |mut p: Element| {
            p.set_attr("type", Some("unavailable".into()));
            if let Some(r) = reason
                && let Some(item) = p
                    .get_child_mut("x", ns::MUC_USER)
                    .and_then(|x| x.get_child_mut("item", ns::MUC_USER))
            {
                item.push(Element::new("reason", ns::MUC_USER).text(r));
            }
            p
        };
        let mut self_codes = codes.to_vec();
        self_codes.push(110);
        Room::to_sessions(
            &occ,
            with_reason(self.presence_for(&occ, &occ, &self_codes)),
            &mut out.each,
        );
        // The others: at most two fan-outs (real JID shown or not).
        out.shared = self.fanouts_to_others(&occ, |show| {
            SharedStanza::new(with_reason(self.presence_view(&occ, show, codes)))
        });
        out
    }

    /// Sets an occupant's role and broadcasts its presence.
    pub fn set_role(&mut self, nick: &str, role: Role) -> Outgoing {
        let mut out = Outgoing::default();
        if let Some(occ) = self.occupants.get_mut(nick) {
            occ.role = role;
            // The role, and with it maybe the affiliation, changed.
            occ.forget_views();
        }
        self.broadcast_presence(nick, &[], &mut out);
        out
    }

    /// Whether an actor with affiliation `actor` may give `jid` the affiliation `new`
    /// (XEP-0045 §9–10: owners change any; admins only below admin, from below admin), keeping
    /// at least one owner.
    pub fn check_affiliation_change(
        &self,
        actor: Affiliation,
        jid: &Jid,
        new: Affiliation,
    ) -> Result<(), AffiliationRefused> {
        let current = self.affiliation(jid);
        let allowed = match actor {
            Affiliation::Owner => true,
            Affiliation::Admin => current < Affiliation::Admin && new < Affiliation::Admin,
            _ => false,
        };
        if !allowed {
            return Err(AffiliationRefused::Forbidden);
        }
        let owners = self
            .affiliations
            .values()
            .filter(|a| **a == Affiliation::Owner)
            .count();
        if current == Affiliation::Owner && new != Affiliation::Owner && owners <= 1 {
            return Err(AffiliationRefused::LastOwner);
        }
        Ok(())
    }

    /// Sets a bare JID's affiliation and applies it to a present occupant (new role, or removal
    /// for outcasts and, in members-only rooms, non-members).
    pub fn set_affiliation(
        &mut self,
        bare: &Jid,
        affiliation: Affiliation,
        reason: Option<&str>,
    ) -> Outgoing {
        if affiliation == Affiliation::None {
            self.affiliations.remove(bare.as_str());
        } else {
            self.affiliations.insert(bare.to_string(), affiliation);
        }
        let nicks = self.nicks_of(bare);
        let mut out = Outgoing::default();
        for nick in nicks {
            if affiliation == Affiliation::Outcast {
                out.extend(self.remove_occupant(&nick, &[301], reason));
            } else if self.config.members_only && affiliation < Affiliation::Member {
                out.extend(self.remove_occupant(&nick, &[321], reason));
            } else {
                let role = self.default_role(affiliation);
                out.extend(self.set_role(&nick, role));
            }
        }
        out
    }

    /// A groupchat message (already stamped `from` the sender's occupant JID) for every
    /// session, kept in history.
    pub fn broadcast_message(&mut self, msg: Element, now: i64, chars: usize) -> Fanout {
        if self.config.history_length > 0 {
            self.history.push_back(HistoryItem {
                stanza: msg.clone(),
                when: now,
                chars,
            });
            while self.history.len() > self.config.history_length {
                self.history.pop_front();
            }
        }
        self.to_everyone(msg)
    }

    /// `stanza` (without `to`) for every joined session.
    pub fn to_everyone(&self, stanza: Element) -> Fanout {
        let mut to = Vec::with_capacity(self.sessions.len());
        to.extend(self.session_jids().cloned());
        Fanout {
            stanza: SharedStanza::new(stanza),
            to,
        }
    }

    /// Destroys the room: every occupant gets an unavailable presence with `<destroy/>`.
    pub fn destroy(&mut self, reason: Option<&str>, alternate: Option<&str>) -> Out {
        let mut out = Out::new();
        let mut destroy = Element::new("destroy", ns::MUC_USER);
        if let Some(a) = alternate {
            destroy.set_attr("jid", Some(a.to_string()));
        }
        if let Some(r) = reason {
            destroy.push(Element::new("reason", ns::MUC_USER).text(r));
        }
        for occ in self.occupants.values() {
            for (j, _) in &occ.sessions {
                out.push((
                    j.clone(),
                    Element::new("presence", ns::CLIENT)
                        .attr("type", "unavailable")
                        .attr("from", self.occupant_jid(&occ.nick))
                        .attr("to", j.to_string())
                        .child(
                            Element::new("x", ns::MUC_USER)
                                .child(
                                    Element::new("item", ns::MUC_USER)
                                        .attr("affiliation", "none")
                                        .attr("role", "none"),
                                )
                                .child(destroy.clone()),
                        ),
                ));
            }
        }
        self.occupants.clear();
        self.sessions.clear();
        out
    }

    /// Empties the room because its service stops (the module unloads or reloads): each
    /// session gets its own unavailable presence with status 110 and 332 (removed because the
    /// service shuts down); nobody is told about the others, which would be quadratic.
    pub fn shut_down(&mut self) -> Out {
        let mut out = Out::new();
        for occ in self.occupants.values() {
            let mut gone = occ.clone();
            gone.role = Role::None;
            let mut p = self.presence_for(&gone, &gone, &[110, 332]);
            p.set_attr("type", Some("unavailable".into()));
            Room::to_sessions(&gone, p, &mut out);
        }
        self.occupants.clear();
        self.sessions.clear();
        out
    }

    /// Tells the occupants the configuration changed (status 104; 172/173 when real JIDs became
    /// visible or hidden; 170/171 when archiving started or stopped) and removes non-members
    /// when the room became members-only (322).
    pub fn config_changed(&mut self, old: &RoomConfig) -> Outgoing {
        let mut out = Outgoing::default();
        if self.config.members_only && !old.members_only {
            let outsiders: Vec<String> = self
                .occupants
                .values()
                .filter(|o| self.affiliation(&o.bare) < Affiliation::Member)
                .map(|o| o.nick.clone())
                .collect();
            for nick in outsiders {
                out.extend(self.remove_occupant(&nick, &[322], None));
            }
        }
        let mut codes = vec![104];
        if self.config.whois_anyone != old.whois_anyone {
            codes.push(if self.config.whois_anyone { 172 } else { 173 });
        }
        if self.config.enable_archiving != old.enable_archiving {
            codes.push(if self.config.enable_archiving {
                170
            } else {
                171
            });
        }
        let mut x = Element::new("x", ns::MUC_USER);
        for c in codes {
            x.push(status(c));
        }
        let msg = Element::new("message", ns::CLIENT)
            .attr("type", "groupchat")
            .attr("from", self.jid.to_string())
            .child(x);
        out.shared.push(self.to_everyone(msg));
        out
    }

    /// The room's presence carrying its avatar hash (XEP-0486) for `to`.
    pub fn avatar_presence(&self, hash: &str, to: &Jid) -> Element {
        Element::new("presence", ns::CLIENT)
            .attr("from", self.jid.to_string())
            .attr("to", to.to_string())
            .child(
                Element::new("x", ns::VCARD_UPDATE)
                    .child(Element::new("photo", ns::VCARD_UPDATE).text(hash)),
            )
    }

    /// The room's nick rules: the nick asked for as the room uses it, enforced by the PRECIS
    /// Nickname profile (RFC 8266: spaces trimmed and collapsed, NFKC) and at most `max_len`
    /// characters; `not-acceptable` if nothing valid is left.
    pub fn enforce_nick(nick: &str, max_len: usize) -> Result<String, StanzaError> {
        use precis_profiles::precis_core::profile::PrecisFastInvocation;
        let refused = || {
            modify(
                C::NotAcceptable,
                "the nick is empty, too long or not allowed",
            )
        };
        let nick = precis_profiles::Nickname::enforce(nick).map_err(|_| refused())?;
        if nick.chars().count() > max_len {
            return Err(refused());
        }
        Ok(nick.into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    fn req() -> JoinRequest {
        JoinRequest {
            occupant_id: "id".into(),
            max_occupants: 10,
            ..JoinRequest::default()
        }
    }

    #[test]
    fn join_broadcast_and_leave_address_every_session() {
        let mut room = Room::new(j("r@c.x"), RoomConfig::default());
        let p = Element::new("presence", ns::CLIENT);
        room.presence(&j("a@x/1"), "A", p.clone(), &req(), true)
            .unwrap();
        let out = room
            .presence(&j("b@x/1"), "B", p.clone(), &req(), false)
            .unwrap();
        // A's presence to B (the roster), B's own (110), the subject; B's presence to A as
        // one fan-out.
        let roster = out.roster.as_ref().unwrap();
        assert_eq!(roster.to, j("b@x/1"));
        assert_eq!(roster.presences.len(), 1);
        let tos: Vec<_> = out.each.iter().map(|(j, _)| j.as_str()).collect();
        assert_eq!(tos, vec!["b@x/1", "b@x/1"]);
        assert_eq!(out.shared.len(), 1);
        assert_eq!(out.shared[0].to, vec![j("a@x/1")]);
        // A has no affiliation here, so no moderator: it does not see B's real JID.
        let item = out.shared[0]
            .stanza
            .element()
            .get_child("x", ns::MUC_USER)
            .and_then(|x| x.get_child("item", ns::MUC_USER));
        assert_eq!(item.and_then(|i| i.get_attr("jid")), None);
        assert_eq!(
            room.presence(&j("c@x/1"), "A", p, &req(), false)
                .unwrap_err()
                .condition,
            C::Conflict
        );
        let out = room.leave(&j("b@x/1"), None);
        assert_eq!(out.each.len(), 1);
        assert_eq!(out.shared.len(), 1);
        assert_eq!(out.shared[0].to, vec![j("a@x/1")]);
        assert_eq!(
            out.shared[0].stanza.element().get_attr("type"),
            Some("unavailable")
        );
        assert!(!room.occupants.contains_key("B"));
    }

    #[test]
    fn a_second_session_of_an_occupant_is_announced_and_only_the_last_leave_is() {
        let mut room = Room::new(j("r@c.x"), RoomConfig::default());
        let p = Element::new("presence", ns::CLIENT);
        room.presence(&j("a@x/1"), "A", p.clone(), &req(), true)
            .unwrap();
        room.presence(&j("b@x/1"), "B", p.clone(), &req(), false)
            .unwrap();
        let out = room
            .presence(&j("b@x/2"), "B", p.clone(), &req(), false)
            .unwrap();
        let roster = out.roster.as_ref().unwrap();
        let presences: Vec<_> = roster
            .presences
            .iter()
            .map(|p| {
                (
                    roster.to.as_str(),
                    p.element().get_attr("from").unwrap_or_default(),
                )
            })
            .chain(
                out.each
                    .iter()
                    .filter(|(_, s)| s.name() == "presence")
                    .map(|(j, s)| (j.as_str(), s.get_attr("from").unwrap_or_default())),
            )
            .chain(out.shared.iter().flat_map(|f| {
                let from = f.stanza.element().get_attr("from").unwrap_or_default();
                f.to.iter().map(move |j| (j.as_str(), from))
            }))
            .collect();
        // A to the new session; B again to B's first session, B's self-presence, and B
        // (shared) to A.
        assert_eq!(
            presences,
            vec![
                ("b@x/2", "r@c.x/A"),
                ("b@x/1", "r@c.x/B"),
                ("b@x/2", "r@c.x/B"),
                ("a@x/1", "r@c.x/B"),
            ]
        );
        let first = room.leave(&j("b@x/1"), None);
        assert!(first.shared.is_empty(), "{first:?}");
        assert!(
            first.each.iter().all(|(to, _)| to.as_str() == "b@x/1"),
            "{first:?}"
        );
        assert!(room.occupants.contains_key("B"));
        let last = room.leave(&j("b@x/2"), None);
        assert!(
            last.shared.iter().any(|f| f.to.contains(&j("a@x/1"))),
            "{last:?}"
        );
        assert!(!room.occupants.contains_key("B"));
    }

    /// The roster presence a newcomer `to` gets of `nick`: its item and `from`.
    fn roster_view(room: &mut Room, to: &str, nick: &str) -> (String, String, String) {
        let p = Element::new("presence", ns::CLIENT);
        let out = room.presence(&j(to), nick, p, &req(), false).unwrap();
        let roster = out.roster.unwrap();
        let view = roster
            .presences
            .iter()
            .find(|p| p.element().get_attr("from") != Some("r@c.x/A"))
            .unwrap()
            .element()
            .clone();
        room.leave(&j(to), None);
        let item = view
            .get_child("x", ns::MUC_USER)
            .and_then(|x| x.get_child("item", ns::MUC_USER))
            .unwrap();
        (
            view.get_attr("from").unwrap_or_default().to_string(),
            item.get_attr("role").unwrap_or_default().to_string(),
            item.get_attr("affiliation").unwrap_or_default().to_string(),
        )
    }

    #[test]
    fn cached_presence_views_are_forgotten_on_role_affiliation_and_nick_changes() {
        let mut room = Room::new(j("r@c.x"), RoomConfig::default());
        let p = Element::new("presence", ns::CLIENT);
        room.presence(&j("a@x/1"), "A", p.clone(), &req(), true)
            .unwrap();
        room.presence(&j("b@x/1"), "B", p.clone(), &req(), false)
            .unwrap();
        let view = |room: &mut Room| roster_view(room, "c@x/1", "C");
        assert_eq!(
            view(&mut room),
            ("r@c.x/B".into(), "participant".into(), "none".into())
        );
        // Built once and shared by the next newcomer.
        let cached = room.occupants["B"].views.0[0].get().cloned().unwrap();
        let out = room
            .presence(&j("d@x/1"), "D", p.clone(), &req(), false)
            .unwrap();
        assert!(
            out.roster
                .unwrap()
                .presences
                .iter()
                .any(|p| Arc::ptr_eq(p, &cached))
        );
        room.leave(&j("d@x/1"), None);
        room.set_role("B", Role::Visitor);
        assert_eq!(
            view(&mut room),
            ("r@c.x/B".into(), "visitor".into(), "none".into())
        );
        room.set_affiliation(&j("b@x"), Affiliation::Admin, None);
        assert_eq!(
            view(&mut room),
            ("r@c.x/B".into(), "moderator".into(), "admin".into())
        );
        room.presence(&j("b@x/1"), "Bee", p, &req(), false).unwrap();
        assert_eq!(
            view(&mut room),
            ("r@c.x/Bee".into(), "moderator".into(), "admin".into())
        );
    }

    #[test]
    fn hats_are_bounded_shown_in_presence_and_taken_off() {
        let mut room = Room::new(j("r@c.x"), RoomConfig::default());
        let p = Element::new("presence", ns::CLIENT);
        room.presence(&j("a@x/1"), "A", p.clone(), &req(), true)
            .unwrap();
        room.presence(&j("b@x/1"), "B", p, &req(), false).unwrap();
        let hat = |uri: &str| Hat {
            uri: uri.into(),
            title: "T".into(),
        };
        let out = room.set_hat(&j("b@x"), hat("urn:h:0"), true).unwrap();
        // B's presence again to B and (shared) to A, each with the hat.
        assert_eq!(out.each.len(), 1);
        assert_eq!(out.shared.len(), 1);
        assert_eq!(out.shared[0].to, vec![j("a@x/1")]);
        let stanzas = out.each.iter().map(|(_, p)| p);
        for p in stanzas.chain(out.shared.iter().map(|f| f.stanza.element())) {
            let hats = p.get_child("hats", ns::HATS).unwrap();
            assert_eq!(hats.children().count(), 1);
        }
        assert_eq!(
            room.set_hat(&j("b@x"), hat(""), true).unwrap_err(),
            HatRefused::Invalid
        );
        for i in 1..MAX_HATS_PER_USER {
            room.set_hat(&j("b@x"), hat(&format!("urn:h:{i}")), true)
                .unwrap();
        }
        assert_eq!(
            room.set_hat(&j("b@x"), hat("urn:h:more"), true)
                .unwrap_err(),
            HatRefused::TooMany
        );
        // Re-titling a worn hat is no new hat.
        room.set_hat(&j("b@x"), hat("urn:h:0"), true).unwrap();
        for i in 0..MAX_HATS_PER_USER {
            room.set_hat(&j("b@x"), hat(&format!("urn:h:{i}")), false)
                .unwrap();
        }
        assert!(room.hats.is_empty());
        assert_eq!(
            room.set_hat(&j("b@x"), hat("urn:h:0"), false).unwrap_err(),
            HatRefused::NotWorn
        );
        assert!(room.hats.is_empty());
        // Nobody present: stored, nothing sent; a client cannot put a hat on itself.
        assert!(
            room.set_hat(&j("c@x"), hat("urn:h:0"), true)
                .unwrap()
                .is_empty()
        );
        let forged = Element::new("presence", ns::CLIENT).child(
            Element::new("hats", ns::HATS).child(Element::new("hat", ns::HATS).attr("uri", "x")),
        );
        let out = room
            .presence(&j("a@x/1"), "A", forged, &req(), false)
            .unwrap();
        assert!(
            out.each
                .iter()
                .all(|(_, p)| p.get_child("hats", ns::HATS).is_none())
        );
    }

    #[test]
    fn nick_rules_trim_collapse_and_refuse() {
        assert_eq!(Room::enforce_nick("Alice", 8).unwrap(), "Alice");
        assert_eq!(Room::enforce_nick("  Al   ice ", 8).unwrap(), "Al ice");
        // NFKC: the ligature becomes two letters.
        assert_eq!(Room::enforce_nick("\u{fb01}n", 8).unwrap(), "fin");
        for bad in ["   ", "", "toolongnick", "a\u{7}b"] {
            assert_eq!(
                Room::enforce_nick(bad, 8).unwrap_err().condition,
                C::NotAcceptable,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn updates_kicks_and_nick_changes_reach_the_others_as_shared_views() {
        let mut room = Room::new(j("r@c.x"), RoomConfig::default());
        room.affiliations.insert("a@x".into(), Affiliation::Owner);
        let p = Element::new("presence", ns::CLIENT);
        room.presence(&j("a@x/1"), "A", p.clone(), &req(), true)
            .unwrap();
        for (i, nick) in ["B", "C", "D"].iter().enumerate() {
            room.presence(&j(&format!("u{i}@x/1")), nick, p.clone(), &req(), false)
                .unwrap();
        }
        // A status change of B: its own session alone, the others in two views (A, a
        // moderator, sees B's real JID; C and D do not).
        let away = Element::new("presence", ns::CLIENT)
            .child(Element::new("show", ns::CLIENT).text("away"));
        let out = room
            .presence(&j("u0@x/1"), "B", away, &req(), false)
            .unwrap();
        let tos: Vec<_> = out.each.iter().map(|(j, _)| j.as_str()).collect();
        assert_eq!(tos, ["u0@x/1"]);
        let mut views: Vec<_> = out
            .shared
            .iter()
            .map(|f| {
                (
                    f.to.len(),
                    f.stanza.element().get_child("show", ns::CLIENT).is_some(),
                )
            })
            .collect();
        views.sort();
        assert_eq!(views, [(1, true), (2, true)]);
        // The update is the cached view a newcomer gets next.
        let cached = room.occupants["B"].views.0[0].get().cloned().unwrap();
        assert!(out.shared.iter().any(|f| Arc::ptr_eq(&f.stanza, &cached)));
        // A nick change the room's rules made: 303 and the new presence, both shared; 210 for
        // the occupant itself.
        let out = room
            .presence(
                &j("u1@x/1"),
                "Cee",
                p.clone(),
                &JoinRequest {
                    nick_changed: true,
                    ..req()
                },
                false,
            )
            .unwrap();
        let own: Vec<String> = out.each.iter().map(|(_, s)| s.to_xml(ns::CLIENT)).collect();
        assert_eq!(own.len(), 2, "{own:?}");
        assert!(own[0].contains("code=\"303\"") && own[0].contains("nick=\"Cee\""));
        assert!(own[1].contains("code=\"210\"") && own[1].contains("code=\"110\""));
        assert_eq!(out.shared.len(), 4);
        assert!(out.shared.iter().all(|f| !f.to.contains(&j("u1@x/1"))));
        // A kick: the kicked sessions alone, the others shared.
        let out = room.remove_occupant("D", &[307], Some("bye"));
        assert_eq!(out.each.len(), 1);
        let to_others: usize = out.shared.iter().map(|f| f.to.len()).sum();
        assert_eq!(to_others, 3);
    }

    #[test]
    fn history_respects_maxstanzas_maxchars_and_since() {
        let mut room = Room::new(j("r@c.x"), RoomConfig::default());
        for i in 0..5 {
            let m = Element::new("message", ns::CLIENT).attr("id", i.to_string());
            room.broadcast_message(m, 100 + i, 10);
        }
        let pick = |r: JoinRequest| -> Vec<String> {
            room.history_for(&r)
                .iter()
                .filter_map(|h| h.stanza.get_attr("id").map(str::to_string))
                .collect()
        };
        assert_eq!(
            pick(JoinRequest {
                max_stanzas: Some(2),
                ..req()
            }),
            ["3", "4"]
        );
        assert_eq!(
            pick(JoinRequest {
                max_chars: Some(35),
                ..req()
            }),
            ["2", "3", "4"]
        );
        assert_eq!(
            pick(JoinRequest {
                since: Some(103),
                ..req()
            }),
            ["3", "4"]
        );
        assert_eq!(
            pick(JoinRequest {
                seconds: Some(1),
                now: 104,
                ..req()
            }),
            ["3", "4"]
        );
    }
}
