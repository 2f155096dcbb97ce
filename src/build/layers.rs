//! File layers: a source walked into entries and its key, reused from
//! the store or the shared cache, or written as a blob.

use std::collections::HashSet;

use super::{Accounts, BuildError, LayerRecord, Reporter, Session, follow, ids};
use crate::layer::scan::{EtcFiles, Found};
use crate::layer::statcache::StatCache;
use crate::layer::{self, Entries, EntryKind, Ids};
use crate::oci::digest::sha256_hex;
use crate::oci::image::{self, LayerDesc, hex_of};
use crate::spec::{Image, LayerSpec};
use crate::store::Kind;

impl<'a> Session<'a> {
    /// Resolves a layer's owner against the parent's accounts.
    pub(super) fn ids(
        &self,
        image: &Image,
        layer: &LayerSpec,
        accounts: &Accounts,
    ) -> Result<Ids, BuildError> {
        match &layer.owner {
            None => Ok(Ids::default()),
            Some(owner) => accounts.resolve(owner).map_err(|why| BuildError::Owner {
                file: self.spec.file_at(layer.pos).display().to_string(),
                line: layer.pos.line,
                column: layer.pos.col,
                image: image.name.clone(),
                owner: owner.to_string(),
                why,
            }),
        }
    }

    /// Walks a layer's source into entries and its key.
    pub(super) fn walk(
        &self,
        image: &Image,
        index: usize,
        layer: &LayerSpec,
        ids: Ids,
    ) -> Result<(Entries, String), BuildError> {
        let cache_path = self.store.statcache_path(&layer.src);
        let mut cache = StatCache::load(&cache_path);
        if layer.import {
            // The tarball's hash decides; it is unpacked only to be written.
            let err = |source| BuildError::Layer {
                image: image.name.clone(),
                layer: index,
                src: layer.src_text.clone(),
                source,
            };
            let meta = std::fs::metadata(&layer.src).map_err(|e| {
                err(layer::LayerError::Io {
                    path: layer.src.clone(),
                    source: e,
                })
            })?;
            let hash = cache.hash(&layer.src, &meta).map_err(|e| {
                err(layer::LayerError::Io {
                    path: layer.src.clone(),
                    source: e,
                })
            })?;
            let _ = cache.save(&cache_path);
            let input = serde_json::json!({
                "v": 1,
                "import": hash,
                "compression": self.compression(image).to_string(),
                "epoch": self.opts.stamp.epoch,
            });
            return Ok((
                Entries(Vec::new()),
                sha256_hex(&image::canonical_json(&input)),
            ));
        }
        let file_layer = layer::FileLayer {
            src: layer.src.clone(),
            dest: layer.dest.clone(),
            ids,
            mode: layer.mode,
            exclude: layer.exclude.clone(),
        };
        let entries =
            layer::walk(&file_layer, &mut cache, self.opts.threads).map_err(|source| {
                BuildError::Layer {
                    image: image.name.clone(),
                    layer: index,
                    src: layer.src_text.clone(),
                    source,
                }
            })?;
        if cache.may_be_stale() {
            let seen: HashSet<&str> = entries
                .0
                .iter()
                .filter_map(|e| match &e.kind {
                    EntryKind::File { src, .. } => src.to_str(),
                    _ => None,
                })
                .collect();
            cache.retain_under(&layer.src, &seen);
        }
        // A cache that cannot be saved only costs time on the next build.
        let _ = cache.save(&cache_path);
        let key = entries.key(self.compression(image), self.opts.stamp.epoch);
        Ok((entries, key))
    }

    /// How `image`'s layers are compressed: its `compression:`, else the
    /// build's (`--compression`).
    pub(super) fn compression(&self, image: &crate::spec::Image) -> layer::LayerCompression {
        image.compression.unwrap_or(self.opts.compression)
    }

    /// A reusable layer: its record, if its blob is still there.
    pub(super) fn cached_layer(&self, key: &str) -> Result<Option<LayerRecord>, BuildError> {
        Ok(self
            .store
            .get::<LayerRecord>(Kind::Layers, key)?
            .filter(|r| self.store.blob_size(&hex_of(&r.desc.digest)) == Some(r.desc.size)))
    }

    /// A layer from the shared cache, recorded in the local store, its
    /// blob fetched behind the build (see `fetch`) when a build runs, else
    /// now. A cache that cannot be reached costs a rebuild, not the build.
    pub(super) fn remote_layer(
        &self,
        image: &str,
        key: &str,
        reporter: &dyn Reporter,
    ) -> Result<Option<LayerRecord>, BuildError> {
        let Some(cache) = self.cache else {
            return Ok(None);
        };
        match cache.lookup(key) {
            Ok(Some(record)) => {
                let job = super::fetch::Job {
                    image: image.to_string(),
                    key: key.to_string(),
                    desc: record.desc.clone(),
                };
                if !self.store.has_blob(&hex_of(&record.desc.digest))
                    && !self.fetches.push(job)
                    && let Err(e) = cache.fetch(key, &record.desc)
                {
                    reporter.warning(&format!("layer cache: {e}; building instead"));
                    return Ok(None);
                }
                self.store.put(Kind::Layers, key, &record)?;
                Ok(Some(record))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                reporter.warning(&format!("layer cache: {e}; building instead"));
                Ok(None)
            }
        }
    }

    pub(super) fn write_layer(
        &self,
        image: &Image,
        index: usize,
        layer: &LayerSpec,
        entries: &Entries,
        key: &str,
        reporter: &dyn Reporter,
    ) -> Result<LayerRecord, BuildError> {
        if layer.import {
            let work = self.store.temp_dir("import-")?;
            let entries = layer::import::entries(&layer.src, work.path(), self.opts.threads)
                .map_err(|source| BuildError::Layer {
                    image: image.name.clone(),
                    layer: index,
                    src: layer.src_text.clone(),
                    source,
                })?;
            let created_by = format!("imgbuild: import {}", layer.src_text);
            let w = self.file_layer(image, index, &layer.src_text, key, created_by);
            return self.write_entries(&entries, w, reporter);
        }
        let created_by = format!("imgbuild: copy {} {}", layer.src_text, layer.dest);
        let w = self.file_layer(image, index, &layer.src_text, key, created_by);
        self.write_entries(entries, w, reporter)
    }

    /// How a file layer is written: stamped with the build's epoch, its
    /// tree not kept (nothing runs over a file layer right away).
    fn file_layer<'w>(
        &self,
        image: &'w Image,
        index: usize,
        what: &'w str,
        key: &'w str,
        created_by: String,
    ) -> LayerWrite<'w> {
        LayerWrite {
            image,
            index,
            what,
            key,
            created_by,
            epoch: self.opts.stamp.epoch,
            follow: None,
        }
    }

    /// Writes entries as a layer blob and records it under `w.key`.
    pub(super) fn write_entries(
        &self,
        entries: &Entries,
        w: LayerWrite<'_>,
        reporter: &dyn Reporter,
    ) -> Result<LayerRecord, BuildError> {
        let LayerWrite {
            image,
            index,
            what,
            key,
            created_by,
            epoch,
            follow,
        } = w;
        let layer_err = |source| BuildError::Layer {
            image: image.name.clone(),
            layer: index,
            src: what.to_string(),
            source,
        };
        reporter.layer_started(&image.name, index, entries.content_bytes());
        let tmp = self.store.temp_file()?;
        let (mut follow, below) = match follow {
            Some((f, below)) => (Some(f), below),
            None => (None, &[][..]),
        };
        let opts = layer::BlobOptions {
            epoch,
            compression: self.compression(image),
            threads: self.opts.threads,
            copy: follow.as_mut().map(|f| f.writer()),
        };
        let (tmp, blob) = layer::write_blob(entries, opts, tmp, &mut |done| {
            reporter.layer_progress(&image.name, index, done)
        })
        .map_err(layer_err)?;
        self.store.commit_blob(tmp, &hex_of(&blob.digest))?;
        if let Some(f) = follow {
            let mut hexes: Vec<String> = below.iter().map(|l| hex_of(&l.digest)).collect();
            hexes.push(hex_of(&blob.digest));
            if let Err(e) = f.finish(&self.store.rootfs_dir(), &hexes) {
                // Only a cache: the next user unpacks the chain instead.
                reporter.warning(&format!(
                    "{}: layer {index}'s tree not kept ({e}); it is unpacked when next needed",
                    image.name
                ));
            }
        }
        ids::remember(self.store, &blob.digest, etc_files(entries)?)?;
        if self.layer_facts {
            // Only a shortcut: an SBOM without it reads the blob instead.
            let _ = crate::sbom::layers::remember(self.store, &blob.digest, entries);
        }
        let record = LayerRecord {
            desc: LayerDesc {
                digest: blob.digest,
                diff_id: blob.diff_id,
                size: blob.size,
                media_type: self.compression(image).media_type().to_string(),
            },
            created_by,
        };
        self.store.put(Kind::Entries, key, entries)?;
        self.store.put(Kind::Layers, key, &record)?;
        Ok(record)
    }
}

/// A layer about to be written: whose, what from, and how.
pub(super) struct LayerWrite<'w> {
    pub image: &'w Image,
    pub index: usize,
    /// What the layer is made from, for errors: a `src:`, `run` or `debian`.
    pub what: &'w str,
    pub key: &'w str,
    pub created_by: String,
    /// Every mtime in the layer.
    pub epoch: i64,
    /// A [`follow::Follow`] started over the tree of the layers below (and
    /// those layers): the tree of them plus this layer is made as the layer
    /// is written and kept in the store.
    pub follow: Option<(follow::Follow, &'w [LayerDesc])>,
}

/// /etc/passwd and /etc/group as a file layer leaves them.
fn etc_files(entries: &Entries) -> Result<EtcFiles, BuildError> {
    let mut etc = EtcFiles::default();
    for e in &entries.0 {
        let slot = match e.path.as_str() {
            "etc/passwd" => &mut etc.passwd,
            "etc/group" => &mut etc.group,
            _ => continue,
        };
        match &e.kind {
            EntryKind::File { src, .. } => {
                let text = std::fs::read_to_string(src).map_err(|source| BuildError::Io {
                    path: src.clone(),
                    source,
                })?;
                *slot = Found::Content(text);
            }
            EntryKind::Whiteout => *slot = Found::Deleted,
            _ => {}
        }
    }
    Ok(etc)
}
