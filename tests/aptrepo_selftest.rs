//! The test apt repository (tests/common/aptrepo.rs, made by
//! tests/fixtures/apt-repo/make.sh) judged by the host's real tools: gpgv
//! verifies its signatures (or not, for the faulty variants), sha256sum its
//! pool, apt accepts it and resolves from it, and dpkg installs from it into
//! a busybox root with the maintainer scripts run chrooted.

mod common;

use common::aptrepo;

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aptrepo::{APP_GID, APP_UID, AptRepo, Variant};
use sha2::{Digest as _, Sha256};

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Fetches `path` from the repository into `dir` (same file name).
fn fetch(repo: &AptRepo, path: &str, dir: &Path) -> PathBuf {
    let (status, body) = repo.get(path);
    assert_eq!(status, 200, "GET {path}");
    let dest = dir.join(path.rsplit('/').next().unwrap());
    fs::write(&dest, body).unwrap();
    dest
}

/// The suite's InRelease, Release and Release.gpg, fetched into `dir`.
fn fetch_release(repo: &AptRepo, dir: &Path) -> [PathBuf; 3] {
    ["InRelease", "Release", "Release.gpg"]
        .map(|name| fetch(repo, &format!("/dists/{}/{name}", repo.suite), dir))
}

fn gpgv(keyring: &Path, files: &[&Path]) -> Output {
    run(Command::new("gpgv")
        .arg("--keyring")
        .arg(keyring)
        .args(files))
}

fn sha256sum(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .split(' ')
        .next()
        .unwrap()
        .to_string()
}

/// The `(hash, size, path)` entries of a Release's `SHA256:` field.
fn release_sha256(release: &str) -> Vec<(String, u64, String)> {
    release
        .lines()
        .skip_while(|l| *l != "SHA256:")
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[1].parse().unwrap(), f[2].to_string())
        })
        .collect()
}

/// `(Filename, SHA256)` of every stanza of a Packages file.
fn pool_entries(packages: &str) -> Vec<(String, String)> {
    packages
        .split("\n\n")
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let field = |f: &str| {
                s.lines()
                    .find_map(|l| l.strip_prefix(f)?.strip_prefix(": "))
                    .unwrap_or_else(|| panic!("no {f} in\n{s}"))
                    .to_string()
            };
            (field("Filename"), field("SHA256"))
        })
        .collect()
}

#[test]
fn good_repository_verifies_and_hashes_match() {
    let repo = AptRepo::start(Variant::Good);
    let tmp = tempfile::tempdir().unwrap();
    let dists = format!("/dists/{}", repo.suite);
    let [inrelease, release, release_gpg] = fetch_release(&repo, tmp.path());

    let out = gpgv(&repo.keyring, &[&inrelease]);
    assert!(out.status.success(), "gpgv InRelease: {}", text(&out));
    assert!(text(&out).contains(&repo.fingerprint), "{}", text(&out));
    let out = gpgv(&repo.keyring, &[&release_gpg, &release]);
    assert!(out.status.success(), "gpgv Release.gpg: {}", text(&out));
    let out = gpgv(&repo.other_keyring, &[&inrelease]);
    assert!(!out.status.success(), "the other key verified InRelease");

    let release_text = fs::read_to_string(&release).unwrap();
    for field in [
        "Suite: imgbuild-test",
        "Codename: imgbuild-test",
        "Architectures: amd64",
        "Components: main",
        "Date: Tue, 14 Nov 2023 22:13:20 UTC",
        "Valid-Until: Fri, 01 Jan 2100 00:00:00 UTC",
    ] {
        assert!(
            release_text.lines().any(|l| l == field),
            "no {field:?} in\n{release_text}"
        );
    }
    let entries = release_sha256(&release_text);
    assert_eq!(entries.len(), 2, "{release_text}");
    for (hash, size, path) in &entries {
        let (status, body) = repo.get(&format!("{dists}/{path}"));
        assert_eq!(status, 200, "{path}");
        assert_eq!(body.len() as u64, *size, "{path}");
        assert_eq!(&hex::encode(Sha256::digest(&body)), hash, "{path}");
    }

    let packages = pool_entries(&repo.packages());
    assert_eq!(packages.len(), 17, "{}", repo.packages());
    for (filename, sha) in &packages {
        let deb = fetch(&repo, &format!("/{filename}"), tmp.path());
        assert_eq!(&sha256sum(&deb), sha, "{filename}");
    }
    let (libfoo1, _) = repo.index_entry("libfoo", "1.0-1").unwrap();
    assert_eq!(libfoo1, "pool/main/libf/libfoo/libfoo_1.0-1_all.deb");
    assert!(repo.index_entry("libfoo", "2.0-1").is_some());
    assert!(repo.index_entry("epoch-pkg", "1:0.5-1").is_some());
    assert!(repo.count(".deb") >= 17, "{}", repo.log_text());
    assert!(
        repo.requests()
            .iter()
            .all(|r| r.method == "GET" && r.status == 200),
        "{:?}",
        repo.requests()
    );
}

#[test]
fn bad_signature_does_not_verify() {
    let repo = AptRepo::start(Variant::BadSignature);
    let tmp = tempfile::tempdir().unwrap();
    let dists = format!("/dists/{}", repo.suite);
    let [inrelease, release, release_gpg] = fetch_release(&repo, tmp.path());
    let out = gpgv(&repo.keyring, &[&inrelease]);
    assert!(!out.status.success(), "InRelease verified: {}", text(&out));
    assert!(text(&out).contains("BAD signature"), "{}", text(&out));
    let out = gpgv(&repo.keyring, &[&release_gpg, &release]);
    assert!(
        !out.status.success(),
        "Release.gpg verified: {}",
        text(&out)
    );
    // Still a well-formed Release whose hashes match.
    let release_text = fs::read_to_string(&release).unwrap();
    assert!(release_text.contains("Date: Wed, 15 Nov 2023 22:13:20 UTC"));
    for (hash, _, path) in release_sha256(&release_text) {
        let (_, body) = repo.get(&format!("{dists}/{path}"));
        assert_eq!(hex::encode(Sha256::digest(&body)), hash, "{path}");
    }
}

#[test]
fn corrupt_deb_hash_differs() {
    let repo = AptRepo::start(Variant::CorruptDeb("libfoo"));
    let tmp = tempfile::tempdir().unwrap();
    let inrelease = fetch(
        &repo,
        &format!("/dists/{}/InRelease", repo.suite),
        tmp.path(),
    );
    let out = gpgv(&repo.keyring, &[&inrelease]);
    assert!(out.status.success(), "gpgv InRelease: {}", text(&out));
    let mut corrupt = 0;
    for (filename, sha) in pool_entries(&repo.packages()) {
        let deb = fetch(&repo, &format!("/{filename}"), tmp.path());
        if filename.contains("/libfoo_") {
            corrupt += 1;
            assert_ne!(sha256sum(&deb), sha, "{filename} is not corrupt");
        } else {
            assert_eq!(sha256sum(&deb), sha, "{filename}");
        }
    }
    assert_eq!(corrupt, 2);
}

/// A throw-away apt root trusting nothing of the host's, for one repository.
struct AptRoot {
    dir: tempfile::TempDir,
}

impl AptRoot {
    fn new(sources: &str) -> AptRoot {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for d in [
            "etc/apt/apt.conf.d",
            "etc/apt/preferences.d",
            "etc/apt/sources.list.d",
            "etc/apt/trusted.gpg.d",
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial",
            "var/lib/dpkg",
            "var/log/apt",
        ] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        fs::write(r.join("var/lib/dpkg/status"), "").unwrap();
        fs::write(r.join("etc/apt/sources.list"), format!("{sources}\n")).unwrap();
        // Read first (APT_CONFIG): everything else is then under Dir.
        fs::write(
            r.join("apt.conf"),
            format!(
                "Dir \"{}/\";\n\
                 Dir::State::status \"{}/var/lib/dpkg/status\";\n\
                 APT::Architecture \"amd64\";\n\
                 APT::Architectures {{ \"amd64\"; }};\n\
                 APT::Sandbox::User \"root\";\n\
                 Acquire::Languages \"none\";\n\
                 Acquire::Retries \"0\";\n\
                 Debug::NoLocking \"true\";\n",
                r.display(),
                r.display()
            ),
        )
        .unwrap();
        AptRoot { dir }
    }

    fn apt_get(&self, args: &[&str]) -> Output {
        run(Command::new("apt-get")
            .env("APT_CONFIG", self.dir.path().join("apt.conf"))
            .env("LC_ALL", "C")
            .args(["-q", "-y"])
            .args(args))
    }
}

#[test]
fn apt_accepts_and_resolves() {
    let repo = AptRepo::start(Variant::Good);
    let root = AptRoot::new(&repo.sources_line());
    let out = root.apt_get(&["update"]);
    let log = text(&out);
    assert!(out.status.success(), "apt-get update: {log}");
    assert!(!log.contains("W:") && !log.contains("E:"), "{log}");
    assert!(repo.count("/InRelease") >= 1, "{}", repo.log_text());

    let out = root.apt_get(&[
        "install",
        "--simulate",
        "app-alt",
        "needs-mta",
        "wants-v",
        "tilde-dep",
        "needs-epoch",
        "pre-user",
    ]);
    let log = text(&out);
    assert!(out.status.success(), "apt-get install --simulate: {log}");
    for inst in [
        "Inst libfoo (2.0-1 ",
        "Inst app-alt (1.0-1 ",
        "Inst mta-a (1.0-1 ",
        "Inst needs-mta (1.0-1 ",
        "Inst provider-v (1.0-1 ",
        "Inst wants-v (1.0-1 ",
        "Inst tilde-dep (1.0-1 ",
        "Inst epoch-pkg (1:0.5-1 ",
        "Inst needs-epoch (1.0-1 ",
        "Inst pre-base (1.0-1 ",
        "Inst pre-user (1.0-1 ",
    ] {
        assert!(log.contains(inst), "no {inst:?} in\n{log}");
    }
    assert!(!log.contains("Inst libbar"), "{log}");

    // Conflicts: both cannot be installed.
    let out = root.apt_get(&["install", "--simulate", "conflicts-bar", "libbar"]);
    assert!(!out.status.success(), "{}", text(&out));
    // An older version on request.
    let out = root.apt_get(&["install", "--simulate", "libfoo=1.0-1"]);
    assert!(text(&out).contains("Inst libfoo (1.0-1 "), "{}", text(&out));
}

#[test]
fn apt_refuses_the_faults() {
    // Signed by a key the sources line does not trust.
    let repo = AptRepo::start(Variant::Good);
    let root = AptRoot::new(&repo.sources_line_with(&repo.other_keyring));
    let out = root.apt_get(&["update"]);
    assert!(
        !out.status.success() && text(&out).contains("NO_PUBKEY"),
        "apt-get update with the other key: {}",
        text(&out)
    );

    let bad = AptRepo::start(Variant::BadSignature);
    let root = AptRoot::new(&bad.sources_line());
    let out = root.apt_get(&["update"]);
    assert!(
        !out.status.success() && text(&out).contains("BADSIG"),
        "apt-get update, bad signature: {}",
        text(&out)
    );

    let corrupt = AptRepo::start(Variant::CorruptDeb("adds-user"));
    let root = AptRoot::new(&corrupt.sources_line());
    let out = root.apt_get(&["update"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = root.apt_get(&["install", "--download-only", "adds-user"]);
    assert!(
        !out.status.success() && text(&out).contains("Hash Sum mismatch"),
        "apt-get download of the corrupt .deb: {}",
        text(&out)
    );
}

/// A root of busybox (Debian's busybox-static) and an empty dpkg database.
fn busybox_root(dir: &Path) {
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc",
        "tmp",
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
    ] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", dir.join("bin/busybox"))
        .expect("/bin/busybox (this test needs busybox-static: apt-get install busybox-static)");
    let out = run(Command::new("chroot")
        .arg(dir)
        .args(["/bin/busybox", "--install", "-s"]));
    assert!(out.status.success(), "busybox --install: {}", text(&out));
    fs::write(dir.join("var/lib/dpkg/status"), "").unwrap();
    fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(dir.join("etc/group"), "root:x:0:\n").unwrap();
}

fn dpkg_install(root: &Path, debs: &[PathBuf]) -> Output {
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .arg("--install")
        .args(debs)
        .env("LC_ALL", "C"))
}

#[test]
fn dpkg_runs_the_maintainer_scripts() {
    // dpkg --root runs the scripts chrooted: root only.
    let euid = fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1);
    if euid != 0 {
        // CI runs the suite as root: there, this case must run.
        assert!(
            std::env::var_os("CI").is_none(),
            "dpkg_runs_the_maintainer_scripts needs root (dpkg --root chroots), and CI runs as uid {euid}"
        );
        eprintln!("dpkg_runs_the_maintainer_scripts: skipped, chroot needs root");
        return;
    }
    let repo = AptRepo::start(Variant::Good);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    busybox_root(&root);

    let adds_user = repo.deb_path("adds-user", "1.0-1");
    let alt_link = repo.deb_path("alt-link", "1.0-1");
    let out = dpkg_install(&root, &[adds_user.clone(), alt_link]);
    assert!(out.status.success(), "dpkg -i: {}", text(&out));
    let dir = fs::metadata(root.join("var/lib/adds-user")).unwrap();
    assert_eq!((dir.uid(), dir.gid()), (APP_UID, APP_GID));
    assert_eq!(
        fs::read_to_string(root.join("var/lib/adds-user/configured")).unwrap(),
        "configured\n"
    );
    let link = fs::read_link(root.join("usr/bin/alt-tool")).unwrap();
    assert_eq!(link, Path::new("/usr/lib/alt-link/tool"));
    let tool = fs::metadata(root.join("usr/lib/alt-link/tool")).unwrap();
    assert_eq!(tool.mode() & 0o7777, 0o755);
    assert_eq!((tool.uid(), tool.gid()), (0, 0));

    // Again: the postinst runs again and adds nobody twice.
    let out = dpkg_install(&root, &[adds_user]);
    assert!(out.status.success(), "dpkg -i again: {}", text(&out));
    let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
    let group = fs::read_to_string(root.join("etc/group")).unwrap();
    assert_eq!(
        passwd.lines().filter(|l| l.starts_with("appuser:")).count(),
        1,
        "{passwd}"
    );
    assert!(
        passwd.contains("appuser:x:990:990:adds-user:/var/lib/adds-user:/usr/sbin/nologin\n"),
        "{passwd}"
    );
    assert_eq!(group, "root:x:0:\nappgroup:x:990:\n");

    // A failing postinst leaves the package unpacked, not configured.
    let out = dpkg_install(&root, &[repo.deb_path("fails-postinst", "1.0-1")]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("fails-postinst: failing on purpose"));
    let status = fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    assert!(
        status.contains("Package: fails-postinst\nStatus: install ok half-configured\n"),
        "{status}"
    );
}
