//! Which namespaces an agent takes from the inventory (its `namespaces`), and whether the
//! indexer's scope (`rollcache index --namespaces`) covers them.
//!
//! A namespace the indexer does not watch is unknown, never "without history": the catalog not
//! listing it says nothing, so an agent that wants it keeps what it held and unpins nothing.
//! That includes an agent that wants every namespace reading an indexer restricted to some: the
//! history of the others is unknown to it, and the images it holds from them would otherwise be
//! unpinned.

use rollcache_core::shard::Catalog;

/// The namespaces an agent takes from the inventory, sorted; empty: every one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Wanted(Vec<String>);

impl Wanted {
    pub fn new(namespaces: &[String]) -> Self {
        let mut v: Vec<String> = namespaces
            .iter()
            .filter(|n| !n.is_empty())
            .cloned()
            .collect();
        v.sort_unstable();
        v.dedup();
        Self(v)
    }

    /// Whether the agent takes namespace `ns`'s facts (others' shards are not even decoded).
    pub fn wants(&self, ns: &str) -> bool {
        self.0.is_empty() || self.0.binary_search_by(|n| n.as_str().cmp(ns)).is_ok()
    }

    /// Why `catalog`'s scope leaves namespaces this agent wants unknown, if it does.
    pub fn problem(&self, catalog: &Catalog) -> Option<String> {
        let scope = catalog.scope.as_ref()?;
        let indexes = match scope.as_slice() {
            [] => "no namespace".to_owned(),
            s => s.join(", "),
        };
        if self.0.is_empty() {
            return Some(format!(
                "this agent takes every namespace, but the indexer indexes only {indexes} (`rollcache index --namespaces`): the history of any other namespace is unknown, so nothing is unpinned; set this agent's `namespaces` to namespaces the indexer indexes, or run it without `--namespaces`"
            ));
        }
        let missing: Vec<&str> = self
            .0
            .iter()
            .filter(|ns| !catalog.covers(ns))
            .map(String::as_str)
            .collect();
        let (what, them) = match missing.as_slice() {
            [] => return None,
            [one] => (format!("namespace {one}"), "it"),
            many => (format!("namespaces {}", many.join(", ")), "them"),
        };
        Some(format!(
            "the indexer does not index {what} (it indexes {indexes}): nothing is unpinned; add {them} to `rollcache index --namespaces` or remove {them} from this agent's `namespaces`"
        ))
    }
}
