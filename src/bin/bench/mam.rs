//! The `mam` scenario of `oxpecker-bench`: one account's archive of `--mam-items` messages
//! (written offline by `--bulk-create`, alternating between two conversation partners), paged
//! through end to end over XEP-0313 with RSM pages of `--mam-page` items: forward with
//! `<after/>`, backward with `<before/>`, and forward with a `with` filter.
//!
//! For each mode it reports the pages, the mean wall time of the first and of the last ten
//! pages (equal when a page costs O(page), not O(archive)), and the server CPU per page.

use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use oxpecker::storage::Store;
use oxpecker::xmpp::element::escape;
use oxpecker::xmpp::ns;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::{ProcSample, Session, next_stanza, proc_sample};

/// The archived account (`PREFIX0`) and its two partners (`PREFIX1`, `PREFIX2`).
pub fn partners(prefix: &str, domain: &str) -> [String; 2] {
    [format!("{prefix}1@{domain}"), format!("{prefix}2@{domain}")]
}

/// Writes `items` messages into the MAM archive of `PREFIX0` (offline, server stopped).
pub async fn preload(store: &Store, domain: &str, prefix: &str, items: u64) -> Result<()> {
    let archive = store.archive(domain, oxpecker::modules::mam::STORE);
    let owner = format!("{prefix}0");
    let partners = partners(prefix, domain);
    let existing = archive.count(&owner).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let now = i64::try_from(now)?;
    for i in (existing as u64)..items {
        let with = &partners[(i % 2) as usize];
        let xml = format!(
            "<message xmlns='jabber:client' from='{with}/r' to='{owner}@{domain}' type='chat' id='a{i}'><body>archived message {i}</body></message>"
        );
        let value = json!({ "xml": xml, "dir": "in", "with": with });
        archive.append_lazy(&owner, None, now, with, value).await?;
    }
    store.flush().await?;
    println!("bulk-create: the archive of {owner}@{domain} holds {items} messages");
    Ok(())
}

/// One paging mode's figures.
pub struct PagingFigures {
    /// What was paged (`after`, `before`, `with`).
    pub mode: &'static str,
    /// Pages fetched.
    pub pages: usize,
    /// Messages received.
    pub items: u64,
    /// The total the server reported (RSM `<count/>`) on the first page.
    pub count: Option<u64>,
    /// Mean wall time of the first ten pages, ms.
    pub first_ms: f64,
    /// Mean wall time of the last ten pages, ms.
    pub last_ms: f64,
    /// Server CPU per page, µs.
    pub server_us_per_page: Option<f64>,
}

/// What one page brought.
struct PageResult {
    items: u64,
    first: Option<String>,
    last: Option<String>,
    complete: bool,
    count: Option<u64>,
}

async fn page(s: &mut Session, n: usize, with: Option<&str>, rsm: &str) -> Result<PageResult> {
    let with = with
        .map(|w| {
            format!(
                "<field var='with'><value>{}</value></field>",
                escape(w, false)
            )
        })
        .unwrap_or_default();
    let id = format!("mam{n}");
    let iq = format!(
        "<iq type='set' id='{id}'><query xmlns='{}' queryid='{id}'><x xmlns='{}' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>{}</value></field>{with}</x>\
         <set xmlns='{}'>{rsm}</set></query></iq>",
        ns::MAM,
        ns::DATA,
        ns::MAM,
        ns::RSM
    );
    s.writer.write_all(iq.as_bytes()).await?;
    let mut items = 0;
    loop {
        let el = next_stanza(&mut s.parser).await?;
        if el.name() == "message" && el.get_child("result", ns::MAM).is_some() {
            items += 1;
            continue;
        }
        if el.name() != "iq" || el.get_attr("id") != Some(id.as_str()) {
            continue;
        }
        if el.get_attr("type") != Some("result") {
            bail!("MAM query failed: {}", el.to_xml(ns::CLIENT));
        }
        let fin = el.get_child("fin", ns::MAM).context("no <fin/>")?;
        let set = fin.get_child("set", ns::RSM);
        let text = |name: &str| {
            set.and_then(|s| s.get_child(name, ns::RSM))
                .map(|e| e.text_content())
        };
        return Ok(PageResult {
            items,
            first: text("first"),
            last: text("last"),
            complete: fin.get_attr("complete") == Some("true"),
            count: text("count").and_then(|c| c.parse().ok()),
        });
    }
}

/// Pages through the whole archive in one mode.
async fn mode(
    s: &mut Session,
    name: &'static str,
    with: Option<&str>,
    max: usize,
    sample: &dyn Fn() -> Result<Option<ProcSample>>,
) -> Result<PagingFigures> {
    let before = sample()?;
    let mut times = Vec::new();
    let (mut items, mut count, mut cursor) = (0, None, None::<String>);
    loop {
        let rsm = match (name, &cursor) {
            ("before", None) => format!("<max>{max}</max><before/>"),
            ("before", Some(c)) => format!("<max>{max}</max><before>{}</before>", escape(c, false)),
            (_, None) => format!("<max>{max}</max>"),
            (_, Some(c)) => format!("<max>{max}</max><after>{}</after>", escape(c, false)),
        };
        let t0 = Instant::now();
        let p = page(s, times.len(), with, &rsm).await?;
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
        items += p.items;
        if count.is_none() {
            count = p.count;
        }
        cursor = if name == "before" { p.first } else { p.last };
        if p.complete || p.items == 0 || cursor.is_none() {
            break;
        }
    }
    let after = sample()?;
    let mean = |t: &[f64]| t.iter().sum::<f64>() / t.len().max(1) as f64;
    let k = times.len().min(10);
    Ok(PagingFigures {
        mode: name,
        pages: times.len(),
        items,
        count,
        first_ms: mean(&times[..k]),
        last_ms: mean(&times[times.len() - k..]),
        server_us_per_page: match (before, after) {
            (Some(a), Some(b)) if !times.is_empty() => {
                Some(1e6 * (b.cpu_secs - a.cpu_secs) / times.len() as f64)
            }
            _ => None,
        },
    })
}

/// Runs the three paging modes on a session of `PREFIX0`.
pub async fn run(
    s: &mut Session,
    partner: &str,
    max: usize,
    pid: Option<u32>,
    tck: u64,
) -> Result<Vec<PagingFigures>> {
    let sample = || -> Result<Option<ProcSample>> {
        pid.map(|p| proc_sample(&p.to_string(), tck)).transpose()
    };
    let mut out = Vec::new();
    for (name, with) in [("after", None), ("before", None), ("with", Some(partner))] {
        let f = mode(s, name, with, max, &sample)
            .await
            .map_err(|e| anyhow!("MAM paging ({name}): {e:#}"))?;
        out.push(f);
    }
    Ok(out)
}
