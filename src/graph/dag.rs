//! Operations on a graph where each node has at most one parent, given as a
//! lookup `parent(name) -> Option<name>` (None for a root: `scratch`, a
//! registry image, or a name outside the graph).
//!
//! Everything here is linear in the nodes it reaches: check runs these over
//! graphs of thousands of images.
use std::collections::{HashMap, HashSet};

/// The parents of `name` up to its root, nearest first (`name` itself not
/// included). The chain must be acyclic, as in every loaded `Spec`; while
/// resolving, call `cycles` first.
pub fn ancestors<'a, F>(name: &'a str, parent: F) -> Ancestors<'a, F>
where
    F: Fn(&'a str) -> Option<&'a str>,
{
    Ancestors {
        next: parent(name),
        parent,
    }
}

/// See `ancestors`.
pub struct Ancestors<'a, F> {
    next: Option<&'a str>,
    parent: F,
}

impl<'a, F> Iterator for Ancestors<'a, F>
where
    F: Fn(&'a str) -> Option<&'a str>,
{
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let cur = self.next?;
        self.next = (self.parent)(cur);
        Some(cur)
    }
}

/// How many parents `name` has in the graph: 0 for a root. Acyclic chain
/// only, as `ancestors`.
pub fn depth<'a, F>(name: &'a str, parent: F) -> usize
where
    F: Fn(&'a str) -> Option<&'a str>,
{
    ancestors(name, parent).count()
}

/// `names` parents first: by depth, ties in the order given, so the result
/// is deterministic. Names on a cycle or below one have no place in such an
/// order and are left out.
pub fn order<'a, F>(names: impl IntoIterator<Item = &'a str>, parent: F) -> Vec<&'a str>
where
    F: Fn(&'a str) -> Option<&'a str>,
{
    let names: Vec<&'a str> = names.into_iter().collect();
    let depths = depths(names.iter().copied(), &parent);
    let mut out: Vec<(usize, &'a str)> = names
        .into_iter()
        .filter_map(|n| depths[n].map(|d| (d, n)))
        .collect();
    out.sort_by_key(|(d, _)| *d);
    out.into_iter().map(|(_, n)| n).collect()
}

/// `names` and all their ancestors, each once, parents first (as `order`;
/// ties in the order first reached, each chain from its root down).
pub fn closure<'a, F>(names: impl IntoIterator<Item = &'a str>, parent: F) -> Vec<&'a str>
where
    F: Fn(&'a str) -> Option<&'a str>,
{
    let mut seen = HashSet::new();
    let mut all = Vec::new();
    for name in names {
        let start = all.len();
        let mut cur = Some(name);
        while let Some(n) = cur {
            if !seen.insert(n) {
                break;
            }
            all.push(n);
            cur = parent(n);
        }
        all[start..].reverse();
    }
    order(all, parent)
}

/// Every cycle reachable from `names`, each once, as the names on it in
/// parent order, starting where the walk up from the first of `names` that
/// reaches it entered it.
pub fn cycles<'a, F>(names: impl IntoIterator<Item = &'a str>, parent: F) -> Vec<Vec<&'a str>>
where
    F: Fn(&'a str) -> Option<&'a str>,
{
    // Which walk first reached a node: meeting the current walk again is a
    // cycle; meeting an earlier one is what that walk already found.
    let mut walk_of: HashMap<&'a str, usize> = HashMap::new();
    let mut out = Vec::new();
    for (walk, start) in names.into_iter().enumerate() {
        let mut path = Vec::new();
        let mut cur = Some(start);
        while let Some(n) = cur {
            if let Some(&w) = walk_of.get(n) {
                if w == walk {
                    let i = path.iter().position(|p| *p == n).unwrap_or(0);
                    out.push(path[i..].to_vec());
                }
                break;
            }
            walk_of.insert(n, walk);
            path.push(n);
            cur = parent(n);
        }
    }
    out
}

/// The depth of every node reached from `names`; None on or below a cycle.
fn depths<'a, F>(
    names: impl IntoIterator<Item = &'a str>,
    parent: F,
) -> HashMap<&'a str, Option<usize>>
where
    F: Fn(&'a str) -> Option<&'a str>,
{
    let mut known: HashMap<&'a str, Option<usize>> = HashMap::new();
    let mut on_path: HashSet<&'a str> = HashSet::new();
    for start in names {
        // Up to a node of known depth (or a root, or back onto this path),
        // then down again filling in.
        let mut path = Vec::new();
        let mut cur = Some(start);
        let mut below = loop {
            match cur {
                None => break Some(0),
                Some(n) => {
                    if let Some(d) = known.get(n) {
                        break d.map(|d| d + 1);
                    }
                    if !on_path.insert(n) {
                        break None;
                    }
                    path.push(n);
                    cur = parent(n);
                }
            }
        };
        // `below` is the depth the last node on the path would have if the
        // walk stopped at a root (0) or at a known node (its depth + 1).
        for n in path.into_iter().rev() {
            on_path.remove(n);
            known.insert(n, below);
            below = below.map(|d| d + 1);
        }
    }
    known
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// child → parent
    fn g(edges: &[(&'static str, &'static str)]) -> BTreeMap<&'static str, &'static str> {
        edges.iter().copied().collect()
    }

    fn up<'a>(m: &'a BTreeMap<&'static str, &'static str>) -> impl Fn(&'a str) -> Option<&'a str> {
        move |n| m.get(n).copied()
    }

    // base ← php ← m51, m50; other (root); x → y → z → x, w → x
    fn sample() -> BTreeMap<&'static str, &'static str> {
        g(&[
            ("php", "base"),
            ("m51", "php"),
            ("m50", "php"),
            ("x", "y"),
            ("y", "z"),
            ("z", "x"),
            ("w", "x"),
        ])
    }

    #[test]
    fn ancestors_go_up_nearest_first() {
        let m = sample();
        assert_eq!(
            ancestors("m51", up(&m)).collect::<Vec<_>>(),
            ["php", "base"]
        );
        assert_eq!(ancestors("base", up(&m)).next(), None);
        // The nearest ancestor that is something: `find`.
        assert_eq!(
            ancestors("m51", up(&m)).find(|n| n.starts_with('b')),
            Some("base")
        );
    }

    #[test]
    fn depth_counts_parents() {
        let m = sample();
        assert_eq!(depth("base", up(&m)), 0);
        assert_eq!(depth("php", up(&m)), 1);
        assert_eq!(depth("m50", up(&m)), 2);
        assert_eq!(depth("not-in-graph", up(&m)), 0);
    }

    #[test]
    fn order_is_parents_first_stable_and_leaves_cycles_out() {
        let m = sample();
        let names = ["m51", "other", "php", "x", "base", "w", "m50"];
        assert_eq!(order(names, up(&m)), ["other", "base", "php", "m51", "m50"]);
    }

    #[test]
    fn closure_adds_ancestors_once_parents_first() {
        let m = sample();
        assert_eq!(
            closure(["m51", "m50"], up(&m)),
            ["base", "php", "m51", "m50"]
        );
        assert_eq!(closure(["php", "other"], up(&m)), ["base", "other", "php"]);
        assert!(closure(Vec::<&str>::new(), up(&m)).is_empty());
    }

    #[test]
    fn cycles_are_found_once_from_the_first_name_that_reaches_them() {
        let m = sample();
        let all: Vec<&str> = m.keys().copied().collect();
        // Sorted: m50, m51, php, w, x, …: w reaches the cycle first, at x.
        assert_eq!(cycles(all, up(&m)), [vec!["x", "y", "z"]]);
        assert_eq!(cycles(["y", "w"], up(&m)), [vec!["y", "z", "x"]]);
        assert!(cycles(["m51", "php"], up(&m)).is_empty());
        let selfish = g(&[("a", "a")]);
        assert_eq!(cycles(["a"], up(&selfish)), [vec!["a"]]);
    }

    #[test]
    fn long_chains_are_linear() {
        // 50,000 images each built from the one before: quadratic walks
        // would take minutes here.
        let names: Vec<String> = (0..50_000).map(|i| format!("i{i}")).collect();
        let parent: HashMap<&str, &str> = names
            .windows(2)
            .map(|w| (w[1].as_str(), w[0].as_str()))
            .collect();
        let up = |n: &str| parent.get(n).copied();
        let rev: Vec<&str> = names.iter().rev().map(String::as_str).collect();
        let ordered = order(rev.iter().copied(), up);
        assert_eq!(ordered.first(), Some(&"i0"));
        assert_eq!(ordered.len(), names.len());
        assert!(cycles(rev.iter().copied(), up).is_empty());
        assert_eq!(closure(["i49999"], up).len(), names.len());
    }
}
