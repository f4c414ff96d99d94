//! `metadata.managedFields`: who owns which field, as structured-merge-diff
//! (sigs.k8s.io/structured-merge-diff, `merge/update.go`) decides it.
//!
//! A field set is a set of paths. A path element is a map field (`f:name`),
//! an associative-list item by its key (`k:{"name":"web"}`), a set-list item
//! (`v:"x"`) or a list index (`i:0`, never produced here). In `fieldsV1` a
//! path that is itself a member and has members below it carries `.`.
//!
//! Lists are typed by an approximation of the OpenAPI schema: lists of
//! objects that all carry `name` are associative, keyed by `name`;
//! `metadata.ownerReferences` is keyed by `uid`; `metadata.finalizers` is a
//! set; every other list is atomic (one leaf).
//!
//! - **Update** (create, replace, merge and strategic merge patch, the
//!   `status` and `scale` subresources): the old and the new object are
//!   compared; the fields the write added or changed become the writer's and
//!   leave every other manager's set (Apply managers' too), fields it removed
//!   leave every set. A write that added or changed nothing leaves the
//!   writer's entry (and its time) as it was.
//! - **Apply**: the applier's set becomes exactly the fields of its
//!   configuration; fields it applied last time, no longer applies and no
//!   other manager owns are removed from the object (`prune`); fields whose
//!   value the apply changes and another manager owns are conflicts: a 409
//!   unless forced, else taken from that manager.
//!
//! Entries left with no field are dropped; entries are sorted as the real
//! server sorts them (operation, time, manager, apiVersion, subresource).

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::{api_version_of, timestamp, Failure, KindSpec};

/// One path element.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Pe {
    Field(String),
    /// An associative-list item: its key fields as canonical JSON.
    Key(String),
    /// A set-list item: the value as canonical JSON.
    Value(String),
    Index(usize),
}

pub(super) type Path = Vec<Pe>;
pub(super) type Set = BTreeSet<Path>;

/// JSON with object keys sorted, whatever serde_json's map keeps.
pub(super) fn canonical(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&m[k]));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_string(&sorted(v)).unwrap_or_default()
}

impl Pe {
    fn parse(s: &str) -> Option<Pe> {
        if let Some(f) = s.strip_prefix("f:") {
            Some(Pe::Field(f.to_string()))
        } else if let Some(k) = s.strip_prefix("k:") {
            serde_json::from_str::<Value>(k)
                .ok()
                .map(|v| Pe::Key(canonical(&v)))
        } else if let Some(v) = s.strip_prefix("v:") {
            serde_json::from_str::<Value>(v)
                .ok()
                .map(|v| Pe::Value(canonical(&v)))
        } else {
            s.strip_prefix("i:")
                .and_then(|i| i.parse().ok())
                .map(Pe::Index)
        }
    }

    fn encode(&self) -> String {
        match self {
            Pe::Field(f) => format!("f:{f}"),
            Pe::Key(k) => format!("k:{k}"),
            Pe::Value(v) => format!("v:{v}"),
            Pe::Index(i) => format!("i:{i}"),
        }
    }

    fn is_field(&self, name: &str) -> bool {
        matches!(self, Pe::Field(f) if f == name)
    }
}

/// A path as the real server prints it in conflicts: `.spec.containers[name="web"].image`.
pub(super) fn display(path: &Path) -> String {
    let mut out = String::new();
    for pe in path {
        match pe {
            Pe::Field(f) => {
                out.push('.');
                out.push_str(f);
            }
            Pe::Key(k) => {
                let key: Value = serde_json::from_str(k).unwrap_or(Value::Null);
                let parts: Vec<String> = key
                    .as_object()
                    .map(|m| m.iter().map(|(f, v)| format!("{f}={v}")).collect())
                    .unwrap_or_default();
                out.push_str(&format!("[{}]", parts.join(",")));
            }
            Pe::Value(v) => out.push_str(&format!("[={v}]")),
            Pe::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// fieldsV1

/// The paths of a `fieldsV1` value.
pub(super) fn decode(v: &Value) -> Set {
    fn walk(v: &Value, prefix: &mut Path, out: &mut Set) {
        let Some(m) = v.as_object() else {
            return;
        };
        for (k, child) in m {
            if k == "." {
                out.insert(prefix.clone());
                continue;
            }
            let Some(pe) = Pe::parse(k) else {
                continue;
            };
            prefix.push(pe);
            if child.as_object().is_none_or(|c| c.is_empty()) {
                out.insert(prefix.clone());
            } else {
                walk(child, prefix, out);
            }
            prefix.pop();
        }
    }
    let mut out = Set::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// The `fieldsV1` value of a set of paths.
pub(super) fn encode(set: &Set) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for pe in path {
            node = node
                .entry(pe.encode())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("fieldsV1 nodes are objects");
        }
    }
    for path in set {
        let mut node = &mut root;
        for pe in path {
            node = node
                .get_mut(&pe.encode())
                .and_then(Value::as_object_mut)
                .expect("inserted above");
        }
        if !node.is_empty() && !node.contains_key(".") {
            node.insert(".".into(), json!({}));
        }
    }
    Value::Object(root)
}

// ---------------------------------------------------------------------------
// The schema approximation

enum ListKind {
    Assoc(&'static [&'static str]),
    Set,
    Atomic,
}

fn list_kind<'a>(path: &[Pe], mut items: impl Iterator<Item = &'a Value> + Clone) -> ListKind {
    if let [m, f] = path {
        if m.is_field("metadata") && f.is_field("finalizers") {
            return ListKind::Set;
        }
        if m.is_field("metadata") && f.is_field("ownerReferences") {
            return if items
                .clone()
                .all(|i| i.get("uid").and_then(Value::as_str).is_some())
            {
                ListKind::Assoc(&["uid"])
            } else {
                ListKind::Atomic
            };
        }
    }
    let mut any = false;
    let named = items.all(|i| {
        any = true;
        i.get("name").and_then(Value::as_str).is_some()
    });
    if any && named {
        ListKind::Assoc(&["name"])
    } else {
        ListKind::Atomic
    }
}

fn item_key(keys: &[&str], item: &Value) -> Pe {
    let mut k = Map::new();
    for f in keys {
        k.insert(f.to_string(), item.get(*f).cloned().unwrap_or(Value::Null));
    }
    Pe::Key(canonical(&Value::Object(k)))
}

fn key_matches(key: &str, item: &Value) -> bool {
    let key: Value = serde_json::from_str(key).unwrap_or(Value::Null);
    key.as_object()
        .is_some_and(|k| k.iter().all(|(f, v)| item.get(f) == Some(v)))
}

/// The fields a configuration sets (structured-merge-diff `ToFieldSet`):
/// leaves and list items, not the maps that hold them.
fn config_set(v: &Value, path: &mut Path, out: &mut Set) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                path.push(Pe::Field(k.clone()));
                config_set(c, path, out);
                path.pop();
            }
        }
        Value::Array(a) if !a.is_empty() => match list_kind(path, a.iter()) {
            ListKind::Assoc(keys) => {
                for item in a {
                    path.push(item_key(keys, item));
                    out.insert(path.clone());
                    if let Value::Object(m) = item {
                        for (k, c) in m {
                            path.push(Pe::Field(k.clone()));
                            config_set(c, path, out);
                            path.pop();
                        }
                    }
                    path.pop();
                }
            }
            ListKind::Set => {
                for item in a {
                    path.push(Pe::Value(canonical(item)));
                    out.insert(path.clone());
                    path.pop();
                }
            }
            ListKind::Atomic => {
                out.insert(path.clone());
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
}

/// What a write changed (structured-merge-diff `Compare`): leaves added,
/// changed or removed; maps and list items added or removed.
#[derive(Default)]
struct Comparison {
    added: Set,
    modified: Set,
    removed: Set,
}

impl Comparison {
    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }

    fn retain(&mut self, keep: impl Fn(&Path) -> bool) {
        self.added.retain(&keep);
        self.modified.retain(&keep);
        self.removed.retain(&keep);
    }
}

fn compare(l: Option<&Value>, r: Option<&Value>, path: &mut Path, c: &mut Comparison) {
    let leaf = |path: &Path, c: &mut Comparison| match (l, r) {
        (None, Some(_)) => {
            c.added.insert(path.clone());
        }
        (Some(_), None) => {
            c.removed.insert(path.clone());
        }
        (Some(a), Some(b)) if a != b => {
            c.modified.insert(path.clone());
        }
        _ => {}
    };
    let post = |path: &Path, c: &mut Comparison| match (l, r) {
        (None, Some(_)) => {
            c.added.insert(path.clone());
        }
        (Some(_), None) => {
            c.removed.insert(path.clone());
        }
        _ => {}
    };
    let maps = l.is_none_or(Value::is_object) && r.is_none_or(Value::is_object);
    let lists = l.is_none_or(Value::is_array) && r.is_none_or(Value::is_array);
    if maps {
        let lm = l.and_then(Value::as_object);
        let rm = r.and_then(Value::as_object);
        if lm.is_none_or(Map::is_empty) && rm.is_none_or(Map::is_empty) {
            return leaf(path, c);
        }
        let keys: BTreeSet<&String> = lm
            .into_iter()
            .flat_map(|m| m.keys())
            .chain(rm.into_iter().flat_map(|m| m.keys()))
            .collect();
        for k in keys {
            path.push(Pe::Field(k.clone()));
            compare(
                lm.and_then(|m| m.get(k)),
                rm.and_then(|m| m.get(k)),
                path,
                c,
            );
            path.pop();
        }
        post(path, c);
    } else if lists {
        let la: &[Value] = l.and_then(Value::as_array).map_or(&[], Vec::as_slice);
        let ra: &[Value] = r.and_then(Value::as_array).map_or(&[], Vec::as_slice);
        if la.is_empty() && ra.is_empty() {
            return leaf(path, c);
        }
        match list_kind(path, la.iter().chain(ra.iter())) {
            ListKind::Atomic => leaf(path, c),
            ListKind::Set => {
                for v in la.iter().filter(|v| !ra.contains(v)) {
                    path.push(Pe::Value(canonical(v)));
                    c.removed.insert(path.clone());
                    path.pop();
                }
                for v in ra.iter().filter(|v| !la.contains(v)) {
                    path.push(Pe::Value(canonical(v)));
                    c.added.insert(path.clone());
                    path.pop();
                }
                post(path, c);
            }
            ListKind::Assoc(keys) => {
                let mut seen: Vec<Pe> = Vec::new();
                for item in la.iter().chain(ra.iter()) {
                    let pe = item_key(keys, item);
                    if seen.contains(&pe) {
                        continue;
                    }
                    let find = |items: &'_ [Value]| {
                        items.iter().find(|i| item_key(keys, i) == pe).cloned()
                    };
                    let (li, ri) = (find(la), find(ra));
                    path.push(pe.clone());
                    compare(li.as_ref(), ri.as_ref(), path, c);
                    path.pop();
                    seen.push(pe);
                }
                post(path, c);
            }
        }
    } else {
        leaf(path, c);
    }
}

// ---------------------------------------------------------------------------
// Which paths a write may own

/// The part of the object a write is about.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    /// The object itself: everything but `status` when the kind has a
    /// `status` subresource.
    Main,
    /// `/status`: only `status`.
    Status,
    /// `/scale`: only `spec.replicas`.
    Scale,
    /// A namespace's `/finalize`: only `spec.finalizers`.
    Finalize,
}

impl Part {
    pub(super) fn subresource(self) -> Option<&'static str> {
        match self {
            Part::Main => None,
            Part::Status => Some("status"),
            Part::Scale => Some("scale"),
            Part::Finalize => Some("finalize"),
        }
    }

    /// Whether a write of this part owns `path`. Server-kept metadata is
    /// never owned (`stripmeta.go`), nor are the top-level structs that
    /// every object has (`metadata`, `spec`, `status` themselves).
    fn owns(self, k: &KindSpec, path: &Path) -> bool {
        let Some(Pe::Field(first)) = path.first() else {
            return false;
        };
        if path.len() == 1 && matches!(first.as_str(), "metadata" | "spec" | "status") {
            return false;
        }
        match self {
            Part::Status => first == "status",
            Part::Scale => path.len() == 2 && first == "spec" && path[1].is_field("replicas"),
            Part::Finalize => path.len() >= 2 && first == "spec" && path[1].is_field("finalizers"),
            Part::Main => {
                if first == "apiVersion" || first == "kind" || (first == "status" && k.status) {
                    return false;
                }
                if first == "metadata" {
                    if let Some(Pe::Field(f)) = path.get(1) {
                        return !matches!(
                            f.as_str(),
                            "name"
                                | "namespace"
                                | "creationTimestamp"
                                | "selfLink"
                                | "uid"
                                | "clusterName"
                                | "generation"
                                | "managedFields"
                                | "resourceVersion"
                        );
                    }
                }
                true
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Entries

#[derive(Clone, Debug)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    subresource: Option<String>,
    time: Option<String>,
    set: Set,
}

impl Entry {
    fn new(manager: &str, operation: &str, k: &KindSpec, part: Part) -> Entry {
        Entry {
            manager: manager.to_string(),
            operation: operation.to_string(),
            api_version: api_version_of(k),
            subresource: part.subresource().map(str::to_string),
            time: None,
            set: Set::new(),
        }
    }

    /// The same manager (`BuildManagerIdentifier`: appliers are one manager
    /// whatever apiVersion they apply).
    fn same(&self, other: &Entry) -> bool {
        self.manager == other.manager
            && self.operation == other.operation
            && self.subresource == other.subresource
            && (self.operation == "Apply" || self.api_version == other.api_version)
    }

    /// As the real server names a manager in a conflict (`printManager`).
    fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            s.push_str(&format!(" with subresource {sub:?}"));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }

    fn decode(v: &Value) -> Option<Entry> {
        Some(Entry {
            manager: v["manager"].as_str().unwrap_or("").to_string(),
            operation: v["operation"].as_str()?.to_string(),
            api_version: v["apiVersion"].as_str().unwrap_or("").to_string(),
            subresource: v["subresource"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            time: v["time"].as_str().map(str::to_string),
            set: decode(&v["fieldsV1"]),
        })
    }

    fn encode(&self) -> Value {
        let mut e = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "fieldsType": "FieldsV1",
            "fieldsV1": encode(&self.set),
        });
        if let Some(t) = &self.time {
            e["time"] = json!(t);
        }
        if let Some(s) = &self.subresource {
            e["subresource"] = json!(s);
        }
        e
    }
}

/// The entries a write starts from: those of the request's object when it
/// carries any (a client may set managedFields; `[{}]` clears them), else
/// those of the stored object (`decodeLiveOrNew`).
fn starting_entries(request: Option<&Value>, old: Option<&Value>) -> Vec<Entry> {
    let decode_all = |v: &Value| -> Vec<Entry> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(Entry::decode)
            .collect()
    };
    if let Some(mf) = request.map(|r| &r["metadata"]["managedFields"]) {
        if let Some(a) = mf.as_array() {
            if a.len() == 1 && a[0].as_object().is_some_and(Map::is_empty) {
                return Vec::new();
            }
            let entries = decode_all(mf);
            if !entries.is_empty() {
                return entries;
            }
        }
    }
    old.map(|o| decode_all(&o["metadata"]["managedFields"]))
        .unwrap_or_default()
}

fn store(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.set.is_empty());
    let seconds = |e: &Entry| {
        e.time
            .as_deref()
            .and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
            .map_or(0, |t| t.unix_timestamp())
    };
    entries.sort_by(|p, q| {
        (
            &p.operation,
            seconds(p),
            &p.manager,
            &p.api_version,
            &p.subresource,
        )
            .cmp(&(
                &q.operation,
                seconds(q),
                &q.manager,
                &q.api_version,
                &q.subresource,
            ))
    });
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    let m = obj["metadata"].as_object_mut().unwrap();
    if entries.is_empty() {
        m.remove("managedFields");
    } else {
        m.insert(
            "managedFields".into(),
            Value::Array(entries.iter().map(Entry::encode).collect()),
        );
    }
}

fn comparison(k: &KindSpec, part: Part, old: Option<&Value>, new: &Value) -> Comparison {
    let mut c = Comparison::default();
    compare(old, Some(new), &mut Vec::new(), &mut c);
    c.retain(|p| part.owns(k, p));
    c
}

/// Record an Update of `part` by `manager` that turned `old` (none: a
/// create) into `new`. `request` is the object the client sent, whose
/// managedFields, when it has some, replace the stored ones.
pub(super) fn update(
    new: &mut Value,
    old: Option<&Value>,
    request: Option<&Value>,
    manager: &str,
    part: Part,
    k: &KindSpec,
) {
    let c = comparison(k, part, old, new);
    let taken: Set = c.added.union(&c.modified).cloned().collect();
    if let (None, Some(old), true, true) = (request, old, taken.is_empty(), c.removed.is_empty()) {
        // Nothing taken, nothing removed: the entries stay as stored.
        let kept = old["metadata"]["managedFields"].clone();
        if let Some(m) = new["metadata"].as_object_mut() {
            if kept.is_null() {
                m.remove("managedFields");
            } else {
                m.insert("managedFields".into(), kept);
            }
        }
        return;
    }
    let mut entries = starting_entries(request, old);
    let me = Entry::new(manager, "Update", k, part);
    for e in entries.iter_mut() {
        if !e.same(&me) {
            e.set.retain(|p| !taken.contains(p));
        }
        e.set.retain(|p| !c.removed.contains(p));
    }
    if !taken.is_empty() {
        match entries.iter_mut().find(|e| e.same(&me)) {
            Some(e) => {
                e.set.extend(taken);
                e.time = Some(timestamp());
            }
            None => {
                let mut e = me;
                e.set = taken;
                e.time = Some(timestamp());
                entries.push(e);
            }
        }
    }
    store(new, entries);
}

/// Record an Apply of `config` to `part` by `manager`, into `merged` (the
/// stored object `live`, none on create, with `config` merged in): prune
/// what the manager stopped applying, and take the fields it changes from
/// their other owners — or, unless `force`, refuse with the conflicts.
pub(super) fn apply(
    merged: &mut Value,
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    part: Part,
    force: bool,
    k: &KindSpec,
) -> Result<(), Failure> {
    let mut entries = starting_entries(None, live);
    let mut applied = Set::new();
    config_set(config, &mut Vec::new(), &mut applied);
    applied.retain(|p| part.owns(k, p));
    let me = Entry::new(manager, "Apply", k, part);
    let last = match entries.iter_mut().find(|e| e.same(&me)) {
        Some(e) => std::mem::replace(&mut e.set, applied.clone()),
        None => {
            let mut e = me.clone();
            e.set = applied.clone();
            e.time = Some(timestamp());
            entries.push(e);
            Set::new()
        }
    };
    let owned: Set = entries.iter().flat_map(|e| e.set.iter().cloned()).collect();
    for p in last.difference(&applied) {
        prune(merged, p, &owned);
    }

    let c = comparison(k, part, live, merged);
    let taken: Set = c.added.union(&c.modified).cloned().collect();
    let mut conflicts: Vec<(String, Path)> = Vec::new();
    for e in entries.iter().filter(|e| !e.same(&me)) {
        for p in e.set.intersection(&taken) {
            conflicts.push((e.describe(), p.clone()));
        }
    }
    if !force && !conflicts.is_empty() {
        return Err(conflict(conflicts));
    }
    for e in entries.iter_mut().filter(|e| !e.same(&me)) {
        e.set
            .retain(|p| !taken.contains(p) && !c.removed.contains(p));
    }
    let changed = live.is_none_or(|l| {
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(m) = v["metadata"].as_object_mut() {
                m.remove("managedFields");
            }
            v
        };
        strip(l) != strip(merged)
    });
    if changed {
        if let Some(e) = entries.iter_mut().find(|e| e.same(&me)) {
            e.time = Some(timestamp());
        }
    }
    store(merged, entries);
    Ok(())
}

/// A 409 as `NewConflictError` (fieldmanager `internal/conflict.go`) words it.
fn conflict(conflicts: Vec<(String, Path)>) -> Failure {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(m, p)| {
            json!({"reason": "FieldManagerConflict", "message": format!("conflict with {m}"), "field": display(p)})
        })
        .collect();
    let message = if let [(m, p)] = conflicts.as_slice() {
        format!(
            "Apply failed with 1 conflict: conflict with {m}: {}",
            display(p)
        )
    } else {
        let mut managers: Vec<&String> = conflicts.iter().map(|(m, _)| m).collect();
        managers.sort();
        managers.dedup();
        let mut lines = Vec::new();
        for m in managers {
            lines.push(format!("conflicts with {m}:"));
            for (_, p) in conflicts.iter().filter(|(mm, _)| mm == m) {
                lines.push(format!("- {}", display(p)));
            }
        }
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    Failure {
        code: 409,
        reason: "Conflict",
        message,
        details: json!({ "causes": causes }),
    }
}

// ---------------------------------------------------------------------------
// Pruning

fn get_mut<'a>(v: &'a mut Value, path: &[Pe]) -> Option<&'a mut Value> {
    let mut cur = v;
    for pe in path {
        cur = match pe {
            Pe::Field(f) => cur.as_object_mut()?.get_mut(f)?,
            Pe::Key(k) => cur.as_array_mut()?.iter_mut().find(|i| key_matches(k, i))?,
            Pe::Value(s) => {
                let want: Value = serde_json::from_str(s).ok()?;
                cur.as_array_mut()?.iter_mut().find(|i| **i == want)?
            }
            Pe::Index(i) => cur.as_array_mut()?.get_mut(*i)?,
        };
    }
    Some(cur)
}

fn remove_at(v: &mut Value, path: &[Pe]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let Some(container) = get_mut(v, parent) else {
        return;
    };
    match last {
        Pe::Field(f) => {
            if let Some(m) = container.as_object_mut() {
                m.remove(f);
            }
        }
        Pe::Key(k) => {
            if let Some(a) = container.as_array_mut() {
                a.retain(|i| !key_matches(k, i));
            }
        }
        Pe::Value(s) => {
            if let (Ok(want), Some(a)) =
                (serde_json::from_str::<Value>(s), container.as_array_mut())
            {
                a.retain(|i| *i != want);
            }
        }
        Pe::Index(i) => {
            if let Some(a) = container.as_array_mut() {
                if *i < a.len() {
                    a.remove(*i);
                }
            }
        }
    }
}

/// Remove `path` from `obj` unless a manager still owns it or something
/// under it (or it is the key of an item kept); then remove the maps and
/// lists it leaves empty that nobody owns (Go's `omitempty` would drop them).
fn prune(obj: &mut Value, path: &Path, owned: &Set) {
    let claimed = |p: &Path| owned.iter().any(|q| q.starts_with(p));
    if claimed(path) {
        return;
    }
    if let (Some(Pe::Field(f)), Some(Pe::Key(k))) =
        (path.last(), path.len().checked_sub(2).map(|i| &path[i]))
    {
        let key: Value = serde_json::from_str(k).unwrap_or(Value::Null);
        if key.get(f).is_some() {
            return;
        }
    }
    remove_at(obj, path);
    let mut parent = path.clone();
    loop {
        parent.pop();
        let top_struct = matches!(parent.as_slice(), [Pe::Field(f)] if matches!(f.as_str(), "metadata" | "spec" | "status"));
        if parent.is_empty() || top_struct || claimed(&parent) {
            break;
        }
        let empty = match get_mut(obj, &parent) {
            Some(Value::Object(m)) => m.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            _ => false,
        };
        if !empty {
            break;
        }
        remove_at(obj, &parent);
    }
}
