//! Stream negotiation (RFC 6120 §4–7): stream headers, STARTTLS, SASL, resource binding.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::sasl2::{Authed, Next};
use crate::auth::sasl::{self, Mechanism, SaslError};
use crate::auth::scram::{ChannelBinding, ScramServer};
use crate::config::Config;
use crate::core::Core;
use crate::core::lifecycle::{AUTHENTICATION_FAILURE, AUTHENTICATION_SUCCESS};
use crate::core::sessions::{
    BindError, BoundSession, Connection, TlsInfo, Transport, random_resource,
};
use crate::xmpp::element::escape;
use crate::xmpp::error::{
    StanzaError, StanzaErrorCondition, StreamError, StreamErrorCondition as C,
};
use crate::xmpp::jid::{self, Jid};
use crate::xmpp::parser::{Limits, ParseError, StreamEvent, StreamHeader, StreamParser};
use crate::xmpp::{Element, ns, stanza};

/// SASL failures tolerated on one connection before it is closed.
const MAX_AUTH_FAILURES: u32 = 3;

/// How long a `<resume/>` waits for the connection still holding the session to let go.
const RESUME_WAIT: Duration = Duration::from_secs(5);

/// A buffered reader that can tell whether it holds unread bytes (the STARTTLS injection check).
pub trait Pending {
    /// Whether bytes were read from the socket but not yet consumed.
    fn has_pending(&self) -> bool;

    /// Whether unread bytes other than XML whitespace are pending (whitespace after
    /// `<starttls/>` is harmless and is dropped with the plaintext reader).
    fn has_pending_data(&self) -> bool {
        self.has_pending()
    }
}

impl<T: tokio::io::AsyncRead> Pending for tokio::io::BufReader<T> {
    fn has_pending(&self) -> bool {
        !self.buffer().is_empty()
    }

    fn has_pending_data(&self) -> bool {
        crate::xmpp::parser::has_data(self.buffer())
    }
}

impl<T: tokio::io::AsyncRead> Pending for super::read_buffer::ReadBuffer<T> {
    fn has_pending(&self) -> bool {
        !self.buffer().is_empty()
    }

    fn has_pending_data(&self) -> bool {
        crate::xmpp::parser::has_data(self.buffer())
    }
}

/// How negotiation ended.
pub enum Outcome<R, W> {
    /// The client asked for TLS; `<proceed/>` was sent and no plaintext is pending.
    StartTls(StreamParser<R>, W),
    /// A resource was bound; the session can start.
    Bound {
        /// The parser, positioned after the bind request.
        parser: StreamParser<R>,
        /// The write half.
        writer: W,
        /// The bound session.
        session: BoundSession,
        /// The stream's host.
        host: String,
    },
    /// A hibernated session was resumed (XEP-0198); it continues on this connection.
    Resumed {
        /// The parser.
        parser: StreamParser<R>,
        /// The write half.
        writer: W,
        /// The session and its queue.
        hib: crate::core::sessions::Hibernated,
        /// Whether `<resumed/>` was already sent (inside a SASL2 `<success/>`).
        announced: bool,
    },
    /// The stream ended (error sent or peer gone).
    Closed,
}

/// Per-connection negotiation state.
pub struct Negotiation {
    /// The server.
    pub core: Arc<Core>,
    /// The config snapshot taken at accept.
    pub config: Arc<Config>,
    /// Remote address, for logs and the session.
    pub peer: String,
    /// Whether the transport is encrypted.
    pub secure: bool,
    /// When negotiation must be complete.
    pub deadline: Instant,
    /// Whether a stream header was already sent on this connection.
    header_sent: bool,
    /// What the session will show of its connection (TLS, mechanism), filled as negotiation goes.
    pub conn: Connection,
    /// The TLS channel bindings this connection offers (XEP-0440) and SCRAM `-PLUS` and FAST
    /// `HT-SHA-256-*` verify; set by the transport after its handshake.
    pub bindings: Vec<ChannelBinding>,
    /// The current SASL attempt, for the brute-force guard.
    auth_attempt: super::guard::Attempt,
}

/// Limits before authentication.
pub fn unauth_limits(cfg: &Config) -> Limits {
    Limits {
        max_stanza_bytes: cfg.c2s.max_stanza_size_unauthenticated,
        ..Limits::default()
    }
}

/// Limits once authenticated.
pub fn auth_limits(cfg: &Config) -> Limits {
    Limits {
        max_stanza_bytes: cfg.c2s.max_stanza_size,
        ..Limits::default()
    }
}

/// Writes `data` and flushes.
pub async fn write<W: AsyncWrite + Unpin>(w: &mut W, data: &str) -> std::io::Result<()> {
    w.write_all(data.as_bytes()).await?;
    w.flush().await
}

/// The server's stream header.
pub fn stream_header(host: &str, id: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' id='{}' from='{}' version='1.0' xml:lang='en'>",
        ns::CLIENT,
        ns::STREAM,
        escape(id, true),
        escape(host, true)
    )
}

/// A fresh random stream id.
pub fn stream_id() -> String {
    use rand::Rng;
    let n: u128 = rand::rng().random();
    format!("{n:032x}")
}

/// The XEP-0478 `<limits/>` stream feature.
pub fn limits_feature(max_bytes: usize) -> Element {
    Element::new("limits", ns::STREAM_LIMITS)
        .child(Element::new("max-bytes", ns::STREAM_LIMITS).text(max_bytes.to_string()))
}

enum Step<R, W> {
    Restart(StreamParser<R>, W, Jid),
    Done(Outcome<R, W>),
}

impl Negotiation {
    /// Runs negotiation on one transport until TLS upgrade, bind, or close.
    pub async fn run<R, W>(
        &mut self,
        mut parser: StreamParser<R>,
        mut writer: W,
        mut authenticated: Option<Jid>,
    ) -> Outcome<R, W>
    where
        R: AsyncBufRead + Pending + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            match self.one_stream(parser, writer, authenticated.clone()).await {
                Step::Restart(p, w, jid) => {
                    authenticated = Some(jid);
                    let limits = auth_limits(&self.config);
                    // Stream restart without reading in between: the same buffered reader, a fresh parser.
                    parser = StreamParser::new(p.into_inner(), limits);
                    writer = w;
                }
                Step::Done(outcome) => return outcome,
            }
        }
    }

    async fn next<R: AsyncBufRead + Unpin>(
        &self,
        parser: &mut StreamParser<R>,
    ) -> Result<StreamEvent, ParseError> {
        match tokio::time::timeout_at(self.deadline, parser.next()).await {
            Ok(r) => r,
            Err(_) => Err(ParseError::Stream(StreamError::with_text(
                C::ConnectionTimeout,
                "negotiation took too long",
            ))),
        }
    }

    /// Sends a stream error (with a header first if none was sent) and closes the stream.
    async fn fail<W: AsyncWrite + Unpin>(&mut self, writer: &mut W, host: &str, err: StreamError) {
        tracing::debug!(peer = %self.peer, error = %err, "closing stream during negotiation");
        self.core
            .core_metrics
            .stream_error(&err.condition.to_string());
        let mut out = String::new();
        if !self.header_sent {
            out.push_str(&stream_header(host, &stream_id()));
            self.header_sent = true;
        }
        out.push_str(&err.to_element().to_xml(ns::CLIENT));
        out.push_str("</stream:stream>");
        let _ = tokio::time::timeout(Duration::from_secs(5), write(writer, &out)).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), writer.shutdown()).await;
    }

    async fn one_stream<R, W>(
        &mut self,
        mut parser: StreamParser<R>,
        mut writer: W,
        mut authenticated: Option<Jid>,
    ) -> Step<R, W>
    where
        R: AsyncBufRead + Pending + Unpin,
        W: AsyncWrite + Unpin,
    {
        let default_host = self.config.default_host().to_string();
        let header = match self.next(&mut parser).await {
            Ok(StreamEvent::Header(h)) => h,
            Ok(_) => {
                self.fail(&mut writer, &default_host, C::BadFormat.into())
                    .await;
                return Step::Done(Outcome::Closed);
            }
            Err(ParseError::Stream(e)) => {
                self.fail(&mut writer, &default_host, e).await;
                return Step::Done(Outcome::Closed);
            }
            Err(_) => return Step::Done(Outcome::Closed),
        };
        let host = match self.check_header(&header, authenticated.as_ref()) {
            Ok(h) => h,
            Err(e) => {
                self.fail(&mut writer, &default_host, e).await;
                return Step::Done(Outcome::Closed);
            }
        };
        // Header and features in one write.
        let mut out = stream_header(&host, &stream_id());
        self.header_sent = true;
        out.push_str(
            &self
                .features(authenticated.is_some(), &host)
                .to_xml(ns::CLIENT),
        );
        if write(&mut writer, &out).await.is_err() {
            return Step::Done(Outcome::Closed);
        }
        let mut failures = 0;
        loop {
            let el = match self.next(&mut parser).await {
                Ok(StreamEvent::Stanza(el)) => el,
                Ok(StreamEvent::Close) => {
                    let _ = write(&mut writer, "</stream:stream>").await;
                    return Step::Done(Outcome::Closed);
                }
                Ok(StreamEvent::Header(_)) => {
                    self.fail(&mut writer, &host, C::BadFormat.into()).await;
                    return Step::Done(Outcome::Closed);
                }
                Err(ParseError::Stream(e)) => {
                    self.fail(&mut writer, &host, e).await;
                    return Step::Done(Outcome::Closed);
                }
                Err(_) => return Step::Done(Outcome::Closed),
            };
            if el.is("starttls", ns::TLS) && self.offers_starttls() && authenticated.is_none() {
                if parser.get_ref().has_pending_data() {
                    // Plaintext pipelined after <starttls/> must never reach the TLS layer.
                    self.fail(
                        &mut writer,
                        &host,
                        StreamError::with_text(C::PolicyViolation, "data sent after starttls"),
                    )
                    .await;
                    return Step::Done(Outcome::Closed);
                }
                let proceed = Element::new("proceed", ns::TLS).to_xml(ns::CLIENT);
                if write(&mut writer, &proceed).await.is_err() {
                    return Step::Done(Outcome::Closed);
                }
                return Step::Done(Outcome::StartTls(parser, writer));
            }
            let sasl2 = el.is("authenticate", ns::SASL2);
            if (sasl2 || el.is("auth", ns::SASL)) && authenticated.is_none() {
                let mech_label = el
                    .get_attr("mechanism")
                    .and_then(super::sasl2::mechanism_label)
                    .unwrap_or("other");
                self.auth_attempt = Default::default();
                let outcome = if sasl2 {
                    self.sasl2(&el, &host, &mut parser, &mut writer).await
                } else if self.config.c2s.enforce_client_ids {
                    Err(SaslError::ClientIdRequired)
                } else {
                    let text = el.text_content();
                    self.sasl(
                        el.get_attr("mechanism"),
                        Some(text),
                        &host,
                        &mut parser,
                        &mut writer,
                        ns::SASL,
                    )
                    .await
                    .map(|done| {
                        done.map(|(jid, additional)| Authed {
                            jid,
                            additional,
                            sasl2: None,
                        })
                    })
                };
                let result = match &outcome {
                    Ok(Some(_)) => "success",
                    Ok(None) => "aborted",
                    Err(_) if self.auth_attempt.refused => "throttled",
                    Err(_) => "failure",
                };
                self.core
                    .core_metrics
                    .auth
                    .with(&[mech_label, result])
                    .inc();
                self.auth_event(&host, mech_label, &outcome);
                match outcome {
                    Ok(Some(authed)) => {
                        let jid = authed.jid.clone();
                        tracing::info!(peer = %self.peer, %jid, "authenticated");
                        self.conn.mechanism = Some(mech_label.to_string());
                        let (success, next) = self.finish_auth(authed, &host).await;
                        if write(&mut writer, &success).await.is_err() {
                            if let Next::Bound(session) = &next {
                                self.core.unbind_resource(&session.handle, None);
                            }
                            return Step::Done(Outcome::Closed);
                        }
                        match next {
                            Next::Restart => return Step::Restart(parser, writer, jid),
                            Next::Stay => {
                                parser.set_max_stanza_bytes(self.config.c2s.max_stanza_size);
                                authenticated = Some(jid);
                                continue;
                            }
                            Next::Bound(session) => {
                                parser.set_max_stanza_bytes(self.config.c2s.max_stanza_size);
                                return Step::Done(Outcome::Bound {
                                    parser,
                                    writer,
                                    session,
                                    host,
                                });
                            }
                            Next::Resumed(hib) => {
                                parser.set_max_stanza_bytes(self.config.c2s.max_stanza_size);
                                return Step::Done(Outcome::Resumed {
                                    parser,
                                    writer,
                                    hib,
                                    announced: true,
                                });
                            }
                        }
                    }
                    Ok(None) => return Step::Done(Outcome::Closed),
                    Err(e) => {
                        failures += 1;
                        tracing::info!(peer = %self.peer, condition = e.condition(), "authentication failed");
                        self.auth_attempt.failed(&self.core, &self.peer, &e);
                        if self.auth_attempt.refused {
                            // Brute force: a pause, <temporary-auth-failure/>, then the close.
                            super::guard::refusal_delay(&self.config).await;
                        }
                        let failure = if sasl2 {
                            super::sasl2::failure(&e)
                        } else {
                            super::sasl2::sasl1_failure(&e)
                        };
                        if write(&mut writer, &failure).await.is_err() {
                            return Step::Done(Outcome::Closed);
                        }
                        if failures >= MAX_AUTH_FAILURES || self.auth_attempt.refused {
                            self.fail(
                                &mut writer,
                                &host,
                                StreamError::with_text(
                                    C::PolicyViolation,
                                    "too many failed authentication attempts",
                                ),
                            )
                            .await;
                            return Step::Done(Outcome::Closed);
                        }
                        continue;
                    }
                }
            }
            if let Some(jid) = &authenticated
                && el.is("iq", ns::CLIENT)
                && el.get_attr("type") == Some("set")
                && let Some(bind) = el.get_child("bind", ns::BIND)
            {
                let requested = bind
                    .get_child("resource", ns::BIND)
                    .map(|r| r.text_content())
                    .filter(|r| !r.is_empty());
                let resource = match requested.map(|r| jid::normalize_resource(&r)) {
                    None => random_resource(),
                    Some(Ok(r)) => r,
                    Some(Err(_)) => {
                        let reply = stanza::error_reply(
                            &el,
                            &StanzaError::new(StanzaErrorCondition::BadRequest),
                        );
                        if let Some(r) = reply
                            && write(&mut writer, &r.to_xml(ns::CLIENT)).await.is_err()
                        {
                            return Step::Done(Outcome::Closed);
                        }
                        continue;
                    }
                };
                let c2s = &self.config.c2s;
                match self.core.bind_resource(
                    jid,
                    &resource,
                    c2s.resource_conflict,
                    c2s.send_queue,
                    Connection {
                        since: std::time::SystemTime::now(),
                        ..self.conn.clone()
                    },
                ) {
                    Ok(session) => {
                        let mut result = stanza::iq_result(&el, None);
                        result.set_attr("from", None);
                        result.push(Element::new("bind", ns::BIND).child(
                            Element::new("jid", ns::BIND).text(session.handle.jid.to_string()),
                        ));
                        if write(&mut writer, &result.to_xml(ns::CLIENT))
                            .await
                            .is_err()
                        {
                            self.core.unbind_resource(&session.handle, None);
                            return Step::Done(Outcome::Closed);
                        }
                        tracing::info!(peer = %self.peer, jid = %session.handle.jid, "resource bound");
                        crate::modules::client_management::note_session(
                            &self.core,
                            &session.handle,
                        );
                        return Step::Done(Outcome::Bound {
                            parser,
                            writer,
                            session,
                            host,
                        });
                    }
                    Err(e) => {
                        let cond = match e {
                            BindError::Conflict => StanzaErrorCondition::Conflict,
                            BindError::ResourceConstraint => {
                                StanzaErrorCondition::ResourceConstraint
                            }
                            BindError::NotAllowed => StanzaErrorCondition::NotAllowed,
                        };
                        if let Some(r) = stanza::error_reply(&el, &StanzaError::new(cond))
                            && write(&mut writer, &r.to_xml(ns::CLIENT)).await.is_err()
                        {
                            return Step::Done(Outcome::Closed);
                        }
                        continue;
                    }
                }
            }
            // XEP-0198 resumption instead of binding.
            if let Some(jid) = &authenticated
                && el.is("resume", ns::SM)
            {
                match self.resume(jid, &el).await {
                    Ok(hib) => {
                        return Step::Done(Outcome::Resumed {
                            parser,
                            writer,
                            hib,
                            announced: false,
                        });
                    }
                    Err(condition) => {
                        let failed = Element::new("failed", ns::SM)
                            .child(Element::new(condition, ns::STANZAS))
                            .to_xml(ns::CLIENT);
                        if write(&mut writer, &failed).await.is_err() {
                            return Step::Done(Outcome::Closed);
                        }
                        continue;
                    }
                }
            }
            // XEP-0077 in-band registration before authentication.
            if authenticated.is_none()
                && let Some(reply) = super::register::preauth(
                    &self.core,
                    &self.config,
                    &host,
                    &self.peer,
                    self.secure,
                    &el,
                )
                .await
            {
                if write(&mut writer, &reply.to_xml(ns::CLIENT)).await.is_err() {
                    return Step::Done(Outcome::Closed);
                }
                continue;
            }
            // Anything else before binding is out of order.
            let err = if authenticated.is_none() {
                StreamError::with_text(C::NotAuthorized, "authenticate first")
            } else {
                StreamError::with_text(C::NotAuthorized, "bind a resource first")
            };
            self.fail(&mut writer, &host, err).await;
            return Step::Done(Outcome::Closed);
        }
    }

    fn check_header(
        &self,
        h: &StreamHeader,
        authenticated: Option<&Jid>,
    ) -> Result<String, StreamError> {
        if h.default_ns.as_deref() != Some(ns::CLIENT) {
            return Err(StreamError::with_text(
                C::InvalidNamespace,
                "expected jabber:client",
            ));
        }
        let to = h.to.as_deref().ok_or_else(|| {
            StreamError::with_text(C::HostUnknown, "the stream header needs a 'to'")
        })?;
        let host = jid::normalize_domain(to).map_err(|_| StreamError::new(C::HostUnknown))?;
        if self.core.user_host(&host).is_none() {
            return Err(StreamError::with_text(
                C::HostUnknown,
                format!("{host} is not served here"),
            ));
        }
        if let Some(j) = authenticated
            && j.domain() != host
        {
            return Err(StreamError::new(C::HostUnknown));
        }
        match h.version.as_deref() {
            Some(v) if v.split('.').next().and_then(|m| m.parse::<u32>().ok()) == Some(1) => {
                Ok(host)
            }
            _ => Err(StreamError::with_text(
                C::UnsupportedVersion,
                "version 1.0 is required",
            )),
        }
    }

    /// Takes over the hibernated (or still attached) session `previd` of `jid`, acknowledging
    /// `h`; offered where a module handles XEP-0198 `<enable/>` (the `smacks` module).
    pub(super) async fn resume(
        &self,
        jid: &Jid,
        el: &Element,
    ) -> Result<crate::core::sessions::Hibernated, &'static str> {
        let offered = self
            .core
            .host(jid.domain())
            .is_some_and(|h| h.handles_tag(ns::SM, "enable"));
        if !offered {
            return Err("feature-not-implemented");
        }
        let id = el.get_attr("previd").ok_or("bad-request")?;
        let h: u32 = el
            .get_attr("h")
            .and_then(|h| h.parse().ok())
            .ok_or("bad-request")?;
        self.core
            .sessions
            .take_over(jid, id, h, RESUME_WAIT)
            .await
            .map_err(|e| {
                if e == crate::core::stream_management::ResumeError::ItemNotFound {
                    // Perhaps held by another cluster node: it ends it, nothing is lost.
                    self.core.resume_missed(jid, id);
                }
                e.condition()
            })
    }

    /// Fires `authentication-success` or `authentication-failure` for a finished SASL exchange.
    fn auth_event(&self, host: &str, mechanism: &str, outcome: &Result<Option<Authed>, SaslError>) {
        let event = match outcome {
            Ok(Some(_)) => AUTHENTICATION_SUCCESS,
            Ok(None) => return,
            Err(_) => AUTHENTICATION_FAILURE,
        };
        self.core.fire_host_event_with(host, event, || {
            let mut data = serde_json::json!({
                "host": host,
                "mechanism": mechanism,
                "peer": self.peer,
                "secure": self.secure,
            });
            match outcome {
                Ok(Some(authed)) => data["username"] = authed.jid.node().unwrap_or_default().into(),
                Err(e) => data["condition"] = e.condition().into(),
                Ok(None) => {}
            }
            data
        });
    }

    /// The configured mechanisms this connection can use: PLAIN only when encrypted, the
    /// `-PLUS` ones only with a channel binding.
    pub(super) fn mechanisms(&self) -> Vec<Mechanism> {
        self.config
            .c2s
            .sasl_mechanisms
            .iter()
            .filter_map(|m| Mechanism::from_name(m))
            .filter(|m| *m != Mechanism::Plain || self.secure)
            .filter(|m| !m.is_plus() || !self.bindings.is_empty())
            .collect()
    }

    pub(super) fn features(&self, authenticated: bool, host: &str) -> Element {
        let mut f = Element::new("features", ns::STREAM);
        // XEP-0115: the server's entity capabilities, before and after authentication.
        if let Some(caps) = self
            .core
            .host(host)
            .and_then(|h| crate::modules::disco::server_caps(h))
        {
            f.push(caps);
        }
        let c2s = &self.config.c2s;
        if authenticated {
            f.push(Element::new("bind", ns::BIND));
            if let Some(host) = self.core.host(host) {
                for extra in host.stream_features() {
                    f.push(extra);
                }
            }
            f.push(
                Element::new("session", ns::SESSION).child(Element::new("optional", ns::SESSION)),
            );
            f.push(limits_feature(c2s.max_stanza_size));
            return f;
        }
        if self.offers_starttls() {
            let mut tls = Element::new("starttls", ns::TLS);
            if c2s.require_encryption {
                tls.push(Element::new("required", ns::TLS));
            }
            f.push(tls);
        }
        if self.secure || !c2s.require_encryption {
            let mut mechs = Element::new("mechanisms", ns::SASL);
            for m in self.mechanisms() {
                mechs.push(Element::new("mechanism", ns::SASL).text(m.name()));
            }
            f.push(mechs);
            f.push(self.sasl2_feature(host, &self.mechanisms()));
            if let Some(cb) = self.channel_binding_feature() {
                f.push(cb);
            }
        }
        if let Some(register) =
            super::register::stream_feature(&self.core, &self.config, host, self.secure)
        {
            f.push(register);
        }
        f.push(limits_feature(c2s.max_stanza_size_unauthenticated));
        f
    }

    /// Runs one SASL exchange for `mechanism` with the base64 `initial` response, framed in
    /// `profile` (SASL1's or SASL2's namespace). `Ok(Some)` = success (the account and the
    /// mechanism's final server data); `Ok(None)` = stream ended.
    pub(super) async fn sasl<R, W>(
        &mut self,
        mechanism: Option<&str>,
        initial: Option<String>,
        host: &str,
        parser: &mut StreamParser<R>,
        writer: &mut W,
        profile: &'static str,
    ) -> Result<Option<(Jid, Option<Vec<u8>>)>, SaslError>
    where
        R: AsyncBufRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if self.config.c2s.require_encryption && !self.secure {
            return Err(SaslError::EncryptionRequired);
        }
        if !self.auth_guard(None) {
            return Err(SaslError::TemporaryAuthFailure);
        }
        let mech = mechanism
            .and_then(Mechanism::from_name)
            .filter(|m| self.mechanisms().contains(m));
        let Some(mech) = mech else {
            if mechanism == Some("PLAIN") && !self.secure {
                return Err(SaslError::EncryptionRequired);
            }
            return Err(SaslError::InvalidMechanism);
        };
        let text = initial.unwrap_or_default();
        let mut initial = if text.trim().is_empty() {
            None
        } else {
            Some(sasl::decode_b64(text.trim())?)
        };
        if initial.is_none() {
            match self.challenge(parser, writer, b"", profile).await? {
                Some(r) => initial = Some(r),
                None => return Ok(None),
            }
        }
        let first = initial.unwrap_or_default();
        match mech.scram_hash() {
            None => {
                let creds = sasl::parse_plain(&first)?;
                let jid = self.login_jid(&creds.authcid, creds.authzid.as_deref(), host)?;
                if !self.auth_guard(Some(&jid)) {
                    return Err(SaslError::TemporaryAuthFailure);
                }
                let ok = self
                    .core
                    .accounts
                    .verify_password(&jid, &creds.password)
                    .await
                    .map_err(|_| SaslError::TemporaryAuthFailure)?;
                if !ok {
                    return Err(SaslError::NotAuthorized);
                }
                Ok(Some((jid, None)))
            }
            Some(hash) => {
                let mut server =
                    ScramServer::with_binding(hash, mech.is_plus(), self.bindings.clone())
                        .with_downgrade_hash(self.downgrade_hash(hash));
                let cf = server.client_first(&first)?;
                let jid = self.login_jid(&cf.username, cf.authzid.as_deref(), host);
                if !self.auth_guard(jid.as_ref().ok()) {
                    return Err(SaslError::TemporaryAuthFailure);
                }
                let record = match &jid {
                    Ok(j) => self
                        .core
                        .accounts
                        .get(j)
                        .await
                        .map_err(|_| SaslError::TemporaryAuthFailure)?,
                    Err(SaslError::InvalidAuthzid) => return Err(SaslError::InvalidAuthzid),
                    Err(_) => None,
                };
                let keys = record.as_ref().map(|r| r.credentials.scram(hash));
                let server_first = server.server_first(keys);
                let Some(response) = self
                    .challenge(parser, writer, &server_first, profile)
                    .await?
                else {
                    return Ok(None);
                };
                let server_final = server.client_final(&response)?;
                Ok(Some((jid?, Some(server_final))))
            }
        }
    }

    /// Asks the brute-force guard about this attempt (for `account` once named).
    pub(super) fn auth_guard(&mut self, account: Option<&Jid>) -> bool {
        self.auth_attempt
            .check(&self.core, &self.config, &self.peer, account)
    }

    pub(super) fn login_jid(
        &self,
        username: &str,
        authzid: Option<&str>,
        host: &str,
    ) -> Result<Jid, SaslError> {
        let node = jid::normalize_node(username).map_err(|_| SaslError::NotAuthorized)?;
        let jid = Jid::new(Some(&node), host, None).map_err(|_| SaslError::NotAuthorized)?;
        if let Some(z) = authzid
            && !z.is_empty()
            && Jid::parse(z).ok().as_ref() != Some(&jid)
        {
            return Err(SaslError::InvalidAuthzid);
        }
        Ok(jid)
    }

    /// Sends a challenge and reads the response, framed in `profile`; `Ok(None)` if the stream ended.
    async fn challenge<R, W>(
        &mut self,
        parser: &mut StreamParser<R>,
        writer: &mut W,
        data: &[u8],
        profile: &'static str,
    ) -> Result<Option<Vec<u8>>, SaslError>
    where
        R: AsyncBufRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut ch = Element::new("challenge", profile);
        if !data.is_empty() {
            ch.push_text(sasl::encode_b64(data));
        }
        if write(writer, &ch.to_xml(ns::CLIENT)).await.is_err() {
            return Ok(None);
        }
        match self.next(parser).await {
            Ok(StreamEvent::Stanza(el)) if el.is("response", profile) => {
                let t = el.text_content();
                Ok(Some(if t.trim().is_empty() {
                    Vec::new()
                } else {
                    sasl::decode_b64(t.trim())?
                }))
            }
            Ok(StreamEvent::Stanza(el)) if el.is("abort", profile) => Err(SaslError::Aborted),
            Ok(StreamEvent::Stanza(_)) => Err(SaslError::MalformedRequest),
            Ok(_) => Ok(None),
            Err(ParseError::Stream(e)) => {
                let host = self.config.default_host().to_string();
                self.fail(writer, &host, e).await;
                Ok(None)
            }
            Err(_) => Ok(None),
        }
    }
}

impl Negotiation {
    /// A negotiation for a new connection.
    pub fn new(core: Arc<Core>, peer: String, secure: bool) -> Self {
        let config = core.config.load_full();
        let deadline = Instant::now() + Duration::from_secs(config.c2s.negotiation_timeout_secs);
        Negotiation {
            core,
            config,
            conn: Connection::new(peer.clone(), secure),
            peer,
            secure,
            deadline,
            header_sent: false,
            bindings: Vec::new(),
            auth_attempt: Default::default(),
        }
    }

    /// Whether STARTTLS is on offer: on a plaintext TCP stream, never on the web transports.
    fn offers_starttls(&self) -> bool {
        !self.secure && self.conn.transport == Transport::Tcp
    }

    /// Marks the transport as encrypted (after STARTTLS) and expects a fresh stream header.
    pub fn upgraded(&mut self, tls: Option<TlsInfo>) {
        self.secure = true;
        self.conn.secure = true;
        self.conn.tls = tls;
        self.header_sent = false;
    }
}

/// Negotiation over an in-memory duplex stream: what the server writes for each client step,
/// how the negotiation ends, and the authentication and bind events it fires.
#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, BufReader, DuplexStream, ReadHalf, WriteHalf};
    use tokio::task::JoinHandle;

    use super::*;
    use crate::core::lifecycle::tests::{Seen, recording, take};
    use crate::core::lifecycle::{PRE_RESOURCE_BIND, RESOURCE_BIND, RESOURCE_UNBIND};

    type ServerEnd = Outcome<BufReader<ReadHalf<DuplexStream>>, WriteHalf<DuplexStream>>;

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

    /// The client's end: writes raw XML, reads until an expected piece of text.
    struct Client {
        r: ReadHalf<DuplexStream>,
        w: WriteHalf<DuplexStream>,
        buf: String,
    }

    impl Client {
        async fn send(&mut self, xml: &str) {
            write(&mut self.w, xml).await.expect("client write");
        }

        /// Everything up to and including `needle`; `None` if the server closed first.
        async fn read_until(&mut self, needle: &str) -> Option<String> {
            loop {
                if let Some(i) = self.buf.find(needle) {
                    let rest = self.buf.split_off(i + needle.len());
                    return Some(std::mem::replace(&mut self.buf, rest));
                }
                let mut chunk = [0u8; 4096];
                match self.r.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
                }
            }
        }

        /// Opens a stream and returns the features offered.
        async fn open(&mut self) -> String {
            self.send(HEADER).await;
            self.read_until("</stream:features>")
                .await
                .expect("features")
        }

        async fn auth_plain(&mut self, user: &str, password: &str) -> String {
            let creds = sasl::encode_b64(format!("\0{user}\0{password}").as_bytes());
            self.send(&format!(
                "<auth xmlns='{}' mechanism='PLAIN'>{creds}</auth>",
                ns::SASL
            ))
            .await;
            let reply = self.read_until("/>").await.expect("sasl reply");
            if reply.contains("<failure") {
                return reply + &self.read_until("</failure>").await.unwrap_or_default();
            }
            reply
        }
    }

    /// A server with alice's account and a recorder of `events`; negotiation runs on a duplex
    /// stream (`secure` plays an encrypted transport).
    async fn negotiate(
        events: &'static [&'static str],
        secure: bool,
    ) -> (Arc<Core>, Seen, Client, JoinHandle<ServerEnd>) {
        let (core, seen) = recording(events, false);
        let alice = Jid::parse("alice@localhost").expect("jid");
        core.accounts.create(&alice, "pw").await.expect("account");
        take(&seen);
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (sr, sw) = tokio::io::split(server);
        let mut neg = Negotiation::new(core.clone(), "peer:1".into(), secure);
        let parser = StreamParser::new(BufReader::new(sr), unauth_limits(&neg.config));
        let task = tokio::spawn(async move { neg.run(parser, sw, None).await });
        let (r, w) = tokio::io::split(client);
        let client = Client {
            r,
            w,
            buf: String::new(),
        };
        (core, seen, client, task)
    }

    #[tokio::test]
    async fn plain_login_then_bind_gives_a_bound_session_and_announces_both() {
        let events = &[AUTHENTICATION_SUCCESS, RESOURCE_BIND, RESOURCE_UNBIND];
        let (core, seen, mut c, task) = negotiate(events, true).await;
        let features = c.open().await;
        assert!(
            features.contains("<mechanism>PLAIN</mechanism>"),
            "{features}"
        );
        assert!(!features.contains("starttls"), "{features}");
        assert!(c.auth_plain("alice", "pw").await.contains("<success"));
        let features = c.open().await;
        assert!(features.contains(ns::BIND), "{features}");
        assert!(features.contains(ns::SM), "{features}");
        c.send(&format!(
            "<iq type='set' id='b'><bind xmlns='{}'><resource>dev</resource></bind></iq>",
            ns::BIND
        ))
        .await;
        let bound = c.read_until("</iq>").await.expect("bind result");
        assert!(bound.contains("<jid>alice@localhost/dev</jid>"), "{bound}");
        let Outcome::Bound { session, host, .. } = task.await.expect("task") else {
            panic!("expected a bound session");
        };
        assert_eq!(host, "localhost");
        assert_eq!(session.handle.jid.to_string(), "alice@localhost/dev");
        assert!(core.sessions.get(&session.handle.jid).is_some());
        let seen = take(&seen);
        assert_eq!(
            seen[0],
            (
                AUTHENTICATION_SUCCESS.to_string(),
                serde_json::json!({ "username": "alice", "host": "localhost",
                    "mechanism": "PLAIN", "peer": "peer:1", "secure": true })
            )
        );
        assert_eq!(seen[1].0, RESOURCE_BIND);
        assert_eq!(seen[1].1["jid"], "alice@localhost/dev");
        assert_eq!(seen.len(), 2, "{seen:?}");
    }

    #[tokio::test]
    async fn three_failed_logins_end_the_stream_and_each_is_announced() {
        let (_core, seen, mut c, task) = negotiate(&[AUTHENTICATION_FAILURE], true).await;
        c.open().await;
        for _ in 0..2 {
            let reply = c.auth_plain("alice", "wrong").await;
            assert!(reply.contains("<not-authorized/>"), "{reply}");
        }
        let reply = c.auth_plain("alice", "wrong").await;
        assert!(reply.contains("<not-authorized/>"), "{reply}");
        let end = c.read_until("</stream:stream>").await.expect("stream end");
        assert!(end.contains("<policy-violation"), "{end}");
        assert!(matches!(task.await.expect("task"), Outcome::Closed));
        let seen = take(&seen);
        assert_eq!(seen.len(), 3, "{seen:?}");
        for (event, data) in seen {
            assert_eq!(event, AUTHENTICATION_FAILURE);
            assert_eq!(
                data,
                serde_json::json!({ "host": "localhost", "mechanism": "PLAIN",
                    "condition": "not-authorized", "peer": "peer:1", "secure": true })
            );
        }
    }

    #[tokio::test]
    async fn a_throttled_address_gets_temporary_auth_failure_even_with_the_right_password() {
        let (core, seen, mut c, task) = negotiate(&[AUTHENTICATION_FAILURE], true).await;
        let limits = core.config.load().limits.clone();
        let now = std::time::Instant::now();
        for _ in 0..limits.auth_max_failures {
            core.auth_guard.failed("peer:1", None, now);
        }
        c.open().await;
        let reply = c.auth_plain("alice", "pw").await;
        assert!(reply.contains("<temporary-auth-failure/>"), "{reply}");
        let end = c.read_until("</stream:stream>").await.expect("stream end");
        assert!(end.contains("<policy-violation"), "{end}");
        assert!(matches!(task.await.expect("task"), Outcome::Closed));
        let seen = take(&seen);
        assert_eq!(seen[0].1["condition"], "temporary-auth-failure", "{seen:?}");
    }

    #[tokio::test]
    async fn wrong_passwords_are_counted_against_the_address_and_the_account() {
        let (core, _seen, mut c, task) = negotiate(&[], true).await;
        c.open().await;
        for _ in 0..3 {
            assert!(
                c.auth_plain("alice", "wrong")
                    .await
                    .contains("<not-authorized/>")
            );
        }
        assert!(matches!(task.await.expect("task"), Outcome::Closed));
        let limits = crate::config::LimitsConfig {
            auth_max_failures: 3,
            ..Default::default()
        };
        let now = std::time::Instant::now();
        assert!(!core.auth_guard.allows(&limits, "peer:1", None, now));
        let per_account = crate::config::LimitsConfig {
            auth_max_failures: 0,
            auth_account_max_failures: 3,
            ..Default::default()
        };
        let alice = Jid::parse("alice@localhost").expect("jid");
        assert!(
            !core
                .auth_guard
                .allows(&per_account, "peer:1", Some(&alice), now)
        );
        assert!(
            core.auth_guard
                .allows(&per_account, "clean:1", Some(&alice), now)
        );
    }

    #[tokio::test]
    async fn a_stanza_before_authentication_ends_the_stream() {
        let (_core, _seen, mut c, task) = negotiate(&[], true).await;
        c.open().await;
        c.send("<message to='bob@localhost'><body>hi</body></message>")
            .await;
        let end = c.read_until("</stream:stream>").await.expect("stream end");
        assert!(end.contains("<not-authorized"), "{end}");
        assert!(matches!(task.await.expect("task"), Outcome::Closed));
    }

    #[tokio::test]
    async fn a_stream_to_an_unknown_host_is_refused() {
        let (_core, _seen, mut c, task) = negotiate(&[], true).await;
        c.send(&HEADER.replace("to='localhost'", "to='elsewhere.example'"))
            .await;
        let end = c.read_until("</stream:stream>").await.expect("stream end");
        assert!(end.contains("<host-unknown"), "{end}");
        assert!(matches!(task.await.expect("task"), Outcome::Closed));
    }

    #[tokio::test]
    async fn plaintext_offers_only_starttls_then_hands_the_stream_over() {
        let (_core, _seen, mut c, task) = negotiate(&[], false).await;
        let features = c.open().await;
        assert!(features.contains("<required/>"), "{features}");
        assert!(!features.contains("PLAIN"), "{features}");
        c.send(&format!("<starttls xmlns='{}'/>", ns::TLS)).await;
        assert!(
            c.read_until("/>")
                .await
                .expect("proceed")
                .contains("<proceed")
        );
        assert!(matches!(task.await.expect("task"), Outcome::StartTls(..)));
    }

    #[tokio::test]
    async fn plaintext_pipelined_after_starttls_is_refused() {
        let (_core, _seen, mut c, task) = negotiate(&[], false).await;
        c.open().await;
        c.send(&format!("<starttls xmlns='{}'/><message/>", ns::TLS))
            .await;
        let end = c.read_until("</stream:stream>").await.expect("stream end");
        assert!(end.contains("<policy-violation"), "{end}");
        assert!(matches!(task.await.expect("task"), Outcome::Closed));
    }

    #[tokio::test]
    async fn whitespace_after_starttls_gets_proceed() {
        let (_core, _seen, mut c, task) = negotiate(&[], false).await;
        c.open().await;
        c.send(&format!("<starttls xmlns='{}'/>\n \t\r\n", ns::TLS))
            .await;
        let reply = c.read_until("/>").await.expect("proceed");
        assert!(reply.contains("<proceed"), "{reply}");
        assert!(matches!(task.await.expect("task"), Outcome::StartTls(..)));
    }

    #[tokio::test]
    async fn a_refused_resource_gets_not_allowed_and_negotiation_goes_on() {
        let (_core, seen, mut c, task) = negotiate(&[PRE_RESOURCE_BIND], true).await;
        c.open().await;
        assert!(c.auth_plain("alice", "pw").await.contains("<success"));
        c.open().await;
        // The recorder refuses the resource `refused` in pre-resource-bind.
        let bind = |r: &str| {
            format!(
                "<iq type='set' id='{r}'><bind xmlns='{}'><resource>{r}</resource></bind></iq>",
                ns::BIND
            )
        };
        c.send(&bind("refused")).await;
        let reply = c.read_until("</iq>").await.expect("bind error");
        assert!(reply.contains("<not-allowed"), "{reply}");
        c.send(&bind("ok")).await;
        assert!(
            c.read_until("</iq>")
                .await
                .expect("bound")
                .contains("alice@localhost/ok")
        );
        assert!(matches!(task.await.expect("task"), Outcome::Bound { .. }));
        assert_eq!(take(&seen).len(), 2, "one pre-resource-bind per attempt");
    }
}
