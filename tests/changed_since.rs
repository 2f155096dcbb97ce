//! Change impact and GitLab child pipelines: `plan --changed-since REV` on a
//! fixture git history with one commit each changing a client file, a core
//! source (`dir:`), a base's packages, images.lock, a var, and nothing; the
//! same from shallow clones; and `ci gitlab`'s pipelines (and the templates
//! in ci/) checked against GitLab's published schema.
//!
//! Plan only: nothing is built, no Debian archive is read.
//! Needs: git, check-jsonschema (PyPI; ci/setup installs it).
mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::{Ctx, require_tool};
use serde_json::Value;

const IMAGES: &str = r#"vars:
  greeting: hello
  unused: one
sources:
  core-1: {dir: core/1}
images:
  base-1:
    from: scratch
    debian: {suite: trixie, packages: [tzdata]}
    layers: [layers/base]
  base-2:
    from: scratch
    debian: {suite: bookworm, packages: [tzdata]}
    layers: [layers/base]
  line-1:
    from: base-1
    layers:
      - {source: core-1, dest: /srv/core}
    config: {env: {GREETING: "${greeting}"}}
  line-2:
    from: base-2
    layers:
      - {src: core/2, dest: /srv/core}
clients:
  files: clients/*/client.yaml
  image: client-${client}
  template:
    from: line-${line}
    layers:
      - {src: "clients/${client}/site", dest: /srv/site}
"#;

fn lock(tzdata_1: &str) -> String {
    let image = |suite: &str, version: &str| {
        serde_json::json!({
            "inputs": "0", "suite": suite, "codename": suite, "architecture": "amd64",
            "release_date": "Sat, 08 Nov 2025 09:00:00 UTC", "epoch": 1762592400,
            "packages": [{"name": "tzdata", "version": version, "architecture": "all",
              "path": format!("pool/main/t/tzdata/tzdata_{version}_all.deb"),
              "base": "http://deb.debian.org/debian", "sha256": "0".repeat(64), "size": 1}]
        })
    };
    let lock = serde_json::json!({
        "lock_version": 1, "inputs": "0",
        "images": {"base-1": image("trixie", tzdata_1), "base-2": image("bookworm", "2025b-0+deb12u1")}
    });
    serde_json::to_string_pretty(&lock).unwrap() + "\n"
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.org")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.org")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn commit(ctx: &Ctx, message: &str) {
    git(&ctx.root, &["add", "-A"]);
    git(&ctx.root, &["commit", "-q", "--allow-empty", "-m", message]);
}

/// The fixture project, committed once.
fn project() -> Ctx {
    require_tool("git", "git");
    let ctx = Ctx::new();
    ctx.yaml(IMAGES);
    ctx.write("images.lock", lock("2025b-4"));
    ctx.write("layers/base/etc/motd", "hi\n");
    ctx.write("core/1/version.txt", "1.0\n");
    ctx.write("core/2/version.txt", "2.0\n");
    for (client, line) in [("a", 1), ("b", 1), ("c", 2)] {
        ctx.write(
            &format!("clients/{client}/client.yaml"),
            format!("vars: {{line: \"{line}\"}}\n"),
        );
        ctx.write(&format!("clients/{client}/site/index.html"), client);
    }
    ctx.write("README.md", "the fleet\n");
    git(&ctx.root, &["init", "-q", "-b", "main"]);
    commit(&ctx, "fleet");
    ctx
}

/// The images `plan --changed-since REV --json` selects in `dir`.
fn selected(ctx: &Ctx, dir: &Path, rev: &str) -> (BTreeSet<String>, Value) {
    let mut c = ctx.command(&["plan", "--changed-since", rev, "--json"]);
    c.current_dir(dir);
    let run = common::run_command(c).success();
    let v = run.json();
    let names = v["images"]
        .as_array()
        .unwrap_or_else(|| panic!("no images in {v}"))
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect();
    (names, v)
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn reasons(v: &Value, image: &str) -> String {
    v["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == image)
        .map(|i| i["reasons"].to_string())
        .unwrap_or_default()
}

/// One commit per kind of change; each selects exactly its images, parents
/// first, with the reason.
#[test]
fn each_commit_selects_exactly_what_it_affects() {
    let ctx = project();
    let root = ctx.root.clone();
    let rewrite = |rel: &str, from: &str, to: &str| {
        let text = std::fs::read_to_string(ctx.path(rel)).unwrap();
        assert!(text.contains(from), "{rel} has no `{from}`");
        ctx.write(rel, text.replacen(from, to, 1));
    };
    let mut expected: Vec<(&str, BTreeSet<String>, &str, &str)> = Vec::new();

    ctx.write(
        "clients/a/client.yaml",
        "vars: {line: \"1\"}\nconfig: {env: {THEME: blue}}\n",
    );
    commit(&ctx, "client a: a theme");
    expected.push((
        "client file",
        set(&["client-a"]),
        "client-a",
        "`config` changed",
    ));

    ctx.write("core/1/version.txt", "1.1\n");
    commit(&ctx, "core 1.1");
    expected.push((
        "core source",
        set(&["line-1", "client-a", "client-b"]),
        "line-1",
        "files changed under core/1: core/1/version.txt",
    ));

    // Only a file under a layer changed, none the graph is read from:
    // the commit's graph is not loaded, the files alone tell.
    ctx.write("clients/b/site/index.html", "b, redone");
    commit(&ctx, "client b: its site");
    expected.push((
        "a client's layer file",
        set(&["client-b"]),
        "client-b",
        "files changed under clients/b/site: clients/b/site/index.html",
    ));

    rewrite(
        "images.yaml",
        "suite: bookworm, packages: [tzdata]",
        "suite: bookworm, packages: [tzdata, less]",
    );
    commit(&ctx, "base-2: less");
    expected.push((
        "base packages",
        set(&["base-2", "line-2", "client-c"]),
        "client-c",
        "parent `line-2` changed",
    ));

    ctx.write("images.lock", lock("2025b-4+deb13u1"));
    commit(&ctx, "security update");
    expected.push((
        "lock",
        set(&["base-1", "line-1", "client-a", "client-b"]),
        "base-1",
        "tzdata 2025b-4 → 2025b-4+deb13u1",
    ));

    rewrite("images.yaml", "greeting: hello", "greeting: bonjour");
    commit(&ctx, "greeting");
    expected.push((
        "var",
        set(&["line-1", "client-a", "client-b"]),
        "line-1",
        "`config` changed",
    ));

    // dpkg's path filters: the Debian layer's files, not its packages.
    rewrite(
        "images.yaml",
        "suite: bookworm, packages: [tzdata, less]",
        "suite: bookworm, packages: [tzdata, less], path_exclude: [\"/usr/share/doc/*\"]",
    );
    commit(&ctx, "base-2: slim");
    expected.push((
        "path filters",
        set(&["base-2", "line-2", "client-c"]),
        "base-2",
        "`debian` changed",
    ));

    ctx.write(
        "clients/b/client.yaml",
        "vars: {line: \"1\"}\ncompression: zstd:9\n",
    );
    commit(&ctx, "client b: zstd");
    expected.push((
        "compression",
        set(&["client-b"]),
        "client-b",
        "`compression` changed",
    ));

    // A var no image uses, a comment, a file no layer reads.
    rewrite("images.yaml", "unused: one", "unused: two  # still unused");
    ctx.write("README.md", "the fleet, documented\n");
    commit(&ctx, "nothing that matters");
    expected.push(("nothing", BTreeSet::new(), "", ""));

    let commits: Vec<String> = git(&root, &["rev-list", "--reverse", "main"])
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(commits.len(), expected.len() + 1);
    for (i, (what, want, image, reason)) in expected.iter().enumerate() {
        git(&root, &["checkout", "-q", &commits[i + 1]]);
        let (got, v) = selected(&ctx, &root, &commits[i]);
        assert_eq!(&got, want, "{what}: {v}");
        if !image.is_empty() {
            assert!(
                reasons(&v, image).contains(reason),
                "{what}: {image} should say `{reason}`: {v}"
            );
        }
        // Parents first.
        let order: Vec<&str> = v["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap())
            .collect();
        for (k, name) in order.iter().enumerate() {
            if let Some(p) = v["images"][k]["parent"].as_str()
                && let Some(pk) = order.iter().position(|o| *o == p)
            {
                assert!(pk < k, "{what}: {name} before its parent {p}: {order:?}");
            }
        }
    }
    git(&root, &["checkout", "-q", "main"]);

    // Uncommitted work counts: a new client not yet added to git.
    ctx.write("clients/d/client.yaml", "vars: {line: \"2\"}\n");
    ctx.write("clients/d/site/index.html", "d");
    let (got, v) = selected(&ctx, &root, "HEAD");
    assert_eq!(got, set(&["client-d"]), "{v}");
    assert!(reasons(&v, "client-d").contains("new image"), "{v}");

    // The human form names the image and the reason.
    let run = ctx.run(&["plan", "--changed-since", "HEAD~7"]).success();
    assert!(run.stdout.contains("client-d\n"), "{}", run.stdout);
    assert!(run.stderr.contains("since HEAD~7"), "{}", run.stderr);
}

#[test]
fn a_shallow_clone_works_within_its_depth_and_says_what_to_do_beyond() {
    let ctx = project();
    ctx.write("clients/b/site/index.html", "b, redone");
    commit(&ctx, "client b's site");
    let url = format!("file://{}", ctx.root.display());

    let deep = ctx.scratch.join("depth2");
    git(
        &ctx.scratch,
        &["clone", "-q", "--depth", "2", &url, deep.to_str().unwrap()],
    );
    assert_eq!(
        git(&deep, &["rev-parse", "--is-shallow-repository"]),
        "true"
    );
    let (got, _) = selected(&ctx, &deep, "HEAD~1");
    assert_eq!(got, set(&["client-b"]));

    let shallow = ctx.scratch.join("depth1");
    git(
        &ctx.scratch,
        &[
            "clone",
            "-q",
            "--depth",
            "1",
            &url,
            shallow.to_str().unwrap(),
        ],
    );
    let (got, _) = selected(&ctx, &shallow, "HEAD");
    assert!(got.is_empty());
    let mut c = ctx.command(&["plan", "--changed-since", "HEAD~1"]);
    c.current_dir(&shallow);
    let run = common::run_command(c).exit(2);
    run.stderr_has(&[
        "`HEAD~1` is not a commit in this clone's history (a shallow clone)",
        "GIT_DEPTH",
        "git fetch --deepen",
    ]);

    // Not a repository at all.
    let lone = Ctx::new();
    lone.yaml(IMAGES);
    lone.write("layers/base/etc/motd", "hi\n");
    lone.write("core/1/version.txt", "1\n");
    lone.write("core/2/version.txt", "2\n");
    lone.run(&["plan", "--changed-since", "HEAD~1"])
        .exit(2)
        .stderr_has(&["is not in a git repository"]);

    // A branch's first pipeline (GitLab's all-zero CI_COMMIT_BEFORE_SHA):
    // everything.
    let (got, _) = selected(&ctx, &ctx.root, &"0".repeat(40));
    assert_eq!(got.len(), 7);
}

fn check_gitlab_schema(file: &Path) {
    let tool = require_tool(
        "check-jsonschema",
        "check-jsonschema (pip install check-jsonschema)",
    );
    let out = Command::new(tool)
        .args(["--builtin-schema", "vendor.gitlab-ci"])
        .arg(file)
        .output()
        .expect("check-jsonschema runs");
    assert!(
        out.status.success(),
        "{} is not a valid GitLab CI file:\n{}{}\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(file).unwrap_or_default()
    );
}

#[test]
fn ci_gitlab_writes_a_valid_child_pipeline_that_follows_the_graph() {
    let ctx = project();
    ctx.write("images.lock", lock("2025b-4+deb13u1"));
    commit(&ctx, "security update");
    let out = ctx.scratch.join("child.yml");
    let env_free = |args: &[&str]| {
        let mut c = ctx.command(args);
        for v in [
            "CI_PIPELINE_SOURCE",
            "CI_COMMIT_BRANCH",
            "CI_DEFAULT_BRANCH",
            "CI_COMMIT_BEFORE_SHA",
            "CI_MERGE_REQUEST_DIFF_BASE_SHA",
        ] {
            c.env_remove(v);
        }
        c
    };
    let mut c = env_free(&[
        "ci",
        "gitlab",
        "--changed-since",
        "HEAD~1",
        "-o",
        out.to_str().unwrap(),
    ]);
    c.env("CI_COMMIT_BRANCH", "main")
        .env("CI_DEFAULT_BRANCH", "main");
    common::run_command(c).success();
    check_gitlab_schema(&out);
    let text = std::fs::read_to_string(&out).unwrap();
    let doc: Value = yaml_to_json(&text);
    let jobs: BTreeSet<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("build "))
        .map(String::as_str)
        .collect();
    assert_eq!(
        jobs,
        [
            "build base-1",
            "build line-1",
            "build client-a",
            "build client-b"
        ]
        .into_iter()
        .collect(),
        "{text}"
    );
    assert_eq!(doc["build base-1"]["needs"], serde_json::json!([]));
    assert_eq!(
        doc["build line-1"]["needs"],
        serde_json::json!(["build base-1"])
    );
    assert_eq!(
        doc["build client-a"]["needs"],
        serde_json::json!(["build line-1"])
    );
    assert_eq!(
        doc["build client-b"]["variables"]["IMGBUILD_IMAGES"],
        "client-b"
    );
    let script = doc[".imgbuild"]["script"][0].as_str().unwrap();
    assert!(script.contains("push --locked --tag \"$CI_COMMIT_SHORT_SHA\" --tag \"$CI_COMMIT_REF_SLUG\" $IMGBUILD_PUSH_ARGS $IMGBUILD_IMAGES"), "{script}");
    assert!(
        !script.contains("--no-latest"),
        "the default branch moves latest: {script}"
    );
    assert_eq!(doc[".imgbuild"]["image"], "$IMGBUILD_IMAGE");
    assert_eq!(
        doc[".imgbuild"]["variables"]["IMGBUILD_CACHE_REPO"],
        "$CI_REGISTRY_IMAGE/imgbuild-cache"
    );

    // Deterministic: the same again, byte for byte.
    let again = ctx.scratch.join("again.yml");
    let mut c = env_free(&[
        "ci",
        "gitlab",
        "--changed-since",
        "HEAD~1",
        "-o",
        again.to_str().unwrap(),
    ]);
    c.env("CI_COMMIT_BRANCH", "main")
        .env("CI_DEFAULT_BRANCH", "main");
    common::run_command(c).success();
    assert_eq!(std::fs::read(&again).unwrap(), text.as_bytes());

    // Another branch: no latest. A merge request: no push.
    let mut c = env_free(&["ci", "gitlab", "--changed-since", "HEAD~1"]);
    c.env("CI_COMMIT_BRANCH", "feature")
        .env("CI_DEFAULT_BRANCH", "main");
    let branch = common::run_command(c).success().stdout;
    assert!(branch.contains("--no-latest"), "{branch}");
    let mut c = env_free(&["ci", "gitlab", "--changed-since", "HEAD~1"]);
    c.env("CI_PIPELINE_SOURCE", "merge_request_event");
    let mr = common::run_command(c).success().stdout;
    assert!(
        mr.contains("build --locked $IMGBUILD_IMAGES") && !mr.contains(" push "),
        "{mr}"
    );

    // Over a job limit: clients batched, and said.
    let tight = ctx.scratch.join("tight.yml");
    let run = common::run_command(env_free(&[
        "ci",
        "gitlab",
        "--all",
        "--max-jobs",
        "6",
        "-o",
        tight.to_str().unwrap(),
    ]))
    .success();
    run.stderr_has(&["batched", "GitLab's limits"]);
    check_gitlab_schema(&tight);
    let doc = yaml_to_json(&std::fs::read_to_string(&tight).unwrap());
    let built: Vec<String> = doc
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("build "))
        .flat_map(|(_, j)| {
            j["variables"]["IMGBUILD_IMAGES"]
                .as_str()
                .unwrap()
                .split(' ')
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        doc.as_object()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with("build "))
            .count(),
        6
    );
    assert_eq!(built.iter().collect::<BTreeSet<_>>().len(), 7, "{built:?}");
    assert_eq!(built.len(), 7, "each image once: {built:?}");

    // Fewer jobs than images with children to build first: an error that
    // says so.
    common::run_command(env_free(&["ci", "gitlab", "--all", "--max-jobs", "5"]))
        .exit(2)
        .stderr_has(&["more than the 5 jobs a pipeline may have", "--max-jobs"]);

    // Nothing changed: one no-op job, still a valid pipeline.
    let empty = ctx.scratch.join("empty.yml");
    common::run_command(env_free(&[
        "ci",
        "gitlab",
        "--changed-since",
        "HEAD",
        "-o",
        empty.to_str().unwrap(),
    ]))
    .success();
    check_gitlab_schema(&empty);
    let doc = yaml_to_json(&std::fs::read_to_string(&empty).unwrap());
    assert_eq!(doc.as_object().unwrap().len(), 1, "{doc}");
    assert!(doc["nothing to build"]["script"].is_array(), "{doc}");
}

#[test]
fn the_templates_in_ci_are_valid_gitlab_ci() {
    let ci = Path::new(env!("CARGO_MANIFEST_DIR")).join("ci");
    let mut checked = 0;
    for entry in std::fs::read_dir(&ci).unwrap() {
        let p = entry.unwrap().path();
        if p.to_string_lossy().ends_with(".gitlab-ci.yml") {
            check_gitlab_schema(&p);
            checked += 1;
        }
    }
    assert!(
        checked >= 1,
        "no *.gitlab-ci.yml template in {}",
        ci.display()
    );
    assert!(
        !ci.join("gitlab-ci.yml").exists(),
        "ci/gitlab-ci.yml (cargo install in every pipeline) is retired: ci/imgbuild.gitlab-ci.yml is the template"
    );
}

/// YAML to JSON through Python's yaml module would be another tool; the
/// pipeline is plain enough for yaml-rust2, which the crate has.
fn yaml_to_json(text: &str) -> Value {
    let docs = yaml_rust2::YamlLoader::load_from_str(text).expect("valid YAML");
    fn conv(y: &yaml_rust2::Yaml) -> Value {
        use yaml_rust2::Yaml;
        match y {
            Yaml::String(s) => Value::String(s.clone()),
            Yaml::Integer(i) => Value::from(*i),
            Yaml::Boolean(b) => Value::Bool(*b),
            Yaml::Array(a) => Value::Array(a.iter().map(conv).collect()),
            Yaml::Hash(h) => Value::Object(
                h.iter()
                    .map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), conv(v)))
                    .collect(),
            ),
            Yaml::Real(r) => Value::String(r.clone()),
            _ => Value::Null,
        }
    }
    conv(&docs[0])
}

/// A layer whose files are outside the repository (here through `--set`)
/// cannot be compared with a commit: its image is selected, saying why,
/// rather than silently left out.
#[test]
fn files_outside_the_repository_select_their_image_and_say_why() {
    require_tool("git", "git");
    let ctx = Ctx::new();
    ctx.yaml(concat!(
        "vars: {site: site}\n",
        "images:\n",
        "  app:\n",
        "    from: scratch\n",
        "    layers: [{src: \"${site}\", dest: /srv}]\n",
        "  other:\n",
        "    from: scratch\n",
        "    layers: [other]\n",
    ));
    ctx.write("site/index.html", "in the repository\n");
    ctx.write("other/index.html", "other\n");
    git(&ctx.root, &["init", "-q", "-b", "main"]);
    commit(&ctx, "fleet");
    let (got, v) = selected(&ctx, &ctx.root, "HEAD");
    assert_eq!(got, BTreeSet::new(), "{v}");

    let outside = ctx.scratch.join("elsewhere");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("index.html"), "outside\n").unwrap();
    let site = format!("site={}", outside.display());
    // The context widened to take it in, as a laptop build would.
    let context = ctx.root.parent().unwrap().display().to_string();
    let mut c = ctx.command(&[
        "plan",
        "--context",
        &context,
        "--set",
        &site,
        "--changed-since",
        "HEAD",
        "--json",
    ]);
    c.current_dir(&ctx.root);
    let v = common::run_command(c).success().json();
    let names: Vec<&str> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app"], "{v}");
    assert!(reasons(&v, "app").contains("outside the repository"), "{v}");
}
