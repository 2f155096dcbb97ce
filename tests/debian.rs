//! Debian packages from an archive: resolved, pinned in images.lock,
//! verified, and installed by the target's own dpkg in the sandbox.
//!
//! The hermetic tests use the signed repository that
//! tests/fixtures/apt-repo/make.sh makes, served on loopback, over a trixie
//! minbase made by mmdebstrap; `a_php_stack_from_the_real_archive` reads
//! Debian's real archive through the host's apt sources.
mod common;

use std::fs;

use common::aptrepo::{APP_GID, APP_UID, AptRepo, SUITE, Variant};
use common::{Ctx, debian_tarball, validate_layout};

/// `debian-root` from the minbase tarball, and `app` installing from `repo`.
fn project(repo: &AptRepo, packages: &str) -> Ctx {
    let cx = Ctx::new();
    fs::copy(debian_tarball(), cx.path("debian.tar")).unwrap();
    fs::copy(&repo.keyring, cx.path("test-keyring.gpg")).unwrap();
    cx.yaml(&format!(
        concat!(
            "images:\n",
            "  debian-root:\n",
            "    from: {{rootfs: debian.tar}}\n",
            "  app:\n",
            "    from: debian-root\n",
            "    debian:\n",
            "      suite: {suite}\n",
            "      mirror: \"{url}\"\n",
            "      keyring: test-keyring.gpg\n",
            "      packages: [{packages}]\n",
        ),
        suite = SUITE,
        url = repo.url,
        packages = packages,
    ));
    cx
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
    let mut again = cx.command(&["--json", "-q", "build", "app", "--locked"]);
    again.env("IMGBUILD_HOME", cx.scratch.join("second-home"));
    let again = common::Report(common::run_command(again).success().json()).manifest("app");
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

#[test]
fn a_php_stack_from_the_real_archive() {
    // Through the host's apt sources (deb.debian.org here), verified with
    // the host's debian-archive-keyring.
    let cx = Ctx::new();
    cx.yaml(concat!(
        "images:\n",
        "  base:\n",
        "    from: scratch\n",
        "    debian:\n",
        "      suite: trixie\n",
        "      variant: minbase\n",
        "      packages: [tzdata, ca-certificates]\n",
        "      debconf: [\"tzdata tzdata/Areas select Europe\", \"tzdata tzdata/Zones/Europe select Zurich\"]\n",
        "  php:\n",
        "    from: base\n",
        "    debian:\n",
        "      packages: [apache2, libapache2-mod-php8.4, php8.4-cli, php8.4-intl, php8.4-xml, php8.4-mbstring, php8.4-zip, php8.4-gd, php8.4-curl, php8.4-soap, php8.4-pgsql, php8.4-opcache]\n",
        "    test:\n",
        "      - apache2ctl -t\n",
        "      - \"[ $(getent passwd www-data | cut -d: -f3) = 33 ]\"\n",
        "      - \"[ -L /usr/bin/php ] && [ $(readlink /etc/alternatives/php) = /usr/bin/php8.4 ]\"\n",
        "      - \"[ $(readlink /etc/localtime) = /usr/share/zoneinfo/Europe/Zurich ]\"\n",
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
}
