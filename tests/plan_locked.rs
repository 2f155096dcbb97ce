//! `plan` and images.lock: a missing, stale or incomplete lock is named per
//! image (text and `--json`'s `unpinned`), `plan --locked` exits 1 with it
//! as `build --locked` would, and a fresh lock says nothing.
//!
//! The first test reads no archive; the fresh lock is written by
//! `imgbuild lock` from the signed test repository served on loopback
//! (tests/fixtures/apt-repo), over a parent unpacked from a small tarball.
mod common;

use std::fs;
use std::process::Command;

use common::Ctx;
use common::aptrepo::{AptRepo, SUITE, Variant};
use common::serve::git;
use serde_json::Value;

const IMAGES: &str = "images:
  base:
    from: scratch
    debian: {suite: trixie, variant: minbase}
  app:
    from: base
    layers: [layers/app]
";

fn unpinned(plan: &Value, image: &str) -> Vec<String> {
    let p = plan
        .as_array()
        .expect("plan --json is a list")
        .iter()
        .find(|p| p["name"] == image)
        .unwrap_or_else(|| panic!("{image} not planned: {plan:#}"));
    p["unpinned"]
        .as_array()
        .unwrap_or_else(|| panic!("{image} has no `unpinned`: {p:#}"))
        .iter()
        .map(|u| u.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_missing_stale_or_incomplete_lock_is_named_and_locked_refuses_it() {
    let cx = Ctx::new();
    cx.write("layers/app/f", "hi\n");
    cx.yaml(IMAGES);

    // No lock.
    let text = cx.run(&["plan", "app"]).success();
    assert!(
        text.stdout
            .contains("not pinned in images.lock: Debian packages: there is no ",)
            && text.stdout.contains("run `imgbuild lock`"),
        "{text}"
    );
    let plan = cx.plan(&["app"]);
    assert_eq!(unpinned(&plan, "app"), [] as [String; 0]);
    let why = unpinned(&plan, "base");
    assert!(
        why.len() == 1 && why[0].contains("there is no") && why[0].contains("images.lock"),
        "{why:?}"
    );
    cx.run(&["plan", "--locked", "app"]).exit(1).stderr_has(&[
        "--locked",
        "base: Debian packages: there is no",
        "run `imgbuild lock`",
    ]);
    // --json: one document, the plan, and the exit status says it.
    let run = cx.run(&["--json", "plan", "--locked", "app"]).exit(1);
    assert_eq!(unpinned(&run.json(), "base"), why);
    assert!(!cx.path("images.lock").exists(), "plan wrote a lock");

    // A lock written for other `debian:` sections.
    let lock = serde_json::json!({"lock_version": 1, "inputs": "0", "images": {}});
    cx.write("images.lock", serde_json::to_string(&lock).unwrap());
    let why = unpinned(&cx.plan(&["app"]), "base");
    assert!(
        why.len() == 1 && why[0].contains("`debian:` sections changed"),
        "{why:?}"
    );
    cx.run(&["plan", "--locked", "base"])
        .exit(1)
        .stderr_has(&["base: Debian packages: images.yaml's `debian:` sections changed"]);

    // A lock current for images.yaml but without this image's entry.
    let spec = imgbuild::spec::Spec::load(&cx.path("images.yaml")).unwrap();
    let lock = serde_json::json!({
        "lock_version": 1,
        "inputs": imgbuild::debian::lock::inputs(&spec),
        "images": {},
    });
    cx.write("images.lock", serde_json::to_string(&lock).unwrap());
    let why = unpinned(&cx.plan(&["base"]), "base");
    assert!(
        why.len() == 1 && why[0].contains("no entry for this image"),
        "{why:?}"
    );
    cx.run(&["plan", "--locked", "base"])
        .exit(1)
        .stderr_has(&["base: Debian packages: images.lock has no entry"]);
    // An image that installs no packages, over none that do, needs no pin.
    cx.yaml("images:\n  solo:\n    from: scratch\n    layers: [layers/app]\n");
    let plan = cx.plan(&["--locked", "solo"]);
    assert_eq!(unpinned(&plan, "solo"), [] as [String; 0]);
}

/// A parent tree with an empty dpkg database, as a tarball.
fn root_tarball(cx: &Ctx, status: &str) {
    cx.write("root/var/lib/dpkg/status", status);
    cx.write("root/etc/hostname", "root\n");
    let out = Command::new("tar")
        .arg("-cf")
        .arg(cx.path("root.tar"))
        .arg("-C")
        .arg(cx.path("root"))
        .arg(".")
        .output()
        .expect("tar runs");
    assert!(
        out.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_fresh_lock_says_nothing_and_a_moved_parent_is_named() {
    let repo = AptRepo::start(Variant::Good);
    let cx = Ctx::new();
    fs::copy(&repo.keyring, cx.path("test-keyring.gpg")).unwrap();
    root_tarball(&cx, "");
    cx.yaml(&format!(
        "images:
  root:
    from: {{rootfs: root.tar}}
  app:
    from: root
    debian:
      suite: {SUITE}
      mirror: \"{url}\"
      keyring: test-keyring.gpg
      packages: [libbar]
",
        url = repo.url
    ));
    cx.build(&["root"]);
    cx.run(&["lock"]).success();

    let plan = cx.plan(&["app"]);
    assert_eq!(unpinned(&plan, "app"), [] as [String; 0]);
    let text = cx.run(&["plan", "--locked", "app"]).success();
    assert!(!text.stdout.contains("images.lock"), "{text}");

    // The parent's packages move under the same images.yaml: the lock was
    // resolved over others, as `build --locked` would say.
    root_tarball(
        &cx,
        "Package: libfoo\nStatus: install ok installed\nVersion: 1.0-1\nArchitecture: all\n\n",
    );
    cx.build(&["root"]);
    let why = unpinned(&cx.plan(&["app"]), "app");
    assert!(
        why.len() == 1 && why[0].contains("over other packages below this image than `root`"),
        "{why:?}"
    );
    cx.run(&["plan", "--locked", "app"])
        .exit(1)
        .stderr_has(&["app: Debian packages: images.lock was written over other packages"]);
    cx.run(&["lock"]).success();
    let plan = cx.plan(&["--locked", "app"]);
    assert_eq!(unpinned(&plan, "app"), [] as [String; 0]);
}

/// A git source with no pin, then pinned, then with another ref: `plan`
/// names it on the image whose layer uses it; `plan --locked` refuses it
/// at loading, as `build --locked` does, before anything is fetched.
#[test]
fn git_source_pins_are_named_and_locked_refuses_them_at_loading() {
    let cx = Ctx::new();
    let repo = cx.scratch.join("repo");
    fs::create_dir_all(&repo).unwrap();
    fs::write(repo.join("version.php"), "<?php\n").unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    git(&repo, &["tag", "-a", "-m", "v1", "v1"]);
    let url = format!("file://{}", repo.display());
    cx.write("layers/app/f", "hi\n");
    cx.yaml(&format!(
        "sources:\n  m:\n    git: {{url: \"{url}\", ref: main}}\nimages:\n  core:\n    from: scratch\n    layers:\n      - {{source: m, dest: /m}}\n  other:\n    from: scratch\n    layers: [layers/app]\n"
    ));

    let plan = cx.plan(&["core", "other"]);
    assert_eq!(
        unpinned(&plan, "core"),
        ["git source `m` (it has no entry)"]
    );
    assert_eq!(unpinned(&plan, "other"), [] as [String; 0]);
    // Planned alone, `other` still fails a --locked build: every source
    // is loaded.
    let plan = cx.plan(&["other"]);
    assert_eq!(
        unpinned(&plan, "other"),
        ["git source `m` (it has no entry), which every --locked build loads"]
    );
    let text = cx.run(&["plan", "core"]).success();
    assert!(
        text.stdout.contains(
            "not pinned in images.lock: git source `m` (it has no entry); run `imgbuild lock`"
        ),
        "{text}"
    );
    // The same refusal, and exit status, as `build --locked`'s.
    let build = cx.run(&["build", "--locked", "core"]);
    let plan = cx.run(&["plan", "--locked", "core"]);
    assert_eq!(plan.code, build.code, "{plan}\n{build}");
    assert_ne!(plan.code, 0, "{plan}");
    plan.stderr_has(&[
        "git source `m`",
        "not pinned in images.lock",
        "imgbuild lock",
    ]);

    cx.run(&["lock"]).success();
    let plan = cx.plan(&["--locked", "core", "other"]);
    assert_eq!(unpinned(&plan, "core"), [] as [String; 0]);

    let yaml = fs::read_to_string(cx.path("images.yaml")).unwrap();
    cx.yaml(&yaml.replace("ref: main", "ref: v1"));
    let plan = cx.plan(&["core"]);
    assert_eq!(
        unpinned(&plan, "core"),
        ["git source `m` (its url or ref changed since it was pinned)"]
    );
    cx.run(&["plan", "--locked", "core"])
        .stderr_has(&["its url or ref changed since it was pinned"]);
}
