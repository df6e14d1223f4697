//! `oxpecker shell`: the interactive console on a running server, over the control socket.
//!
//! Line editing, history across runs (`$OXPECKER_SHELL_HISTORY`, default
//! `~/.oxpecker_shell_history`) and tab completion of commands, hosts and online JIDs come from
//! rustyline. The same lines run one-shot (`oxpecker shell c2s show`) and from piped stdin; a
//! failed command makes the exit status non-zero. Results print as aligned tables, or as JSON
//! with `--json`.

use std::borrow::Cow;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};
use serde_json::Value;

use super::console::{GROUPS, Output, ROOM_METHODS, group};
use super::line::{Line, parse, words_command};
use super::{Request, Response, socket_path};

/// How the shell prints.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Print results as JSON instead of tables.
    pub json: bool,
}

/// One connection to the server's control socket.
struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Conn {
    fn open(data_dir: &Path) -> std::io::Result<Conn> {
        let s = UnixStream::connect(socket_path(data_dir))?;
        Ok(Conn {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
        })
    }

    fn call(&mut self, req: &Request) -> Result<Value, String> {
        let mut body = serde_json::to_string(req).map_err(|e| e.to_string())?;
        body.push('\n');
        self.writer
            .write_all(body.as_bytes())
            .map_err(|e| format!("lost the server: {e}"))?;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => return Err("the server closed the connection".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("lost the server: {e}")),
        }
        let resp: Response = serde_json::from_str(line.trim()).map_err(|e| e.to_string())?;
        if resp.ok {
            Ok(resp.result.unwrap_or(Value::Null))
        } else {
            Err(resp.error.unwrap_or_else(|| "failed".into()))
        }
    }
}

/// Runs the shell; returns the process exit status.
pub fn run(data_dir: &Path, words: Vec<String>, opts: Options) -> i32 {
    let mut conn = match Conn::open(data_dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "error: no server is running on {} ({e}); start it with `oxpecker serve`",
                data_dir.display()
            );
            return 2;
        }
    };
    if !words.is_empty() {
        return match one_shot(words).and_then(|l| run_one(&mut conn, l, opts)) {
            Ok(_) => 0,
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        };
    }
    if !std::io::stdin().is_terminal() {
        let mut status = 0;
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match parse(&line).and_then(|l| run_one(&mut conn, l, opts)) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    eprintln!("error: {e}");
                    status = 1;
                }
            }
        }
        return status;
    }
    interactive(data_dir, &mut conn, opts)
}

/// The words of a one-shot call: `c2s show HOST` as given, or a Prosody-style line.
fn one_shot(words: Vec<String>) -> Result<Line, String> {
    if words.len() >= 2 && !words[0].contains([':', '(']) && group(&words[0]).is_some() {
        let mut it = words.into_iter();
        let g = it.next().unwrap_or_default();
        let c = it.next().unwrap_or_default();
        return Ok(words_command(g, c, it.collect()));
    }
    parse(&words.join(" "))
}

/// Runs one parsed line; `Ok(false)` means the user asked to leave.
fn run_one(conn: &mut Conn, line: Line, opts: Options) -> Result<bool, String> {
    let mut out = std::io::stdout().lock();
    let res = match line {
        Line::Empty => String::new(),
        Line::Quit => {
            let _ = writeln!(out, "See you!");
            return Ok(false);
        }
        Line::Help(topic) => help(topic.as_deref())?,
        Line::Inspect(what, arg) => {
            let v = conn.call(&Request::Inspect { what, arg })?;
            serde_json::to_string_pretty(&v).unwrap_or_default()
        }
        Line::Command(g, c, args) => {
            let v = conn.call(&Request::Console {
                group: g,
                command: c,
                args,
            })?;
            let o: Output = serde_json::from_value(v).map_err(|e| e.to_string())?;
            if opts.json {
                serde_json::to_string_pretty(&o.data).unwrap_or_default()
            } else {
                render(&o)
            }
        }
    };
    if !res.is_empty() {
        let _ = writeln!(out, "{res}");
    }
    Ok(true)
}

/// The help text: every group, one group's commands, or one command.
pub fn help(topic: Option<&str>) -> Result<String, String> {
    let mut s = String::new();
    match topic {
        None => {
            s.push_str("Commands are written group:command(args) or group command args.\n\n");
            for g in GROUPS {
                s.push_str(&format!("  {:<8} {}\n", g.name, g.help));
            }
            s.push_str("\n  help GROUP      the commands of a group (help c2s)\n");
            s.push_str("  > WHAT [ARG]    read-only internals as JSON: hosts, sessions [jid], modules HOST, config, server\n");
            s.push_str("  bye, quit       leave the shell");
        }
        Some(t) => {
            let (gname, cname) = match t.split_once([':', ' ']) {
                Some((g, c)) => (g, Some(c)),
                None => (t, None),
            };
            let g = group(gname).ok_or_else(|| format!("no help on {t}"))?;
            let cmds: Vec<_> = g
                .commands
                .iter()
                .filter(|c| cname.is_none_or(|n| n == c.name))
                .collect();
            if cmds.is_empty() {
                return Err(format!("no help on {t}"));
            }
            if cname.is_none() {
                s.push_str(&format!("{}: {}\n", g.name, g.help));
            }
            let sigs: Vec<String> = cmds
                .iter()
                .map(|c| format!("{}:{}({})", g.name, c.name, c.args))
                .collect();
            let w = sigs.iter().map(|x| x.len()).max().unwrap_or(0);
            let lines: Vec<String> = cmds
                .iter()
                .zip(&sigs)
                .map(|(c, sig)| format!("  {sig:<w$}  {}", c.help))
                .collect();
            s.push_str(&lines.join("\n"));
        }
    }
    Ok(s)
}

/// A table with aligned columns (and the output's text line above it, if any).
pub fn render(o: &Output) -> String {
    let mut s = String::new();
    if !o.columns.is_empty() {
        let mut widths: Vec<usize> = o.columns.iter().map(|c| c.chars().count()).collect();
        for r in &o.rows {
            for (i, cell) in r.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let fmt_row = |cells: &[String]| -> String {
            let last = cells.len().saturating_sub(1);
            cells
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if i == last {
                        c.clone()
                    } else {
                        format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0))
                    }
                })
                .collect::<Vec<_>>()
                .join("  ")
        };
        s.push_str(&fmt_row(&o.columns));
        for r in &o.rows {
            s.push('\n');
            s.push_str(&fmt_row(r));
        }
        if o.text.is_some() {
            s.push('\n');
        }
    }
    if let Some(t) = &o.text {
        s.push_str(t);
    }
    s
}

/// Where the history is kept across runs.
fn history_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("OXPECKER_SHELL_HISTORY") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".oxpecker_shell_history"))
}

fn interactive(data_dir: &Path, conn: &mut Conn, opts: Options) -> i32 {
    let mut rl = match rustyline::Editor::<ShellHelper, rustyline::history::DefaultHistory>::new() {
        Ok(rl) => rl,
        Err(e) => {
            eprintln!("error: cannot open the terminal: {e}");
            return 2;
        }
    };
    rl.set_helper(Some(ShellHelper {
        data_dir: data_dir.to_path_buf(),
    }));
    let history = history_path();
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    println!(
        "oxpecker shell on {} — help for commands, bye to leave",
        data_dir.display()
    );
    let mut status = 0;
    loop {
        match rl.readline("oxpecker> ") {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = rl.add_history_entry(line.as_str());
                }
                match parse(&line).and_then(|l| run_one(conn, l, opts)) {
                    Ok(true) => status = 0,
                    Ok(false) => break,
                    Err(e) => {
                        eprintln!("error: {e}");
                        status = 1;
                    }
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(_) => break,
        }
    }
    if let Some(h) = &history {
        let _ = rl.save_history(h);
    }
    status
}

/// Tab completion: groups and commands, room methods, then hosts and online JIDs for arguments.
struct ShellHelper {
    data_dir: PathBuf,
}

impl ShellHelper {
    /// Hosts and online JIDs, asked of the server at completion time.
    fn arguments(&self) -> Vec<String> {
        let Ok(mut c) = Conn::open(&self.data_dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Ok(Value::Array(hosts)) = c.call(&Request::Inspect {
            what: "hosts".into(),
            arg: None,
        }) {
            out.extend(
                hosts
                    .iter()
                    .filter_map(|h| h["host"].as_str().map(String::from)),
            );
        }
        if let Ok(Value::Array(jids)) = c.call(&Request::Inspect {
            what: "jids".into(),
            arg: None,
        }) {
            out.extend(jids.iter().filter_map(|j| j.as_str().map(String::from)));
        }
        out
    }
}

/// The candidates for the word being typed, given the words before it.
fn candidates(before: &[&str], word: &str, args: impl FnOnce() -> Vec<String>) -> Vec<String> {
    match before {
        [] => match word.split_once(':') {
            Some((g, _)) => group(g)
                .map(|g| {
                    g.commands
                        .iter()
                        .map(|c| format!("{}:{}(", g.name, c.name))
                        .collect()
                })
                .unwrap_or_default(),
            None => {
                let mut c: Vec<String> = GROUPS.iter().map(|g| g.name.to_string()).collect();
                c.extend(["help", "bye", "quit"].map(String::from));
                c
            }
        },
        ["help"] => GROUPS.iter().map(|g| g.name.to_string()).collect(),
        ["muc", "room", _] => ROOM_METHODS.iter().map(|m| m.to_string()).collect(),
        [g] if group(g).is_some() => group(g)
            .map(|g| g.commands.iter().map(|c| c.name.to_string()).collect())
            .unwrap_or_default(),
        _ => args(),
    }
    .into_iter()
    .filter(|c| c.starts_with(word))
    .collect()
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let upto = line.get(..pos).unwrap_or(line);
        // Inside a call's parentheses the word starts after `(`, `,` or a quote.
        let in_call = upto.contains('(');
        let start = upto
            .rfind(|c: char| c.is_whitespace() || (in_call && matches!(c, '(' | ',' | '"' | '\'')))
            .map(|i| i + 1)
            .unwrap_or(0);
        let word = &upto[start..];
        let before: Vec<&str> = if in_call {
            vec!["(call)"]
        } else {
            upto[..start].split_whitespace().collect()
        };
        let list = candidates(&before, word, || self.arguments());
        Ok((
            start,
            list.into_iter()
                .map(|c| Pair {
                    display: c.clone(),
                    replacement: c,
                })
                .collect(),
        ))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        _default: bool,
    ) -> Cow<'b, str> {
        Cow::Borrowed(prompt)
    }
}

impl Validator for ShellHelper {}

impl Helper for ShellHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_aligned() {
        let o = Output {
            text: Some("2 items".into()),
            columns: vec!["JID".into(), "IP".into(), "SM".into()],
            rows: vec![
                vec![
                    "alice@localhost/phone".into(),
                    "127.0.0.1:5".into(),
                    "off".into(),
                ],
                vec!["bob@x/y".into(), "::1".into(), "resumable".into()],
            ],
            data: Value::Null,
        };
        let t = render(&o);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "JID                    IP           SM");
        assert_eq!(lines[1], "alice@localhost/phone  127.0.0.1:5  off");
        assert_eq!(lines[2], "bob@x/y                ::1          resumable");
        assert_eq!(lines[3], "2 items");
    }

    #[test]
    fn completion_offers_groups_commands_and_arguments() {
        let none = Vec::new;
        assert_eq!(candidates(&[], "c2", none), ["c2s"]);
        assert_eq!(
            candidates(&[], "c2s:sh", none),
            ["c2s:show(", "c2s:show_secure(", "c2s:show_insecure("]
        );
        assert_eq!(candidates(&["host"], "de", none), ["deactivate"]);
        assert_eq!(candidates(&["help"], "us", none), ["user"]);
        assert_eq!(
            candidates(&["muc", "room", "r@conference.localhost"], "get_", none),
            ["get_affiliation", "get_role"]
        );
        assert_eq!(
            candidates(&["c2s", "close"], "al", || vec![
                "alice@localhost".into(),
                "bob@localhost".into()
            ]),
            ["alice@localhost"]
        );
    }

    #[test]
    fn help_lists_groups_and_commands() {
        let all = help(None).unwrap();
        for g in GROUPS {
            assert!(all.contains(g.name), "{}", g.name);
        }
        let c2s = help(Some("c2s")).unwrap();
        assert!(c2s.contains("c2s:close(jid, text?, condition?)"), "{c2s}");
        assert!(help(Some("c2s:show")).unwrap().contains("c2s:show(host?)"));
        assert!(help(Some("nope")).is_err());
    }

    #[test]
    fn one_shot_words_keep_their_arguments() {
        let w = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            one_shot(w(&["server", "shutdown", "back soon"])),
            Ok(Line::Command(
                "server".into(),
                "shutdown".into(),
                w(&["back soon"])
            ))
        );
        assert_eq!(
            one_shot(w(&["c2s:show(\"localhost\")"])),
            Ok(Line::Command(
                "c2s".into(),
                "show".into(),
                w(&["localhost"])
            ))
        );
        assert_eq!(
            one_shot(w(&[
                "muc",
                "room",
                "r@conference.localhost",
                "get_role",
                "Al"
            ])),
            Ok(Line::Command(
                "muc".into(),
                "room:get_role".into(),
                w(&["r@conference.localhost", "Al"])
            ))
        );
        assert_eq!(one_shot(w(&["help"])), Ok(Line::Help(None)));
        assert!(one_shot(w(&["c2s:show(\"x"])).is_err());
    }
}
