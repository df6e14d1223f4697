//! How a console line reads, in either spelling: Prosody's `c2s:show("example.org")` (chains
//! like `muc:room("r@muc"):get_role("nick")` too) or words, `c2s show example.org`.

/// A parsed console line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// Nothing to do (blank or a comment).
    Empty,
    /// `bye` or `quit`.
    Quit,
    /// `help` or `help GROUP` / `help GROUP:COMMAND`.
    Help(Option<String>),
    /// `> what arg?`: read-only internals.
    Inspect(String, Option<String>),
    /// A command: group, command (`room:get_role` for a chain) and arguments.
    Command(String, String, Vec<String>),
}

/// Parses one line; `Err` says what is wrong with it.
pub fn parse(line: &str) -> Result<Line, String> {
    let line = line.trim().trim_end_matches(';').trim();
    if line.is_empty() || line.starts_with("--") || line.starts_with('#') {
        return Ok(Line::Empty);
    }
    if let Some(rest) = line.strip_prefix('>') {
        let words = split_words(rest)?;
        let mut it = words.into_iter();
        let what = it
            .next()
            .ok_or("> needs something to show (hosts, sessions, modules HOST)")?;
        return Ok(Line::Inspect(what, it.next()));
    }
    let head_end = line
        .find(|c: char| c.is_whitespace() || c == ':' || c == '(')
        .unwrap_or(line.len());
    let head = &line[..head_end];
    match head {
        "bye" | "quit" | "exit" if line[head_end..].trim().is_empty() => return Ok(Line::Quit),
        "help" => {
            let topic = split_words(&line[head_end..])?.into_iter().next();
            return Ok(Line::Help(topic));
        }
        _ => {}
    }
    if line[head_end..].starts_with(':') {
        return parse_calls(line);
    }
    let words = split_words(line)?;
    let mut it = words.into_iter();
    let group = it.next().unwrap_or_default();
    let command = it
        .next()
        .ok_or_else(|| format!("{group}: which command? (try help {group})"))?;
    Ok(words_command(group, command, it.collect()))
}

/// A command written in words: `group command args…`, where `muc room R METHOD args…` is the
/// chain `muc:room(R):METHOD(args…)`.
pub fn words_command(group: String, command: String, mut args: Vec<String>) -> Line {
    if group == "muc" && command == "room" && args.len() >= 2 {
        let method = args.remove(1);
        return Line::Command(group, format!("room:{method}"), args);
    }
    Line::Command(group, command, args)
}

/// `group:cmd(args)[:cmd(args)]…`
fn parse_calls(line: &str) -> Result<Line, String> {
    let (group, mut rest) = line.split_once(':').ok_or("expected group:command")?;
    let mut names = Vec::new();
    let mut args = Vec::new();
    loop {
        let end = rest.find(['(', ':']).unwrap_or(rest.len());
        let name = rest[..end].trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad command name {name:?}"));
        }
        names.push(name.to_string());
        rest = &rest[end..];
        if let Some(inner) = rest.strip_prefix('(') {
            let (a, after) = lua_args(inner)?;
            args.extend(a);
            rest = after.trim_start();
        }
        match rest.strip_prefix(':') {
            Some(r) => rest = r,
            None if rest.trim().is_empty() => break,
            None => return Err(format!("unexpected {:?}", rest.trim())),
        }
    }
    Ok(Line::Command(
        group.trim().to_string(),
        names.join(":"),
        args,
    ))
}

/// Lua-ish arguments up to the closing `)`: strings in `"` or `'`, `true`/`false`/numbers/`nil`.
fn lua_args(s: &str) -> Result<(Vec<String>, &str), String> {
    let mut args = Vec::new();
    let mut chars = s.char_indices().peekable();
    loop {
        while chars
            .peek()
            .is_some_and(|(_, c)| c.is_whitespace() || *c == ',')
        {
            chars.next();
        }
        let Some(&(i, c)) = chars.peek() else {
            return Err("missing )".into());
        };
        if c == ')' {
            return Ok((args, &s[i + 1..]));
        }
        if c == '"' || c == '\'' {
            chars.next();
            let mut v = String::new();
            loop {
                match chars.next() {
                    None => return Err("unterminated string".into()),
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => v.push('\n'),
                        Some((_, x)) => v.push(x),
                        None => return Err("unterminated string".into()),
                    },
                    Some((_, q)) if q == c => break,
                    Some((_, x)) => v.push(x),
                }
            }
            args.push(v);
        } else {
            let mut v = String::new();
            while let Some(&(_, x)) = chars.peek() {
                if x == ',' || x == ')' || x.is_whitespace() {
                    break;
                }
                v.push(x);
                chars.next();
            }
            if v == "nil" {
                v.clear();
            }
            args.push(v);
        }
    }
}

/// Splits on whitespace, honouring `"…"` and `'…'` quoting.
pub fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in s.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                any = true;
            }
            None if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            None => cur.push(c),
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(g: &str, c: &str, a: &[&str]) -> Line {
        Line::Command(
            g.into(),
            c.into(),
            a.iter().map(|s| s.to_string()).collect(),
        )
    }

    #[test]
    fn both_spellings_read_the_same() {
        assert_eq!(
            parse("c2s:show(\"example.org\")"),
            Ok(cmd("c2s", "show", &["example.org"]))
        );
        assert_eq!(
            parse("c2s show example.org"),
            Ok(cmd("c2s", "show", &["example.org"]))
        );
        assert_eq!(parse("c2s:show()"), Ok(cmd("c2s", "show", &[])));
        assert_eq!(parse("c2s:show"), Ok(cmd("c2s", "show", &[])));
        assert_eq!(
            parse("module:load('pep', \"example.org\");"),
            Ok(cmd("module", "load", &["pep", "example.org"]))
        );
        assert_eq!(
            parse(
                "muc:room(\"room@conference.localhost\"):set_affiliation(true, \"user@localhost\", \"member\")"
            ),
            Ok(cmd(
                "muc",
                "room:set_affiliation",
                &[
                    "room@conference.localhost",
                    "true",
                    "user@localhost",
                    "member"
                ]
            ))
        );
        assert_eq!(
            parse("muc room room@conference.localhost set_affiliation true user@localhost member"),
            parse(
                "muc:room(\"room@conference.localhost\"):set_affiliation(true, \"user@localhost\", \"member\")"
            )
        );
        assert_eq!(
            parse("muc room room@conference.localhost"),
            Ok(cmd("muc", "room", &["room@conference.localhost"]))
        );
        assert_eq!(
            parse("server shutdown 'back soon'"),
            Ok(cmd("server", "shutdown", &["back soon"]))
        );
        assert_eq!(
            parse("user:list(\"localhost\", nil)"),
            Ok(cmd("user", "list", &["localhost", ""]))
        );
        assert_eq!(
            parse("user clients alice@localhost"),
            Ok(cmd("user", "clients", &["alice@localhost"]))
        );
        assert_eq!(
            parse("user:revoke_client(\"alice@localhost\", \"client/abc\")"),
            Ok(cmd(
                "user",
                "revoke_client",
                &["alice@localhost", "client/abc"]
            ))
        );
    }

    #[test]
    fn the_console_words() {
        assert_eq!(parse("  "), Ok(Line::Empty));
        assert_eq!(parse("bye"), Ok(Line::Quit));
        assert_eq!(parse("quit"), Ok(Line::Quit));
        assert_eq!(parse("help"), Ok(Line::Help(None)));
        assert_eq!(parse("help c2s"), Ok(Line::Help(Some("c2s".into()))));
        assert_eq!(
            parse("> sessions alice@localhost"),
            Ok(Line::Inspect(
                "sessions".into(),
                Some("alice@localhost".into())
            ))
        );
    }

    #[test]
    fn bad_lines_say_why() {
        assert!(parse("c2s:show(\"x").is_err());
        assert!(parse("c2s:show(").is_err());
        assert!(parse("c2s").is_err());
        assert!(parse("c2s:sh ow()").is_err());
        assert!(parse(">").is_err());
        assert!(parse("user create 'a").is_err());
    }
}
