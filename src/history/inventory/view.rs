//! What the agent makes of the inventory it has read: which facts the store holds, and whether
//! that view is complete enough to unpin. Pure: objects in, facts and a reason out.
//!
//! A namespace's facts are replaced only when the catalog lists it and every shard it names is
//! here, decoded, with the catalog's digest and nothing unresolved; otherwise what the store held
//! stays and what the shards hold now is added (pulls go on, nothing leaves). A namespace's facts
//! leave only when a fresh catalog no longer lists it.
//!
//! Fresh is judged on this agent's monotonic clock, not by comparing the catalog's `observedAt`
//! with the node's wall clock: the indexer's node and this one may disagree by minutes (air-gapped
//! beamlines). The catalog is stale once `STALE_RESYNCS` resyncs have passed since this agent
//! first held the `observedAt` it holds: when the watch delivered it, or when the list that found
//! it ended (a re-list that finds the one it held does not restart the count). Until the watch
//! has delivered a change (the indexer's heartbeat seen arriving), the wall-clock check applies
//! too: it is the only evidence of the catalog's age a list gives.
//!
//! An indexer that writes a `heartbeat` object rewrites the catalog only when it changes: while
//! that object is present, its `observedAt` is the evidence (by the same rule; a catalog write
//! seen arriving counts too), and the view is complete only when the catalog it vouches for is
//! the one held. Without it (an older indexer), the catalog's own `observedAt` is.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::fleet::codec;
use crate::model::{ObjectRef, PodTemplate, RevisionFact};
use rollcache_core::shard::{
    self, CATALOG_NAME, Catalog, HEARTBEAT_NAME, Heartbeat, InventorySpec,
};
use scope::Wanted;

mod scope;

/// A catalog older than this many of the indexer's resync periods is stale (the indexer is down,
/// or cannot write).
pub const STALE_RESYNCS: u32 = 3;

/// A heartbeat seen this far apart from the catalog's `observedAt` on the node's wall clock is
/// worth a word in the log: `observedAt` is second-rounded and written after the pass it dates.
const CLOCK_NOTE: Duration = Duration::from_secs(60);

/// What this agent has seen of one `observedAt` (the catalog's or the heartbeat's), on its own
/// clock.
#[derive(Debug, Default)]
struct Heard {
    /// The `observedAt` as last held: kept through a re-list and a deletion, so that
    /// finding the same version again is not taken for a refresh.
    observed_at: Option<String>,
    /// Since when this agent has held that version: when the watch delivered it, or when the
    /// list that found it ended. None: no list has ended yet.
    since: Option<Instant>,
    /// `since` is when the watch delivered it: the indexer was alive then, whatever its
    /// `observedAt` says by the node's clock.
    live: bool,
}

/// One shard as last read: its spec's identity and the facts of its last version that decoded.
#[derive(Debug)]
struct Shard {
    namespace: String,
    shard: u32,
    shards: u32,
    digest: String,
    unresolved: usize,
    /// Facts of the last version that decoded, by object (kept through a version that does not).
    good: Option<Facts>,
    /// Why the latest version was refused, naming the shard.
    error: Option<String>,
}

/// The inventory read so far, and what was given to the store.
#[derive(Debug, Default)]
pub struct View {
    /// The namespaces this agent takes; the others' shards are not read.
    wanted: Wanted,
    shards: BTreeMap<String, Shard>,
    catalog: Option<Result<Catalog, String>>,
    /// Facts per namespace as the store holds them, by object.
    fed: BTreeMap<String, Facts>,
    /// One copy of each distinct pod template among the shards' facts (revisions of a workload
    /// mostly share theirs); the store then shares these copies too.
    templates: HashSet<Arc<PodTemplate>>,
    /// Templates in use at the last sweep.
    templates_in_use: usize,
    /// Heard of the catalog's `observedAt`.
    heard: Heard,
    /// The indexer's `heartbeat` object, when there is one (an older indexer writes none).
    heartbeat: Option<Result<Heartbeat, String>>,
    /// Heard of the heartbeat's `observedAt`.
    heard_beat: Heard,
}

/// Facts by the object they came from, shared between the shards, what was fed and the outcome.
pub type Facts = BTreeMap<ObjectRef, Arc<[RevisionFact]>>;

/// What the store should hold now.
#[derive(Debug, PartialEq)]
pub struct Outcome {
    pub objects: Facts,
    /// Why the view is incomplete; None: complete.
    pub incomplete: Option<String>,
}

impl View {
    /// A view that takes only `namespaces`' facts (empty: every namespace's).
    pub fn for_namespaces(namespaces: &[String]) -> Self {
        Self {
            wanted: Wanted::new(namespaces),
            ..Self::default()
        }
    }

    /// What the store held before this view began (a restarted source): kept like facts fed.
    pub fn seed(&mut self, held: impl IntoIterator<Item = (ObjectRef, Arc<[RevisionFact]>)>) {
        for (object, facts) in held {
            self.fed
                .entry(object.namespace.clone())
                .or_default()
                .insert(object, facts);
        }
    }

    /// Forgets every object read (a new list begins); what was fed stays, and what was heard of
    /// the catalog until `listed` compares it with what the list found.
    pub fn clear(&mut self) {
        self.shards.clear();
        self.catalog = None;
        self.heartbeat = None;
    }

    /// The object `name` with its JSON `obj`, added or changed.
    pub fn apply(&mut self, name: &str, obj: &Value) {
        if name == CATALOG_NAME {
            self.catalog = Some(codec::read_unsharded(
                obj,
                "catalog",
                "the inventory catalog",
            ));
            return;
        }
        // Never a shard, whatever it holds.
        if name == HEARTBEAT_NAME {
            self.heartbeat = Some(codec::read_unsharded(
                obj,
                "heartbeat",
                "the inventory heartbeat",
            ));
            return;
        }
        let spec = obj
            .get("spec")
            .ok_or_else(|| format!("inventory shard {name}: no spec"))
            .and_then(|s| {
                serde_json::from_value::<InventorySpec>(s.clone())
                    .map_err(|e| format!("inventory shard {name}: spec not readable: {e}"))
            });
        let namespace = match &spec {
            Ok(spec) => spec.source_namespace.as_str(),
            Err(_) => name.split('.').next().unwrap_or_default(),
        };
        if !self.wanted.wants(namespace) {
            self.shards.remove(name);
            return;
        }
        let prev = self.shards.remove(name);
        let entry = match spec {
            Ok(spec) => {
                let decoded = codec::decode(name, &spec).map_err(|e| e.to_string());
                let (good, error) = match decoded {
                    Ok(facts) => (Some(self.by_object(facts)), None),
                    Err(e) => (prev.and_then(|p| p.good), Some(e)),
                };
                Shard {
                    namespace: spec.source_namespace,
                    shard: spec.shard,
                    shards: spec.shards,
                    digest: spec.digest,
                    unresolved: spec.unresolved.len(),
                    good,
                    error,
                }
            }
            // Not even its namespace can be trusted: what its last good version said stays.
            Err(e) => match prev {
                Some(p) => Shard {
                    error: Some(e),
                    digest: String::new(),
                    ..p
                },
                None => Shard {
                    namespace: name.split('.').next().unwrap_or_default().to_owned(),
                    shard: 0,
                    shards: 0,
                    digest: String::new(),
                    unresolved: 0,
                    good: None,
                    error: Some(e),
                },
            },
        };
        self.shards.insert(name.to_owned(), entry);
    }

    /// The list that began with `clear` ended at `now`. A catalog it found that this agent held
    /// before keeps the moment it was first held (a re-list is not a refresh); another one, or
    /// none, is as old as its `observedAt` says until the watch delivers a change.
    pub fn listed(&mut self, now: Instant) {
        self.note_catalog(now, false);
    }

    /// The watch delivered what was applied last at `now`: a catalog whose `observedAt` changed
    /// is the indexer's heartbeat seen arriving.
    pub fn watched(&mut self, now: Instant) {
        self.note_catalog(now, true);
    }

    fn note_catalog(&mut self, now: Instant, live: bool) {
        let current = match &self.catalog {
            Some(Ok(c)) => Some(&c.observed_at),
            _ => None,
        };
        note(&mut self.heard, current, now, live);
        let beat = match &self.heartbeat {
            Some(Ok(b)) => Some(&b.observed_at),
            _ => None,
        };
        note(&mut self.heard_beat, beat, now, live);
    }

    /// The object `name` was deleted.
    pub fn delete(&mut self, name: &str) {
        if name == CATALOG_NAME {
            self.catalog = None;
        } else if name == HEARTBEAT_NAME {
            self.heartbeat = None;
        } else {
            self.shards.remove(name);
        }
    }

    /// The evidence of the indexer's life: the heartbeat's `observedAt`, its resync and when it
    /// (or a catalog write) was seen, while a heartbeat is present; else the catalog's own.
    fn evidence<'a>(&'a self, catalog: &'a Catalog) -> (&'a str, u64, &'a Heard) {
        match &self.heartbeat {
            Some(Ok(b)) => {
                let (beat, cat) = (&self.heard_beat, &self.heard);
                // A catalog write seen arriving is as good a sign of life as a heartbeat.
                match (beat.since, cat.since) {
                    (b_since, Some(c)) if cat.live && b_since.is_none_or(|b| c >= b) => {
                        (&catalog.observed_at, b.resync_seconds, cat)
                    }
                    _ => (&b.observed_at, b.resync_seconds, beat),
                }
            }
            _ => (&catalog.observed_at, catalog.resync_seconds, &self.heard),
        }
    }
}

/// Notes `current` (an `observedAt`, if one is held) in `heard` at `now`.
fn note(heard: &mut Heard, current: Option<&String>, now: Instant, live: bool) {
    match current {
        // Nothing heard; a list without a catalog still starts this agent's own count, and
        // the version last held stays remembered (a catalog put back as it was is no
        // heartbeat).
        None if !live => {
            heard.since = Some(now);
            heard.live = false;
        }
        None => {}
        // The version already held: a re-list, or a watched edit that is not the indexer's
        // (a label, a shard), is no refresh.
        Some(at) if heard.since.is_some() && heard.observed_at.as_ref() == Some(at) => {}
        Some(at) => {
            *heard = Heard {
                observed_at: Some(at.clone()),
                since: Some(now),
                live,
            }
        }
    }
}

impl View {
    /// Why the catalog cannot be trusted at `now` (the node's wall clock) and `local` (this
    /// agent's monotonic clock), if so.
    pub fn catalog_problem(&self, now: SystemTime, local: Instant) -> Option<String> {
        match &self.catalog {
            None => Some("no inventory catalog: is `rollcache index` running and leading?".into()),
            Some(Err(e)) => Some(e.clone()),
            Some(Ok(c)) if !c.complete => Some(
                "the indexer's own view of the history is incomplete (a source not listed or in error, or an object it cannot decode)".into(),
            ),
            Some(Ok(c)) => self.stale_here(c, now, local).or_else(|| self.vouched(c)),
        }
    }

    /// Why the heartbeat does not vouch for the catalog held, if it does not (normally for the
    /// moment between a catalog write and the heartbeat after it, or a watch delivering them
    /// out of step).
    fn vouched(&self, catalog: &Catalog) -> Option<String> {
        match &self.heartbeat {
            None => None,
            Some(Err(e)) => Some(e.clone()),
            Some(Ok(b)) if b.catalog != catalog.content_digest() => Some(
                "the indexer's heartbeat vouches for another catalog than the one read: waiting for it".into(),
            ),
            Some(Ok(_)) => None,
        }
    }

    /// Stale on this agent's clock since the last change seen (or the list), and until a
    /// heartbeat has been seen arriving, also by the catalog's `observedAt` on the node's wall
    /// clock. A node whose clock is behind thus still sees a dead indexer within the window
    /// after its list; one whose clock is ahead recovers at the first heartbeat it sees.
    fn stale_here(&self, catalog: &Catalog, now: SystemTime, local: Instant) -> Option<String> {
        let (observed_at, resync, seen) = self.evidence(catalog);
        if let Some(since) = seen.since {
            let window = stale_window(resync);
            let quiet = local.saturating_duration_since(since);
            if quiet > window {
                return Some(format!(
                    "the inventory catalog has not been refreshed for {} as seen by this agent (more than {STALE_RESYNCS} resyncs of the indexer, {}): is `rollcache index` running?",
                    // Rounded up: just past a 3 s window reads "4s", not "3s".
                    whole_seconds(quiet + Duration::from_nanos(999_999_999)),
                    humantime::format_duration(window)
                ));
            }
            if seen.live {
                return None;
            }
        }
        stale_at(observed_at, resync, now)
    }

    /// When a heartbeat has been seen and its `observedAt` disagrees with the node's wall clock
    /// at its arrival by more than a minute: which clock is off, for the log.
    pub fn clock_note(&self, now: SystemTime, local: Instant) -> Option<String> {
        let Some(Ok(c)) = &self.catalog else {
            return None;
        };
        let (observed_at, _, seen) = self.evidence(c);
        let (Some(since), true) = (seen.since, seen.live) else {
            return None;
        };
        let at = humantime::parse_rfc3339_weak(observed_at).ok()?;
        // The node's wall clock when the heartbeat arrived, against the indexer's then.
        let arrived = now.checked_sub(local.saturating_duration_since(since))?;
        let (off, way) = match arrived.duration_since(at) {
            Ok(ahead) => (ahead, "ahead of"),
            Err(behind) => (behind.duration(), "behind"),
        };
        (off > CLOCK_NOTE).then(|| {
            format!(
                "this node's clock is about {} {way} the indexer's (by the heartbeat seen); the catalog's freshness is judged by the heartbeats this agent sees, not by its observedAt",
                whole_seconds(off)
            )
        })
    }

    /// What the store holds now, and whether that is complete; remembers it as fed.
    pub fn evaluate(&mut self, now: SystemTime, local: Instant) -> Outcome {
        let mut reasons: Vec<String> = Vec::new();
        let catalog_problem = self.catalog_problem(now, local);
        let catalog = match (&self.catalog, &catalog_problem) {
            (Some(Ok(c)), None) => Some(c),
            _ => None,
        };
        reasons.extend(catalog_problem.clone());
        reasons.extend(self.scope_problem());
        let mut namespaces: Vec<String> = self.fed.keys().cloned().collect();
        namespaces.extend(self.shards.values().map(|s| s.namespace.clone()));
        namespaces.extend(catalog.iter().flat_map(|c| c.namespaces.keys().cloned()));
        namespaces.retain(|ns| self.wanted.wants(ns));
        namespaces.sort_unstable();
        namespaces.dedup();
        let mut fed = BTreeMap::new();
        for ns in namespaces {
            let shards: Vec<(&String, &Shard)> = self
                .shards
                .iter()
                .filter(|(_, s)| s.namespace == ns)
                .collect();
            let covered = catalog.is_none_or(|c| c.covers(&ns));
            let complete = match catalog.map(|c| c.namespaces.get(&ns)) {
                // Outside the indexer's scope: unknown, not gone (`scope_problem` says why).
                _ if !covered => Err(String::new()),
                // Not published: a fresh catalog does not list it. Its history is gone, or its
                // shards are not announced yet (their facts come with the catalog that lists
                // them), or they are left-overs no indexer owns: none of it is held.
                Some(None) => continue,
                Some(Some(entry)) => self.complete_set(&ns, entry),
                None => Err(String::new()),
            };
            let facts = match complete {
                Ok(facts) => facts,
                Err(reason) => {
                    if !reason.is_empty() {
                        reasons.push(reason);
                    }
                    // Incomplete: what was held stays, and what the shards say now is added.
                    let mut held = self.fed.remove(&ns).unwrap_or_default();
                    for (_, s) in &shards {
                        for (object, facts) in s.good.iter().flatten() {
                            held.insert(object.clone(), facts.clone());
                        }
                    }
                    held
                }
            };
            fed.insert(ns, facts);
        }
        self.fed = fed;
        let objects = self
            .fed
            .values()
            .flat_map(|m| m.iter().map(|(o, f)| (o.clone(), f.clone())))
            .collect();
        let incomplete = (!reasons.is_empty()).then(|| {
            let more = reasons.len() - 1;
            match more {
                0 => reasons.swap_remove(0),
                n => format!("{} (and {n} more)", reasons.swap_remove(0)),
            }
        });
        Outcome {
            objects,
            incomplete,
        }
    }

    /// Why the indexer's scope leaves a namespace this agent wants unknown, if it does: read from
    /// any catalog that parses, fresh or not.
    fn scope_problem(&self) -> Option<String> {
        match &self.catalog {
            Some(Ok(c)) => self.wanted.problem(c),
            _ => None,
        }
    }

    /// Facts grouped by the object they came from, their templates shared.
    fn by_object(&mut self, facts: Vec<RevisionFact>) -> Facts {
        // Held by the set alone: no fact uses it any more. Swept when the set has doubled.
        if self.templates.len() > 2 * self.templates_in_use.max(512) {
            self.templates.retain(|t| Arc::strong_count(t) > 1);
            self.templates_in_use = self.templates.len();
        }
        let mut grouped: BTreeMap<ObjectRef, Vec<RevisionFact>> = BTreeMap::new();
        for mut f in facts {
            match self.templates.get(&*f.template) {
                Some(shared) => f.template = shared.clone(),
                None => {
                    self.templates.insert(f.template.clone());
                }
            }
            grouped.entry(f.object.clone()).or_default().push(f);
        }
        grouped.into_iter().map(|(o, f)| (o, f.into())).collect()
    }

    /// The facts of `ns` when the shards the catalog names are all here and match it.
    fn complete_set(&self, ns: &str, entry: &shard::CatalogEntry) -> Result<Facts, String> {
        let mut out = BTreeMap::new();
        for i in 0..entry.shards {
            let name = shard::object_name(ns, i, entry.shards);
            let Some(s) = self.shards.get(&name) else {
                return Err(format!("inventory shard {name} is missing"));
            };
            if let Some(e) = &s.error {
                return Err(e.clone());
            }
            if (s.shard, s.shards) != (i, entry.shards) {
                return Err(format!(
                    "inventory shard {name}: its spec is not shard {i} of {}",
                    entry.shards
                ));
            }
            if entry.digests.get(i as usize) != Some(&s.digest) {
                return Err(format!(
                    "inventory shard {name}: digest differs from the catalog's (being rewritten, or edited by hand)"
                ));
            }
            if s.unresolved > 0 {
                return Err(format!(
                    "inventory shard {name}: {} source objects the indexer could not decode",
                    s.unresolved
                ));
            }
            out.extend(s.good.iter().flatten().map(|(o, f)| (o.clone(), f.clone())));
        }
        Ok(out)
    }
}

/// `STALE_RESYNCS` of the indexer's resyncs.
fn stale_window(resync_seconds: u64) -> Duration {
    Duration::from_secs(resync_seconds.max(1)) * STALE_RESYNCS
}

fn whole_seconds(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(d.as_secs()))
}

/// Why `observed_at` (the heartbeat's, else the catalog's) is stale at `now` by the node's wall
/// clock, if it is: the only check of a list read once (`rollcache plan`, `check-rollback`) and
/// of one no change was seen of yet. An `observedAt` in the future is age 0: the agent's own
/// clock then bounds it.
fn stale_at(observed_at: &str, resync_seconds: u64, now: SystemTime) -> Option<String> {
    let at = match humantime::parse_rfc3339_weak(observed_at) {
        Ok(at) => at,
        Err(e) => {
            return Some(format!(
                "the inventory catalog's observedAt {observed_at:?} is not a time: {e}"
            ));
        }
    };
    let window = stale_window(resync_seconds);
    let age = now.duration_since(at).unwrap_or_default();
    (age > window).then(|| {
        format!(
            "the inventory catalog was last refreshed {} ago, more than {STALE_RESYNCS} resyncs of the indexer ({}): is `rollcache index` running?",
            whole_seconds(age),
            humantime::format_duration(window)
        )
    })
}

#[cfg(test)]
mod tests;
