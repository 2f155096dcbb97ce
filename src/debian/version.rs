//! Debian version order, exactly as dpkg's `verrevcmp`:
//! `[epoch:]upstream[-revision]`, compared part by part.
//!
//! `compare` is total on any string (dpkg compares malformed versions
//! too, with a warning); `validate` is for versions a user types.
use std::cmp::Ordering;

use super::package::Relation;

/// Why a version a user wrote is not a Debian version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("version is empty")]
    Empty,
    #[error("version {0:?} contains whitespace")]
    Whitespace(String),
    #[error("version {0:?}: the epoch must be a number below 2^31")]
    BadEpoch(String),
    #[error("version {0:?}: the upstream version is empty")]
    EmptyUpstream(String),
    #[error("version {0:?}: the upstream version must start with a digit")]
    UpstreamNotDigit(String),
    #[error("version {0:?}: the revision after the last '-' is empty")]
    EmptyRevision(String),
    #[error("version {version:?}: invalid character {ch:?} in the {part}")]
    BadChar {
        version: String,
        ch: char,
        part: &'static str,
    },
}

/// The three parts of a version. A missing epoch is `""`, which compares
/// equal to `"0"`; a missing revision is `""`, equal to `"0"` as in dpkg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts<'a> {
    pub epoch: &'a str,
    pub upstream: &'a str,
    pub revision: &'a str,
}

/// Splits as dpkg does: the epoch ends at the first `:`, the revision
/// starts after the last `-`.
pub fn split(version: &str) -> Parts<'_> {
    let v = version.trim();
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) => (e, r),
        None => ("", v),
    };
    let (upstream, revision) = match rest.rsplit_once('-') {
        Some((u, r)) => (u, r),
        None => (rest, ""),
    };
    Parts {
        epoch,
        upstream,
        revision,
    }
}

/// Orders two versions as `dpkg --compare-versions` does.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (a, b) = (split(a), split(b));
    // An epoch is all digits, which verrevcmp compares numerically with no
    // width limit; dpkg would reject a non-numeric one, we just stay total.
    verrevcmp(a.epoch, b.epoch)
        .then_with(|| verrevcmp(a.upstream, b.upstream))
        .then_with(|| verrevcmp(a.revision, b.revision))
}

/// Whether `version` satisfies `rel wanted`, e.g. `(>= 1.2-1)`.
pub fn satisfies(version: &str, rel: Relation, wanted: &str) -> bool {
    let ord = compare(version, wanted);
    match rel {
        Relation::Less => ord == Ordering::Less,
        Relation::LessEq => ord != Ordering::Greater,
        Relation::Eq => ord == Ordering::Equal,
        Relation::GreaterEq => ord != Ordering::Less,
        Relation::Greater => ord == Ordering::Greater,
    }
}

/// Checks a version a user wrote (a `name=version` pin) as strictly as
/// dpkg's parser, turning its warnings (no leading digit, odd characters)
/// into errors: a pin must name a real archive version anyway.
pub fn validate(version: &str) -> Result<(), VersionError> {
    let owned = || version.to_string();
    if version.trim().is_empty() {
        return Err(VersionError::Empty);
    }
    if version.trim().chars().any(char::is_whitespace) {
        return Err(VersionError::Whitespace(owned()));
    }
    let parts = split(version);
    if version.contains(':')
        && (parts.epoch.is_empty()
            || !parts.epoch.bytes().all(|c| c.is_ascii_digit())
            || parts
                .epoch
                .parse::<u64>()
                .map_or(true, |e| e > i32::MAX as u64))
    {
        return Err(VersionError::BadEpoch(owned()));
    }
    if parts.upstream.is_empty() {
        return Err(VersionError::EmptyUpstream(owned()));
    }
    if !parts.upstream.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(VersionError::UpstreamNotDigit(owned()));
    }
    if version.contains('-') && parts.revision.is_empty() {
        return Err(VersionError::EmptyRevision(owned()));
    }
    let check = |s: &str, extra: &str, part: &'static str| match s
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || extra.contains(c)))
    {
        Some(ch) => Err(VersionError::BadChar {
            version: owned(),
            ch,
            part,
        }),
        None => Ok(()),
    };
    check(parts.upstream, ".-+~:", "upstream version")?;
    check(parts.revision, ".+~", "revision")
}

/// dpkg's character weight: `~` below the end of the string, the end
/// (and digits, which never reach here) at 0, letters by ASCII, anything
/// else after all letters.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(b'~') => -1,
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp`: alternate non-digit runs (by `order`) and digit
/// runs (numerically, compared as strings so any length works).
fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let (ac, bc) = (order(a.get(i).copied()), order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(a, i) && digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn classic_cases() {
        use Ordering::*;
        let cases = [
            ("1.0~rc1", "1.0", Less),
            ("1.0~~", "1.0~", Less),
            ("1.0~", "1.0", Less),
            ("1:0.1", "2.0", Greater),
            ("0:1.0", "1.0", Equal),
            ("1.0-1", "1.0-1.1", Less),
            ("1.0a", "1.0+", Less),
            ("1.0", "1.0a", Less),
            ("1.0", "1.0-0", Equal),
            ("1.01", "1.1", Equal),
            ("1.10", "1.9", Greater),
            ("2.30-1", "2.3-1", Greater),
            ("1-2-3", "1-2-4", Less),
            ("1.0-1", "1.0-1~bpo1", Greater),
            (
                "99999999999999999999999",
                "99999999999999999999998",
                Greater,
            ),
            ("1:1", "00000000000000000000001:1", Equal),
            ("A", "a", Less),
            ("1.2.3", "1.2.3.0", Less),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare(a, b), want, "{a} vs {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
        }
        assert!(satisfies("76.1-1", Relation::GreaterEq, "76.1-1"));
        assert!(!satisfies("74.2-1", Relation::GreaterEq, "76.1-1"));
        assert!(satisfies("1.0", Relation::Less, "1.0.1"));
        assert!(!satisfies("1.0", Relation::Greater, "1.0-0"));
        assert!(satisfies("1.0", Relation::LessEq, "1.0-0"));
    }

    #[test]
    fn validation() {
        for ok in [
            "1.0",
            "1:2.3-4",
            "2.36-9+deb12u10",
            "1.0~rc1+dfsg-1~bpo12+1",
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate(""), Err(VersionError::Empty));
        assert!(matches!(validate("1 0"), Err(VersionError::Whitespace(_))));
        assert!(matches!(validate("a:1"), Err(VersionError::BadEpoch(_))));
        assert!(matches!(validate(":1"), Err(VersionError::BadEpoch(_))));
        assert!(matches!(
            validate("99999999999:1"),
            Err(VersionError::BadEpoch(_))
        ));
        assert!(matches!(
            validate("1:"),
            Err(VersionError::EmptyUpstream(_))
        ));
        assert!(matches!(
            validate("-1"),
            Err(VersionError::EmptyUpstream(_))
        ));
        assert!(matches!(
            validate("1.0-"),
            Err(VersionError::EmptyRevision(_))
        ));
        assert!(matches!(
            validate("v1.0"),
            Err(VersionError::UpstreamNotDigit(_))
        ));
        assert!(matches!(
            validate("1.0_1"),
            Err(VersionError::BadChar { ch: '_', .. })
        ));
        assert!(matches!(
            validate("1.0-1=2"),
            Err(VersionError::BadChar {
                ch: '=',
                part: "revision",
                ..
            })
        ));
    }

    /// A small deterministic generator (xorshift): no `rand` dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick(&mut self, from: &[u8]) -> char {
            char::from(from[(self.next() % from.len() as u64) as usize])
        }
        fn chance(&mut self, in_n: u64) -> bool {
            self.next().is_multiple_of(in_n)
        }
    }

    fn gen_part(rng: &mut Rng, alphabet: &[u8], len: u64) -> String {
        let mut s = String::new();
        for _ in 0..=rng.next() % len {
            if rng.chance(3) {
                // Digit runs with leading zeros and beyond u64.
                let n = if rng.chance(10) {
                    25
                } else {
                    1 + rng.next() % 3
                };
                for _ in 0..n {
                    s.push(rng.pick(b"0019"));
                }
            } else {
                s.push(rng.pick(alphabet));
            }
        }
        s
    }

    fn gen_version(rng: &mut Rng) -> String {
        let mut v = String::new();
        if rng.chance(4) {
            v.push_str(&format!("{}:", rng.next() % 3));
        }
        v.push(rng.pick(b"0129"));
        v.push_str(&gen_part(rng, b"01.+~aZz", 6));
        if rng.chance(2) {
            v.push('-');
            v.push(rng.pick(b"01"));
            v.push_str(&gen_part(rng, b"0.+~b", 4));
        }
        v
    }

    /// Mostly near-equal pairs, which exercise the interesting branches.
    fn gen_pair(rng: &mut Rng) -> (String, String) {
        let a = gen_version(rng);
        let b = match rng.next() % 4 {
            0 => gen_version(rng),
            1 => format!("{a}{}", rng.pick(b"~0a.+1")),
            2 => {
                let mut b: Vec<char> = a.chars().collect();
                let k = (rng.next() % b.len() as u64) as usize;
                b[k] = rng.pick(b"0~1a.+");
                let b: String = b.into_iter().collect();
                // Keep it parseable by dpkg: no empty parts.
                if validate(&b).is_ok() { b } else { a.clone() }
            }
            _ => a.replacen('0', "00", 1),
        };
        (a, b)
    }

    fn dpkg_says(a: &str, op: &str, b: &str) -> bool {
        Command::new("dpkg")
            .args(["--compare-versions", a, op, b])
            .status()
            .expect("dpkg runs")
            .success()
    }

    #[test]
    fn agrees_with_dpkg() {
        if Command::new("dpkg").arg("--version").output().is_err() {
            eprintln!("skipping: dpkg is not installed");
            return;
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut checked = 0;
        let mut seen = [0; 3];
        while checked < 400 {
            let (a, b) = gen_pair(&mut rng);
            assert_eq!(validate(&a), Ok(()), "generated {a:?}");
            if validate(&b).is_err() {
                continue;
            }
            let want = if dpkg_says(&a, "lt", &b) {
                Ordering::Less
            } else if dpkg_says(&a, "eq", &b) {
                Ordering::Equal
            } else {
                Ordering::Greater
            };
            assert_eq!(compare(&a, &b), want, "{a:?} vs {b:?}");
            seen[(want as i8 + 1) as usize] += 1;
            checked += 1;
        }
        // The generator must exercise all three outcomes, equality included.
        assert!(seen.iter().all(|&n| n >= 20), "{seen:?}");
    }
}
