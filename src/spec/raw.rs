//! The first pass: the node tree read into `Raw*` structs (shape and types,
//! with positions), before vars are expanded.
use std::collections::BTreeMap;

use super::ctx::{Ctx, S};
use super::yaml::{Kind, Node, Pos};

const TOP_KEYS: &[&str] = &["vars", "images", "registry", "sources", "clients"];
const IMAGE_KEYS: &[&str] = &[
    "from",
    "debian",
    "layers",
    "run",
    "test",
    "config",
    "tags",
    "vars",
    "secrets",
    "network",
    "compression",
];
/// Keys of the contract whose features this build of imgbuild does not do yet.
const NOT_YET: &[(&str, &str)] = &[];
const DEBIAN_KEYS: &[&str] = &[
    "suite",
    "components",
    "architecture",
    "variant",
    "packages",
    "recommends",
    "debconf",
    "mirror",
    "keyring",
    "path_exclude",
    "path_include",
];
const LAYER_KEYS: &[&str] = &["src", "dest", "owner", "mode", "exclude", "source"];
const CONFIG_KEYS: &[&str] = &[
    "env",
    "entrypoint",
    "cmd",
    "workdir",
    "user",
    "ports",
    "volumes",
    "labels",
    "stop_signal",
];

#[derive(Debug, Default, Clone)]
pub(super) struct RawLayer {
    pub(super) src: Option<S>,
    pub(super) dest: Option<S>,
    pub(super) owner: Option<S>,
    pub(super) mode: Option<S>,
    pub(super) exclude: Vec<S>,
    /// `source: NAME`: `src` is inside that source (see `sources`).
    pub(super) source: Option<S>,
    pub(super) pos: Pos,
}

#[derive(Debug, Default, Clone)]
pub(super) struct RawConfig {
    pub(super) env: Vec<(S, S)>,
    pub(super) entrypoint: Option<Vec<S>>,
    pub(super) cmd: Option<Vec<S>>,
    pub(super) workdir: Option<S>,
    pub(super) user: Option<S>,
    pub(super) ports: Vec<S>,
    pub(super) volumes: Vec<S>,
    pub(super) labels: Vec<(S, S)>,
    pub(super) stop_signal: Option<S>,
}

#[derive(Debug, Default, Clone)]
pub(super) struct RawImage {
    pub(super) pos: Pos,
    pub(super) from: Option<S>,
    /// `from: {rootfs: PATH}`.
    pub(super) rootfs: Option<S>,
    pub(super) layers: Vec<RawLayer>,
    pub(super) run: Vec<S>,
    pub(super) test: Vec<S>,
    pub(super) config: RawConfig,
    pub(super) tags: Vec<S>,
    pub(super) vars: Vec<(S, S)>,
    pub(super) secrets: Vec<RawSecret>,
    pub(super) network: Option<S>,
    pub(super) debian: Option<RawDebian>,
    pub(super) compression: Option<S>,
}

#[derive(Debug, Default, Clone)]
pub(super) struct RawDebian {
    pub(super) pos: Pos,
    pub(super) suite: Option<S>,
    pub(super) components: Option<Vec<S>>,
    pub(super) architecture: Option<S>,
    pub(super) variant: Option<S>,
    pub(super) packages: Vec<S>,
    pub(super) recommends: Option<S>,
    pub(super) debconf: Vec<S>,
    pub(super) mirror: Option<S>,
    pub(super) keyring: Option<S>,
    pub(super) path_exclude: Vec<S>,
    pub(super) path_include: Vec<S>,
}

#[derive(Debug, Clone)]
pub(super) struct RawSecret {
    pub(super) name: S,
    pub(super) env: Option<S>,
    pub(super) file: Option<S>,
    pub(super) rebuild: Option<S>,
}

/// The top level of images.yaml, read.
#[derive(Debug, Default)]
pub(super) struct RawFile {
    pub(super) vars: Vec<(S, S)>,
    pub(super) registry: Option<S>,
    pub(super) images: BTreeMap<String, RawImage>,
    /// `clients:`: images made from files (see `clients`).
    pub(super) clients: Vec<super::clients::RawGroup>,
    pub(super) sources: Vec<super::sources::RawSource>,
    /// Where `--set` problems are reported: the `vars:` key, else 1:1.
    pub(super) vars_pos: Pos,
}

pub(super) fn read_file(cx: &mut Ctx, root: &Node) -> RawFile {
    let mut file = RawFile {
        vars_pos: Pos {
            line: 1,
            col: 1,
            file: 0,
        },
        ..RawFile::default()
    };
    let mut saw_images = false;
    for (key, value) in cx.keyed(root, "images.yaml", TOP_KEYS) {
        match key {
            "vars" => {
                file.vars = cx.pairs(value, "vars");
                file.vars_pos = node_pos_of_key(root, "vars");
            }
            "sources" => file.sources = super::sources::read_sources(cx, value),
            "registry" => file.registry = cx.scalar(value, "`registry`"),
            "clients" => file.clients = super::clients::read_groups(cx, value),
            "images" => {
                saw_images = true;
                for (k, v) in cx.map(value, "images") {
                    let Some(name) = cx.scalar(k, "an image name") else {
                        continue;
                    };
                    cx.image = Some(name.v.clone());
                    if !valid_image_name(&name.v) {
                        cx.err(
                            name.pos,
                            format!("`{}` is not a valid image name", name.v),
                            Some("use lowercase letters, digits and . _ - (it becomes a repository name)".into()),
                        );
                    }
                    let image = raw_image(cx, v, name.pos);
                    if file.images.insert(name.v.clone(), image).is_some() {
                        cx.err(name.pos, "this image is defined twice", None);
                    }
                    cx.image = None;
                }
            }
            _ => unreachable!("keyed() only returns allowed keys"),
        }
    }
    if !saw_images && file.clients.is_empty() {
        cx.err(
            root.pos,
            "images.yaml has no `images:` section",
            Some("add `images:` with at least one image".into()),
        );
    }
    file
}

pub(super) fn valid_image_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        && name.len() <= 128
}

pub(super) fn raw_image(cx: &mut Ctx, node: &Node, pos: Pos) -> RawImage {
    let mut image = RawImage {
        pos,
        ..RawImage::default()
    };
    for (key, value) in cx.keyed(node, "an image", IMAGE_KEYS) {
        match key {
            "from" => match &value.kind {
                Kind::Map(_) => {
                    for (k, v) in cx.keyed(value, "`from`", &["rootfs"]) {
                        if k == "rootfs" {
                            image.rootfs = cx.scalar(v, "`rootfs`");
                        }
                    }
                    if image.rootfs.is_none() {
                        cx.err(
                            value.pos,
                            "`from` as a mapping takes `rootfs`",
                            Some("write `from: {rootfs: rootfs.tar}` to start from a root filesystem tarball".into()),
                        );
                    }
                    // The tarball is the first layer of an image from nothing.
                    image.from = Some(S {
                        v: "scratch".into(),
                        pos: value.pos,
                    });
                }
                _ => image.from = cx.scalar(value, "`from`"),
            },
            "layers" => match &value.kind {
                Kind::Seq(items) => {
                    image.layers = items.iter().filter_map(|i| raw_layer(cx, i)).collect()
                }
                _ if value.is_null() => {}
                _ => cx.err(
                    value.pos,
                    format!("`layers` must be a list, not {}", value.type_name()),
                    None,
                ),
            },
            "config" => image.config = raw_config(cx, value),
            "tags" => image.tags = cx.list(value, "`tags`"),
            "run" => image.run = cx.list(value, "`run`"),
            "test" => image.test = cx.list(value, "`test`"),
            "vars" => image.vars = cx.pairs(value, "vars"),
            "network" => image.network = cx.scalar(value, "`network`"),
            "compression" => image.compression = cx.scalar(value, "`compression`"),
            "debian" => {
                let mut d = RawDebian {
                    pos: value.pos,
                    ..RawDebian::default()
                };
                for (k, v) in cx.keyed(value, "`debian`", DEBIAN_KEYS) {
                    let what = format!("`{k}`");
                    match k {
                        "suite" => d.suite = cx.scalar(v, &what),
                        "components" => d.components = Some(cx.list(v, &what)),
                        "architecture" => d.architecture = cx.scalar(v, &what),
                        "variant" => d.variant = cx.scalar(v, &what),
                        "packages" => d.packages = cx.list(v, &what),
                        "recommends" => d.recommends = cx.scalar(v, &what),
                        "debconf" => d.debconf = cx.list(v, &what),
                        "mirror" => d.mirror = cx.scalar(v, &what),
                        "path_exclude" => d.path_exclude = cx.list(v, &what),
                        "path_include" => d.path_include = cx.list(v, &what),
                        _ => d.keyring = cx.scalar(v, &what),
                    }
                }
                image.debian = Some(d);
            }
            "secrets" => {
                for (k, v) in cx.map(value, "`secrets`") {
                    let Some(name) = cx.scalar(k, "a secret's name") else {
                        continue;
                    };
                    let mut secret = RawSecret {
                        name,
                        env: None,
                        file: None,
                        rebuild: None,
                    };
                    for (key, val) in cx.keyed(v, "a secret", &["env", "file", "rebuild"]) {
                        let what = format!("`{key}`");
                        let s = cx.scalar(val, &what);
                        match key {
                            "env" => secret.env = s,
                            "file" => secret.file = s,
                            _ => secret.rebuild = s,
                        }
                    }
                    image.secrets.push(secret);
                }
            }
            other => {
                let what = NOT_YET
                    .iter()
                    .find(|(k, _)| *k == other)
                    .map_or("this", |(_, w)| w);
                cx.err(
                    node_pos_of_key(node, other),
                    format!("`{other}` ({what}) is not supported by this version of imgbuild yet"),
                    Some("build such images with a later imgbuild, or remove the key".into()),
                )
            }
        }
    }
    image
}

fn node_pos_of_key(map: &Node, key: &str) -> Pos {
    match &map.kind {
        Kind::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map_or(map.pos, |(k, _)| k.pos),
        _ => map.pos,
    }
}

fn raw_layer(cx: &mut Ctx, node: &Node) -> Option<RawLayer> {
    let mut layer = RawLayer {
        pos: node.pos,
        ..RawLayer::default()
    };
    if let Kind::Scalar { .. } = node.kind {
        layer.src = cx.scalar(node, "a layer");
        return Some(layer);
    }
    for (key, value) in cx.keyed(node, "a layer", LAYER_KEYS) {
        match key {
            "src" => layer.src = cx.scalar(value, "`src`"),
            "dest" => layer.dest = cx.scalar(value, "`dest`"),
            "owner" => layer.owner = cx.scalar(value, "`owner`"),
            "mode" => layer.mode = cx.scalar(value, "`mode`"),
            "exclude" => layer.exclude = cx.list(value, "`exclude`"),
            "source" => layer.source = cx.scalar(value, "`source`"),
            _ => unreachable!(),
        }
    }
    if layer.src.is_none() && layer.source.is_none() {
        cx.err(
            node.pos,
            "this layer has no `src`",
            Some("name the file or directory to copy: {src: path, dest: /where}, or a source: {source: NAME, dest: /where}".into()),
        );
        return None;
    }
    Some(layer)
}

fn raw_config(cx: &mut Ctx, node: &Node) -> RawConfig {
    let mut c = RawConfig::default();
    for (key, value) in cx.keyed(node, "`config`", CONFIG_KEYS) {
        match key {
            "env" => c.env = cx.pairs(value, "`env`"),
            "entrypoint" => c.entrypoint = cx.command(value, "`entrypoint`"),
            "cmd" => c.cmd = cx.command(value, "`cmd`"),
            "workdir" => c.workdir = cx.scalar(value, "`workdir`"),
            "user" => c.user = cx.scalar(value, "`user`"),
            "ports" => c.ports = cx.list(value, "`ports`"),
            "volumes" => c.volumes = cx.list(value, "`volumes`"),
            "labels" => c.labels = cx.pairs(value, "`labels`"),
            "stop_signal" => c.stop_signal = cx.scalar(value, "`stop_signal`"),
            _ => unreachable!(),
        }
    }
    c
}
