//! The second pass: parents, cycles and vars resolved along each image's
//! `from` chain, then each section checked (see the sibling modules).
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use super::ctx::{Context, Ctx, check_var_names, expand, expand_each, expand_var_defs};
use super::raw::{self, RawImage};
use super::sources::{self, Known, LoadOptions, Source};
use super::vars::Vars;
use super::yaml;
use super::{Image, Parent, Problem};
use super::{clients, config, debian, layers, revision, steps, tags};
use crate::{graph, suggest};

/// What is wrong with images.yaml; `fetch`: a source could not be fetched.
pub(super) struct Failed {
    pub problems: Vec<Problem>,
    pub fetch: bool,
}

/// What the top level of images.yaml gives, besides images.
#[derive(Debug, Default)]
pub(super) struct Top {
    pub registry: Option<String>,
    /// The client files read, relative to images.yaml's directory.
    pub files: Vec<std::path::PathBuf>,
    pub sources: BTreeMap<String, Source>,
}

pub(super) fn parse(
    text: &str,
    dir: &Path,
    opts: &LoadOptions<'_>,
) -> Result<(BTreeMap<String, Image>, Top), Failed> {
    let root = yaml::parse(text).map_err(|e| Failed {
        problems: vec![Problem {
            file: None,
            line: e.pos.line,
            column: e.pos.col,
            image: None,
            message: format!("YAML syntax: {}", e.message),
            hint: Some(e.hint()),
        }],
        fetch: false,
    })?;
    let mut cx = Ctx::default();
    cx.context = Context::new(opts.context.unwrap_or(dir));
    cx.kinds = opts.kinds;
    let mut file = raw::read_file(&mut cx, &root);
    check_var_names(&mut cx, &file.vars);
    sources::apply_set(&mut cx, &mut file.vars, opts.set, file.vars_pos);
    let mut file_vars: BTreeMap<String, String> =
        expand_var_defs(&mut cx, &Vars::root(BTreeMap::new()), &file.vars).to_map();
    let (fetched, fetch_failed) =
        sources::finish_sources(&mut cx, &file.sources, &mut file_vars, dir, opts.fetcher);
    revision::add_vars(&mut file_vars, opts.revision);
    let declared: Vec<String> = file.sources.iter().map(|s| s.name().to_string()).collect();
    let known = Known {
        fetched: &fetched,
        declared: &declared,
    };
    clients::add_images(&mut cx, &file.clients, &mut file.images, &file_vars, dir);
    let images = resolve(&mut cx, &file.images, &file_vars, dir, &known);
    let registry = file.registry.and_then(|r| {
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
        Ok((
            images,
            Top {
                registry,
                files: cx.files,
                sources: fetched,
            },
        ))
    } else {
        Err(Failed {
            problems: cx.problems,
            fetch: fetch_failed,
        })
    }
}

fn resolve(
    cx: &mut Ctx,
    raw: &BTreeMap<String, RawImage>,
    file_vars: &BTreeMap<String, String>,
    dir: &Path,
    known: &Known<'_>,
) -> BTreeMap<String, Image> {
    // The file's vars, shared by every image below its own.
    let root = Vars::root(file_vars.clone());
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
        let own = expand_var_defs(cx, &root, &image.vars);
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
                None => {
                    // A fleet has hundreds of images: name a few.
                    let mut some: Vec<&str> = raw.keys().take(10).map(String::as_str).collect();
                    if raw.len() > some.len() {
                        some.push("…");
                    }
                    format!(
                        "`from` takes `scratch`, an image of this file ({}), or a registry reference",
                        some.join(", ")
                    )
                }
            };
            // A template's `from` (`clients:`) names a parent per client
            // file: the problem is the file's.
            let (pos, whose) = if from.pos.file == image.pos.file {
                (from.pos, String::new())
            } else {
                (
                    image.pos,
                    format!(
                        " (the template's `from: {}`, images.yaml line {})",
                        from.v, from.pos.line
                    ),
                )
            };
            cx.err(
                pos,
                format!("unknown parent image `{target}`{whose}"),
                Some(hint),
            );
            continue;
        };
        parents.insert(name, parent);
    }
    cx.image = None;

    let parent_in = |n: &str| match parents.get(n) {
        Some(Parent::Image(p)) => Some(p.as_str()),
        _ => None,
    };
    for cycle in graph::cycles(parents.keys().copied(), parent_in) {
        let mut names: Vec<&str> = cycle.clone();
        names.push(cycle[0]);
        cx.image = Some(cycle[0].to_string());
        cx.err(
            raw[cycle[0]]
                .from
                .as_ref()
                .map_or(raw[cycle[0]].pos, |f| f.pos),
            format!(
                "images are built from each other in a cycle: {}",
                names.join(" → ")
            ),
            Some(
                "one image of the cycle must start from `scratch` or from an image outside it"
                    .into(),
            ),
        );
    }
    cx.image = None;

    // Vars flow down the `from` chain, so expand in parent-first order
    // (`order` leaves out images on or below a cycle).
    let mut done: BTreeMap<String, Image> = BTreeMap::new();
    // The nearest image at or above each done one whose `debian:` is valid.
    let mut debian_at_or_above: HashMap<&str, Option<&str>> = HashMap::new();
    for name in graph::order(parents.keys().copied(), parent_in) {
        let parent = &parents[name];
        let inherited = match parent {
            Parent::Scratch | Parent::Registry(_) => Arc::clone(&root),
            Parent::Image(p) => match done.get(p) {
                Some(parent_image) => Arc::clone(&parent_image.vars),
                // Its parent has a problem already reported.
                None => continue,
            },
        };
        cx.image = Some(name.to_string());
        // What `graph::ancestors(name, …).find(…)` with a Debian section
        // gives, kept per image so that a long chain is not walked per image.
        let parent_debian = match parent {
            Parent::Image(p) => debian_at_or_above[p.as_str()].map(|a| &done[a]),
            _ => None,
        }
        .and_then(|i| i.debian.clone());
        let mut image = finish_image(cx, name, &raw[name], parent.clone(), &inherited, dir, known);
        if let Some(d) = &raw[name].debian {
            if raw[name].rootfs.is_some() {
                // Packages go in before file layers, and the tarball is one.
                cx.err(
                    d.pos,
                    "`debian` cannot install into the tarball of the same image's `from: {rootfs: …}`",
                    Some("import the tarball in one image and install packages in a child image `from:` it".into()),
                );
            } else {
                image.debian =
                    debian::finish_debian(cx, d, &image.vars, dir, parent_debian.as_ref());
            }
        }
        let at_or_above = match (&image.debian, parent) {
            (Some(_), _) => Some(name),
            (None, Parent::Image(p)) => debian_at_or_above[p.as_str()],
            (None, _) => None,
        };
        debian_at_or_above.insert(name, at_or_above);
        done.insert(name.to_string(), image);
    }
    cx.image = None;
    done
}

fn finish_image(
    cx: &mut Ctx,
    name: &str,
    raw: &RawImage,
    parent: Parent,
    inherited: &Arc<Vars>,
    dir: &Path,
    known: &Known<'_>,
) -> Image {
    check_var_names(cx, &raw.vars);
    let vars = expand_var_defs(cx, inherited, &raw.vars);
    let run = expand_each(cx, &raw.run, &vars);
    let test = expand_each(cx, &raw.test, &vars);
    let config = config::finish_config(cx, &raw.config, &vars);
    let tags = tags::finish_tags(cx, &raw.tags, &vars);
    let secrets = steps::finish_secrets(cx, &raw.secrets, &vars, dir);
    let network = steps::finish_network(cx, raw.network.as_ref(), &vars);
    let layers = layers::finish_layers(cx, raw, &vars, dir, known);
    let compression = steps::finish_compression(cx, raw.compression.as_ref(), &vars);
    Image {
        name: name.to_string(),
        pos: raw.pos,
        parent,
        layers,
        run,
        test,
        config,
        tags,
        vars,
        secrets,
        network,
        debian: None,
        compression,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{parse_in, tree};
    use super::*;

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
    fn a_long_chain_resolves_in_linear_time() {
        // Issue 13: checking a chain of 5,000 images took 23 s, walking the
        // chain once per image and per step. Children sort before their
        // parents here, the worst order for a pass-until-done loop.
        let n = 5_000;
        let mut text = String::from("images:\n  i0: {from: scratch}\n");
        for i in 1..n {
            text.push_str(&format!("  i{i}: {{from: i{}}}\n", i - 1));
        }
        let spec = parse_in(Path::new("/"), &text).unwrap();
        assert_eq!(spec.images.len(), n);
        assert_eq!(spec.parent_of("i4999"), Some("i4998"));
    }

    #[test]
    fn many_vars_read_in_linear_time() {
        // Issue 13: 196,000 vars took 74 s, each checked against all
        // before it for a duplicate.
        let mut text = String::from("vars:\n");
        for i in 0..50_000 {
            text.push_str(&format!("  v{i}: x{i}\n"));
        }
        text.push_str("  v7: again\nimages:\n  a: {from: scratch, tags: [\"${v49999}\"]}\n");
        let p = parse_in(Path::new("/"), &text).unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].message, "`v7` is given twice in vars");
        assert_eq!(p[0].line, 50_002);
    }

    #[test]
    fn a_var_cycle_is_named_as_one() {
        let d = tree();
        let p = parse_in(
            d.path(),
            "vars:\n  a: \"${b}\"\n  b: \"x-${c}\"\n  c: \"${a}\"\n  d: \"${e}\"\n  e: \"1\"\n  f: \"${f}\"\nimages:\n  x: {from: scratch, vars: {g: \"${h}\", h: \"${g}\"}}\n",
        )
        .unwrap_err();
        let msgs: Vec<String> = p
            .iter()
            .map(|p| {
                format!(
                    "{}:{} {} | {}",
                    p.line,
                    p.column,
                    p.message,
                    p.hint.as_deref().unwrap_or("")
                )
            })
            .collect();
        let want = [
            "2:6 vars are defined through each other in a cycle: a → b → c → a",
            "5:6 `${e}` is defined below `d` | a var sees the vars above it",
            "7:6 vars are defined through each other in a cycle: f → f",
            "9:32 vars are defined through each other in a cycle: g → h → g",
        ];
        for w in want {
            assert!(msgs.iter().any(|m| m.starts_with(w)), "{w}: {msgs:#?}");
        }
        assert_eq!(msgs.len(), want.len(), "each cycle once: {msgs:#?}");
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
}
