//! `clients:`: one image per file a pattern matches, made of a template in
//! images.yaml and the file, so a fleet's fifty-first client is one small
//! file.
//!
//! Each matched file is read as an image at its own file number (so its
//! problems name it, see `Pos::file`) and merged over a copy of the group's
//! template; the result joins the images of images.yaml before parents and
//! vars are resolved, so a generated image is checked as a written one is.
//! images.yaml is read once and each file once, and a merge touches the
//! template and the file once: loading is linear in the number of clients.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::ctx::{Ctx, S, expand, kind_of};
use super::raw::{self, RawConfig, RawImage};
use super::yaml::{self, Kind, Node, Pos};
use super::{PathKind, PathKinds};

const GROUP_KEYS: &[&str] = &["files", "image", "template"];
/// The var every generated image has: what the pattern's wildcard matched.
const CLIENT_VAR: &str = "client";

/// One `clients:` group, read.
#[derive(Debug)]
pub(super) struct RawGroup {
    files: S,
    /// None: the image is named `${client}`.
    image: Option<S>,
    template: RawImage,
}

/// `clients:` is one group (a mapping) or a list of them.
pub(super) fn read_groups(cx: &mut Ctx, node: &Node) -> Vec<RawGroup> {
    match &node.kind {
        Kind::Seq(items) => items.iter().filter_map(|i| read_group(cx, i)).collect(),
        _ if node.is_null() => Vec::new(),
        _ => read_group(cx, node).into_iter().collect(),
    }
}

fn read_group(cx: &mut Ctx, node: &Node) -> Option<RawGroup> {
    let mut files = None;
    let mut image = None;
    let mut template = RawImage {
        pos: node.pos,
        ..RawImage::default()
    };
    for (key, value) in cx.keyed(node, "`clients`", GROUP_KEYS) {
        match key {
            "files" => files = cx.scalar(value, "`files`"),
            "image" => image = cx.scalar(value, "`image`"),
            _ => template = raw::raw_image(cx, value, value.pos),
        }
    }
    let Some(files) = files else {
        cx.err(
            node.pos,
            "`clients` needs `files`, the pattern of the client files",
            Some("e.g. `files: clients/*/client.yaml` (relative to images.yaml; `${client}` is what `*` matched)".into()),
        );
        return None;
    };
    Some(RawGroup {
        files,
        image,
        template,
    })
}

/// Adds an image to `images` for every file each group's pattern matches.
pub(super) fn add_images(
    cx: &mut Ctx,
    groups: &[RawGroup],
    images: &mut BTreeMap<String, RawImage>,
    file_vars: &BTreeMap<String, String>,
    dir: &Path,
) {
    // The file number that made each generated image, for "twice" messages.
    let mut made: HashMap<String, u32> = HashMap::new();
    for group in groups {
        for (k, _) in &group.template.vars {
            if k.v == CLIENT_VAR {
                client_var_taken(cx, k.pos);
            }
        }
        let Some(pattern) = expand(cx, &group.files, file_vars) else {
            continue;
        };
        let found = match find(cx.kinds, dir, &pattern) {
            Ok(found) => found,
            Err((why, hint)) => {
                cx.err(group.files.pos, format!("`files: {pattern}` {why}"), hint);
                continue;
            }
        };
        let (yaml, other): (Vec<Match>, Vec<Match>) = found.into_iter().partition(|m| {
            let ext = m.rel.extension().and_then(|e| e.to_str());
            let path = dir.join(&m.rel);
            matches!(ext, Some("yaml" | "yml"))
                && match cx.kinds {
                    Some(k) => k.kind(&path) == Some(PathKind::File),
                    None => path.is_file(),
                }
        });
        if !other.is_empty() {
            let list: Vec<String> = other.iter().map(|m| m.rel.display().to_string()).collect();
            cx.err(
                group.files.pos,
                format!(
                    "`files: {pattern}` matches what is not a YAML file: {}",
                    list.join(", ")
                ),
                Some("make the pattern end in a `.yaml` file name, like clients/*/client.yaml, or move those out of its way".into()),
            );
        }
        // One map of the file's vars for all image names, `client` set per file.
        let mut name_vars = file_vars.clone();
        for m in yaml {
            name_vars.insert(CLIENT_VAR.into(), m.client.clone());
            let Some((name, image)) = read_client(cx, group, &m, &name_vars, dir) else {
                continue;
            };
            let this = image.pos.file;
            let this_rel = m.rel.display().to_string();
            if let Some(&other) = made.get(&name) {
                let other = cx
                    .included(Pos {
                        file: other,
                        ..Pos::default()
                    })
                    .map_or(String::new(), |p| p.display().to_string());
                cx.err(
                    image.pos,
                    format!("image `{name}` is made from {other} and from {this_rel}"),
                    Some("each client file must give its own image name: rename one directory, or change a group's `image:`".into()),
                );
            } else if let Some(written) = images.get(&name) {
                cx.image = Some(name.clone());
                cx.err(
                    written.pos,
                    format!(
                        "image `{name}` is written here and also made from {this_rel} by `clients:`"
                    ),
                    Some(format!(
                        "remove one of the two: the image in images.yaml or {this_rel}"
                    )),
                );
                cx.image = None;
            } else {
                made.insert(name.clone(), this);
                images.insert(name, image);
            }
        }
    }
}

/// Reads one client file and merges it over its group's template.
fn read_client(
    cx: &mut Ctx,
    group: &RawGroup,
    m: &Match,
    name_vars: &BTreeMap<String, String>,
    dir: &Path,
) -> Option<(String, RawImage)> {
    cx.files.push(m.rel.clone());
    let number = u32::try_from(cx.files.len()).ok()?;
    let top = Pos {
        line: 1,
        col: 1,
        file: number,
    };
    let path = dir.join(&m.rel);
    // The pattern stays inside images.yaml's directory; a link must not
    // lead a client file out of the context.
    if !cx.inside(top, "client file", &m.rel.to_string_lossy(), &path) {
        return None;
    }
    let text = match cx
        .kinds
        .map_or_else(|| std::fs::read_to_string(&path), |k| k.read(&path))
    {
        Ok(t) => t,
        Err(e) => {
            cx.err(top, format!("cannot read this client file: {e}"), None);
            return None;
        }
    };
    let root = match yaml::parse_file(&text, number) {
        Ok(root) => root,
        Err(e) => {
            cx.err(e.pos, format!("YAML syntax: {}", e.message), Some(e.hint()));
            return None;
        }
    };
    let name = match &group.image {
        Some(image) => expand(cx, image, name_vars)?,
        None => m.client.clone(),
    };
    if !raw::valid_image_name(&name) {
        cx.err(
            root.pos,
            format!("this client file makes the image `{name}`, which is not a valid image name"),
            Some(format!(
                "`${{client}}` is `{}`, from the file's path: name the directory with lowercase letters, digits and . _ -",
                m.client
            )),
        );
        return None;
    }
    cx.image = Some(name.clone());
    let own = raw::raw_image(cx, &root, root.pos);
    for (k, _) in &own.vars {
        if k.v == CLIENT_VAR {
            client_var_taken(cx, k.pos);
        }
    }
    cx.image = None;
    let client = S {
        v: m.client.clone(),
        pos: root.pos,
    };
    Some((name, merge(group.template.clone(), own, client)))
}

fn client_var_taken(cx: &mut Ctx, pos: Pos) {
    cx.err(
        pos,
        "the var `client` is set by `clients:` (what the pattern's wildcard matched)",
        Some("give this var another name".into()),
    );
}

/// The client's image over the template: vars, env and labels by key (the
/// client's win); layers, run, test, tags, ports and volumes the template's
/// then the client's; secrets by name; `from`, `debian`, `network`,
/// `compression` and the rest of `config` the client's when it gives them.
fn merge(mut t: RawImage, c: RawImage, client: S) -> RawImage {
    t.pos = c.pos;
    if c.from.is_some() {
        t.from = c.from;
        t.rootfs = c.rootfs;
    }
    // `client` first, so that every other var may use it.
    let mut vars = Vec::with_capacity(t.vars.len() + c.vars.len() + 1);
    vars.push((
        S {
            v: CLIENT_VAR.into(),
            pos: client.pos,
        },
        client,
    ));
    vars.append(&mut t.vars);
    t.vars = by_key(vars, c.vars);
    t.layers.extend(c.layers);
    t.run.extend(c.run);
    t.test.extend(c.test);
    t.tags.extend(c.tags);
    for s in c.secrets {
        match t.secrets.iter_mut().find(|x| x.name.v == s.name.v) {
            Some(x) => *x = s,
            None => t.secrets.push(s),
        }
    }
    if c.network.is_some() {
        t.network = c.network;
    }
    if c.compression.is_some() {
        t.compression = c.compression;
    }
    if c.debian.is_some() {
        t.debian = c.debian;
    }
    t.config = merge_config(t.config, c.config);
    t
}

/// As a child image's config over its parent's (see `oci::image`): a new
/// entrypoint without a cmd drops the template's cmd.
fn merge_config(mut t: RawConfig, c: RawConfig) -> RawConfig {
    t.env = by_key(t.env, c.env);
    t.labels = by_key(t.labels, c.labels);
    if c.entrypoint.is_some() {
        t.entrypoint = c.entrypoint;
        t.cmd = None;
    }
    if c.cmd.is_some() {
        t.cmd = c.cmd;
    }
    t.workdir = c.workdir.or(t.workdir);
    t.user = c.user.or(t.user);
    t.stop_signal = c.stop_signal.or(t.stop_signal);
    t.ports.extend(c.ports);
    t.volumes.extend(c.volumes);
    t
}

/// `base` with each of `over` replacing the entry of its key in place (so
/// later entries of `base` see it), or added at the end.
fn by_key(mut base: Vec<(S, S)>, over: Vec<(S, S)>) -> Vec<(S, S)> {
    let mut at: HashMap<String, usize> = base
        .iter()
        .enumerate()
        .map(|(i, (k, _))| (k.v.clone(), i))
        .collect();
    for (k, v) in over {
        match at.get(&k.v) {
            Some(&i) => base[i] = (k, v),
            None => {
                at.insert(k.v.clone(), base.len());
                base.push((k, v));
            }
        }
    }
    base
}

/// A path the pattern matched, relative to images.yaml's directory.
#[derive(Debug)]
struct Match {
    rel: PathBuf,
    /// What the first wildcard component matched (without `.yaml`/`.yml`
    /// when that component is the file name).
    client: String,
}

fn is_wild(component: &str) -> bool {
    component.contains(['*', '?', '[', '{'])
}

/// The paths `pattern` matches below `dir`, in order. One directory is read
/// per wildcard component, so a large tree beside the clients (an upstream
/// checkout) costs nothing.
fn find(
    kinds: Option<&dyn PathKinds>,
    dir: &Path,
    pattern: &str,
) -> Result<Vec<Match>, (String, Option<String>)> {
    let components: Vec<&str> = pattern
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if pattern.starts_with('/') || components.contains(&"..") || components.is_empty() {
        return Err((
            "must be a pattern relative to images.yaml's directory, inside it".into(),
            Some("e.g. clients/*/client.yaml".into()),
        ));
    }
    if components.iter().any(|c| c.contains("**")) {
        return Err((
            "uses `**`, which `files` does not take".into(),
            Some("a `*` matches one directory level: write clients/*/client.yaml".into()),
        ));
    }
    if !components.iter().any(|c| is_wild(c)) {
        return Err((
            "has no wildcard, so it names no clients".into(),
            Some("`*` stands for each client, and `${client}` is what it matched: clients/*/client.yaml".into()),
        ));
    }
    let mut found: Vec<(PathBuf, Option<String>)> = vec![(PathBuf::new(), None)];
    for (i, component) in components.iter().enumerate() {
        let last = i + 1 == components.len();
        let mut next = Vec::new();
        if !is_wild(component) {
            for (rel, client) in found {
                let rel = rel.join(component);
                if kind_of(kinds, &dir.join(&rel)).is_some() {
                    next.push((rel, client));
                }
            }
            found = next;
            continue;
        }
        let glob = globset::Glob::new(component)
            .map_err(|e| (format!("is not a valid pattern: {}", e.kind()), None))?
            .compile_matcher();
        for (rel, client) in found {
            let here = dir.join(&rel);
            // `is_dir` follows a link, as the directory read below does.
            let is_dir = match kinds {
                Some(k) => k.kind(&here) == Some(PathKind::Dir),
                None => here.is_dir(),
            };
            if !is_dir {
                continue;
            }
            let entries = match kinds {
                Some(k) => k.read_dir(&here),
                None => std::fs::read_dir(&here).and_then(|d| {
                    d.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                        .collect()
                }),
            }
            .map_err(|e| (format!("cannot be read in {}: {e}", here.display()), None))?;
            let mut names: Vec<String> = entries
                .into_iter()
                // Hidden files (an editor's, `.git`) only when asked for.
                .filter(|n| !n.starts_with('.') || component.starts_with('.'))
                .filter(|n| glob.is_match(n))
                .collect();
            names.sort();
            for name in names {
                let client = client.clone().unwrap_or_else(|| {
                    let stem = name
                        .strip_suffix(".yaml")
                        .or_else(|| name.strip_suffix(".yml"));
                    match stem {
                        Some(s) if last => s.to_string(),
                        _ => name.clone(),
                    }
                });
                next.push((rel.join(&name), Some(client)));
            }
        }
        found = next;
    }
    Ok(found
        .into_iter()
        .map(|(rel, client)| Match {
            rel,
            client: client.unwrap_or_default(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{parse_in, tree};
    use super::super::{Parent, Spec, SpecError};
    use super::*;

    const IMAGES: &str = r#"
vars: {www: /var/www/moodle}
images:
  moodle-4.5: {from: scratch, vars: {release: "4.5.8"}}
  moodle-5.1: {from: scratch, vars: {release: "5.1.3"}}
clients:
  files: clients/*/client.yaml
  image: client-${client}
  template:
    from: moodle-${line}
    vars: {line: "5.1", site: "${client} site"}
    tags: ["client-${client}:${release}"]
    layers:
      - {src: config.php, dest: "${www}/config.php", mode: "0640"}
    config:
      env: {SITE: "${site}", LINE: "${line}"}
      cmd: ["web"]
"#;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn a_client_file_merges_over_the_template() {
        let d = tree();
        write(
            d.path(),
            "clients/acme/client.yaml",
            "vars: {line: \"4.5\"}\nlayers:\n  - {src: theme, dest: \"${www}/theme/acme\"}\ntags: [\"client-acme:latest\"]\nconfig:\n  env: {SITE: Acme}\n",
        );
        write(d.path(), "clients/acme/theme/x.txt", "x\n");
        write(d.path(), "clients/beta/client.yaml", "");
        let spec = parse_in(d.path(), IMAGES).unwrap();
        let acme = &spec.images["client-acme"];
        assert_eq!(acme.parent, Parent::Image("moodle-4.5".into()));
        assert_eq!(acme.vars["client"], "acme");
        assert_eq!(acme.vars["site"], "acme site");
        assert_eq!(acme.tags, ["client-acme:4.5.8", "client-acme:latest"]);
        assert_eq!(acme.config.env["SITE"], "Acme");
        assert_eq!(acme.config.env["LINE"], "4.5");
        assert_eq!(acme.config.cmd.as_deref(), Some(&["web".to_string()][..]));
        let dests: Vec<&str> = acme.layers.iter().map(|l| l.dest.as_str()).collect();
        assert_eq!(
            dests,
            ["/var/www/moodle/config.php", "/var/www/moodle/theme/acme"]
        );
        // Template paths from images.yaml's directory, the client's from its own.
        assert_eq!(acme.layers[0].src, d.path().join("config.php"));
        assert_eq!(acme.layers[1].src, d.path().join("clients/acme/theme"));
        let beta = &spec.images["client-beta"];
        assert_eq!(beta.parent, Parent::Image("moodle-5.1".into()));
        assert_eq!(beta.tags, ["client-beta:5.1.3"]);
        assert_eq!(
            spec.files,
            [
                PathBuf::from("clients/acme/client.yaml"),
                PathBuf::from("clients/beta/client.yaml")
            ]
        );
        assert_eq!(
            spec.file_at(acme.pos),
            Path::new("clients/acme/client.yaml")
        );
    }

    #[test]
    fn problems_name_the_client_file_line_and_column() {
        let d = tree();
        write(
            d.path(),
            "clients/acme/client.yaml",
            "vars: {line: \"5.1\"}\nlayer:\n  - {src: nope}\n",
        );
        write(
            d.path(),
            "clients/beta/client.yaml",
            "layers:\n  - {src: missing, dest: /x}\n",
        );
        let p = parse_in(d.path(), IMAGES).unwrap_err();
        let got: Vec<String> = p
            .iter()
            .map(|p| {
                format!(
                    "{}:{}:{} {}",
                    p.file
                        .as_deref()
                        .unwrap_or(Path::new("images.yaml"))
                        .display(),
                    p.line,
                    p.column,
                    p.message
                )
            })
            .collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            got[0].starts_with("clients/acme/client.yaml:2:1 unknown key `layer`"),
            "{got:?}"
        );
        assert_eq!(p[0].hint.as_deref(), Some("did you mean `layers`?"));
        assert_eq!(p[0].image.as_deref(), Some("client-acme"));
        assert!(
            got[1]
                .starts_with("clients/beta/client.yaml:2:11 layer source `missing` cannot be read"),
            "{got:?}"
        );
        assert!(
            p[1].hint.as_deref().unwrap().ends_with("clients/beta"),
            "{:?}",
            p[1].hint
        );
    }

    #[test]
    fn names_given_twice_and_files_that_are_not_yaml_are_errors() {
        let d = tree();
        write(d.path(), "clients/acme/client.yaml", "");
        write(d.path(), "clients/notes.txt", "");
        let twice = IMAGES.replace("images:\n", "images:\n  client-acme: {from: scratch}\n");
        let p = parse_in(d.path(), &twice).unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!((p[0].file.as_deref(), p[0].line), (None, 4));
        assert!(
            p[0].message.contains(
                "`client-acme` is written here and also made from clients/acme/client.yaml"
            ),
            "{p:?}"
        );

        // The list form: the same files made twice.
        let list = "images: {}\nclients:\n  - {files: \"clients/*/client.yaml\", template: {from: scratch}}\n  - {files: \"clients/*/*.yaml\", template: {from: scratch}}\n";
        let p = parse_in(d.path(), list).unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(
            p[0].message,
            "image `acme` is made from clients/acme/client.yaml and from clients/acme/client.yaml"
        );
        assert_eq!(
            p[0].file.as_deref(),
            Some(Path::new("clients/acme/client.yaml"))
        );

        let p = parse_in(
            d.path(),
            "images: {}\nclients: {files: \"clients/*\", template: {from: scratch}}\n",
        )
        .unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!((p[0].line, p[0].column), (2, 18));
        assert_eq!(
            p[0].message,
            "`files: clients/*` matches what is not a YAML file: clients/acme, clients/notes.txt"
        );
    }

    #[test]
    fn an_empty_pattern_makes_no_images_and_bad_patterns_say_why() {
        let d = tree();
        let spec = parse_in(
            d.path(),
            "images: {a: {from: scratch}}\nclients: {files: \"clients/*/client.yaml\"}\n",
        )
        .unwrap();
        assert_eq!(spec.images.len(), 1);
        for (files, why) in [
            ("../x/*.yaml", "relative to images.yaml's directory"),
            ("clients/**/client.yaml", "`**`"),
            ("clients/acme.yaml", "no wildcard"),
        ] {
            let p = parse_in(
                d.path(),
                &format!("images: {{}}\nclients: {{files: \"{files}\"}}\n"),
            )
            .unwrap_err();
            assert!(p[0].message.contains(why), "{files}: {p:?}");
        }
    }

    #[test]
    fn the_file_name_is_the_client_when_the_wildcard_is_in_it() {
        let d = tree();
        write(d.path(), "sites/acme.yaml", "from: scratch\n");
        write(d.path(), "sites/Bad.yml", "from: scratch\n");
        let p = parse_in(d.path(), "images: {}\nclients: {files: \"sites/*.y*ml\"}\n").unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].file.as_deref(), Some(Path::new("sites/Bad.yml")));
        assert!(p[0].message.contains("`Bad`"), "{p:?}");
        std::fs::remove_file(d.path().join("sites/Bad.yml")).unwrap();
        let spec = parse_in(d.path(), "images: {}\nclients: {files: \"sites/*.yaml\"}\n").unwrap();
        assert_eq!(spec.images["acme"].vars["client"], "acme");
    }

    #[test]
    fn errors_render_with_the_client_file_beside_images_yaml() {
        let d = tree();
        write(
            d.path(),
            "clients/acme/client.yaml",
            "{from: scratch, tag: []}\n",
        );
        let err = Spec::parse(
            "images: {}\nclients: {files: \"clients/*/client.yaml\"}\n",
            &d.path().join("images.yaml"),
            d.path(),
        )
        .unwrap_err();
        let SpecError::Invalid { .. } = &err else {
            panic!("{err}")
        };
        let text = err.to_string();
        let want = format!(
            "{}:1:17: image acme: unknown key `tag` in an image",
            d.path().join("clients/acme/client.yaml").display()
        );
        assert!(text.starts_with(&want), "{text}");
    }

    #[test]
    fn client_is_reserved_and_an_entrypoint_drops_the_template_cmd() {
        let d = tree();
        write(
            d.path(),
            "clients/acme/client.yaml",
            "vars: {client: other}\nconfig: {entrypoint: [\"/init\"]}\n",
        );
        let p = parse_in(d.path(), IMAGES).unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!((p[0].line, p[0].column), (1, 8));
        assert!(
            p[0].message
                .contains("the var `client` is set by `clients:`")
        );
        write(
            d.path(),
            "clients/acme/client.yaml",
            "config: {entrypoint: [\"/init\"], ports: [443]}\n",
        );
        let spec = parse_in(d.path(), IMAGES).unwrap();
        let c = &spec.images["client-acme"].config;
        assert_eq!(c.entrypoint.as_deref(), Some(&["/init".to_string()][..]));
        assert_eq!(c.cmd, None);
        assert_eq!(c.ports, ["443/tcp"]);
    }

    #[test]
    fn a_parent_the_template_cannot_find_is_the_client_file_s_problem() {
        let d = tree();
        write(
            d.path(),
            "clients/acme/client.yaml",
            "vars: {line: \"9\"}\n",
        );
        write(
            d.path(),
            "clients/beta/client.yaml",
            "vars: {line: \"8\"}\n",
        );
        let p = parse_in(d.path(), IMAGES).unwrap_err();
        assert_eq!(p.len(), 2, "{p:?}");
        for (p, (file, line)) in p.iter().zip([("acme", "9"), ("beta", "8")]) {
            assert_eq!(
                p.file.as_deref(),
                Some(Path::new(&format!("clients/{file}/client.yaml")))
            );
            assert_eq!(
                p.message,
                format!(
                    "unknown parent image `moodle-{line}` (the template's `from: moodle-${{line}}`, images.yaml line 10)"
                )
            );
        }
    }

    #[test]
    fn five_hundred_clients_on_two_lines_load() {
        // Issue 11: a fleet of 500 clients must load in well under a second;
        // this checks the result, and loading is linear by construction.
        let d = tree();
        for i in 0..500 {
            let line = if i % 2 == 0 { "4.5" } else { "5.1" };
            write(
                d.path(),
                &format!("clients/c{i:03}/client.yaml"),
                &format!(
                    "vars: {{line: \"{line}\"}}\nlayers:\n  - {{src: theme, dest: \"${{www}}/theme/c{i}\"}}\nconfig:\n  env: {{SITE: \"Site {i}\"}}\n"
                ),
            );
            write(
                d.path(),
                &format!("clients/c{i:03}/theme/version.php"),
                "<?php\n",
            );
        }
        let start = std::time::Instant::now();
        let spec = parse_in(d.path(), IMAGES).unwrap();
        eprintln!("500 clients loaded in {:?}", start.elapsed());
        assert_eq!(spec.images.len(), 502);
        assert_eq!(spec.files.len(), 500);
        let c = &spec.images["client-c499"];
        assert_eq!(c.parent, Parent::Image("moodle-5.1".into()));
        assert_eq!(c.config.env["SITE"], "Site 499");
        assert_eq!(c.layers[1].dest, "/var/www/moodle/theme/c499");
        assert_eq!(c.layers[1].src, d.path().join("clients/c499/theme"));
        assert_eq!(spec.file_at(c.pos), Path::new("clients/c499/client.yaml"));
        let on_45 = spec
            .images
            .values()
            .filter(|i| i.parent == Parent::Image("moodle-4.5".into()))
            .count();
        assert_eq!(on_45, 250);
    }
}
