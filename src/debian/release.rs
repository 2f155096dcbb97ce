//! Trust in an archive: the OpenPGP clear-signed `InRelease` file, checked
//! against keyring files in Rust, and the `Release` fields it vouches for.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pgp::composed::{CleartextSignedMessage, Deserializable, SignedPublicKey, SignedPublicSubKey};
use pgp::packet::{Signature, SignatureType, SubpacketData};
use pgp::types::{KeyDetails, Tag};

use super::control::{self, ControlError, value_lines};

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("keyring {name}: {reason}")]
    Keyring { name: String, reason: String },
    #[error("not an OpenPGP clear-signed message: {reason}")]
    NotSigned { reason: String },
    #[error("the message carries no signature")]
    NoSignature,
    #[error("signed by key {} which is in none of the keyrings {}", key_ids.join(", "), keyrings.join(", "))]
    UnknownKey {
        key_ids: Vec<String>,
        keyrings: Vec<String>,
    },
    #[error("bad signature by key {key}: {reason}")]
    BadSignature { key: String, reason: String },
    #[error("the signing key {key} is not usable at {}: {reason}", format_date(*now))]
    KeyNotValid {
        key: String,
        now: i64,
        reason: String,
    },
    #[error("expired: valid until {}, now is {}", format_date(*valid_until), format_date(*now))]
    Expired { valid_until: i64, now: i64 },
    #[error("the Release file lacks the {field} field")]
    Missing { field: &'static str },
    #[error("{field}: {reason}: {value:?}")]
    Field {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error(transparent)]
    Control(#[from] ControlError),
}

/// Public keys trusted to sign archives, and the files they came from.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: Vec<SignedPublicKey>,
    names: Vec<String>,
}

impl Keyring {
    /// Loads keyring files: binary (`.gpg`, several keys back to back) or
    /// ASCII-armored (`.asc`).
    pub fn load<P: AsRef<Path>>(paths: &[P]) -> Result<Keyring, ReleaseError> {
        let mut k = Keyring::default();
        for p in paths {
            k.add_file(p.as_ref())?;
        }
        Ok(k)
    }

    pub fn add_file(&mut self, path: &Path) -> Result<(), ReleaseError> {
        let data = std::fs::read(path).map_err(|source| ReleaseError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        self.add_bytes(&data, &path.display().to_string())
    }

    /// Adds keys from binary or armored bytes; `name` stands for them in
    /// messages.
    pub fn add_bytes(&mut self, data: &[u8], name: &str) -> Result<(), ReleaseError> {
        let bad = |e: pgp::errors::Error| ReleaseError::Keyring {
            name: name.to_string(),
            reason: e.to_string(),
        };
        let armored = data.trim_ascii_start().starts_with(b"-----BEGIN");
        let parsed: Vec<_> = if armored {
            SignedPublicKey::from_armor_many(data)
                .map_err(bad)?
                .0
                .collect()
        } else {
            SignedPublicKey::from_bytes_many(data)
                .map_err(bad)?
                .collect()
        };
        let before = self.keys.len();
        let mut first_error = None;
        for k in parsed {
            // One key of an algorithm rpgp lacks must not hide the others.
            match k {
                Ok(k) => self.keys.push(k),
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        if self.keys.len() == before {
            return Err(ReleaseError::Keyring {
                name: name.to_string(),
                reason: first_error.map_or("holds no public key".into(), |e| e.to_string()),
            });
        }
        self.names.push(name.to_string());
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The files (or names) the keys came from.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Upper-case fingerprints of the primary keys.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| format!("{:X}", k.primary_key.fingerprint()))
            .collect()
    }
}

/// One file a Release lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

/// The fields of a `Release` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub origin: String,
    pub label: String,
    pub suite: String,
    pub codename: String,
    /// Unix seconds.
    pub date: i64,
    pub valid_until: Option<i64>,
    pub architectures: Vec<String>,
    pub components: Vec<String>,
    pub acquire_by_hash: bool,
    /// Path below `dists/<suite>/` → size and SHA256.
    pub sha256: BTreeMap<String, FileEntry>,
    /// Upper-case fingerprint of the key whose signature was accepted;
    /// empty for a Release parsed without verification.
    pub signed_by: String,
}

/// Verifies a clear-signed `InRelease` against the keyring and parses it.
/// Debian signs with several keys at once: one good signature by a usable
/// keyring key is enough. `now` is unix seconds.
pub fn verify_inrelease(text: &str, keyring: &Keyring, now: i64) -> Result<Release, ReleaseError> {
    let (msg, _) =
        CleartextSignedMessage::from_string(text).map_err(|e| ReleaseError::NotSigned {
            reason: e.to_string(),
        })?;
    if msg.signatures().is_empty() {
        return Err(ReleaseError::NoSignature);
    }
    let signed = msg.signed_text();
    let mut unknown = Vec::new();
    let mut failure = None;
    let mut accepted = None;
    'sigs: for sig in msg.signatures() {
        let ids = issuer_ids(sig);
        let candidates = signers(keyring, sig);
        if candidates.is_empty() {
            unknown.extend(ids);
            continue;
        }
        for (primary, sub) in candidates {
            let verified = match sub {
                Some(s) => sig.verify(&s.key, signed.as_bytes()),
                None => sig.verify(&primary.primary_key, signed.as_bytes()),
            };
            let key = match sub {
                Some(s) => format!("{:X}", s.key.fingerprint()),
                None => format!("{:X}", primary.primary_key.fingerprint()),
            };
            if let Err(e) = verified {
                failure = Some(ReleaseError::BadSignature {
                    key,
                    reason: e.to_string(),
                });
                continue;
            }
            match usable(primary, sub, now) {
                Ok(()) => {
                    accepted = Some(format!("{:X}", primary.primary_key.fingerprint()));
                    break 'sigs;
                }
                Err(reason) => {
                    // A bad signature says more than an unusable key.
                    if !matches!(failure, Some(ReleaseError::BadSignature { .. })) {
                        failure = Some(ReleaseError::KeyNotValid { key, now, reason });
                    }
                }
            }
        }
    }
    let Some(signed_by) = accepted else {
        return Err(failure.unwrap_or(ReleaseError::UnknownKey {
            key_ids: unknown,
            keyrings: keyring.names.clone(),
        }));
    };
    // The signed text has CRLF line ends: the form that was hashed.
    let text = signed.replace("\r\n", "\n");
    let mut release = parse_release(&text)?;
    release.signed_by = signed_by;
    if let Some(valid_until) = release.valid_until
        && valid_until < now
    {
        return Err(ReleaseError::Expired { valid_until, now });
    }
    Ok(release)
}

fn issuer_ids(sig: &Signature) -> Vec<String> {
    let mut ids: Vec<String> = sig
        .issuer_fingerprint()
        .iter()
        .map(|f| format!("{f:X}"))
        .collect();
    if ids.is_empty() {
        ids = sig
            .issuer_key_id()
            .iter()
            .map(|k| k.to_string().to_uppercase())
            .collect();
    }
    ids
}

/// Keyring keys (primary, or a subkey of it) the signature names as issuer.
fn signers<'k>(
    keyring: &'k Keyring,
    sig: &Signature,
) -> Vec<(&'k SignedPublicKey, Option<&'k SignedPublicSubKey>)> {
    let fps = sig.issuer_fingerprint();
    let ids = sig.issuer_key_id();
    let names = |k: &dyn KeyDetails| {
        fps.iter().any(|f| **f == k.fingerprint()) || ids.iter().any(|i| **i == k.legacy_key_id())
    };
    let mut out = Vec::new();
    for key in &keyring.keys {
        if names(&key.primary_key) {
            out.push((key, None));
        }
        for sub in &key.public_subkeys {
            if names(&sub.key) {
                out.push((key, Some(sub)));
            }
        }
    }
    out
}

/// Whether the key may sign at `now`: the primary not revoked or expired,
/// and the subkey (if it signed) bound for signing, not revoked or expired.
fn usable(
    primary: &SignedPublicKey,
    sub: Option<&SignedPublicSubKey>,
    now: i64,
) -> Result<(), String> {
    let pk = &primary.primary_key;
    if primary
        .details
        .revocation_signatures
        .iter()
        .any(|s| s.verify_key(pk).is_ok())
    {
        return Err("the primary key is revoked".into());
    }
    // The newest valid self-signature states the primary key's expiry and
    // flags.
    let mut selfsigs: Vec<&Signature> = primary
        .details
        .users
        .iter()
        .flat_map(|u| {
            u.signatures
                .iter()
                .filter(|s| s.verify_certification(pk, Tag::UserId, &u.id).is_ok())
        })
        .chain(
            primary
                .details
                .direct_signatures
                .iter()
                .filter(|s| s.verify_key(pk).is_ok()),
        )
        .collect();
    selfsigs.sort_by_key(|s| std::cmp::Reverse(created(s)));
    let Some(newest) = selfsigs.first() else {
        return Err("the primary key has no valid self-signature".into());
    };
    expiry_check(created_at(pk), newest, now, "the primary key")?;
    let Some(sub) = sub else {
        if has_key_flags(newest) && !newest.key_flags().sign() {
            return Err("the primary key is not marked for signing".into());
        }
        return Ok(());
    };
    if sub.signatures.iter().any(|s| {
        s.typ() == Some(SignatureType::SubkeyRevocation)
            && s.verify_subkey_binding(pk, &sub.key).is_ok()
    }) {
        return Err("the subkey is revoked".into());
    }
    let mut bindings: Vec<&Signature> = sub
        .signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding))
        .filter(|s| s.verify_subkey_binding(pk, &sub.key).is_ok())
        .collect();
    bindings.sort_by_key(|s| std::cmp::Reverse(created(s)));
    let Some(binding) = bindings.first() else {
        return Err("the subkey has no valid binding signature".into());
    };
    if !binding.key_flags().sign() {
        return Err("the subkey is not marked for signing".into());
    }
    // A signing subkey must sign its primary back, or anyone could claim
    // someone else's signing subkey as their own.
    let back = binding
        .embedded_signature()
        .is_some_and(|b| b.verify_primary_key_binding(&sub.key, pk).is_ok());
    if !back {
        return Err("the signing subkey lacks a valid back-signature".into());
    }
    expiry_check(created_at(&sub.key), binding, now, "the subkey")
}

fn created(s: &Signature) -> u32 {
    s.created().map_or(0, |t| t.as_secs())
}

fn created_at(k: &impl KeyDetails) -> i64 {
    i64::from(k.created_at().as_secs())
}

fn has_key_flags(s: &Signature) -> bool {
    s.config().is_some_and(|c| {
        c.hashed_subpackets()
            .any(|p| matches!(p.data, SubpacketData::KeyFlags(_)))
    })
}

fn expiry_check(created: i64, sig: &Signature, now: i64, what: &str) -> Result<(), String> {
    match sig.key_expiration_time().map(|d| i64::from(d.as_secs())) {
        Some(secs) if secs > 0 && created + secs <= now => {
            Err(format!("{what} expired at {}", format_date(created + secs)))
        }
        _ => Ok(()),
    }
}

/// Parses a `Release` file's fields (the text only: no signature check).
pub fn parse_release(text: &str) -> Result<Release, ReleaseError> {
    let paragraphs = control::paragraphs(text)?;
    let Some(p) = paragraphs.first() else {
        return Err(ReleaseError::Missing { field: "Date" });
    };
    let string = |f: &str| p.get(f).unwrap_or_default().to_string();
    let words = |f: &str| -> Vec<String> {
        p.get(f)
            .map(|v| v.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };
    let date_field = |field: &'static str, v: &str| {
        parse_date(v).map_err(|reason| ReleaseError::Field {
            field,
            value: v.to_string(),
            reason,
        })
    };
    let date = date_field(
        "Date",
        p.get("Date")
            .ok_or(ReleaseError::Missing { field: "Date" })?,
    )?;
    let valid_until = p
        .get("Valid-Until")
        .map(|v| date_field("Valid-Until", v))
        .transpose()?;
    if p.get("Suite").is_none() && p.get("Codename").is_none() {
        return Err(ReleaseError::Missing { field: "Suite" });
    }
    let sums = p
        .get("SHA256")
        .ok_or(ReleaseError::Missing { field: "SHA256" })?;
    let mut sha256 = BTreeMap::new();
    for line in value_lines(sums).filter(|l| !l.is_empty()) {
        let bad = |reason: &str| ReleaseError::Field {
            field: "SHA256",
            value: line.to_string(),
            reason: reason.to_string(),
        };
        let mut w = line.split_whitespace();
        let (Some(hash), Some(size), Some(path), None) = (w.next(), w.next(), w.next(), w.next())
        else {
            return Err(bad("expected `HASH SIZE PATH`"));
        };
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("not a SHA256 in hex"));
        }
        let size = size.parse().map_err(|_| bad("the size is not a number"))?;
        sha256.insert(
            path.to_string(),
            FileEntry {
                size,
                sha256: hash.to_ascii_lowercase(),
            },
        );
    }
    Ok(Release {
        origin: string("Origin"),
        label: string("Label"),
        suite: string("Suite"),
        codename: string("Codename"),
        date,
        valid_until,
        architectures: words("Architectures"),
        components: words("Components"),
        acquire_by_hash: p.get("Acquire-By-Hash") == Some("yes"),
        sha256,
        signed_by: String::new(),
    })
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Parses an RFC 2822 style date as Release files write it,
/// `Sat, 08 Nov 2025 09:12:34 UTC` (or `+0000`), into unix seconds.
pub fn parse_date(s: &str) -> Result<i64, String> {
    let mut w = s.split_whitespace().peekable();
    if w.peek().is_some_and(|d| d.ends_with(',')) {
        w.next();
    }
    let (Some(day), Some(month), Some(year), Some(time)) = (w.next(), w.next(), w.next(), w.next())
    else {
        return Err("expected `Day, DD Mon YYYY HH:MM:SS ZONE`".into());
    };
    let num = |t: &str, what: &str| t.parse::<i64>().map_err(|_| format!("bad {what} {t:?}"));
    let day = num(day, "day")?;
    let month = MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(month))
        .ok_or_else(|| format!("bad month {month:?}"))? as i64
        + 1;
    let year = num(year, "year")?;
    let hms: Vec<&str> = time.split(':').collect();
    let [h, m, sec] = hms[..] else {
        return Err(format!("bad time {time:?}"));
    };
    let (h, m, sec) = (num(h, "hour")?, num(m, "minute")?, num(sec, "second")?);
    // A year of more digits would overflow the day count (a panic, not
    // an error).
    if !(1..=31).contains(&day)
        || !(1..=9999).contains(&year)
        || !(0..24).contains(&h)
        || !(0..60).contains(&m)
        || !(0..=60).contains(&sec)
    {
        return Err("a field is out of range".into());
    }
    let offset = match w.next() {
        None | Some("UTC" | "GMT" | "Z" | "UT") => 0,
        // `get`: a multi-byte character may straddle the cuts.
        Some(z)
            if z.len() == 5
                && (z.starts_with('+') || z.starts_with('-'))
                && let (Some(hh), Some(mm)) = (z.get(1..3), z.get(3..5)) =>
        {
            let hh = num(hh, "zone")?;
            let mm = num(mm, "zone")?;
            let off = hh * 3600 + mm * 60;
            if z.starts_with('-') { -off } else { off }
        }
        Some(z) => return Err(format!("bad zone {z:?}")),
    };
    if w.next().is_some() {
        return Err("unexpected text after the zone".into());
    }
    Ok(days_from_civil(year, month, day) * 86400 + h * 3600 + m * 60 + sec - offset)
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// `2025-11-08 09:12:34 UTC`, for messages.
pub fn format_date(t: i64) -> String {
    // The same calendar as image configs' `created`, spelt for people.
    crate::oci::image::rfc3339(t)
        .replace('T', " ")
        .replace('Z', " UTC")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const NOW: i64 = 1_762_732_800; // Mon, 10 Nov 2025 00:00:00 UTC

    fn release_text(valid_until: &str) -> String {
        format!(
            "Origin: Debian\nLabel: Debian\nSuite: stable\nCodename: bookworm\n\
             Date: Sat, 08 Nov 2025 09:12:34 UTC\nValid-Until: {valid_until}\n\
             Acquire-By-Hash: yes\nArchitectures: amd64 arm64\nComponents: main contrib\n\
             Description: Debian 12.12\nSHA256:\n \
             {} 1234 main/binary-amd64/Packages\n \
             {} 99 main/binary-amd64/Packages.gz\n",
            "ab".repeat(32),
            "CD".repeat(32)
        )
    }

    /// A throw-away GnuPG home; its agent is stopped on drop.
    struct Gpg(tempfile::TempDir);

    impl Gpg {
        fn new() -> Gpg {
            let dir = tempfile::Builder::new().prefix("gpg").tempdir().unwrap();
            Gpg(dir)
        }

        fn run(&self, args: &[&str], stdin: Option<&str>) -> Vec<u8> {
            use std::io::Write;
            let mut child = Command::new("gpg")
                .env("GNUPGHOME", self.0.path())
                .args([
                    "--batch",
                    "--quiet",
                    "--pinentry-mode",
                    "loopback",
                    "--passphrase",
                    "",
                ])
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("gpg is installed");
            let mut input = child.stdin.take().unwrap();
            input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
            drop(input);
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "gpg {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        }

        /// A primary key that certifies and signs itself.
        fn key(&self, uid: &str, expiry: &str) -> String {
            self.run(&["--quick-gen-key", uid, "ed25519", "sign", expiry], None);
            self.fingerprint(uid)
        }

        /// Debian's layout: a certify-only primary and a signing subkey.
        fn key_with_subkey(&self, uid: &str, sub_expiry: &str) -> String {
            self.run(&["--quick-gen-key", uid, "ed25519", "cert", "never"], None);
            let fpr = self.fingerprint(uid);
            self.run(
                &["--quick-add-key", &fpr, "ed25519", "sign", sub_expiry],
                None,
            );
            fpr
        }

        fn fingerprint(&self, uid: &str) -> String {
            let out = self.run(&["--with-colons", "--list-keys", uid], None);
            let text = String::from_utf8(out).unwrap();
            text.lines()
                .find(|l| l.starts_with("fpr:"))
                .and_then(|l| l.split(':').nth(9))
                .unwrap()
                .to_string()
        }

        fn clearsign(&self, text: &str, signers: &[&str]) -> String {
            let mut args = vec!["--clearsign", "--digest-algo", "SHA512"];
            for s in signers {
                args.extend(["-u", s]);
            }
            String::from_utf8(self.run(&args, Some(text))).unwrap()
        }

        fn export(&self, fpr: &str, armor: bool) -> Vec<u8> {
            let mut args = vec!["--export"];
            if armor {
                args.push("--armor");
            }
            args.push(fpr);
            self.run(&args, None)
        }
    }

    impl Drop for Gpg {
        fn drop(&mut self) {
            let _ = Command::new("gpgconf")
                .env("GNUPGHOME", self.0.path())
                .args(["--kill", "all"])
                .status();
        }
    }

    fn keyring(data: &[u8]) -> Keyring {
        let mut k = Keyring::default();
        k.add_bytes(data, "test.gpg").unwrap();
        k
    }

    #[test]
    fn dates() {
        assert_eq!(
            parse_date("Sat, 08 Nov 2025 09:12:34 UTC"),
            Ok(1_762_593_154)
        );
        assert_eq!(parse_date("29 Feb 2024 23:59:59 -0130"), Ok(1_709_256_599));
        assert_eq!(parse_date("Thu, 01 Jan 1970 00:00:00 +0000"), Ok(0));
        assert!(parse_date("Sat, 08 Foo 2025 09:12:34 UTC").is_err());
        assert!(parse_date("Sat, 08 Nov 2025 25:12:34 UTC").is_err());
        assert!(parse_date("Sat, 08 Nov 2025").is_err());
        assert_eq!(format_date(1_762_593_154), "2025-11-08 09:12:34 UTC");
        // Found by the property tests: these panicked (an overflow, a
        // string cut inside a character).
        assert!(parse_date("1 Jan 300000000000 0:0:0").is_err());
        assert!(parse_date("1 Jan 2025 0:0:0 +0\u{e9}0").is_err());
        assert_eq!(format_date(1_709_256_599 - 5400), "2024-02-29 23:59:59 UTC");
    }

    #[test]
    fn release_fields_and_missing_ones() {
        let r = parse_release(&release_text("Sat, 15 Nov 2025 09:12:34 UTC")).unwrap();
        assert_eq!(r.codename, "bookworm");
        assert_eq!(r.suite, "stable");
        assert_eq!(r.origin, "Debian");
        assert_eq!(r.label, "Debian");
        assert_eq!(r.date, 1_762_593_154);
        assert_eq!(r.valid_until, Some(1_762_593_154 + 7 * 86400));
        assert!(r.acquire_by_hash);
        assert_eq!(r.architectures, ["amd64", "arm64"]);
        assert_eq!(r.components, ["main", "contrib"]);
        let gz = &r.sha256["main/binary-amd64/Packages.gz"];
        assert_eq!(gz.size, 99);
        assert_eq!(gz.sha256, "cd".repeat(32));
        let no_date = release_text("x").replace("Date: Sat, 08 Nov 2025 09:12:34 UTC\n", "");
        assert!(matches!(
            parse_release(&no_date),
            Err(ReleaseError::Missing { field: "Date" })
        ));
        let no_sums = "Suite: x\nDate: Sat, 08 Nov 2025 09:12:34 UTC\n";
        assert!(matches!(
            parse_release(no_sums),
            Err(ReleaseError::Missing { field: "SHA256" })
        ));
        let e = parse_release(&release_text("soon")).unwrap_err();
        assert!(e.to_string().contains("Valid-Until"), "{e}");
    }

    #[test]
    fn signatures() {
        let gpg = Gpg::new();
        let a = gpg.key("Alice <a@example.org>", "never");
        let b = gpg.key_with_subkey("Bob <b@example.org>", "1d");
        let other = gpg.key("Mallory <m@example.org>", "never");
        let text = release_text("Sat, 15 Nov 2025 09:12:34 UTC");

        // Good, with the key from a binary and from an armored export.
        let signed = gpg.clearsign(&text, &[&a]);
        for armor in [false, true] {
            let r = verify_inrelease(&signed, &keyring(&gpg.export(&a, armor)), NOW).unwrap();
            assert_eq!(r.codename, "bookworm");
            assert_eq!(r.signed_by, a);
            assert_eq!(r.sha256.len(), 2);
        }

        // A keyring file with several keys, as Debian's is.
        let mut many = gpg.export(&other, false);
        many.extend(gpg.export(&a, false));
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("many.gpg");
        std::fs::write(&path, &many).unwrap();
        let ring = Keyring::load(&[&path]).unwrap();
        assert_eq!(ring.fingerprints().len(), 2);
        verify_inrelease(&signed, &ring, NOW).unwrap();

        // Tampered text.
        let tampered = signed.replace("Suite: stable", "Suite: stab1e");
        let e = verify_inrelease(&tampered, &keyring(&gpg.export(&a, false)), NOW).unwrap_err();
        assert!(matches!(e, ReleaseError::BadSignature { .. }), "{e}");

        // A key that is not in the keyring is named, and so is the keyring.
        let e = verify_inrelease(&signed, &keyring(&gpg.export(&other, false)), NOW).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ReleaseError::UnknownKey { .. }), "{e}");
        assert!(msg.contains(&a) && msg.contains("test.gpg"), "{msg}");

        // Valid-Until in the past.
        let stale = gpg.clearsign(&release_text("Sun, 09 Nov 2025 00:00:00 UTC"), &[&a]);
        let e = verify_inrelease(&stale, &keyring(&gpg.export(&a, false)), NOW).unwrap_err();
        assert!(matches!(e, ReleaseError::Expired { .. }), "{e}");

        // Several signatures, only one of them by a known key; the known
        // one signs with a subkey, as Debian's keys do.
        let far = release_text("Fri, 01 Jan 2100 00:00:00 UTC");
        let both = gpg.clearsign(&far, &[&format!("{other}!"), &b]);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let ring_b = keyring(&gpg.export(&b, false));
        let r = verify_inrelease(&both, &ring_b, now).unwrap();
        assert_eq!(r.signed_by, b);
        // Two days on, the signing subkey has expired.
        let e = verify_inrelease(&both, &ring_b, now + 2 * 86400).unwrap_err();
        assert!(matches!(e, ReleaseError::KeyNotValid { .. }), "{e}");
        assert!(e.to_string().contains("expired"), "{e}");

        // Not signed at all.
        let e = verify_inrelease(&far, &ring_b, now).unwrap_err();
        assert!(matches!(e, ReleaseError::NotSigned { .. }), "{e}");
    }

    /// InRelease files and keyrings come from the network and the disk: no
    /// input makes the reader panic; each parses or gives its typed error
    /// (whose message is made too, as the build shows it).
    mod props {
        use super::*;
        use crate::mutate;
        use proptest::prelude::*;

        /// A clear-signed release and its key, binary and armored: made
        /// once by gpg for every property of this binary.
        fn signed() -> &'static (String, Vec<u8>, Vec<u8>) {
            static SIGNED: std::sync::OnceLock<(String, Vec<u8>, Vec<u8>)> =
                std::sync::OnceLock::new();
            SIGNED.get_or_init(|| {
                let gpg = Gpg::new();
                let a = gpg.key("Alice <a@example.org>", "never");
                let text = release_text("Sat, 15 Nov 2025 09:12:34 UTC");
                (
                    gpg.clearsign(&text, &[&a]),
                    gpg.export(&a, false),
                    gpg.export(&a, true),
                )
            })
        }

        fn release_parsers(bytes: &[u8], ring: &Keyring) {
            let text = String::from_utf8_lossy(bytes);
            let _ = parse_release(&text).map_err(|e| e.to_string());
            let _ = verify_inrelease(&text, ring, NOW).map_err(|e| e.to_string());
            for line in text.lines() {
                let value = line.split_once(':').map_or(line, |(_, v)| v);
                let _ = parse_date(value);
            }
        }

        fn keyring_of(bytes: &[u8]) {
            let mut k = Keyring::default();
            let _ = k.add_bytes(bytes, "fuzz.gpg").map_err(|e| e.to_string());
            let _ = k.fingerprints();
        }

        proptest! {
            #![proptest_config(mutate::config())]

            #[test]
            fn arbitrary_bytes(bytes in mutate::bytes(512)) {
                release_parsers(&bytes, &Keyring::default());
                keyring_of(&bytes);
            }

            #[test]
            fn mutated_release(bytes in mutate::mutated(
                release_text("Sat, 15 Nov 2025 09:12:34 UTC").into_bytes(),
            )) {
                release_parsers(&bytes, &Keyring::default());
            }

            #[test]
            fn mutated_inrelease(bytes in mutate::mutated(signed().0.as_bytes().to_vec())) {
                release_parsers(&bytes, &keyring(&signed().1));
            }

            #[test]
            fn mutated_keys(
                binary in mutate::mutated(signed().1.clone()),
                armored in mutate::mutated(signed().2.clone()),
            ) {
                keyring_of(&binary);
                keyring_of(&armored);
            }

            #[test]
            fn dates(value in "[A-Za-z0-9,:+ -]{0,40}") {
                let _ = parse_date(&value);
            }

            /// Dates of the right shape, with any numbers and zones in it.
            #[test]
            fn date_shaped(
                day in "[0-9]{1,3}|-?[0-9]{1,20}",
                month in prop::sample::select(&["Jan", "feb", "Dec", "Foo", ""][..]),
                year in "[0-9]{1,4}|-?[0-9]{1,20}",
                time in "[0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}|-?[0-9]{1,20}:-?[0-9]{1,3}:[0-9]{1,3}",
                zone in "UTC|[+-][0-9]{4}|[+-].{1,4}|.{0,6}",
            ) {
                let _ = parse_date(&format!("Sat, {day} {month} {year} {time} {zone}"))
                    .map(format_date);
            }
        }
    }
}
