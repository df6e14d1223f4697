//! Incremental XMPP stream parser on quick-xml: stream header, stanzas as [`Element`]s, stream close.
//!
//! Enforces RFC 6120 §11.1 restricted XML (no DTD, comments, processing instructions or entity
//! references beyond the predefined five and character references) and bounds every stanza in
//! bytes, nesting depth, attribute count and namespace bindings.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use quick_xml::NsReader;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};

use super::element::{Element, Node};
use super::error::{StreamError, StreamErrorCondition as C};
use super::ns;

/// Limits applied by the parser.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest stanza (or stream header) in bytes.
    pub max_stanza_bytes: usize,
    /// Deepest element nesting inside a stanza.
    pub max_depth: usize,
    /// Most attributes on one element.
    pub max_attrs: usize,
    /// Most namespace bindings in scope.
    pub max_ns_bindings: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_stanza_bytes: 256 * 1024,
            max_depth: 32,
            max_attrs: 64,
            max_ns_bindings: 16,
        }
    }
}

/// The opening `<stream:stream>` header as received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamHeader {
    /// The `to` attribute.
    pub to: Option<String>,
    /// The `from` attribute.
    pub from: Option<String>,
    /// The `version` attribute.
    pub version: Option<String>,
    /// The `id` attribute (set by the receiving side; Server Dialback keys are bound to it).
    pub id: Option<String>,
    /// The `xml:lang` attribute.
    pub lang: Option<String>,
    /// The default namespace declared on the header (`jabber:client` for c2s).
    pub default_ns: Option<String>,
}

/// What the parser yields.
#[derive(Debug)]
pub enum StreamEvent {
    /// A stream header opened a (new) stream.
    Header(StreamHeader),
    /// A complete first-level element.
    Stanza(Element),
    /// The peer closed the stream with `</stream:stream>`.
    Close,
}

/// Why parsing stopped.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The peer violated the protocol; answer with this stream error.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The connection failed.
    #[error("i/o: {0}")]
    Io(io::Error),
    /// The connection closed without a stream close.
    #[error("connection closed")]
    Eof,
}

impl From<C> for ParseError {
    fn from(c: C) -> Self {
        ParseError::Stream(StreamError::new(c))
    }
}

#[derive(Debug)]
struct TooLarge;
impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stanza too large")
    }
}
impl std::error::Error for TooLarge {}

/// An `AsyncBufRead` adaptor that fails once more than `budget` bytes were consumed since the last reset.
pub struct Budgeted<R> {
    inner: R,
    used: usize,
    budget: usize,
}

impl<R> Budgeted<R> {
    /// Wraps `inner` with a byte budget.
    pub fn new(inner: R, budget: usize) -> Self {
        Budgeted {
            inner,
            used: 0,
            budget,
        }
    }
    /// The wrapped reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }
    /// The wrapped reader, mutably.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
    /// Unwraps the reader.
    pub fn into_inner(self) -> R {
        self.inner
    }
    fn reset(&mut self) {
        self.used = 0;
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Budgeted<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.used += buf.filled().len() - before;
        r
    }
}

impl<R: AsyncBufRead + Unpin> AsyncBufRead for Budgeted<R> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.used > this.budget {
            return Poll::Ready(Err(io::Error::other(TooLarge)));
        }
        Pin::new(&mut this.inner).poll_fill_buf(cx)
    }
    fn consume(mut self: Pin<&mut Self>, amt: usize) {
        self.used += amt;
        Pin::new(&mut self.inner).consume(amt);
    }
}

/// An incremental stream parser over a buffered reader.
pub struct StreamParser<R> {
    reader: NsReader<Budgeted<R>>,
    buf: Vec<u8>,
    stack: Vec<Element>,
    in_stream: bool,
    limits: Limits,
}

impl<R: AsyncBufRead + Unpin> StreamParser<R> {
    /// A parser expecting a stream header first.
    pub fn new(inner: R, limits: Limits) -> Self {
        let mut reader = NsReader::from_reader(Budgeted::new(inner, limits.max_stanza_bytes));
        reader.config_mut().trim_text(false);
        reader.config_mut().check_end_names = true;
        reader
            .resolver_mut()
            .set_max_namespace_bindings(limits.max_ns_bindings);
        StreamParser {
            reader,
            buf: Vec::with_capacity(256),
            stack: Vec::new(),
            in_stream: false,
            limits,
        }
    }

    /// Gives back the underlying reader (for a stream restart or TLS upgrade).
    pub fn into_inner(self) -> R {
        self.reader.into_inner().into_inner()
    }

    /// The underlying reader.
    pub fn get_ref(&self) -> &R {
        self.reader.get_ref().get_ref()
    }

    /// The underlying reader, mutably.
    pub fn get_mut(&mut self) -> &mut R {
        self.reader.get_mut().get_mut()
    }

    /// Changes the stanza size limit (e.g. once authenticated).
    pub fn set_max_stanza_bytes(&mut self, n: usize) {
        self.limits.max_stanza_bytes = n;
        self.reader.get_mut().budget = n;
    }

    /// Heap bytes of the parser's own read buffer and element stack.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.buf.capacity() + self.stack.capacity() * std::mem::size_of::<Element>()
    }

    /// A whole stanza was read: the read buffer and the element stack are freed, so a session
    /// waiting for its next stanza holds neither (issue #19).
    fn stanza_done(&mut self, stanza: Element) -> StreamEvent {
        self.buf = Vec::new();
        self.stack = Vec::new();
        StreamEvent::Stanza(stanza)
    }

    /// Reads until the next header, complete stanza or stream close.
    pub async fn next(&mut self) -> Result<StreamEvent, ParseError> {
        if self.stack.is_empty() {
            self.reader.get_mut().reset();
            // An idle session should not keep the buffer of its largest stanza.
            if self.buf.capacity() > 4096 || self.buf.capacity() == 0 {
                self.buf = Vec::with_capacity(256);
            }
        }
        loop {
            self.buf.clear();
            let (res, event) = match self
                .reader
                .read_resolved_event_into_async(&mut self.buf)
                .await
            {
                Ok(x) => x,
                Err(e) => return Err(map_xml_error(e)),
            };
            let ns = match res {
                ResolveResult::Bound(n) => Some(namespace_value(n.0)?),
                ResolveResult::Unbound => None,
                ResolveResult::Unknown(_) => return Err(C::BadNamespacePrefix.into()),
            };
            match event {
                Event::Decl(d) => {
                    if self.in_stream {
                        return Err(C::NotWellFormed.into());
                    }
                    if let Some(Ok(enc)) = d.encoding()
                        && !enc.eq_ignore_ascii_case("utf-8")
                    {
                        return Err(C::UnsupportedEncoding.into());
                    }
                }
                Event::DocType(_) | Event::PI(_) | Event::Comment(_) => {
                    return Err(StreamError::with_text(
                        C::RestrictedXml,
                        "comments, processing instructions and DTDs are not allowed",
                    )
                    .into());
                }
                Event::Start(start) if !self.in_stream => {
                    let header = parse_header(&start, ns.as_deref())?;
                    self.in_stream = true;
                    return Ok(StreamEvent::Header(header));
                }
                Event::Empty(_) if !self.in_stream => return Err(C::BadFormat.into()),
                Event::Start(start) => {
                    if self.stack.len() >= self.limits.max_depth {
                        return Err(StreamError::with_text(
                            C::PolicyViolation,
                            "elements nested too deeply",
                        )
                        .into());
                    }
                    let el = make_element(&start, ns, self.limits.max_attrs)?;
                    self.stack.push(el);
                }
                Event::Empty(start) => {
                    let el = make_element(&start, ns, self.limits.max_attrs)?;
                    if let Some(done) = attach(&mut self.stack, el) {
                        return Ok(self.stanza_done(done));
                    }
                }
                Event::End(_) => match self.stack.pop() {
                    Some(el) => {
                        if let Some(done) = attach(&mut self.stack, el) {
                            return Ok(self.stanza_done(done));
                        }
                    }
                    None => {
                        self.in_stream = false;
                        return Ok(StreamEvent::Close);
                    }
                },
                Event::Text(t) => {
                    let text = t.xml10_content();
                    push_text(&mut self.stack, &text)?;
                }
                Event::CData(t) => {
                    let text = t.xml10_content();
                    push_text(&mut self.stack, &text)?;
                }
                Event::GeneralRef(r) => {
                    let c = if r.is_char_ref() {
                        match r.resolve_char_ref() {
                            Ok(Some(c)) => c,
                            _ => return Err(C::NotWellFormed.into()),
                        }
                    } else {
                        match &*r.into_inner() {
                            "lt" => '<',
                            "gt" => '>',
                            "amp" => '&',
                            "quot" => '"',
                            "apos" => '\'',
                            _ => {
                                return Err(StreamError::with_text(
                                    C::RestrictedXml,
                                    "entity references are not allowed",
                                )
                                .into());
                            }
                        }
                    };
                    let mut tmp = [0u8; 4];
                    push_text(&mut self.stack, c.encode_utf8(&mut tmp))?;
                }
                Event::Eof => return Err(ParseError::Eof),
            }
        }
    }
}

fn push_text(stack: &mut [Element], text: &str) -> Result<(), ParseError> {
    match stack.last_mut() {
        Some(el) => {
            if text.is_empty() {
                return Ok(());
            }
            // Merge with a preceding text node so entity-split text stays one node.
            if let Some(Node::Text(prev)) = el.last_node_mut() {
                prev.push_str(text);
            } else {
                el.push_text(text);
            }
            Ok(())
        }
        None if text.chars().all(|c| c.is_ascii_whitespace()) => Ok(()),
        None => Err(StreamError::with_text(C::NotWellFormed, "text outside stanzas").into()),
    }
}

/// A namespace name as declared (quick-xml hands it over still escaped): `xmlns='a&amp;b'`
/// names `a&b`, the same namespace a serialiser writes back as `a&amp;b`.
fn namespace_value(raw: &str) -> Result<String, ParseError> {
    if !raw.contains('&') {
        return Ok(raw.to_owned());
    }
    quick_xml::escape::unescape(raw)
        .map(|ns| ns.into_owned())
        .map_err(|_| {
            StreamError::with_text(C::NotWellFormed, "bad reference in a namespace name").into()
        })
}

/// Whether `name` is a qualified name of Namespaces in XML (`prefix:local` or `local`, each
/// part an XML 1.0 name without colons). quick-xml takes whatever stands before whitespace, `/`
/// or `>` as the name; a name with quotes, controls or two colons would not read back the same.
fn is_qname(name: &str) -> bool {
    let mut parts = name.split(':');
    let first = parts.next().is_some_and(is_ncname);
    match (parts.next(), parts.next()) {
        (None, _) => first,
        (Some(local), None) => first && is_ncname(local),
        (Some(_), Some(_)) => false,
    }
}

/// An XML 1.0 `Name` without colons (a part of a qualified name).
fn is_ncname(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(is_name_start) && chars.all(|c| is_name_start(c) || is_name_rest(c))
}

/// XML 1.0 (fifth edition) `NameStartChar`, without `:`.
fn is_name_start(c: char) -> bool {
    matches!(c,
        'A'..='Z' | '_' | 'a'..='z'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

/// The other characters of XML 1.0's `NameChar`.
fn is_name_rest(c: char) -> bool {
    matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

fn attach(stack: &mut [Element], el: Element) -> Option<Element> {
    match stack.last_mut() {
        Some(parent) => {
            parent.push(el);
            None
        }
        None => Some(el),
    }
}

fn make_element(
    start: &BytesStart<'_>,
    ns: Option<String>,
    max_attrs: usize,
) -> Result<Element, ParseError> {
    if !is_qname(start.name().as_ref()) {
        return Err(StreamError::with_text(C::NotWellFormed, "not an XML element name").into());
    }
    let local = start.local_name();
    let mut el = Element::new(local.as_ref(), ns.unwrap_or_default());
    let mut count = 0;
    for attr in start.attributes() {
        let attr = attr.map_err(|_| StreamError::new(C::NotWellFormed))?;
        let key = attr.key.as_ref();
        if !is_qname(key) {
            return Err(
                StreamError::with_text(C::NotWellFormed, "not an XML attribute name").into(),
            );
        }
        if key == "xmlns" || key.starts_with("xmlns:") {
            continue;
        }
        count += 1;
        if count > max_attrs {
            return Err(StreamError::with_text(C::PolicyViolation, "too many attributes").into());
        }
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|_| StreamError::new(C::NotWellFormed))?;
        el.set_attr(key, Some(value.into_owned()));
    }
    Ok(el)
}

fn parse_header(start: &BytesStart<'_>, ns: Option<&str>) -> Result<StreamHeader, ParseError> {
    if start.local_name().as_ref() != "stream" {
        return Err(StreamError::with_text(C::BadFormat, "expected a stream header").into());
    }
    if ns != Some(ns::STREAM) {
        return Err(C::InvalidNamespace.into());
    }
    let mut h = StreamHeader::default();
    for attr in start.attributes() {
        let attr = attr.map_err(|_| StreamError::new(C::NotWellFormed))?;
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|_| StreamError::new(C::NotWellFormed))?
            .into_owned();
        match attr.key.as_ref() {
            "to" => h.to = Some(value),
            "from" => h.from = Some(value),
            "version" => h.version = Some(value),
            "id" => h.id = Some(value),
            "xml:lang" => h.lang = Some(value),
            "xmlns" => h.default_ns = Some(value),
            _ => {}
        }
    }
    Ok(h)
}

fn map_xml_error(e: quick_xml::Error) -> ParseError {
    match e {
        quick_xml::Error::Io(io) => {
            if io.get_ref().is_some_and(|inner| inner.is::<TooLarge>()) {
                ParseError::Stream(StreamError::with_text(
                    C::PolicyViolation,
                    "stanza exceeds the size limit",
                ))
            } else if io.kind() == io::ErrorKind::UnexpectedEof {
                ParseError::Eof
            } else {
                ParseError::Io(io::Error::new(io.kind(), io.to_string()))
            }
        }
        quick_xml::Error::Namespace(quick_xml::name::NamespaceError::TooManyBindings(_)) => {
            ParseError::Stream(StreamError::with_text(
                C::PolicyViolation,
                "too many namespace declarations",
            ))
        }
        quick_xml::Error::Namespace(_) => ParseError::Stream(C::BadNamespacePrefix.into()),
        quick_xml::Error::Encoding(_) => ParseError::Stream(C::NotWellFormed.into()),
        _ => ParseError::Stream(C::NotWellFormed.into()),
    }
}

/// Whether `bytes` hold anything but XML whitespace (space, tab, CR, LF; XML 1.0 `S`).
pub fn has_data(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .any(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

/// Parses one standalone XML element (e.g. a stored vCard) with the stream parser's rules and
/// limits, inside a synthetic `jabber:client` stream so unprefixed children resolve as on the wire.
pub fn parse_element(xml: &str) -> Result<Element, ParseError> {
    let input = format!(
        "<stream:stream xmlns='{}' xmlns:stream='{}'>{xml}</stream:stream>",
        ns::CLIENT,
        ns::STREAM
    );
    let limits = Limits {
        max_stanza_bytes: input.len() + 1024,
        ..Limits::default()
    };
    let mut parser = StreamParser::new(input.as_bytes(), limits);
    // A byte slice never blocks, so each step completes on its first poll.
    let mut step = || -> Result<StreamEvent, ParseError> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match std::pin::pin!(parser.next()).poll(&mut cx) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(ParseError::Eof),
        }
    };
    match step()? {
        StreamEvent::Header(_) => {}
        _ => return Err(C::BadFormat.into()),
    }
    let el = match step()? {
        StreamEvent::Stanza(el) => el,
        _ => return Err(C::BadFormat.into()),
    };
    match step()? {
        StreamEvent::Close => Ok(el),
        _ => Err(StreamError::with_text(C::BadFormat, "more than one element").into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

    fn parser(input: &'static str) -> StreamParser<tokio::io::BufReader<&'static [u8]>> {
        StreamParser::new(
            tokio::io::BufReader::new(input.as_bytes()),
            Limits::default(),
        )
    }

    #[test]
    fn only_xml_whitespace_is_no_data() {
        assert!(!has_data(b""));
        assert!(!has_data(b" \t\r\n"));
        assert!(has_data(b"\n<message/>"));
        assert!(has_data(b"\x0b"), "vertical tab is not XML whitespace");
        assert!(has_data(b"\x16\x03\x01"), "a TLS record is data");
    }

    async fn condition(input: &'static str) -> StreamErrorCondition {
        let mut p = parser(input);
        loop {
            match p.next().await {
                Ok(_) => continue,
                Err(ParseError::Stream(e)) => return e.condition,
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
    }
    use super::super::error::StreamErrorCondition;

    #[tokio::test]
    async fn parses_header_stanzas_and_close() {
        let input = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'> <message to='a@b' id='1'><body>a &amp; b &#x3C; c</body><x xmlns='urn:x'><y/></x></message>\n<presence/></stream:stream>";
        let mut p = parser(input);
        let StreamEvent::Header(h) = p.next().await.unwrap() else {
            panic!()
        };
        assert_eq!(h.to.as_deref(), Some("localhost"));
        assert_eq!(h.default_ns.as_deref(), Some(ns::CLIENT));
        let StreamEvent::Stanza(m) = p.next().await.unwrap() else {
            panic!()
        };
        assert!(m.is("message", ns::CLIENT));
        assert_eq!(p.held(), 0, "between stanzas the parser holds no buffers");
        assert_eq!(m.get_attr("to"), Some("a@b"));
        assert_eq!(
            m.get_child("body", ns::CLIENT).unwrap().text_content(),
            "a & b < c"
        );
        assert!(
            m.get_child("x", "urn:x")
                .unwrap()
                .get_child("y", "urn:x")
                .is_some()
        );
        let StreamEvent::Stanza(p2) = p.next().await.unwrap() else {
            panic!()
        };
        assert!(p2.is("presence", ns::CLIENT));
        assert!(matches!(p.next().await.unwrap(), StreamEvent::Close));
    }

    #[tokio::test]
    async fn parses_byte_by_byte() {
        let (mut tx, rx) = tokio::io::duplex(1);
        let input = format!("{HEADER}<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>");
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for b in input.as_bytes() {
                tx.write_all(&[*b]).await.unwrap();
            }
        });
        let mut p = StreamParser::new(tokio::io::BufReader::new(rx), Limits::default());
        assert!(matches!(p.next().await.unwrap(), StreamEvent::Header(_)));
        let StreamEvent::Stanza(iq) = p.next().await.unwrap() else {
            panic!()
        };
        assert!(iq.get_child("ping", ns::PING).is_some());
    }

    #[tokio::test]
    async fn rejects_restricted_xml() {
        assert_eq!(
            condition("<?xml version='1.0'?><!DOCTYPE foo [<!ENTITY x 'y'>]><stream:stream/>")
                .await,
            StreamErrorCondition::RestrictedXml
        );
        let s: &'static str = Box::leak(format!("{HEADER}<!-- hi -->").into_boxed_str());
        assert_eq!(condition(s).await, StreamErrorCondition::RestrictedXml);
        let s: &'static str =
            Box::leak(format!("{HEADER}<message><body>&xxe;</body></message>").into_boxed_str());
        assert_eq!(condition(s).await, StreamErrorCondition::RestrictedXml);
        let s: &'static str = Box::leak(format!("{HEADER}<?php x?>").into_boxed_str());
        assert_eq!(condition(s).await, StreamErrorCondition::RestrictedXml);
    }

    #[tokio::test]
    async fn rejects_malformed_xml() {
        let s: &'static str = Box::leak(format!("{HEADER}<message></presence>").into_boxed_str());
        assert_eq!(condition(s).await, StreamErrorCondition::NotWellFormed);
        assert_eq!(
            condition("<stream:stream xmlns:stream='urn:wrong'>").await,
            StreamErrorCondition::InvalidNamespace
        );
        let s: &'static str = Box::leak(format!("{HEADER}<a:b/>").into_boxed_str());
        assert_eq!(condition(s).await, StreamErrorCondition::BadNamespacePrefix);
    }

    #[tokio::test]
    async fn enforces_size_depth_and_attribute_limits() {
        let big = format!(
            "{HEADER}<message><body>{}</body></message>",
            "x".repeat(300 * 1024)
        );
        let s: &'static str = Box::leak(big.into_boxed_str());
        assert_eq!(condition(s).await, StreamErrorCondition::PolicyViolation);
        let deep = format!("{HEADER}{}", "<a>".repeat(100));
        let s: &'static str = Box::leak(deep.into_boxed_str());
        assert_eq!(condition(s).await, StreamErrorCondition::PolicyViolation);
        let attrs: String = (0..100).map(|i| format!(" a{i}='x'")).collect();
        let s: &'static str = Box::leak(format!("{HEADER}<message{attrs}/>").into_boxed_str());
        assert_eq!(condition(s).await, StreamErrorCondition::PolicyViolation);
    }

    #[tokio::test]
    async fn many_small_stanzas_do_not_exhaust_the_budget() {
        let mut input = HEADER.to_string();
        for _ in 0..2000 {
            input.push_str("<presence><status>some status text here</status></presence>");
        }
        let s: &'static str = Box::leak(input.into_boxed_str());
        let mut p = parser(s);
        assert!(matches!(p.next().await.unwrap(), StreamEvent::Header(_)));
        for _ in 0..2000 {
            assert!(matches!(p.next().await.unwrap(), StreamEvent::Stanza(_)));
        }
        assert!(matches!(p.next().await, Err(ParseError::Eof)));
    }

    #[test]
    fn parse_element_round_trips() {
        let el = Element::new("vCard", "vcard-temp")
            .child(Element::new("FN", "vcard-temp").text("A & <B>"))
            .child(Element::new("x", "urn:x").attr("a", "1\"2"));
        let xml = el.to_xml("");
        assert_eq!(parse_element(&xml).unwrap(), el);
        let plain = parse_element("<query xmlns='jabber:iq:private'><a/></query>").unwrap();
        assert!(plain.is("query", "jabber:iq:private"));
        let client = parse_element("<message><body>hi</body></message>").unwrap();
        assert!(client.get_child("body", ns::CLIENT).is_some());
    }

    #[test]
    fn element_and_attribute_names_must_be_xml_names() {
        for bad in [
            "<a,\u{0}b/>",
            "<p:y,\u{0}\u{1e}p:z='x' xmlns:p='u'/>",
            "<a:b:c xmlns:a='u'/>",
            "<a b,c='1'/>",
            "<a p:q:r='1' xmlns:p='u'/>",
            "<1a/>",
        ] {
            assert!(parse_element(bad).is_err(), "{bad:?} parsed");
        }
        for good in [
            "<a-b.c_d/>",
            "<é xml:lang='fr'/>",
            "<p:x xmlns:p='u' p:y='1'/>",
            "<a\u{b7}/>",
        ] {
            assert!(parse_element(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn namespaces_with_escapes_round_trip() {
        for xml in [
            "<a xmlns='u&amp;v'/>",
            "<a xmlns=\"u'v\"/>",
            "<a xmlns='u&#x3C;v'><b/></a>",
            "<a xmlns='urn:a' xmlns:p='x&quot;y'><p:b/></a>",
        ] {
            let el = parse_element(xml).unwrap();
            let again = parse_element(&el.to_xml("")).unwrap();
            assert_eq!(again, el, "{xml} -> {}", el.to_xml(""));
        }
    }

    #[test]
    fn parse_element_rejects_bad_input() {
        for bad in [
            "",
            "<a>",
            "<a/><b/>",
            "text",
            "<a><!-- c --></a>",
            "<a>&ent;</a>",
            "</stream:stream><a/>",
            "<x:a/>",
        ] {
            assert!(parse_element(bad).is_err(), "{bad:?}");
        }
    }
}

/// The parser gets the same elements however the input is split into reads.
#[cfg(test)]
mod split_input {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use proptest::prelude::*;
    use tokio::io::{AsyncRead, ReadBuf};

    use super::*;

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

    /// First-level elements to combine: attributes with both quotes, escapes, namespaces
    /// declared with and without a prefix, nesting, character references, CDATA, whitespace
    /// between stanzas and multi-byte UTF-8 (a read may end inside a character).
    const PIECES: &[&str] = &[
        "<message to='a@b' type=\"chat\" id='m1'><body>h&amp;llo &lt;you&gt; &#x1F426;</body></message>",
        "<presence/>",
        "\n  ",
        "<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>",
        "<message><body>Zürich — 東京 🐦</body><x:y xmlns:x='urn:x' x:attr='v'><x:z/></x:y></message>",
        "<r xmlns='urn:xmpp:sm:3'/>",
        "<message><body><![CDATA[<not markup> & more]]></body></message>",
        "<iq type='set' id='q'><query xmlns='jabber:iq:roster'><item jid='c@d' name='&quot;C&apos;'/></query></iq>",
    ];

    /// A reader that hands out its input in the given chunk sizes (cycled).
    struct Chunked {
        data: Vec<u8>,
        pos: usize,
        sizes: Vec<usize>,
        next: usize,
    }

    impl AsyncRead for Chunked {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let want = self.sizes[self.next % self.sizes.len()];
            self.next += 1;
            let end = (self.pos + want.min(buf.remaining())).min(self.data.len());
            let pos = self.pos;
            buf.put_slice(&self.data[pos..end]);
            self.pos = end;
            Poll::Ready(Ok(()))
        }
    }

    /// Every event (or the error that ended the stream) rendered comparably.
    async fn events(input: &str, sizes: Vec<usize>) -> Vec<String> {
        let reader = Chunked {
            data: input.as_bytes().to_vec(),
            pos: 0,
            sizes,
            next: 0,
        };
        let mut p = StreamParser::new(
            tokio::io::BufReader::with_capacity(8192, reader),
            Limits::default(),
        );
        let mut out = Vec::new();
        loop {
            match p.next().await {
                Ok(StreamEvent::Header(h)) => out.push(format!("header {:?}", h.to)),
                Ok(StreamEvent::Stanza(el)) => out.push(format!("{el:?}")),
                Ok(StreamEvent::Close) => {
                    out.push("close".into());
                    return out;
                }
                Err(ParseError::Stream(e)) => {
                    out.push(format!("error {}", e.condition));
                    return out;
                }
                Err(ParseError::Eof) => {
                    out.push("eof".into());
                    return out;
                }
                Err(ParseError::Io(e)) => panic!("i/o error from an in-memory reader: {e}"),
            }
        }
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    proptest! {
        #[test]
        fn same_elements_however_the_input_is_split(
            picks in prop::collection::vec(0..PIECES.len(), 0..10),
            sizes in prop::collection::vec(1usize..48, 1..24),
            close in any::<bool>(),
        ) {
            let mut input = HEADER.to_string();
            for i in &picks {
                input.push_str(PIECES[*i]);
            }
            if close {
                input.push_str("</stream:stream>");
            }
            let whole = run(events(&input, vec![input.len()]));
            let split = run(events(&input, sizes));
            let stanzas = picks.iter().filter(|i| PIECES[**i].trim() != "").count();
            // Header, each stanza, then the close or the end of input.
            prop_assert_eq!(whole.len(), stanzas + 2, "{:?}", whole);
            prop_assert_eq!(split, whole);
        }
    }
}
