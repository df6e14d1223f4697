//! Property test of the archive query engine on the memory backend: paging through a random
//! archive (random size, partners and times, optionally filtered by `with` and started after or
//! before a random item, random page sizes, both directions) returns every matching item once,
//! in order, and the counted total is the number of matches.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use oxpecker::storage::{ArchiveQuery, Store};
use proptest::prelude::*;
use serde_json::json;

const PARTNERS: &[&str] = &["a@x", "b@x", "c@y"];

/// One archive and one way of paging through it.
#[derive(Debug, Clone)]
struct Case {
    /// Per item: partner index, time.
    items: Vec<(usize, i64)>,
    /// Only this partner.
    with: Option<usize>,
    /// Start after (forward) or before (reverse) this item.
    pivot: Option<usize>,
    page: usize,
    reverse: bool,
    /// Some items get caller-supplied ids (the id index path), the rest generated ones.
    supplied_ids: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec((0..PARTNERS.len(), 0i64..5), 0..60),
        proptest::option::of(0..PARTNERS.len()),
        proptest::option::of(0usize..60),
        1usize..12,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(items, with, pivot, page, reverse, supplied_ids)| {
            let pivot = pivot.filter(|p| *p < items.len());
            Case {
                items,
                with,
                pivot,
                page,
                reverse,
                supplied_ids,
            }
        })
}

fn check(c: Case) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = Store::memory();
        let archive = store.archive("h", "mam");
        let mut ids = Vec::new();
        for (i, (partner, when)) in c.items.iter().enumerate() {
            let supplied = (c.supplied_ids && i % 3 == 0).then(|| format!("id-{i}"));
            let id = archive
                .append("u", supplied, *when, PARTNERS[*partner], json!({ "n": i }))
                .await
                .unwrap();
            ids.push(id);
        }
        let matching = |i: usize| c.with.is_none_or(|w| c.items[i].0 == w);
        let mut expected: Vec<usize> = match (c.pivot, c.reverse) {
            (None, _) => (0..c.items.len()).collect(),
            (Some(p), false) => (p + 1..c.items.len()).collect(),
            (Some(p), true) => (0..p).collect(),
        };
        expected.retain(|i| matching(*i));
        if c.reverse {
            expected.reverse();
        }
        let expected: Vec<&str> = expected.iter().map(|i| ids[*i].as_str()).collect();
        let all_matching = (0..c.items.len()).filter(|i| matching(*i)).count();
        let mut q = ArchiveQuery {
            with: c.with.map(|w| PARTNERS[w].to_string()),
            limit: Some(c.page),
            reverse: c.reverse,
            total: true,
            ..ArchiveQuery::default()
        };
        let pivot = c.pivot.map(|p| ids[p].clone());
        if c.reverse {
            q.before = pivot;
        } else {
            q.after = pivot;
        }
        let mut seen: Vec<String> = Vec::new();
        for _ in 0..=c.items.len() + 1 {
            let page = archive.find("u", &q).await.unwrap();
            prop_assert_eq!(page.total, Some(all_matching));
            prop_assert!(page.items.len() <= c.page);
            for item in &page.items {
                prop_assert!(c.with.is_none_or(|w| item.with == PARTNERS[w]));
            }
            seen.extend(page.items.iter().map(|i| i.id.clone()));
            let Some(last) = page.items.last() else {
                prop_assert!(page.complete, "an empty page ends the paging");
                break;
            };
            if page.complete {
                break;
            }
            if c.reverse {
                q.before = Some(last.id.clone());
            } else {
                q.after = Some(last.id.clone());
            }
        }
        prop_assert_eq!(seen, expected);
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn paging_returns_every_matching_item_once_in_order(c in case()) {
        check(c)?;
    }
}
