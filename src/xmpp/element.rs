//! An owned XML element tree: what a stanza is parsed into, routed as and serialised from.

use std::fmt::Write as _;

/// A node inside an element: a child element or character data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// A child element.
    Element(Element),
    /// Unescaped character data.
    Text(String),
}

/// An XML element with a resolved namespace, its attributes (by qualified name) and children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    name: String,
    ns: String,
    attrs: Vec<(String, String)>,
    children: Vec<Node>,
}

impl Element {
    /// A new empty element `name` in namespace `ns`.
    pub fn new(name: impl Into<String>, ns: impl Into<String>) -> Self {
        Element {
            name: name.into(),
            ns: ns.into(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Builder: sets an attribute.
    pub fn attr(mut self, name: &str, value: impl Into<String>) -> Self {
        self.set_attr(name, Some(value.into()));
        self
    }

    /// Builder: appends a child element.
    pub fn child(mut self, child: Element) -> Self {
        self.children.push(Node::Element(child));
        self
    }

    /// Builder: appends character data.
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.children.push(Node::Text(text.into()));
        self
    }

    /// Moves this element and every descendant in namespace `from` to namespace `to` (e.g. a
    /// stanza received as `jabber:server` handled as `jabber:client`).
    pub fn rename_ns(&mut self, from: &str, to: &str) {
        if self.ns == from {
            self.ns = to.to_string();
        }
        for node in &mut self.children {
            if let Node::Element(e) = node {
                e.rename_ns(from, to);
            }
        }
    }

    /// The local name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace URI.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// Whether this element is `name` in namespace `ns`.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    /// An attribute's value by qualified name.
    pub fn get_attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets (`Some`) or removes (`None`) an attribute.
    pub fn set_attr(&mut self, name: &str, value: Option<String>) {
        match (self.attrs.iter().position(|(k, _)| k == name), value) {
            (Some(i), Some(v)) => self.attrs[i].1 = v,
            (Some(i), None) => {
                self.attrs.remove(i);
            }
            (None, Some(v)) => self.attrs.push((name.to_string(), v)),
            (None, None) => {}
        }
    }

    /// All attributes in document order.
    pub fn attrs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of attributes.
    pub fn attr_count(&self) -> usize {
        self.attrs.len()
    }

    /// All child nodes.
    pub fn nodes(&self) -> &[Node] {
        &self.children
    }

    /// Appends a child element.
    pub fn push(&mut self, child: Element) {
        self.children.push(Node::Element(child));
    }

    /// Appends character data.
    pub fn push_text(&mut self, text: impl Into<String>) {
        self.children.push(Node::Text(text.into()));
    }

    /// The last child node, mutably (used by the parser to merge text).
    pub fn last_node_mut(&mut self) -> Option<&mut Node> {
        self.children.last_mut()
    }

    /// Removes all children.
    pub fn clear_children(&mut self) {
        self.children.clear();
    }

    /// Child elements.
    pub fn children(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first child element named `name` in `ns`.
    pub fn get_child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.children().find(|e| e.is(name, ns))
    }

    /// The first child element named `name` in `ns`, mutably.
    pub fn get_child_mut(&mut self, name: &str, ns: &str) -> Option<&mut Element> {
        self.children.iter_mut().find_map(|n| match n {
            Node::Element(e) if e.is(name, ns) => Some(e),
            _ => None,
        })
    }

    /// Removes every child element named `name` in `ns`.
    pub fn remove_children(&mut self, name: &str, ns: &str) {
        self.children
            .retain(|n| !matches!(n, Node::Element(e) if e.is(name, ns)));
    }

    /// The concatenated character data directly inside this element.
    pub fn text_content(&self) -> String {
        let mut out = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                out.push_str(t);
            }
        }
        out
    }

    /// The first child element, if any (e.g. the payload of an IQ).
    pub fn first_child(&self) -> Option<&Element> {
        self.children().next()
    }

    /// Serialises as a top-level stanza inside a stream whose default namespace is `stream_ns`.
    pub fn to_xml(&self, stream_ns: &str) -> String {
        let mut out = String::with_capacity(128);
        self.write_xml(&mut out, stream_ns);
        out
    }

    /// Appends the serialisation of this element to `out`; `parent_ns` is the default namespace in scope.
    pub fn write_xml(&self, out: &mut String, parent_ns: &str) {
        let stream_prefixed = self.ns == super::ns::STREAM;
        out.push('<');
        if stream_prefixed {
            out.push_str("stream:");
        }
        out.push_str(&self.name);
        if !stream_prefixed && self.ns != parent_ns {
            out.push_str(" xmlns=\"");
            escape_into(out, &self.ns, true);
            out.push('"');
        }
        for (k, v) in &self.attrs {
            let _ = write!(out, " {k}=\"");
            escape_into(out, v, true);
            out.push('"');
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        let inner_ns = if stream_prefixed { parent_ns } else { &self.ns };
        for n in &self.children {
            match n {
                Node::Element(e) => e.write_xml(out, inner_ns),
                Node::Text(t) => escape_into(out, t, false),
            }
        }
        out.push_str("</");
        if stream_prefixed {
            out.push_str("stream:");
        }
        out.push_str(&self.name);
        out.push('>');
    }
}

/// Escapes `s` for XML character data (`attr = false`) or a double-quoted attribute value.
/// Runs of bytes that need no escaping are copied whole (every escaped character is ASCII, so a
/// run always ends on a character boundary).
pub fn escape_into(out: &mut String, s: &str, attr: bool) {
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let entity = match b {
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'&' => "&amp;",
            b'"' if attr => "&quot;",
            b'\'' if attr => "&apos;",
            b'\n' if attr => "&#xA;",
            b'\r' => "&#xD;",
            b'\t' if attr => "&#x9;",
            _ => continue,
        };
        out.push_str(s.get(start..i).unwrap_or_default());
        out.push_str(entity);
        start = i.saturating_add(1);
    }
    out.push_str(s.get(start..).unwrap_or_default());
}

/// Escapes `s` into a new string (see [`escape_into`]).
pub fn escape(s: &str, attr: bool) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(&mut out, s, attr);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::ns;

    #[test]
    fn escapes_runs_and_multibyte_text() {
        let s = "a<b>&c\"d'e\nf\rg\th é😀<";
        assert_eq!(
            escape(s, true),
            "a&lt;b&gt;&amp;c&quot;d&apos;e&#xA;f&#xD;g&#x9;h é😀&lt;"
        );
        assert_eq!(
            escape(s, false),
            "a&lt;b&gt;&amp;c\"d'e\nf&#xD;g\th é😀&lt;"
        );
        assert_eq!(escape("", true), "");
        assert_eq!(escape("plain ünï", false), "plain ünï");
        assert_eq!(escape("&", false), "&amp;");
    }

    #[test]
    fn serialises_namespaces_only_when_they_change() {
        let el = Element::new("iq", ns::CLIENT)
            .attr("type", "result")
            .attr("id", "a\"<1")
            .child(Element::new("ping", ns::PING))
            .child(Element::new("x", ns::CLIENT).text("1 < 2 & 3"));
        assert_eq!(
            el.to_xml(ns::CLIENT),
            "<iq type=\"result\" id=\"a&quot;&lt;1\"><ping xmlns=\"urn:xmpp:ping\"/><x>1 &lt; 2 &amp; 3</x></iq>"
        );
    }

    #[test]
    fn stream_namespace_uses_prefix() {
        let el = Element::new("features", ns::STREAM).child(Element::new("bind", ns::BIND));
        assert_eq!(
            el.to_xml(ns::CLIENT),
            "<stream:features><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"/></stream:features>"
        );
    }

    #[test]
    fn attributes_set_and_remove() {
        let mut el = Element::new("message", ns::CLIENT).attr("to", "a@b");
        el.set_attr("to", Some("c@d".into()));
        assert_eq!(el.get_attr("to"), Some("c@d"));
        el.set_attr("to", None);
        assert_eq!(el.get_attr("to"), None);
        assert_eq!(el.attr_count(), 0);
    }
}
