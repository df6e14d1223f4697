//! Both directions of a web transport's duplex. In: a client's `<open/>`, `<close/>` (RFC 7395)
//! or BOSH session start/restart becomes the TCP stream header or close the negotiation reads.
//! Out: the server's byte stream is parsed back into [`Frame`]s — a stream opened, a whole
//! element, the stream closed — which each transport wraps its own way.

use tokio::io::AsyncBufRead;

use crate::xmpp::element::escape;
use crate::xmpp::parser::{Limits, StreamEvent, StreamParser, parse_element};
use crate::xmpp::{Element, ns};

/// The stream close the negotiation and session read as the client's `</stream:stream>`.
pub const STREAM_CLOSE: &str = "</stream:stream>";

/// Largest element the server may send to a web client (its own output, so generous).
const MAX_OUT_BYTES: usize = 8 * 1024 * 1024;

/// The TCP stream header for a client stream to `to` (RFC 6120 §4.7), as a web client opens it.
pub fn stream_open(to: Option<&str>, version: Option<&str>, lang: Option<&str>) -> String {
    let mut h = format!(
        "<stream:stream xmlns='{}' xmlns:stream='{}'",
        ns::CLIENT,
        ns::STREAM
    );
    for (k, v) in [("to", to), ("version", version), ("xml:lang", lang)] {
        if let Some(v) = v {
            h.push_str(&format!(" {k}='{}'", escape(v, true)));
        }
    }
    h.push('>');
    h
}

/// What one WebSocket text message from a client means.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientFrame {
    /// `<open/>`: (re)open the stream with this header.
    Open(String),
    /// `<close/>`: close the stream.
    Close,
    /// Anything else is stream content, passed on as it is (the session's parser judges it).
    Xml,
}

/// Reads one WebSocket message: framing elements are recognised, everything else passes.
pub fn client_frame(text: &str) -> ClientFrame {
    let t = text.trim_start();
    if !(t.starts_with("<open") || t.starts_with("<close")) {
        return ClientFrame::Xml;
    }
    match parse_element(t) {
        Ok(el) if el.is("open", ns::FRAMING) => ClientFrame::Open(stream_open(
            el.get_attr("to"),
            el.get_attr("version"),
            el.get_attr("xml:lang"),
        )),
        Ok(el) if el.is("close", ns::FRAMING) => ClientFrame::Close,
        _ => ClientFrame::Xml,
    }
}

/// A piece of the server's output.
#[derive(Debug)]
pub enum Frame {
    /// The server opened a stream (its header's `from` and `id`).
    Open {
        /// The stream's host.
        from: String,
        /// The stream id.
        id: String,
    },
    /// A whole first-level element (stanza, features, SASL, stream error, ...).
    Element(Element),
    /// The server closed the stream.
    Close,
}

/// The server's side of the duplex, read back as [`Frame`]s.
pub struct Frames<R> {
    parser: Option<StreamParser<R>>,
}

fn out_limits() -> Limits {
    Limits {
        max_stanza_bytes: MAX_OUT_BYTES,
        max_depth: 64,
        max_attrs: 256,
        max_ns_bindings: 64,
    }
}

impl<R: AsyncBufRead + Unpin> Frames<R> {
    /// Reads the server's output from `r`.
    pub fn new(r: R) -> Self {
        Frames {
            parser: Some(StreamParser::new(r, out_limits())),
        }
    }

    /// The next frame; `None` once the stream is closed or gone.
    pub async fn next(&mut self) -> Option<Frame> {
        let parser = self.parser.as_mut()?;
        match parser.next().await {
            Ok(StreamEvent::Header(h)) => Some(Frame::Open {
                from: h.from.unwrap_or_default(),
                id: h.id.unwrap_or_default(),
            }),
            Ok(StreamEvent::Stanza(el)) => {
                if el.is("success", ns::SASL) {
                    // SASL success restarts the stream: a new header follows on the same bytes.
                    let r = self.parser.take()?.into_inner();
                    self.parser = Some(StreamParser::new(r, out_limits()));
                }
                Some(Frame::Element(el))
            }
            Ok(StreamEvent::Close) => {
                self.parser = None;
                Some(Frame::Close)
            }
            Err(e) => {
                tracing::debug!(error = %e, "web transport: server stream ended");
                self.parser = None;
                None
            }
        }
    }
}

/// An element as a standalone document: its namespace declared, `stream:` bound if used.
pub fn standalone(el: &Element) -> String {
    let mut out = String::with_capacity(128);
    el.write_xml(&mut out, "");
    if el.ns() == ns::STREAM {
        let at = "<stream:".len() + el.name().len();
        out.insert_str(at, &format!(" xmlns:stream=\"{}\"", ns::STREAM));
    }
    out
}

/// A frame as one RFC 7395 WebSocket message.
pub fn websocket_text(frame: &Frame) -> String {
    match frame {
        Frame::Open { from, id } => format!(
            "<open xmlns=\"{}\" from=\"{}\" id=\"{}\" version=\"1.0\" xml:lang=\"en\"/>",
            ns::FRAMING,
            escape(from, true),
            escape(id, true)
        ),
        Frame::Element(el) => standalone(el),
        Frame::Close => format!("<close xmlns=\"{}\"/>", ns::FRAMING),
    }
}

/// The client's `<open/>`/`<close/>` read as TCP framing, and the server's stream cut into frames.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_and_close_become_the_tcp_framing_and_stanzas_pass() {
        let open = client_frame(
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>",
        );
        assert_eq!(
            open,
            ClientFrame::Open(format!(
                "<stream:stream xmlns='jabber:client' xmlns:stream='{}' to='localhost' version='1.0'>",
                ns::STREAM
            ))
        );
        assert_eq!(
            client_frame("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"),
            ClientFrame::Close
        );
        assert_eq!(
            client_frame("<message xmlns='jabber:client'/>"),
            ClientFrame::Xml
        );
        // An `<open>` in another namespace is content, not framing.
        assert_eq!(
            client_frame("<open xmlns='jabber:client'/>"),
            ClientFrame::Xml
        );
        assert_eq!(
            stream_open(Some("a'b"), None, None),
            format!(
                "<stream:stream xmlns='jabber:client' xmlns:stream='{}' to='a&apos;b'>",
                ns::STREAM
            )
        );
    }

    #[tokio::test]
    async fn server_output_is_cut_into_standalone_frames_across_a_sasl_restart() {
        let out = format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='{s}' id='i1' from='localhost' version='1.0'>\
             <stream:features><mechanisms xmlns='{sasl}'><mechanism>PLAIN</mechanism></mechanisms></stream:features>\
             <success xmlns='{sasl}'/>\
             <?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='{s}' id='i2' from='localhost' version='1.0'>\
             <message to='a@localhost'><body>hi</body></message></stream:stream>",
            s = ns::STREAM,
            sasl = ns::SASL
        );
        let mut frames = Frames::new(out.as_bytes());
        let mut texts = Vec::new();
        while let Some(f) = frames.next().await {
            texts.push(websocket_text(&f));
        }
        assert_eq!(
            texts,
            vec![
                format!(
                    "<open xmlns=\"{}\" from=\"localhost\" id=\"i1\" version=\"1.0\" xml:lang=\"en\"/>",
                    ns::FRAMING
                ),
                format!(
                    "<stream:features xmlns:stream=\"{}\"><mechanisms xmlns=\"{}\"><mechanism>PLAIN</mechanism></mechanisms></stream:features>",
                    ns::STREAM,
                    ns::SASL
                ),
                format!("<success xmlns=\"{}\"/>", ns::SASL),
                format!(
                    "<open xmlns=\"{}\" from=\"localhost\" id=\"i2\" version=\"1.0\" xml:lang=\"en\"/>",
                    ns::FRAMING
                ),
                "<message xmlns=\"jabber:client\" to=\"a@localhost\"><body>hi</body></message>"
                    .to_string(),
                format!("<close xmlns=\"{}\"/>", ns::FRAMING),
            ]
        );
    }
}
