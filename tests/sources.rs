//! `sources:` with real peers: a git repository made here with `git`, an
//! HTTP server on loopback (python3's) serving archives made with `tar` and
//! `zip`, and a directory chosen with `--set`. Every image built is checked
//! with `common::validate_layout`.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::serve::{Server, git};
use common::{Ctx, run_command, validate_layout};
use serde_json::Value;

const VERSION_PHP: &str = "<?php\ndefined('MOODLE_INTERNAL') || die();\n$version  = 2025100600.03;\n$release  = '5.1.3 (Build: 20251006)';\n$branch   = '501';\n";

/// A Moodle-shaped repository at `scratch/moodle` (version.php, public/,
/// a tag v5.1.3 and a branch main); its file:// URL.
fn moodle_repo(cx: &Ctx) -> (PathBuf, String) {
    let repo = cx.scratch.join("moodle");
    std::fs::create_dir_all(repo.join("public/lib")).unwrap();
    std::fs::write(repo.join("version.php"), VERSION_PHP).unwrap();
    std::fs::write(repo.join("public/index.php"), "<?php echo 'moodle';\n").unwrap();
    std::fs::write(repo.join("public/lib/setup.php"), "<?php\n").unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "Moodle 5.1.3"]);
    git(&repo, &["tag", "-a", "-m", "5.1.3", "v5.1.3"]);
    let url = format!("file://{}", repo.display());
    (repo, url)
}

/// The layer of `image` (in the layout `out`) that holds `path`.
fn layer_paths(out: &Path, image: &str) -> Vec<Vec<String>> {
    validate_layout(out, image)
        .layers
        .iter()
        .map(|l| l.entries().into_iter().map(|e| e.path).collect())
        .collect()
}

fn lock_json(cx: &Ctx) -> Value {
    serde_json::from_str(&std::fs::read_to_string(cx.path("images.lock")).unwrap()).unwrap()
}

#[test]
fn a_git_source_is_pinned_built_and_named_in_tags() {
    let cx = Ctx::new();
    let (repo, url) = moodle_repo(&cx);
    cx.yaml(&format!(
        r#"sources:
  moodle-51:
    git: {{url: "{url}", ref: v5.1.3}}
images:
  moodle-5.1:
    from: scratch
    layers:
      - {{source: moodle-51, dest: /var/www/moodle, exclude: [.git]}}
      - {{source: moodle-51, src: public, dest: /srv/www}}
    tags: ["moodle:${{source.moodle-51.release}}-${{source.moodle-51.short}}"]
    config:
      labels:
        moodle.branch: "${{source.moodle-51.branch}}"
        moodle.commit: "${{source.moodle-51.commit}}"
"#
    ));
    let commit = git(&repo, &["rev-parse", "v5.1.3^{commit}"]);
    cx.run(&["lock"])
        .success()
        .stderr_has(&["source moodle-51: pinned"]);
    let lock = lock_json(&cx);
    assert_eq!(lock["sources"]["moodle-51"]["commit"], commit.as_str());
    assert_eq!(lock["sources"]["moodle-51"]["ref"], "v5.1.3");

    let graph = cx
        .run(&["--json", "graph", "--format", "json"])
        .success()
        .json();
    let tag = format!("moodle:5.1.3-{}", &commit[..8]);
    assert_eq!(graph["images"][0]["tags"][0], tag.as_str(), "{graph:#}");

    let out = cx.scratch.join("out");
    cx.build(&["moodle-5.1", "-o", &format!("oci:{}", out.display())]);
    let image = validate_layout(&out, "moodle-5.1");
    let labels = &image.config["config"]["Labels"];
    assert_eq!(labels["moodle.branch"], "501", "{labels:#}");
    assert_eq!(labels["moodle.commit"], commit.as_str());
    let paths = layer_paths(&out, "moodle-5.1");
    for want in [
        "var/www/moodle/version.php",
        "var/www/moodle/public/index.php",
        "var/www/moodle/public/lib/setup.php",
    ] {
        assert!(paths[0].iter().any(|p| p == want), "{want}: {paths:?}");
    }
    assert!(
        paths[1].iter().any(|p| p == "srv/www/index.php"),
        "{paths:?}"
    );
    assert!(!paths[0].iter().any(|p| p.contains(".git")), "{paths:?}");
    // The tree is in the store under its commit.
    assert!(
        cx.home
            .join("sources/tree")
            .join(&commit)
            .join("version.php")
            .is_file()
    );
}

#[test]
fn a_branch_moves_the_build_only_after_lock_update() {
    let cx = Ctx::new();
    let (repo, url) = moodle_repo(&cx);
    cx.yaml(&format!(
        "sources:\n  m:\n    git: {{url: \"{url}\", ref: main}}\nimages:\n  core:\n    from: scratch\n    layers:\n      - {{source: m, dest: /m}}\n"
    ));
    // Not pinned: built from what the branch names now, with a warning;
    // --locked refuses.
    cx.run(&["--json", "-q", "build", "core"])
        .success()
        .stderr_has(&["`m` is not pinned", "imgbuild lock"]);
    cx.run(&["build", "--locked", "core"]).exit(2).stderr_has(&[
        "git source `m`",
        "not pinned in images.lock",
        "run `imgbuild lock`",
    ]);

    cx.run(&["lock"]).success();
    let first = git(&repo, &["rev-parse", "main"]);
    assert_eq!(lock_json(&cx)["sources"]["m"]["commit"], first.as_str());
    let before = cx.build(&["--locked", "core"]);

    std::fs::write(repo.join("public/new.php"), "<?php // new\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "a new file"]);
    let second = git(&repo, &["rev-parse", "main"]);

    // The lock holds: the same layer, the same image.
    let again = cx.build(&["--locked", "core"]);
    assert_eq!(again.manifest("core"), before.manifest("core"));
    assert!(!again.layer_summary("core")[0].2, "the layer was rebuilt");
    // And on a machine whose store has never seen the source, the pinned
    // commit (no longer the branch's tip) is fetched, not the tip.
    std::fs::remove_dir_all(cx.home.join("sources")).unwrap();
    let fresh = cx.build(&["--locked", "core"]);
    assert_eq!(fresh.manifest("core"), before.manifest("core"));
    assert!(cx.home.join("sources/tree").join(&first).is_dir());
    assert!(!cx.home.join("sources/tree").join(&second).exists());

    cx.run(&["lock", "--update", "m"])
        .success()
        .stderr_has(&["source m: updated", &second]);
    assert_eq!(lock_json(&cx)["sources"]["m"]["commit"], second.as_str());
    let plan = cx.plan(&["core"]);
    let reason = plan[0]["layers"][0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!("source m (commit {second})")) && reason.contains("new.php"),
        "{plan:#}"
    );
    let out = cx.scratch.join("out");
    let after = cx.build(&["--locked", "core", "-o", &format!("oci:{}", out.display())]);
    assert_ne!(after.manifest("core"), before.manifest("core"));
    assert!(
        layer_paths(&out, "core")[0]
            .iter()
            .any(|p| p == "m/public/new.php")
    );

    // A changed ref is not what the lock pinned.
    let yaml = std::fs::read_to_string(cx.path("images.yaml")).unwrap();
    cx.yaml(&yaml.replace("ref: main", "ref: v5.1.3"));
    cx.run(&["build", "--locked", "core"])
        .exit(2)
        .stderr_has(&["its url or ref changed since it was pinned"]);
}

fn sha256_file(p: &Path) -> String {
    common::sha256_hex(&std::fs::read(p).unwrap())
}

/// `scratch/www/moodle.{tgz,txz,zip}` of a tree `moodle/…`.
fn archives(cx: &Ctx) -> PathBuf {
    let src = cx.scratch.join("tree");
    std::fs::create_dir_all(src.join("moodle/public")).unwrap();
    std::fs::write(
        src.join("moodle/version.php"),
        VERSION_PHP.replace("5.1.3", "4.5.8+"),
    )
    .unwrap();
    std::fs::write(src.join("moodle/public/index.php"), "<?php\n").unwrap();
    std::os::unix::fs::symlink("public/index.php", src.join("moodle/index.php")).unwrap();
    let www = cx.scratch.join("www");
    std::fs::create_dir_all(&www).unwrap();
    for (flag, name) in [("-czf", "moodle.tgz"), ("-cJf", "moodle.txz")] {
        let mut c = Command::new("tar");
        c.current_dir(&src)
            .arg(flag)
            .arg(www.join(name))
            .arg("moodle");
        run_command(c).success();
    }
    let mut c = Command::new("zip");
    c.current_dir(&src)
        .args(["-q", "-r", "-y"])
        .arg(www.join("moodle.zip"))
        .arg("moodle");
    run_command(c).success();
    www
}

#[test]
fn archives_in_three_formats_are_verified_and_extracted() {
    let cx = Ctx::new();
    let www = archives(&cx);
    let server = Server::start(&www, None);
    let mut yaml = String::from("sources:\n");
    for (name, file) in [
        ("tgz", "moodle.tgz"),
        ("txz", "moodle.txz"),
        ("zip", "moodle.zip"),
    ] {
        yaml.push_str(&format!(
            "  {name}:\n    archive: {{url: \"{}\", sha256: \"{}\"}}\n",
            server.url(file),
            sha256_file(&www.join(file))
        ));
    }
    yaml.push_str(
        "images:\n  m:\n    from: scratch\n    layers:\n      - {source: tgz, src: moodle, dest: /a}\n      - {source: txz, src: moodle, dest: /b}\n      - {source: zip, src: moodle/public, dest: /c}\n    tags: [\"m:${source.tgz.release}\"]\n",
    );
    cx.yaml(&yaml);
    let graph = cx
        .run(&["--json", "graph", "--format", "json"])
        .success()
        .json();
    assert_eq!(graph["images"][0]["tags"][0], "m:4.5.8-plus", "{graph:#}");
    let out = cx.scratch.join("out");
    cx.build(&["m", "-o", &format!("oci:{}", out.display())]);
    let image = validate_layout(&out, "m");
    for (layer, dir) in [(0, "a"), (1, "b")] {
        let entries = image.layers[layer].entries();
        let link = entries
            .iter()
            .find(|e| e.path == format!("{dir}/index.php"));
        assert!(link.is_some_and(|e| e.kind == 'l'), "{dir}: {:?}", entries);
        assert!(
            entries
                .iter()
                .any(|e| e.path == format!("{dir}/version.php"))
        );
    }
    assert!(
        image.layers[2]
            .entries()
            .iter()
            .any(|e| e.path == "c/index.php")
    );
    // The three trees are the same: the two tar layers are byte for byte
    // alike but for their destination, so compare the paths below it.
    let strip = |l: usize, d: &str| -> Vec<String> {
        image.layers[l]
            .entries()
            .into_iter()
            .filter_map(|e| e.path.strip_prefix(d).map(str::to_string))
            .collect()
    };
    assert_eq!(strip(0, "a/"), strip(1, "b/"));

    // A wrong sha256 names the URL, the expected and the actual.
    let wrong = "0".repeat(64);
    let actual = sha256_file(&www.join("moodle.tgz"));
    cx.yaml(&yaml.replace(&actual, &wrong));
    let _ = std::fs::remove_dir_all(cx.home.join("sources/archive"));
    cx.run(&["check"]).exit(2).stderr_has(&[
        &server.url("moodle.tgz"),
        &format!("images.yaml expects {wrong}"),
        &format!("the download is {actual}"),
    ]);
}

#[test]
fn hostile_archive_entries_are_refused_by_name() {
    let cx = Ctx::new();
    let www = cx.scratch.join("www");
    std::fs::create_dir_all(&www).unwrap();
    // Python's tarfile writes what `tar` itself would not.
    let make = r#"
import io, sys, tarfile
def add(t, name, data=b"x", link=None):
    i = tarfile.TarInfo(name)
    if link is not None:
        i.type = tarfile.SYMTYPE; i.linkname = link; t.addfile(i)
    else:
        i.size = len(data); t.addfile(i, io.BytesIO(data))
with tarfile.open(sys.argv[1] + "/dotdot.tgz", "w:gz") as t:
    add(t, "ok/file"); add(t, "ok/../../evil")
with tarfile.open(sys.argv[1] + "/link.tgz", "w:gz") as t:
    add(t, "ok/etc", link="/etc")
with tarfile.open(sys.argv[1] + "/through.tgz", "w:gz") as t:
    add(t, "a/up", link=".."); add(t, "a/up/up2", link=".."); add(t, "a/up/up2/evil")
"#;
    let mut c = Command::new("python3");
    c.args(["-c", make]).arg(&www);
    run_command(c).success();
    let server = Server::start(&www, None);
    for (file, entry, why) in [
        ("dotdot.tgz", "ok/../../evil", "contains `..`"),
        ("link.tgz", "ok/etc", "is a link that leaves the tree"),
        ("through.tgz", "a/up/up2", "is written through a link"),
    ] {
        cx.yaml(&format!(
            "sources:\n  bad:\n    archive: {{url: \"{}\", sha256: \"{}\"}}\nimages:\n  x:\n    from: scratch\n    layers:\n      - {{source: bad, dest: /x}}\n",
            server.url(file),
            sha256_file(&www.join(file))
        ));
        cx.run(&["check"])
            .exit(2)
            .stderr_has(&[&format!("entry `{entry}` {why}"), "refused"]);
    }
    assert!(!cx.scratch.join("evil").exists() && !cx.home.join("evil").exists());
    assert!(
        !cx.home.join("sources/archive").exists()
            || common::list_names(&cx.home.join("sources/archive")).is_empty()
    );
}

#[test]
fn a_dir_source_comes_from_set_and_names_are_checked() {
    let cx = Ctx::new();
    std::fs::create_dir_all(cx.scratch.join("checkout/public")).unwrap();
    std::fs::write(cx.scratch.join("checkout/version.php"), VERSION_PHP).unwrap();
    std::fs::write(
        cx.scratch.join("checkout/public/index.php"),
        "<?php // local\n",
    )
    .unwrap();
    cx.yaml(
        "vars:\n  moodle_src: upstream/moodle\nsources:\n  local:\n    dir: \"${moodle_src}\"\nimages:\n  dev:\n    from: scratch\n    layers:\n      - {source: local, src: public, dest: /var/www/moodle}\n    tags: [\"dev:${source.local.release}\"]\n",
    );
    cx.run(&["check"]).exit(2).stderr_has(&[
        "images.yaml:5:10",
        "source directory `upstream/moodle` is not a directory",
        "--set",
    ]);
    let set = "moodle_src=../scratch/checkout";
    // The checkout is outside the build context (the project) until the
    // context is widened, explicitly, to both.
    cx.run(&["--set", set, "check"]).exit(2).stderr_has(&[
        "images.yaml:5:10",
        "source directory `../scratch/checkout` is outside the build context",
        "--context DIR",
    ]);
    let out = cx.scratch.join("out");
    cx.build(&[
        "--context",
        "..",
        "--set",
        set,
        "dev",
        "-o",
        &format!("oci:{}", out.display()),
    ]);
    let paths = layer_paths(&out, "dev");
    assert!(
        paths[0].iter().any(|p| p == "var/www/moodle/index.php"),
        "{paths:?}"
    );
    let graph = cx
        .run(&[
            "--context",
            "..",
            "--set",
            set,
            "--json",
            "graph",
            "--format",
            "json",
        ])
        .success()
        .json();
    assert_eq!(graph["images"][0]["tags"][0], "dev:5.1.3");

    // A var --set cannot name, and a source a layer cannot name.
    cx.run(&["--set", "moodle_sr=x", "check"])
        .exit(2)
        .stderr_has(&[
            "no top-level var `moodle_sr`",
            "did you mean `--set moodle_src=…`?",
        ]);
    let yaml = std::fs::read_to_string(cx.path("images.yaml")).unwrap();
    cx.yaml(&yaml.replace("{source: local,", "{source: lokal,"));
    cx.run(&["--context", "..", "--set", set, "check"])
        .exit(2)
        .stderr_has(&[
            "images.yaml:10:",
            "unknown source `lokal`",
            "did you mean `local`?",
        ]);
}

#[test]
fn a_token_is_sent_but_never_shown_or_stored() {
    let cx = Ctx::new();
    let www = archives(&cx);
    let token = "oauth2:s3cret-T0KEN-value";
    let header = {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(token)
        )
    };
    let server = Server::start(&www, Some(&header));
    cx.yaml(&format!(
        "sources:\n  private:\n    archive: {{url: \"{}\", sha256: \"{}\"}}\n    token_env: SRC_TOKEN\nimages:\n  p:\n    from: scratch\n    layers:\n      - {{source: private, src: moodle, dest: /p}}\n",
        server.url("moodle.tgz"),
        sha256_file(&www.join("moodle.tgz"))
    ));
    cx.run(&["check"])
        .exit(2)
        .stderr_has(&["`token_env: SRC_TOKEN`", "SRC_TOKEN is not set"]);
    // A refused download is a failure (1), not bad input (2).
    cx.run_env(&["check"], &[("SRC_TOKEN", "oauth2:wrong")])
        .exit(1)
        .stderr_has(&["answered 401"]);
    let out = cx.scratch.join("out");
    let run = cx
        .run_env(
            &[
                "--json",
                "build",
                "p",
                "-o",
                &format!("oci:{}", out.display()),
            ],
            &[("SRC_TOKEN", token)],
        )
        .success();
    validate_layout(&out, "p");
    for text in [&run.stdout, &run.stderr] {
        assert!(
            !text.contains("s3cret") && !text.contains(&header[6..]),
            "{run}"
        );
    }
    // Nowhere in the store or the output, compressed or not.
    let mut files = Vec::new();
    for root in [&cx.home, &out] {
        walk(root, &mut files);
    }
    assert!(files.len() > 5, "{files:?}");
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        let plain = match bytes.get(..2) {
            Some([0x1f, 0x8b]) => common::decompress(&bytes, common::LAYER_GZIP, "blob"),
            _ => bytes,
        };
        let s = String::from_utf8_lossy(&plain);
        assert!(
            !s.contains("s3cret") && !s.contains(&header[6..]),
            "{}",
            f.display()
        );
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            walk(&e.path(), out);
        } else if t.is_file() {
            out.push(e.path());
        }
    }
}

#[test]
fn a_private_git_source_over_http_gets_its_token_from_the_environment() {
    let cx = Ctx::new();
    let (repo, _) = moodle_repo(&cx);
    let token = "oauth2:glpat-s3cret-GIT-token";
    let header = {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(token)
        )
    };
    let server = Server::git(&cx.scratch, Some(&header));
    cx.yaml(&format!(
        "sources:\n  private:\n    git: {{url: \"{}\", ref: v5.1.3}}\n    token_env: GIT_TOKEN\nimages:\n  p:\n    from: scratch\n    layers:\n      - {{source: private, dest: /p}}\n",
        server.url("moodle/.git")
    ));
    cx.run(&["lock"])
        .exit(2)
        .stderr_has(&["GIT_TOKEN is not set"]);
    let wrong = cx
        .run_env(&["lock"], &[("GIT_TOKEN", "oauth2:wrong-token")])
        .exit(1);
    wrong.stderr_has(&["`git ls-remote` failed"]);
    assert!(!wrong.stderr.contains("wrong-token"), "{wrong}");

    let lock = cx
        .run_env(&["--json", "lock"], &[("GIT_TOKEN", token)])
        .success();
    let commit = git(&repo, &["rev-parse", "v5.1.3^{commit}"]);
    assert_eq!(lock.json()["sources"]["private"]["commit"], commit.as_str());
    let out = cx.scratch.join("out");
    let build = cx
        .run_env(
            &[
                "--json",
                "build",
                "p",
                "-o",
                &format!("oci:{}", out.display()),
            ],
            &[("GIT_TOKEN", token)],
        )
        .success();
    assert!(
        layer_paths(&out, "p")[0]
            .iter()
            .any(|p| p == "p/version.php")
    );
    for run in [&lock, &build] {
        for text in [&run.stdout, &run.stderr] {
            assert!(
                !text.contains("s3cret") && !text.contains(&header[6..]),
                "{run}"
            );
        }
    }
    // Pinned and in the store: no network, so no token needed.
    cx.run(&["build", "--locked", "p"]).success();
    let mut files = vec![cx.path("images.lock")];
    walk(&cx.home, &mut files);
    for f in files {
        let s = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        assert!(
            !s.contains("s3cret") && !s.contains(&header[6..]),
            "{}",
            f.display()
        );
    }
}
