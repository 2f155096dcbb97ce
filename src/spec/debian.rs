//! `debian:`: suite, variant, packages, debconf answers and dpkg's path
//! filters, over what the nearest Debian ancestor set.
use std::path::Path;

use super::DebianSpec;
use super::ctx::{Ctx, S, expand};
use super::raw::RawDebian;
use super::yaml::Pos;
use crate::debian::paths::{self, Action, Rule};

/// `debian:`, over what the nearest Debian ancestor set.
pub(super) fn finish_debian(
    cx: &mut Ctx,
    raw: &RawDebian,
    vars: &super::vars::Vars,
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
    let path_exclude: Vec<(String, Pos)> = raw.path_exclude.iter().filter_map(&mut x).collect();
    let path_include: Vec<(String, Pos)> = raw.path_include.iter().filter_map(&mut x).collect();
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
    let mut path_rules = parent.map(|p| p.path_rules.clone()).unwrap_or_default();
    let own_path_rules = !path_exclude.is_empty() || !path_include.is_empty();
    for (list, action, key) in [
        (path_exclude, Action::Exclude, "path_exclude"),
        (path_include, Action::Include, "path_include"),
    ] {
        for (glob, pos) in list {
            match paths::check(&glob) {
                Ok(()) => path_rules.push(Rule { action, glob }),
                Err(e) => {
                    cx.err(
                        pos,
                        format!("`{key}: {glob}`: the glob {e}"),
                        Some("write a dpkg path filter, e.g. `/usr/share/doc/*` (fnmatch: `*` also matches `/`)".into()),
                    );
                    ok = false;
                }
            }
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
            .and_then(|(k, pos)| {
                let path = cx.base(pos, dir).join(&k);
                cx.inside(pos, "keyring", &k, &path).then_some(path)
            })
            .or_else(|| parent.and_then(|p| p.keyring.clone())),
        has_debian_parent: parent.is_some(),
        path_rules,
        own_path_rules,
        pos: raw.pos,
    };
    ok.then_some(spec)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_problems, parse_in, tree};

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
        assert_problems(
            &p,
            &[
                "7: `variant: minbase` makes a new Debian base, but an ancestor already installs Debian packages",
                "10: `suite: bookworm` differs from the parent's `trixie`",
                "10: `Bad_Name` is not a Debian package name (or `name=version`)",
                "13: `debian` needs a `suite`",
                "16: unknown key `pakages` in `debian`",
                "19: `debian` cannot install into the tarball of the same image's `from: {rootfs: …}`",
            ],
        );
    }

    #[test]
    fn path_filters_are_checked_and_added_to_the_parents() {
        use crate::debian::paths::Action::{Exclude, Include};
        let d = tree();
        let spec = parse_in(
            d.path(),
            concat!(
                "images:\n",
                "  base:\n    from: scratch\n",
                "    debian: {suite: trixie, variant: minbase, path_exclude: [\"/usr/share/doc/*\"], path_include: [\"/usr/share/doc/*/copyright\"]}\n",
                "  plain:\n    from: base\n    debian: {packages: [curl]}\n",
                "  man:\n    from: base\n    debian: {packages: [man-db], path_include: [\"/usr/share/doc/man-db/*\"]}\n",
            ),
        )
        .unwrap();
        let rules = |n: &str| {
            let d = spec.images[n].debian.as_ref().unwrap();
            let r: Vec<_> = d
                .path_rules
                .iter()
                .map(|r| (r.action, r.glob.as_str()))
                .collect();
            (r, d.own_path_rules)
        };
        let base = vec![
            (Exclude, "/usr/share/doc/*"),
            (Include, "/usr/share/doc/*/copyright"),
        ];
        assert_eq!(rules("base"), (base.clone(), true));
        assert_eq!(rules("plain"), (base.clone(), false));
        let mut man = base;
        man.push((Include, "/usr/share/doc/man-db/*"));
        assert_eq!(rules("man"), (man, true));
        let p = parse_in(
            d.path(),
            concat!(
                "images:\n",
                "  base:\n    from: scratch\n",
                "    debian:\n      suite: trixie\n      variant: minbase\n",
                "      path_exclude: [\"usr/share/doc/*\", \"/usr/share/[ab\"]\n",
                "      path_include: \"/usr/share/doc/*/copyright\"\n",
                "    compression: lz4\n",
            ),
        )
        .unwrap_err();
        assert_problems(
            &p,
            &[
                "7: `path_exclude: usr/share/doc/*`: the glob does not start with `/`: dpkg matches absolute paths, so it would match nothing",
                "7: `path_exclude: /usr/share/[ab`: the glob has a `[` with no closing `]`",
                "8: `path_include` must be a list, not a scalar",
                "9: `compression: lz4`: unknown compression \"lz4\" (expected \"gzip\" or \"zstd\")",
            ],
        );
        assert!(
            p.iter().all(|x| x.image.as_deref() == Some("base")),
            "{p:?}"
        );
    }
}
