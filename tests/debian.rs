//! Debian packages from an archive: resolved, pinned in images.lock,
//! verified, and installed by the target's own dpkg in the sandbox.
//!
//! The hermetic tests use the signed repository that
//! tests/fixtures/apt-repo/make.sh makes, served on loopback, over a trixie
//! minbase made by mmdebstrap; `a_php_stack_from_the_real_archive` reads
//! Debian's real archive through the host's apt sources.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use common::aptrepo::{APP_GID, APP_UID, AptRepo, Variant};
use common::{Ctx, ValidImage, require_tool, run_command, validate_layout};

/// `debian-root` from the minbase tarball, and `app` installing from `repo`.
fn project(repo: &AptRepo, packages: &str) -> Ctx {
    common::aptrepo::debian_project(repo, packages, "")
}

#[test]
fn packages_resolve_lock_and_install_with_their_scripts() {
    let repo = AptRepo::start(Variant::Good);
    let cx = project(
        &repo,
        "app-alt, needs-mta, wants-v, tilde-dep, pre-user, adds-user, alt-link",
    );
    cx.build(&["debian-root"]);
    let locked = cx.run(&["--json", "lock"]).success().json();
    assert_eq!(locked["written"], true, "{locked}");
    let lock: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(cx.path("images.lock")).unwrap()).unwrap();
    let pkgs: Vec<String> = lock["images"]["app"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}={}",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap()
            )
        })
        .collect();
    // The first alternative that works (libfoo 2, not libbar), a provider
    // of the virtual package, the versioned provide, the pre-dependency.
    for want in [
        "libfoo=2.0-1",
        "mta-a=1.0-1",
        "provider-v=1.0-1",
        "pre-base=1.0-1",
    ] {
        assert!(pkgs.iter().any(|p| p == want), "{want} not in {pkgs:?}");
    }
    assert!(!pkgs.iter().any(|p| p.starts_with("libbar=")), "{pkgs:?}");
    // --locked builds from the lock alone.
    let out = cx.scratch.join("oci");
    cx.build(&["app", "--locked", "-o", &format!("oci:{}", out.display())]);
    let image = validate_layout(&out, "app");
    let layer = image.layers.last().unwrap();
    // The postinst made a user and gave it a directory.
    let dir = layer.entry("var/lib/adds-user");
    assert_eq!((dir.uid, dir.gid), (APP_UID as u64, APP_GID as u64));
    let passwd = String::from_utf8(layer.entry("etc/passwd").data).unwrap();
    assert!(passwd.contains("appuser:x:990:990"), "{passwd}");
    assert_eq!(
        layer.entry("usr/bin/alt-tool").link.as_deref(),
        Some("/usr/lib/alt-link/tool")
    );
    // dpkg's own database says so, and no log or backup is in the layer.
    let status = String::from_utf8(layer.entry("var/lib/dpkg/status").data).unwrap();
    assert!(
        status.contains("Package: adds-user\nStatus: install ok installed"),
        "{status}"
    );
    let names: Vec<String> = layer.entries().iter().map(|e| e.path.clone()).collect();
    for never in [
        "var/log/dpkg.log",
        "var/lib/dpkg/status-old",
        "var/cache/debconf/config.dat-old",
    ] {
        assert!(!names.contains(&never.to_string()), "{never} in the layer");
    }
    // A second build from the same lock in a fresh store is the same image.
    let first = cx.build(&["app", "--locked"]).manifest("app");
    let again = cx
        .build_in_fresh_store(&["app", "--locked"])
        .manifest("app");
    assert_eq!(again, first);
    // images.yaml changed since the lock: --locked refuses, naming the fix.
    let yaml = fs::read_to_string(cx.path("images.yaml")).unwrap();
    cx.yaml(&yaml.replace("alt-link]", "alt-link, libbar]"));
    cx.run(&["build", "app", "--locked"])
        .exit(1)
        .stderr_has(&["changed since the lock was written", "imgbuild lock"]);
}

/// A Debian image whose parent is named by registry reference: `lock`
/// pulls the parent (into a store that has never seen it) and resolves
/// over its dpkg status, and the locked build installs only what it lacks.
#[test]
fn lock_pulls_a_registry_parent_and_resolves_over_its_packages() {
    let repo = AptRepo::start(Variant::Good);
    let registry = common::registry::Registry::anonymous();
    let mut cx = project(&repo, "adds-user");
    let prefix = format!("{}/fleet", registry.host());
    cx.run(&["push", "debian-root", "--registry", &prefix])
        .success();
    cx.home = cx.scratch.join("fresh-home");
    let yaml = fs::read_to_string(cx.path("images.yaml")).unwrap();
    cx.yaml(&yaml.replace(
        "    from: debian-root\n",
        &format!("    from: {prefix}/debian-root:latest\n"),
    ));
    cx.run(&["lock"]).success();
    let lock: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(cx.path("images.lock")).unwrap()).unwrap();
    let names: Vec<&str> = lock["images"]["app"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    // adds-user and what it needs beyond the parent; the parent's own
    // packages (adduser, passwd, base-files…) are not installed again.
    assert!(names.contains(&"adds-user"), "{names:?}");
    for had in ["adduser", "passwd", "base-files", "dpkg"] {
        assert!(!names.contains(&had), "{had} is in the parent: {names:?}");
    }
    let out = cx.scratch.join("oci");
    cx.build(&["app", "--locked", "-o", &format!("oci:{}", out.display())]);
    let image = validate_layout(&out, "app");
    let passwd = String::from_utf8(image.layers.last().unwrap().entry("etc/passwd").data).unwrap();
    assert!(passwd.contains("appuser:x:990:990"), "{passwd}");
}

#[test]
fn bad_signatures_unknown_names_and_corrupt_debs_are_named() {
    let bad = AptRepo::start(Variant::BadSignature);
    let cx = project(&bad, "app-alt");
    cx.build(&["debian-root"]);
    let run = cx.run(&["build", "app"]).exit(1);
    run.stderr_has(&["InRelease"]);
    assert!(run.stderr.to_lowercase().contains("signature"), "{run}");

    let good = AptRepo::start(Variant::Good);
    let cx = project(&good, "app-alt, adds-usr");
    cx.build(&["debian-root"]);
    cx.run(&["build", "app"])
        .exit(1)
        .stderr_has(&["adds-usr", "did you mean adds-user?"]);

    let corrupt = AptRepo::start(Variant::CorruptDeb("libfoo"));
    let cx = project(&corrupt, "app-alt");
    cx.build(&["debian-root"]);
    let run = cx.run(&["build", "app"]).exit(1);
    let (_, sha) = corrupt.index_entry("libfoo", "2.0-1").unwrap();
    run.stderr_has(&["libfoo", &sha]);
}

/// Requests for the repository's indexes (`dists/…`: InRelease, Release,
/// Packages), as the test repository logged them.
fn index_requests(repo: &AptRepo) -> Vec<String> {
    repo.requests()
        .into_iter()
        .filter(|r| r.path.contains("/dists/"))
        .map(|r| r.path)
        .collect()
}

/// The README's promise: with a lock and the `.deb`s in the store's cache,
/// a build reads no index, whether the Debian layer is a cache hit or must
/// be installed again.
#[test]
fn a_lock_and_cached_debs_read_no_index() {
    let repo = AptRepo::start(Variant::Good);
    let cx = project(&repo, "adds-user");
    cx.build(&["debian-root"]);
    cx.run(&["lock"]).success();
    let first = cx.build(&["app", "--locked"]);
    assert!(repo.deb_fetches() > 0, "the first build fetched no .deb");
    let (indexes, debs) = (index_requests(&repo).len(), repo.deb_fetches());
    assert!(indexes > 0, "`lock` read no index: {}", repo.log_text());

    // images.yaml touched, its `debian:` sections and parents as they were:
    // the lock stays current (plain `build`, not --locked, would resolve
    // afresh if it were not).
    let yaml = fs::read_to_string(cx.path("images.yaml")).unwrap();
    let touched = yaml.replace(
        "    from: debian-root\n",
        "    from: debian-root\n    config: {env: {TOUCHED: \"yes\"}}\n",
    );
    assert_ne!(touched, yaml);
    cx.yaml(&format!("# touched after the lock\n{touched}"));
    let again = cx.build(&["app"]);
    assert_ne!(again.manifest("app"), first.manifest("app"), "env changed");
    assert_eq!(
        index_requests(&repo)[indexes..],
        [] as [String; 0],
        "a build with a current lock read indexes"
    );
    assert_eq!(repo.deb_fetches(), debs, "cached .debs fetched again");

    // A store holding only the .deb cache: the Debian layer is installed
    // again (dpkg runs), from the lock and the cache alone.
    let fresh = cx.scratch.join("second-home");
    common::copy_tree(&cx.home.join("debian"), &fresh.join("debian"));
    let rebuilt = cx.build_in_fresh_store(&["app", "--locked"]);
    let debian_layers: Vec<bool> = rebuilt
        .layer_summary("app")
        .into_iter()
        .map(|(_, _, built)| built)
        .collect();
    assert_eq!(
        debian_layers.last(),
        Some(&true),
        "the Debian layer was not installed again in the fresh store: {:#}",
        rebuilt.0
    );
    assert_eq!(rebuilt.manifest("app"), again.manifest("app"));
    assert_eq!(
        index_requests(&repo)[indexes..],
        [] as [String; 0],
        "installing from the lock and cached .debs read indexes"
    );
    assert_eq!(repo.deb_fetches(), debs, "cached .debs fetched again");
}

/// `build --locked` with no lock, and with a lock written for another
/// parent, fails naming the fix; plain `build` resolves afresh instead.
#[test]
fn locked_refuses_a_missing_or_stale_lock() {
    let repo = AptRepo::start(Variant::Good);
    let cx = project(&repo, "adds-user");
    cx.build(&["debian-root"]);
    assert!(!cx.path("images.lock").exists());
    cx.run(&["build", "app", "--locked"]).exit(1).stderr_has(&[
        "--locked",
        "images.lock",
        "imgbuild lock",
    ]);
    assert!(!cx.path("images.lock").exists(), "--locked wrote a lock");

    cx.run(&["lock"]).success();
    cx.build(&["app", "--locked"]);
    // The same tree under another name: the lock names the parent it was
    // resolved over, so it is stale for the new one.
    let yaml = fs::read_to_string(cx.path("images.yaml")).unwrap();
    let moved = yaml
        .replace("    from: debian-root\n", "    from: other-root\n")
        .replace(
            "  app:\n",
            "  other-root:\n    from: {rootfs: debian.tar}\n  app:\n",
        );
    assert_ne!(moved, yaml);
    cx.yaml(&moved);
    cx.build(&["other-root"]);
    let lock_before = fs::read_to_string(cx.path("images.lock")).unwrap();
    cx.run(&["build", "app", "--locked"])
        .exit(1)
        .stderr_has(&["changed since the lock was written", "imgbuild lock"]);
    assert_eq!(
        fs::read_to_string(cx.path("images.lock")).unwrap(),
        lock_before,
        "--locked changed the lock"
    );
    // Without --locked the stale lock is not used: the image resolves
    // afresh and builds.
    cx.build(&["app"]);
    cx.run(&["lock"]).success();
    cx.build(&["app", "--locked"]);
}

/// The parent's packages change under the same names (a new version of
/// one, images.yaml's `debian:` sections as they were): the lock was
/// resolved over other packages, so `--locked` refuses it and plain `build`
/// resolves afresh.
#[test]
fn locked_refuses_a_lock_made_over_other_parent_packages() {
    let repo = AptRepo::start(Variant::Good);
    let cx = project(&repo, "adds-user");
    cx.build(&["debian-root"]);
    cx.run(&["lock"]).success();
    cx.build(&["app", "--locked"]);

    // The parent's dpkg status with one package's version bumped.
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(cx.path("debian.tar"))
        .args(["--wildcards", "*var/lib/dpkg/status"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = String::from_utf8(out.stdout).unwrap();
    let stanza = status
        .split("\n\n")
        .position(|s| s.starts_with("Package: base-files\n"))
        .expect("base-files in the minbase's dpkg status");
    let bumped: Vec<String> = status
        .split("\n\n")
        .enumerate()
        .map(|(i, s)| {
            if i != stanza {
                return s.to_string();
            }
            s.lines()
                .map(|l| match l.strip_prefix("Version: ") {
                    Some(v) => format!("Version: {v}+local1"),
                    None => l.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    let bumped = bumped.join("\n\n");
    assert_ne!(bumped, status);
    cx.write("status-bumped", bumped);
    let yaml = fs::read_to_string(cx.path("images.yaml")).unwrap();
    let changed = yaml.replace(
        "    from: {rootfs: debian.tar}\n",
        "    from: {rootfs: debian.tar}\n    layers: [{src: status-bumped, dest: /var/lib/dpkg/status}]\n",
    );
    assert_ne!(changed, yaml);
    cx.yaml(&changed);
    cx.build(&["debian-root"]);

    let lock_before = fs::read_to_string(cx.path("images.lock")).unwrap();
    cx.run(&["build", "app", "--locked"]).exit(1).stderr_has(&[
        "--locked",
        "images.lock",
        "debian-root",
        "imgbuild lock",
    ]);
    assert_eq!(
        fs::read_to_string(cx.path("images.lock")).unwrap(),
        lock_before,
        "--locked changed the lock"
    );
    // Plain build resolves afresh; a new lock is current again.
    cx.build(&["app"]);
    let locked = cx.run(&["--json", "lock"]).success().json();
    assert_eq!(locked["written"], true, "{locked}");
    cx.build(&["app", "--locked"]);
}

/// A machine without CA certificates (SSL_CERT_FILE and SSL_CERT_DIR, where
/// rustls looks, name none) locks and builds from an http:// mirror, whose
/// signed InRelease is what is trusted; an https:// one fails naming the
/// package to install.
#[test]
fn an_http_mirror_needs_no_ca_certificates() {
    let repo = AptRepo::start(Variant::Good);
    let cx = project(&repo, "adds-user");
    cx.build(&["debian-root"]);
    let empty = cx.scratch.join("no-certs");
    fs::create_dir_all(&empty).unwrap();
    let no_file = empty.join("none.pem");
    let no_certs = [
        ("SSL_CERT_FILE", no_file.to_str().unwrap()),
        ("SSL_CERT_DIR", empty.to_str().unwrap()),
    ];
    assert!(repo.url.starts_with("http://"), "{}", repo.url);
    cx.run_env(&["lock"], &no_certs).success();
    cx.run_env(&["build", "app", "--locked"], &no_certs)
        .success();

    let yaml = fs::read_to_string(cx.path("images.yaml")).unwrap();
    let https = repo.url.replacen("http://", "https://", 1);
    cx.yaml(&yaml.replace(&repo.url, &https));
    cx.run_env(&["lock"], &no_certs)
        .exit(1)
        .stderr_has(&["ca-certificates"]);
}

/// `lock --update PKG` re-resolves the images that install PKG and keeps
/// the others, even where their entries are out of date.
#[test]
fn lock_update_names_the_images_it_resolves_again() {
    let repo = AptRepo::start(Variant::Good);
    let cx = project(&repo, "adds-user");
    let yaml = fs::read_to_string(cx.path("images.yaml")).unwrap();
    let second = yaml
        .split_once("  app:\n")
        .unwrap()
        .1
        .replace("[adds-user]", "[app-alt]");
    cx.yaml(&format!("{yaml}  other:\n{second}"));
    cx.build(&["debian-root"]);
    cx.run(&["lock"]).success();
    let path = cx.path("images.lock");
    let mut lock: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    let version_of = |lock: &serde_json::Value, image: &str, name: &str| -> String {
        lock["images"][image]["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} not locked for {image}: {lock:#}"))["version"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let real = version_of(&lock, "app", "adds-user");
    let other_libfoo = version_of(&lock, "other", "libfoo");
    // Both entries made older by hand, as if the archive had moved on since.
    for (image, name) in [("app", "adds-user"), ("other", "libfoo")] {
        for p in lock["images"][image]["packages"].as_array_mut().unwrap() {
            if p["name"] == name {
                p["version"] = "0.1-1".into();
            }
        }
    }
    fs::write(&path, serde_json::to_string_pretty(&lock).unwrap()).unwrap();

    // Plain `lock` keeps both: their inputs have not changed.
    let kept = cx.run(&["--json", "lock"]).success().json();
    assert_eq!(kept["written"], false, "{kept:#}");
    let indexes = index_requests(&repo).len();

    let out = cx
        .run(&["--json", "lock", "--update", "adds-user"])
        .success()
        .json();
    assert_eq!(out["written"], true, "{out:#}");
    let action = |image: &str| -> serde_json::Value {
        out["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["image"] == image)
            .unwrap_or_else(|| panic!("no outcome for {image}: {out:#}"))
            .clone()
    };
    assert_eq!(action("app")["action"], "updated", "{out:#}");
    assert_eq!(
        action("app")["changed"],
        serde_json::json!([format!("adds-user 0.1-1 → {real}")]),
        "{out:#}"
    );
    assert_eq!(action("other")["action"], "kept", "{out:#}");
    assert!(
        index_requests(&repo).len() > indexes,
        "--update resolved without reading the archive"
    );
    let lock: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(version_of(&lock, "app", "adds-user"), real);
    assert_eq!(version_of(&lock, "other", "libfoo"), "0.1-1");
    assert_ne!(other_libfoo, "0.1-1");

    // `--update` with no name resolves everything again.
    let out = cx.run(&["--json", "lock", "--update"]).success().json();
    assert_eq!(out["written"], true, "{out:#}");
    let lock: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(version_of(&lock, "other", "libfoo"), other_libfoo);
}

/// What `base` in `a_php_stack_from_the_real_archive` asks for, with its
/// debconf answers, and what `php` adds over it. mmdebstrap gets the same.
const PHP_STACK_BASE: &[&str] = &["tzdata", "ca-certificates"];
const PHP_STACK_DEBCONF: &[&str] = &[
    "tzdata tzdata/Areas select Europe",
    "tzdata tzdata/Zones/Europe select Zurich",
];
const PHP_STACK_PHP: &[&str] = &[
    "apache2",
    "libapache2-mod-php8.4",
    "php8.4-cli",
    "php8.4-intl",
    "php8.4-xml",
    "php8.4-mbstring",
    "php8.4-zip",
    "php8.4-gd",
    "php8.4-curl",
    "php8.4-soap",
    "php8.4-pgsql",
    "php8.4-opcache",
];

#[test]
fn a_php_stack_from_the_real_archive() {
    // Through the host's apt sources (deb.debian.org here), verified with
    // the host's debian-archive-keyring.
    let cx = Ctx::new();
    let debconf: Vec<String> = PHP_STACK_DEBCONF
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect();
    cx.yaml(&format!(
        concat!(
            "images:\n",
            "  base:\n",
            "    from: scratch\n",
            "    debian:\n",
            "      suite: trixie\n",
            "      variant: minbase\n",
            "      packages: [{base}]\n",
            "      debconf: [{debconf}]\n",
            "  php:\n",
            "    from: base\n",
            "    debian:\n",
            "      packages: [{php}]\n",
            "    test:\n",
            "      - apache2ctl -t\n",
            "      - \"[ $(getent passwd www-data | cut -d: -f3) = 33 ]\"\n",
            "      - \"[ -L /usr/bin/php ] && [ $(readlink /etc/alternatives/php) = /usr/bin/php8.4 ]\"\n",
            "      - \"[ $(readlink /etc/localtime) = /usr/share/zoneinfo/Europe/Zurich ]\"\n",
        ),
        base = PHP_STACK_BASE.join(", "),
        debconf = debconf.join(", "),
        php = PHP_STACK_PHP.join(", "),
    ));
    cx.run(&["lock"]).success();
    let run = cx.run(&["build", "php", "--locked"]).success();
    run.stderr_has(&["php: running its tests"]);
    let modules = cx.run(&["run", "php", "--", "php", "-m"]).success();
    for m in [
        "intl",
        "xml",
        "mbstring",
        "zip",
        "gd",
        "curl",
        "soap",
        "pgsql",
        "Zend OPcache",
    ] {
        assert!(
            modules.stdout.lines().any(|l| l == m),
            "{m} missing: {}",
            modules.stdout
        );
    }
    // The PHP layer holds PHP and Apache and dpkg's database, not the base.
    let out = cx.scratch.join("oci");
    cx.build(&["php", "--locked", "-o", &format!("oci:{}", out.display())]);
    let image = validate_layout(&out, "php");
    let layer = image.layers.last().unwrap();
    let names: Vec<String> = layer.entries().iter().map(|e| e.path.clone()).collect();
    assert!(names.iter().any(|n| n == "usr/sbin/apache2"));
    assert!(
        !names.iter().any(|n| n == "usr/bin/dpkg"),
        "the base's files are not repeated"
    );
    // A machine-id, if any package made one, is empty.
    for layer in &image.layers {
        if let Some(id) = layer.entries().iter().find(|e| e.path == "etc/machine-id") {
            assert!(id.data.is_empty(), "machine-id {:?}", id.data);
        }
    }
    // Unchanged lock and inputs: all reused.
    let again = cx.build(&["php", "--locked"]);
    assert!(again.layers("php").iter().all(|l| l["built"] == false));
    // mmdebstrap, given the same packages, answers and archive, makes the
    // same root but for the paths the allowlists below name.
    compare_with_mmdebstrap(&cx, &image);
}

// imgbuild's `php` against mmdebstrap's root of the same packages.
//
// A pattern is a path as in a layer (no leading `./` or `/`); `*` stands
// for any characters but `/`, and a final `/**` for a directory and
// everything below it. README.md (Debian packages) gives the same list.

/// Paths only in mmdebstrap's tarball, and why.
const ONLY_IN_MMDEBSTRAP: &[(&str, &str)] = &[
    (
        "dev/*",
        "mmdebstrap's tarball carries /dev's device nodes, the fd and std* links and pts/ and shm/ (a chroot needs them); a container runtime mounts /dev, and layers hold no device nodes: imgbuild's image has /dev empty",
    ),
    (
        "etc/apt/sources.list",
        "the sources mmdebstrap gave apt; imgbuild installs with dpkg and writes none",
    ),
    (
        "etc/fstab",
        "mmdebstrap writes `# UNCONFIGURED FSTAB FOR BASE SYSTEM`, as debootstrap does",
    ),
    (
        "etc/hostname",
        "mmdebstrap copies the host's; imgbuild leaves it out (the container runtime provides it)",
    ),
    (
        "etc/resolv.conf",
        "mmdebstrap copies the host's; imgbuild leaves it out (the container runtime provides it)",
    ),
    (
        "run/lock/apache2",
        "`apache2ctl configtest`, run by libapache2-mod-php8.4's postinst, makes it; mmdebstrap empties /run but for /run/lock's contents, imgbuild keeps nothing in /run but an empty /run/lock; apache2ctl makes it again when Apache starts",
    ),
    (
        "var/cache/apt/archives/**",
        "apt's download directory, its lock and partial/; imgbuild leaves var/cache/apt's contents out, apt makes them again when it runs",
    ),
    (
        "var/lib/apt/lists/*",
        "the lock and partial/ of apt's index directory; imgbuild leaves them out, apt makes them again when it runs",
    ),
    (
        "var/lib/apt/extended_states",
        "apt's record of which packages came in only as dependencies; imgbuild installs with dpkg, so apt takes every package as installed by hand (`apt autoremove` removes none)",
    ),
    (
        "var/lib/dpkg/*-old",
        "dpkg's backups of its status and diversions; imgbuild leaves them out",
    ),
    (
        "var/cache/debconf/*-old",
        "debconf's backups of its databases; imgbuild leaves them out",
    ),
];

/// Paths only in imgbuild's image, and why.
const ONLY_IN_IMGBUILD: &[(&str, &str)] = &[(
    "var/lib/dpkg/available",
    "imgbuild makes it, empty, with dpkg's database when it starts a minbase, as debootstrap does; mmdebstrap does not",
)];

/// Paths on both sides that may differ in one respect (`type`, `mode`,
/// `owner`, `link` or `content`), and why.
const MAY_DIFFER: &[(&str, &str, &str)] = &[
    (
        "var/lib/dpkg/triggers/File",
        "content",
        "dpkg's file triggers, listed in the order the packages were configured: imgbuild's two installs (base, then php, group by group) and mmdebstrap's one apt run order them differently",
    ),
    (
        "var/lib/ucf/hashfile*",
        "content",
        "ucf's hashes of the configuration files it manages and its rotated backups (.0 …), in the order the packages registered them",
    ),
    (
        "var/lib/ucf/registry*",
        "content",
        "ucf's registry of those files and its rotated backups (.0 …), likewise in configuration order",
    ),
];

/// Runs mmdebstrap for the packages, debconf answers and archive of
/// `a_php_stack_from_the_real_archive` (the sources as images.lock
/// records them) and compares its root with `image`: the installed
/// packages exactly; the paths, their type, mode, owner, link target and
/// content, but for what the allowlists above name.
fn compare_with_mmdebstrap(cx: &Ctx, image: &ValidImage) {
    require_tool("mmdebstrap", "mmdebstrap");
    let started = std::time::Instant::now();
    let lock: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(cx.path("images.lock")).unwrap()).unwrap();
    let src = LockedSources::from_lock(&lock);
    let tarball = cx.scratch.join("mmdebstrap.tar");
    let include = [PHP_STACK_BASE, PHP_STACK_PHP].concat().join(",");
    let answers: Vec<String> = PHP_STACK_DEBCONF.iter().map(|a| sh_quote(a)).collect();
    let mut c = Command::new("mmdebstrap");
    c.args(["--mode=unshare", "--variant=minbase", "--quiet"])
        .arg(format!("--architectures={}", src.architecture))
        .arg(format!("--include={include}"))
        // As mmdebstrap's manual does it: after the Essential set, before
        // the packages that ask.
        .arg(format!(
            "--essential-hook=printf '%s\\n' {} | chroot \"$1\" debconf-set-selections",
            answers.join(" ")
        ))
        .arg(&src.codename)
        .arg(&tarball)
        .args(&src.lines)
        // The same as imgbuild's, so shadow's password dates agree.
        .env("SOURCE_DATE_EPOCH", cx.epoch.to_string());
    run_command(c).success();
    let theirs = tarball_tree(&tarball);
    let ours = image_tree(image);

    // Packages: the same names, versions and architectures, all installed.
    // (A mirror push between the lock and mmdebstrap's run, a minute or
    // two apart, would show here as a version difference.)
    let query = cx
        .run(&[
            "run",
            "php",
            "--",
            "dpkg-query",
            "-W",
            "-f",
            r"${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n",
        ])
        .success();
    let mut ours_pkgs = BTreeSet::new();
    for line in query.stdout.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        assert!(
            f.len() == 4 && f[0] == "ii ",
            "imgbuild's php: not installed as it should be: {line:?}"
        );
        ours_pkgs.insert((f[1].to_string(), f[2].to_string(), f[3].to_string()));
    }
    let status = theirs
        .get("var/lib/dpkg/status")
        .expect("var/lib/dpkg/status in mmdebstrap's tarball");
    let theirs_pkgs = installed_in_status(&String::from_utf8_lossy(&status.data));
    let show = |set: &BTreeSet<(String, String, String)>| -> String {
        set.iter()
            .take(30)
            .map(|(n, v, a)| format!("\n  {n} {v} {a}"))
            .collect()
    };
    let only_ours = &ours_pkgs - &theirs_pkgs;
    let only_theirs = &theirs_pkgs - &ours_pkgs;
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "installed packages differ ({} in imgbuild's php, {} in mmdebstrap's root)\nonly in imgbuild's (the first 30):{}\nonly in mmdebstrap's (the first 30):{}",
        ours_pkgs.len(),
        theirs_pkgs.len(),
        show(&only_ours),
        show(&only_theirs)
    );
    // And exactly what images.lock pins.
    let locked: BTreeSet<(String, String, String)> = lock["images"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|i| i["packages"].as_array().unwrap())
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap().to_string();
            (s("name"), s("version"), s("architecture"))
        })
        .collect();
    assert_eq!(locked, ours_pkgs, "installed packages are not the lock's");

    // Paths.
    let mut used = BTreeSet::new();
    let mut allowed = |list: &[(&'static str, &'static str)], path: &str| {
        let hit = list.iter().find(|(p, _)| path_matches(p, path));
        hit.map(|(p, _)| used.insert(*p)).is_some()
    };
    let only_ours: Vec<&String> = ours
        .keys()
        .filter(|p| !theirs.contains_key(*p) && !allowed(ONLY_IN_IMGBUILD, p))
        .collect();
    let only_theirs: Vec<&String> = theirs
        .keys()
        .filter(|p| !ours.contains_key(*p) && !allowed(ONLY_IN_MMDEBSTRAP, p))
        .collect();
    let mut differ = Vec::new();
    let mut differ_allowed = 0;
    for (path, a) in &ours {
        let Some(b) = theirs.get(path) else { continue };
        for (what, x, y) in node_differences(a, b) {
            let hit = MAY_DIFFER
                .iter()
                .find(|(p, w, _)| *w == what && path_matches(p, path));
            match hit {
                Some((p, _, _)) => {
                    used.insert(*p);
                    differ_allowed += 1;
                }
                None => differ.push(format!("/{path}: {what}: imgbuild {x}, mmdebstrap {y}")),
            }
        }
    }
    // Each non-empty kind of surprise, its first 30 paths.
    let section = |title: &str, paths: Vec<String>| -> String {
        if paths.is_empty() {
            return String::new();
        }
        let mut s = format!("\n{title} ({}):", paths.len());
        for p in paths.iter().take(30) {
            s.push_str(&format!("\n  {p}"));
        }
        if paths.len() > 30 {
            s.push_str(&format!("\n  … and {} more", paths.len() - 30));
        }
        s
    };
    assert!(
        only_ours.is_empty() && only_theirs.is_empty() && differ.is_empty(),
        "imgbuild's php and mmdebstrap's root of the same packages differ where no allowlist says why \
         (ONLY_IN_IMGBUILD, ONLY_IN_MMDEBSTRAP, MAY_DIFFER in tests/debian.rs; README.md gives the reasons):{}{}{}",
        section(
            "only in imgbuild's image",
            only_ours.iter().map(|p| format!("/{p}")).collect()
        ),
        section(
            "only in mmdebstrap's tarball",
            only_theirs.iter().map(|p| format!("/{p}")).collect()
        ),
        section("different on the two sides", differ),
    );
    let both = ours.keys().filter(|p| theirs.contains_key(*p)).count();
    eprintln!(
        "mmdebstrap: {} packages, the same versions; {} paths in imgbuild's php, {} in mmdebstrap's root, {both} on both sides ({differ_allowed} allowed differences); {:.0} s for mmdebstrap and the comparison",
        ours_pkgs.len(),
        ours.len(),
        theirs.len(),
        started.elapsed().as_secs_f64(),
    );
    let all = ONLY_IN_IMGBUILD
        .iter()
        .chain(ONLY_IN_MMDEBSTRAP)
        .map(|(p, _)| *p)
        .chain(MAY_DIFFER.iter().map(|(p, _, _)| *p));
    for p in all.filter(|p| !used.contains(p)) {
        eprintln!("note: the allowlist entry {p:?} matched nothing this time");
    }
}

/// What mmdebstrap needs to read the archive imgbuild read, from the
/// lock: the codename, the architecture, and a `deb` line per suite (the
/// release and its -updates from each repository a package came from, and
/// -security from the security archive), with the components the
/// packages came from.
struct LockedSources {
    codename: String,
    architecture: String,
    lines: Vec<String>,
}

impl LockedSources {
    fn from_lock(lock: &serde_json::Value) -> LockedSources {
        let mut codenames = BTreeSet::new();
        let mut architectures = BTreeSet::new();
        let mut bases = BTreeSet::new();
        let mut components = BTreeSet::new();
        for image in lock["images"]
            .as_object()
            .expect("images in the lock")
            .values()
        {
            codenames.insert(image["codename"].as_str().unwrap().to_string());
            architectures.insert(image["architecture"].as_str().unwrap().to_string());
            for p in image["packages"].as_array().unwrap() {
                bases.insert(
                    p["base"]
                        .as_str()
                        .unwrap()
                        .trim_end_matches('/')
                        .to_string(),
                );
                // `pool/main/a/apt/…`
                let path = p["path"].as_str().unwrap();
                components.insert(path.split('/').nth(1).unwrap().to_string());
            }
        }
        assert_eq!(codenames.len(), 1, "one release in the lock: {codenames:?}");
        assert_eq!(
            architectures.len(),
            1,
            "one architecture: {architectures:?}"
        );
        let codename = codenames.pop_first().unwrap();
        let components: Vec<String> = components.into_iter().collect();
        let components = components.join(" ");
        let mut lines = Vec::new();
        for base in &bases {
            if base.ends_with("-security") {
                lines.push(format!("deb {base} {codename}-security {components}"));
            } else {
                lines.push(format!("deb {base} {codename} {components}"));
                lines.push(format!("deb {base} {codename}-updates {components}"));
            }
        }
        assert!(
            bases.iter().any(|b| !b.ends_with("-security")),
            "no package from the main archive in the lock: {bases:?}"
        );
        LockedSources {
            codename,
            architecture: architectures.pop_first().unwrap(),
            lines,
        }
    }
}

/// `pattern` (see the allowlists) matches `path`.
fn path_matches(pattern: &str, path: &str) -> bool {
    fn wildcard(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != b'/')
                .any(|i| wildcard(rest, &s[i..])),
            Some((c, rest)) => s.first() == Some(c) && wildcard(rest, &s[1..]),
        }
    }
    match pattern.strip_suffix("/**") {
        Some(dir) => {
            wildcard(dir.as_bytes(), path.as_bytes())
                || path
                    .match_indices('/')
                    .any(|(i, _)| wildcard(dir.as_bytes(), &path.as_bytes()[..i]))
        }
        None => wildcard(pattern.as_bytes(), path.as_bytes()),
    }
}

#[test]
fn mmdebstrap_allowlist_patterns() {
    assert!(path_matches("dev/*", "dev/null"));
    assert!(!path_matches("dev/*", "dev"));
    assert!(!path_matches("dev/*", "dev/pts/0"));
    assert!(path_matches(
        "var/lib/dpkg/*-old",
        "var/lib/dpkg/status-old"
    ));
    assert!(!path_matches("var/lib/dpkg/*-old", "var/lib/dpkg/status"));
    assert!(path_matches(
        "var/lib/ucf/registry*",
        "var/lib/ucf/registry.7"
    ));
    assert!(path_matches("etc/fstab", "etc/fstab"));
    assert!(!path_matches("etc/fstab", "etc/fstab.d"));
    let apt = "var/cache/apt/archives/**";
    assert!(path_matches(apt, "var/cache/apt/archives"));
    assert!(path_matches(apt, "var/cache/apt/archives/partial/x.deb"));
    assert!(!path_matches(apt, "var/cache/apt/archives2"));
    assert!(!path_matches(apt, "var/cache/apt"));
}

/// A path in a root filesystem, as a tar entry gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    /// 'f' file, 'd' directory, 'l' symlink, 'h' hard link, 'c' and 'b'
    /// devices, 'p' fifo, '?' other.
    kind: char,
    mode: u32,
    uid: u64,
    gid: u64,
    /// A symlink's target as written; a hard link's, as a path here.
    link: Option<String>,
    /// A regular file's bytes.
    data: Vec<u8>,
}

/// `./etc/`, `/etc`, `etc/` → `etc`; the root → "".
fn tar_path(p: &str) -> String {
    let p = p.strip_prefix("./").unwrap_or(p);
    p.trim_start_matches('/').trim_end_matches('/').to_string()
}

/// The differences between `a` (imgbuild's) and `b` (mmdebstrap's): the
/// respect (`type`, `mode`, `owner`, `link`, `content`) and each side.
fn node_differences(a: &Node, b: &Node) -> Vec<(&'static str, String, String)> {
    if a.kind != b.kind {
        return vec![("type", a.kind.to_string(), b.kind.to_string())];
    }
    let mut out = Vec::new();
    if a.mode != b.mode {
        out.push(("mode", format!("{:o}", a.mode), format!("{:o}", b.mode)));
    }
    if (a.uid, a.gid) != (b.uid, b.gid) {
        out.push((
            "owner",
            format!("{}:{}", a.uid, a.gid),
            format!("{}:{}", b.uid, b.gid),
        ));
    }
    if a.link != b.link {
        out.push(("link", format!("{:?}", a.link), format!("{:?}", b.link)));
    }
    if a.data != b.data {
        let show = |d: &[u8]| format!("{} bytes, sha256 {}", d.len(), &common::sha256_hex(d)[..12]);
        out.push(("content", show(&a.data), show(&b.data)));
    }
    out
}

/// The image's root: its layers applied in order, whiteouts (`.wh.NAME`)
/// and opaque markers (`.wh..wh..opq`) removing what the layers below had.
fn image_tree(image: &ValidImage) -> BTreeMap<String, Node> {
    fn remove_below(tree: &mut BTreeMap<String, Node>, dir: &str) {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        tree.retain(|k, _| !k.starts_with(&prefix));
    }
    let mut tree = BTreeMap::new();
    for layer in &image.layers {
        let mut adds = Vec::new();
        for e in layer.entries() {
            let path = tar_path(&e.path);
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", &path));
            if name == ".wh..wh..opq" {
                remove_below(&mut tree, dir);
            } else if let Some(gone) = name.strip_prefix(".wh.") {
                let gone = if dir.is_empty() {
                    gone.to_string()
                } else {
                    format!("{dir}/{gone}")
                };
                tree.remove(&gone);
                remove_below(&mut tree, &gone);
            } else if !path.is_empty() {
                let link = match e.kind {
                    'l' => e.link,
                    'h' => e.link.as_deref().map(tar_path),
                    _ => None,
                };
                let data = if e.kind == 'f' { e.data } else { Vec::new() };
                let node = Node {
                    kind: e.kind,
                    mode: e.mode & 0o7777,
                    uid: e.uid,
                    gid: e.gid,
                    link,
                    data,
                };
                adds.push((path, node));
            }
        }
        tree.extend(adds);
    }
    tree
}

/// The root in a tarball (mmdebstrap's).
fn tarball_tree(path: &Path) -> BTreeMap<String, Node> {
    let file = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut tree = BTreeMap::new();
    for e in archive.entries().expect("a tar stream") {
        let mut e = e.expect("a tar entry");
        let h = e.header().clone();
        let kind = common::tar_kind(h.entry_type());
        let path = tar_path(&e.path().expect("entry path").to_string_lossy());
        let link = e
            .link_name()
            .expect("link name")
            .map(|l| l.to_string_lossy().into_owned());
        let link = match kind {
            'l' => link,
            'h' => link.as_deref().map(tar_path),
            _ => None,
        };
        let mut data = Vec::new();
        if kind == 'f' {
            e.read_to_end(&mut data).expect("entry data");
        }
        if !path.is_empty() {
            let node = Node {
                kind,
                mode: h.mode().expect("mode") & 0o7777,
                uid: h.uid().expect("uid"),
                gid: h.gid().expect("gid"),
                link,
                data,
            };
            tree.insert(path, node);
        }
    }
    tree
}

/// (name, version, architecture) of every package in a dpkg status file;
/// fails on one not fully installed.
fn installed_in_status(text: &str) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for para in text.split("\n\n").filter(|p| !p.trim().is_empty()) {
        let field = |name: &str| {
            para.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        assert_eq!(
            field("Status"),
            "install ok installed",
            "mmdebstrap's root: not installed as it should be:\n{para}"
        );
        out.insert((field("Package"), field("Version"), field("Architecture")));
    }
    out
}

/// `s` as one word for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
