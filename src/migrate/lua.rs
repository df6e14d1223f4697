//! A strict parser for the Lua subset Prosody's `util.serialization` writes, with no Lua
//! runtime: `return <value>;` files (keyval stores) and `item(<value>);` lists (archives).
//! Values are `nil`, booleans, numbers (integers, floats, `(1/0)`, `(-1/0)`, `(0/0)`), strings
//! (quoted with Lua escapes, or long brackets) and tables of `[key] = value`, `name = value`
//! and positional fields. Anything else is an error with its byte offset; nothing panics.

use std::fmt;

/// Deepest table nesting accepted.
const MAX_DEPTH: usize = 100;

/// A Lua value.
#[derive(Clone, Debug, PartialEq)]
pub enum Lua {
    /// `nil`.
    Nil,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Num(f64),
    /// A string (Lua strings are bytes).
    Str(Vec<u8>),
    /// A table.
    Table(Table),
}

/// A table's fields in file order; positional fields get keys 1, 2, ….
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    /// Key and value of every field.
    pub fields: Vec<(Lua, Lua)>,
}

impl Table {
    /// The value of a string key.
    pub fn get(&self, key: &str) -> Option<&Lua> {
        self.fields
            .iter()
            .find(|(k, _)| matches!(k, Lua::Str(s) if s == key.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The values at keys 1, 2, … up to the first missing one (Lua's `ipairs`).
    pub fn array(&self) -> Vec<&Lua> {
        let mut out = Vec::new();
        let mut i = 1i64;
        while let Some((_, v)) = self.fields.iter().find(|(k, _)| *k == Lua::Int(i)) {
            out.push(v);
            i += 1;
        }
        out
    }

    /// Fields with string keys (keys as UTF-8, lossily).
    pub fn string_keys(&self) -> impl Iterator<Item = (String, &Lua)> {
        self.fields.iter().filter_map(|(k, v)| match k {
            Lua::Str(s) => Some((String::from_utf8_lossy(s).into_owned(), v)),
            _ => None,
        })
    }
}

impl Lua {
    /// The string as UTF-8, if it is a valid one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Lua::Str(s) => std::str::from_utf8(s).ok(),
            _ => None,
        }
    }

    /// The table, if it is one.
    pub fn as_table(&self) -> Option<&Table> {
        match self {
            Lua::Table(t) => Some(t),
            _ => None,
        }
    }

    /// The number as an integer (floats with no fraction too).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Lua::Int(i) => Some(i),
            Lua::Num(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 => Some(f as i64),
            _ => None,
        }
    }

    /// The number as a float.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Lua::Int(i) => Some(i as f64),
            Lua::Num(f) => Some(f),
            _ => None,
        }
    }

    /// Whether this is `true`.
    pub fn is_true(&self) -> bool {
        *self == Lua::Bool(true)
    }
}

/// A syntax error and the byte offset where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LuaError {
    /// Byte offset in the input.
    pub offset: usize,
    /// What was expected or wrong.
    pub message: String,
}

impl fmt::Display for LuaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "byte {}: {}", self.offset, self.message)
    }
}

/// Parses a keyval file: `return <value>;` (the semicolon optional).
pub fn parse_return(input: &[u8]) -> Result<Lua, LuaError> {
    let mut p = Parser { s: input, i: 0 };
    p.ws();
    p.keyword("return")?;
    let v = p.value(0)?;
    p.ws();
    p.eat(b';');
    p.ws();
    p.end()?;
    Ok(v)
}

/// Parses a list file: any number of `item(<value>);`.
pub fn parse_items(input: &[u8]) -> Result<Vec<Lua>, LuaError> {
    let mut p = Parser { s: input, i: 0 };
    let mut out = Vec::new();
    loop {
        p.ws();
        if p.i >= p.s.len() {
            return Ok(out);
        }
        p.keyword("item")?;
        p.ws();
        p.expect(b'(')?;
        out.push(p.value(0)?);
        p.ws();
        p.expect(b')')?;
        p.ws();
        p.eat(b';');
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn err<T>(&self, message: impl Into<String>) -> Result<T, LuaError> {
        Err(LuaError {
            offset: self.i,
            message: message.into(),
        })
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), LuaError> {
        if self.eat(c) {
            Ok(())
        } else {
            self.err(format!("expected '{}'", c as char))
        }
    }

    fn end(&self) -> Result<(), LuaError> {
        if self.i == self.s.len() {
            Ok(())
        } else {
            self.err("unexpected text after the value")
        }
    }

    fn name(&mut self) -> Option<&[u8]> {
        let start = self.i;
        if !matches!(self.peek(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_')) {
            return None;
        }
        while matches!(
            self.peek(),
            Some(b'a'..=b'z' | b'A'..=b'Z' | b'_' | b'0'..=b'9')
        ) {
            self.i += 1;
        }
        self.s.get(start..self.i)
    }

    fn keyword(&mut self, kw: &str) -> Result<(), LuaError> {
        let start = self.i;
        match self.name() {
            Some(n) if n == kw.as_bytes() => Ok(()),
            _ => {
                self.i = start;
                self.err(format!("expected '{kw}'"))
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Lua, LuaError> {
        self.ws();
        match self.peek() {
            None => self.err("expected a value"),
            Some(b'{') => {
                if depth >= MAX_DEPTH {
                    return self.err("tables nested too deeply");
                }
                self.table(depth + 1).map(Lua::Table)
            }
            Some(q @ (b'"' | b'\'')) => {
                self.i += 1;
                self.quoted(q).map(Lua::Str)
            }
            Some(b'[') => match self.long_string()? {
                Some(s) => Ok(Lua::Str(s)),
                None => self.err("expected a value"),
            },
            Some(b'(') => self.special_number(),
            Some(b'-' | b'0'..=b'9' | b'.') => self.number(),
            Some(_) => {
                let start = self.i;
                match self.name() {
                    Some(b"nil") => Ok(Lua::Nil),
                    Some(b"true") => Ok(Lua::Bool(true)),
                    Some(b"false") => Ok(Lua::Bool(false)),
                    _ => {
                        self.i = start;
                        self.err("expected a value")
                    }
                }
            }
        }
    }

    fn table(&mut self, depth: usize) -> Result<Table, LuaError> {
        self.expect(b'{')?;
        let mut t = Table::default();
        let mut next_index = 1i64;
        loop {
            self.ws();
            if self.eat(b'}') {
                return Ok(t);
            }
            let start = self.i;
            let (key, value) = if self.peek() == Some(b'[') && !self.at_long_bracket() {
                self.i += 1;
                let k = self.value(depth)?;
                self.ws();
                self.expect(b']')?;
                self.ws();
                self.expect(b'=')?;
                (k, self.value(depth)?)
            } else if let Some(n) = self.name().map(<[u8]>::to_vec) {
                self.ws();
                if self.eat(b'=') && !matches!(&n[..], b"nil" | b"true" | b"false") {
                    (Lua::Str(n), self.value(depth)?)
                } else {
                    self.i = start;
                    let v = self.value(depth)?;
                    (self.positional(&mut next_index)?, v)
                }
            } else {
                let v = self.value(depth)?;
                (self.positional(&mut next_index)?, v)
            };
            if matches!(key, Lua::Nil) {
                self.i = start;
                return self.err("a table key is nil");
            }
            t.fields.push((key, value));
            self.ws();
            if !(self.eat(b';') || self.eat(b',')) {
                self.ws();
                self.expect(b'}')?;
                return Ok(t);
            }
        }
    }

    fn positional(&self, next: &mut i64) -> Result<Lua, LuaError> {
        let k = Lua::Int(*next);
        *next = match next.checked_add(1) {
            Some(n) => n,
            None => return self.err("too many fields"),
        };
        Ok(k)
    }

    fn at_long_bracket(&self) -> bool {
        let mut j = self.i + 1;
        while self.s.get(j) == Some(&b'=') {
            j += 1;
        }
        self.s.get(j) == Some(&b'[')
    }

    /// A `[[…]]` / `[==[…]==]` string, or `None` if this `[` does not open one.
    fn long_string(&mut self) -> Result<Option<Vec<u8>>, LuaError> {
        if !self.at_long_bracket() {
            return Ok(None);
        }
        self.i += 1;
        let mut level = 0usize;
        while self.eat(b'=') {
            level += 1;
        }
        self.expect(b'[')?;
        // A newline right after the opening bracket is skipped.
        if self.eat(b'\r') {
            self.eat(b'\n');
        } else if self.eat(b'\n') {
            self.eat(b'\r');
        }
        let mut close = vec![b']'];
        close.extend(std::iter::repeat_n(b'=', level));
        close.push(b']');
        let rest = self.s.get(self.i..).unwrap_or_default();
        match rest
            .windows(close.len())
            .position(|w| w == close.as_slice())
        {
            Some(n) => {
                let s = rest[..n].to_vec();
                self.i += n + close.len();
                Ok(Some(s))
            }
            None => self.err("unfinished long string"),
        }
    }

    fn quoted(&mut self, q: u8) -> Result<Vec<u8>, LuaError> {
        let mut out = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return self.err("unfinished string");
            };
            self.i += 1;
            match c {
                c if c == q => return Ok(out),
                b'\n' | b'\r' => {
                    self.i -= 1;
                    return self.err("newline in a string");
                }
                b'\\' => self.escape(&mut out)?,
                c => out.push(c),
            }
        }
    }

    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), LuaError> {
        let Some(c) = self.peek() else {
            return self.err("unfinished escape");
        };
        self.i += 1;
        match c {
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'\\' | b'"' | b'\'' => out.push(c),
            b'\n' => {
                self.eat(b'\r');
                out.push(b'\n');
            }
            b'\r' => {
                self.eat(b'\n');
                out.push(b'\n');
            }
            b'z' => {
                while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r' | 11 | 12)) {
                    self.i += 1;
                }
            }
            b'x' => {
                let hex = self.s.get(self.i..self.i + 2).unwrap_or_default();
                let v = std::str::from_utf8(hex)
                    .ok()
                    .filter(|h| h.len() == 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match v {
                    Some(b) => {
                        out.push(b);
                        self.i += 2;
                    }
                    None => return self.err("bad \\x escape"),
                }
            }
            b'0'..=b'9' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match self.peek() {
                        Some(d @ b'0'..=b'9') => {
                            v = v * 10 + u32::from(d - b'0');
                            self.i += 1;
                        }
                        _ => break,
                    }
                }
                match u8::try_from(v) {
                    Ok(b) => out.push(b),
                    Err(_) => return self.err("decimal escape above 255"),
                }
            }
            b'u' => {
                self.expect(b'{')?;
                let start = self.i;
                while matches!(self.peek(), Some(b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F')) {
                    self.i += 1;
                }
                let digits = std::str::from_utf8(&self.s[start..self.i]).unwrap_or_default();
                let ch = u32::from_str_radix(digits, 16)
                    .ok()
                    .filter(|_| digits.len() <= 8)
                    .and_then(char::from_u32);
                self.expect(b'}')?;
                match ch {
                    Some(ch) => {
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                    }
                    None => return self.err("bad \\u escape"),
                }
            }
            _ => {
                self.i -= 1;
                return self.err("unknown escape");
            }
        }
        Ok(())
    }

    /// `(1/0)`, `(-1/0)` and `(0/0)`: how the serializer writes infinities and NaN.
    fn special_number(&mut self) -> Result<Lua, LuaError> {
        for (text, v) in [
            (&b"(1/0)"[..], f64::INFINITY),
            (b"(-1/0)", f64::NEG_INFINITY),
            (b"(0/0)", f64::NAN),
        ] {
            if self.s.get(self.i..self.i + text.len()) == Some(text) {
                self.i += text.len();
                return Ok(Lua::Num(v));
            }
        }
        self.err("expected a value")
    }

    fn number(&mut self) -> Result<Lua, LuaError> {
        let start = self.i;
        self.eat(b'-');
        let hex = self
            .s
            .get(self.i..self.i + 2)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"0x"));
        if hex {
            self.i += 2;
            let ds = self.i;
            while matches!(self.peek(), Some(b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F')) {
                self.i += 1;
            }
            let digits = std::str::from_utf8(&self.s[ds..self.i]).unwrap_or_default();
            let neg = self.s.get(start) == Some(&b'-');
            // Lua wraps hex integer literals modulo 2^64.
            return match u64::from_str_radix(digits, 16) {
                Ok(u) if !digits.is_empty() => {
                    let v = u as i64;
                    Ok(Lua::Int(if neg { v.wrapping_neg() } else { v }))
                }
                _ => self.err("bad hexadecimal number"),
            };
        }
        while matches!(self.peek(), Some(b'0'..=b'9' | b'.' | b'e' | b'E'))
            || (matches!(self.peek(), Some(b'+' | b'-'))
                && matches!(self.s.get(self.i.wrapping_sub(1)), Some(b'e' | b'E')))
        {
            self.i += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).unwrap_or_default();
        let is_float = text.contains(['.', 'e', 'E']);
        if !is_float && let Ok(i) = text.parse::<i64>() {
            return Ok(Lua::Int(i));
        }
        match text.parse::<f64>() {
            Ok(f) if text.bytes().any(|b| b.is_ascii_digit()) => Ok(Lua::Num(f)),
            _ => {
                self.i = start;
                self.err("bad number")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_what_prosody_writes() {
        let src = b"return {\n\t[\"iteration_count\"] = 10000;\n\t[\"salt\"] = \"92ad\\\"x\\0\\255\";\n\t[false] = {\n\t\t[\"pending\"] = {\n\t\t\t[\"carol@example.org\"] = true;\n\t\t};\n\t};\n\t[1] = -1.5e3;\n\t[2] = (1/0);\n\tname = [==[a]]b]==];\n\t\"pos\";\n};\n";
        let v = parse_return(src).unwrap();
        let t = v.as_table().unwrap();
        assert_eq!(t.get("iteration_count"), Some(&Lua::Int(10000)));
        assert_eq!(t.get("salt"), Some(&Lua::Str(b"92ad\"x\0\xff".to_vec())));
        assert_eq!(t.get("name").and_then(Lua::as_str), Some("a]]b"));
        let meta = t
            .fields
            .iter()
            .find(|(k, _)| *k == Lua::Bool(false))
            .unwrap();
        let pending = meta.1.as_table().unwrap().get("pending").unwrap();
        assert!(
            pending
                .as_table()
                .unwrap()
                .get("carol@example.org")
                .unwrap()
                .is_true()
        );
        assert_eq!(t.get("1"), None);
        // The explicit [1] comes first, then the positional "pos" also claims key 1 (Lua would
        // let the later one win; `array` returns the first).
        assert_eq!(t.array().len(), 2);
        let items =
            parse_items(b"item({[\"key\"] = \"a\"; [\"when\"] = 1.5;});\nitem({});\n").unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[0]
                .as_table()
                .unwrap()
                .get("when")
                .and_then(Lua::as_f64),
            Some(1.5)
        );
    }

    #[test]
    fn rejects_what_it_does_not_know_with_an_offset() {
        for (src, offset) in [
            (&b"return {"[..], 8),
            (b"return os.exit()", 7),
            (b"return \"a\\q\"", 10),
            (b"return \"\\300\"", 12),
            (b"return {} x", 10),
            (b"return {[nil] = 1}", 8),
            (b"print(1)", 0),
            (b"return \"abc", 11),
        ] {
            let e = parse_return(src).unwrap_err();
            assert_eq!(e.offset, offset, "{}: {e}", String::from_utf8_lossy(src));
        }
        assert!(parse_items(b"item({}) item(").is_err());
        let deep = format!("return {}{}", "{".repeat(500), "}".repeat(500));
        assert!(parse_return(deep.as_bytes()).is_err());
    }

    /// Serialises like Prosody's util.serialization (quoted keys, `;`, `\ddd` escapes).
    fn serialize(v: &Lua, out: &mut Vec<u8>) {
        match v {
            Lua::Nil => out.extend_from_slice(b"nil"),
            Lua::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Lua::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
            Lua::Num(f) if f.is_infinite() && *f > 0.0 => out.extend_from_slice(b"(1/0)"),
            Lua::Num(f) if f.is_infinite() => out.extend_from_slice(b"(-1/0)"),
            Lua::Num(f) => out.extend_from_slice(format!("{f:e}").as_bytes()),
            Lua::Str(s) => {
                out.push(b'"');
                for &c in s {
                    match c {
                        b'\n' => out.extend_from_slice(b"\\n"),
                        b'"' | b'\\' | b'\'' => out.extend_from_slice(&[b'\\', c]),
                        0..=31 | 127..=255 => out.extend_from_slice(format!("\\{c:03}").as_bytes()),
                        c => out.push(c),
                    }
                }
                out.push(b'"');
            }
            Lua::Table(t) => {
                out.extend_from_slice(b"{\n");
                for (k, v) in &t.fields {
                    out.extend_from_slice(b"\t[");
                    serialize(k, out);
                    out.extend_from_slice(b"] = ");
                    serialize(v, out);
                    out.extend_from_slice(b";\n");
                }
                out.push(b'}');
            }
        }
    }

    fn lua_value() -> impl Strategy<Value = Lua> {
        let leaf = prop_oneof![
            Just(Lua::Nil),
            any::<bool>().prop_map(Lua::Bool),
            any::<i64>().prop_map(Lua::Int),
            (-1e300f64..1e300).prop_map(Lua::Num),
            proptest::collection::vec(any::<u8>(), 0..24).prop_map(Lua::Str),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            proptest::collection::vec((inner.clone(), inner), 0..6).prop_map(|fields| {
                Lua::Table(Table {
                    fields: fields
                        .into_iter()
                        .filter(|(k, _)| !matches!(k, Lua::Nil))
                        .collect(),
                })
            })
        })
    }

    proptest! {
        #[test]
        fn serialised_values_parse_back(v in lua_value()) {
            let mut src = b"return ".to_vec();
            serialize(&v, &mut src);
            src.extend_from_slice(b";\n");
            prop_assert_eq!(parse_return(&src).unwrap(), v);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_return(&bytes);
            let _ = parse_items(&bytes);
        }

        #[test]
        fn mutated_files_never_panic(v in lua_value(), at in any::<usize>(), b in any::<u8>()) {
            let mut src = b"return ".to_vec();
            serialize(&v, &mut src);
            let n = src.len();
            src[at % n] = b;
            let _ = parse_return(&src);
        }
    }
}
