//! Image assembly: a parent image plus new layers plus config gives a new
//! image value (config and manifest bytes); nothing is edited in place.
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;

use oci_spec::image::{
    Arch, Config, Descriptor, DescriptorBuilder, Digest, History, HistoryBuilder,
    ImageConfiguration, ImageManifest, ImageManifestBuilder, MediaType, Os, RootFs,
};
use serde::{Deserialize, Serialize};

use crate::digest::digest_of;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{what} is not valid JSON of its kind: {reason}")]
    Parse { what: String, reason: String },
    #[error("building the {what}: {reason}")]
    Build { what: &'static str, reason: String },
}

/// What an image changes in its parent's run config; see [`assemble`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConfigChange {
    pub env: BTreeMap<String, String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    /// `PORT/PROTO`.
    pub ports: Vec<String>,
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
}

/// A layer as an image sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerDesc {
    /// `sha256:…` of the compressed blob.
    pub digest: String,
    /// `sha256:…` of the uncompressed tar.
    pub diff_id: String,
    pub size: u64,
    pub media_type: String,
}

/// An image: its manifest and config blobs, and its layers in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `sha256:…` of the manifest.
    pub manifest: String,
    pub manifest_size: u64,
    /// `sha256:…` of the config.
    pub config: String,
    pub config_size: u64,
    pub layers: Layers,
}

/// An image's layers, bottom first. A child shares its parent's list
/// instead of copying it: a chain of n images would otherwise hold n lists
/// of up to n layers (quadratic memory and work). Serialises as a plain
/// list.
#[derive(Clone, Default)]
pub struct Layers(Option<Arc<LayerNode>>);

struct LayerNode {
    below: Layers,
    own: Vec<LayerDesc>,
    len: usize,
}

impl Layers {
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |n| n.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// These layers with `own` on top; `self` is shared, not copied.
    pub fn on(&self, own: Vec<LayerDesc>) -> Layers {
        if own.is_empty() {
            return self.clone();
        }
        Layers(Some(Arc::new(LayerNode {
            below: self.clone(),
            len: self.len() + own.len(),
            own,
        })))
    }

    /// The lists that make these layers, top first.
    fn nodes(&self) -> Vec<&LayerNode> {
        let mut out = Vec::new();
        let mut cur = self.0.as_deref();
        while let Some(n) = cur {
            out.push(n);
            cur = n.below.0.as_deref();
        }
        out
    }

    /// Bottom first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &LayerDesc> {
        self.nodes().into_iter().rev().flat_map(|n| n.own.iter())
    }

    pub fn to_vec(&self) -> Vec<LayerDesc> {
        self.iter().cloned().collect()
    }

    /// The layers from index `from` on, found without walking what is
    /// below `from`.
    pub fn since(&self, from: usize) -> Vec<&LayerDesc> {
        let mut parts = Vec::new();
        let mut cur = self.0.as_deref();
        while let Some(n) = cur {
            let start = n.len - n.own.len();
            if n.len <= from {
                break;
            }
            parts.push(&n.own[from.saturating_sub(start)..]);
            if start <= from {
                break;
            }
            cur = n.below.0.as_deref();
        }
        parts.into_iter().rev().flatten().collect()
    }

    pub fn last(&self) -> Option<&LayerDesc> {
        self.iter().next_back()
    }
}

impl From<Vec<LayerDesc>> for Layers {
    fn from(v: Vec<LayerDesc>) -> Layers {
        Layers::default().on(v)
    }
}

impl Drop for Layers {
    // Iterative: dropping the last image of a long chain would otherwise
    // recurse once per image and could overflow a worker thread's stack.
    fn drop(&mut self) {
        let mut cur = self.0.take();
        while let Some(arc) = cur {
            match Arc::try_unwrap(arc) {
                Ok(mut node) => cur = node.below.0.take(),
                Err(_) => break,
            }
        }
    }
}

impl PartialEq for Layers {
    fn eq(&self, other: &Layers) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Layers {}

impl std::fmt::Debug for Layers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for Layers {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Layers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Layers, D::Error> {
        Vec::<LayerDesc>::deserialize(d).map(Layers::from)
    }
}

impl ImageRecord {
    /// Every blob the image needs: layers, config, manifest.
    pub fn blobs(&self) -> Vec<String> {
        let mut v: Vec<String> = self.layers.iter().map(|l| hex_of(&l.digest)).collect();
        v.push(hex_of(&self.config));
        v.push(hex_of(&self.manifest));
        v
    }
}

/// "sha256:abc" → "abc".
pub fn hex_of(digest: &str) -> String {
    digest.strip_prefix("sha256:").unwrap_or(digest).to_string()
}

/// What every image of one build shares.
#[derive(Debug, Clone, Serialize)]
pub struct Stamp {
    /// SOURCE_DATE_EPOCH: every mtime and `created`.
    pub epoch: i64,
    /// Whether SOURCE_DATE_EPOCH was set (else a Debian layer takes its
    /// Release date).
    #[serde(skip)]
    pub epoch_given: bool,
    pub arch: String,
    pub os: String,
    /// The source revision (git commit) labelled on each image, if known.
    pub revision: Option<String>,
    /// The source repository's address, without credentials, if known.
    pub source: Option<String>,
}

impl Stamp {
    pub fn created(&self) -> String {
        rfc3339(self.epoch)
    }
}

/// The parent an image is assembled on.
pub struct Base<'a> {
    pub name: &'a str,
    pub record: &'a ImageRecord,
    pub config: ImageConfiguration,
}

/// A new layer to append, with the history line that explains it.
pub struct NewLayer {
    pub desc: LayerDesc,
    pub created_by: String,
}

/// The assembled image: the blobs to store and the record that names them.
pub struct Assembled {
    pub config_json: Vec<u8>,
    pub manifest_json: Vec<u8>,
    pub record: ImageRecord,
}

/// The host's OCI architecture name.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// JSON with object keys sorted at every level, so maps that oci-spec keeps
/// in a `HashMap` serialise to the same bytes every time.
pub fn canonical_json<T: Serialize>(value: &T) -> Vec<u8> {
    fn sort(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => {
                let sorted: BTreeMap<String, serde_json::Value> =
                    map.into_iter().map(|(k, v)| (k, sort(v))).collect();
                serde_json::Value::Object(sorted.into_iter().collect())
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(sort).collect())
            }
            other => other,
        }
    }
    let v = serde_json::to_value(value).expect("OCI types serialise to JSON");
    serde_json::to_vec(&sort(v)).expect("a JSON value serialises")
}

/// `1970-01-01T00:00:00Z` style UTC time for a Unix epoch.
pub fn rfc3339(epoch: i64) -> String {
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

pub fn parse_config(bytes: &[u8], what: &str) -> Result<ImageConfiguration, OciError> {
    serde_json::from_slice(bytes).map_err(|e| OciError::Parse {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

pub fn parse_manifest(bytes: &[u8], what: &str) -> Result<ImageManifest, OciError> {
    serde_json::from_slice(bytes).map_err(|e| OciError::Parse {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

fn digest(s: &str) -> Digest {
    Digest::from_str(s).expect("digests in records were made by this crate")
}

fn build_err(what: &'static str) -> impl FnOnce(oci_spec::OciSpecError) -> OciError {
    move |e| OciError::Build {
        what,
        reason: e.to_string(),
    }
}

/// Merges `spec` over the parent's run config, as a Dockerfile would:
/// env and labels by key, ports and volumes as sets, the rest replaced; a
/// new entrypoint drops the parent's cmd unless a cmd is given too.
fn merge_config(parent: Option<&Config>, spec: &ConfigChange, stamp: &Stamp) -> Config {
    let mut c = parent.cloned().unwrap_or_default();
    let mut env: Vec<String> = c.env().clone().unwrap_or_default();
    for (k, v) in &spec.env {
        let line = format!("{k}={v}");
        match env
            .iter_mut()
            .find(|e| e.split_once('=').map(|(ek, _)| ek) == Some(k))
        {
            Some(e) => *e = line,
            None => env.push(line),
        }
    }
    c.set_env((!env.is_empty()).then_some(env));
    if let Some(ep) = &spec.entrypoint {
        c.set_entrypoint((!ep.is_empty()).then(|| ep.clone()));
        if spec.cmd.is_none() {
            c.set_cmd(None);
        }
    }
    if let Some(cmd) = &spec.cmd {
        c.set_cmd((!cmd.is_empty()).then(|| cmd.clone()));
    }
    if let Some(w) = &spec.workdir {
        c.set_working_dir(Some(w.clone()));
    }
    if let Some(u) = &spec.user {
        c.set_user(Some(u.clone()));
    }
    if let Some(s) = &spec.stop_signal {
        c.set_stop_signal(Some(s.clone()));
    }
    let union = |old: &Option<Vec<String>>, new: &[String]| {
        let mut all: Vec<String> = old.clone().unwrap_or_default();
        for n in new {
            if !all.contains(n) {
                all.push(n.clone());
            }
        }
        all.sort();
        (!all.is_empty()).then_some(all)
    };
    c.set_exposed_ports(union(c.exposed_ports(), &spec.ports));
    c.set_volumes(union(c.volumes(), &spec.volumes));
    let mut labels: HashMap<String, String> = c.labels().clone().unwrap_or_default();
    labels.insert("org.opencontainers.image.created".into(), stamp.created());
    match &stamp.revision {
        Some(r) => labels.insert("org.opencontainers.image.revision".into(), r.clone()),
        None => labels.remove("org.opencontainers.image.revision"),
    };
    if let Some(s) = &stamp.source {
        labels.insert("org.opencontainers.image.source".into(), s.clone());
    }
    labels.extend(spec.labels.clone());
    c.set_labels(Some(labels));
    c
}

/// Assembles an image from a base (or scratch), new layers and config.
pub fn assemble(
    base: Option<&Base<'_>>,
    new_layers: &[NewLayer],
    spec: &ConfigChange,
    stamp: &Stamp,
) -> Result<Assembled, OciError> {
    let mut config = match base {
        Some(b) => b.config.clone(),
        None => {
            let mut c = ImageConfiguration::default();
            c.set_architecture(Arch::from(stamp.arch.as_str()));
            c.set_os(Os::from(stamp.os.as_str()));
            c.set_rootfs(RootFs::default());
            c
        }
    };
    config.set_created(Some(stamp.created()));
    let run = merge_config(config.config().as_ref(), spec, stamp);
    config.set_config(Some(run));
    let mut diff_ids = config.rootfs().diff_ids().clone();
    let mut history: Vec<History> = config.history().clone().unwrap_or_default();
    for l in new_layers {
        diff_ids.push(l.desc.diff_id.clone());
        history.push(
            HistoryBuilder::default()
                .created(stamp.created())
                .created_by(l.created_by.clone())
                .build()
                .map_err(build_err("history"))?,
        );
    }
    if new_layers.is_empty() {
        history.push(
            HistoryBuilder::default()
                .created(stamp.created())
                .created_by("imgbuild: config".to_string())
                .empty_layer(true)
                .build()
                .map_err(build_err("history"))?,
        );
    }
    let mut rootfs = config.rootfs().clone();
    rootfs.set_diff_ids(diff_ids);
    config.set_rootfs(rootfs);
    config.set_history(Some(history));
    let config_json = canonical_json(&config);

    let layers = base
        .map(|b| b.record.layers.clone())
        .unwrap_or_default()
        .on(new_layers.iter().map(|l| l.desc.clone()).collect());
    let layer_descs: Vec<Descriptor> = layers
        .iter()
        .map(|l| {
            DescriptorBuilder::default()
                .media_type(MediaType::from(l.media_type.as_str()))
                .digest(digest(&l.digest))
                .size(l.size)
                .build()
                .map_err(build_err("layer descriptor"))
        })
        .collect::<Result<_, _>>()?;
    let config_digest = digest_of(&config_json);
    let config_desc = DescriptorBuilder::default()
        .media_type(MediaType::ImageConfig)
        .digest(config_digest.clone())
        .size(config_json.len() as u64)
        .build()
        .map_err(build_err("config descriptor"))?;
    let mut manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config_desc)
        .layers(layer_descs)
        .build()
        .map_err(build_err("manifest"))?;
    if let Some(b) = base {
        let annotations: HashMap<String, String> = [
            (
                "org.opencontainers.image.base.name".to_string(),
                b.name.to_string(),
            ),
            (
                "org.opencontainers.image.base.digest".to_string(),
                b.record.manifest.clone(),
            ),
        ]
        .into_iter()
        .collect();
        manifest.set_annotations(Some(annotations));
    }
    let manifest_json = canonical_json(&manifest);
    let record = ImageRecord {
        manifest: digest_of(&manifest_json).to_string(),
        manifest_size: manifest_json.len() as u64,
        config: config_digest.to_string(),
        config_size: config_json.len() as u64,
        layers,
    };
    Ok(Assembled {
        config_json,
        manifest_json,
        record,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp() -> Stamp {
        Stamp {
            epoch: 0,
            epoch_given: false,
            arch: "amd64".into(),
            os: "linux".into(),
            revision: None,
            source: None,
        }
    }

    #[test]
    fn rfc3339_known_values() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    fn layer(n: u8) -> NewLayer {
        NewLayer {
            desc: LayerDesc {
                digest: digest_of(&[n]).to_string(),
                diff_id: digest_of(&[n, n]).to_string(),
                size: 1,
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            },
            created_by: format!("layer {n}"),
        }
    }

    #[test]
    fn assembling_is_deterministic_and_merges_over_the_parent() {
        let mut spec = ConfigChange::default();
        spec.env.insert("TZ".into(), "UTC".into());
        spec.labels.insert("b".into(), "2".into());
        spec.labels.insert("a".into(), "1".into());
        spec.cmd = Some(vec!["sh".into()]);
        spec.ports = vec!["80/tcp".into()];
        let a = assemble(None, &[layer(1)], &spec, &stamp()).unwrap();
        let b = assemble(None, &[layer(1)], &spec, &stamp()).unwrap();
        assert_eq!(a.config_json, b.config_json);
        assert_eq!(a.record, b.record);

        let parent_config = parse_config(&a.config_json, "config").unwrap();
        let base = Base {
            name: "base",
            record: &a.record,
            config: parent_config,
        };
        let mut child = ConfigChange::default();
        child.env.insert("TZ".into(), "Europe/Zurich".into());
        child.entrypoint = Some(vec!["/init".into()]);
        child.ports = vec!["443/tcp".into()];
        let c = assemble(Some(&base), &[layer(2)], &child, &stamp()).unwrap();
        let cfg = parse_config(&c.config_json, "config").unwrap();
        let run = cfg.config().clone().unwrap();
        assert_eq!(run.env().clone().unwrap(), vec!["TZ=Europe/Zurich"]);
        assert_eq!(run.cmd(), &None, "a new entrypoint resets cmd");
        let mut ports = run.exposed_ports().clone().unwrap();
        ports.sort();
        assert_eq!(ports, vec!["443/tcp", "80/tcp"]);
        assert_eq!(cfg.rootfs().diff_ids().len(), 2);
        assert_eq!(cfg.history().as_ref().unwrap().len(), 2);
        assert_eq!(c.record.layers.len(), 2);
        let m = parse_manifest(&c.manifest_json, "manifest").unwrap();
        assert_eq!(
            m.annotations().as_ref().unwrap()["org.opencontainers.image.base.digest"],
            a.record.manifest
        );
        // Keys are sorted at every level.
        let text = String::from_utf8(a.config_json).unwrap();
        assert!(text.find("\"architecture\"").unwrap() < text.find("\"config\"").unwrap());
    }
}
