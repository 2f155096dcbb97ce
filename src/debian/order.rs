//! Installation order for a resolved set.
//!
//! dpkg needs a Pre-Depends target configured before the dependant is
//! unpacked, while Depends only matter at configure time and may form
//! cycles (libc6 ↔ libgcc-s1), which dpkg settles when the whole cycle is
//! configured in one run. So the set is cut into groups: the packages of a
//! Depends cycle share a group, a package's Depends are in its group or an
//! earlier one, and its Pre-Depends in a strictly earlier one. Installing
//! group by group (`dpkg --unpack` all of it, then `dpkg --configure
//! --pending`, or one `dpkg --install`) then never meets an unconfigured
//! pre-dependency.
//!
//! For an Essential bootstrap (an empty root, as mmdebstrap and
//! debootstrap do) the data of every package is extracted first, so that
//! maintainer scripts find a shell and dpkg; the groups then give the order
//! in which dpkg registers and configures them.
//!
//! A Pre-Depends inside a Depends cycle cannot go to an earlier group; it
//! stays in the cycle's group with the pre-dependency placed first (Debian
//! has none in its Essential set; dpkg would need `--force-depends`).
use std::collections::HashMap;

use super::package::{Alternatives, Package};
use super::version;

/// Groups of `pkgs` to install in order; each group is sorted with
/// Pre-Depends targets first, then by name. Dependencies on packages
/// outside `pkgs` (already installed) are ignored.
pub fn install_order(pkgs: &[Package]) -> Vec<Vec<&Package>> {
    let n = pkgs.len();
    let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, p) in pkgs.iter().enumerate() {
        by_name.entry(&p.name).or_default().push(i);
        for prov in &p.provides {
            by_name.entry(&prov.name).or_default().push(i);
        }
    }
    // Edges i → j: i needs j; `pre` marks Pre-Depends.
    let target = |g: &Alternatives| -> Vec<usize> {
        // The first alternative present in the set is the one the resolver
        // used (it prefers earlier alternatives).
        g.iter()
            .map(|d| {
                by_name
                    .get(d.name.as_str())
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|&j| {
                        let p = &pkgs[j];
                        let own = p.name == d.name;
                        d.version.as_ref().is_none_or(|(r, want)| {
                            let have = if own {
                                Some(p.version.as_str())
                            } else {
                                p.provides
                                    .iter()
                                    .find(|pr| pr.name == d.name)
                                    .and_then(|pr| pr.version.as_deref())
                            };
                            have.is_some_and(|v| version::satisfies(v, *r, want))
                        })
                    })
                    .collect::<Vec<_>>()
            })
            .find(|v| !v.is_empty())
            .unwrap_or_default()
    };
    let mut edges: Vec<Vec<(usize, bool)>> = vec![Vec::new(); n];
    for (i, p) in pkgs.iter().enumerate() {
        for (pre, groups) in [(true, &p.pre_depends), (false, &p.depends)] {
            for g in groups {
                for j in target(g) {
                    if j != i {
                        edges[i].push((j, pre));
                    }
                }
            }
        }
    }
    let (comp, count) = tarjan(&edges);
    // Tarjan numbers components so that a component's dependencies have
    // lower numbers: a single pass in that order computes levels.
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); count];
    for (i, &c) in comp.iter().enumerate() {
        members[c].push(i);
    }
    let mut level = vec![0usize; count];
    for c in 0..count {
        for &i in &members[c] {
            for &(j, pre) in &edges[i] {
                let d = comp[j];
                if d != c {
                    level[c] = level[c].max(level[d] + usize::from(pre));
                }
            }
        }
    }
    let groups = level.iter().max().map_or(0, |m| m + 1);
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); groups];
    for i in 0..n {
        out[level[comp[i]]].push(i);
    }
    out.into_iter()
        .map(|mut g| {
            g.sort_by(|&a, &b| pkgs[a].name.cmp(&pkgs[b].name));
            pre_depends_first(&g, &edges)
                .into_iter()
                .map(|i| &pkgs[i])
                .collect()
        })
        .collect()
}

/// Orders a group so that Pre-Depends inside it come first, keeping the
/// name order otherwise; a Pre-Depends cycle is broken by placing the
/// first name after its pre-dependencies.
fn pre_depends_first(group: &[usize], edges: &[Vec<(usize, bool)>]) -> Vec<usize> {
    let mut placed: HashMap<usize, bool> = group.iter().map(|&i| (i, false)).collect();
    let mut out = Vec::with_capacity(group.len());
    fn visit(
        i: usize,
        edges: &[Vec<(usize, bool)>],
        placed: &mut HashMap<usize, bool>,
        out: &mut Vec<usize>,
    ) {
        // Marking before recursing breaks cycles.
        match placed.get_mut(&i) {
            Some(done) if !*done => *done = true,
            _ => return,
        }
        for &(j, pre) in &edges[i] {
            if pre {
                visit(j, edges, placed, out);
            }
        }
        out.push(i);
    }
    for &i in group {
        visit(i, edges, &mut placed, &mut out);
    }
    out
}

/// Strongly connected components, iteratively (Debian's graphs are deep
/// enough to worry about recursion). Returns each node's component and the
/// number of components; components are numbered in reverse topological
/// order: every edge goes to the same or a lower number.
fn tarjan(edges: &[Vec<(usize, bool)>]) -> (Vec<usize>, usize) {
    const NONE: usize = usize::MAX;
    let n = edges.len();
    let mut index = vec![NONE; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut comp = vec![NONE; n];
    let mut count = 0;
    let mut next = 0;
    for root in 0..n {
        if index[root] != NONE {
            continue;
        }
        // (node, next edge to look at)
        let mut work = vec![(root, 0)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut e)) = work.last_mut() {
            if let Some(&(w, _)) = edges[v].get(*e) {
                *e += 1;
                if index[w] == NONE {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(u, _)) = work.last() {
                low[u] = low[u].min(low[v]);
            }
            if low[v] == index[v] {
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    comp[w] = count;
                    if w == v {
                        break;
                    }
                }
                count += 1;
            }
        }
    }
    (comp, count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debian::testutil::pkg;

    fn names(groups: Vec<Vec<&Package>>) -> Vec<Vec<&str>> {
        groups
            .into_iter()
            .map(|g| g.into_iter().map(|p| p.name.as_str()).collect())
            .collect()
    }

    #[test]
    fn cycles_share_a_group_pre_depends_go_before() {
        let pkgs = [
            pkg("libc6", "2", &[("Depends", "libgcc-s1")]),
            pkg("libgcc-s1", "1", &[("Depends", "libc6 (>= 2), gcc-base")]),
            pkg("gcc-base", "1", &[]),
            pkg(
                "dpkg",
                "1",
                &[
                    ("Pre-Depends", "libc6, tar-virtual"),
                    ("Depends", "outside"),
                ],
            ),
            pkg(
                "tar",
                "1",
                &[("Pre-Depends", "libc6"), ("Provides", "tar-virtual")],
            ),
            // Depends on a later group pulls it along, not before.
            pkg("apt", "1", &[("Depends", "dpkg")]),
        ];
        assert_eq!(
            names(install_order(&pkgs)),
            [
                vec!["gcc-base", "libc6", "libgcc-s1"],
                vec!["tar"],
                vec!["apt", "dpkg"]
            ]
        );
        // A Pre-Depends cycle does not fail: one group; the first name's
        // pre-dependency goes first.
        let pkgs = [
            pkg("b", "1", &[("Pre-Depends", "a")]),
            pkg("a", "1", &[("Pre-Depends", "b")]),
        ];
        assert_eq!(names(install_order(&pkgs)), [vec!["b", "a"]]);
        assert!(install_order(&[]).is_empty());
    }
}
