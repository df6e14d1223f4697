//! XEP-0398 avatar conversion between vcard-temp and XEP-0084 PEP avatars, and XEP-0153
//! vCard-based avatar hashes in presence.
//!
//! - A vCard set (XEP-0054) with a `PHOTO/BINVAL` publishes the image to `urn:xmpp:avatar:data`
//!   and its `<info/>` to `urn:xmpp:avatar:metadata` (item id = SHA-1 of the image); a vCard
//!   without a photo disables the PEP avatar (empty metadata) if one was set. This hook runs
//!   before the `vcard` module's ([`priority::INTERCEPT`](crate::core::priority::INTERCEPT)), which then stores the vCard and answers.
//! - A client's publish to `urn:xmpp:avatar:metadata` (the `pep` module's
//!   `pep-publish-item` event) copies the referenced data item into the vCard `PHOTO`, or removes
//!   it when the metadata is empty.
//! - A client's broadcast available presence gets `<x xmlns='vcard-temp:x:update'><photo>SHA-1
//!   </photo></x>` from the stored vCard (an empty `<photo/>` when it has none), replacing the
//!   client's own; the session's recorded presence is updated too, so probes answer with it.
//!
//! Needs the `vcard` module (and `pep` for the conversion); without them the hooks do nothing.
//! Advertises `urn:xmpp:pep-vcard-conversion:0` on accounts.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use sha1::{Digest, Sha1};

use super::pep::{self, Publish};
use super::vcard;
use crate::core::events::{Flow, StanzaEvent, handler};
use crate::core::modules::{LoadError, Module, ModuleContext};
use crate::core::priority;
use crate::xmpp::element::Node;
use crate::xmpp::{Element, ns};

/// The `vcard_legacy` module.
pub struct VcardLegacy;

/// A vCard photo: MIME type and image bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Photo {
    /// The MIME type (`image/png` when the vCard gives none).
    pub mime: String,
    /// The image.
    pub data: Vec<u8>,
}

/// The inline photo of a vCard (`PHOTO` with `BINVAL`), if any and decodable.
pub fn photo_of(vcard: &Element) -> Option<Photo> {
    let photo = vcard.get_child("PHOTO", ns::VCARD)?;
    let binval = photo.get_child("BINVAL", ns::VCARD)?.text_content();
    let clean: String = binval.chars().filter(|c| !c.is_whitespace()).collect();
    let data = STANDARD.decode(clean).ok()?;
    if data.is_empty() {
        return None;
    }
    let mime = photo
        .get_child("TYPE", ns::VCARD)
        .map(|t| t.text_content().trim().to_string())
        .filter(|t| !t.is_empty() && t.len() <= 128)
        .unwrap_or_else(|| "image/png".into());
    Some(Photo { mime, data })
}

/// Lower-case hex SHA-1 (the XEP-0084 item id and the XEP-0153 hash).
pub fn sha1_hex(data: &[u8]) -> String {
    Sha1::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `vcard` with its `PHOTO` replaced by `photo` (or removed with `None`).
pub fn with_photo(vcard: &Element, photo: Option<(&str, &str)>) -> Element {
    let mut out = vcard.clone();
    out.remove_children("PHOTO", ns::VCARD);
    if let Some((mime, b64)) = photo {
        out.push(
            Element::new("PHOTO", ns::VCARD)
                .child(Element::new("TYPE", ns::VCARD).text(mime))
                .child(Element::new("BINVAL", ns::VCARD).text(b64)),
        );
    }
    out
}

fn vcard_loaded(ev: &StanzaEvent) -> bool {
    ev.core
        .host(ev.to.domain())
        .is_some_and(|h| h.is_loaded("vcard"))
}

/// A vCard set by its owner: convert its photo to PEP, then let the `vcard` module store it.
async fn vcard_set(ev: StanzaEvent, max_size: usize) -> Flow {
    if ev.from.bare() != ev.to || !vcard_loaded(&ev) {
        return Flow::Continue(ev);
    }
    let (Some(svc), Some(card)) = (
        pep::service(&ev.core, ev.to.domain()),
        ev.stanza.get_child("vCard", ns::VCARD),
    ) else {
        return Flow::Continue(ev);
    };
    if card.to_xml("").len() > max_size {
        return Flow::Continue(ev);
    }
    let owner = ev.to.clone();
    let publish = |node: &str, id: String, payload: Element| Publish {
        node: node.to_string(),
        id: Some(id),
        payload,
        options: None,
        preconditions: false,
        fire_event: false,
    };
    match photo_of(card) {
        Some(photo) => {
            let id = sha1_hex(&photo.data);
            let current = svc
                .node(&ev.core, &owner, ns::AVATAR_METADATA)
                .await
                .ok()
                .flatten()
                .and_then(|r| r.items.last().cloned());
            if current.as_deref() != Some(id.as_str()) {
                let data = Element::new("data", ns::AVATAR_DATA).text(STANDARD.encode(&photo.data));
                let info = Element::new("info", ns::AVATAR_METADATA)
                    .attr("bytes", photo.data.len().to_string())
                    .attr("id", id.clone())
                    .attr("type", photo.mime.clone());
                let meta = Element::new("metadata", ns::AVATAR_METADATA).child(info);
                let r = match svc
                    .publish(&ev.core, &owner, publish(ns::AVATAR_DATA, id.clone(), data))
                    .await
                {
                    Ok(_) => {
                        svc.publish(&ev.core, &owner, publish(ns::AVATAR_METADATA, id, meta))
                            .await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = r {
                    tracing::warn!(jid = %owner, error = %e, "cannot publish the vCard avatar");
                }
            }
        }
        // A photo given by URL (EXTVAL) or undecodable: leave the PEP avatar alone.
        None if card.get_child("PHOTO", ns::VCARD).is_some() => {}
        None => {
            let had_avatar = match svc.items(&ev.core, &owner, ns::AVATAR_METADATA).await {
                Ok((_, items)) => items
                    .last()
                    .and_then(|(_, i)| i.payload())
                    .is_some_and(|m| m.get_child("info", ns::AVATAR_METADATA).is_some()),
                Err(_) => false,
            };
            if had_avatar {
                let empty = Element::new("metadata", ns::AVATAR_METADATA);
                let r = svc
                    .publish(
                        &ev.core,
                        &owner,
                        publish(ns::AVATAR_METADATA, "current".into(), empty),
                    )
                    .await;
                if let Err(e) = r {
                    tracing::warn!(jid = %owner, error = %e, "cannot disable the PEP avatar");
                }
            }
        }
    }
    Flow::Continue(ev)
}

/// A client published avatar metadata: mirror it into the vCard.
async fn avatar_published(ev: StanzaEvent, max_size: usize) -> Flow {
    if ev.stanza.get_attr("node") != Some(ns::AVATAR_METADATA) || !vcard_loaded(&ev) {
        return Flow::Continue(ev);
    }
    let Some(svc) = pep::service(&ev.core, ev.to.domain()) else {
        return Flow::Continue(ev);
    };
    let Some(meta) = ev
        .stanza
        .first_child()
        .and_then(|i| i.get_child("metadata", ns::AVATAR_METADATA))
    else {
        return Flow::Continue(ev);
    };
    let owner = ev.to.clone();
    let card = match vcard::get_vcard(&ev.core, &owner).await {
        Ok(v) => v.unwrap_or_else(|| Element::new("vCard", ns::VCARD)),
        Err(e) => {
            tracing::warn!(jid = %owner, error = %e, "cannot read the vCard");
            return Flow::Continue(ev);
        }
    };
    let info = meta
        .children()
        .find(|c| c.is("info", ns::AVATAR_METADATA) && c.get_attr("url").is_none());
    let updated = match info {
        Some(info) => {
            let (Some(id), mime) = (
                info.get_attr("id"),
                info.get_attr("type").unwrap_or("image/png"),
            ) else {
                return Flow::Continue(ev);
            };
            let data = match svc.item(&ev.core, &owner, ns::AVATAR_DATA, id).await {
                Ok(Some(d)) if d.is("data", ns::AVATAR_DATA) => d.text_content(),
                _ => return Flow::Continue(ev),
            };
            let clean: String = data.chars().filter(|c| !c.is_whitespace()).collect();
            Some(with_photo(&card, Some((mime, &clean))))
        }
        None if card.get_child("PHOTO", ns::VCARD).is_some() => Some(with_photo(&card, None)),
        None => None,
    };
    if let Some(updated) = updated {
        if updated.to_xml("").len() > max_size {
            tracing::info!(jid = %owner, "the PEP avatar is too large for the vCard; not copied");
            return Flow::Continue(ev);
        }
        let empty = updated.nodes().iter().all(|n| match n {
            Node::Text(t) => t.trim().is_empty(),
            Node::Element(_) => false,
        });
        if let Err(e) = vcard::set_vcard(&ev.core, &owner, (!empty).then_some(updated)).await {
            tracing::warn!(jid = %owner, error = %e, "cannot store the vCard");
        }
    }
    Flow::Continue(ev)
}

/// XEP-0153: stamp the photo hash on a client's broadcast available presence.
async fn presence(mut ev: StanzaEvent) -> Flow {
    let Some(session) = ev.origin.session().cloned() else {
        return Flow::Continue(ev);
    };
    if ev.stanza.get_attr("to").is_some()
        || ev.stanza.get_attr("type").is_some()
        || !vcard_loaded(&ev)
    {
        return Flow::Continue(ev);
    }
    let hash = match vcard::get_vcard(&ev.core, &ev.from.bare()).await {
        Ok(Some(card)) if card.get_child("PHOTO", ns::VCARD).is_some() => match photo_of(&card) {
            Some(p) => Some(sha1_hex(&p.data)),
            // A photo we cannot hash (EXTVAL): say nothing rather than "no avatar".
            None => return Flow::Continue(ev),
        },
        Ok(_) => None,
        Err(_) => return Flow::Continue(ev),
    };
    let mut photo = Element::new("photo", ns::VCARD_UPDATE);
    if let Some(h) = hash {
        photo.push_text(h);
    }
    ev.stanza.remove_children("x", ns::VCARD_UPDATE);
    ev.stanza
        .push(Element::new("x", ns::VCARD_UPDATE).child(photo));
    session.set_presence(true, session.priority(), Some(ev.stanza.clone()));
    Flow::Continue(ev)
}

impl Module for VcardLegacy {
    fn name(&self) -> &'static str {
        "vcard_legacy"
    }

    fn load(&self, ctx: &mut ModuleContext) -> Result<(), LoadError> {
        // The vcard module's size limit, so a vCard it would refuse is not converted.
        let max_size =
            ctx.option_integer("vcard_max_size", vcard::DEFAULT_MAX_SIZE, 256, 16 << 20) as usize;
        ctx.add_item(
            super::disco::ACCOUNT_FEATURE,
            json!(ns::PEP_VCARD_CONVERSION),
        );
        ctx.hook(
            &format!("iq-set/bare/{}:vCard", ns::VCARD),
            priority::INTERCEPT,
            handler(move |ev| vcard_set(ev, max_size)),
        );
        ctx.hook(
            pep::PUBLISH_EVENT,
            priority::HANDLER,
            handler(move |ev| avatar_published(ev, max_size)),
        );
        ctx.hook("pre-presence/bare", priority::INTERCEPT, handler(presence));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::parser::parse_element;

    #[test]
    fn photo_hash_and_replacement() {
        let card = parse_element(
            "<vCard xmlns='vcard-temp'><FN>A</FN><PHOTO><TYPE>image/gif</TYPE>\
               <BINVAL>aGVs\n bG8=</BINVAL></PHOTO></vCard>",
        )
        .unwrap();
        let p = photo_of(&card).unwrap();
        assert_eq!(p.data, b"hello");
        assert_eq!(p.mime, "image/gif");
        assert_eq!(
            sha1_hex(&p.data),
            "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d"
        );
        let none = with_photo(&card, None);
        assert!(photo_of(&none).is_none());
        assert!(none.get_child("FN", ns::VCARD).is_some());
        let other = with_photo(&card, Some(("image/png", "AAEC")));
        assert_eq!(photo_of(&other).unwrap().data, vec![0, 1, 2]);
        let bad =
            parse_element("<vCard xmlns='vcard-temp'><PHOTO><BINVAL>!!!</BINVAL></PHOTO></vCard>")
                .unwrap();
        assert!(photo_of(&bad).is_none());
    }
}
