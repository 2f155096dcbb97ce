//! dpkg's path filters (`--path-exclude` / `--path-include`, as written in
//! `/etc/dpkg/dpkg.cfg.d/` files): which files of a package get installed.
//!
//! The same rules, with dpkg's own semantics (src/main/filters.c), decide
//! both what imgbuild extracts itself in a minbase bootstrap and what the
//! image's dpkg unpacks (from the file [`PathFilter::config_file`] writes),
//! so the two never disagree:
//! - a path is matched as dpkg sees it: absolute (`/usr/share/doc/x`);
//! - globs are fnmatch(3) without flags: `*` and `?` match `/` too,
//!   `[…]` is a class (`!` or `^` negates), `\` quotes the next character;
//! - the last rule that matches decides; no match keeps the path;
//! - an excluded directory (or symlink) is kept when an include rule's
//!   literal start (up to its first wildcard, trailing `/` removed) begins
//!   its path, so that re-included files have somewhere to go.

/// Where dpkg reads the rules from, inside the image.
pub const CONFIG_PATH: &str = "etc/dpkg/dpkg.cfg.d/imgbuild";

/// Leave out or put back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Exclude,
    Include,
}

/// One `path-exclude=GLOB` or `path-include=GLOB`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rule {
    pub action: Action,
    pub glob: String,
}

/// Why a glob is not one dpkg would use as meant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    #[error("is empty")]
    Empty,
    #[error("does not start with `/`: dpkg matches absolute paths, so it would match nothing")]
    NotAbsolute,
    #[error("holds a line break or NUL, which a dpkg configuration line cannot")]
    Control,
    #[error("has a `[` with no closing `]`")]
    Unclosed,
    #[error("ends with a lone `\\`")]
    TrailingEscape,
    #[error("names an unknown character class `[:{0}:]`")]
    UnknownClass(String),
}

/// Checks `glob` as a path filter.
pub fn check(glob: &str) -> Result<(), GlobError> {
    if glob.is_empty() {
        return Err(GlobError::Empty);
    }
    if glob.contains(['\n', '\r', '\0']) {
        return Err(GlobError::Control);
    }
    if !glob.starts_with('/') {
        return Err(GlobError::NotAbsolute);
    }
    let p: Vec<char> = glob.chars().collect();
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' if i + 1 == p.len() => return Err(GlobError::TrailingEscape),
            '\\' => i += 2,
            '[' => match class_end(&p, i) {
                Some(end) => {
                    // Classes by name must be names fnmatch knows.
                    let body: String = p[i + 1..end].iter().collect();
                    let mut rest = body.as_str();
                    while let Some(s) = rest.find("[:") {
                        let after = &rest[s + 2..];
                        let Some(e) = after.find(":]") else { break };
                        let name = &after[..e];
                        if named_class(name, 'a').is_none() {
                            return Err(GlobError::UnknownClass(name.to_string()));
                        }
                        rest = &after[e + 2..];
                    }
                    i = end + 1;
                }
                None => return Err(GlobError::Unclosed),
            },
            _ => i += 1,
        }
    }
    Ok(())
}

/// Rules in the order dpkg applies them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathFilter {
    rules: Vec<Rule>,
}

impl PathFilter {
    pub fn new(rules: Vec<Rule>) -> PathFilter {
        PathFilter { rules }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether dpkg leaves out the entry at `path` (absolute, as
    /// `/usr/share/doc/x`); `dir_or_link` for directories and symlinks.
    pub fn skips(&self, path: &str, dir_or_link: bool) -> bool {
        let path = if path.len() > 1 {
            path.trim_end_matches('/')
        } else {
            path
        };
        let mut skip = false;
        for r in &self.rules {
            if fnmatch(&r.glob, path) {
                skip = r.action == Action::Exclude;
            }
        }
        if skip && dir_or_link {
            // dpkg keeps a directory that an include's literal start
            // begins (its strncmp over the start's length).
            let reincluded = self
                .rules
                .iter()
                .filter(|r| r.action == Action::Include)
                .any(|r| {
                    let start = r.glob.find(['*', '?', '[', '\\']).unwrap_or(r.glob.len());
                    let start = r.glob[..start].trim_end_matches('/');
                    path.starts_with(start)
                });
            return !reincluded;
        }
        skip
    }

    /// The text of a `dpkg.cfg.d` file with these rules, in order.
    pub fn config_file(&self) -> String {
        let mut s = String::from(
            "# Written by imgbuild from images.yaml (debian: path_exclude, path_include):\n\
             # what dpkg leaves out when it installs a package.\n",
        );
        for r in &self.rules {
            let what = match r.action {
                Action::Exclude => "path-exclude",
                Action::Include => "path-include",
            };
            s.push_str(&format!("{what}={}\n", r.glob));
        }
        s
    }
}

/// fnmatch(3) with no flags, over characters.
pub fn fnmatch(glob: &str, s: &str) -> bool {
    let p: Vec<char> = glob.chars().collect();
    let s: Vec<char> = s.chars().collect();
    matches(&p, &s)
}

fn matches(p: &[char], s: &[char]) -> bool {
    // Iterative, with backtracking to the last `*` only (linear enough).
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    loop {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, si));
                    pi += 1;
                    continue;
                }
                '?' if si < s.len() => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                '[' if si < s.len() => match class_end(p, pi) {
                    Some(end) if class_matches(&p[pi + 1..end], s[si]) => {
                        pi = end + 1;
                        si += 1;
                        continue;
                    }
                    Some(_) => {}
                    // A `[` that opens no class is itself.
                    None if s[si] == '[' => {
                        pi += 1;
                        si += 1;
                        continue;
                    }
                    None => {}
                },
                '\\' if pi + 1 < p.len() && si < s.len() && s[si] == p[pi + 1] => {
                    pi += 2;
                    si += 1;
                    continue;
                }
                c if c != '\\' && c != '?' && c != '[' && si < s.len() && s[si] == c => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                // A lone trailing `\` matches itself.
                '\\' if pi + 1 == p.len() && si < s.len() && s[si] == '\\' => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                _ => {}
            }
        } else if si == s.len() {
            return true;
        }
        // Mismatch: let the last `*` take one more character.
        match star {
            Some((sp, ss)) if ss < s.len() => {
                star = Some((sp, ss + 1));
                pi = sp + 1;
                si = ss + 1;
            }
            _ => return false,
        }
    }
}

/// The index of the `]` closing the class opened at `p[open]`.
fn class_end(p: &[char], open: usize) -> Option<usize> {
    let mut i = open + 1;
    if i < p.len() && (p[i] == '!' || p[i] == '^') {
        i += 1;
    }
    // A `]` first is a member.
    if i < p.len() && p[i] == ']' {
        i += 1;
    }
    while i < p.len() {
        match p[i] {
            ']' => return Some(i),
            '\\' => i += 2,
            '[' if p.get(i + 1) == Some(&':') => {
                // `[:name:]` inside a class.
                let rest = &p[i + 2..];
                let close = rest.windows(2).position(|w| w == [':', ']'])?;
                i += 2 + close + 2;
            }
            _ => i += 1,
        }
    }
    None
}

/// Whether `c` is in the class whose body (between `[` and `]`) is `body`.
fn class_matches(body: &[char], c: char) -> bool {
    let (negate, body) = match body.first() {
        Some('!' | '^') => (true, &body[1..]),
        _ => (false, body),
    };
    let mut found = false;
    let mut i = 0;
    while i < body.len() {
        let lo = match body[i] {
            '\\' if i + 1 < body.len() => {
                i += 1;
                body[i]
            }
            '[' if body.get(i + 1) == Some(&':') => {
                let rest = &body[i + 2..];
                if let Some(close) = rest.windows(2).position(|w| w == [':', ']']) {
                    let name: String = rest[..close].iter().collect();
                    found |= named_class(&name, c).unwrap_or(false);
                    i += 2 + close + 2;
                    continue;
                }
                '['
            }
            x => x,
        };
        // A range `a-z` (a `-` last is a member).
        if body.get(i + 1) == Some(&'-') && i + 2 < body.len() {
            let mut hi = body[i + 2];
            let mut next = i + 3;
            if hi == '\\' && i + 3 < body.len() {
                hi = body[i + 3];
                next = i + 4;
            }
            found |= lo <= c && c <= hi;
            i = next;
        } else {
            found |= lo == c;
            i += 1;
        }
    }
    found != negate
}

/// `[:name:]`: whether `c` is in it; None for a name fnmatch does not know.
fn named_class(name: &str, c: char) -> Option<bool> {
    Some(match name {
        "alnum" => c.is_alphanumeric(),
        "alpha" => c.is_alphabetic(),
        "blank" => c == ' ' || c == '\t',
        "cntrl" => c.is_control(),
        "digit" => c.is_ascii_digit(),
        "graph" => !c.is_whitespace() && !c.is_control(),
        "lower" => c.is_lowercase(),
        "print" => !c.is_control(),
        "punct" => c.is_ascii_punctuation(),
        "space" => c.is_whitespace(),
        "upper" => c.is_uppercase(),
        "xdigit" => c.is_ascii_hexdigit(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slim() -> PathFilter {
        let ex = |g: &str| Rule {
            action: Action::Exclude,
            glob: g.into(),
        };
        let inc = |g: &str| Rule {
            action: Action::Include,
            glob: g.into(),
        };
        // debian-slim's /etc/dpkg/dpkg.cfg.d/docker, in its order.
        PathFilter::new(vec![
            ex("/usr/share/doc/*"),
            inc("/usr/share/doc/*/copyright"),
            ex("/usr/share/man/*"),
            ex("/usr/share/groff/*"),
            ex("/usr/share/info/*"),
            ex("/usr/share/lintian/*"),
            ex("/usr/share/linda/*"),
            ex("/usr/share/locale/*"),
        ])
    }

    #[test]
    fn fnmatch_is_flagless_fnmatch() {
        // `*` and `?` cross `/`; a leading dot is not special.
        assert!(fnmatch("/usr/*/READ*", "/usr/share/doc/package/README"));
        assert!(fnmatch("/usr/share/doc/*", "/usr/share/doc/a/b/.hidden"));
        assert!(fnmatch("/a?b", "/a/b"));
        assert!(!fnmatch("/usr/share/doc/*", "/usr/share/doc"));
        assert!(fnmatch("/usr/share/doc/*", "/usr/share/doc/"));
        assert!(fnmatch("/x/[a-c]1", "/x/b1"));
        assert!(!fnmatch("/x/[!a-c]1", "/x/b1"));
        assert!(fnmatch("/x/[^a-c]1", "/x/d1"));
        assert!(fnmatch("/x/[]]", "/x/]"));
        assert!(fnmatch("/x/[a-]", "/x/-"));
        assert!(fnmatch("/x/[[:digit:]]*", "/x/9lives"));
        assert!(!fnmatch("/x/[[:digit:]]*", "/x/lives"));
        assert!(fnmatch("/x/\\*", "/x/*"));
        assert!(!fnmatch("/x/\\*", "/x/a"));
        assert!(fnmatch("/x/[", "/x/["));
        assert!(fnmatch("*a*b*c", "/xxaxxbxxbxc"));
        assert!(!fnmatch("*a*b*c", "/xxaxxbxxbx"));
        assert!(fnmatch("/über/*", "/über/ß"));
        assert!(fnmatch("/?ber", "/über"));
    }

    #[test]
    fn the_last_matching_rule_wins() {
        let f = slim();
        assert!(f.skips("/usr/share/doc/git/changelog.gz", false));
        assert!(f.skips("/usr/share/doc/git/README.md", false));
        assert!(!f.skips("/usr/share/doc/git/copyright", false));
        assert!(f.skips("/usr/share/man/man1/git.1.gz", false));
        assert!(f.skips("/usr/share/locale/de/LC_MESSAGES/git.mo", false));
        assert!(!f.skips("/usr/bin/git", false));
        assert!(!f.skips("/usr/share/perl5/Git.pm", false));
        // An exclude after the include takes it back.
        let mut rules = f.rules.clone();
        rules.push(Rule {
            action: Action::Exclude,
            glob: "/usr/share/doc/git/*".into(),
        });
        let f2 = PathFilter::new(rules);
        assert!(f2.skips("/usr/share/doc/git/copyright", false));
        assert!(!f2.skips("/usr/share/doc/perl/copyright", false));
        assert!(!PathFilter::default().skips("/usr/share/doc/git/changelog.gz", false));
    }

    #[test]
    fn directories_leading_to_included_files_are_kept() {
        let f = slim();
        // Needed by /usr/share/doc/git/copyright.
        assert!(!f.skips("/usr/share/doc/git", true));
        assert!(!f.skips("/usr/share/doc/git/", true));
        // The same path as a file is still left out.
        assert!(f.skips("/usr/share/doc/git", false));
        // Nothing is re-included under man/ or locale/.
        assert!(f.skips("/usr/share/man/man1", true));
        assert!(f.skips("/usr/share/locale/de", true));
        // A symlink in doc/ (to another package's doc dir) is kept too.
        assert!(!f.skips("/usr/share/doc/libgit-perl", true));
        // Directories not excluded at all stay.
        assert!(!f.skips("/usr/share/doc", true));
        assert!(!f.skips("/usr/share/man", true));
        // dpkg's rule is a prefix test on the include's literal start:
        // with no wildcard, the directory above is not kept.
        let g = PathFilter::new(vec![
            Rule {
                action: Action::Exclude,
                glob: "/opt/*".into(),
            },
            Rule {
                action: Action::Include,
                glob: "/opt/keep/file".into(),
            },
        ]);
        assert!(g.skips("/opt/keep", true));
        assert!(!g.skips("/opt/keep/file", false));
    }

    #[test]
    fn bad_globs_are_named() {
        assert_eq!(check("/usr/share/doc/*"), Ok(()));
        assert_eq!(check("/x/[[:digit:]]"), Ok(()));
        assert_eq!(check("usr/share/doc/*"), Err(GlobError::NotAbsolute));
        assert_eq!(check(""), Err(GlobError::Empty));
        assert_eq!(check("/usr/[ab"), Err(GlobError::Unclosed));
        assert_eq!(check("/usr/x\\"), Err(GlobError::TrailingEscape));
        assert_eq!(check("/a\nb"), Err(GlobError::Control));
        assert_eq!(
            check("/x/[[:digits:]]"),
            Err(GlobError::UnknownClass("digits".into()))
        );
    }

    #[test]
    fn the_config_file_lists_the_rules_in_order() {
        let text = slim().config_file();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines[0], "path-exclude=/usr/share/doc/*");
        assert_eq!(lines[1], "path-include=/usr/share/doc/*/copyright");
        assert_eq!(lines.len(), 8);
    }
}
