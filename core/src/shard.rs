//! The fleet inventory's shards: the `RollcacheInventory` spec, which shard of its source
//! namespace an object's facts go to, and how many shards a namespace needs.
//!
//! Shards carry decoded facts (names of pull secrets and service accounts, never credentials),
//! grouped by the namespace of the object they came from. An object's shard depends only on its
//! key and the namespace's shard count, so a change to one object rewrites one shard unless the
//! count changes. Compression and JSON live with the adapters (`rollcache::fleet::codec`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{ObjectRef, RevisionFact};

pub const GROUP: &str = "rollcache.io";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "RollcacheInventory";
pub const PLURAL: &str = "rollcacheinventories";

/// The only encoding written and read: the facts as a JSON array, gzip, base64.
pub const ENCODING: &str = "gzip+base64+json";

/// Compressed bytes one shard's data may take before the namespace gets twice as many shards:
/// far below the API server's ~1.5 MiB object limit, so that a shard never nears it.
pub const SHARD_BUDGET_BYTES: usize = 256 * 1024;

/// The most shards one namespace is split into. An object's facts are bounded by the decoders'
/// caps, so a namespace needing more would hold tens of thousands of revisions per shard budget.
pub const MAX_SHARDS: u32 = 1024;

/// Revision facts one shard may hold. Facts compress so well that the byte budget alone would
/// let tens of thousands into one shard; a reader builds at most this many (a few MiB).
pub const MAX_FACTS: u64 = 10_000;

/// `spec` of a `RollcacheInventory`, written by the indexer, read by agents in fleet mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventorySpec {
    pub source_namespace: String,
    /// This shard's number, `0..shards`.
    pub shard: u32,
    /// How many shards the source namespace is split into (a power of two).
    pub shards: u32,
    /// Source objects whose facts this shard holds.
    pub objects: u64,
    /// Revision facts this shard holds.
    pub revisions: u64,
    pub encoding: String,
    pub data: String,
    /// `sha256:<hex>` of the uncompressed JSON: unchanged shards are skipped, corrupt ones refused.
    pub digest: String,
    /// Source objects of this shard that never decoded cleanly (as `Kind namespace/name`): what
    /// they hold is unknown, so a reader's view of the namespace is incomplete while any is here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unresolved: Vec<String>,
}

/// The object name of the catalog: no shard's name (those hold a dot) can take it.
pub const CATALOG_NAME: &str = "catalog";

/// The `catalog` field of the `RollcacheInventory` named [`CATALOG_NAME`]: every source namespace
/// published, with its shard count and each shard's digest, and when the indexer last confirmed
/// it. Shards alone cannot tell "all of a namespace's shards deleted" from "namespace gone", nor
/// "indexer down" from "nothing changed"; the catalog can.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Catalog {
    /// RFC 3339 time of the leader's last pass, refreshed at least every `resync_seconds`.
    pub observed_at: String,
    /// The indexer's resync period: a catalog older than a few of them is stale.
    pub resync_seconds: u64,
    /// The indexer's own view was complete (every source listed and answering, every object
    /// decoded): only then may a reader take a namespace's absence or a fact's as final.
    #[serde(default)]
    pub complete: bool,
    pub namespaces: BTreeMap<String, CatalogEntry>,
    /// The source namespaces the indexer watches (`rollcache index --namespaces`), sorted; None
    /// (or absent, as an older indexer writes it): every namespace. A namespace outside it is
    /// not "without history" but unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Vec<String>>,
}

impl Catalog {
    /// Whether the indexer watches namespace `ns`, so that the catalog not listing it means its
    /// history is gone.
    pub fn covers(&self, ns: &str) -> bool {
        self.scope
            .as_ref()
            .is_none_or(|scope| scope.iter().any(|s| s == ns))
    }
}

impl Catalog {
    /// The identity of what the catalog says, its `observedAt` left out: what a [`Heartbeat`]
    /// names. Hashed field by field (no JSON in the core), so that the indexer and every agent
    /// compute it alike from the typed catalog.
    pub fn content_digest(&self) -> String {
        let mut text = format!("{}\0{}\0", self.resync_seconds, self.complete);
        for (ns, e) in &self.namespaces {
            text.push_str(&format!(
                "{ns}\0{}\0{}\0",
                e.shards,
                e.digests.join("\u{1}")
            ));
        }
        match &self.scope {
            None => text.push('*'),
            Some(scope) => text.push_str(&format!("[{}]", scope.join("\u{1}"))),
        }
        digest(text.as_bytes())
    }
}

/// The object name of the indexer's heartbeat: like the catalog's, no shard's name can take it.
pub const HEARTBEAT_NAME: &str = "heartbeat";

/// The `heartbeat` field of the `RollcacheInventory` named [`HEARTBEAT_NAME`]: written by the
/// leader at least every resync, so that the catalog itself is rewritten only when it changes and
/// agents are not sent its whole text every resync.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    /// RFC 3339 time of the leader's pass that wrote it.
    pub observed_at: String,
    /// The indexer's resync period: a heartbeat older than a few of them is stale.
    pub resync_seconds: u64,
    /// [`Catalog::content_digest`] of the catalog it vouches for.
    pub catalog: String,
}

/// One source namespace in the catalog.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub shards: u32,
    /// The digest of shard `i` at index `i`.
    pub digests: Vec<String>,
}

/// The object name of shard `shard` of `shards` for `namespace`: stable, readable in `kubectl get`,
/// and a valid DNS subdomain for any namespace name (at most 63 characters, the name 73).
pub fn object_name(namespace: &str, shard: u32, shards: u32) -> String {
    format!("{namespace}.{shards}-{shard}")
}

/// The shard of `shards` (a power of two) that `object`'s facts go to. A hash of the object's
/// identity, stable across versions and processes (not the std hasher, whose seed is random).
pub fn bucket(object: &ObjectRef, shards: u32) -> u32 {
    let mut h = Sha256::new();
    for part in [&object.kind, &object.namespace, &object.name] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    let first = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
    (first % u64::from(shards.max(1))) as u32
}

/// `sha256:<hex>` of `bytes`, the form `InventorySpec::digest` holds.
pub fn digest(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in d {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The next shard count to try when a shard of `shards` went over the budget; None at the cap.
pub fn grow(shards: u32) -> Option<u32> {
    (shards < MAX_SHARDS).then(|| (shards * 2).min(MAX_SHARDS))
}

/// One namespace's facts per source object, in object order: what the indexer shards.
pub type NamespaceFacts<'a> = BTreeMap<&'a ObjectRef, &'a [RevisionFact]>;

/// Every object's facts grouped by source namespace.
pub fn by_namespace<'a>(
    objects: impl IntoIterator<Item = &'a [RevisionFact]>,
) -> BTreeMap<&'a str, NamespaceFacts<'a>> {
    let mut out: BTreeMap<&str, NamespaceFacts<'a>> = BTreeMap::new();
    for facts in objects {
        let Some(first) = facts.first() else { continue };
        out.entry(first.object.namespace.as_str())
            .or_default()
            .insert(&first.object, facts);
    }
    out
}

/// The facts of shard `shard` of `shards`, in object order then the object's own order: the
/// same facts always give the same shard contents, hence the same digest.
pub fn shard_facts<'a>(ns: &NamespaceFacts<'a>, shard: u32, shards: u32) -> Vec<&'a RevisionFact> {
    ns.iter()
        .filter(|(o, _)| bucket(o, shards) == shard)
        .flat_map(|(_, facts)| facts.iter())
        .collect()
}

/// How many distinct source objects `facts` come from (they are in object order).
pub fn count_objects<'a>(facts: impl IntoIterator<Item = &'a RevisionFact>) -> u64 {
    let mut last: Option<&ObjectRef> = None;
    let mut n = 0;
    for f in facts {
        if last != Some(&f.object) {
            n += 1;
            last = Some(&f.object);
        }
    }
    n
}

/// What a read shard failed on; every variant names the shard (its object name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("inventory shard {shard}: encoding {encoding:?} is not {ENCODING}")]
    Encoding { shard: String, encoding: String },
    #[error("inventory shard {shard}: data is {bytes} bytes of text, over the cap of {cap}")]
    DataTooLarge {
        shard: String,
        bytes: usize,
        cap: usize,
    },
    #[error("inventory shard {shard}: data is not base64: {cause}")]
    Base64 { shard: String, cause: String },
    #[error("inventory shard {shard}: data is not gzip: {cause}")]
    Gzip { shard: String, cause: String },
    #[error("inventory shard {shard}: data inflates beyond the cap of {cap} bytes")]
    Inflated { shard: String, cap: usize },
    #[error("inventory shard {shard}: digest {found} does not match the spec's {expected}")]
    Digest {
        shard: String,
        expected: String,
        found: String,
    },
    #[error("inventory shard {shard}: counts {revisions} revisions, over the cap of {MAX_FACTS}")]
    TooManyFacts { shard: String, revisions: u64 },
    #[error("inventory shard {shard}: facts are not readable: {cause}")]
    Json { shard: String, cause: String },
    #[error("inventory shard {shard}: holds a fact of namespace {found}, not {expected}")]
    ForeignNamespace {
        shard: String,
        expected: String,
        found: String,
    },
    #[error(
        "inventory shard {shard}: holds {object}, which belongs in shard {belongs} of {shards}"
    )]
    Misplaced {
        shard: String,
        object: String,
        belongs: u32,
        shards: u32,
    },
    #[error(
        "inventory shard {shard}: counts {spec_objects} objects, {spec_revisions} revisions; data holds {objects}, {revisions}"
    )]
    Counts {
        shard: String,
        spec_objects: u64,
        spec_revisions: u64,
        objects: u64,
        revisions: u64,
    },
}

/// Checks what the decoded facts of `spec` claim against the spec: every fact of its source
/// namespace (namespaces are trust boundaries, safety rule 10), each in the shard its object
/// hashes to, the counts as published.
pub fn check_facts(
    name: &str,
    spec: &InventorySpec,
    facts: &[RevisionFact],
) -> Result<(), ShardError> {
    if let Some(f) = facts.iter().find(|f| {
        f.object.namespace != spec.source_namespace || f.workload.namespace != spec.source_namespace
    }) {
        return Err(ShardError::ForeignNamespace {
            shard: name.to_owned(),
            expected: spec.source_namespace.clone(),
            found: f.object.namespace.clone(),
        });
    }
    // Shards of one namespace are disjoint: a fact in the wrong one is a corrupt or forged shard.
    if let Some(f) = facts
        .iter()
        .find(|f| bucket(&f.object, spec.shards) != spec.shard)
    {
        return Err(ShardError::Misplaced {
            shard: name.to_owned(),
            object: f.object.to_string(),
            belongs: bucket(&f.object, spec.shards),
            shards: spec.shards,
        });
    }
    let objects = count_objects(facts);
    let revisions = facts.len() as u64;
    if (objects, revisions) != (spec.objects, spec.revisions) {
        return Err(ShardError::Counts {
            shard: name.to_owned(),
            spec_objects: spec.objects,
            spec_revisions: spec.revisions,
            objects,
            revisions,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
