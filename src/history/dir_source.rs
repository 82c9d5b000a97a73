//! The directory source (`--from DIR`): its loads into the store, its reloads, its root checks.
//!
//! It reloads on change, keeps what unreadable files held, and survives its root being removed
//! and recreated.
//!
//! Across reloads (`DirState`) a file that cannot be read or parsed now (half-written, truncated,
//! over the size cap) counts as unchanged: the objects it held stay, with the problem.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::change::{Change, fold};
use super::dirwatch::{self, DEBOUNCE, Depth, DirWatch, WatchError};
use super::files::{self, DirSnapshot};
use super::store::{HistoryStore, SourceId, StatusKey};
use super::supervise::spawn_supervised;
use super::{DecodeProblem, Decoded, ProblemKind};
use crate::model::{NodeFacts, ObjectRef, SourceKind};

/// How often the directory source checks that its root is still the directory it watches.
const ROOT_CHECK: Duration = Duration::from_secs(1);

/// Where this node's Node object comes from when the directory source runs.
#[derive(Clone, Debug, Default)]
pub struct NodeFromFiles {
    /// This node's name (`NODE_NAME`).
    pub node_name: Option<String>,
    /// True without a Kubernetes API: the directory's Node object is this node's.
    pub enabled: bool,
}

/// Starts the directory source `dir` in `tasks`, its first load done before this returns.
pub fn spawn_dir_source(
    dir: &Path,
    node: NodeFromFiles,
    store: &Arc<HistoryStore>,
    token: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<(), WatchError> {
    let watch = self::watch(dir)?;
    let id = SourceId::new(SourceKind::File, "files", None);
    store.register(&id);
    let new_source = {
        let (dir, id, store) = (dir.to_owned(), id.clone(), store.clone());
        move || DirSource {
            root: root_identity(&dir),
            dir: dir.clone(),
            id: id.clone(),
            store: store.clone(),
            node: node.clone(),
            state: DirState::default(),
        }
    };
    let mut source = new_source();
    source.load();
    let mut first = Some((source, watch));
    let task_token = token.clone();
    spawn_supervised(tasks, store, StatusKey::Source(id), token, move || {
        // A restart starts without a watch: the root check sets a new one and reloads, since
        // changes made while the task was down were not seen.
        let (source, watch) = match first.take() {
            Some((source, watch)) => (source, Some(watch)),
            None => (new_source(), None),
        };
        source.run(watch, task_token.clone())
    });
    Ok(())
}

/// A debounced watch of the directory source's tree: one notice per burst of changes.
pub type Watch = (mpsc::Receiver<()>, DirWatch);

/// Watches `dir` and its subdirectories as the directory source does.
pub fn watch(dir: &Path) -> Result<Watch, WatchError> {
    dirwatch::watch_dir(dir, Depth::Recursive, DEBOUNCE)
}

/// The directory source: reloads on change, keeps what unreadable files held, and survives its
/// root being removed and recreated (a watch dies with the directory it was set on).
struct DirSource {
    dir: PathBuf,
    id: SourceId,
    store: Arc<HistoryStore>,
    node: NodeFromFiles,
    state: DirState,
    /// Device and inode of the root the watch was set on.
    root: Option<(u64, u64)>,
}

/// Device and inode of `dir` (through symlinks); None when it is not a directory now.
fn root_identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}

impl DirSource {
    async fn run(mut self, mut watch: Option<Watch>, cancel: CancellationToken) {
        let mut check = tokio::time::interval(ROOT_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let changed = tokio::select! {
                _ = cancel.cancelled() => return,
                c = next_change(&mut watch) => c,
                _ = check.tick() => false,
            };
            let now = root_identity(&self.dir);
            let Some(root) = now else {
                // Missing (or not a directory): what it held is unknown, not gone.
                let key = StatusKey::Source(self.id.clone());
                if !self.store.in_error(&key) {
                    tracing::warn!(dir = %self.dir.display(), "directory source root is missing; keeping what it held and unpinning nothing until it is back");
                }
                self.store.set_error(
                    &key,
                    format!(
                        "directory {} is missing; waiting for it to come back",
                        self.dir.display()
                    ),
                );
                watch = None;
                self.root = None;
                continue;
            };
            if watch.is_none() || self.root != Some(root) {
                match self::watch(&self.dir) {
                    Ok(w) => watch = Some(w),
                    Err(e) => {
                        self.store
                            .set_error(&StatusKey::Source(self.id.clone()), e.to_string());
                        continue;
                    }
                }
                tracing::info!(dir = %self.dir.display(), "directory source root is back; watching it again");
                self.root = Some(root);
                // A directory being filled after it was created: changes from now on are
                // watched and reload again, but the first load should not see it empty.
                tokio::time::sleep(DEBOUNCE).await;
            } else if !changed {
                continue;
            }
            tracing::info!(dir = %self.dir.display(), "directory source changed; reloading");
            self.load();
        }
    }

    fn load(&mut self) {
        let nodes = self.state.load_into(&self.dir, &self.id, &self.store);
        if self.node.enabled {
            let node = self
                .node
                .node_name
                .as_deref()
                .and_then(|n| nodes.into_iter().find(|x| x.name == n));
            self.store.set_node(node);
        }
    }
}

/// The next change the watch reports (true); pending forever without a watch. A watch that
/// ended is dropped, so that the root check sets a new one.
async fn next_change(watch: &mut Option<Watch>) -> bool {
    let Some((rx, _)) = watch else {
        return std::future::pending().await;
    };
    if rx.recv().await.is_some() {
        return true;
    }
    *watch = None;
    false
}

/// The directory source across reloads: which objects each file yielded when last read.
#[derive(Debug, Default)]
pub struct DirState {
    by_file: HashMap<PathBuf, Vec<ObjectRef>>,
}

impl DirState {
    /// Replaces the source `id`'s objects in `store` with what `dir` holds now (files that cannot
    /// be read keep what they held), logging every problem; returns the Node objects read.
    pub fn load_into(&mut self, dir: &Path, id: &SourceId, store: &HistoryStore) -> Vec<NodeFacts> {
        let mut snap = files::load_dir(dir);
        // Problems of files that keep objects are counted with those objects by the store.
        for p in self.carry_over(&mut snap) {
            tracing::warn!(object = %p.object, kind = %p.kind, "cannot be read: {}", p.message);
        }
        for p in &snap.problems {
            tracing::warn!(object = %p.object, kind = %p.kind, "skipped: {}", p.message);
            store.count_problem(&StatusKey::Source(id.clone()), p.kind);
        }
        fold(store, id, Change::ResetBegin);
        let objects = snap.objects.len();
        for (object, decoded) in snap.objects {
            fold(store, id, Change::ResetApply(object, decoded));
        }
        fold(store, id, Change::ResetDone);
        tracing::info!(dir = %dir.display(), objects, "directory source loaded");
        snap.nodes
    }

    /// Completes a fresh `snap` with what files that cannot be read or parsed now held before:
    /// each object such a file no longer yields is added back as undecodable (so that the store
    /// keeps its last good facts), and a failing file that yielded nothing before is added as an
    /// object of its own that never decoded (what it holds is unknown). Files under a directory
    /// that cannot be listed keep their objects the same way; deleted files lose theirs.
    /// Returns the file problems taken out of `snap.problems`: the added objects carry them.
    pub fn carry_over(&mut self, snap: &mut DirSnapshot) -> Vec<DecodeProblem> {
        let produced: HashSet<ObjectRef> = snap.objects.iter().map(|(o, _)| o.clone()).collect();
        let mut by_file: HashMap<PathBuf, Vec<ObjectRef>> = HashMap::new();
        let mut added: Vec<(ObjectRef, Decoded)> = Vec::new();
        let mut moved = vec![false; snap.problems.len()];
        for f in &snap.files {
            let mine: Vec<ObjectRef> = snap.objects[f.objects.clone()]
                .iter()
                .map(|(o, _)| o.clone())
                .collect();
            let file_problem = snap.problems[f.problems.clone()].first();
            let object_problem = snap.objects[f.objects.clone()]
                .iter()
                .find_map(|(_, d)| d.problems.first());
            let Some(why) = file_problem.or(object_problem) else {
                by_file.insert(f.path.clone(), mine);
                continue;
            };
            let missing: Vec<ObjectRef> = self
                .by_file
                .get(&f.path)
                .into_iter()
                .flatten()
                .filter(|o| !produced.contains(*o))
                .cloned()
                .collect();
            let reason = format!(
                "{} cannot be read or parsed now ({}: {}); its last good objects are kept",
                f.path.display(),
                why.kind,
                why.message
            );
            if let Some(p) = file_problem {
                if missing.is_empty() {
                    let object = files::file_ref(&f.path, None);
                    added.push((
                        object.clone(),
                        Decoded::skipped(object, p.kind, reason.clone()),
                    ));
                }
                moved[f.problems.clone()].fill(true);
            }
            for o in &missing {
                added.push((o.clone(), Decoded::skipped(o.clone(), why.kind, &reason)));
            }
            by_file.insert(f.path.clone(), mine.into_iter().chain(missing).collect());
        }
        for (path, objects) in &self.by_file {
            if by_file.contains_key(path)
                || !snap.unreadable_dirs.iter().any(|d| path.starts_with(d))
            {
                continue;
            }
            let reason = format!(
                "{}: its directory cannot be listed now; its last good objects are kept",
                path.display()
            );
            let kept: Vec<ObjectRef> = objects
                .iter()
                .filter(|o| !produced.contains(*o))
                .cloned()
                .collect();
            for o in &kept {
                added.push((
                    o.clone(),
                    Decoded::skipped(o.clone(), ProblemKind::InvalidField, &reason),
                ));
            }
            by_file.insert(path.clone(), kept);
        }
        let (carried, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut snap.problems)
            .into_iter()
            .zip(moved)
            .partition(|(_, moved)| *moved);
        snap.problems = rest.into_iter().map(|(p, _)| p).collect();
        snap.objects.extend(added);
        // The problem ranges no longer hold.
        snap.files.clear();
        self.by_file = by_file;
        carried.into_iter().map(|(p, _)| p).collect()
    }
}
