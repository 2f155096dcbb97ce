//! Test helpers: packages from a few control fields, a minimal reader of
//! the host's apt lists (the real parser lives in `control.rs`) and a check
//! of a resolution. Public (hidden) only so that tests/apt.rs, which runs
//! the host's apt, can share them with the unit tests.
use std::path::Path;
use std::process::Command;

use super::package::{Alternatives, Dep, Package, Provide, Relation};
use super::resolve::{Member, Request, Resolution, State, Universe, group_text};

fn parse_dep(s: &str) -> Dep {
    let s = s.trim();
    let (head, version) = match s.split_once('(') {
        Some((h, v)) => {
            let v = v.trim_end_matches(')').trim();
            let op_len = v.find(|c: char| !"<>=".contains(c)).unwrap_or(v.len());
            let rel = match &v[..op_len] {
                "<<" | "<" => Relation::Less,
                "<=" => Relation::LessEq,
                "=" => Relation::Eq,
                ">=" => Relation::GreaterEq,
                ">>" | ">" => Relation::Greater,
                other => panic!("bad relation {other:?} in {s:?}"),
            };
            (h.trim(), Some((rel, v[op_len..].trim().to_string())))
        }
        None => (s, None),
    };
    // Binary indexes carry no [arch] or <profile> restrictions; drop any.
    let head = head.split(['[', '<']).next().unwrap_or("").trim();
    let (name, arch) = match head.split_once(':') {
        Some((n, a)) => (n, Some(a.to_string())),
        None => (head, None),
    };
    Dep {
        name: name.to_string(),
        arch,
        version,
    }
}

/// `a | b (>= 1), c` → groups of alternatives.
pub fn relations(s: &str) -> Vec<Alternatives> {
    s.split(',')
        .filter(|g| !g.trim().is_empty())
        .map(|g| g.split('|').map(parse_dep).collect())
        .collect()
}

/// A package from control fields; unnamed fields get the usual defaults
/// (amd64, Multi-Arch: no, Priority: optional).
pub fn pkg(name: &str, version: &str, fields: &[(&str, &str)]) -> Package {
    let mut p = Package {
        name: name.to_string(),
        version: version.to_string(),
        architecture: "amd64".to_string(),
        multi_arch: "no".to_string(),
        essential: false,
        priority: "optional".to_string(),
        pre_depends: vec![],
        depends: vec![],
        recommends: vec![],
        conflicts: vec![],
        breaks: vec![],
        provides: vec![],
        source: name.to_string(),
        filename: format!("pool/main/{name}_{version}_amd64.deb"),
        size: 1,
        sha256: String::new(),
    };
    for &(k, v) in fields {
        set_field(&mut p, k, v);
    }
    p
}

fn set_field(p: &mut Package, k: &str, v: &str) {
    let flat = |v: &str| relations(v).into_iter().flatten().collect::<Vec<_>>();
    match k {
        "Architecture" => p.architecture = v.to_string(),
        "Multi-Arch" => p.multi_arch = v.to_string(),
        "Essential" => p.essential = v == "yes",
        "Priority" => p.priority = v.to_string(),
        "Pre-Depends" => p.pre_depends = relations(v),
        "Depends" => p.depends = relations(v),
        "Recommends" => p.recommends = relations(v),
        "Conflicts" => p.conflicts = flat(v),
        "Breaks" => p.breaks = flat(v),
        "Provides" => {
            p.provides = flat(v)
                .into_iter()
                .map(|d| Provide {
                    name: d.name,
                    version: d.version.map(|(_, v)| v),
                })
                .collect()
        }
        "Source" => p.source = v.split(' ').next().unwrap_or(v).to_string(),
        "Filename" => p.filename = v.to_string(),
        "Size" => p.size = v.parse().unwrap_or(0),
        "SHA256" => p.sha256 = v.to_string(),
        _ => {}
    }
}

/// Stanzas of a Packages or status file; with `installed_only`, those
/// whose Status is `install ok installed`.
pub fn parse_packages(text: &str, installed_only: bool) -> Vec<Package> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut fields: Vec<(&str, &str)> = Vec::new();
        for line in stanza.lines() {
            if line.starts_with([' ', '\t']) {
                continue;
            }
            if let Some((k, v)) = line.split_once(':') {
                fields.push((k, v.trim()));
            }
        }
        let get = |k: &str| fields.iter().find(|f| f.0 == k).map(|f| f.1);
        let (Some(name), Some(version)) = (get("Package"), get("Version")) else {
            continue;
        };
        if installed_only && get("Status") != Some("install ok installed") {
            continue;
        }
        out.push(pkg(name, version, &fields));
    }
    out
}

/// The host's `*_Packages` lists (plain, or lz4 as apt stores them, read
/// through apt-helper); `None` when there are none.
pub fn host_lists() -> Option<Vec<Package>> {
    let out: Vec<Package> = host_list_texts()?
        .iter()
        .flat_map(|t| parse_packages(t, false))
        .collect();
    (!out.is_empty()).then_some(out)
}

/// The raw text of the host's lists.
pub fn host_list_texts() -> Option<Vec<String>> {
    let dir = Path::new("/var/lib/apt/lists");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n.ends_with("_Packages") || n.ends_with("_Packages.lz4")
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in &files {
        let text = if f.extension().is_some_and(|e| e == "lz4") {
            let o = Command::new("/usr/lib/apt/apt-helper")
                .arg("cat-file")
                .arg(f)
                .output()
                .ok()?;
            String::from_utf8(o.stdout).ok()?
        } else {
            std::fs::read_to_string(f).ok()?
        };
        out.push(text);
    }
    Some(out)
}

/// The host's installed packages.
pub fn host_status() -> Vec<Package> {
    std::fs::read_to_string("/var/lib/dpkg/status")
        .map(|t| parse_packages(&t, true))
        .unwrap_or_default()
}

/// Requests from `name` or `name=version` strings.
pub fn req(list: &[&str]) -> Vec<Request> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

/// `name=version` of each resolved package.
pub fn names(r: &Resolution) -> Vec<String> {
    r.packages
        .iter()
        .map(|p| format!("{}={}", p.name, p.version))
        .collect()
}

/// Every Pre-Depends/Depends of the final set (installed + resolution)
/// holds and no two of its packages conflict.
pub fn check_consistent(universe: &[Package], installed: &[Package], r: &Resolution) {
    let u = Universe::new(universe, "amd64");
    let mut st = State::new(&u, installed);
    for p in &r.packages {
        let i = u
            .versions(&p.name)
            .unwrap()
            .iter()
            .copied()
            .find(|&i| universe[i].version == p.version)
            .unwrap();
        st.chosen.insert(&universe[i].name, i);
        st.index_conflicts(Member::Uni(i));
    }
    for &i in st.chosen.values() {
        let p = &universe[i];
        for g in p.pre_depends.iter().chain(&p.depends) {
            assert!(
                st.satisfied(g),
                "{} {}: {}",
                p.name,
                p.version,
                group_text(g)
            );
        }
        // clash() ignores the package's own name, so it can check a
        // member against the rest.
        if let Some((_, why)) = st.clash(i) {
            panic!("{}", why.text());
        }
    }
}
