//! XEP-0198 stream management state of a session as the `smacks` module and the transports use
//! it: the narrow interface behind the `<enable/>`, `<r/>` and `<a/>` tag hooks, and taking a
//! hibernated session over for a `<resume/>`, woken when the old connection lets go.
//!
//! In a cluster a session resumes only on the node that holds it. A `<resume/>` arriving at
//! another node (the old node died, or a load balancer sent the client elsewhere) is refused at
//! once with `item-not-found`, and the nodes serving the account are asked to end their session
//! with that id ([`Core::resume_missed`]): ending it routes its unacknowledged and queued
//! stanzas again, to the client's fresh session or to offline storage, so nothing is lost.

use std::time::Duration;

use tokio::time::Instant;

use super::Core;
use super::sessions::{AckTooHigh, Hibernated, SessionHandle, Sessions};
use crate::xmpp::Jid;
use crate::xmpp::error::{StreamError, StreamErrorCondition};

/// Why a resumption was refused (the XEP-0198 `<failed/>` condition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// No resumable session of this account has that id (or it did not let go in time).
    #[error("item-not-found")]
    ItemNotFound,
    /// The client acknowledged more stanzas than were sent.
    #[error("unexpected-request")]
    UnexpectedRequest,
}

impl ResumeError {
    /// The RFC 6120 stanza error condition to put in `<failed/>`.
    pub fn condition(self) -> &'static str {
        match self {
            ResumeError::ItemNotFound => "item-not-found",
            ResumeError::UnexpectedRequest => "unexpected-request",
        }
    }
}

impl SessionHandle {
    /// Starts counting inbound stanzas (the client sent `<enable/>`), resumable under `resume`'s
    /// id for its window; `false` if stream management was already on.
    pub fn sm_enable(&self, resume: Option<(String, Duration)>) -> bool {
        let mut sm = self.sm();
        if sm.enabled {
            return false;
        }
        sm.enabled = true;
        sm.h_in = 0;
        if let Some((id, max)) = resume {
            sm.id = Some(id);
            sm.max = max;
        }
        true
    }

    /// The number of stanzas handled from the client (the `h` of `<a/>`), when counting.
    pub fn sm_handled(&self) -> Option<u32> {
        let sm = self.sm();
        sm.enabled.then_some(sm.h_in)
    }

    /// Takes the client's acknowledgement `h`: acknowledged stanzas are dropped from the
    /// retransmission queue and no ack request is outstanding any more.
    pub fn sm_acknowledge(&self, h: u32) -> Result<(), AckTooHigh> {
        let mut sm = self.sm();
        sm.ack_pending = false;
        sm.ack(h)
    }
}

impl Sessions {
    /// Takes over the resumable session `previd` of account `bare`, acknowledging `h`: a
    /// connection still attached is asked to let go, and the wait (at most `wait`) is woken by
    /// the session hibernating, never by polling.
    pub async fn take_over(
        &self,
        bare: &Jid,
        previd: &str,
        h: u32,
        wait: Duration,
    ) -> Result<Hibernated, ResumeError> {
        let handle = self.resumable(previd).ok_or(ResumeError::ItemNotFound)?;
        if handle.jid.bare() != *bare {
            return Err(ResumeError::ItemNotFound);
        }
        let deadline = Instant::now() + wait;
        let mut asked = false;
        loop {
            let parked = self.parked.notified();
            tokio::pin!(parked);
            // Registered before looking, so a hibernation in between is not missed.
            parked.as_mut().enable();
            if let Some(hib) = self.take_hibernated(previd) {
                if hib.handle.sm().ack(h).is_err() {
                    // The client claims more than was sent: give the session back to its timer.
                    let Hibernated { handle, rx } = hib;
                    self.hibernate(previd, handle, rx);
                    return Err(ResumeError::UnexpectedRequest);
                }
                return Ok(hib);
            }
            if !asked {
                // The old connection may not have noticed it is dead: make it let go.
                handle.request_detach();
                asked = true;
            }
            tokio::select! {
                _ = &mut parked => {}
                _ = handle.closed() => return Err(ResumeError::ItemNotFound),
                _ = tokio::time::sleep_until(deadline) => return Err(ResumeError::ItemNotFound),
            }
        }
    }
}

impl Core {
    /// A `<resume/>` of `previd` by `bare` found no session here: asks the other nodes serving
    /// the account to end their session with that id (the resumption itself stays refused).
    pub fn resume_missed(&self, bare: &Jid, previd: &str) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        for node in self.nodes_serving(bare, |_| true) {
            cluster.end_resumable(&node, bare, previd);
        }
    }

    /// Ends this node's resumable session `previd` of `bare`, hibernating or still attached,
    /// because its client resumed on another node; its unacknowledged stanzas are routed again.
    /// Whether there was one.
    pub fn end_resumable(&self, bare: &Jid, previd: &str) -> bool {
        match self.sessions.resumable(previd) {
            Some(handle) if handle.jid.bare() == *bare => {
                tracing::info!(jid = %handle.jid, "session resumed on another node: ending it here");
                handle.close(StreamError::with_text(
                    StreamErrorCondition::Conflict,
                    "the client reconnected to another node",
                ));
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ResourceConflict;

    fn bind(sessions: &Sessions, user: &str) -> crate::core::sessions::BoundSession {
        let bare = Jid::parse(user).expect("jid");
        sessions
            .bind(
                &bare,
                "r",
                ResourceConflict::KickOld,
                8,
                crate::core::sessions::Connection::new("test", true),
            )
            .expect("bind")
    }

    #[tokio::test]
    async fn take_over_wakes_when_the_attached_connection_lets_go() {
        let sessions = std::sync::Arc::new(Sessions::new());
        let bound = bind(&sessions, "a@localhost");
        assert!(
            bound
                .handle
                .sm_enable(Some(("id1".into(), Duration::from_secs(60))))
        );
        sessions.register_resumable("id1", bound.handle.clone());
        // Plays the old connection: when asked to detach, it hibernates the session.
        let detach = bound.handle.detach_token();
        let s = sessions.clone();
        let (handle, rx) = (bound.handle.clone(), bound.rx);
        let old = tokio::spawn(async move {
            detach.cancelled().await;
            s.hibernate("id1", handle, rx);
        });
        let bare = Jid::parse("a@localhost").expect("jid");
        let hib = sessions
            .take_over(&bare, "id1", 0, Duration::from_secs(3600))
            .await
            .expect("resumed");
        assert_eq!(hib.handle.id, bound.handle.id);
        assert!(!hib.handle.is_hibernating());
        old.await.expect("old connection");
    }

    #[tokio::test]
    async fn take_over_refuses_a_stranger_an_unknown_id_and_a_too_high_ack() {
        let sessions = Sessions::new();
        let bound = bind(&sessions, "a@localhost");
        bound
            .handle
            .sm_enable(Some(("id1".into(), Duration::from_secs(60))));
        sessions.register_resumable("id1", bound.handle.clone());
        sessions.hibernate("id1", bound.handle.clone(), bound.rx);
        let wait = Duration::from_secs(3600);
        let other = Jid::parse("b@localhost").expect("jid");
        let bare = Jid::parse("a@localhost").expect("jid");
        assert_eq!(
            sessions.take_over(&other, "id1", 0, wait).await.err(),
            Some(ResumeError::ItemNotFound)
        );
        assert_eq!(
            sessions.take_over(&bare, "nope", 0, wait).await.err(),
            Some(ResumeError::ItemNotFound)
        );
        assert_eq!(
            sessions.take_over(&bare, "id1", 5, wait).await.err(),
            Some(ResumeError::UnexpectedRequest)
        );
        assert!(bound.handle.is_hibernating(), "given back to its timer");
        assert!(sessions.take_over(&bare, "id1", 0, wait).await.is_ok());
    }

    #[test]
    fn enable_once_then_count_and_acknowledge() {
        let sessions = Sessions::new();
        let bound = bind(&sessions, "a@localhost");
        let h = &bound.handle;
        assert_eq!(h.sm_handled(), None);
        assert!(h.sm_enable(None));
        assert!(!h.sm_enable(None), "a second enable is refused");
        assert_eq!(h.sm_handled(), Some(0));
        h.sm().ack_pending = true;
        assert!(h.sm_acknowledge(0).is_ok());
        assert!(!h.sm().ack_pending);
        assert!(h.sm_acknowledge(1).is_err(), "nothing was sent");
    }

    #[tokio::test]
    async fn a_resumption_elsewhere_ends_only_the_named_session_of_its_account() {
        let mut config = crate::config::Config::default();
        config.hosts[0].name = "localhost".into();
        let core = Core::new(
            config,
            crate::storage::Store::memory(),
            crate::modules::BUILTIN,
        )
        .expect("core");
        let bound = bind(&core.sessions, "a@localhost");
        bound
            .handle
            .sm_enable(Some(("id1".into(), Duration::from_secs(60))));
        core.sessions
            .register_resumable("id1", bound.handle.clone());
        let a = Jid::parse("a@localhost").expect("jid");
        let b = Jid::parse("b@localhost").expect("jid");
        assert!(!core.end_resumable(&b, "id1"), "not b's session");
        assert!(!core.end_resumable(&a, "id2"), "no such id");
        assert!(bound.handle.close_reason().is_none());
        assert!(core.end_resumable(&a, "id1"));
        let reason = bound.handle.close_reason().expect("closed");
        assert_eq!(reason.condition, StreamErrorCondition::Conflict);
        // Without a cluster there is nobody else to ask.
        core.resume_missed(&a, "id1");
    }
}
