//! XEP-0388 SASL2 on client streams: the `<authentication/>` feature, `<authenticate/>` with
//! its `<user-agent/>` and inline requests (Bind2, XEP-0198 `<resume/>`, XEP-0484 FAST), and
//! the `<success/>` carrying their results. The SASL exchange itself is the one SASL1 uses
//! (`Negotiation::sasl` with the SASL2 namespace); failures are counted by the caller exactly
//! as SASL1 failures are. After `<success/>` the stream is not restarted: without Bind2 the
//! server sends the post-authentication features right after it.

use tokio::io::{AsyncBufRead, AsyncWrite};

use super::negotiate::{Negotiation, Pending};
use crate::auth::fast::{self, HtMechanism};
use crate::auth::sasl::{self, Mechanism, SaslError};
use crate::auth::scram::ScramHash;
use crate::auth::ssdp;
use crate::core::sessions::{BoundSession, ClientAgent, Hibernated};
use crate::xmpp::jid::Jid;
use crate::xmpp::parser::StreamParser;
use crate::xmpp::{Element, ns};

/// Longest client id (`<user-agent id=…>`) accepted.
const MAX_CLIENT_ID: usize = 128;
/// Longest `<software/>` or `<device/>` accepted.
const MAX_AGENT_FIELD: usize = 256;

/// A parsed `<authenticate xmlns='urn:xmpp:sasl:2'/>`.
#[derive(Debug, Default)]
pub struct Authenticate {
    /// The mechanism named.
    pub mechanism: String,
    /// The `<initial-response/>` text (base64), if any.
    pub initial: Option<String>,
    /// The client's `<user-agent/>`.
    pub agent: Option<ClientAgent>,
    /// An inline Bind2 `<bind/>`.
    pub bind: Option<Element>,
    /// An inline XEP-0198 `<resume/>`.
    pub resume: Option<Element>,
    /// The mechanism of an inline FAST `<request-token/>`.
    pub request_token: Option<String>,
    /// The `count` of an inline FAST `<fast/>` (the client authenticates with a token).
    pub fast_count: Option<u64>,
    /// Whether the inline `<fast/>` asks to invalidate the token after this use.
    pub fast_invalidate: bool,
}

/// What a successful SASL or SASL2 exchange leaves for the rest of negotiation.
pub struct Authed {
    /// The authenticated account.
    pub jid: Jid,
    /// The mechanism's final server message (SCRAM's server-final, FAST's responder proof).
    pub additional: Option<Vec<u8>>,
    /// The SASL2 request, when it was SASL2.
    pub sasl2: Option<Authenticate>,
}

/// How the stream goes on once `<success/>` is written.
pub enum Next {
    /// SASL1: the client restarts the stream.
    Restart,
    /// SASL2 without Bind2: same stream, now authenticated (features were sent).
    Stay,
    /// SASL2 with Bind2: the session is bound.
    Bound(BoundSession),
    /// SASL2 with an inline resumption that succeeded (`<resumed/>` is inside `<success/>`).
    Resumed(Hibernated),
}

fn bounded(s: String, max: usize) -> Result<Option<String>, SaslError> {
    let s = s.trim().to_string();
    if s.len() > max || s.chars().any(char::is_control) {
        return Err(SaslError::MalformedRequest);
    }
    Ok((!s.is_empty()).then_some(s))
}

/// Parses `<authenticate/>`; a malformed one (no mechanism, oversized or empty client id,
/// oversized user-agent fields, bad `count`) is `malformed-request`.
pub fn parse(el: &Element) -> Result<Authenticate, SaslError> {
    let mechanism = el
        .get_attr("mechanism")
        .filter(|m| !m.is_empty() && m.len() <= 64)
        .ok_or(SaslError::MalformedRequest)?
        .to_string();
    let mut req = Authenticate {
        mechanism,
        ..Authenticate::default()
    };
    for child in el.children() {
        match (child.ns(), child.name()) {
            (ns::SASL2, "initial-response") => req.initial = Some(child.text_content()),
            (ns::SASL2, "user-agent") => {
                let id = child.get_attr("id").ok_or(SaslError::MalformedRequest)?;
                let id =
                    bounded(id.to_string(), MAX_CLIENT_ID)?.ok_or(SaslError::MalformedRequest)?;
                let field = |name: &str| match child.get_child(name, ns::SASL2) {
                    Some(e) => bounded(e.text_content(), MAX_AGENT_FIELD),
                    None => Ok(None),
                };
                req.agent = Some(ClientAgent {
                    id,
                    software: field("software")?,
                    device: field("device")?,
                });
            }
            (ns::BIND2, "bind") => req.bind = Some(child.clone()),
            (ns::SM, "resume") => req.resume = Some(child.clone()),
            (ns::FAST, "request-token") => {
                let m = child
                    .get_attr("mechanism")
                    .ok_or(SaslError::MalformedRequest)?;
                req.request_token = Some(m.to_string());
            }
            (ns::FAST, "fast") => {
                req.fast_count = match child.get_attr("count") {
                    Some(c) => Some(c.parse().map_err(|_| SaslError::MalformedRequest)?),
                    None => None,
                };
                req.fast_invalidate = matches!(child.get_attr("invalidate"), Some("true" | "1"));
            }
            _ => {}
        }
    }
    Ok(req)
}

/// The metrics and event label of mechanism `name` (SASL1 or SASL2), if it is one we know.
pub fn mechanism_label(name: &str) -> Option<&'static str> {
    Mechanism::from_name(name)
        .map(|m| m.name())
        .or_else(|| HtMechanism::from_name(name).map(HtMechanism::name))
}

/// A SASL2 `<failure/>` for `e`, with its text when it has one.
pub fn failure(e: &SaslError) -> String {
    let mut f = Element::new("failure", ns::SASL2).child(Element::new(e.condition(), ns::SASL));
    if let Some(t) = e.text() {
        f.push(Element::new("text", ns::SASL2).text(t));
    }
    f.to_xml(ns::CLIENT)
}

/// A SASL1 `<failure/>` for `e`, with its text when it has one.
pub fn sasl1_failure(e: &SaslError) -> String {
    let mut f = Element::new("failure", ns::SASL).child(Element::new(e.condition(), ns::SASL));
    if let Some(t) = e.text() {
        f.push(Element::new("text", ns::SASL).text(t));
    }
    f.to_xml(ns::CLIENT)
}

impl Negotiation {
    /// The channel-binding types this connection advertises per XEP-0440 (`None`: no feature).
    pub(super) fn channel_binding_types(&self) -> Option<Vec<&str>> {
        (!self.bindings.is_empty()).then(|| self.bindings.iter().map(|b| b.kind.as_str()).collect())
    }

    /// This connection's binding data of channel-binding type `kind`, if it has one.
    fn binding_data(&self, kind: &str) -> Option<&[u8]> {
        self.bindings
            .iter()
            .find(|b| b.kind == kind)
            .map(|b| b.data.as_slice())
    }

    /// The FAST mechanisms this connection can verify: `HT-SHA-256-NONE`, and each bound one
    /// whose channel binding the connection has (never `-UNIQ`: rustls gives no `tls-unique`).
    /// Empty when FAST is off (`c2s.fast_token_lifetime_secs = 0`).
    pub(super) fn fast_mechanisms(&self) -> Vec<HtMechanism> {
        if self.config.c2s.fast_token_lifetime_secs == 0 {
            return Vec::new();
        }
        HtMechanism::ALL
            .into_iter()
            .filter(|m| {
                m.binding_type()
                    .is_none_or(|t| self.binding_data(t).is_some())
            })
            .collect()
    }

    /// The channel-binding data FAST mechanism `m` covers on this connection (empty for
    /// `-NONE`); `None` when the connection cannot offer `m`.
    fn fast_binding(&self, m: HtMechanism) -> Option<&[u8]> {
        if !self.fast_mechanisms().contains(&m) {
            return None;
        }
        match m.binding_type() {
            Some(t) => self.binding_data(t),
            None => Some(&[]),
        }
    }

    /// The XEP-0440 `<sasl-channel-binding/>` feature naming the bindings this connection offers.
    pub(super) fn channel_binding_feature(&self) -> Option<Element> {
        let mut f = Element::new("sasl-channel-binding", ns::SASL_CB);
        for kind in self.channel_binding_types()? {
            f.push(Element::new("channel-binding", ns::SASL_CB).attr("type", kind));
        }
        Some(f)
    }

    /// The XEP-0474 hash of the mechanisms and channel-binding types this connection offered.
    /// SASL1 and SASL2 advertise the same list ([`Self::features`]), so one hash serves both.
    pub(super) fn downgrade_hash(&self, hash: ScramHash) -> String {
        let mechanisms: Vec<&str> = self.mechanisms().iter().map(|m| m.name()).collect();
        let types = self.channel_binding_types();
        ssdp::downgrade_hash(hash, &mechanisms, types.as_deref())
    }

    /// The `<authentication/>` stream feature: the mechanisms, and what may be inlined.
    pub(super) fn sasl2_feature(&self, host: &str, mechanisms: &[Mechanism]) -> Element {
        let mut auth = Element::new("authentication", ns::SASL2);
        for m in mechanisms {
            auth.push(Element::new("mechanism", ns::SASL2).text(m.name()));
        }
        let mut inline = Element::new("inline", ns::SASL2);
        if let Some(h) = self.core.host(host) {
            inline.push(super::bind2::feature(h));
            if h.handles_tag(ns::SM, "enable") {
                inline.push(Element::new("sm", ns::SM));
            }
        }
        let fast = self.fast_mechanisms();
        if !fast.is_empty() {
            let mut f = Element::new("fast", ns::FAST);
            for m in fast {
                f.push(Element::new("mechanism", ns::FAST).text(m.name()));
            }
            inline.push(f);
        }
        auth.child(inline)
    }

    /// Runs one SASL2 `<authenticate/>` exchange (password mechanisms through the shared SASL
    /// code, FAST tokens against the grant store). `Ok(None)`: the stream ended.
    pub(super) async fn sasl2<R, W>(
        &mut self,
        el: &Element,
        host: &str,
        parser: &mut StreamParser<R>,
        writer: &mut W,
    ) -> Result<Option<Authed>, SaslError>
    where
        R: AsyncBufRead + Pending + Unpin,
        W: AsyncWrite + Unpin,
    {
        let req = parse(el)?;
        if self.config.c2s.require_encryption && !self.secure {
            return Err(SaslError::EncryptionRequired);
        }
        if self.config.c2s.enforce_client_ids && req.agent.is_none() {
            return Err(SaslError::ClientIdRequired);
        }
        if let Some(m) = HtMechanism::from_name(&req.mechanism) {
            // Token guesses count toward the brute-force guard like passwords (the other
            // mechanisms ask it inside `sasl`).
            if !self.auth_guard(None) {
                return Err(SaslError::TemporaryAuthFailure);
            }
            let cb = self
                .fast_binding(m)
                .ok_or(SaslError::InvalidMechanism)?
                .to_vec();
            let (jid, key) = self.fast_login(&req, &cb, host).await?;
            return Ok(Some(Authed {
                jid,
                additional: Some(fast::responder(&key, &cb)),
                sasl2: Some(req),
            }));
        }
        let done = self
            .sasl(
                Some(&req.mechanism),
                req.initial.clone(),
                host,
                parser,
                writer,
                ns::SASL2,
            )
            .await?;
        Ok(done.map(|(jid, additional)| Authed {
            jid,
            additional,
            sasl2: Some(req),
        }))
    }

    /// Checks a FAST token login over a connection whose binding for the mechanism is `cb`;
    /// the account and the stored key of the token used.
    async fn fast_login(
        &self,
        req: &Authenticate,
        cb: &[u8],
        host: &str,
    ) -> Result<(Jid, [u8; 32]), SaslError> {
        let agent = req.agent.as_ref().ok_or(SaslError::NotAuthorized)?;
        let text = req.initial.as_deref().ok_or(SaslError::MalformedRequest)?;
        let data = sasl::decode_b64(text.trim())?;
        let ht = fast::parse_initial(&data)?;
        let jid = self.login_jid(&ht.username, None, host)?;
        let key = self
            .core
            .accounts
            .verify_fast_token(
                &jid,
                &agent.id,
                &req.mechanism,
                cb,
                &ht.proof,
                req.fast_count,
            )
            .await
            .map_err(|_| SaslError::TemporaryAuthFailure)?
            .ok_or(SaslError::NotAuthorized)?;
        Ok((jid, key))
    }

    /// Completes a successful exchange: the client's identity onto the connection, then for
    /// SASL2 the inline requests (resume, else Bind2; a FAST token) and the `<success/>`.
    pub(super) async fn finish_auth(&mut self, authed: Authed, host: &str) -> (String, Next) {
        let Authed {
            jid,
            additional,
            sasl2,
        } = authed;
        let Some(req) = sasl2 else {
            let mut success = Element::new("success", ns::SASL);
            if let Some(data) = additional.filter(|d| !d.is_empty()) {
                success.push_text(sasl::encode_b64(&data));
            }
            return (success.to_xml(ns::CLIENT), Next::Restart);
        };
        self.conn.client = req.agent.clone();
        let mut success = Element::new("success", ns::SASL2);
        if let Some(data) = additional.filter(|d| !d.is_empty()) {
            success.push(Element::new("additional-data", ns::SASL2).text(sasl::encode_b64(&data)));
        }
        let mut extras = Vec::new();
        if let (Some(mech), Some(agent)) = (&req.request_token, &req.agent) {
            let ttl = self.config.c2s.fast_token_lifetime_secs;
            // Only for a mechanism this connection offers (so the client can use it like this).
            let offered =
                HtMechanism::from_name(mech).is_some_and(|m| self.fast_mechanisms().contains(&m));
            if ttl > 0 && offered {
                match self
                    .core
                    .accounts
                    .issue_fast_token(&jid, agent, mech, ttl)
                    .await
                {
                    Ok(t) => extras.push(
                        Element::new("token", ns::FAST)
                            .attr("token", t.token)
                            .attr("expiry", rfc3339(t.expires)),
                    ),
                    Err(e) => tracing::warn!(%jid, error = %e, "could not issue a FAST token"),
                }
            }
        }
        let mut next = Next::Stay;
        let mut aid = jid.to_string();
        if let Some(resume) = &req.resume {
            match self.resume(&jid, resume).await {
                Ok(hib) => {
                    let (previd, h) = {
                        let sm = hib.handle.sm();
                        (sm.id.clone().unwrap_or_default(), sm.h_in)
                    };
                    aid = hib.handle.jid.to_string();
                    extras.push(
                        Element::new("resumed", ns::SM)
                            .attr("previd", previd)
                            .attr("h", h.to_string()),
                    );
                    next = Next::Resumed(hib);
                }
                Err(condition) => extras.push(
                    Element::new("failed", ns::SM).child(Element::new(condition, ns::STANZAS)),
                ),
            }
        }
        if matches!(next, Next::Stay)
            && let Some(bind) = &req.bind
        {
            match self.bind2(&jid, bind, req.agent.as_ref()).await {
                Ok((session, bound)) => {
                    aid = session.handle.jid.to_string();
                    extras.push(bound);
                    next = Next::Bound(session);
                }
                Err(e) => {
                    // Authenticated, but the bind was refused: say so and let the client bind.
                    tracing::info!(peer = %self.peer, %jid, error = ?e, "inline bind refused");
                }
            }
        }
        success.push(Element::new("authorization-identifier", ns::SASL2).text(aid));
        for e in extras {
            success.push(e);
        }
        let mut out = success.to_xml(ns::CLIENT);
        if matches!(next, Next::Stay) {
            out.push_str(&self.features(true, host).to_xml(ns::CLIENT));
        }
        (out, next)
    }
}

/// Unix seconds as an RFC 3339 UTC timestamp (XEP-0082).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil conversion.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::parser::parse_element;

    #[test]
    fn an_authenticate_is_parsed_with_its_inline_requests() {
        let el = parse_element(&format!(
            "<authenticate xmlns='{}' mechanism='SCRAM-SHA-1'><initial-response>abc</initial-response>\
             <user-agent id='u1'><software>App</software><device>Phone</device></user-agent>\
             <bind xmlns='{}'><tag>App</tag></bind><request-token xmlns='{}' mechanism='HT-SHA-256-NONE'/>\
             <fast xmlns='{}' count='3'/></authenticate>",
            ns::SASL2,
            ns::BIND2,
            ns::FAST,
            ns::FAST
        ))
        .expect("xml");
        let req = parse(&el).expect("parse");
        assert_eq!(req.mechanism, "SCRAM-SHA-1");
        assert_eq!(req.initial.as_deref(), Some("abc"));
        assert_eq!(
            req.agent,
            Some(ClientAgent {
                id: "u1".into(),
                software: Some("App".into()),
                device: Some("Phone".into())
            })
        );
        assert!(req.bind.is_some());
        assert_eq!(req.request_token.as_deref(), Some("HT-SHA-256-NONE"));
        assert_eq!(req.fast_count, Some(3));
    }

    #[test]
    fn malformed_authenticates_are_refused() {
        let long = "x".repeat(MAX_AGENT_FIELD + 1);
        for xml in [
            format!("<authenticate xmlns='{}'/>", ns::SASL2),
            format!(
                "<authenticate xmlns='{}' mechanism='PLAIN'><user-agent/></authenticate>",
                ns::SASL2
            ),
            format!(
                "<authenticate xmlns='{}' mechanism='PLAIN'><user-agent id='a'><device>{long}</device></user-agent></authenticate>",
                ns::SASL2
            ),
            format!(
                "<authenticate xmlns='{}' mechanism='PLAIN'><fast xmlns='{}' count='x'/></authenticate>",
                ns::SASL2,
                ns::FAST
            ),
        ] {
            let el = parse_element(&xml).expect("xml");
            assert_eq!(
                parse(&el).map(|_| ()),
                Err(SaslError::MalformedRequest),
                "{xml}"
            );
        }
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn failures_carry_the_condition_and_text() {
        let f = failure(&SaslError::ClientIdRequired);
        assert!(f.contains("<failure xmlns=\"urn:xmpp:sasl:2\">"), "{f}");
        assert!(
            f.contains("<not-authorized xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"/>"),
            "{f}"
        );
        assert!(f.contains("<text>"), "{f}");
    }
}
