//! A deterministic dependency resolver in the spirit of apt's: greedy, no
//! SAT search, one version per package name.
//!
//! Rules, in the order they apply to one dependency `a | b (>= 1) | c`:
//! 1. if any alternative is already satisfied by the parent image's
//!    packages or by a package chosen earlier, nothing is added;
//! 2. otherwise the alternatives are tried left to right; for each, the
//!    real package of that name (highest version satisfying the relation
//!    first), then its providers: Essential first, then by Priority
//!    (required first), then name, then highest version, as apt ≥ 2.7
//!    orders them (apt 2.6 broke the last tie by cache order instead);
//! 3. the first candidate that conflicts (Conflicts or Breaks, in either
//!    direction) with nothing chosen or installed wins. A clash with an
//!    installed package is lifted by upgrading that package when its newest
//!    version no longer clashes.
//!
//! Requested packages are chosen first, then dependencies breadth first;
//! Recommends (when asked for) only once no Depends is pending, so that a
//! recommendation never steers an alternative a hard dependency needs.
//!
//! Unlike apt, a dependency whose relation the newest version fails (e.g.
//! `(= 1.0-1)` while the security suite has `1.0-1+deb13u1`) takes the
//! newest version that satisfies it instead of failing.
//!
//! Only packages of the native architecture and `all` are considered
//! (foreign-architecture entries are ignored, installed ones included).
use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write;
use std::str::FromStr;

use super::package::{Alternatives, Dep, Package, Provide, Relation};
use super::version;

/// A predefined package set added to the request, as mmdebstrap's variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Every `Essential: yes` and every `Priority: required` package (the
    /// newest of each name), then their dependency closure.
    Minbase,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Install Recommends too (apt's default is yes; images want no).
    pub recommends: bool,
    pub variant: Option<Variant>,
    /// The native architecture, `amd64`; `all` packages always count.
    pub architecture: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            recommends: false,
            variant: None,
            architecture: "amd64".to_string(),
        }
    }
}

/// One requested package: `name` or `name=version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub name: String,
    pub version: Option<String>,
}

impl FromStr for Request {
    type Err = ResolveError;
    fn from_str(s: &str) -> Result<Request, ResolveError> {
        let bad = |reason: String| ResolveError::BadRequest {
            request: s.to_string(),
            reason,
        };
        let (name, version) = match s.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (s, None),
        };
        // Policy 5.6.1: lower case letters, digits, + - . ; two or more,
        // starting with an alphanumeric.
        let name_ok = name.len() >= 2
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
        if !name_ok {
            return Err(bad(format!("{name:?} is not a Debian package name")));
        }
        if let Some(v) = version {
            version::validate(v).map_err(|e| bad(e.to_string()))?;
        }
        Ok(Request {
            name: name.to_string(),
            version: version.map(str::to_string),
        })
    }
}

/// What to install on top of the parent image, sorted by name: new
/// packages and upgrades of installed ones, nothing already satisfied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub packages: Vec<Package>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("invalid request {request:?}: {reason}")]
    BadRequest { request: String, reason: String },
    #[error("unknown package {name}{}", .suggestion.as_ref().map(|s| format!(" (did you mean {s}?)")).unwrap_or_default())]
    Unknown {
        name: String,
        suggestion: Option<String>,
    },
    #[error("{name} has no version {version}: the archive has {}", .available.join(", "))]
    NoSuchVersion {
        name: String,
        version: String,
        available: Vec<String>,
    },
    #[error("{name} is a virtual package provided by {}: request one of them", .providers.join(", "))]
    Virtual {
        name: String,
        providers: Vec<String>,
    },
    /// `chain` runs from a requested package to the dependency that
    /// failed; `reason` says why each of its alternatives failed.
    #[error("{} → {reason}", .chain.join(" → "))]
    Unsatisfiable { chain: Vec<String>, reason: String },
    /// The only way to satisfy the end of `chain` clashes with a package
    /// already chosen or installed.
    #[error("{} → {clash}", .chain.join(" → "))]
    Conflict {
        chain: Vec<String>,
        clash: Box<Clash>,
    },
    #[error(
        "installing {upgraded} breaks the installed {installed}, which has no version that fits: {reason}"
    )]
    BreaksInstalled {
        upgraded: String,
        installed: String,
        reason: String,
    },
}

/// Two packages that cannot be installed together: `declared_by` (one of
/// them) says so in `field` (Conflicts or Breaks) with `dep`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{package} conflicts with {other} ({declared_by} {field}: {dep})")]
pub struct Clash {
    /// `name version` of the package that was to be chosen.
    pub package: String,
    /// `name version` of the one it clashes with.
    pub other: String,
    pub declared_by: String,
    pub field: &'static str,
    pub dep: String,
}

/// The resolver's hash maps. Their keys are package names from a signed
/// archive (or the parent image's status), never chosen by an attacker
/// who could aim collisions at them, so a fast non-cryptographic hash
/// does instead of SipHash (~15% of a lock's time). Nothing iterates a
/// map where order would reach the result: such lists are sorted.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The archive indexed for one architecture: by name (newest version
/// first) and by provided name. It holds positions in the package list it
/// was built from, not the packages, so a loaded archive can keep it
/// beside them and every image resolved in a session reuses it.
#[derive(Debug, Clone)]
pub struct Index {
    arch: String,
    /// The length of the list indexed: a check that it is used with it.
    len: usize,
    by_name: Map<Box<str>, Vec<usize>>,
    /// Provided name → (position, index in that package's Provides).
    providers: Map<Box<str>, Vec<(usize, usize)>>,
}

impl Index {
    /// Indexes `packages` (several suites may be merged; a name+version seen
    /// twice keeps its first entry) for `architecture`.
    pub fn new(packages: &[Package], architecture: &str) -> Index {
        let mut kept = Vec::with_capacity(packages.len());
        let mut by_name: Map<Box<str>, Vec<usize>> = Map::default();
        by_name.reserve(packages.len());
        for (i, p) in packages.iter().enumerate() {
            if p.architecture != architecture && p.architecture != "all" {
                continue;
            }
            let versions = match by_name.get_mut(p.name.as_str()) {
                Some(v) => v,
                None => by_name.entry(p.name.as_str().into()).or_default(),
            };
            if versions
                .iter()
                .any(|&j| version::compare(&packages[j].version, &p.version) == Ordering::Equal)
            {
                continue;
            }
            versions.push(i);
            kept.push(i);
        }
        for versions in by_name.values_mut() {
            versions.sort_by(|&a, &b| version::compare(&packages[b].version, &packages[a].version));
        }
        let mut providers: Map<Box<str>, Vec<(usize, usize)>> = Map::default();
        for &i in &kept {
            for (k, prov) in packages[i].provides.iter().enumerate() {
                match providers.get_mut(prov.name.as_str()) {
                    Some(list) => list.push((i, k)),
                    None => {
                        providers.insert(prov.name.as_str().into(), vec![(i, k)]);
                    }
                }
            }
        }
        for list in providers.values_mut() {
            list.sort_by(|&(a, _), &(b, _)| {
                let (a, b) = (&packages[a], &packages[b]);
                // apt's CompareProviders: Essential, then Priority, then
                // (newer apt) the name.
                b.essential
                    .cmp(&a.essential)
                    .then_with(|| priority_rank(&a.priority).cmp(&priority_rank(&b.priority)))
                    .then_with(|| a.name.cmp(&b.name))
                    .then_with(|| version::compare(&b.version, &a.version))
            });
        }
        Index {
            arch: architecture.to_string(),
            len: packages.len(),
            by_name,
            providers,
        }
    }
}

/// Packages and their [`Index`]: what the resolver works on. A package is
/// known by its position in the list.
#[derive(Debug)]
pub struct Universe<'a> {
    pkgs: &'a [Package],
    index: Cow<'a, Index>,
}

impl<'a> Universe<'a> {
    /// Indexes `packages` (several suites may be merged; a name+version seen
    /// twice keeps its first entry) for `architecture`.
    pub fn new(packages: &'a [Package], architecture: &str) -> Universe<'a> {
        Universe {
            pkgs: packages,
            index: Cow::Owned(Index::new(packages, architecture)),
        }
    }

    /// `packages` with the index built from them earlier.
    ///
    /// # Panics
    /// If `index` was built from a list of another length.
    pub fn with_index(packages: &'a [Package], index: &'a Index) -> Universe<'a> {
        assert_eq!(index.len, packages.len(), "an index of another list");
        Universe {
            pkgs: packages,
            index: Cow::Borrowed(index),
        }
    }

    fn pkg(&self, i: usize) -> &'a Package {
        &self.pkgs[i]
    }

    fn arch(&self) -> &str {
        &self.index.arch
    }

    /// The positions of `name`'s versions, newest first.
    pub fn versions(&self, name: &str) -> Option<&[usize]> {
        self.index.by_name.get(name).map(Vec::as_slice)
    }

    /// The providers of `name` in apt's order of preference, with the
    /// Provides entry that names it.
    fn providers(&self, name: &str) -> impl Iterator<Item = (usize, &'a Provide)> + '_ {
        let pkgs = self.pkgs;
        self.index
            .providers
            .get(name)
            .into_iter()
            .flatten()
            .map(move |&(i, k)| (i, &pkgs[i].provides[k]))
    }

    fn provided(&self, name: &str) -> bool {
        self.index.providers.contains_key(name)
    }

    /// Resolves `request` on top of `installed` (the parent image's dpkg
    /// status). `options.architecture` is ignored here: the universe was
    /// indexed for one already.
    pub fn resolve(
        &self,
        installed: &[Package],
        request: &[Request],
        options: &Options,
    ) -> Result<Resolution, ResolveError> {
        let packages = self
            .resolve_positions(installed, request, options)?
            .into_iter()
            .map(|i| self.pkgs[i].clone())
            .collect();
        Ok(Resolution { packages })
    }

    /// As [`Universe::resolve`], the packages given by their positions in
    /// the list (sorted by name): a caller can find what else it keeps
    /// about them by position without cloning them.
    pub fn resolve_positions(
        &self,
        installed: &[Package],
        request: &[Request],
        options: &Options,
    ) -> Result<Vec<usize>, ResolveError> {
        let mut st = State::new(self, installed);
        if options.variant == Some(Variant::Minbase) {
            let mut names: Vec<&str> = self
                .index
                .by_name
                .iter()
                .filter(|(_, v)| {
                    let p = self.pkg(v[0]);
                    p.essential || p.priority == "required"
                })
                .map(|(n, _)| &**n)
                .collect();
            names.sort_unstable();
            for name in names {
                st.request(name, None)?;
            }
        }
        for r in request {
            st.request(&r.name, r.version.as_deref())?;
        }
        st.run(options.recommends)?;
        let mut chosen: Vec<usize> = st.chosen.values().copied().collect();
        chosen.sort_by(|&a, &b| self.pkgs[a].name.cmp(&self.pkgs[b].name));
        Ok(chosen)
    }
}

/// Resolves against `universe` indexed for `options.architecture`; build a
/// [`Universe`] once instead when resolving several times.
pub fn resolve(
    universe: &[Package],
    installed: &[Package],
    request: &[Request],
    options: &Options,
) -> Result<Resolution, ResolveError> {
    Universe::new(universe, &options.architecture).resolve(installed, request, options)
}

fn priority_rank(p: &str) -> u8 {
    match p {
        "required" => 0,
        "important" => 1,
        "standard" => 2,
        "optional" => 3,
        "extra" => 4,
        _ => 5,
    }
}

fn rel_text(r: Relation) -> &'static str {
    match r {
        Relation::Less => "<<",
        Relation::LessEq => "<=",
        Relation::Eq => "=",
        Relation::GreaterEq => ">=",
        Relation::Greater => ">>",
    }
}

/// `name[:arch] (op version)`, as in a control file.
pub fn dep_text(d: &Dep) -> String {
    let mut s = d.name.clone();
    if let Some(a) = &d.arch {
        let _ = write!(s, ":{a}");
    }
    if let Some((r, v)) = &d.version {
        let _ = write!(s, " ({} {v})", rel_text(*r));
    }
    s
}

pub(super) fn group_text(g: &Alternatives) -> String {
    g.iter().map(dep_text).collect::<Vec<_>>().join(" | ")
}

fn version_ok(d: &Dep, v: &str) -> bool {
    d.version
        .as_ref()
        .is_none_or(|(r, want)| version::satisfies(v, *r, want))
}

/// A versioned dependency is met by a provide only if that provide is
/// versioned and its version satisfies the relation (Policy 7.5).
fn provide_ok(d: &Dep, prov: &Provide) -> bool {
    match (&d.version, &prov.version) {
        (None, _) => true,
        (Some((r, want)), Some(v)) => version::satisfies(v, *r, want),
        (Some(_), None) => false,
    }
}

/// dpkg's `archsatisfied` restricted to one architecture: `:any` needs
/// `Multi-Arch: allowed` (or `foreign`), an explicit other architecture is
/// never met, no qualifier or `:native` is met by native and `all`.
fn arch_ok(d: &Dep, p: &Package, arch: &str) -> bool {
    match d.arch.as_deref() {
        Some("any") => p.multi_arch == "allowed" || p.multi_arch == "foreign",
        None | Some("native") => true,
        Some(a) => a == arch,
    }
}

/// Conflicts with an explicit foreign architecture cannot hit anything in
/// a single-architecture set.
fn conflict_arch_applies(d: &Dep, arch: &str) -> bool {
    d.arch
        .as_deref()
        .is_none_or(|a| a == "any" || a == "native" || a == arch)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Member {
    /// An index into `installed`.
    Inst(usize),
    /// An index into the universe.
    Uni(usize),
}

/// Why one candidate for a dependency was rejected.
pub(super) enum Why {
    Text(String),
    Conflict(Box<Clash>),
}

impl Why {
    pub(super) fn text(&self) -> String {
        match self {
            Why::Text(s) => s.clone(),
            Why::Conflict(c) => c.to_string(),
        }
    }

    /// The error for a request or dependency whose only candidate failed.
    fn into_error(self, chain: Vec<String>) -> ResolveError {
        match self {
            Why::Conflict(clash) => ResolveError::Conflict { chain, clash },
            Why::Text(reason) => ResolveError::Unsatisfiable { chain, reason },
        }
    }
}

pub(super) struct State<'a> {
    u: &'a Universe<'a>,
    installed: Vec<&'a Package>,
    inst_by_name: Map<&'a str, usize>,
    inst_providers: Map<&'a str, Vec<(usize, &'a Provide)>>,
    /// Name → position in the universe; a chosen name replaces the
    /// installed one.
    pub(super) chosen: Map<&'a str, usize>,
    /// Who pulled a name in, for error chains; requests have none.
    parent: Map<&'a str, Option<&'a str>>,
    /// Conflicted name → who declares it (Conflicts or Breaks), over
    /// installed and chosen packages; dead entries are skipped when read.
    against: Map<&'a str, Vec<(Member, &'a Dep, &'static str)>>,
    deps_queue: VecDeque<usize>,
    rec_queue: VecDeque<usize>,
}

impl<'a> State<'a> {
    pub(super) fn new(u: &'a Universe<'a>, installed: &'a [Package]) -> State<'a> {
        let installed: Vec<&Package> = installed
            .iter()
            .filter(|p| p.architecture == u.arch() || p.architecture == "all")
            .collect();
        let mut st = State {
            u,
            installed: installed.clone(),
            inst_by_name: Map::default(),
            inst_providers: Map::default(),
            chosen: Map::default(),
            parent: Map::default(),
            against: Map::default(),
            deps_queue: VecDeque::new(),
            rec_queue: VecDeque::new(),
        };
        for (k, p) in installed.iter().enumerate() {
            st.inst_by_name.insert(&p.name, k);
            for prov in &p.provides {
                st.inst_providers
                    .entry(&prov.name)
                    .or_default()
                    .push((k, prov));
            }
            st.index_conflicts(Member::Inst(k));
        }
        st
    }

    fn pkg(&self, m: Member) -> &'a Package {
        match m {
            Member::Inst(k) => self.installed[k],
            Member::Uni(i) => self.u.pkg(i),
        }
    }

    /// Whether `m` is part of the final set as things stand.
    fn live(&self, m: Member) -> bool {
        match m {
            Member::Inst(k) => !self.chosen.contains_key(self.installed[k].name.as_str()),
            Member::Uni(i) => self.chosen.get(self.u.pkg(i).name.as_str()) == Some(&i),
        }
    }

    pub(super) fn index_conflicts(&mut self, m: Member) {
        let p = self.pkg(m);
        for (field, deps) in [("Conflicts", &p.conflicts), ("Breaks", &p.breaks)] {
            for d in deps {
                self.against.entry(&d.name).or_default().push((m, d, field));
            }
        }
    }

    /// The live members (other than those named `except`) that `d` names
    /// directly or through Provides, with the version relation applied as
    /// `check` says (`arch_ok` for dependencies, none for conflicts).
    fn members_matching(&self, d: &Dep, except: Option<&str>, for_conflict: bool) -> Vec<Member> {
        let mut out = Vec::new();
        let keep = |p: &Package| {
            except != Some(p.name.as_str()) && (for_conflict || arch_ok(d, p, self.u.arch()))
        };
        if let Some(&i) = self.chosen.get(d.name.as_str()) {
            let p = self.u.pkg(i);
            if keep(p) && version_ok(d, &p.version) {
                out.push(Member::Uni(i));
            }
        } else if let Some(&k) = self.inst_by_name.get(d.name.as_str()) {
            let p = self.installed[k];
            if keep(p) && version_ok(d, &p.version) {
                out.push(Member::Inst(k));
            }
        }
        for (i, prov) in self.u.providers(d.name.as_str()) {
            let m = Member::Uni(i);
            if self.live(m) && keep(self.u.pkg(i)) && provide_ok(d, prov) {
                out.push(m);
            }
        }
        for &(k, prov) in self
            .inst_providers
            .get(d.name.as_str())
            .into_iter()
            .flatten()
        {
            let m = Member::Inst(k);
            if self.live(m) && keep(self.installed[k]) && provide_ok(d, prov) {
                out.push(m);
            }
        }
        out
    }

    pub(super) fn satisfied(&self, g: &Alternatives) -> bool {
        g.iter()
            .any(|d| !self.members_matching(d, None, false).is_empty())
    }

    /// The first clash between universe package `i` and the live set.
    pub(super) fn clash(&self, i: usize) -> Option<(Member, Why)> {
        let c = self.u.pkg(i);
        let conflict = |m: Member, declared_by: &str, field, d: &Dep| {
            (
                m,
                Why::Conflict(Box::new(Clash {
                    package: format!("{} {}", c.name, c.version),
                    other: format!("{} {}", self.pkg(m).name, self.pkg(m).version),
                    declared_by: declared_by.to_string(),
                    field,
                    dep: dep_text(d),
                })),
            )
        };
        for (field, deps) in [("Conflicts", &c.conflicts), ("Breaks", &c.breaks)] {
            for d in deps
                .iter()
                .filter(|d| conflict_arch_applies(d, self.u.arch()))
            {
                // A package never conflicts with itself, nor with the
                // installed version it replaces.
                if let Some(&m) = self.members_matching(d, Some(&c.name), true).first() {
                    return Some(conflict(m, &c.name, field, d));
                }
            }
        }
        let own = Provide {
            name: c.name.clone(),
            version: Some(c.version.clone()),
        };
        for prov in std::iter::once(&own).chain(&c.provides) {
            for &(m, d, field) in self.against.get(prov.name.as_str()).into_iter().flatten() {
                let by = self.pkg(m);
                if by.name == c.name || !self.live(m) || !conflict_arch_applies(d, self.u.arch()) {
                    continue;
                }
                if provide_ok(d, prov) {
                    return Some(conflict(m, &by.name, field, d));
                }
            }
        }
        None
    }

    fn choose(&mut self, i: usize, parent: Option<&'a str>) {
        let p = self.u.pkg(i);
        self.chosen.insert(&p.name, i);
        self.parent.entry(&p.name).or_insert(parent);
        self.index_conflicts(Member::Uni(i));
        self.deps_queue.push_back(i);
    }

    fn unchoose(&mut self, i: usize) {
        // Index entries and queue items of `i` die with it: both are
        // checked for liveness when read.
        self.chosen.remove(self.u.pkg(i).name.as_str());
    }

    /// Chooses `i` unless it clashes; a clash with an installed package is
    /// lifted by upgrading that package if its newest version fits.
    fn try_choose(&mut self, i: usize, parent: Option<&'a str>) -> Result<(), Why> {
        let mut upgrades = Vec::new();
        let undo = |st: &mut Self, upgrades: &[usize]| {
            for &j in upgrades {
                st.unchoose(j);
            }
        };
        while let Some((m, why)) = self.clash(i) {
            let Member::Inst(k) = m else {
                undo(self, &upgrades);
                return Err(why);
            };
            let old = self.installed[k];
            let newest = self.u.versions(old.name.as_str()).map(|v| v[0]);
            let Some(j) = newest.filter(|&j| {
                version::compare(&self.u.pkg(j).version, &old.version) == Ordering::Greater
            }) else {
                undo(self, &upgrades);
                return Err(why);
            };
            if self.clash(j).is_some() {
                undo(self, &upgrades);
                return Err(why);
            }
            self.choose(j, parent);
            upgrades.push(j);
        }
        self.choose(i, parent);
        Ok(())
    }

    /// The names from a request down to `name`.
    fn chain(&self, name: &'a str) -> Vec<String> {
        let mut out = vec![name.to_string()];
        let mut seen = HashSet::from([name]);
        let mut cur = name;
        while let Some(Some(p)) = self.parent.get(cur) {
            if !seen.insert(*p) {
                break;
            }
            out.push(p.to_string());
            cur = p;
        }
        out.reverse();
        out
    }

    /// Candidates for `d` in preference order, with why the other
    /// versions or names cannot be used.
    fn candidates(&self, d: &Dep, whys: &mut Vec<Why>) -> Vec<usize> {
        let mut out = Vec::new();
        let arch = self.u.arch();
        if let Some(&i) = self.chosen.get(d.name.as_str()) {
            // Satisfied alternatives were handled before: this one is not.
            whys.push(Why::Text(format!(
                "{} is already chosen at {}, which does not satisfy {}",
                d.name,
                self.u.pkg(i).version,
                dep_text(d)
            )));
        } else if let Some(versions) = self.u.versions(d.name.as_str()) {
            out.extend(versions.iter().copied().filter(|&i| {
                let p = self.u.pkg(i);
                version_ok(d, &p.version) && arch_ok(d, p, arch)
            }));
            if out.is_empty() {
                let have: Vec<&str> = versions
                    .iter()
                    .map(|&i| self.u.pkg(i).version.as_str())
                    .collect();
                let what = match &d.version {
                    Some((r, v)) => format!(" satisfies ({} {v})", rel_text(*r)),
                    None => format!(" is Multi-Arch: allowed for {}", dep_text(d)),
                };
                whys.push(Why::Text(format!(
                    "no version of {}{what}: the archive has {}",
                    d.name,
                    have.join(", ")
                )));
            }
        }
        let real = !out.is_empty() || self.u.versions(d.name.as_str()).is_some();
        let mut providers = 0;
        for (i, prov) in self.u.providers(d.name.as_str()) {
            let p = self.u.pkg(i);
            if !provide_ok(d, prov) || !arch_ok(d, p, arch) || out.contains(&i) {
                continue;
            }
            providers += 1;
            match self.chosen.get(p.name.as_str()) {
                Some(&j) if j != i => {}
                _ => out.push(i),
            }
        }
        if !real && providers == 0 {
            let provided = self.u.provided(d.name.as_str());
            whys.push(Why::Text(if provided {
                format!("no provider of {} satisfies {}", d.name, dep_text(d))
            } else {
                format!("{} is not in the archive", d.name)
            }));
        }
        out
    }

    /// Satisfies one dependency of `from` (a chosen package).
    fn resolve_group(
        &mut self,
        g: &'a Alternatives,
        from: usize,
        required: bool,
    ) -> Result<(), ResolveError> {
        if self.satisfied(g) {
            return Ok(());
        }
        let from_name = self.u.pkgs[from].name.as_str();
        let mut whys = Vec::new();
        for d in g {
            for c in self.candidates(d, &mut whys) {
                match self.try_choose(c, Some(from_name)) {
                    Ok(()) => return Ok(()),
                    Err(why) => whys.push(why),
                }
            }
        }
        if !required {
            return Ok(());
        }
        let mut chain = self.chain(from_name);
        chain.push(group_text(g));
        Err(if whys.len() == 1 {
            whys.remove(0).into_error(chain)
        } else {
            ResolveError::Unsatisfiable {
                chain,
                reason: whys.iter().map(Why::text).collect::<Vec<_>>().join("; "),
            }
        })
    }

    /// Adds a requested package (or a variant's) to the set.
    fn request(&mut self, name: &str, pin: Option<&str>) -> Result<(), ResolveError> {
        let Some(versions) = self.u.versions(name) else {
            return self.request_virtual(name, pin);
        };
        let i = match pin {
            Some(v) => *versions
                .iter()
                .find(|&&i| version::compare(&self.u.pkg(i).version, v) == Ordering::Equal)
                .ok_or_else(|| ResolveError::NoSuchVersion {
                    name: name.to_string(),
                    version: v.to_string(),
                    available: versions
                        .iter()
                        .map(|&i| self.u.pkg(i).version.clone())
                        .collect(),
                })?,
            None => versions[0],
        };
        let p = self.u.pkg(i);
        if let Some(&j) = self.chosen.get(name) {
            if j == i {
                return Ok(());
            }
            return Err(ResolveError::Unsatisfiable {
                chain: vec![format!("{name}={}", p.version)],
                reason: format!("{name} {} is already chosen", self.u.pkg(j).version),
            });
        }
        if let Some(&k) = self.inst_by_name.get(name) {
            let have = &self.installed[k].version;
            if pin.is_none_or(|v| version::compare(have, v) == Ordering::Equal) {
                return Ok(());
            }
        }
        self.try_choose(i, None)
            .map_err(|why| why.into_error(vec![name.to_string()]))
    }

    /// A requested name no package has: a virtual one with a single
    /// provider stands for it, as in apt; several need the user to pick.
    fn request_virtual(&mut self, name: &str, pin: Option<&str>) -> Result<(), ResolveError> {
        let index = &self.u.index;
        let Some(list) = index.providers.get(name) else {
            let names = index
                .by_name
                .keys()
                .chain(index.providers.keys())
                .map(|n| &**n);
            return Err(ResolveError::Unknown {
                name: name.to_string(),
                suggestion: crate::suggest::closest(name, names).map(str::to_string),
            });
        };
        if let Some(v) = pin {
            return Err(ResolveError::NoSuchVersion {
                name: name.to_string(),
                version: v.to_string(),
                available: vec![],
            });
        }
        let d = Dep {
            name: name.to_string(),
            arch: None,
            version: None,
        };
        if !self.members_matching(&d, None, false).is_empty() {
            return Ok(());
        }
        let mut names: Vec<&str> = list
            .iter()
            .map(|&(i, _)| self.u.pkg(i).name.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        match names.as_slice() {
            [one] => self.request(one, None),
            _ => Err(ResolveError::Virtual {
                name: name.to_string(),
                providers: names.iter().map(|s| s.to_string()).collect(),
            }),
        }
    }

    /// Processes queues until every chosen package's dependencies hold and
    /// no installed package lost a dependency to an upgrade.
    fn run(&mut self, recommends: bool) -> Result<(), ResolveError> {
        // Installed packages' dependencies that hold now: an upgrade must
        // keep them holding (a broken parent image is not our business).
        let mut held = Vec::new();
        for (k, p) in self.installed.iter().enumerate() {
            for g in p.pre_depends.iter().chain(&p.depends) {
                if self.satisfied(g) {
                    held.push((k, g));
                }
            }
        }
        loop {
            if let Some(i) = self.deps_queue.pop_front() {
                if !self.live(Member::Uni(i)) {
                    continue;
                }
                let p = self.u.pkg(i);
                for g in p.pre_depends.iter().chain(&p.depends) {
                    self.resolve_group(g, i, true)?;
                }
                if recommends {
                    self.rec_queue.push_back(i);
                }
                continue;
            }
            if let Some(i) = self.rec_queue.pop_front() {
                if self.live(Member::Uni(i)) {
                    for g in &self.u.pkg(i).recommends {
                        self.resolve_group(g, i, false)?;
                    }
                }
                continue;
            }
            let broken = held
                .iter()
                .find(|&&(k, g)| self.live(Member::Inst(k)) && !self.satisfied(g));
            let Some(&(k, g)) = broken else {
                return Ok(());
            };
            let old = self.installed[k];
            let upgrade = self
                .u
                .versions(old.name.as_str())
                .map(|v| v[0])
                .filter(|&j| {
                    version::compare(&self.u.pkg(j).version, &old.version) == Ordering::Greater
                });
            let culprit = g
                .iter()
                .filter_map(|d| self.chosen.get(d.name.as_str()))
                .map(|&i| format!("{} {}", self.u.pkg(i).name, self.u.pkg(i).version))
                .next()
                .unwrap_or_else(|| "an upgrade".to_string());
            let reason = format!("{} {} depends on {}", old.name, old.version, group_text(g));
            let Some(j) = upgrade else {
                return Err(ResolveError::BreaksInstalled {
                    upgraded: culprit,
                    installed: old.name.clone(),
                    reason,
                });
            };
            self.try_choose(j, None)
                .map_err(|why| ResolveError::BreaksInstalled {
                    upgraded: culprit,
                    installed: old.name.clone(),
                    reason: format!("{reason}; upgrading it fails: {}", why.text()),
                })?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::debian::testutil::{check_consistent, names, pkg, req};

    fn run(
        universe: &[Package],
        installed: &[Package],
        list: &[&str],
    ) -> Result<Vec<String>, ResolveError> {
        resolve(universe, installed, &req(list), &Options::default()).map(|r| names(&r))
    }

    fn small_universe() -> Vec<Package> {
        vec![
            pkg(
                "libc6",
                "2.36-9",
                &[("Priority", "required"), ("Multi-Arch", "same")],
            ),
            pkg(
                "libc6",
                "2.36-9+deb12u10",
                &[("Priority", "required"), ("Multi-Arch", "same")],
            ),
            pkg(
                "base-files",
                "12.4",
                &[("Essential", "yes"), ("Priority", "required")],
            ),
            pkg(
                "dpkg",
                "1.21.22",
                &[
                    ("Essential", "yes"),
                    ("Pre-Depends", "libc6 (>= 2.34), tar"),
                ],
            ),
            pkg(
                "tar",
                "1.34",
                &[("Essential", "yes"), ("Pre-Depends", "libc6")],
            ),
            pkg(
                "apt",
                "2.6.1",
                &[("Priority", "important"), ("Depends", "libc6")],
            ),
            // Alternatives and virtual packages.
            pkg(
                "mailer",
                "1",
                &[("Depends", "default-mta | mail-transport-agent")],
            ),
            pkg(
                "exim4",
                "4.96",
                &[
                    ("Priority", "standard"),
                    ("Provides", "mail-transport-agent"),
                    ("Conflicts", "mail-transport-agent"),
                ],
            ),
            pkg(
                "postfix",
                "3.7",
                &[
                    ("Provides", "mail-transport-agent"),
                    ("Conflicts", "mail-transport-agent"),
                ],
            ),
            pkg("sendmail", "8", &[("Provides", "mail-transport-agent")]),
            // Versioned provides.
            pkg("wants-api", "1", &[("Depends", "plugin-api (>= 2)")]),
            pkg("plugin-old", "1", &[("Provides", "plugin-api (= 1)")]),
            pkg("plugin-new", "1", &[("Provides", "plugin-api (= 3)")]),
            pkg("plugin-any", "1", &[("Provides", "plugin-api")]),
            // A version relation no version meets, two levels down.
            pkg(
                "php8.4-intl",
                "8.4.1-1",
                &[("Depends", "libicu76 (>= 76.1-1), php8.4-common")],
            ),
            pkg("php8.4-common", "8.4.1-1", &[]),
            pkg("libicu76", "74.2-1", &[]),
            // Conflicts steer an alternative.
            pkg("editor", "1", &[("Depends", "vim-tiny | nano")]),
            pkg("vim-tiny", "9", &[("Conflicts", "ed (<< 2)")]),
            pkg("nano", "7", &[]),
            // Breaks against an installed package, with and without an
            // upgrade that fixes it.
            pkg("newlib", "2", &[("Breaks", "oldapp (<< 2), stuck (<< 5)")]),
            pkg("oldapp", "1", &[]),
            pkg("oldapp", "2", &[]),
            pkg("needs-newlib", "1", &[("Depends", "newlib")]),
            pkg("stuck", "1", &[]),
            // An upgrade a dependency needs, which an installed package's
            // exact-version dependency follows.
            pkg("libfoo", "1", &[]),
            pkg("libfoo", "2", &[]),
            pkg("libfoo-dev", "1", &[("Depends", "libfoo (= 1)")]),
            pkg("libfoo-dev", "2", &[("Depends", "libfoo (= 2)")]),
            pkg("foo-app", "1", &[("Depends", "libfoo (>= 2)")]),
            // Architecture qualifiers.
            pkg("python3", "3.11", &[("Multi-Arch", "allowed")]),
            pkg(
                "py-tool",
                "1",
                &[("Architecture", "all"), ("Depends", "python3:any")],
            ),
            pkg("perl", "5.36", &[]),
            pkg(
                "pl-tool",
                "1",
                &[("Depends", "perl:any | perl-any-fallback")],
            ),
            pkg("perl-any-fallback", "1", &[("Multi-Arch", "foreign")]),
            pkg("foreign-only", "1", &[("Architecture", "i386")]),
            // Recommends.
            pkg("with-rec", "1", &[("Recommends", "rec-a, rec-missing")]),
            pkg("rec-a", "1", &[]),
            pkg("apache2", "2.4.62-1", &[]),
        ]
    }

    #[test]
    fn alternatives_and_providers() {
        let u = small_universe();
        // No default-mta: the virtual's providers by priority, exim4 first.
        assert_eq!(
            run(&u, &[], &["mailer"]).unwrap(),
            ["exim4=4.96", "mailer=1"]
        );
        // A requested provider is preferred over the priority order.
        assert_eq!(
            run(&u, &[], &["postfix", "mailer"]).unwrap(),
            ["mailer=1", "postfix=3.7"]
        );
        // An installed provider satisfies it.
        let installed = [pkg(
            "sendmail",
            "8",
            &[("Provides", "mail-transport-agent")],
        )];
        assert_eq!(run(&u, &installed, &["mailer"]).unwrap(), ["mailer=1"]);
        // Versioned provides: only a versioned provide that satisfies it.
        assert_eq!(
            run(&u, &[], &["wants-api"]).unwrap(),
            ["plugin-new=1", "wants-api=1"]
        );
        // Two providers conflicting through the virtual name.
        let e = run(&u, &[], &["exim4", "postfix"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "postfix → postfix 3.7 conflicts with exim4 4.96 (postfix Conflicts: mail-transport-agent)"
        );
    }

    #[test]
    fn conflicts_pick_the_next_alternative() {
        let u = small_universe();
        let installed = [pkg("ed", "1.19", &[])];
        assert_eq!(
            run(&u, &[], &["editor"]).unwrap(),
            ["editor=1", "vim-tiny=9"]
        );
        assert_eq!(
            run(&u, &installed, &["editor"]).unwrap(),
            ["editor=1", "nano=7"]
        );
        // Requested directly, the conflict is an error naming both.
        let e = run(&u, &installed, &["vim-tiny"]).unwrap_err();
        assert!(
            matches!(
                &e,
                ResolveError::Conflict { clash, .. }
                    if clash.package == "vim-tiny 9" && clash.other == "ed 1.19" && clash.field == "Conflicts"
            ),
            "{e}"
        );
    }

    #[test]
    fn breaks_upgrade_or_fail() {
        let u = small_universe();
        // oldapp 2 is not broken: it is upgraded along.
        let installed = [pkg("oldapp", "1", &[])];
        assert_eq!(
            run(&u, &installed, &["needs-newlib"]).unwrap(),
            ["needs-newlib=1", "newlib=2", "oldapp=2"]
        );
        // stuck has no fixed version.
        let installed = [pkg("stuck", "1", &[])];
        let e = run(&u, &installed, &["needs-newlib"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "needs-newlib → newlib → newlib 2 conflicts with stuck 1 (newlib Breaks: stuck (<< 5))"
        );
        // A Breaks declared by an installed package.
        let installed = [pkg("guard", "1", &[("Breaks", "nano (>= 7)")])];
        let e = run(&u, &installed, &["nano"]).unwrap_err();
        assert!(e.to_string().contains("(guard Breaks: nano (>= 7))"), "{e}");
    }

    #[test]
    fn upgrades_installed_packages() {
        let u = small_universe();
        let installed = [
            pkg("libfoo", "1", &[]),
            pkg("libfoo-dev", "1", &[("Depends", "libfoo (= 1)")]),
        ];
        // libfoo 2 is needed; libfoo-dev 1 would break and follows.
        let r = resolve(&u, &installed, &req(&["foo-app"]), &Options::default()).unwrap();
        assert_eq!(names(&r), ["foo-app=1", "libfoo=2", "libfoo-dev=2"]);
        check_consistent(&u, &installed, &r);
        // Installed at any version satisfies an unversioned request.
        assert_eq!(
            run(&u, &installed, &["libfoo"]).unwrap(),
            Vec::<String>::new()
        );
        // A pin moves it, even down.
        assert_eq!(run(&u, &[], &["libfoo=1"]).unwrap(), ["libfoo=1"]);
        let e = run(&u, &[], &["libfoo=3"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "libfoo has no version 3: the archive has 2, 1"
        );
    }

    #[test]
    fn unknown_and_unsatisfiable() {
        let u = small_universe();
        let e = run(&u, &[], &["apache"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown package apache (did you mean apache2?)"
        );
        let e = run(&u, &[], &["php8.4-intl"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "php8.4-intl → libicu76 (>= 76.1-1) → no version of libicu76 satisfies (>= 76.1-1): the archive has 74.2-1"
        );
        assert!(matches!(
            run(&u, &[], &["mail-transport-agent"]),
            Err(ResolveError::Virtual { providers, .. }) if providers == ["exim4", "postfix", "sendmail"]
        ));
        assert!(matches!(
            "Foo".parse::<Request>(),
            Err(ResolveError::BadRequest { .. })
        ));
        assert!(matches!(
            "foo=1 0".parse::<Request>(),
            Err(ResolveError::BadRequest { .. })
        ));
        // Foreign architectures are not part of the universe.
        assert!(matches!(
            run(&u, &[], &["foreign-only"]),
            Err(ResolveError::Unknown { .. })
        ));
    }

    #[test]
    fn architecture_qualifiers() {
        let u = small_universe();
        assert_eq!(
            run(&u, &[], &["py-tool"]).unwrap(),
            ["py-tool=1", "python3=3.11"]
        );
        // perl is not Multi-Arch: allowed, so perl:any is not met by it.
        assert_eq!(
            run(&u, &[], &["pl-tool"]).unwrap(),
            ["perl-any-fallback=1", "pl-tool=1"]
        );
    }

    #[test]
    fn minbase_and_pre_depends() {
        let u = small_universe();
        let opts = Options {
            variant: Some(Variant::Minbase),
            ..Options::default()
        };
        let r = resolve(&u, &[], &[], &opts).unwrap();
        // Essential and required only (apt is important): newest libc6.
        assert_eq!(
            names(&r),
            [
                "base-files=12.4",
                "dpkg=1.21.22",
                "libc6=2.36-9+deb12u10",
                "tar=1.34"
            ]
        );
        check_consistent(&u, &[], &r);
        let order: Vec<Vec<&str>> = crate::debian::order::install_order(&r.packages)
            .iter()
            .map(|g| g.iter().map(|p| p.name.as_str()).collect())
            .collect();
        assert_eq!(
            order,
            [vec!["base-files", "libc6"], vec!["tar"], vec!["dpkg"]]
        );
        // Everything installed already: nothing to do.
        assert!(
            resolve(&u, &r.packages, &[], &opts)
                .unwrap()
                .packages
                .is_empty()
        );
    }

    #[test]
    fn recommends_only_when_asked() {
        let u = small_universe();
        assert_eq!(run(&u, &[], &["with-rec"]).unwrap(), ["with-rec=1"]);
        let opts = Options {
            recommends: true,
            ..Options::default()
        };
        let r = resolve(&u, &[], &req(&["with-rec"]), &opts).unwrap();
        // The missing recommendation is skipped, as apt does.
        assert_eq!(names(&r), ["rec-a=1", "with-rec=1"]);
    }

    #[test]
    fn deterministic_whatever_the_input_order() {
        let mut u = small_universe();
        let want = run(&u, &[], &["mailer", "editor", "wants-api", "foo-app"]).unwrap();
        u.reverse();
        assert_eq!(
            run(&u, &[], &["mailer", "editor", "wants-api", "foo-app"]).unwrap(),
            want
        );
        u.rotate_left(7);
        assert_eq!(
            run(&u, &[], &["mailer", "editor", "wants-api", "foo-app"]).unwrap(),
            want
        );
    }
}
