//! The test API server's store: every change takes the next resource version, is kept for
//! watches to resume from, and deletions cascade to what the deleted object owned.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{EventType, ObjKey, Shared, State, StoredEvent};

impl Shared {
    /// Stores an object under a new resource version (from the one counter all kinds share, as
    /// etcd's) and tells watchers: ADDED or MODIFIED by whether the key held an object.
    pub(super) fn commit(
        &self,
        st: &mut State,
        key: ObjKey,
        namespace: String,
        mut obj: Value,
    ) -> Arc<Value> {
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let stored = Arc::new(obj);
        let prev = st.objects.insert(key.clone(), stored.clone());
        let kind = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(st, key.0, namespace, kind, stored.clone(), prev);
        self.rv_tx.send_replace(rv);
        stored
    }

    /// Deletes an object and, with `cascade`, then what it owns (ownerReferences to its uid), as
    /// the garbage collector does after a DELETE: a RollcacheNode goes when its Node goes.
    pub(super) fn remove(
        &self,
        st: &mut State,
        key: &ObjKey,
        namespace: &str,
        cascade: bool,
    ) -> Option<Arc<Value>> {
        let prev = st.objects.remove(key)?;
        st.rv += 1;
        let rv = st.rv;
        // A DELETED event carries the object at the deletion's resource version.
        let mut gone = (*prev).clone();
        gone["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.record(
            st,
            key.0,
            namespace.to_string(),
            EventType::Deleted,
            Arc::new(gone),
            Some(prev.clone()),
        );
        self.rv_tx.send_replace(rv);
        if !cascade {
            return Some(prev);
        }
        let uid = prev["metadata"]["uid"].clone();
        let owned: Vec<(ObjKey, String)> = st
            .objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .map(|(k, o)| {
                let ns = o["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                (k.clone(), ns)
            })
            .collect();
        for (k, ns) in owned {
            self.remove(st, &k, &ns, true);
        }
        Some(prev)
    }

    fn record(
        &self,
        st: &mut State,
        resource: usize,
        namespace: String,
        kind: EventType,
        object: Arc<Value>,
        prev: Option<Arc<Value>>,
    ) {
        let rv = st.rv;
        st.events.push_back(StoredEvent {
            rv,
            resource,
            namespace,
            kind,
            object,
            prev,
        });
        while st.events.len() > self.opts.retained_events {
            if let Some(old) = st.events.pop_front() {
                st.floor = st.floor.max(old.rv);
            }
        }
    }
}
