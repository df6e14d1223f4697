//! Incoming streams: the listener, STARTTLS, dialback (answering `<db:result/>` after checking
//! the key with the authoritative server, and `<db:verify/>` for keys we made), then stanzas
//! from the authenticated domains into [`Core::route`].

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use rustls::pki_types::CertificateDer;

use super::stream::{self, Conn, Writer};
use super::{Counted, S2s, StreamState, outbound};
use crate::c2s::negotiate::{limits_feature, stream_id};
use crate::config::Config;
use crate::core::Core;
use crate::core::admission::{Listener, PreauthSlot, Thresholds};
use crate::core::events::Origin;
use crate::core::sessions::TlsInfo;
use crate::xmpp::error::{
    StanzaError, StanzaErrorCondition, StreamError, StreamErrorCondition as C,
};
use crate::xmpp::parser::{ParseError, StreamEvent};
use crate::xmpp::stanza::Kind;
use crate::xmpp::{Element, Jid, ns};

/// Accepts server connections until shutdown.
pub(super) async fn serve(s2s: Arc<S2s>, listener: TcpListener, direct_tls: bool) {
    let Some(core) = s2s.core.upgrade() else {
        return;
    };
    loop {
        let accepted = tokio::select! {
            _ = core.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "s2s accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Flood limits, as for clients but counted apart: closed at once, counted in the metrics.
        let cfg = core.config.load();
        let exempt = cfg.limits.exempt(peer.ip().to_canonical());
        let limits = Thresholds::s2s(&cfg.s2s);
        let slot = match core.admission.admit_on(
            Listener::S2s,
            &limits,
            exempt,
            peer.ip(),
            std::time::Instant::now(),
        ) {
            Ok(slot) => slot,
            Err(why) => {
                tracing::debug!(%peer, reason = why.label(), "s2s connection refused by the flood limits");
                continue;
            }
        };
        drop(cfg);
        let _ = tcp.set_nodelay(true);
        core.tasks.spawn(connection(
            s2s.clone(),
            core.clone(),
            tcp,
            peer,
            direct_tls,
            slot,
        ));
    }
}

/// Sends a stream error (after our header if none was sent), counts it, and closes.
async fn fail(core: &Core, w: &mut Writer, header: Option<String>, err: StreamError) {
    core.core_metrics
        .stream_error_on("s2s", &err.condition.to_string());
    let mut out = header.unwrap_or_default();
    out.push_str(&err.to_element().to_xml(ns::SERVER));
    out.push_str("</stream:stream>");
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = stream::write(w, &out).await;
        let _ = w.shutdown().await;
    })
    .await;
}

/// One incoming connection: its registry entry lives as long as the task.
async fn connection(
    s2s: Arc<S2s>,
    core: Arc<Core>,
    tcp: TcpStream,
    peer: SocketAddr,
    direct_tls: bool,
    slot: PreauthSlot,
) {
    let state = StreamState::new("incoming", "", "");
    let id = s2s.register_incoming(state.clone());
    let mut c = Incoming {
        s2s: s2s.clone(),
        core,
        peer,
        state,
        authed: HashSet::new(),
        trust: s2s.trust(),
        tls: false,
        chain: Vec::new(),
        _counted: None,
        preauth: Some(slot),
    };
    let limits = c.core.config.load().limits.clone();
    let mut conn: Conn = if limits.exempt(peer.ip().to_canonical()) {
        Box::new(tcp)
    } else {
        // Read bandwidth shaping: a peer sending faster is slowed, not disconnected.
        Box::new(crate::c2s::shaper::Shaped::new(
            tcp,
            limits.s2s_read_rate,
            limits.s2s_read_burst,
        ))
    };
    let deadline =
        Instant::now() + Duration::from_secs(c.core.config.load().s2s.negotiation_timeout_secs);
    if direct_tls {
        match tokio::time::timeout_at(deadline, c.s2s.tls_server.accept(conn)).await {
            Ok(Ok(t)) => {
                c.chain = stream::peer_chain(t.get_ref().1);
                c.state.secured(TlsInfo::of(t.get_ref().1));
                conn = Box::new(t);
                c.tls = true;
            }
            _ => {
                s2s.unregister_incoming(id);
                return;
            }
        }
    }
    let cancel = c.state.cancel.clone();
    let shutdown = c.core.shutdown.clone();
    // Closed by the administrator or by shutdown: the connection is dropped, which the peer
    // sees as the end of its outgoing stream (it bounces or reconnects from there).
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = shutdown.cancelled() => {}
        _ = c.run(conn, deadline) => {}
    }
    s2s.unregister_incoming(id);
}

struct Incoming {
    s2s: Arc<S2s>,
    core: Arc<Core>,
    peer: SocketAddr,
    state: Arc<StreamState>,
    /// (local domain, remote domain) pairs authenticated on this stream.
    authed: HashSet<(String, String)>,
    /// The trust anchors in force when the connection arrived.
    trust: Arc<super::cert::Trust>,
    tls: bool,
    /// The certificate chain the peer presented in the TLS handshake.
    chain: Vec<CertificateDer<'static>>,
    _counted: Option<Counted>,
    /// Counted by the flood limits until the first domain is authenticated.
    preauth: Option<PreauthSlot>,
}

impl Incoming {
    /// Serves streams on `conn` (a new one after STARTTLS or SASL) until the peer closes or fails.
    async fn run(&mut self, conn: Conn, deadline: Instant) {
        let cfg = self.core.config.load_full();
        let (mut parser, mut w) = stream::open(conn, &cfg);
        'streams: loop {
            let limit = |authed: bool| if authed { None } else { Some(deadline) };
            let header = match stream::next(&mut parser, limit(!self.authed.is_empty())).await {
                Ok(StreamEvent::Header(h)) => h,
                Ok(_) => {
                    let h = stream::header(cfg.default_host(), None, None);
                    return fail(&self.core, &mut w, Some(h), C::BadFormat.into()).await;
                }
                Err(ParseError::Stream(e)) => {
                    let h = stream::header(cfg.default_host(), None, None);
                    return fail(&self.core, &mut w, Some(h), e).await;
                }
                Err(_) => return,
            };
            let local = header.to.clone().unwrap_or_default();
            let sid = stream_id();
            let our_header = stream::header(
                if local.is_empty() {
                    cfg.default_host()
                } else {
                    &local
                },
                header.from.as_deref(),
                Some(&sid),
            );
            if header.default_ns.as_deref() != Some(ns::SERVER) {
                return fail(
                    &self.core,
                    &mut w,
                    Some(our_header),
                    C::InvalidNamespace.into(),
                )
                .await;
            }
            if self.core.host(&local).is_none() {
                return fail(&self.core, &mut w, Some(our_header), C::HostUnknown.into()).await;
            }
            let peer_domain = header
                .from
                .as_deref()
                .unwrap_or_default()
                .to_ascii_lowercase();
            let mut out = our_header;
            out.push_str(&self.features(&cfg, &local, &peer_domain).to_xml(ns::SERVER));
            if stream::write(&mut w, &out).await.is_err() {
                return;
            }
            loop {
                let el = match stream::next(&mut parser, limit(!self.authed.is_empty())).await {
                    Ok(StreamEvent::Stanza(el)) => el,
                    Ok(StreamEvent::Close) => {
                        let _ = stream::write(&mut w, "</stream:stream>").await;
                        return;
                    }
                    Ok(StreamEvent::Header(_)) => {
                        return fail(&self.core, &mut w, None, C::BadFormat.into()).await;
                    }
                    Err(ParseError::Stream(e)) => {
                        tracing::info!(peer = %self.peer, error = %e, "closing s2s stream");
                        return fail(&self.core, &mut w, None, e).await;
                    }
                    Err(_) => return,
                };
                if el.is("starttls", ns::TLS) && !self.tls {
                    let proceed = Element::new("proceed", ns::TLS).to_xml(ns::SERVER);
                    if stream::write(&mut w, &proceed).await.is_err() {
                        return;
                    }
                    let Some(plain) = stream::rejoin(parser, w) else {
                        tracing::info!(peer = %self.peer, "s2s data sent after starttls; dropping");
                        return;
                    };
                    let accepted =
                        tokio::time::timeout_at(deadline, self.s2s.tls_server.accept(plain)).await;
                    let Ok(Ok(t)) = accepted else {
                        return;
                    };
                    self.chain = stream::peer_chain(t.get_ref().1);
                    self.tls = true;
                    self.state.secured(TlsInfo::of(t.get_ref().1));
                    (parser, w) = stream::open(Box::new(t), &cfg);
                    continue 'streams;
                }
                if !self.tls && cfg.s2s.require_encryption {
                    let e = StreamError::with_text(C::PolicyViolation, "STARTTLS is required");
                    return fail(&self.core, &mut w, None, e).await;
                }
                let step = if el.is("auth", ns::SASL) {
                    match self
                        .sasl_external(&mut w, &cfg, &local, &peer_domain, &el)
                        .await
                    {
                        Ok(true) => {
                            // Stream restart: a fresh parser over the same buffered reader.
                            parser = crate::xmpp::parser::StreamParser::new(
                                parser.into_inner(),
                                stream::limits(&cfg),
                            );
                            continue 'streams;
                        }
                        Ok(false) => Ok(()),
                        Err(e) => Err(e),
                    }
                } else if el.is("result", ns::DIALBACK) {
                    self.db_result(&mut w, &cfg, &sid, &el).await
                } else if el.is("verify", ns::DIALBACK) {
                    self.db_verify(&mut w, &local, &el).await
                } else {
                    self.stanza(el).await
                };
                if let Err(e) = step {
                    tracing::info!(peer = %self.peer, error = %e, "closing s2s stream");
                    return fail(&self.core, &mut w, None, e).await;
                }
            }
        }
    }

    /// Whether the peer's certificate is trusted and names `domain`.
    fn cert_valid_for(&self, domain: &str) -> bool {
        self.tls && !domain.is_empty() && self.trust.valid_for(&self.chain, domain)
    }

    /// The stream features: STARTTLS first; then SASL EXTERNAL when the certificate names the
    /// domain of the header's `from` (not yet authenticated), dialback and the XEP-0478 limit.
    fn features(&self, cfg: &Config, local: &str, peer_domain: &str) -> Element {
        let mut features = Element::new("features", ns::STREAM);
        if !self.tls {
            let mut st = Element::new("starttls", ns::TLS);
            if cfg.s2s.require_encryption {
                st = st.child(Element::new("required", ns::TLS));
            }
            features = features.child(st);
            if cfg.s2s.require_encryption {
                return features;
            }
        }
        let done = self
            .authed
            .contains(&(local.to_string(), peer_domain.to_string()));
        if !done && self.cert_valid_for(peer_domain) {
            features = features.child(
                Element::new("mechanisms", ns::SASL)
                    .child(Element::new("mechanism", ns::SASL).text("EXTERNAL")),
            );
        }
        features
            .child(
                Element::new("dialback", ns::DIALBACK_FEATURE)
                    .child(Element::new("errors", ns::DIALBACK_FEATURE)),
            )
            .child(limits_feature(cfg.s2s.max_stanza_size))
    }

    /// Records `remote` as authenticated for `local` on this stream.
    fn authenticated(&mut self, local: &str, remote: &str, auth: &'static str) {
        tracing::info!(peer = %self.peer, %local, %remote, tls = self.tls, auth, "s2s incoming stream authenticated");
        let fresh = self.authed.insert((local.to_string(), remote.to_string()));
        self.preauth = None;
        let (tls, cert_valid) = (self.tls, self.cert_valid_for(remote));
        if fresh {
            let peer = Some(self.peer.to_string());
            self.core
                .s2s_established(true, local, remote, auth, tls, peer);
        }
        self.state.update(|i| {
            if i.remote.is_empty() {
                i.local = local.to_string();
                i.remote = remote.to_string();
                i.auth = auth;
                i.cert_valid = cert_valid;
            }
            i.tls |= tls;
        });
        if self._counted.is_none() {
            self._counted = Some(Counted::new(
                &self.s2s.metrics.connections,
                "incoming",
                auth,
            ));
        }
    }

    /// SASL EXTERNAL (XEP-0178): the certificate must name the stream's `from` domain, which an
    /// authorization identity, if given, must equal. `Ok(true)`: succeeded, restart the stream.
    async fn sasl_external(
        &mut self,
        w: &mut Writer,
        cfg: &Config,
        local: &str,
        peer_domain: &str,
        el: &Element,
    ) -> Result<bool, StreamError> {
        use base64::Engine;
        let failure = |condition: &str| {
            Element::new("failure", ns::SASL).child(Element::new(condition, ns::SASL))
        };
        let text = el.text_content();
        let text = text.trim();
        let authzid = if text.is_empty() || text == "=" {
            Some(String::new())
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
        };
        let outcome = match authzid {
            _ if el.get_attr("mechanism") != Some("EXTERNAL") => Err("invalid-mechanism"),
            None => Err("incorrect-encoding"),
            Some(a) if !a.is_empty() && !a.eq_ignore_ascii_case(peer_domain) => {
                Err("invalid-authzid")
            }
            Some(_) if !cfg.s2s.permits(peer_domain) => Err("not-authorized"),
            Some(_) if !self.cert_valid_for(peer_domain) => Err("not-authorized"),
            Some(_) => Ok(()),
        };
        let reply = match outcome {
            Ok(()) => Element::new("success", ns::SASL),
            Err(c) => {
                tracing::info!(peer = %self.peer, remote = %peer_domain, condition = c, "s2s SASL EXTERNAL refused");
                failure(c)
            }
        };
        stream::write(w, &stream::wire(&reply))
            .await
            .map_err(|_| StreamError::new(C::UndefinedCondition))?;
        if outcome.is_ok() {
            self.authenticated(local, peer_domain, "external");
        }
        Ok(outcome.is_ok())
    }

    /// `<db:result/>`: the peer claims a domain; check its key with that domain's server.
    /// Further requests on an authenticated stream add domain pairs to it (piggybacking,
    /// XEP-0220 §2.5), for any domain we serve; refusing one of those is a dialback error and
    /// leaves the pairs already authenticated in place.
    async fn db_result(
        &mut self,
        w: &mut Writer,
        cfg: &Config,
        sid: &str,
        el: &Element,
    ) -> Result<(), StreamError> {
        let (Some(from), Some(to)) = (el.get_attr("from"), el.get_attr("to")) else {
            return Err(StreamError::with_text(
                C::ImproperAddressing,
                "dialback needs from and to",
            ));
        };
        let remote = crate::xmpp::jid::normalize_domain(from)
            .map_err(|_| StreamError::new(C::InvalidFrom))?;
        let answer = |ty: &str| {
            Element::new("result", ns::DIALBACK)
                .attr("from", to)
                .attr("to", from)
                .attr("type", ty)
        };
        if self.core.host(to).is_none() {
            // XEP-0220 §2.4: a dialback error, the stream stays.
            let reply = answer("error")
                .child(StanzaError::new(StanzaErrorCondition::ItemNotFound).to_element());
            return stream::write(w, &stream::wire(&reply))
                .await
                .map_err(|_| StreamError::new(C::UndefinedCondition));
        }
        if !cfg.s2s.permits(&remote) {
            tracing::info!(peer = %self.peer, %remote, "s2s domain not allowed");
            let reply = answer("error")
                .child(StanzaError::new(StanzaErrorCondition::NotAllowed).to_element());
            return stream::write(w, &stream::wire(&reply))
                .await
                .map_err(|_| StreamError::new(C::UndefinedCondition));
        }
        if cfg.s2s.requires_certificate(&remote) && !self.cert_valid_for(&remote) {
            tracing::info!(peer = %self.peer, %remote, "s2s dialback refused: no valid certificate");
            if !self.authed.is_empty() {
                let reply = answer("error")
                    .child(StanzaError::new(StanzaErrorCondition::PolicyViolation).to_element());
                return stream::write(w, &stream::wire(&reply))
                    .await
                    .map_err(|_| StreamError::new(C::UndefinedCondition));
            }
            return Err(StreamError::with_text(
                C::PolicyViolation,
                format!("a valid certificate is required for {remote}"),
            ));
        }
        let key = el.text_content();
        let verdict = outbound::verify(&self.s2s, &self.core, to, &remote, sid, &key).await;
        let reply = match &verdict {
            Ok(true) => answer("valid"),
            Ok(false) => answer("invalid"),
            Err(e) => {
                tracing::info!(peer = %self.peer, %remote, error = %e, "dialback verification failed");
                answer("error").child(
                    StanzaError::new(StanzaErrorCondition::RemoteServerNotFound).to_element(),
                )
            }
        };
        stream::write(w, &stream::wire(&reply))
            .await
            .map_err(|_| StreamError::new(C::UndefinedCondition))?;
        match verdict {
            Ok(true) => {
                self.authenticated(to, &remote, "dialback");
                Ok(())
            }
            Ok(false) if !self.authed.is_empty() => {
                tracing::info!(peer = %self.peer, %remote, "s2s dialback key refused on a multiplexed stream");
                Ok(())
            }
            Ok(false) => {
                tracing::info!(peer = %self.peer, %remote, "s2s dialback key refused");
                Err(StreamError::with_text(
                    C::NotAuthorized,
                    "dialback key not valid",
                ))
            }
            Err(_) => Ok(()),
        }
    }

    /// `<db:verify/>`: a receiving server asks whether we made this key.
    async fn db_verify(
        &mut self,
        w: &mut Writer,
        stream_to: &str,
        el: &Element,
    ) -> Result<(), StreamError> {
        let (Some(from), Some(to), Some(id)) =
            (el.get_attr("from"), el.get_attr("to"), el.get_attr("id"))
        else {
            return Err(StreamError::with_text(
                C::ImproperAddressing,
                "verify needs from, to and id",
            ));
        };
        let mut reply = Element::new("verify", ns::DIALBACK)
            .attr("from", to)
            .attr("to", from)
            .attr("id", id);
        if to != stream_to || self.core.host(to).is_none() {
            reply = reply
                .attr("type", "error")
                .child(StanzaError::new(StanzaErrorCondition::ItemNotFound).to_element());
        } else {
            let ok = self.s2s.secret().verify(from, to, id, &el.text_content());
            reply = reply.attr("type", if ok { "valid" } else { "invalid" });
        }
        stream::write(w, &stream::wire(&reply))
            .await
            .map_err(|_| StreamError::new(C::UndefinedCondition))
    }

    /// A stanza: from an authenticated domain, to a domain we serve, then into the router.
    async fn stanza(&mut self, mut el: Element) -> Result<(), StreamError> {
        if el.ns() != ns::SERVER || !matches!(el.name(), "message" | "presence" | "iq") {
            return Err(StreamError::new(C::UnsupportedStanzaType));
        }
        if self.authed.is_empty() {
            return Err(StreamError::with_text(
                C::NotAuthorized,
                "authenticate first",
            ));
        }
        let from = el.get_attr("from").and_then(|f| Jid::parse(f).ok());
        let to = el.get_attr("to").and_then(|t| Jid::parse(t).ok());
        let (Some(from), Some(to)) = (from, to) else {
            return Err(StreamError::with_text(
                C::ImproperAddressing,
                "stanzas need from and to",
            ));
        };
        if self.core.host(to.domain()).is_none() {
            return Err(StreamError::with_text(
                C::HostUnknown,
                format!("{} is not served here", to.domain()),
            ));
        }
        if !self
            .authed
            .contains(&(to.domain().to_string(), from.domain().to_string()))
        {
            return Err(StreamError::with_text(
                C::InvalidFrom,
                format!("{} is not authenticated on this stream", from.domain()),
            ));
        }
        el.rename_ns(ns::SERVER, ns::CLIENT);
        debug_assert!(Kind::of(&el).is_some());
        self.s2s.metrics.stanzas.with(&["in"]).inc();
        self.state.touch();
        self.core
            .route(Origin::Remote(from.domain().to_string()), el)
            .await;
        Ok(())
    }
}
