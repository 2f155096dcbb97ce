//! From the positioned node tree to validated `Image`s.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::vars::{self, VarError};
use super::yaml::{self, Kind, Node, Pos};
use super::{
    ConfigSpec, DebianSpec, IdSpec, Image, LayerSpec, Network, Owner, Parent, Problem,
    SecretSource, SecretSpec,
};
use crate::suggest;

const TOP_KEYS: &[&str] = &["vars", "images", "registry"];
const IMAGE_KEYS: &[&str] = &[
    "from", "debian", "layers", "run", "test", "config", "tags", "vars", "secrets", "network",
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
];
const LAYER_KEYS: &[&str] = &["src", "dest", "owner", "mode", "exclude"];
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

/// A scalar with its position, before vars are expanded.
#[derive(Debug, Clone)]
struct S {
    v: String,
    pos: Pos,
}

#[derive(Debug, Default)]
struct RawLayer {
    src: Option<S>,
    dest: Option<S>,
    owner: Option<S>,
    mode: Option<S>,
    exclude: Vec<S>,
    pos: Pos,
}

#[derive(Debug, Default)]
struct RawConfig {
    env: Vec<(S, S)>,
    entrypoint: Option<Vec<S>>,
    cmd: Option<Vec<S>>,
    workdir: Option<S>,
    user: Option<S>,
    ports: Vec<S>,
    volumes: Vec<S>,
    labels: Vec<(S, S)>,
    stop_signal: Option<S>,
}

#[derive(Debug, Default)]
struct RawImage {
    pos: Pos,
    from: Option<S>,
    /// `from: {rootfs: PATH}`.
    rootfs: Option<S>,
    layers: Vec<RawLayer>,
    run: Vec<S>,
    test: Vec<S>,
    config: RawConfig,
    tags: Vec<S>,
    vars: Vec<(S, S)>,
    secrets: Vec<RawSecret>,
    network: Option<S>,
    debian: Option<RawDebian>,
}

#[derive(Debug, Default)]
struct RawDebian {
    pos: Pos,
    suite: Option<S>,
    components: Option<Vec<S>>,
    architecture: Option<S>,
    variant: Option<S>,
    packages: Vec<S>,
    recommends: Option<S>,
    debconf: Vec<S>,
    mirror: Option<S>,
    keyring: Option<S>,
}

#[derive(Debug)]
struct RawSecret {
    name: S,
    env: Option<S>,
    file: Option<S>,
    rebuild: Option<S>,
}

struct Ctx {
    problems: Vec<Problem>,
    image: Option<String>,
}

impl Ctx {
    /// Records a problem; one per position, so a value whose vars failed
    /// is not also reported as, say, a bad path.
    fn err(&mut self, pos: Pos, message: impl Into<String>, hint: Option<String>) {
        if self
            .problems
            .iter()
            .any(|p| (p.line, p.column) == (pos.line, pos.col))
        {
            return;
        }
        self.problems.push(Problem {
            line: pos.line,
            column: pos.col,
            image: self.image.clone(),
            message: message.into(),
            hint,
        });
    }

    fn map<'n>(&mut self, node: &'n Node, what: &str) -> &'n [(Node, Node)] {
        match &node.kind {
            Kind::Map(entries) => entries,
            _ if node.is_null() => &[],
            _ => {
                self.err(
                    node.pos,
                    format!("{what} must be a mapping, not {}", node.type_name()),
                    None,
                );
                &[]
            }
        }
    }

    /// The entries of a mapping whose keys are all in `allowed`.
    fn keyed<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        allowed: &[&str],
    ) -> Vec<(&'n str, &'n Node)> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (k, v) in self.map(node, what) {
            if self.scalar(k, "a key").is_none() {
                continue;
            }
            let key = key_str(k);
            if !allowed.contains(&key) {
                let hint = suggest::closest(key, allowed.iter().copied())
                    .map(|c| format!("did you mean `{c}`?"))
                    .or_else(|| Some(format!("{what} takes: {}", allowed.join(", "))));
                self.err(k.pos, format!("unknown key `{}` in {what}", key), hint);
                continue;
            }
            if !seen.insert(key) {
                self.err(k.pos, format!("`{key}` is given twice in {what}"), None);
                continue;
            }
            out.push((key, v));
        }
        out
    }

    fn scalar(&mut self, node: &Node, what: &str) -> Option<S> {
        match &node.kind {
            Kind::Scalar { value, .. } if !node.is_null() => Some(S {
                v: value.clone(),
                pos: node.pos,
            }),
            _ => {
                self.err(
                    node.pos,
                    format!("{what} must be a string, not {}", node.type_name()),
                    None,
                );
                None
            }
        }
    }

    fn list(&mut self, node: &Node, what: &str) -> Vec<S> {
        match &node.kind {
            Kind::Seq(items) => items.iter().filter_map(|i| self.scalar(i, what)).collect(),
            _ if node.is_null() => Vec::new(),
            _ => {
                self.err(
                    node.pos,
                    format!("{what} must be a list, not {}", node.type_name()),
                    Some("write it as [\"…\"] or one `- …` per line".to_string()),
                );
                Vec::new()
            }
        }
    }

    /// `cmd`/`entrypoint`: a list (exec form) or a string (shell form).
    fn command(&mut self, node: &Node, what: &str) -> Option<Vec<S>> {
        match &node.kind {
            Kind::Scalar { value, .. } if !node.is_null() => Some(
                ["/bin/sh", "-c", value.as_str()]
                    .iter()
                    .map(|v| S {
                        v: v.to_string(),
                        pos: node.pos,
                    })
                    .collect(),
            ),
            _ if node.is_null() => Some(Vec::new()),
            _ => Some(self.list(node, what)),
        }
    }

    fn pairs(&mut self, node: &Node, what: &str) -> Vec<(S, S)> {
        let mut out = Vec::new();
        for (k, v) in self.map(node, what) {
            let key = self.scalar(k, "a key");
            let value = match &v.kind {
                // `KEY:` with no value is an empty string, as in Compose.
                _ if v.is_null() => Some(S {
                    v: String::new(),
                    pos: v.pos,
                }),
                _ => self.scalar(v, &format!("the value of {what}")),
            };
            if let (Some(k), Some(v)) = (key, value) {
                if out.iter().any(|(ok, _): &(S, S)| ok.v == k.v) {
                    self.err(k.pos, format!("`{}` is given twice in {what}", k.v), None);
                } else {
                    out.push((k, v));
                }
            }
        }
        out
    }
}

fn key_str(node: &Node) -> &str {
    node.as_str().unwrap_or("")
}

/// What the top level of images.yaml gives, besides images.
#[derive(Debug, Default)]
pub(super) struct Top {
    pub registry: Option<String>,
}

pub(super) fn parse(
    text: &str,
    dir: &Path,
) -> Result<(BTreeMap<String, Image>, Top), Vec<Problem>> {
    let root = yaml::parse(text).map_err(|e| {
        vec![Problem {
            line: e.pos.line,
            column: e.pos.col,
            image: None,
            message: format!("YAML syntax: {}", e.message),
            hint: None,
        }]
    })?;
    let mut cx = Ctx {
        problems: Vec::new(),
        image: None,
    };
    let mut file_vars = Vec::new();
    let mut registry: Option<S> = None;
    let mut raw: BTreeMap<String, RawImage> = BTreeMap::new();
    let mut saw_images = false;
    for (key, value) in cx.keyed(&root, "images.yaml", TOP_KEYS) {
        match key {
            "vars" => file_vars = cx.pairs(value, "vars"),
            "registry" => registry = cx.scalar(value, "`registry`"),
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
                    let image = raw_image(&mut cx, v, name.pos);
                    if raw.insert(name.v.clone(), image).is_some() {
                        cx.err(name.pos, "this image is defined twice", None);
                    }
                    cx.image = None;
                }
            }
            _ => unreachable!("keyed() only returns allowed keys"),
        }
    }
    if !saw_images {
        cx.err(
            root.pos,
            "images.yaml has no `images:` section",
            Some("add `images:` with at least one image".into()),
        );
    }
    for (k, _) in &file_vars {
        if !vars::valid_name(&k.v) {
            cx.err(k.pos, format!("`{}` is not a valid var name", k.v), None);
        }
    }
    let file_vars: BTreeMap<String, String> =
        expand_var_defs(&mut cx, &BTreeMap::new(), &file_vars);
    let images = resolve(&mut cx, &raw, &file_vars, dir);
    let registry = registry.and_then(|r| {
        let value = expand(&mut cx, &r, &file_vars)?;
        let prefix = value.trim_end_matches('/');
        match format!("{prefix}/x").parse::<crate::reference::Reference>() {
            Ok(_) => Some(prefix.to_string()),
            Err(e) => {
                cx.err(
                    r.pos,
                    format!("`registry: {value}` is not a registry prefix: {}", e.why),
                    Some("write HOST[:PORT]/PATH, like registry.gitlab.com/agency/moodle".into()),
                );
                None
            }
        }
    });
    if cx.problems.is_empty() {
        Ok((images, Top { registry }))
    } else {
        Err(cx.problems)
    }
}

fn valid_image_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        && name.len() <= 128
}

fn raw_image(cx: &mut Ctx, node: &Node, pos: Pos) -> RawImage {
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
            _ => unreachable!(),
        }
    }
    if layer.src.is_none() {
        cx.err(
            node.pos,
            "this layer has no `src`",
            Some("name the file or directory to copy: {src: path, dest: /where}".into()),
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

/// Expands var definitions in order, each seeing the ones before it.
fn expand_var_defs(
    cx: &mut Ctx,
    inherited: &BTreeMap<String, String>,
    defs: &[(S, S)],
) -> BTreeMap<String, String> {
    let mut vars = inherited.clone();
    for (k, v) in defs {
        let value = expand(cx, v, &vars).unwrap_or_default();
        vars.insert(k.v.clone(), value);
    }
    vars
}

fn expand(cx: &mut Ctx, s: &S, vars: &BTreeMap<String, String>) -> Option<String> {
    match vars::expand(&s.v, vars) {
        Ok(v) => Some(v),
        Err(e) => {
            let (message, hint) = match e {
                VarError::Unknown(name) => (
                    format!("unknown var `${{{name}}}`"),
                    Some(
                        match suggest::closest(&name, vars.keys().map(String::as_str)) {
                            Some(c) => format!("did you mean `${{{c}}}`?"),
                            None => format!(
                                "define `{name}` under `vars:` at the top of the file or in this image or an image it is built from (write `$${{…}}` for a literal `${{…}}`)"
                            ),
                        },
                    ),
                ),
                VarError::Unterminated => ("`${` without a closing `}`".into(), None),
                VarError::BadName(n) => (format!("`{n}` is not a valid var name"), None),
            };
            cx.err(s.pos, message, hint);
            None
        }
    }
}

fn resolve(
    cx: &mut Ctx,
    raw: &BTreeMap<String, RawImage>,
    file_vars: &BTreeMap<String, String>,
    dir: &Path,
) -> BTreeMap<String, Image> {
    // Parents first: `from` sees the file's vars and the image's own.
    let mut parents: BTreeMap<&str, Parent> = BTreeMap::new();
    for (name, image) in raw {
        cx.image = Some(name.clone());
        let Some(from) = &image.from else {
            cx.err(
                image.pos,
                "this image has no `from`",
                Some("write `from: scratch` for an image that starts empty, or name its parent image".into()),
            );
            continue;
        };
        let own = expand_var_defs(cx, file_vars, &image.vars);
        let Some(target) = expand(cx, from, &own) else {
            continue;
        };
        let parent = if target == "scratch" {
            Parent::Scratch
        } else if raw.contains_key(&target) {
            Parent::Image(target)
        } else if target.contains(['/', ':', '@']) {
            match target.parse::<crate::reference::Reference>() {
                Ok(r) => Parent::Registry(r),
                Err(e) => {
                    cx.err(
                        from.pos,
                        format!("`from: {target}` is not an image reference: {}", e.why),
                        Some("write scratch, an image of this file, or host/repository:tag".into()),
                    );
                    continue;
                }
            }
        } else {
            let hint = match suggest::closest(&target, raw.keys().map(String::as_str)) {
                Some(c) => format!("did you mean `{c}`?"),
                None => format!(
                    "`from` takes `scratch`, an image of this file ({}), or a registry reference",
                    raw.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            };
            cx.err(
                from.pos,
                format!("unknown parent image `{target}`"),
                Some(hint),
            );
            continue;
        };
        parents.insert(name, parent);
    }
    cx.image = None;

    // Each image has at most one parent, so a cycle is found by walking up.
    let mut in_cycle: BTreeSet<&str> = BTreeSet::new();
    for start in parents.keys() {
        let mut path = vec![*start];
        let mut cur = *start;
        while let Some(Parent::Image(p)) = parents.get(cur) {
            if let Some(i) = path.iter().position(|n| *n == p.as_str()) {
                let cycle = &path[i..];
                if cycle.iter().all(|n| !in_cycle.contains(n)) {
                    in_cycle.extend(cycle.iter().copied());
                    let mut names: Vec<&str> = cycle.to_vec();
                    names.push(cycle[0]);
                    cx.image = Some(cycle[0].to_string());
                    cx.err(
                        raw[cycle[0]].from.as_ref().map_or(raw[cycle[0]].pos, |f| f.pos),
                        format!("images are built from each other in a cycle: {}", names.join(" → ")),
                        Some("one image of the cycle must start from `scratch` or from an image outside it".into()),
                    );
                }
                break;
            }
            path.push(p.as_str());
            cur = p.as_str();
        }
    }
    cx.image = None;

    // Vars flow down the `from` chain, so expand in parent-first order.
    let mut done: BTreeMap<String, Image> = BTreeMap::new();
    let mut pending: Vec<&str> = raw.keys().map(String::as_str).collect();
    while !pending.is_empty() {
        let before = pending.len();
        pending.retain(|name| {
            // Images with an unknown parent, or in a cycle, stay pending.
            let Some(parent) = parents.get(name) else {
                return true;
            };
            if in_cycle.contains(name) {
                return true;
            }
            let inherited = match parent {
                Parent::Scratch | Parent::Registry(_) => file_vars.clone(),
                Parent::Image(p) => match done.get(p) {
                    Some(parent_image) => parent_image.vars.clone(),
                    None => return true,
                },
            };
            cx.image = Some(name.to_string());
            // The nearest ancestor that installs Debian packages.
            let mut up = match parent {
                Parent::Image(p) => done.get(p),
                _ => None,
            };
            while let Some(i) = up.filter(|i| i.debian.is_none()) {
                up = match &i.parent {
                    Parent::Image(p) => done.get(p),
                    _ => None,
                };
            }
            let parent_debian = up.and_then(|i| i.debian.clone());
            let mut image = finish_image(cx, name, &raw[*name], parent.clone(), &inherited, dir);
            if let Some(d) = &raw[*name].debian {
                if raw[*name].rootfs.is_some() {
                    // Packages go in before file layers, and the tarball is one.
                    cx.err(
                        d.pos,
                        "`debian` cannot install into the tarball of the same image's `from: {rootfs: …}`",
                        Some("import the tarball in one image and install packages in a child image `from:` it".into()),
                    );
                } else {
                    image.debian = finish_debian(cx, d, &image.vars, dir, parent_debian.as_ref());
                }
            }
            done.insert(name.to_string(), image);
            false
        });
        if pending.len() == before {
            break; // the rest hang off a problem already reported
        }
    }
    cx.image = None;
    done
}

fn finish_image(
    cx: &mut Ctx,
    name: &str,
    raw: &RawImage,
    parent: Parent,
    inherited: &BTreeMap<String, String>,
    dir: &Path,
) -> Image {
    for (k, _) in &raw.vars {
        if !vars::valid_name(&k.v) {
            cx.err(k.pos, format!("`{}` is not a valid var name", k.v), None);
        }
    }
    let vars = expand_var_defs(cx, inherited, &raw.vars);
    let mut x = |s: &S| expand(cx, s, &vars).unwrap_or_default();
    let layers: Vec<(RawLayerExpanded, Pos)> = raw
        .layers
        .iter()
        .map(|l| {
            (
                RawLayerExpanded {
                    src: l.src.as_ref().map(|s| (x(s), s.pos)),
                    dest: l.dest.as_ref().map(|s| (x(s), s.pos)),
                    owner: l.owner.as_ref().map(|s| (x(s), s.pos)),
                    mode: l.mode.as_ref().map(|s| (x(s), s.pos)),
                    exclude: l.exclude.iter().map(|s| (x(s), s.pos)).collect(),
                },
                l.pos,
            )
        })
        .collect();
    let c = &raw.config;
    let env: Vec<(S, String)> = c.env.iter().map(|(k, v)| (k.clone(), x(v))).collect();
    let labels: BTreeMap<String, String> = c.labels.iter().map(|(k, v)| (x(k), x(v))).collect();
    let entrypoint = c
        .entrypoint
        .as_ref()
        .map(|v| v.iter().map(&mut x).collect());
    let cmd = c.cmd.as_ref().map(|v| v.iter().map(&mut x).collect());
    let workdir = c.workdir.as_ref().map(|s| (x(s), s.pos));
    let user = c.user.as_ref().map(&mut x);
    let ports: Vec<(String, Pos)> = c.ports.iter().map(|s| (x(s), s.pos)).collect();
    let volumes: Vec<(String, Pos)> = c.volumes.iter().map(|s| (x(s), s.pos)).collect();
    let stop_signal = c.stop_signal.as_ref().map(&mut x);
    let tags: Vec<(String, Pos)> = raw.tags.iter().map(|s| (x(s), s.pos)).collect();
    let run: Vec<String> = raw.run.iter().map(&mut x).collect();
    let test: Vec<String> = raw.test.iter().map(&mut x).collect();

    let mut config = ConfigSpec {
        entrypoint,
        cmd,
        user,
        labels,
        stop_signal,
        ..ConfigSpec::default()
    };
    for (k, v) in env {
        if !valid_env_name(&k.v) {
            cx.err(
                k.pos,
                format!("`{}` is not a valid environment variable name", k.v),
                None,
            );
        }
        config.env.insert(k.v, v);
    }
    if let Some((w, pos)) = workdir {
        if !w.starts_with('/') {
            cx.err(
                pos,
                format!("`workdir: {w}` must be an absolute path"),
                None,
            );
        }
        config.workdir = Some(w);
    }
    for (p, pos) in ports {
        match normalise_port(&p) {
            Some(p) => config.ports.push(p),
            None => cx.err(
                pos,
                format!("`{p}` is not a port"),
                Some("write PORT or PORT/PROTO, as 80 or 80/tcp (tcp, udp or sctp)".into()),
            ),
        }
    }
    for (v, pos) in volumes {
        if !v.starts_with('/') {
            cx.err(pos, format!("volume `{v}` must be an absolute path"), None);
        }
        config.volumes.push(v);
    }
    let mut out_tags = Vec::new();
    for (t, pos) in tags {
        match check_tag(&t) {
            Ok(()) => out_tags.push(t),
            Err(why) => cx.err(
                pos,
                format!("`{t}` is not a valid tag: {why}"),
                Some("write `tag` or `repository:tag`, e.g. client-acme:5.1.4".into()),
            ),
        }
    }
    let secrets = finish_secrets(cx, &raw.secrets, &vars, dir);
    let network = match raw.network.as_ref().map(|n| (expand(cx, n, &vars), n.pos)) {
        None => Network::Host,
        Some((Some(n), _)) if n == "host" => Network::Host,
        Some((Some(n), _)) if n == "none" => Network::None,
        Some((None, _)) => Network::Host,
        Some((Some(n), pos)) => {
            cx.err(
                pos,
                format!("`network: {n}` is not a network mode"),
                Some(
                    "write `network: none` (steps without a network) or `host` (the default)"
                        .into(),
                ),
            );
            Network::Host
        }
    };
    let import = raw.rootfs.as_ref().and_then(|r| {
        let text = expand(cx, r, &vars)?;
        let src = dir.join(&text);
        match std::fs::metadata(&src) {
            Ok(m) if m.is_file() => Some(LayerSpec {
                src,
                src_text: text,
                dest: "/".into(),
                owner: None,
                mode: None,
                exclude: Vec::new(),
                import: true,
                pos: r.pos,
            }),
            Ok(_) => {
                cx.err(
                    r.pos,
                    format!("`rootfs: {text}` is not a file"),
                    Some("name a tarball of a root filesystem (.tar, .tar.gz or .tar.zst)".into()),
                );
                None
            }
            Err(e) => {
                cx.err(
                    r.pos,
                    format!("`rootfs: {text}` cannot be read: {}", io_reason(&e)),
                    Some(format!("paths are relative to {}", dir.display())),
                );
                None
            }
        }
    });
    let layers = import
        .into_iter()
        .chain(
            layers
                .into_iter()
                .filter_map(|(l, pos)| finish_layer(cx, l, pos, dir)),
        )
        .collect();
    Image {
        name: name.to_string(),
        pos: raw.pos,
        parent,
        layers,
        run,
        test,
        config,
        tags: out_tags,
        vars,
        secrets,
        network,
        debian: None,
    }
}

/// `debian:`, over what the nearest Debian ancestor set.
fn finish_debian(
    cx: &mut Ctx,
    raw: &RawDebian,
    vars: &BTreeMap<String, String>,
    dir: &Path,
    parent: Option<&DebianSpec>,
) -> Option<DebianSpec> {
    let mut x = |s: &S| expand(cx, s, vars).map(|v| (v, s.pos));
    let suite = raw.suite.as_ref().and_then(&mut x);
    let components: Option<Vec<(String, Pos)>> = raw
        .components
        .as_ref()
        .map(|c| c.iter().filter_map(&mut x).collect());
    let architecture = raw.architecture.as_ref().and_then(&mut x);
    let variant = raw.variant.as_ref().and_then(&mut x);
    let packages: Vec<(String, Pos)> = raw.packages.iter().filter_map(&mut x).collect();
    let recommends = raw.recommends.as_ref().and_then(&mut x);
    let debconf: Vec<(String, Pos)> = raw.debconf.iter().filter_map(&mut x).collect();
    let mirror = raw.mirror.as_ref().and_then(&mut x);
    let keyring = raw.keyring.as_ref().and_then(&mut x);
    let mut ok = true;
    let suite = match (suite, parent) {
        (Some((s, pos)), Some(p)) if s != p.suite => {
            cx.err(
                pos,
                format!("`suite: {s}` differs from the parent's `{}`", p.suite),
                Some("an image installs from its Debian parent's suite; start a new base with `variant: minbase` for another".into()),
            );
            ok = false;
            s
        }
        (Some((s, pos)), _) => {
            if s.is_empty()
                || !s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                cx.err(
                    pos,
                    format!("`suite: {s}` is not a suite name"),
                    Some("e.g. `stable`, `trixie` or `bookworm`".into()),
                );
                ok = false;
            }
            s
        }
        (None, Some(p)) => p.suite.clone(),
        (None, None) => {
            cx.err(
                raw.pos,
                "`debian` needs a `suite`",
                Some("e.g. `suite: trixie` (or `stable`)".into()),
            );
            return None;
        }
    };
    let minbase = match variant {
        None => false,
        Some((v, _)) if v == "minbase" && parent.is_none() => true,
        Some((v, pos)) if v == "minbase" => {
            cx.err(
                pos,
                "`variant: minbase` makes a new Debian base, but an ancestor already installs Debian packages",
                Some("remove `variant` here: this image adds packages to its parent's".into()),
            );
            ok = false;
            true
        }
        Some((v, pos)) => {
            cx.err(
                pos,
                format!("unknown variant `{v}`"),
                Some(
                    "the variant is `minbase` (Essential and Priority required, as mmdebstrap's)"
                        .into(),
                ),
            );
            ok = false;
            false
        }
    };
    if !minbase && parent.is_none() && packages.is_empty() {
        cx.err(
            raw.pos,
            "`debian` installs nothing: no `packages` and no `variant`",
            Some("add `variant: minbase` for a base image, or `packages: [...]`".into()),
        );
        ok = false;
    }
    for (p, pos) in &packages {
        let (name, version) = match p.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (p.as_str(), None),
        };
        let name = name.split_once(':').map_or(name, |(n, _)| n);
        let valid = name.len() >= 2
            && name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
            && version.is_none_or(|v| !v.is_empty() && !v.contains(char::is_whitespace));
        if !valid {
            cx.err(
                *pos,
                format!("`{p}` is not a Debian package name (or `name=version`)"),
                None,
            );
            ok = false;
        }
    }
    let recommends = match recommends {
        None => false,
        Some((r, _)) if r == "true" => true,
        Some((r, _)) if r == "false" => false,
        Some((r, pos)) => {
            cx.err(
                pos,
                format!("`recommends: {r}` must be true or false"),
                None,
            );
            ok = false;
            false
        }
    };
    for (line, pos) in &debconf {
        if line.split_whitespace().count() < 3 {
            cx.err(
                *pos,
                format!("`{line}` is not a debconf answer"),
                Some(
                    "write `package question type value`, e.g. `tzdata tzdata/Areas select Europe`"
                        .into(),
                ),
            );
            ok = false;
        }
    }
    let inherit = |own: Option<(String, Pos)>, theirs: Option<&String>| {
        own.map(|o| o.0).or_else(|| theirs.cloned())
    };
    let spec = DebianSpec {
        suite,
        components: components
            .map(|c| c.into_iter().map(|(v, _)| v).collect())
            .or_else(|| parent.map(|p| p.components.clone()))
            .unwrap_or_else(|| vec!["main".to_string()]),
        architecture: inherit(architecture, parent.and_then(|p| p.architecture.as_ref())),
        minbase,
        packages: packages.into_iter().map(|(p, _)| p).collect(),
        recommends,
        debconf: debconf.into_iter().map(|(d, _)| d).collect(),
        mirror: inherit(mirror, parent.and_then(|p| p.mirror.as_ref())),
        keyring: keyring
            .map(|(k, _)| dir.join(k))
            .or_else(|| parent.and_then(|p| p.keyring.clone())),
        has_debian_parent: parent.is_some(),
        pos: raw.pos,
    };
    ok.then_some(spec)
}

/// `secrets:` entries, checked but not read: values are read when steps run
/// (a CI job may define them only for its build).
fn finish_secrets(
    cx: &mut Ctx,
    raw: &[RawSecret],
    vars: &BTreeMap<String, String>,
    dir: &Path,
) -> Vec<SecretSpec> {
    let mut out = Vec::new();
    for r in raw {
        let name = &r.name.v;
        let valid = !name.is_empty()
            && name != "."
            && name != ".."
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !valid {
            cx.err(
                r.name.pos,
                format!("`{name}` is not a valid secret name"),
                Some(
                    "use letters, digits, `.`, `_` and `-`: it is a file name under /run/secrets"
                        .into(),
                ),
            );
            continue;
        }
        let source = match (&r.env, &r.file) {
            (Some(e), None) => match expand(cx, e, vars) {
                Some(v) if valid_env_name(&v) => SecretSource::Env(v),
                Some(v) => {
                    cx.err(
                        e.pos,
                        format!("`{v}` is not an environment variable name"),
                        None,
                    );
                    continue;
                }
                None => continue,
            },
            (None, Some(f)) => match expand(cx, f, vars) {
                Some(v) => SecretSource::File(dir.join(v)),
                None => continue,
            },
            _ => {
                cx.err(
                    r.name.pos,
                    format!("secret `{name}` needs exactly one of `env` and `file`"),
                    Some(format!(
                        "e.g. `{name}: {{env: CI_JOB_TOKEN}}` or `{name}: {{file: secrets/{name}}}`"
                    )),
                );
                continue;
            }
        };
        let rebuild = match r.rebuild.as_ref().map(|b| (b.v.as_str(), b.pos)) {
            None | Some(("false", _)) => false,
            Some(("true", _)) => true,
            Some((other, pos)) => {
                cx.err(
                    pos,
                    format!("`rebuild: {other}` must be true or false"),
                    None,
                );
                false
            }
        };
        out.push(SecretSpec {
            name: name.clone(),
            source,
            rebuild,
        });
    }
    out
}

struct RawLayerExpanded {
    src: Option<(String, Pos)>,
    dest: Option<(String, Pos)>,
    owner: Option<(String, Pos)>,
    mode: Option<(String, Pos)>,
    exclude: Vec<(String, Pos)>,
}

fn finish_layer(cx: &mut Ctx, l: RawLayerExpanded, pos: Pos, dir: &Path) -> Option<LayerSpec> {
    let (src_text, src_pos) = l.src?;
    let src = dir.join(&src_text);
    let meta = std::fs::symlink_metadata(&src);
    let mut ok = true;
    match &meta {
        Err(e) => {
            ok = false;
            cx.err(
                src_pos,
                format!("layer source `{src_text}` cannot be read: {}", io_reason(e)),
                Some(format!("paths are relative to {}", dir.display())),
            )
        }
        Ok(m) if !(m.is_dir() || m.is_file()) => {
            ok = false;
            cx.err(
                src_pos,
                format!("layer source `{src_text}` must be a directory or a regular file"),
                None,
            )
        }
        Ok(_) => {}
    }
    let src_is_file = meta.as_ref().is_ok_and(|m| m.is_file());
    let dest = match l.dest {
        None => {
            if src_is_file {
                ok = false;
                cx.err(
                    src_pos,
                    format!("layer source `{src_text}` is a file, so the layer needs a `dest`"),
                    Some("e.g. {src: config.php, dest: /var/www/moodle/config.php}".into()),
                );
            }
            "/".to_string()
        }
        Some((d, dpos)) => match normalise_dest(&d) {
            Ok(n) if src_is_file && (n == "/" || d.ends_with('/')) => {
                let file_name = src.file_name().map(|f| f.to_string_lossy().into_owned());
                let base = if n == "/" { String::new() } else { n };
                format!("{base}/{}", file_name.unwrap_or_default())
            }
            Ok(n) => n,
            Err(why) => {
                ok = false;
                cx.err(
                    dpos,
                    format!("`dest: {d}` {why}"),
                    Some("write an absolute path inside the image, like /var/www/moodle".into()),
                );
                String::new()
            }
        },
    };
    let owner = l.owner.and_then(|(o, opos)| match parse_owner(&o) {
        Some(owner) => Some(owner),
        None => {
            ok = false;
            cx.err(
                opos,
                format!("`owner: {o}` is not USER or USER:GROUP"),
                Some("write numeric ids (33:33) or names from the parent image's /etc/passwd and /etc/group (root:www-data)".into()),
            );
            None
        }
    });
    let mode = l.mode.and_then(|(m, mpos)| match parse_mode(&m) {
        Some(mode) => Some(mode),
        None => {
            ok = false;
            cx.err(
                mpos,
                format!("`mode: {m}` is not an octal file mode"),
                Some(
                    "write it in octal and quoted, like \"0644\" or \"0750\" (at most 07777)"
                        .into(),
                ),
            );
            None
        }
    });
    let mut exclude = Vec::new();
    for (pattern, epos) in l.exclude {
        if let Err(e) = globset::Glob::new(&pattern) {
            ok = false;
            cx.err(
                epos,
                format!("`exclude: {pattern}` is not a valid pattern: {}", e.kind()),
                None,
            );
        }
        exclude.push(pattern);
    }
    ok.then_some(LayerSpec {
        src,
        src_text,
        dest,
        owner,
        mode,
        exclude,
        import: false,
        pos,
    })
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// "/a//b/./c/" → "/a/b/c"; refuses relative paths and `..`.
pub(crate) fn normalise_dest(dest: &str) -> Result<String, &'static str> {
    if !dest.starts_with('/') {
        return Err("must be an absolute path");
    }
    let mut parts = Vec::new();
    for part in dest.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("must not contain `..`"),
            p => parts.push(p),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

fn parse_id(s: &str) -> Option<IdSpec> {
    if s.is_empty() {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok().map(IdSpec::Id);
    }
    let valid = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    valid.then(|| IdSpec::Name(s.to_string()))
}

fn parse_owner(s: &str) -> Option<Owner> {
    match s.split_once(':') {
        Some((u, g)) => Some(Owner {
            user: parse_id(u)?,
            group: Some(parse_id(g)?),
        }),
        None => Some(Owner {
            user: parse_id(s)?,
            group: None,
        }),
    }
}

fn parse_mode(s: &str) -> Option<u32> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return None;
    }
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o7777)
}

fn normalise_port(p: &str) -> Option<String> {
    let (num, proto) = p.split_once('/').unwrap_or((p, "tcp"));
    let n: u16 = num.parse().ok()?;
    (n > 0 && ["tcp", "udp", "sctp"].contains(&proto)).then(|| format!("{n}/{proto}"))
}

fn valid_env_name(k: &str) -> bool {
    !k.is_empty() && !k.contains('=') && !k.contains('\0')
}

fn check_tag(t: &str) -> Result<(), &'static str> {
    let (repo, tag) = match t.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => (Some(r), tag),
        _ => (None, t),
    };
    if let Some(repo) = repo {
        let ok = !repo.is_empty()
            && repo.split('/').all(|c| {
                !c.is_empty()
                    && c.chars().all(|ch| {
                        ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch)
                    })
            });
        if !ok {
            return Err("the repository part takes lowercase letters, digits, . _ - and /");
        }
    }
    let mut chars = tag.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && tag.len() <= 128;
    if ok {
        Ok(())
    } else {
        Err("a tag is 1 to 128 of letters, digits, . _ - and does not start with . or -")
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Spec, SpecError};
    use super::*;

    fn parse_in(dir: &Path, text: &str) -> Result<Spec, Vec<Problem>> {
        Spec::parse(text, Path::new("images.yaml"), dir).map_err(|e| match e {
            SpecError::Invalid { problems, .. } => problems,
            other => panic!("{other}"),
        })
    }

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("layers/base/etc")).unwrap();
        std::fs::write(d.path().join("layers/base/etc/motd"), "hi\n").unwrap();
        std::fs::write(d.path().join("config.php"), "<?php\n").unwrap();
        d
    }

    #[test]
    fn full_example_parses_and_inherits_vars() {
        let d = tree();
        let spec = parse_in(
            d.path(),
            r#"
vars:
  timezone: Europe/Zurich
images:
  base:
    from: scratch
    layers:
      - layers/base
    config:
      env: {TZ: "${timezone}"}
      cmd: ["sh"]
      ports: [80, "443/tcp"]
  moodle-5.1:
    from: base
    vars: {moodle_release: "5.1.4"}
    config:
      labels: {release: "${moodle_release}"}
  client-acme:
    from: moodle-${moodle_major}
    vars: {moodle_major: "5.1"}
    layers:
      - {src: config.php, dest: /var/www/moodle/, owner: "root:www-data", mode: "0640"}
    tags: ["client-acme:${moodle_release}"]
"#,
        );
        // `from` only sees file vars and the image's own vars.
        let spec = spec.unwrap();
        let base = &spec.images["base"];
        assert_eq!(base.config.env["TZ"], "Europe/Zurich");
        assert_eq!(base.config.ports, vec!["80/tcp", "443/tcp"]);
        assert_eq!(base.layers[0].dest, "/");
        let client = &spec.images["client-acme"];
        assert_eq!(client.parent, Parent::Image("moodle-5.1".into()));
        assert_eq!(client.tags, vec!["client-acme:5.1.4"]);
        let l = &client.layers[0];
        assert_eq!(l.dest, "/var/www/moodle/config.php");
        assert_eq!(l.mode, Some(0o640));
        assert_eq!(l.owner.as_ref().unwrap().to_string(), "root:www-data");
    }

    #[test]
    fn unknown_key_names_line_column_image_and_suggests() {
        let d = tree();
        let p = parse_in(
            d.path(),
            "images:\n  a:\n    from: scratch\n    layer: []\n",
        )
        .unwrap_err();
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].line, p[0].column), (4, 5));
        assert_eq!(p[0].image.as_deref(), Some("a"));
        assert!(p[0].message.contains("unknown key `layer`"));
        assert_eq!(p[0].hint.as_deref(), Some("did you mean `layers`?"));
    }

    #[test]
    fn cycle_is_named() {
        let d = tree();
        let p = parse_in(
            d.path(),
            "images:\n  a: {from: b}\n  b: {from: c}\n  c: {from: a}\n  d: {from: a}\n",
        )
        .unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].message.contains("a → b → c → a"), "{}", p[0].message);
    }

    #[test]
    fn unknown_parent_missing_path_bad_mode_and_unknown_var() {
        let d = tree();
        let p = parse_in(
            d.path(),
            "images:\n  moodle:\n    from: scratch\n  client:\n    from: modle\n  x:\n    from: scratch\n    layers:\n      - {src: nope, mode: \"0999\"}\n      - {src: layers/base, dest: \"${where}\"}\n",
        )
        .unwrap_err();
        let msgs: Vec<String> = p
            .iter()
            .map(|p| format!("{}:{} {}", p.line, p.column, p.message))
            .collect();
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("5:11 unknown parent image `modle`")),
            "{msgs:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.hint.as_deref() == Some("did you mean `moodle`?"))
        );
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("9:15 layer source `nope` cannot be read")),
            "{msgs:?}"
        );
        assert!(msgs.iter().any(|m| m.contains("`mode: 0999`")), "{msgs:?}");
        assert!(
            msgs.iter().any(|m| m.contains("unknown var `${where}`")),
            "{msgs:?}"
        );
    }

    #[test]
    fn debian_is_checked_and_inherited_along_from() {
        let d = tree();
        let spec = parse_in(
            d.path(),
            concat!(
                "images:\n",
                "  base:\n    from: scratch\n",
                "    debian: {suite: trixie, variant: minbase, mirror: \"http://m/debian\", debconf: [\"tzdata tzdata/Areas select Europe\"]}\n",
                "  plain:\n    from: base\n",
                "  php:\n    from: plain\n    debian: {packages: [apache2, \"php8.4=8.4.1-1\"], recommends: true}\n",
            ),
        )
        .unwrap();
        let php = spec.images["php"].debian.as_ref().unwrap();
        assert_eq!(php.suite, "trixie");
        assert_eq!(php.mirror.as_deref(), Some("http://m/debian"));
        assert_eq!(php.components, ["main"]);
        assert!(php.has_debian_parent && !php.minbase && php.recommends);
        let p = parse_in(
            d.path(),
            concat!(
                "images:\n",
                "  base:\n    from: scratch\n    debian: {suite: trixie, variant: minbase}\n",
                "  again:\n    from: base\n    debian: {variant: minbase}\n",
                "  other:\n    from: base\n    debian: {suite: bookworm, packages: [Bad_Name]}\n",
                "  none:\n    from: scratch\n    debian: {packages: [curl]}\n",
                "  typo:\n    from: scratch\n    debian: {suite: trixie, pakages: [curl]}\n",
                "  tarball:\n    from: {rootfs: x.tar}\n    debian: {suite: trixie, packages: [curl]}\n",
            ),
        )
        .unwrap_err();
        let msgs: Vec<String> = p
            .iter()
            .map(|p| format!("{}: {}", p.line, p.message))
            .collect();
        for want in [
            "7: `variant: minbase` makes a new Debian base, but an ancestor already installs Debian packages",
            "10: `suite: bookworm` differs from the parent's `trixie`",
            "10: `Bad_Name` is not a Debian package name (or `name=version`)",
            "13: `debian` needs a `suite`",
            "16: unknown key `pakages` in `debian`",
            "19: `debian` cannot install into the tarball of the same image's `from: {rootfs: …}`",
        ] {
            assert!(msgs.iter().any(|m| m == want), "{want}: {msgs:?}");
        }
    }

    #[test]
    fn secrets_need_one_source_and_a_file_name() {
        let d = tree();
        let p = parse_in(
            d.path(),
            concat!(
                "images:\n  a:\n    from: scratch\n    secrets:\n",
                "      ok: {env: TOKEN, rebuild: true}\n",
                "      both: {env: A, file: b}\n",
                "      ../up: {file: x}\n",
                "      lazy: {env: A, rebuild: maybe}\n",
                "      typo: {enf: A}\n",
            ),
        )
        .unwrap_err();
        let msgs: Vec<String> = p
            .iter()
            .map(|p| format!("{}: {}", p.line, p.message))
            .collect();
        for want in [
            "6: secret `both` needs exactly one of `env` and `file`",
            "7: `../up` is not a valid secret name",
            "8: `rebuild: maybe` must be true or false",
            "9: unknown key `enf` in a secret",
        ] {
            assert!(msgs.iter().any(|m| m == want), "{want}: {msgs:?}");
        }
    }

    #[test]
    fn dest_and_mode_and_owner_parsing() {
        assert_eq!(normalise_dest("/a//b/./c/").unwrap(), "/a/b/c");
        assert!(normalise_dest("a/b").is_err());
        assert!(normalise_dest("/a/../b").is_err());
        assert_eq!(parse_mode("755"), Some(0o755));
        assert_eq!(parse_mode("04755"), Some(0o4755));
        assert_eq!(parse_mode("rwx"), None);
        assert_eq!(parse_mode("17777"), None);
        assert_eq!(parse_owner("33:33").unwrap().group, Some(IdSpec::Id(33)));
        assert!(parse_owner("a b").is_none());
        assert_eq!(check_tag("client-acme:5.1.4"), Ok(()));
        assert!(check_tag("Client:x").is_err());
        assert!(check_tag("localhost:5000/x").is_err());
    }
}
