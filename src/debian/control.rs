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
    let mut reader = Reader::new(text);
    let mut p = Paragraph {
        line: 0,
        fields: Vec::new(),
    };
    let mut out = Vec::new();
    while reader.next_into(&mut p)? {
        out.push(p.clone());
    }
    Ok(out)
}

/// Reads paragraphs one at a time into a reused buffer: a `Packages` index
/// (~60k paragraphs) is parsed without holding every paragraph at once.
struct Reader<'a> {
    text: &'a str,
    /// Where the next line starts, and the number of lines read.
    pos: usize,
    line: usize,
}

impl<'a> Reader<'a> {
    fn new(text: &'a str) -> Self {
        Reader {
            text,
            pos: 0,
            line: 0,
        }
    }

    /// Reads the next paragraph into `p`: false once the text is done.
    fn next_into(&mut self, p: &mut Paragraph<'a>) -> Result<bool, ControlError> {
        p.fields.clear();
        let text = self.text;
        let bytes = text.as_bytes();
        let mut started = false;
        // The field being read: its name, value start offset, line, and the
        // offset where its value ends so far.
        let mut open: Option<(&'a str, usize, usize, usize)> = None;
        while self.pos < text.len() {
            let pos = self.pos;
            self.line += 1;
            let line = self.line;
            let end = find_byte(bytes, pos, b'\n').unwrap_or(text.len());
            self.pos = (end + 1).min(text.len());
            let raw = &text[pos..end];
            let content = raw.strip_suffix('\r').unwrap_or(raw);
            let first = bytes[pos];
            if blank(first, content) {
                close_field(&mut open, p, text);
                if started {
                    return Ok(true);
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
                close_field(&mut open, p, text);
                // `:` is ASCII: a byte search finds what `find(':')` would.
                let Some(colon) = content.bytes().position(|b| b == b':') else {
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
                if !started {
                    started = true;
                    p.line = line;
                }
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
        }
        close_field(&mut open, p, text);
        Ok(started)
    }
}

/// Whether a line (without its line ending) is blank, `first` being its
/// first byte: most lines start with a field name, which settles it
/// without trimming. Unicode whitespace counts, as `str::trim` has it.
fn blank(first: u8, content: &str) -> bool {
    let maybe = first >= 0x80 || matches!(first, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    maybe && content.trim().is_empty()
}

fn close_field<'a>(
    open: &mut Option<(&'a str, usize, usize, usize)>,
    p: &mut Paragraph<'a>,
    text: &'a str,
) {
    if let Some((name, start, line, end)) = open.take() {
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
    parse_counting(text).0
}

/// [`parse_packages`], and the lines read: all of them unless it failed.
fn parse_counting(text: &str) -> (Result<Vec<Package>, ControlError>, usize) {
    let mut reader = Reader::new(text);
    let result = read_packages(&mut reader);
    (result, reader.line)
}

fn read_packages(reader: &mut Reader<'_>) -> Result<Vec<Package>, ControlError> {
    let mut p = Paragraph {
        line: 0,
        fields: Vec::with_capacity(32),
    };
    let mut out = Vec::new();
    while reader.next_into(&mut p)? {
        match package(&p, true) {
            Ok(pkg) => out.push(pkg),
            Err(e) => {
                // A syntax error anywhere in the text is reported before
                // any paragraph's bad field.
                while reader.next_into(&mut p)? {}
                return Err(e);
            }
        }
    }
    Ok(out)
}

/// [`parse_packages`] on up to `threads` threads, for a large index: the
/// text is cut at blank lines into parts of at least [`MIN_PART`] bytes.
/// The result, errors and their lines included, is the same.
pub fn parse_packages_in(text: &str, threads: usize) -> Result<Vec<Package>, ControlError> {
    parse_in_parts(text, threads.clamp(1, text.len() / MIN_PART + 1))
}

fn parse_in_parts(text: &str, n: usize) -> Result<Vec<Package>, ControlError> {
    let ranges = split_paragraphs(text, n);
    if ranges.len() == 1 {
        return parse_packages(text);
    }
    let parts = std::thread::scope(|s| {
        let rest: Vec<_> = ranges[1..]
            .iter()
            .map(|&(start, end)| s.spawn(move || Part::parse(&text[start..end])))
            .collect();
        let first = Part::parse(&text[ranges[0].0..ranges[0].1]);
        std::iter::once(first)
            .chain(rest.into_iter().map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            }))
            .collect()
    });
    join_parts(parts)
}

/// Below this a part is not worth a thread (a `Packages` index of 10k
/// packages is ~8 MB).
pub const MIN_PART: usize = 4 << 20;

/// `text` as up to `n` byte ranges of about equal size, each cut just
/// after a line end that a blank line follows: no paragraph spans two, and
/// each part parses as it would within the whole.
fn split_paragraphs(text: &str, n: usize) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut parts = Vec::with_capacity(n);
    let mut start = 0;
    for k in 1..n {
        let mut at = (text.len() * k / n).max(start);
        let cut = loop {
            let Some(i) = find_byte(bytes, at, b'\n') else {
                break None;
            };
            if blank_follows(bytes, i) {
                break Some(i + 1);
            }
            at = i + 1;
        };
        let Some(cut) = cut else { break };
        parts.push((start, cut));
        start = cut;
    }
    parts.push((start, text.len()));
    parts
}

/// Where `bytes` (the start of a deb822 text) can be cut so that both
/// sides parse as within the whole: just after its last line end that a
/// blank line follows. The second side starts with that blank line.
pub fn last_cut(bytes: &[u8]) -> Option<usize> {
    let mut end = bytes.len();
    while let Some(i) = bytes[..end].iter().rposition(|&b| b == b'\n') {
        if blank_follows(bytes, i) {
            return Some(i + 1);
        }
        end = i;
    }
    None
}

/// Whether the line after the line end at `i` is there and empty.
fn blank_follows(bytes: &[u8], i: usize) -> bool {
    let next = &bytes[i + 1..];
    next.starts_with(b"\n") || next.starts_with(b"\r\n")
}

/// A part of a `Packages` index (cut as [`last_cut`] does) parsed on its
/// own: [`join_parts`] makes of the parts what the whole text would give.
#[derive(Debug)]
pub struct Part {
    /// Its packages, or the error [`parse_packages`] reports for it, with
    /// lines counted from the part's start.
    result: Result<Vec<Package>, ControlError>,
    /// Its line ends: the lines before the next part.
    lines: usize,
}

impl Part {
    pub fn parse(text: &str) -> Part {
        let (result, read) = parse_counting(text);
        // A text that ends a line and parsed has as many line ends as
        // lines read (counting them costs ~5% of a parse); any other (one
        // that failed, or a last part) is counted.
        let lines = match result {
            Ok(_) if text.ends_with('\n') => read,
            _ => count(text, b'\n'),
        };
        Part { result, lines }
    }
}

/// The packages of `parts` (in order), or the error [`parse_packages`]
/// gives for their text as a whole.
pub fn join_parts(parts: Vec<Part>) -> Result<Vec<Package>, ControlError> {
    // One pass over the whole text reports its first syntax error, else
    // its first bad field: the first part with a syntax error has the
    // first one, else the first part with an error has the first.
    let error = parts
        .iter()
        .position(|p| matches!(p.result, Err(ControlError::Syntax { .. })))
        .or_else(|| parts.iter().position(|p| p.result.is_err()));
    if let Some(k) = error {
        let before: usize = parts[..k].iter().map(|p| p.lines).sum();
        let Some(Part { result: Err(e), .. }) = parts.into_iter().nth(k) else {
            unreachable!("position found an error");
        };
        return Err(e.after_lines(before));
    }
    let mut parts: Vec<Vec<Package>> = parts.into_iter().flat_map(|p| p.result).collect();
    if parts.len() == 1 {
        return Ok(parts.remove(0));
    }
    let mut out = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    for packages in parts {
        out.extend(packages);
    }
    Ok(out)
}

impl ControlError {
    /// The error of a part of a text that starts after `lines` lines.
    fn after_lines(mut self, lines: usize) -> ControlError {
        match &mut self {
            ControlError::Syntax { line, .. }
            | ControlError::Missing { line, .. }
            | ControlError::Field { line, .. } => *line += lines,
        }
        self
    }
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

/// `name`'s index in [`KNOWN`], ignoring case. The length picks the few
/// candidates: most of a paragraph's ~20 fields are compared with none.
fn known_slot(name: &str) -> Option<usize> {
    let candidates: &[usize] = match name.len() {
        4 => &[14],
        6 => &[12, 10, 15],
        7 => &[0, 1, 7],
        8 => &[5, 11, 13],
        9 => &[4, 9],
        10 => &[3, 8],
        11 => &[6],
        12 => &[2],
        _ => &[],
    };
    candidates
        .iter()
        .copied()
        .find(|&i| KNOWN[i].eq_ignore_ascii_case(name))
}

impl<'p, 'a> Known<'p, 'a> {
    fn of(p: &'p Paragraph<'a>) -> Self {
        let mut k = Known::default();
        for f in &p.fields {
            if let Some(i) = known_slot(f.name) {
                k.slots[i] = Some(f);
            }
        }
        k
    }

    fn get(&self, name: &str) -> Option<&'p Field<'a>> {
        self.slots[known_slot(name)?]
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
    let Some(field) = f else {
        return Ok(Vec::new());
    };
    // The common case parses straight into the list; a `|` goes the long
    // way, which reports what it always has (a bad name after the `|`
    // group comes first).
    let mut out = Vec::with_capacity(count(field.value, b',') + 1);
    for group in split_ascii(field.value, b',') {
        if group.trim().is_empty() {
            continue;
        }
        if group.as_bytes().contains(&b'|') {
            return flat_field_checked(f);
        }
        out.push(parse_dep(group).map_err(|reason| bad(f, field.name, &reason))?);
    }
    Ok(out)
}

fn flat_field_checked(f: Option<&Field<'_>>) -> Result<Vec<Dep>, ControlError> {
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
    // `flat_field`'s quick way; anything unusual (a version other than `=`,
    // any error) takes the long way, which reports what it always has.
    match flat_field(f) {
        Ok(deps)
            if deps
                .iter()
                .all(|d| matches!(d.version, None | Some((Relation::Eq, _)))) =>
        {
            Ok(deps
                .into_iter()
                .map(|d| Provide {
                    name: d.name,
                    version: d.version.map(|(_, v)| v),
                })
                .collect())
        }
        _ => provides_field_checked(f),
    }
}

fn provides_field_checked(f: Option<&Field<'_>>) -> Result<Vec<Provide>, ControlError> {
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

/// The first `needle` in `bytes` from `from` on, eight bytes at a time:
/// lines are short, and `str::find` spends more setting up than searching.
fn find_byte(bytes: &[u8], from: usize, needle: u8) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let pattern = ONES * u64::from(needle);
    let mut i = from;
    while let Some(word) = bytes.get(i..i + 8) {
        let x = u64::from_le_bytes(word.try_into().unwrap_or_default()) ^ pattern;
        // The lowest byte of `x` that is zero sets its high bit here (a
        // borrow only marks bytes above one that is).
        let zero = x.wrapping_sub(ONES) & !x & HIGHS;
        if zero != 0 {
            return Some(i + zero.trailing_zeros() as usize / 8);
        }
        i += 8;
    }
    bytes[i.min(bytes.len())..]
        .iter()
        .position(|&b| b == needle)
        .map(|j| i + j)
}

/// `s.split(sep)` for an ASCII `sep`, by a byte search.
fn split_ascii(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let r = rest?;
        match find_byte(r.as_bytes(), 0, sep) {
            Some(i) => {
                rest = Some(&r[i + 1..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

fn count(s: &str, b: u8) -> usize {
    s.bytes().filter(|&c| c == b).count()
}

/// Parses a relationship field: `a (>= 1) | b:any, c [amd64] <!nocheck>`.
/// Architecture and build-profile restrictions are skipped.
pub fn parse_relations(value: &str) -> Result<Vec<Alternatives>, String> {
    // Sized exactly: ~60k packages keep these lists, and most groups have
    // one alternative (a growing Vec would reserve four).
    let mut out = Vec::with_capacity(count(value, b',') + 1);
    for group in split_ascii(value, b',') {
        if group.trim().is_empty() {
            // dpkg tolerates a trailing comma; so does apt.
            continue;
        }
        let mut alts = Vec::with_capacity(count(group, b'|') + 1);
        for d in split_ascii(group, b'|') {
            alts.push(parse_dep(d)?);
        }
        out.push(alts);
    }
    Ok(out)
}

/// Parses one `name:arch (op version)` with optional restrictions after it.
pub fn parse_dep(text: &str) -> Result<Dep, String> {
    let s = text.trim();
    // Names are scanned and checked in one pass, unless something unusual
    // (a second `:`, a bad or non-ASCII byte) needs the general way.
    let (name_end, colon, valid) = match scan_name(s) {
        Some((end, colon)) => (end, colon, true),
        None => {
            let end = name_end(s);
            (end, s[..end].bytes().position(|b| b == b':'), false)
        }
    };
    let (full, mut rest) = (&s[..name_end], s[name_end..].trim_start());
    let (name, arch) = match colon {
        Some(i) => (&full[..i], Some(&full[i + 1..])),
        None => (full, None),
    };
    if name.is_empty() || !(valid || name.bytes().all(valid_name_byte)) {
        return Err(format!("bad package name {full:?}"));
    }
    if arch.is_some_and(|a| a.is_empty() || !(valid || a.bytes().all(valid_name_byte))) {
        return Err(format!("bad architecture qualifier in {full:?}"));
    }
    let mut version = None;
    if let Some(r) = rest.strip_prefix('(') {
        let Some(close) = find_byte(r.as_bytes(), 0, b')') else {
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

/// Where `s`'s `name[:arch]` ends, and its `:`, when both parts are
/// valid name bytes and what ends them is ASCII: [`name_end`] otherwise.
fn scan_name(s: &str) -> Option<(usize, Option<usize>)> {
    let mut colon = None;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        if valid_name_byte(b) {
            continue;
        }
        if b == b':' && colon.is_none() {
            colon = Some(i);
            continue;
        }
        return matches!(
            b,
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | b'(' | b'[' | b'<'
        )
        .then_some((i, colon));
    }
    Some((s.len(), colon))
}

/// Where a dependency's `name[:arch]` ends: at whitespace, `(`, `[` or
/// `<`. Bytes while the text is ASCII; from the first other byte on,
/// chars, so that Unicode whitespace still ends it.
fn name_end(s: &str) -> usize {
    let ends = |c: char| c.is_whitespace() || matches!(c, '(' | '[' | '<');
    for (i, &b) in s.as_bytes().iter().enumerate() {
        if b >= 0x80 {
            return s[i..].find(ends).map_or(s.len(), |j| i + j);
        }
        if ends(char::from(b)) {
            return i;
        }
    }
    s.len()
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

    #[test]
    fn dependency_names_unusual_and_wrong() {
        let ok = |t: &str| parse_dep(t).unwrap();
        assert_eq!(ok("A+b.c_d-e"), dep("A+b.c_d-e", None, None));
        assert_eq!(ok("a:any"), dep("a", Some("any"), None));
        assert_eq!(ok("a:amd64 [x] <y>"), dep("a", Some("amd64"), None));
        // Unicode whitespace ends a name too.
        assert_eq!(
            ok("a\u{a0}(>= 1)"),
            dep("a", None, Some((Relation::GreaterEq, "1")))
        );
        assert_eq!(
            ok("\u{2003}b:any\u{2003}(=2)"),
            dep("b", Some("any"), Some((Relation::Eq, "2")))
        );
        let err = |t: &str| parse_dep(t).unwrap_err();
        assert_eq!(err("a:b:c"), r#"bad architecture qualifier in "a:b:c""#);
        assert_eq!(err(":amd64"), r#"bad package name ":amd64""#);
        assert_eq!(err("a:"), r#"bad architecture qualifier in "a:""#);
        assert_eq!(err("a!b (>= 1)"), r#"bad package name "a!b""#);
        assert_eq!(err("caf\u{e9}"), r#"bad package name "café""#);
        assert_eq!(err(""), r#"bad package name """#);
        assert_eq!(err("a:x\u{e9}"), r#"bad architecture qualifier in "a:xé""#);
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
    fn parts_parse_as_the_whole() {
        // Paragraphs of every shape, CRLF and comments included, cut at
        // every possible number of parts.
        let mut text = String::new();
        for i in 0..40 {
            let p = PACKAGES.replace("libfoo1", &format!("libfoo{i}"));
            if i % 7 == 3 {
                text.push_str(&p.replace('\n', "\r\n"));
            } else {
                text.push_str(&p);
            }
            text.push_str(if i % 5 == 0 { "\n# note\n \t\n" } else { "\n" });
        }
        let whole = parse_packages(&text).unwrap();
        assert_eq!(whole.len(), 80);
        for n in 1..=9 {
            let parts = split_paragraphs(&text, n);
            assert_eq!(parts.len(), n, "{n}");
            assert_eq!(parse_in_parts(&text, n).unwrap(), whole, "{n} parts");
        }
        // Errors: the first syntax error wins over an earlier bad field,
        // and lines count from the start of the whole text.
        let lines = |t: &str, needle: &str| t[..t.find(needle).unwrap()].matches('\n').count() + 1;
        let mut bad = text.clone();
        let at = bad.find("libfoo30\n").unwrap();
        bad.insert_str(at + "libfoo30\n".len(), "oops\n");
        let at = bad.find("Size: 1234\n").unwrap() + 6;
        bad.replace_range(at..at + 4, "many");
        let want = parse_packages(&bad).unwrap_err();
        assert!(
            matches!(want, ControlError::Syntax { line, .. } if line == lines(&bad, "oops")),
            "{want}"
        );
        let field_only = bad.replace("oops\n", "");
        let want_field = parse_packages(&field_only).unwrap_err();
        assert!(
            matches!(want_field, ControlError::Field { .. }),
            "{want_field}"
        );
        for n in 1..=9 {
            assert_eq!(
                parse_in_parts(&bad, n).unwrap_err().to_string(),
                want.to_string()
            );
            assert_eq!(
                parse_in_parts(&field_only, n).unwrap_err().to_string(),
                want_field.to_string()
            );
        }
    }

    #[test]
    fn byte_search_and_split() {
        let text = "abcdefghij\nklmnopqrstuvwxyz,\n\u{e9}\n";
        for from in 0..text.len() {
            for needle in [b'\n', b',', b'a', b'z', 0xa9] {
                assert_eq!(
                    find_byte(text.as_bytes(), from, needle),
                    text.as_bytes()[from..]
                        .iter()
                        .position(|&b| b == needle)
                        .map(|i| from + i),
                    "{from} {needle}"
                );
            }
        }
        for s in ["", ",", "a,b,,c,", "no separator", ",lead", "a|b, c | d"] {
            assert_eq!(
                split_ascii(s, b',').collect::<Vec<_>>(),
                s.split(',').collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn parts_cut_at_the_last_blank_line() {
        let text = PACKAGES.replace('\n', "\r\n") + "\r\n" + PACKAGES + "\n# c\nPackage: x";
        let mut parts = Vec::new();
        let mut rest = text.as_str();
        // Cut from the end, as a stream of parts would be.
        while let Some(cut) = last_cut(rest.as_bytes()) {
            parts.insert(0, Part::parse(&rest[cut..]));
            rest = &rest[..cut];
        }
        parts.insert(0, Part::parse(rest));
        assert_eq!(parts.len(), 5);
        let whole = parse_packages(&text);
        let joined = join_parts(parts);
        assert_eq!(
            joined.unwrap_err().to_string(),
            whole.unwrap_err().to_string()
        );
        assert_eq!(last_cut(b"Package: a\n"), None);
        assert_eq!(last_cut(b"a\n\nb\n\nc"), Some(5));
        assert_eq!(last_cut(b"a\n\n"), Some(2));
    }

    #[test]
    fn one_paragraph_is_not_cut() {
        assert_eq!(split_paragraphs("Package: a\nVersion: 1\n", 4).len(), 1);
        assert_eq!(
            parse_packages_in(PACKAGES, 8).unwrap(),
            parse_packages(PACKAGES).unwrap()
        );
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

    /// Indexes and status files come from the network and the disk: no
    /// input makes a parser panic; each parses or gives its typed error.
    mod props {
        use super::super::*;
        use crate::mutate;
        use proptest::prelude::*;

        const STATUS: &str = "Package: a\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\nDepends: b (>= 1) | c:any\nProvides: d (= 2)\n\nPackage: b\nStatus: deinstall ok config-files\nVersion: 2\nArchitecture: amd64\n";

        fn all_parsers(bytes: &[u8]) {
            let text = String::from_utf8_lossy(bytes);
            let _ = paragraphs(&text).map(|ps| {
                for p in &ps {
                    for f in &p.fields {
                        let _ = value_lines(f.value).count();
                        let _ = p.line_of(f.name);
                    }
                }
            });
            let _ = parse_packages(&text);
            let _ = parse_packages_in(&text, 3);
            let _ = parse_control(&text);
            let _ = parse_status(&text);
            let _ = last_cut(bytes);
            for line in text.lines() {
                let value = line.split_once(':').map_or(line, |(_, v)| v);
                let _ = parse_relations(value);
                let _ = parse_dep(value);
            }
        }

        proptest! {
            #![proptest_config(mutate::config())]

            #[test]
            fn arbitrary_bytes(bytes in mutate::bytes(512)) {
                all_parsers(&bytes);
            }

            #[test]
            fn mutated_packages(bytes in mutate::mutated(super::PACKAGES.as_bytes().to_vec())) {
                all_parsers(&bytes);
            }

            #[test]
            fn mutated_status(bytes in mutate::mutated(STATUS.as_bytes().to_vec())) {
                all_parsers(&bytes);
            }

            #[test]
            fn relations_of_relation_bytes(value in "[a-z0-9:|,()<>=!\\[\\] \t\n.+~-]{0,80}") {
                let _ = parse_relations(&value);
                let _ = parse_dep(&value);
            }
        }
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
