//! Image records as stored (`images/<key>.json`, and in `refs/`): an image
//! names its parent's record instead of repeating the parent's layers, so
//! the records of a chain of n images hold n layers, not n²/2, and a
//! no-change build reads and checks each layer once.
//!
//! Records written before this (every layer listed, no `below`) read the
//! same way.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{BuildError, RefRecord};
use crate::oci::image::{ImageRecord, LayerDesc, hex_of};
use crate::store::{Kind, Store};

/// An image record on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Stored {
    manifest: String,
    manifest_size: u64,
    config: String,
    config_size: u64,
    /// The parent whose layers come first; None: `layers` are all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    below: Option<Below>,
    /// The image's own layers (all of them without `below`).
    layers: Vec<LayerDesc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Below {
    /// The parent's image key, whose record holds its layers.
    key: String,
    /// The parent's manifest and layer count, to tell a stale link.
    manifest: String,
    layers: usize,
}

/// A ref as stored: [`RefRecord`] with its image as [`Stored`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRef {
    key: String,
    layer_keys: Vec<String>,
    image: Stored,
}

/// The parent an image is assembled on, as a record names it.
#[derive(Clone, Copy)]
pub struct ParentRecord<'r> {
    /// Its image key; None for a registry parent (its record is not in
    /// `images/`, so the child's record lists every layer).
    pub key: Option<&'r str>,
    pub record: &'r ImageRecord,
}

impl Stored {
    /// `record`, built on `parent`, as stored.
    pub(super) fn of(record: &ImageRecord, parent: Option<ParentRecord<'_>>) -> Stored {
        let below = parent.and_then(|p| {
            let key = p.key?;
            (record.layers.len() >= p.record.layers.len()).then(|| Below {
                key: key.to_string(),
                manifest: p.record.manifest.clone(),
                layers: p.record.layers.len(),
            })
        });
        let from = below.as_ref().map_or(0, |b| b.layers);
        Stored {
            manifest: record.manifest.clone(),
            manifest_size: record.manifest_size,
            config: record.config.clone(),
            config_size: record.config_size,
            layers: record.layers.since(from).into_iter().cloned().collect(),
            below,
        }
    }

    /// The blobs this record adds to its parent's: own layers, config,
    /// manifest.
    pub(super) fn own_blobs(&self) -> Vec<String> {
        let mut v: Vec<String> = self.layers.iter().map(|l| hex_of(&l.digest)).collect();
        v.push(hex_of(&self.config));
        v.push(hex_of(&self.manifest));
        v
    }

    /// The whole record, on `parent` when it has a `below`; None when
    /// `parent` is not the one it names (a stale record).
    pub(super) fn on(self, parent: Option<&ImageRecord>) -> Option<ImageRecord> {
        let layers = match (&self.below, parent) {
            (None, _) => self.layers.into(),
            (Some(b), Some(p)) if b.manifest == p.manifest && b.layers == p.layers.len() => {
                p.layers.on(self.layers)
            }
            (Some(_), _) => return None,
        };
        Some(ImageRecord {
            manifest: self.manifest,
            manifest_size: self.manifest_size,
            config: self.config,
            config_size: self.config_size,
            layers,
        })
    }
}

impl StoredRef {
    pub(super) fn of(r: &RefRecord, parent: Option<ParentRecord<'_>>) -> StoredRef {
        StoredRef {
            key: r.key.clone(),
            layer_keys: r.layer_keys.clone(),
            image: Stored::of(&r.image, parent),
        }
    }

    /// The blobs of the whole image, reading the records below it (for gc).
    pub fn blobs(&self, store: &Store) -> Vec<String> {
        let mut out = self.image.own_blobs();
        let mut below = self.image.below.clone();
        // A chain of n refs makes gc read n²/2 records here; gc is rare.
        while let Some(b) = below {
            match store.get::<Stored>(Kind::Images, &b.key).ok().flatten() {
                Some(s) => {
                    out.extend(s.own_blobs());
                    below = s.below;
                }
                None => break,
            }
        }
        out
    }
}

/// Image records read back in this process, by image key: a chain is read
/// once, not once per image.
#[derive(Default)]
pub(super) struct Memo(Mutex<HashMap<String, ImageRecord>>);

impl Memo {
    fn get(&self, key: &str) -> Option<ImageRecord> {
        self.0.lock().ok()?.get(key).cloned()
    }

    fn put(&self, key: &str, record: &ImageRecord) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(key.to_string(), record.clone());
        }
    }

    /// `stored` (the record of image key `key`) made whole from the records
    /// below it; None when one of them is gone or stale.
    pub(super) fn resolve(
        &self,
        store: &Store,
        key: &str,
        stored: Stored,
    ) -> Result<Option<ImageRecord>, BuildError> {
        let mut chain = vec![(key.to_string(), stored)];
        // Down to a record known already or one with every layer; a loop,
        // not recursion: chains may be thousands of images long.
        let mut base = loop {
            let Some(b) = chain.last().and_then(|(_, s)| s.below.clone()) else {
                break None;
            };
            if let Some(r) = self.get(&b.key) {
                break Some(r);
            }
            match store.get::<Stored>(Kind::Images, &b.key)? {
                Some(s) => chain.push((b.key, s)),
                None => return Ok(None),
            }
        };
        for (k, s) in chain.into_iter().rev() {
            let Some(r) = s.on(base.as_ref()) else {
                return Ok(None);
            };
            self.put(&k, &r);
            base = Some(r);
        }
        Ok(base)
    }

    /// The last build of `name` in `graph`, made whole.
    pub(super) fn last_build(
        &self,
        store: &Store,
        graph: &str,
        name: &str,
    ) -> Result<Option<RefRecord>, BuildError> {
        let Some(stored) = store.get_ref::<StoredRef>(graph, name)? else {
            return Ok(None);
        };
        let StoredRef {
            key,
            layer_keys,
            image,
        } = stored;
        Ok(self.resolve(store, &key, image)?.map(|image| RefRecord {
            key,
            layer_keys,
            image,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(i: usize) -> LayerDesc {
        LayerDesc {
            digest: format!("sha256:{i:064x}"),
            diff_id: format!("sha256:{:064x}", i + 1_000_000),
            size: i as u64,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        }
    }

    fn record(n: usize, layers: crate::oci::image::Layers) -> ImageRecord {
        ImageRecord {
            manifest: format!("sha256:{:064x}", n + 2_000_000),
            manifest_size: 1,
            config: format!("sha256:{:064x}", n + 3_000_000),
            config_size: 1,
            layers,
        }
    }

    #[test]
    fn a_long_chain_is_stored_once_and_read_back_whole() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let n = 1000;
        let keys: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
        let mut records: Vec<ImageRecord> = Vec::new();
        for i in 0..n {
            let below = records.last().map(|r| r.layers.clone()).unwrap_or_default();
            let r = record(i, below.on(vec![layer(i)]));
            let parent = i.checked_sub(1).map(|p| ParentRecord {
                key: Some(keys[p].as_str()),
                record: &records[p],
            });
            let stored = Stored::of(&r, parent);
            assert_eq!(
                stored.layers.len(),
                1,
                "image {i} repeats its parent's layers"
            );
            store.put(Kind::Images, &keys[i], &stored).unwrap();
            records.push(r);
        }
        // Every record on disk names one layer: linear in the chain.
        let bytes: u64 = std::fs::read_dir(d.path().join("images"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(bytes < 1_000 * n as u64, "{bytes} bytes of records");
        let memo = Memo::default();
        let top = format!("k{}", n - 1);
        let stored: Stored = store.get(Kind::Images, &top).unwrap().unwrap();
        let whole = memo.resolve(&store, &top, stored).unwrap().unwrap();
        assert_eq!(whole, records[n - 1]);
        assert_eq!(whole.layers.len(), n);
        assert_eq!(whole.layers.since(n - 2), [&layer(n - 2), &layer(n - 1)]);
        // A record whose parent is gone reads as absent, not as half an image.
        std::fs::remove_file(d.path().join("images/k10.json")).unwrap();
        let memo = Memo::default();
        let stored: Stored = store.get(Kind::Images, &top).unwrap().unwrap();
        assert!(memo.resolve(&store, &top, stored).unwrap().is_none());
    }

    #[test]
    fn a_stale_link_is_not_followed() {
        let base = record(0, vec![layer(0)].into());
        let child = record(1, base.layers.on(vec![layer(1)]));
        let stored = Stored::of(
            &child,
            Some(ParentRecord {
                key: Some("k0"),
                record: &base,
            }),
        );
        let other = record(9, vec![layer(9)].into());
        assert!(stored.clone().on(Some(&other)).is_none());
        assert!(stored.clone().on(None).is_none());
        assert_eq!(stored.on(Some(&base)), Some(child));
    }

    #[test]
    fn records_with_every_layer_still_read() {
        let full = record(1, vec![layer(0), layer(1)].into());
        let old = serde_json::to_string(&full).unwrap();
        let stored: Stored = serde_json::from_str(&old).unwrap();
        assert_eq!(stored.on(None), Some(full));
    }
}
