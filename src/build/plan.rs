//! `plan`: what a build would do, and for each rebuild the input that changed.
use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::{Accounts, BuildError, RefRecord, Session};
use crate::layer::{Entries, Entry, EntryKind};
use crate::oci::image::ImageRecord;
use crate::spec::Parent;
use crate::store::Kind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Everything is in the store already.
    Reuse,
    /// Layers are reused; the image (config, manifest) is put together anew.
    Assemble,
    /// At least one layer is written.
    Build,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerPlan {
    pub index: usize,
    pub src: String,
    pub dest: String,
    pub build: bool,
    pub key: String,
    /// Why it is built, when it is.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImagePlan {
    pub name: String,
    pub action: Action,
    pub reasons: Vec<String>,
    pub layers: Vec<LayerPlan>,
    /// What images.lock does not pin of what this image asks for, as
    /// `build --locked` would refuse it (empty when the lock holds).
    pub unpinned: Vec<String>,
}

/// How many changed paths a reason names before it says "and N more".
const NAMED: usize = 3;

impl Session<'_> {
    /// Plans `names` and what they need, without writing anything but
    /// caches: the stat cache, and a stored parent's dpkg status once read
    /// from its layers (to compare with images.lock).
    pub fn plan(&self, names: &[String]) -> Result<Vec<ImagePlan>, BuildError> {
        let order = self.closure(names)?;
        let pulled = self.pull_parents(&order)?;
        let lock_path = crate::debian::lock::path_for(self.spec);
        let lock = crate::debian::lock::Lock::read(&lock_path);
        let sources = self.unpinned_sources(lock.as_ref().ok().and_then(Option::as_ref));
        // A source no planned image's layer names still fails a --locked
        // build: loading images.yaml fetches every source.
        let uses = |image: &crate::spec::Image, source: &str| {
            image
                .layers
                .iter()
                .any(|l| l.source.as_deref() == Some(source))
        };
        let unused: Vec<String> = sources
            .iter()
            .filter(|(n, _)| {
                !order
                    .iter()
                    .any(|i| self.spec.images.get(i).is_some_and(|i| uses(i, n)))
            })
            .map(|(_, what)| format!("{what}, which every --locked build loads"))
            .collect();
        // Per image: the record it would have, if known without building.
        let mut known: HashMap<String, Option<ImageRecord>> = HashMap::new();
        let mut plans = Vec::new();
        for name in order {
            let image = self.image(&name)?;
            let last: Option<RefRecord> = self.last_build(&name)?;
            let mut reasons = Vec::new();
            let base: Option<(String, Option<ImageRecord>)> = match &image.parent {
                Parent::Scratch => None,
                Parent::Registry(r) => Some((r.to_string(), pulled.get(r).cloned())),
                Parent::Image(p) => Some((p.clone(), known.get(p).cloned().flatten())),
            };
            // Owner names resolve against the parent as it will be; if it is
            // not built yet, against its last build.
            // None: the parent has never been built, so names cannot be
            // resolved yet; layers that need them will be built.
            let accounts = match &base {
                Some((p, rec)) if image.layers.iter().any(|l| l.owner.is_some()) => {
                    let rec = match rec {
                        Some(r) => Some(r.clone()),
                        None => self.last_build(p)?.map(|r| r.image),
                    };
                    match rec {
                        Some(r) => Some(Accounts::of(self.store, &r)?),
                        None => None,
                    }
                }
                _ => Some(Accounts::none()),
            };
            let mut layers = Vec::new();
            let mut keys = Vec::new();
            if image.debian.is_some() {
                let plan = self.plan_debian(image, base.as_ref())?;
                if let Some(r) = &plan.reason {
                    reasons.push(format!("layer 0 (debian): {r}"));
                }
                keys.push(plan.key.clone());
                layers.push(plan);
            }
            let first = layers.len();
            for (i, l) in image.layers.iter().enumerate() {
                let i = i + first;
                let needs_names = l.owner.as_ref().is_some_and(|o| o.has_names());
                let ids = match &accounts {
                    Some(a) => self.ids(image, l, a)?,
                    None if needs_names => {
                        let p = base.as_ref().map_or("", |b| b.0.as_str());
                        let reason = format!(
                            "owner {} is resolved once {p} is built",
                            l.owner
                                .as_ref()
                                .map(ToString::to_string)
                                .unwrap_or_default()
                        );
                        reasons.push(format!("layer {i} ({}): {reason}", l.src_text));
                        layers.push(LayerPlan {
                            index: i,
                            src: l.src_text.clone(),
                            dest: l.dest.clone(),
                            build: true,
                            key: String::new(),
                            reason: Some(reason),
                        });
                        keys.push(String::new());
                        continue;
                    }
                    None => self.ids(image, l, &Accounts::none())?,
                };
                let (entries, key) = self.walk(image, i, l, ids)?;
                let cached = self.cached_layer(&key)?.is_some();
                let reason = (!cached).then(|| {
                    let r = match (l.import, &last) {
                        (true, Some(_)) => "the tarball changed".to_string(),
                        _ => self.layer_reason(last.as_ref(), i, &entries),
                    };
                    // A fetched source says what it is now, then what moved.
                    match l.source.as_ref().and_then(|n| self.spec.sources.get(n)) {
                        Some(s) => format!("source {} ({}): {r}", s.spec.name, s.resolved.identity),
                        None => r,
                    }
                });
                if let Some(r) = &reason {
                    reasons.push(format!("layer {i} ({}): {r}", l.src_text));
                }
                layers.push(LayerPlan {
                    index: i,
                    src: l.src_text.clone(),
                    dest: l.dest.clone(),
                    build: !cached,
                    key: key.clone(),
                    reason,
                });
                keys.push(key);
            }
            if !image.run.is_empty() {
                let plan = self.plan_run(image, base.as_ref(), &layers, &keys)?;
                if let Some(r) = &plan.reason {
                    reasons.push(format!("layer {} (run): {r}", plan.index));
                }
                keys.push(plan.key.clone());
                layers.push(plan);
            }
            let parent_unknown = matches!(&base, Some((_, None)));
            let (action, record) = if layers.iter().any(|l| l.build) {
                (Action::Build, None)
            } else if parent_unknown {
                (Action::Assemble, None)
            } else {
                let key = self.image_key(image, base.as_ref().and_then(|b| b.1.as_ref()), &keys);
                match self.cached_image(&key, base.as_ref().and_then(|b| b.1.as_ref()))? {
                    Some(r) => (Action::Reuse, Some(r)),
                    None => (Action::Assemble, None),
                }
            };
            if let Some((p, None)) = &base {
                reasons.push(if action == Action::Assemble {
                    repointed(p, layers.len())
                } else {
                    format!("parent {p} changes")
                });
            }
            if action == Action::Assemble && !parent_unknown {
                reasons.push(match &last {
                    None => "not built before".to_string(),
                    Some(l) if l.layer_keys == keys => {
                        "config, parent or stamp changed".to_string()
                    }
                    Some(_) => "its layers are in the store from another build".to_string(),
                });
            }
            let root = |at: &crate::spec::Image| match &at.parent {
                Parent::Scratch => None,
                Parent::Registry(r) => pulled.get(r).cloned(),
                Parent::Image(p) => known.get(p).cloned().flatten(),
            };
            let mut unpinned: Vec<String> = sources
                .iter()
                .filter(|(n, _)| uses(image, n))
                .map(|(_, what)| what.clone())
                .collect();
            unpinned.extend(unused.iter().cloned());
            if let Some(why) = self.debian_unpinned(image, &lock, &root)? {
                unpinned.insert(0, why);
            }
            known.insert(name.clone(), record);
            plans.push(ImagePlan {
                name,
                action,
                reasons,
                layers,
                unpinned,
            });
        }
        Ok(plans)
    }

    /// The git sources images.lock does not pin as `--locked` needs them
    /// (same url and ref), by name, with why; decided from the lock alone.
    fn unpinned_sources(&self, lock: Option<&crate::debian::lock::Lock>) -> Vec<(String, String)> {
        let none = Default::default();
        let pins = lock.map_or(&none, |l| &l.sources);
        let mut out = Vec::new();
        for (name, s) in &self.spec.sources {
            let crate::spec::SourceLocation::Git { url, reference } = &s.spec.location else {
                continue;
            };
            if let Err(what) = crate::source::git_pin(pins, name, url, reference) {
                out.push((name.clone(), what));
            }
        }
        out
    }

    /// The run layer: its key when everything below it is known.
    /// A Debian layer's key is known from a current lock; without one the
    /// packages are resolved at build time.
    fn plan_debian(
        &self,
        image: &crate::spec::Image,
        base: Option<&(String, Option<ImageRecord>)>,
    ) -> Result<LayerPlan, BuildError> {
        let plan = |build: bool, key: String, reason: Option<String>| LayerPlan {
            index: 0,
            src: "debian".into(),
            dest: "/".into(),
            build,
            key,
            reason,
        };
        let Some(d) = &image.debian else {
            return Ok(plan(false, String::new(), None));
        };
        let below = match base {
            None => Vec::new(),
            Some((_, Some(r))) => r.layers.to_vec(),
            Some((p, None)) => {
                return Ok(plan(
                    true,
                    String::new(),
                    Some(format!("installs on {p}, which changes")),
                ));
            }
        };
        let path = crate::debian::lock::path_for(self.spec);
        let lock = crate::debian::lock::Lock::read(&path).ok().flatten();
        let Some(locked) = lock
            .as_ref()
            .and_then(|l| l.image(&path, self.spec, &image.name).ok())
        else {
            return Ok(plan(
                true,
                String::new(),
                Some("no current images.lock: the packages are resolved when it builds".into()),
            ));
        };
        let epoch = if self.opts.stamp.epoch_given {
            self.opts.stamp.epoch
        } else {
            locked.epoch
        };
        let key = super::debian::key(
            &below,
            d,
            locked,
            self.compression(image),
            epoch,
            self.keyed_chroot(),
        );
        let cached = self.cached_layer(&key)?.is_some();
        Ok(plan(
            !cached,
            key,
            (!cached).then(|| "the locked packages or the layers below changed".into()),
        ))
    }

    fn plan_run(
        &self,
        image: &crate::spec::Image,
        base: Option<&(String, Option<ImageRecord>)>,
        layers: &[LayerPlan],
        keys: &[String],
    ) -> Result<LayerPlan, BuildError> {
        let index = layers.len();
        let plan = |build: bool, key: String, reason: Option<String>| LayerPlan {
            index,
            src: "run".into(),
            dest: "/".into(),
            build,
            key,
            reason,
        };
        let base_record = match base {
            None => None,
            Some((_, Some(r))) => Some(r),
            Some((p, None)) => {
                return Ok(plan(
                    true,
                    String::new(),
                    Some(format!("runs on {p}, which changes")),
                ));
            }
        };
        if layers.iter().any(|l| l.build) {
            return Ok(plan(
                true,
                String::new(),
                Some("a layer below changes".into()),
            ));
        }
        let mut below: Vec<crate::oci::image::LayerDesc> =
            base_record.map(|b| b.layers.to_vec()).unwrap_or_default();
        for k in keys {
            match self.cached_layer(k)? {
                Some(r) => below.push(r.desc),
                None => {
                    return Ok(plan(
                        true,
                        String::new(),
                        Some("a layer below changes".into()),
                    ));
                }
            }
        }
        let (_, key) = self.run_key(image, base_record, &below)?;
        let cached = self.cached_layer(&key)?.is_some();
        Ok(plan(
            !cached,
            key,
            (!cached).then(|| "its commands, their environment or the layers below changed".into()),
        ))
    }

    fn layer_reason(&self, last: Option<&RefRecord>, index: usize, entries: &Entries) -> String {
        let Some(last) = last else {
            return "not built before".to_string();
        };
        let Some(old_key) = last.layer_keys.get(index) else {
            return "new layer".to_string();
        };
        match self.store.get::<Entries>(Kind::Entries, old_key) {
            Ok(Some(old)) => describe_changes(&old, entries),
            _ => "its inputs changed".to_string(),
        }
    }
}

/// An image whose layers are all in the store, on a parent that changes:
/// only its config and manifest are made anew, and a push uploads none of
/// its layers (the parent's are mounted from the parent's repository).
fn repointed(parent: &str, layers: usize) -> String {
    let those = match layers {
        0 => "it has no layer of its own".to_string(),
        1 => "its layer is reused, not built".to_string(),
        n => format!("its {n} layers are reused, none built"),
    };
    format!("re-pointed onto {parent}, which changes: {those}")
}

/// Equal as the layer sees them: where a file was read from does not count
/// (and is not stored with the entries).
fn same(a: &Entry, b: &Entry) -> bool {
    let kind = match (&a.kind, &b.kind) {
        (
            EntryKind::File {
                size: s1,
                sha256: h1,
                ..
            },
            EntryKind::File {
                size: s2,
                sha256: h2,
                ..
            },
        ) => s1 == s2 && h1 == h2,
        (k1, k2) => k1 == k2,
    };
    kind && (a.mode, a.uid, a.gid) == (b.mode, b.uid, b.gid)
}

/// "2 changed (a, b), 1 added (c)": the difference between two entry lists.
pub fn describe_changes(old: &Entries, new: &Entries) -> String {
    let old_map: BTreeMap<&str, &Entry> = old.0.iter().map(|e| (e.path.as_str(), e)).collect();
    let new_map: BTreeMap<&str, &Entry> = new.0.iter().map(|e| (e.path.as_str(), e)).collect();
    let mut changed = Vec::new();
    let mut added = Vec::new();
    let mut removed = Vec::new();
    for (p, e) in &new_map {
        match old_map.get(p) {
            None => added.push(*p),
            Some(o) if !same(o, e) => changed.push(*p),
            Some(_) => {}
        }
    }
    for p in old_map.keys() {
        if !new_map.contains_key(p) {
            removed.push(*p);
        }
    }
    let part = |what: &str, list: &[&str]| {
        if list.is_empty() {
            return None;
        }
        let named: Vec<&str> = list.iter().take(NAMED).copied().collect();
        let more = list.len().saturating_sub(NAMED);
        let tail = if more > 0 {
            format!(", and {more} more")
        } else {
            String::new()
        };
        Some(format!(
            "{} {what} ({}{tail})",
            list.len(),
            named.join(", ")
        ))
    };
    let parts: Vec<String> = [
        part("changed", &changed),
        part("added", &added),
        part("removed", &removed),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() {
        "compression or SOURCE_DATE_EPOCH changed".to_string()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(path: &str, sha: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::File {
                src: Default::default(),
                size: 1,
                sha256: sha.into(),
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn where_a_file_was_read_from_is_not_a_change() {
        let mut a = e("a", "1");
        if let EntryKind::File { src, .. } = &mut a.kind {
            *src = "/elsewhere/a".into();
        }
        assert!(same(&a, &e("a", "1")));
        assert!(!same(&a, &e("a", "2")));
    }

    #[test]
    fn a_repointed_image_says_its_layers_are_reused() {
        assert_eq!(
            repointed("moodle-4.5", 1),
            "re-pointed onto moodle-4.5, which changes: its layer is reused, not built"
        );
        assert_eq!(
            repointed("moodle-5.1", 3),
            "re-pointed onto moodle-5.1, which changes: its 3 layers are reused, none built"
        );
        assert_eq!(
            repointed("base", 0),
            "re-pointed onto base, which changes: it has no layer of its own"
        );
    }

    #[test]
    fn changes_are_named() {
        let old = Entries(vec![e("a", "1"), e("b", "1"), e("c", "1")]);
        let new = Entries(vec![e("a", "2"), e("c", "1"), e("d", "1")]);
        assert_eq!(
            describe_changes(&old, &new),
            "1 changed (a), 1 added (d), 1 removed (b)"
        );
        let many = Entries((0..5).map(|i| e(&format!("f{i}"), "x")).collect());
        assert_eq!(
            describe_changes(&Entries::default(), &many),
            "5 added (f0, f1, f2, and 2 more)"
        );
    }
}
