//! What an image's dpkg database and a package's `copyright` file say:
//! the installed packages (as `dpkg-query -W` lists them) and, where the
//! copyright file is machine-readable (DEP-5), the licences as an SPDX
//! expression.
use std::collections::BTreeSet;

/// An installed package, as the status file records it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Installed {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// The source package and its version (the binary's when the status
    /// names none, as dpkg does).
    pub source: String,
    pub source_version: String,
}

/// The packages of `/var/lib/dpkg/status` whose state is installed (what
/// `dpkg-query -W` shows as having a version), sorted by name and arch.
pub fn installed(status: &str) -> Vec<Installed> {
    let mut out: Vec<Installed> = paragraphs(status)
        .filter_map(|p| {
            let field = |name: &str| field(&p, name);
            let state = field("Status")?;
            // `install ok installed`; `deinstall ok config-files` is not.
            if !state.ends_with(" installed") {
                return None;
            }
            let name = field("Package")?;
            let version = field("Version")?;
            let (source, source_version) = match field("Source") {
                Some(s) => match s.split_once(' ') {
                    Some((n, v)) => (
                        n.to_string(),
                        v.trim()
                            .trim_start_matches('(')
                            .trim_end_matches(')')
                            .to_string(),
                    ),
                    None => (s.to_string(), version.to_string()),
                },
                None => (name.to_string(), version.to_string()),
            };
            Some(Installed {
                name: name.to_string(),
                version: version.to_string(),
                architecture: field("Architecture").unwrap_or("all").to_string(),
                source,
                source_version,
            })
        })
        .collect();
    out.sort();
    out
}

fn paragraphs(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.split("\n\n")
        .map(|p| p.lines().collect::<Vec<_>>())
        .filter(|p| !p.is_empty())
}

/// A single-line field's value (the first line of a multi-line one).
fn field<'a>(paragraph: &[&'a str], name: &str) -> Option<&'a str> {
    paragraph.iter().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (!line.starts_with([' ', '\t']) && k.eq_ignore_ascii_case(name)).then(|| v.trim())
    })
}

/// The licences of a DEP-5 copyright file, as one SPDX expression (the
/// `License:` of every `Files:` paragraph, joined by AND), with the
/// `LicenseRef-` identifiers it had to make for names SPDX does not list;
/// None when the file is not machine-readable.
pub fn licences(copyright: &str) -> Option<(String, BTreeSet<String>)> {
    let mut paras = paragraphs(copyright);
    let header = paras.next()?;
    if !field(&header, "Format")?.contains("copyright-format/1.0") {
        return None;
    }
    let mut exprs = BTreeSet::new();
    let mut refs = BTreeSet::new();
    for p in paras {
        if field(&p, "Files").is_none() {
            continue;
        }
        if let Some(l) = field(&p, "License").filter(|l| !l.is_empty()) {
            exprs.insert(expression(l, &mut refs));
        }
    }
    if exprs.is_empty() {
        return None;
    }
    let many = exprs.len() > 1;
    let joined = exprs
        .into_iter()
        .map(|e| {
            if many && e.contains(" OR ") {
                format!("({e})")
            } else {
                e
            }
        })
        .collect::<Vec<_>>()
        .join(" AND ");
    Some((joined, refs))
}

/// A Debian licence line (`GPL-2+ or Artistic`) as an SPDX expression.
/// Anything but names joined by `or`/`and` (an exception, a comma list)
/// becomes one `LicenseRef-` for the whole line.
fn expression(line: &str, refs: &mut BTreeSet<String>) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut out = Vec::new();
    // The ids the words make count only if the line is kept word by word:
    // otherwise the document would list licences no expression names.
    let mut made = BTreeSet::new();
    let mut plain = true;
    for (i, w) in words.iter().enumerate() {
        let lower = w.to_ascii_lowercase();
        if i % 2 == 1 {
            match lower.as_str() {
                "or" => out.push("OR".to_string()),
                "and" => out.push("AND".to_string()),
                _ => plain = false,
            }
        } else if w.ends_with(',') || lower == "or" || lower == "and" {
            plain = false;
        } else {
            out.push(spdx_id(w, &mut made));
        }
    }
    if plain && words.len() % 2 == 1 {
        refs.extend(made);
        return out.join(" ");
    }
    let id = license_ref(line);
    refs.insert(id.clone());
    id
}

/// Debian's short names (copyright-format 1.0) for SPDX's identifiers.
const SHORT_NAMES: &[(&str, &str)] = &[
    ("Apache-2.0", "Apache-2.0"),
    ("Artistic", "Artistic-1.0-Perl"),
    ("Artistic-2.0", "Artistic-2.0"),
    ("BSD-2-clause", "BSD-2-Clause"),
    ("BSD-3-clause", "BSD-3-Clause"),
    ("BSD-4-clause", "BSD-4-Clause"),
    ("CC0-1.0", "CC0-1.0"),
    ("Expat", "MIT"),
    ("MIT", "MIT"),
    ("GPL-1", "GPL-1.0-only"),
    ("GPL-1+", "GPL-1.0-or-later"),
    ("GPL-2", "GPL-2.0-only"),
    ("GPL-2+", "GPL-2.0-or-later"),
    ("GPL-3", "GPL-3.0-only"),
    ("GPL-3+", "GPL-3.0-or-later"),
    ("LGPL-2", "LGPL-2.0-only"),
    ("LGPL-2+", "LGPL-2.0-or-later"),
    ("LGPL-2.1", "LGPL-2.1-only"),
    ("LGPL-2.1+", "LGPL-2.1-or-later"),
    ("LGPL-3", "LGPL-3.0-only"),
    ("LGPL-3+", "LGPL-3.0-or-later"),
    ("GFDL-1.2", "GFDL-1.2-only"),
    ("GFDL-1.2+", "GFDL-1.2-or-later"),
    ("GFDL-1.3", "GFDL-1.3-only"),
    ("GFDL-1.3+", "GFDL-1.3-or-later"),
    ("ISC", "ISC"),
    ("MPL-1.1", "MPL-1.1"),
    ("MPL-2.0", "MPL-2.0"),
    ("OpenSSL", "OpenSSL"),
    ("PHP-3.01", "PHP-3.01"),
    ("Python-2.0", "Python-2.0"),
    ("Zlib", "Zlib"),
    ("zlib", "Zlib"),
    ("curl", "curl"),
    ("X11", "X11"),
];

fn spdx_id(name: &str, refs: &mut BTreeSet<String>) -> String {
    if let Some((_, id)) = SHORT_NAMES
        .iter()
        .find(|(short, _)| short.eq_ignore_ascii_case(name))
    {
        return (*id).to_string();
    }
    let id = license_ref(name);
    refs.insert(id.clone());
    id
}

/// `LicenseRef-` and the name with what an SPDX id cannot hold as `-`.
pub fn license_ref(name: &str) -> String {
    let mut body = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '.' {
            body.push(c);
        } else if !body.ends_with('-') {
            body.push('-');
        }
    }
    format!("LicenseRef-{}", body.trim_matches('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_packages_and_their_sources() {
        let status = "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nSource: glibc\nVersion: 2.41-12\nDescription: x\n more\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: libcap2\nStatus: install ok installed\nArchitecture: amd64\nSource: libcap2 (1:2.75-10)\nVersion: 1:2.75-10+b1\n\nPackage: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 13.8\n";
        let got = installed(status);
        let names: Vec<_> = got.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["base-files", "libc6", "libcap2"]);
        assert_eq!(got[0].source, "base-files");
        assert_eq!(got[0].source_version, "13.8");
        assert_eq!(got[1].source, "glibc");
        assert_eq!(got[1].source_version, "2.41-12");
        assert_eq!(got[2].source_version, "1:2.75-10");
    }

    #[test]
    fn dep5_licences_become_an_spdx_expression() {
        let text = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: x\n\nFiles: *\nCopyright: 2000 A\nLicense: GPL-2+ or Artistic\n\nFiles: debian/*\nCopyright: 2001 B\nLicense: Expat\n\nLicense: Expat\n Permission is hereby granted\n\nFiles: contrib/*\nLicense: GPL-2+ with OpenSSL exception\n";
        let (expr, refs) = licences(text).unwrap();
        assert_eq!(
            expr,
            "(GPL-2.0-or-later OR Artistic-1.0-Perl) AND LicenseRef-GPL-2-with-OpenSSL-exception AND MIT"
        );
        assert_eq!(
            refs.into_iter().collect::<Vec<_>>(),
            ["LicenseRef-GPL-2-with-OpenSSL-exception"]
        );
        // A word of a line that becomes one LicenseRef is no licence of
        // its own.
        let (expr, refs) = licences("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nLicense: GPL-2+ with Autoconf exception\n\nFiles: m4/*\nLicense: FSFULLR\n").unwrap();
        assert_eq!(
            expr,
            "LicenseRef-FSFULLR AND LicenseRef-GPL-2-with-Autoconf-exception"
        );
        assert_eq!(
            refs.into_iter().collect::<Vec<_>>(),
            [
                "LicenseRef-FSFULLR",
                "LicenseRef-GPL-2-with-Autoconf-exception"
            ]
        );
        assert_eq!(licences("This is free software.\n"), None);
        assert_eq!(
            licences("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nLicense: public-domain\n").unwrap().0,
            "LicenseRef-public-domain"
        );
    }
}
