//! deb822 control data: paragraphs of `Field: value` lines, and the
//! `Packages` index and dpkg `status` file made of them.
//!
//! A real `Packages` file is ~60k paragraphs; paragraphs borrow slices of
//! the text and only the finished [`Package`]s own strings.
use super::package::{Alternatives, Dep, Package, Provide, Relation};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("line {line}: {reason}")]
    Syntax { line: usize, reason: String },
    #[error("line {line}: the paragraph lacks the {field} field")]
    Missing { line: usize, field: &'static str },
    #[error("line {line}: {field}: {reason}: {value:?}")]
    Field {
        line: usize,
        field: String,
        value: String,
        reason: String,
    },
}

/// One `Name: value` field. A multi-line value keeps its continuation
/// lines as written (see [`value_lines`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    pub name: &'a str,
    pub value: &'a str,
    /// 1-based line of the field's name.
    pub line: usize,
}

/// One blank-line separated block of fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paragraph<'a> {
    /// 1-based line of the first field.
    pub line: usize,
    pub fields: Vec<Field<'a>>,
}

impl<'a> Paragraph<'a> {
    /// The field named `name`, compared without regard to case.
    pub fn field(&self, name: &str) -> Option<&Field<'a>> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }

    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.field(name).map(|f| f.value)
    }

    /// The field's value, or an error naming it and the paragraph's line.
    pub fn require(&self, name: &'static str) -> Result<&'a str, ControlError> {
        self.get(name).ok_or(ControlError::Missing {
            line: self.line,
            field: name,
        })
    }

    /// The line of `name`, or the paragraph's own when it is absent.
    pub fn line_of(&self, name: &str) -> usize {
        self.field(name).map_or(self.line, |f| f.line)
    }
}

/// The logical lines of a field value: the first line, then each
/// continuation line without its leading space, ` .` standing for an empty
/// line. Comment lines inside the value are skipped.
pub fn value_lines(value: &str) -> impl Iterator<Item = &str> {
    value.split('\n').enumerate().filter_map(|(i, l)| {
        let l = l.strip_suffix('\r').unwrap_or(l);
        if i == 0 {
            return Some(l.trim());
        }
        if l.starts_with('#') {
            return None;
        }
        let l = l.strip_prefix([' ', '\t']).unwrap_or(l).trim_end();
        Some(if l == "." { "" } else { l })
    })
}

/// Splits deb822 text into paragraphs. Field names keep their spelling;
/// look them up through [`Paragraph::get`], which ignores case.
pub fn paragraphs(text: &str) -> Result<Vec<Paragraph<'_>>, ControlError> {
    let mut out = Vec::new();
    let mut cur: Option<Paragraph<'_>> = None;
    // The field being read: its name, value start offset, line, and the
    // offset where its value ends so far.
    let mut open: Option<(&str, usize, usize, usize)> = None;
    let mut pos = 0;
    let mut line = 0;
    let bytes = text.as_bytes();
    while pos < text.len() {
        line += 1;
        let end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
        let next = (end + 1).min(text.len());
        let raw = &text[pos..end];
        let content = raw.strip_suffix('\r').unwrap_or(raw);
        let first = bytes[pos];
        if content.trim().is_empty() {
            close_field(&mut open, &mut cur, text);
            if let Some(p) = cur.take() {
                out.push(p);
            }
        } else if first == b'#' {
            // A comment: neither a field nor the end of one.
        } else if first == b' ' || first == b'\t' {
            match open.as_mut() {
                Some(f) => f.3 = pos + content.len(),
                None => {
                    return Err(ControlError::Syntax {
                        line,
                        reason: "a continuation line without a field before it".into(),
                    });
                }
            }
        } else {
            close_field(&mut open, &mut cur, text);
            let Some(colon) = content.find(':') else {
                return Err(ControlError::Syntax {
                    line,
                    reason: format!("expected `Name: value`, found {content:?}"),
                });
            };
            let name = content[..colon].trim_end();
            if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
                return Err(ControlError::Syntax {
                    line,
                    reason: format!("bad field name {name:?}"),
                });
            }
            let p = cur.get_or_insert_with(|| Paragraph {
                line,
                fields: Vec::with_capacity(24),
            });
            let seen = p
                .fields
                .iter()
                .any(|f| f.name.len() == name.len() && f.name.eq_ignore_ascii_case(name));
            if seen {
                return Err(ControlError::Syntax {
                    line,
                    reason: format!("the field {name} appears twice in one paragraph"),
                });
            }
            let start = pos + colon + 1;
            open = Some((name, start, line, pos + content.len()));
        }
        pos = next;
    }
    close_field(&mut open, &mut cur, text);
    if let Some(p) = cur.take() {
        out.push(p);
    }
    Ok(out)
}

fn close_field<'a>(
    open: &mut Option<(&'a str, usize, usize, usize)>,
    cur: &mut Option<Paragraph<'a>>,
    text: &'a str,
) {
    if let (Some((name, start, line, end)), Some(p)) = (open.take(), cur.as_mut()) {
        p.fields.push(Field {
            name,
            value: text[start..end.max(start)].trim(),
            line,
        });
    }
}

/// Parses a `Packages` index: every paragraph must name its file, size and
/// SHA256.
pub fn parse_packages(text: &str) -> Result<Vec<Package>, ControlError> {
    paragraphs(text)?.iter().map(|p| package(p, true)).collect()
}

/// Parses a `.deb`'s own `control` file (no Filename, Size or SHA256).
pub fn parse_control(text: &str) -> Result<Package, ControlError> {
    let ps = paragraphs(text)?;
    let p = ps.first().ok_or(ControlError::Syntax {
        line: 1,
        reason: "no paragraph".into(),
    })?;
    package(p, false)
}

/// Parses dpkg's `status` file, keeping only what is installed.
pub fn parse_status(text: &str) -> Result<Vec<Package>, ControlError> {
    let mut out = Vec::new();
    for p in paragraphs(text)? {
        let installed = p
            .get("Status")
            .is_some_and(|s| s.split_whitespace().eq(["install", "ok", "installed"]));
        if installed {
            out.push(package(&p, false)?);
        }
    }
    Ok(out)
}

/// The fields a [`Package`] is made of, found in one pass: looking each
/// up in turn would scan a paragraph sixteen times.
#[derive(Default)]
struct Known<'p, 'a> {
    slots: [Option<&'p Field<'a>>; KNOWN.len()],
}

const KNOWN: [&str; 16] = [
    "package",
    "version",
    "architecture",
    "multi-arch",
    "essential",
    "priority",
    "pre-depends",
    "depends",
    "recommends",
    "conflicts",
    "breaks",
    "provides",
    "source",
    "filename",
    "size",
    "sha256",
];

impl<'p, 'a> Known<'p, 'a> {
    fn of(p: &'p Paragraph<'a>) -> Self {
        let mut k = Known::default();
        let mut buf = [0u8; 16];
        for f in &p.fields {
            let n = f.name.as_bytes();
            if n.len() > buf.len() {
                continue;
            }
            let lower = &mut buf[..n.len()];
            lower.copy_from_slice(n);
            lower.make_ascii_lowercase();
            if let Some(i) = KNOWN.iter().position(|k| k.as_bytes() == &lower[..]) {
                k.slots[i] = Some(f);
            }
        }
        k
    }

    fn get(&self, name: &str) -> Option<&'p Field<'a>> {
        let i = KNOWN.iter().position(|k| k.eq_ignore_ascii_case(name))?;
        self.slots[i]
    }

    fn value(&self, name: &str) -> Option<&'a str> {
        self.get(name).map(|f| f.value)
    }

    fn require(&self, p: &Paragraph<'_>, name: &'static str) -> Result<&'a str, ControlError> {
        self.value(name).ok_or(ControlError::Missing {
            line: p.line,
            field: name,
        })
    }
}

fn package(p: &Paragraph<'_>, in_index: bool) -> Result<Package, ControlError> {
    let k = Known::of(p);
    let name = k.require(p, "Package")?;
    let source = match k.value("Source") {
        // `Source: glibc (2.36-9)` when the versions differ.
        Some(s) => s.split_once('(').map_or(s, |(n, _)| n).trim(),
        None => name,
    };
    let (filename, size, sha256) = if in_index {
        let size_field = k.get("Size");
        let size = k.require(p, "Size")?;
        let sha = k.require(p, "SHA256")?;
        let size = size
            .parse::<u64>()
            .map_err(|_| bad(size_field, "Size", "not a number"))?;
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(k.get("SHA256"), "SHA256", "not a SHA256 in hex"));
        }
        (k.require(p, "Filename")?, size, sha.to_ascii_lowercase())
    } else {
        ("", 0, String::new())
    };
    Ok(Package {
        name: name.to_string(),
        version: k.require(p, "Version")?.to_string(),
        architecture: k.require(p, "Architecture")?.to_string(),
        multi_arch: k.value("Multi-Arch").unwrap_or("no").to_string(),
        essential: k.value("Essential") == Some("yes"),
        priority: k.value("Priority").unwrap_or_default().to_string(),
        pre_depends: relations_field(k.get("Pre-Depends"))?,
        depends: relations_field(k.get("Depends"))?,
        recommends: relations_field(k.get("Recommends"))?,
        conflicts: flat_field(k.get("Conflicts"))?,
        breaks: flat_field(k.get("Breaks"))?,
        provides: provides_field(k.get("Provides"))?,
        source: source.to_string(),
        filename: filename.to_string(),
        size,
        sha256,
    })
}

/// An error about a field that is present (`f` is only None for a bug).
fn bad(f: Option<&Field<'_>>, name: &str, reason: &str) -> ControlError {
    ControlError::Field {
        line: f.map_or(0, |f| f.line),
        field: f.map_or(name, |f| f.name).to_string(),
        value: f.map_or("", |f| f.value).to_string(),
        reason: reason.to_string(),
    }
}

fn relations_field(f: Option<&Field<'_>>) -> Result<Vec<Alternatives>, ControlError> {
    match f {
        None => Ok(Vec::new()),
        Some(field) => parse_relations(field.value).map_err(|reason| bad(f, field.name, &reason)),
    }
}

/// Conflicts and Breaks take no alternatives.
fn flat_field(f: Option<&Field<'_>>) -> Result<Vec<Dep>, ControlError> {
    relations_field(f)?
        .into_iter()
        .map(|mut alts| {
            if alts.len() == 1 {
                Ok(alts.remove(0))
            } else {
                Err(bad(f, "", "alternatives are not allowed here"))
            }
        })
        .collect()
}

fn provides_field(f: Option<&Field<'_>>) -> Result<Vec<Provide>, ControlError> {
    let mut out = Vec::new();
    for alts in relations_field(f)? {
        let [dep] = <[Dep; 1]>::try_from(alts)
            .map_err(|_| bad(f, "", "alternatives are not allowed here"))?;
        let version = match dep.version {
            None => None,
            Some((Relation::Eq, ver)) => Some(ver),
            Some(_) => return Err(bad(f, "", "a provided version must use `=`")),
        };
        out.push(Provide {
            name: dep.name,
            version,
        });
    }
    Ok(out)
}

/// Parses a relationship field: `a (>= 1) | b:any, c [amd64] <!nocheck>`.
/// Architecture and build-profile restrictions are skipped.
pub fn parse_relations(value: &str) -> Result<Vec<Alternatives>, String> {
    let mut out = Vec::new();
    for group in value.split(',') {
        if group.trim().is_empty() {
            // dpkg tolerates a trailing comma; so does apt.
            continue;
        }
        let alts = group
            .split('|')
            .map(parse_dep)
            .collect::<Result<Vec<_>, _>>()?;
        out.push(alts);
    }
    Ok(out)
}

/// Parses one `name:arch (op version)` with optional restrictions after it.
pub fn parse_dep(text: &str) -> Result<Dep, String> {
    let s = text.trim();
    let name_end = s
        .find(|c: char| c.is_whitespace() || matches!(c, '(' | '[' | '<'))
        .unwrap_or(s.len());
    let (full, mut rest) = (&s[..name_end], s[name_end..].trim_start());
    let (name, arch) = match full.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (full, None),
    };
    if name.is_empty() || !name.bytes().all(valid_name_byte) {
        return Err(format!("bad package name {full:?}"));
    }
    if arch.is_some_and(|a| a.is_empty() || !a.bytes().all(valid_name_byte)) {
        return Err(format!("bad architecture qualifier in {full:?}"));
    }
    let mut version = None;
    if let Some(r) = rest.strip_prefix('(') {
        let Some(close) = r.find(')') else {
            return Err(format!("unclosed `(` in {s:?}"));
        };
        version = Some(parse_constraint(&r[..close]).map_err(|e| format!("{e} in {s:?}"))?);
        rest = r[close + 1..].trim_start();
    }
    // `[amd64 arm64]` and `<!nocheck>` restrict where the relation applies;
    // binary indexes should not carry them, and they do not change which
    // package is meant.
    while let Some(open) = rest.chars().next().filter(|c| matches!(c, '[' | '<')) {
        let close = if open == '[' { ']' } else { '>' };
        let Some(end) = rest.find(close) else {
            return Err(format!("unclosed `{open}` in {s:?}"));
        };
        rest = rest[end + 1..].trim_start();
    }
    if !rest.is_empty() {
        return Err(format!("unexpected {rest:?} in {s:?}"));
    }
    Ok(Dep {
        name: name.to_string(),
        arch: arch.map(str::to_string),
        version,
    })
}

fn valid_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.' | b'_')
}

fn parse_constraint(inner: &str) -> Result<(Relation, String), String> {
    let inner = inner.trim();
    let (rel, len) = if inner.starts_with("<<") {
        (Relation::Less, 2)
    } else if inner.starts_with("<=") {
        (Relation::LessEq, 2)
    } else if inner.starts_with(">>") {
        (Relation::Greater, 2)
    } else if inner.starts_with(">=") {
        (Relation::GreaterEq, 2)
    } else if inner.starts_with('=') {
        (Relation::Eq, 1)
    } else if inner.starts_with('<') {
        // Obsolete spellings, which dpkg still reads as the inclusive forms.
        (Relation::LessEq, 1)
    } else if inner.starts_with('>') {
        (Relation::GreaterEq, 1)
    } else {
        return Err(format!(
            "expected a relation (<< <= = >= >>), found {inner:?}"
        ));
    };
    let ver = inner[len..].trim();
    if ver.is_empty() || ver.contains(char::is_whitespace) {
        return Err(format!("bad version {ver:?}"));
    }
    Ok((rel, ver.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(name: &str, arch: Option<&str>, v: Option<(Relation, &str)>) -> Dep {
        Dep {
            name: name.into(),
            arch: arch.map(Into::into),
            version: v.map(|(r, s)| (r, s.into())),
        }
    }

    #[test]
    fn paragraphs_fields_continuations_comments() {
        let text = "# leading comment\nPackage: a\nDescription: short\n more\n .\n last\n\n\n\
                    package: b\r\n# inside\r\nVERSION:1\r\n\t\r\nPackage: c\n";
        let ps = paragraphs(text).unwrap();
        assert_eq!(ps.len(), 3);
        assert_eq!(ps[0].line, 2);
        assert_eq!(ps[0].get("package"), Some("a"));
        let desc = ps[0].field("DESCRIPTION").unwrap();
        assert_eq!(desc.line, 3);
        assert_eq!(
            value_lines(desc.value).collect::<Vec<_>>(),
            ["short", "more", "", "last"]
        );
        assert_eq!(ps[1].get("Package"), Some("b"));
        assert_eq!(ps[1].get("Version"), Some("1"));
        assert_eq!(ps[2].line, 13);
    }

    #[test]
    fn paragraph_errors_carry_lines() {
        let e = paragraphs("Package: a\nno colon here\n").unwrap_err();
        assert!(matches!(e, ControlError::Syntax { line: 2, .. }), "{e}");
        let e = paragraphs("\n continuation\n").unwrap_err();
        assert!(matches!(e, ControlError::Syntax { line: 2, .. }), "{e}");
        let e = paragraphs("A: 1\na: 2\n").unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
    }

    #[test]
    fn relations_every_syntax() {
        let r = parse_relations(
            "libc6 (>= 2.36), a | b:any (<< 3~) |c(=1:2-3) , d:amd64 [amd64 !i386] <!nocheck> <stage1>,\n e (<1), f (>2), g (<= 1), h(>>0),",
        )
        .unwrap();
        assert_eq!(
            r,
            vec![
                vec![dep("libc6", None, Some((Relation::GreaterEq, "2.36")))],
                vec![
                    dep("a", None, None),
                    dep("b", Some("any"), Some((Relation::Less, "3~"))),
                    dep("c", None, Some((Relation::Eq, "1:2-3"))),
                ],
                vec![dep("d", Some("amd64"), None)],
                vec![dep("e", None, Some((Relation::LessEq, "1")))],
                vec![dep("f", None, Some((Relation::GreaterEq, "2")))],
                vec![dep("g", None, Some((Relation::LessEq, "1")))],
                vec![dep("h", None, Some((Relation::Greater, "0")))],
            ]
        );
        assert!(parse_relations("a (>= 1").is_err());
        assert!(parse_relations("a (~ 1)").is_err());
        assert!(parse_relations("a b").is_err());
        assert!(parse_relations("a, | b").is_err());
    }

    const PACKAGES: &str = "\
Package: libfoo1
Source: foo (1.0-1)
Version: 1.0-1+b1
Architecture: amd64
Multi-Arch: same
Priority: optional
Pre-Depends: dpkg (>= 1.15)
Depends: libc6 (>= 2.34),
 libbar | libbaz
Recommends: foo-data
Conflicts: oldfoo (<< 1.0)
Breaks: brk, brk2 (<= 2)
Provides: libfoo, libfoo-abi (= 1)
Filename: pool/main/f/foo/libfoo1_1.0-1+b1_amd64.deb
Size: 1234
SHA256: ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789

Package: dpkg
Version: 1.21.22
Architecture: amd64
Essential: yes
Priority: required
Filename: pool/main/d/dpkg/dpkg_1.21.22_amd64.deb
Size: 1
SHA256: 0000000000000000000000000000000000000000000000000000000000000000
";

    #[test]
    fn packages_index() {
        let ps = parse_packages(PACKAGES).unwrap();
        assert_eq!(ps.len(), 2);
        let p = &ps[0];
        assert_eq!(p.name, "libfoo1");
        assert_eq!(p.source, "foo");
        assert_eq!(p.version, "1.0-1+b1");
        assert_eq!(p.multi_arch, "same");
        assert!(!p.essential);
        assert_eq!(
            p.pre_depends,
            vec![vec![dep("dpkg", None, Some((Relation::GreaterEq, "1.15")))]]
        );
        assert_eq!(p.depends.len(), 2);
        assert_eq!(p.depends[1].len(), 2);
        assert_eq!(p.recommends, vec![vec![dep("foo-data", None, None)]]);
        assert_eq!(
            p.conflicts,
            vec![dep("oldfoo", None, Some((Relation::Less, "1.0")))]
        );
        assert_eq!(p.breaks.len(), 2);
        assert_eq!(
            p.provides,
            vec![
                Provide {
                    name: "libfoo".into(),
                    version: None
                },
                Provide {
                    name: "libfoo-abi".into(),
                    version: Some("1".into())
                },
            ]
        );
        assert_eq!(p.size, 1234);
        assert!(p.sha256.starts_with("abcdef01"));
        let d = &ps[1];
        assert!(d.essential);
        assert_eq!(d.source, "dpkg");
        assert_eq!(d.multi_arch, "no");
        assert_eq!(d.priority, "required");
    }

    #[test]
    fn packages_errors() {
        let e = parse_packages("Package: a\nVersion: 1\nArchitecture: all\n").unwrap_err();
        assert!(
            matches!(
                e,
                ControlError::Missing {
                    line: 1,
                    field: "Size"
                }
            ),
            "{e}"
        );
        let bad = PACKAGES.replace("Size: 1234", "Size: lots");
        let e = parse_packages(&bad).unwrap_err();
        assert!(matches!(e, ControlError::Field { line: 15, .. }), "{e}");
        let bad = PACKAGES.replace("Conflicts: oldfoo (<< 1.0)", "Conflicts: x | y");
        let e = parse_packages(&bad).unwrap_err();
        assert!(e.to_string().contains("alternatives"), "{e}");
        let bad = PACKAGES.replace("libfoo-abi (= 1)", "libfoo-abi (>= 1)");
        assert!(parse_packages(&bad).is_err());
    }

    #[test]
    fn status_keeps_installed_only() {
        let text = "\
Package: a
Status: install ok installed
Version: 1
Architecture: amd64
Depends: b

Package: b
Status: deinstall ok config-files
Version: 2
Architecture: amd64

Package: c
Status: install ok  installed
Version: 3
Architecture: all
Essential: yes
";
        let ps = parse_status(text).unwrap();
        assert_eq!(
            ps.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["a", "c"]
        );
        assert_eq!(ps[0].filename, "");
        assert_eq!(ps[0].size, 0);
        assert_eq!(ps[0].sha256, "");
        assert!(ps[1].essential);
    }
}

#[cfg(test)]
mod timing {
    /// Times the parser on a real index: IMGBUILD_PACKAGES_FILE=/path/Packages.
    #[test]
    #[ignore]
    fn parse_real_packages() {
        let Ok(path) = std::env::var("IMGBUILD_PACKAGES_FILE") else {
            return;
        };
        let text = std::fs::read_to_string(path).unwrap();
        let t = std::time::Instant::now();
        let ps = super::paragraphs(&text).unwrap();
        let t1 = t.elapsed();
        let pk = super::parse_packages(&text).unwrap();
        eprintln!(
            "{} paragraphs in {t1:?}; {} packages in {:?}",
            ps.len(),
            pk.len(),
            t.elapsed() - t1
        );
    }
}
