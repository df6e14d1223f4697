//! vCard text (RFC 6350, and 3.0 on input) ⇄ vcard-temp (XEP-0054), for faces that speak
//! text/vcard (the admin API's `/vcards`) over the vCards the [`super::vcard`] module stores.
//!
//! Converted fields: FN, N, NICKNAME, EMAIL, TEL, URL, NOTE (vcard-temp `DESC`), BDAY, ORG,
//! TITLE, with the HOME/WORK/PREF/CELL/VOICE/FAX… types. Other properties are not carried over.

use crate::xmpp::parser::parse_element;
use crate::xmpp::{Element, ns};

/// Types that map to empty vcard-temp flag elements.
const TEL_TYPES: &[&str] = &[
    "HOME", "WORK", "VOICE", "FAX", "PAGER", "MSG", "CELL", "VIDEO", "BBS", "MODEM", "ISDN", "PCS",
    "PREF",
];
const EMAIL_TYPES: &[&str] = &["HOME", "WORK", "INTERNET", "PREF", "X400"];
/// vCard 4 TYPE values that differ from vcard-temp's (`text` ≈ `MSG`, `textphone` ≈ `MSG`).
const TEL_ALIASES: &[(&str, &str)] = &[("TEXT", "MSG"), ("TEXTPHONE", "MSG")];

/// Why a vCard could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VcardTextError {
    /// The bytes are not UTF-8.
    #[error("not UTF-8")]
    NotUtf8,
    /// The body starts like XML but is not a well-formed element.
    #[error("not well-formed XML")]
    NotXml,
    /// A content line has no `:` between name and value.
    #[error("line without `:`: {0}")]
    NoColon(String),
    /// No `BEGIN:VCARD` … `END:VCARD` around the properties.
    #[error("expected BEGIN:VCARD … END:VCARD")]
    NoEnvelope,
    /// `END:VCARD` comes before `BEGIN:VCARD`.
    #[error("END:VCARD before BEGIN:VCARD")]
    EndBeforeBegin,
}

/// Reads a vCard sent as text/vcard, or as a `<vCard xmlns='vcard-temp'>` element kept as is.
pub fn from_body(body: &[u8]) -> Result<Element, VcardTextError> {
    let text = std::str::from_utf8(body).map_err(|_| VcardTextError::NotUtf8)?;
    if text.trim_start().starts_with('<') {
        parse_element(text.trim()).map_err(|_| VcardTextError::NotXml)
    } else {
        from_text(text)
    }
}

/// One content line: name (upper-case, group dropped), TYPE values (upper-case), raw value.
struct Line {
    name: String,
    types: Vec<String>,
    value: String,
}

/// Splits a raw value on unescaped `sep`.
fn split_unescaped(value: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(last) = out.last_mut() {
                last.push(c);
                if let Some(n) = chars.next() {
                    last.push(n);
                }
            }
        } else if c == sep {
            out.push(String::new());
        } else if let Some(last) = out.last_mut() {
            last.push(c);
        }
    }
    out
}

/// RFC 6350 §3.4 text unescaping.
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n' | 'N') => out.push('\n'),
                Some(o) => out.push(o),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// RFC 6350 §3.4 text escaping.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ',' => out.push_str("\\,"),
            ';' => out.push_str("\\;"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

fn parse_lines(text: &str) -> Result<Vec<Line>, VcardTextError> {
    // Unfold: a line break followed by a space or tab continues the previous line.
    let mut unfolded: Vec<String> = Vec::new();
    for raw in text.split('\n') {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(rest) = raw.strip_prefix([' ', '\t'])
            && let Some(last) = unfolded.last_mut()
        {
            last.push_str(rest);
            continue;
        }
        if !raw.trim().is_empty() {
            unfolded.push(raw.to_string());
        }
    }
    let mut lines = Vec::new();
    for l in unfolded {
        let Some((head, value)) = l.split_once(':') else {
            return Err(VcardTextError::NoColon(l));
        };
        let mut parts = head.split(';');
        let name = parts.next().unwrap_or_default();
        let name = name.rsplit('.').next().unwrap_or(name).to_ascii_uppercase();
        let mut types = Vec::new();
        for p in parts {
            let (k, v) = p.split_once('=').unwrap_or(("TYPE", p));
            if k.eq_ignore_ascii_case("TYPE") {
                types.extend(
                    v.trim_matches('"')
                        .split(',')
                        .map(|t| t.trim().to_ascii_uppercase())
                        .filter(|t| !t.is_empty()),
                );
            } else if k.eq_ignore_ascii_case("PREF") {
                types.push("PREF".into());
            }
        }
        lines.push(Line {
            name,
            types,
            value: value.to_string(),
        });
    }
    Ok(lines)
}

fn text_el(name: &str, value: String) -> Element {
    Element::new(name, ns::VCARD).text(value)
}

/// Converts a text vCard (RFC 6350, or 3.0) to a vcard-temp element.
pub fn from_text(text: &str) -> Result<Element, VcardTextError> {
    let lines = parse_lines(text)?;
    let begin = lines
        .iter()
        .position(|l| l.name == "BEGIN" && l.value.trim().eq_ignore_ascii_case("VCARD"));
    let end = lines
        .iter()
        .position(|l| l.name == "END" && l.value.trim().eq_ignore_ascii_case("VCARD"));
    let (Some(begin), Some(end)) = (begin, end) else {
        return Err(VcardTextError::NoEnvelope);
    };
    if end < begin {
        return Err(VcardTextError::EndBeforeBegin);
    }
    let mut vc = Element::new("vCard", ns::VCARD);
    for l in &lines[begin + 1..end] {
        match l.name.as_str() {
            "FN" | "NICKNAME" | "URL" | "BDAY" | "TITLE" => {
                vc.push(text_el(&l.name, unescape(&l.value)));
            }
            "NOTE" => vc.push(text_el("DESC", unescape(&l.value))),
            "N" => {
                let parts = split_unescaped(&l.value, ';');
                let mut n = Element::new("N", ns::VCARD);
                for (i, tag) in ["FAMILY", "GIVEN", "MIDDLE", "PREFIX", "SUFFIX"]
                    .iter()
                    .enumerate()
                {
                    let v = parts.get(i).map(|p| unescape(p)).unwrap_or_default();
                    if !v.is_empty() {
                        n.push(text_el(tag, v));
                    }
                }
                vc.push(n);
            }
            "ORG" => {
                let parts = split_unescaped(&l.value, ';');
                let mut org = Element::new("ORG", ns::VCARD);
                for (i, p) in parts.iter().enumerate() {
                    let tag = if i == 0 { "ORGNAME" } else { "ORGUNIT" };
                    org.push(text_el(tag, unescape(p)));
                }
                vc.push(org);
            }
            "EMAIL" => {
                let mut e = Element::new("EMAIL", ns::VCARD);
                for t in &l.types {
                    if EMAIL_TYPES.contains(&t.as_str()) {
                        e.push(Element::new(t.clone(), ns::VCARD));
                    }
                }
                e.push(text_el("USERID", unescape(&l.value)));
                vc.push(e);
            }
            "TEL" => {
                let mut e = Element::new("TEL", ns::VCARD);
                for t in &l.types {
                    let t = TEL_ALIASES
                        .iter()
                        .find(|(a, _)| a == t)
                        .map(|(_, b)| *b)
                        .unwrap_or(t.as_str());
                    if TEL_TYPES.contains(&t) && e.get_child(t, ns::VCARD).is_none() {
                        e.push(Element::new(t, ns::VCARD));
                    }
                }
                let v = unescape(&l.value);
                let v = v.strip_prefix("tel:").unwrap_or(&v).to_string();
                e.push(text_el("NUMBER", v));
                vc.push(e);
            }
            _ => {}
        }
    }
    Ok(vc)
}

fn child_text(el: &Element, name: &str) -> Option<String> {
    el.get_child(name, ns::VCARD)
        .map(|c| c.text_content())
        .filter(|t| !t.is_empty())
}

/// Appends a content line, folded at 75 octets (RFC 6350 §3.2).
fn push_line(out: &mut String, line: &str) {
    let mut width = 0;
    for c in line.chars() {
        if width + c.len_utf8() > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += c.len_utf8();
    }
    out.push_str("\r\n");
}

fn types_param(el: &Element, known: &[&str]) -> String {
    let types: Vec<String> = el
        .children()
        .map(|c| c.name().to_string())
        .filter(|n| known.contains(&n.as_str()))
        .map(|n| n.to_ascii_lowercase())
        .collect();
    if types.is_empty() {
        String::new()
    } else {
        format!(";TYPE={}", types.join(","))
    }
}

/// Converts a vcard-temp element to a text vCard 4.0.
pub fn to_text(vc: &Element) -> String {
    let mut out = String::new();
    push_line(&mut out, "BEGIN:VCARD");
    push_line(&mut out, "VERSION:4.0");
    // FN is required in vCard 4; fall back to the structured name.
    let n = vc.get_child("N", ns::VCARD);
    let fname = child_text(vc, "FN").unwrap_or_else(|| {
        n.map(|n| {
            ["PREFIX", "GIVEN", "MIDDLE", "FAMILY", "SUFFIX"]
                .iter()
                .filter_map(|t| child_text(n, t))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
    });
    push_line(&mut out, &format!("FN:{}", escape(&fname)));
    if let Some(n) = n {
        let parts: Vec<String> = ["FAMILY", "GIVEN", "MIDDLE", "PREFIX", "SUFFIX"]
            .iter()
            .map(|t| escape(&child_text(n, t).unwrap_or_default()))
            .collect();
        push_line(&mut out, &format!("N:{}", parts.join(";")));
    }
    for c in vc.children() {
        match c.name() {
            "NICKNAME" | "URL" | "BDAY" | "TITLE" => {
                push_line(
                    &mut out,
                    &format!("{}:{}", c.name(), escape(&c.text_content())),
                );
            }
            "DESC" => push_line(&mut out, &format!("NOTE:{}", escape(&c.text_content()))),
            "ORG" => {
                let mut parts = vec![escape(&child_text(c, "ORGNAME").unwrap_or_default())];
                parts.extend(
                    c.children()
                        .filter(|u| u.name() == "ORGUNIT")
                        .map(|u| escape(&u.text_content())),
                );
                push_line(&mut out, &format!("ORG:{}", parts.join(";")));
            }
            "EMAIL" => {
                if let Some(v) = child_text(c, "USERID") {
                    let types = types_param(c, &["HOME", "WORK", "PREF"]);
                    push_line(&mut out, &format!("EMAIL{types}:{}", escape(&v)));
                }
            }
            "TEL" => {
                if let Some(v) = child_text(c, "NUMBER") {
                    let types = types_param(c, TEL_TYPES);
                    push_line(&mut out, &format!("TEL{types}:{}", escape(&v)));
                }
            }
            _ => {}
        }
    }
    push_line(&mut out, "END:VCARD");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARD: &str = "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Alice Liddell\r\nN:Liddell;Alice;;Ms.;\r\nNICKNAME:al\r\nEMAIL;TYPE=work:alice@example.com\r\nTEL;TYPE=cell,voice:tel:+1-555-0100\r\nURL:https://example.com/~alice\r\nNOTE:Down the rabbit hole\\, twice\\nand back\r\nBDAY:1852-05-04\r\nORG:Wonderland Inc.;Tea Party\r\nTITLE:Curious\r\nX-UNKNOWN:dropped\r\nEND:VCARD\r\n";

    #[test]
    fn text_to_xml_and_back() {
        let el = from_text(CARD).unwrap();
        assert!(el.is("vCard", ns::VCARD));
        assert_eq!(child_text(&el, "FN").unwrap(), "Alice Liddell");
        let n = el.get_child("N", ns::VCARD).unwrap();
        assert_eq!(child_text(n, "FAMILY").unwrap(), "Liddell");
        assert_eq!(child_text(n, "PREFIX").unwrap(), "Ms.");
        let tel = el.get_child("TEL", ns::VCARD).unwrap();
        assert!(tel.get_child("CELL", ns::VCARD).is_some());
        assert_eq!(child_text(tel, "NUMBER").unwrap(), "+1-555-0100");
        let email = el.get_child("EMAIL", ns::VCARD).unwrap();
        assert!(email.get_child("WORK", ns::VCARD).is_some());
        assert_eq!(
            child_text(&el, "DESC").unwrap(),
            "Down the rabbit hole, twice\nand back"
        );
        let org = el.get_child("ORG", ns::VCARD).unwrap();
        assert_eq!(child_text(org, "ORGUNIT").unwrap(), "Tea Party");

        let text = to_text(&el);
        assert!(
            text.starts_with("BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Alice Liddell\r\n"),
            "{text}"
        );
        assert!(text.contains("N:Liddell;Alice;;Ms.;\r\n"), "{text}");
        assert!(
            text.contains("TEL;TYPE=cell,voice:+1-555-0100\r\n"),
            "{text}"
        );
        assert!(
            text.contains("EMAIL;TYPE=work:alice@example.com\r\n"),
            "{text}"
        );
        assert!(
            text.contains("NOTE:Down the rabbit hole\\, twice\\nand back\r\n"),
            "{text}"
        );
        assert!(text.contains("ORG:Wonderland Inc.;Tea Party\r\n"), "{text}");
        assert!(!text.contains("X-UNKNOWN"));
        // Round trip is stable.
        assert_eq!(to_text(&from_text(&text).unwrap()), text);
    }

    #[test]
    fn folding_and_bad_input() {
        let long = format!("BEGIN:VCARD\nFN:{}\nEND:VCARD\n", "é".repeat(100));
        let el = from_text(&long).unwrap();
        let text = to_text(&el);
        assert!(text.lines().all(|l| l.len() <= 76), "{text}");
        assert_eq!(
            child_text(&from_text(&text).unwrap(), "FN").unwrap(),
            "é".repeat(100)
        );
        assert_eq!(from_text("FN:x"), Err(VcardTextError::NoEnvelope));
        assert_eq!(
            from_text("BEGIN:VCARD\nno colon\nEND:VCARD"),
            Err(VcardTextError::NoColon("no colon".into()))
        );
        assert_eq!(
            from_text("END:VCARD\nBEGIN:VCARD"),
            Err(VcardTextError::EndBeforeBegin)
        );
        assert_eq!(from_text(""), Err(VcardTextError::NoEnvelope));
        assert_eq!(from_body(b"\xff"), Err(VcardTextError::NotUtf8));
        assert_eq!(from_body(b"<vCard"), Err(VcardTextError::NotXml));
        let el = from_body(b" <vCard xmlns='vcard-temp'><FN>x</FN></vCard>").unwrap();
        assert_eq!(child_text(&el, "FN").unwrap(), "x");
    }
}
