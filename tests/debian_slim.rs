//! Slim images: dpkg's path filters (`debian: path_exclude, path_include`)
//! over what a minbase bootstrap extracts itself and what dpkg unpacks, in
//! the image and in its children; and a compression chosen per image
//! (`compression: zstd:9`).
mod common;

use std::fs;

use common::{Ctx, TarEntry, ValidLayer, validate_layout};

/// debian-slim's rules (/etc/dpkg/dpkg.cfg.d/docker in debian:trixie-slim).
const SLIM: &str = concat!(
    "      path_exclude:\n",
    "        - /usr/share/doc/*\n",
    "        - /usr/share/man/*\n",
    "        - /usr/share/groff/*\n",
    "        - /usr/share/info/*\n",
    "        - /usr/share/lintian/*\n",
    "        - /usr/share/linda/*\n",
    "        - /usr/share/locale/*\n",
    "      path_include:\n",
    "        - /usr/share/doc/*/copyright\n",
);

/// A `run:` step that makes a tiny package with documentation and a
/// manual page (dpkg-deb is Essential) and installs it with dpkg.
const TINY_DEB: &str = concat!(
    "\"set -e; p=/tmp/tiny; mkdir -p $p/DEBIAN $p/usr/bin $p/usr/share/doc/tiny $p/usr/share/man/man1; ",
    "printf 'Package: tiny\\\\nVersion: 1\\\\nArchitecture: all\\\\nMaintainer: t <t@example.org>\\\\nDescription: t\\\\n' > $p/DEBIAN/control; ",
    "printf '#!/bin/sh\\\\n' > $p/usr/bin/tiny; chmod 755 $p/usr/bin/tiny; ",
    "echo c > $p/usr/share/doc/tiny/copyright; echo l | gzip -n > $p/usr/share/doc/tiny/changelog.gz; ",
    "echo m | gzip -n > $p/usr/share/man/man1/tiny.1.gz; ",
    "dpkg-deb --root-owner-group --build $p /tmp/tiny.deb >/dev/null; dpkg -i /tmp/tiny.deb; rm -rf $p /tmp/tiny.deb\"",
);

/// Regular files the rules leave out, in a layer's entries. But for
/// `usr/share/info/dir`: install-info's trigger writes it, dpkg does not
/// unpack it, so filters do not apply to it (in debian-slim neither).
fn excluded_files(entries: &[TarEntry]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e.kind == 'f' || e.kind == 'h')
        .map(|e| e.path.clone())
        .filter(|p| p != "usr/share/info/dir")
        .filter(|p| {
            let doc = p.starts_with("usr/share/doc/") && !p.ends_with("/copyright");
            let other = ["man", "groff", "info", "lintian", "linda", "locale"]
                .iter()
                .any(|d| p.starts_with(&format!("usr/share/{d}/")));
            doc || other
        })
        .collect()
}

/// The packages a layer's dpkg status lists as installed.
fn installed(layer: &ValidLayer) -> Vec<String> {
    let status = String::from_utf8(layer.entry("var/lib/dpkg/status").data).unwrap();
    status
        .split("\n\n")
        .filter(|p| p.contains("\nStatus: install ok installed"))
        .filter_map(|p| p.lines().find_map(|l| l.strip_prefix("Package: ")))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_slim_minbase_and_its_child_leave_docs_out_but_keep_copyrights() {
    // From Debian's real archive (the host's apt sources), as ci/image.yaml.
    let cx = Ctx::new();
    cx.yaml(&format!(
        concat!(
            "images:\n",
            "  base:\n",
            "    from: scratch\n",
            "    compression: zstd:9\n",
            "    debian:\n",
            "      suite: trixie\n",
            "      variant: minbase\n",
            "{slim}",
            "    test:\n",
            "      - test -s /usr/share/doc/dpkg/copyright\n",
            "      - test ! -e /usr/share/doc/dpkg/changelog.Debian.gz\n",
            "  child:\n",
            "    from: base\n",
            "    debian:\n",
            "      packages: [less]\n",
            "    run:\n",
            "      - {tiny}\n",
            "    test:\n",
            "      - less --version\n",
            "      - test -s /usr/share/doc/less/copyright\n",
            "      - test ! -e /usr/share/man/man1/less.1.gz\n",
        ),
        slim = SLIM,
        tiny = TINY_DEB,
    ));
    cx.run(&["check"]).success();
    cx.run(&["lock"]).success();
    let out = cx.scratch.join("oci");
    let report = cx.build(&["child", "--locked", "-o", &format!("oci:{}", out.display())]);
    let image = validate_layout(&out, "child");
    assert_eq!(image.layers.len(), 3, "{}", report.0);

    // The minbase layer: what the bootstrap extracted and what dpkg
    // unpacked both went through the rules.
    let base = &image.layers[0];
    assert_eq!(
        base.media_type, "application/vnd.oci.image.layer.v1.tar+zstd",
        "compression: zstd:9 gives a zstd layer"
    );
    let entries = base.entries();
    let left = excluded_files(&entries);
    assert!(
        left.is_empty(),
        "{} files the rules exclude, e.g. {:?}",
        left.len(),
        &left[..left.len().min(20)]
    );
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    let packages = installed(base);
    assert!(packages.len() > 50, "{packages:?}");
    // Every installed package's copyright is there (or its doc directory
    // is a link to another package's, as Debian ships some).
    let mut without = Vec::new();
    for p in &packages {
        let dir = format!("usr/share/doc/{p}");
        let file = format!("{dir}/copyright");
        let link = entries.iter().any(|e| e.path == dir && e.kind == 'l');
        if !link && !paths.contains(&file.as_str()) {
            without.push(p.clone());
        }
    }
    assert!(without.is_empty(), "no copyright file for {without:?}");
    // dpkg's and coreutils' own binaries are there: the rules touch only
    // the documentation.
    for p in [
        "usr/bin/dpkg",
        "usr/bin/ls",
        "usr/share/doc/coreutils/copyright",
    ] {
        assert!(paths.contains(&p), "{p} missing");
    }
    // The rules are in the image for later installs, as debian-slim does.
    let cfg = String::from_utf8(base.entry("etc/dpkg/dpkg.cfg.d/imgbuild").data).unwrap();
    let rules: Vec<&str> = cfg.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(rules.first(), Some(&"path-exclude=/usr/share/doc/*"));
    assert_eq!(
        rules.last(),
        Some(&"path-include=/usr/share/doc/*/copyright")
    );
    assert_eq!(rules.len(), 8, "{cfg}");

    // The child sets no rules: its dpkg read the base's file.
    let child = &image.layers[1];
    assert_eq!(
        child.media_type, "application/vnd.oci.image.layer.v1.tar+gzip",
        "compression is the image's own, not inherited"
    );
    let entries = child.entries();
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"usr/bin/less"), "{paths:?}");
    assert!(paths.contains(&"usr/share/doc/less/copyright"), "{paths:?}");
    let left = excluded_files(&entries);
    assert!(
        left.is_empty(),
        "{} files the rules exclude, e.g. {:?}",
        left.len(),
        &left[..left.len().min(20)]
    );
    assert!(
        !paths.contains(&"etc/dpkg/dpkg.cfg.d/imgbuild"),
        "the child writes no rules of its own"
    );

    // A `run:` step's dpkg (a package a job would install by hand) reads
    // them too.
    let run = &image.layers[2];
    let entries = run.entries();
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    for p in ["usr/bin/tiny", "usr/share/doc/tiny/copyright"] {
        assert!(paths.contains(&p), "{p} missing: {paths:?}");
    }
    for p in [
        "usr/share/doc/tiny/changelog.gz",
        "usr/share/man/man1/tiny.1.gz",
    ] {
        assert!(!paths.contains(&p), "{p} installed: {paths:?}");
    }

    // The rules are part of the layer's key, not of images.lock: without
    // them the lock holds and the base is another layer.
    let again = cx.build(&["child", "--locked"]);
    assert!(again.layers("base").iter().all(|l| l["built"] == false));
    let plain = fs::read_to_string(cx.path("images.yaml"))
        .unwrap()
        .replace(SLIM, "");
    cx.yaml(&plain);
    let lock = cx.run(&["--json", "lock"]).success().json();
    assert_eq!(lock["written"], false, "{lock}");
    let plan = cx.plan(&["base"]);
    assert_eq!(
        common::plan_of(&plan, "base")["action"],
        "build",
        "{plan:#}"
    );
}

#[test]
fn bad_path_filters_and_compressions_name_the_image_and_line() {
    let cx = Ctx::new();
    cx.yaml(concat!(
        "images:\n",
        "  slim:\n",
        "    from: scratch\n",
        "    debian:\n",
        "      suite: trixie\n",
        "      variant: minbase\n",
        "      path_exclude: [\"usr/share/doc/*\"]\n",
        "      path_include: [\"/usr/share/doc/[a-\"]\n",
        "    compression: zstd:30\n",
    ));
    let run = cx.run(&["check"]).exit(2);
    run.stderr_has(&[
        "images.yaml:7",
        "slim",
        "`path_exclude: usr/share/doc/*`: the glob does not start with `/`",
    ]);
    run.stderr_has(&[
        "images.yaml:8",
        "`path_include: /usr/share/doc/[a-`: the glob has a `[` with no closing `]`",
    ]);
    run.stderr_has(&[
        "images.yaml:9",
        "compression level \"30\" of zstd is not a number from 1 to 19",
    ]);
}
