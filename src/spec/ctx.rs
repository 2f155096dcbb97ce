//! What every section's reader shares: scalars with their positions, the
//! problems found so far (one per position), typed readers of yaml nodes, and
//! var expansion that reports where it failed.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Problem;
use super::vars::{self, Lookup, Overlay, VarError, Vars};
use super::yaml::{Kind, Node, Pos};
use crate::suggest;

/// A scalar with its position, before vars are expanded.
#[derive(Debug, Clone)]
pub(super) struct S {
    pub(super) v: String,
    pub(super) pos: Pos,
}

#[derive(Default)]
pub(super) struct Ctx<'a> {
    pub(super) problems: Vec<Problem>,
    /// The image being read, named in each problem.
    pub(super) image: Option<String>,
    /// The files images.yaml includes (client files), relative to its
    /// directory; `Pos::file` n is `files[n - 1]`.
    pub(super) files: Vec<PathBuf>,
    /// (file, line, column) of each problem, so recording one is O(1).
    reported: HashSet<(u32, usize, usize)>,
    /// The build context: every path the file names must resolve inside
    /// it (see [`Ctx::inside`]). Empty: not checked (unit tests of a
    /// section alone).
    pub(super) context: Context,
    /// What paths are, when they are not read from the filesystem (a spec
    /// of an earlier commit, read from git's objects).
    pub(super) kinds: Option<&'a dyn super::PathKinds>,
}

/// The build context as given (absolute, `..` folded) and with its links
/// resolved, so both a path that exists and one that does not compare.
#[derive(Default)]
pub(super) struct Context {
    pub(super) given: PathBuf,
    real: PathBuf,
}

impl Context {
    pub(super) fn new(dir: &Path) -> Context {
        let given = normalise(&std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()));
        let real = dir.canonicalize().unwrap_or_else(|_| given.clone());
        Context { given, real }
    }
}

/// `path` with `.` and `..` folded lexically.
fn normalise(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Where `path` really is: the nearest ancestor that exists with its links
/// resolved, and the rest as written (`..` folded).
/// What a path is: read from the filesystem, or from `kinds` when given.
pub(super) fn kind_of(
    kinds: Option<&dyn super::PathKinds>,
    path: &Path,
) -> Option<super::PathKind> {
    use super::PathKind;
    match kinds {
        Some(k) => k.kind(path),
        None => std::fs::symlink_metadata(path).ok().map(|m| {
            if m.is_dir() {
                PathKind::Dir
            } else if m.is_file() {
                PathKind::File
            } else {
                PathKind::Other
            }
        }),
    }
}

pub(super) fn real_path(path: &Path) -> PathBuf {
    if let Ok(real) = path.canonicalize() {
        return real;
    }
    let lexical = normalise(&std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
    let mut rest = Vec::new();
    let mut at = lexical.as_path();
    while let Some(parent) = at.parent() {
        if let Some(name) = at.file_name() {
            rest.push(name.to_os_string());
        }
        if let Ok(real) = parent.canonicalize() {
            return rest.iter().rev().fold(real, |p, n| p.join(n));
        }
        at = parent;
    }
    lexical
}

impl Ctx<'_> {
    /// Records a problem; one per position, so a value whose vars failed
    /// is not also reported as, say, a bad path.
    pub(super) fn err(&mut self, pos: Pos, message: impl Into<String>, hint: Option<String>) {
        if !self.reported.insert((pos.file, pos.line, pos.col)) {
            return;
        }
        let file = self.included(pos).map(Path::to_path_buf);
        self.problems.push(Problem {
            file,
            line: pos.line,
            column: pos.col,
            image: self.image.clone(),
            message: message.into(),
            hint,
        });
    }

    /// The included file `pos` is in (relative to images.yaml's
    /// directory), or None for images.yaml itself.
    pub(super) fn included(&self, pos: Pos) -> Option<&Path> {
        let n = usize::try_from(pos.file).ok()?.checked_sub(1)?;
        self.files.get(n).map(PathBuf::as_path)
    }

    /// The directory a path written at `pos` is relative to: that of the
    /// file it is written in (`dir` is images.yaml's).
    pub(super) fn base(&self, pos: Pos, dir: &Path) -> PathBuf {
        match self.included(pos).and_then(Path::parent) {
            Some(sub) => dir.join(sub),
            None => dir.to_path_buf(),
        }
    }

    pub(super) fn map<'n>(&mut self, node: &'n Node, what: &str) -> &'n [(Node, Node)] {
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

    /// Whether `path` (written as `text` at `pos`) resolves inside the
    /// build context, links included; reports it when not. As `docker
    /// build` refuses `COPY ../x`: images.yaml must not read the machine's
    /// files (a merge request's `src: ../../../../etc` would put the CI
    /// runner's /etc/shadow into a layer).
    pub(super) fn inside(&mut self, pos: Pos, what: &str, text: &str, path: &Path) -> bool {
        if self.context.given.as_os_str().is_empty() {
            return true;
        }
        let real = real_path(path);
        if real.starts_with(&self.context.real) || real.starts_with(&self.context.given) {
            return true;
        }
        let lexical = normalise(&std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
        let through = if lexical == real {
            String::new()
        } else {
            format!(" (through a link, it is {})", real.display())
        };
        self.err(
            pos,
            format!(
                "{what} `{text}` is outside the build context {}{through}",
                self.context.given.display()
            ),
            Some(format!(
                "imgbuild reads only files inside the build context, the directory of images.yaml (as `docker build` refuses `COPY ../x`): move it under {}, or widen the context explicitly with `--context DIR`",
                self.context.given.display()
            )),
        );
        false
    }

    /// The entries of a mapping whose keys are all in `allowed`.
    pub(super) fn keyed<'n>(
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

    pub(super) fn scalar(&mut self, node: &Node, what: &str) -> Option<S> {
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

    pub(super) fn list(&mut self, node: &Node, what: &str) -> Vec<S> {
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
    pub(super) fn command(&mut self, node: &Node, what: &str) -> Option<Vec<S>> {
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

    pub(super) fn pairs(&mut self, node: &Node, what: &str) -> Vec<(S, S)> {
        let mut out = Vec::new();
        // A set, not a scan of `out`: a file may define 100,000s of vars.
        let mut seen = HashSet::new();
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
                if !seen.insert(k.v.clone()) {
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

/// Reports the var names in `defs` that `${…}` could not name.
pub(super) fn check_var_names(cx: &mut Ctx, defs: &[(S, S)]) {
    for (k, _) in defs {
        if !vars::valid_name(&k.v) {
            cx.err(k.pos, format!("`{}` is not a valid var name", k.v), None);
        }
    }
}

/// Expands var definitions in order, each seeing the ones before it, over
/// `inherited` (shared, not copied).
pub(super) fn expand_var_defs(cx: &mut Ctx, inherited: &Arc<Vars>, defs: &[(S, S)]) -> Arc<Vars> {
    let mut own = BTreeMap::new();
    // Where each name is defined among `defs`: built on the first failure
    // only, as a file may define 100,000s of vars.
    let mut index: Option<HashMap<&str, usize>> = None;
    // The members of cycles reported, so a cycle is reported once.
    let mut cycles = HashSet::new();
    for (i, (k, v)) in defs.iter().enumerate() {
        let seen = Overlay {
            own: &own,
            up: inherited.as_ref(),
        };
        let value = match vars::expand(&v.v, &seen) {
            Err(VarError::Unknown(name)) => {
                let index = index.get_or_insert_with(|| {
                    defs.iter()
                        .enumerate()
                        .map(|(j, (k, _))| (k.v.as_str(), j))
                        .collect()
                });
                match index.get(name.as_str()) {
                    Some(&j) if j >= i => {
                        if !cycles.contains(&i) {
                            unordered_var(cx, defs, index, i, &name, &mut cycles);
                        }
                        String::new()
                    }
                    _ => expand(cx, v, &seen).unwrap_or_default(),
                }
            }
            _ => expand(cx, v, &seen).unwrap_or_default(),
        };
        own.insert(k.v.clone(), value);
    }
    Vars::child(inherited, own)
}

/// Reports `defs[i]`, which names `name`, defined at or below it: as a
/// cycle when the vars it names lead back to it, else as an order to fix.
fn unordered_var(
    cx: &mut Ctx,
    defs: &[(S, S)],
    index: &HashMap<&str, usize>,
    i: usize,
    name: &str,
    cycles: &mut HashSet<usize>,
) {
    let (k, v) = &defs[i];
    match var_cycle(defs, index, i) {
        Some(cycle) => {
            cycles.extend(cycle.iter().copied());
            let mut names: Vec<&str> = cycle.iter().map(|&j| defs[j].0.v.as_str()).collect();
            names.push(&k.v);
            cx.err(
                v.pos,
                format!("vars are defined through each other in a cycle: {}", names.join(" → ")),
                Some("give one var of the cycle a value that does not name the others".into()),
            );
        }
        None => cx.err(
            v.pos,
            format!("`${{{name}}}` is defined below `{}`", k.v),
            Some(format!(
                "a var sees the vars above it (and those of the file and of the images it is built from): move `{name}` above `{}`",
                k.v
            )),
        ),
    }
}

/// A path of definitions from `start` back to itself, through the names
/// each one refers to (a depth-first walk, each definition seen once).
fn var_cycle(defs: &[(S, S)], index: &HashMap<&str, usize>, start: usize) -> Option<Vec<usize>> {
    let refs = |j: usize| -> Vec<usize> {
        vars::references(&defs[j].1.v)
            .into_iter()
            .filter_map(|n| index.get(n).copied())
            .collect()
    };
    let mut seen = HashSet::from([start]);
    // (definition, the refs left to follow from it)
    let mut stack: Vec<(usize, Vec<usize>)> = vec![(start, refs(start))];
    while let Some((_, next)) = stack.last_mut() {
        match next.pop() {
            Some(j) if j == start => return Some(stack.iter().map(|(d, _)| *d).collect()),
            Some(j) if seen.insert(j) => {
                let r = refs(j);
                stack.push((j, r));
            }
            Some(_) => {}
            None => {
                stack.pop();
            }
        }
    }
    None
}

pub(super) fn expand(cx: &mut Ctx, s: &S, vars: &(impl Lookup + ?Sized)) -> Option<String> {
    match vars::expand(&s.v, vars) {
        Ok(v) => Some(v),
        Err(e) => {
            let (message, hint) = match e {
                VarError::Unknown(name) => match super::revision::unknown(&name) {
                    Some((message, hint)) => (message, Some(hint)),
                    None => (
                        format!("unknown var `${{{name}}}`"),
                        Some(match suggest::closest(&name, vars.names()) {
                            Some(c) => format!("did you mean `${{{c}}}`?"),
                            None => format!(
                                "define `{name}` under `vars:` at the top of the file or in this image or an image it is built from (write `$${{…}}` for a literal `${{…}}`)"
                            ),
                        }),
                    ),
                },
                VarError::Unterminated => ("`${` without a closing `}`".into(), None),
                VarError::BadName(n) => (format!("`{n}` is not a valid var name"), None),
            };
            cx.err(s.pos, message, hint);
            None
        }
    }
}

/// Each string expanded; one that fails (reported) becomes "".
pub(super) fn expand_each(cx: &mut Ctx, items: &[S], vars: &(impl Lookup + ?Sized)) -> Vec<String> {
    items
        .iter()
        .map(|s| expand(cx, s, vars).unwrap_or_default())
        .collect()
}
