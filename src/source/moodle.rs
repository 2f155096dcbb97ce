//! What a Moodle tree says about itself: `$release` and `$branch` from its
//! `version.php`, as vars (`${source.NAME.release}`, `.branch`, `.build`).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The vars a tree's `version.php` gives; empty when it has none. Looked
/// for at the root, in `public/` (Moodle 5.1's layout), and the same in
/// the one directory an archive often wraps its tree in (`moodle/`).
pub fn vars(root: &Path) -> BTreeMap<String, String> {
    let mut candidates = vec![root.join("version.php"), root.join("public/version.php")];
    if let Some(only) = only_dir(root) {
        candidates.push(only.join("version.php"));
        candidates.push(only.join("public/version.php"));
    }
    candidates
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|text| parse(&text))
        .find(|v| v.contains_key("release"))
        .unwrap_or_default()
}

fn only_dir(root: &Path) -> Option<PathBuf> {
    let mut entries = std::fs::read_dir(root).ok()?;
    let first = entries.next()?.ok()?;
    if entries.next().is_some() || !first.file_type().ok()?.is_dir() {
        return None;
    }
    Some(first.path())
}

/// `$release = '5.1.3+ (Build: 20251010)';` and `$branch = '501';`:
/// `release` is the part before ` (Build`, made tag-safe (`+`, a weekly
/// build, becomes `-plus`; anything else a tag cannot hold becomes `-`),
/// `release_full` is the whole string, `build` the build date.
pub fn parse(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(full) = assigned(text, "release") {
        let (name, build) = match full.split_once('(') {
            Some((n, b)) => (n.trim(), Some(b)),
            None => (full.trim(), None),
        };
        out.insert("release".into(), tag_safe(name));
        out.insert("release_full".into(), full.clone());
        if let Some(b) = build {
            let digits: String = b
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(char::is_ascii_digit)
                .collect();
            if !digits.is_empty() {
                out.insert("build".into(), digits);
            }
        }
    }
    if let Some(branch) = assigned(text, "branch") {
        out.insert("branch".into(), branch);
    }
    out
}

/// The quoted string assigned to `$name` on a line of its own.
fn assigned(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = line.trim_start().strip_prefix('$')?.strip_prefix(name)?;
        let rest = rest.trim_start().strip_prefix('=')?.trim_start();
        let quote = rest.chars().next().filter(|c| *c == '\'' || *c == '"')?;
        let body = &rest[1..];
        let end = body.find(quote)?;
        Some(body[..end].to_string())
    })
}

fn tag_safe(release: &str) -> String {
    let mut out = String::new();
    for c in release.chars() {
        match c {
            '+' => out.push_str("-plus"),
            c if c.is_ascii_alphanumeric() || "._-".contains(c) => out.push(c),
            _ => out.push('-'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_release_and_branch() {
        let v = parse(
            "<?php\n$version  = 2025100600.03;\n$release  = '5.1.3 (Build: 20251006)'; // Human-friendly\n$branch   = '501';\n$maturity = MATURITY_STABLE;\n",
        );
        assert_eq!(v["release"], "5.1.3");
        assert_eq!(v["build"], "20251006");
        assert_eq!(v["branch"], "501");
        let weekly = parse("$release = \"4.5.8+ (Build: 20251212)\";\n");
        assert_eq!(weekly["release"], "4.5.8-plus");
        assert_eq!(weekly["release_full"], "4.5.8+ (Build: 20251212)");
        assert!(parse("<?php\n// nothing\n").is_empty());
        // `$releasenotes` is not `$release`.
        assert!(parse("$releasenotes = 'x';\n").is_empty());
    }
}
