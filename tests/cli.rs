//! The command line and bad input: exit codes, messages that name the file,
//! line, column and image, plan/build/gc behaviour across changes, and
//! reproducibility. Images are built from small trees; every test that makes
//! an image validates it with `common::validate_layout`.
mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use common::{Ctx, Report, plan_of, tar_entries, validate_layout};
use serde_json::Value;

/// base (scratch) ← moodle ← client-a, client-b.
const FLEET: &str = r#"vars:
  release: "5.1.4"
images:
  base:
    from: scratch
    layers:
      - layers/base
    config:
      env: {TZ: UTC}
      cmd: ["/bin/tool"]
  moodle:
    from: base
    layers:
      - layers/moodle
    config:
      labels: {release: "${release}"}
  client-a:
    from: moodle
    layers:
      - {src: clients/a, dest: /var/www/moodle/theme/a, owner: "www-data:www-data"}
    tags: ["client-a:${release}"]
  client-b:
    from: moodle
    layers:
      - {src: clients/b, dest: /var/www/moodle/theme/b}
"#;

const FLEET_NAMES: [&str; 4] = ["base", "client-a", "client-b", "moodle"];

fn fleet() -> Ctx {
    let cx = Ctx::new();
    write_fleet_tree(&cx);
    cx.yaml(FLEET);
    cx
}

fn write_fleet_tree(cx: &Ctx) {
    cx.write("layers/base/etc/os-release", "ID=test\n");
    cx.write(
        "layers/base/etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/sh\n",
    );
    cx.write("layers/base/etc/group", "root:x:0:\nwww-data:x:33:\n");
    cx.write_exec("layers/base/bin/tool", "#!/bin/sh\necho tool\n");
    cx.write("layers/moodle/var/www/moodle/index.php", "<?php echo 1;\n");
    cx.write(
        "layers/moodle/var/www/moodle/version.php",
        "<?php $v = 1;\n",
    );
    cx.write("clients/a/style.css", "body { color: red }\n");
    cx.write("clients/a/lang/en.php", "<?php $s = [];\n");
    cx.write("clients/b/style.css", "body { color: blue }\n");
}

/// Writes every image of `names` to an OCI layout and validates each.
fn output_and_validate(cx: &Ctx, names: &[&str]) -> Report {
    let out = cx.scratch.join("oci-out");
    let _ = fs::remove_dir_all(&out);
    let target = format!("oci:{}", out.display());
    let mut args: Vec<&str> = names.to_vec();
    args.extend(["-o", &target]);
    let report = cx.build(&args);
    for n in names {
        let img = validate_layout(&out, n);
        assert_eq!(img.manifest_digest, report.manifest(n), "{n}");
    }
    report
}

// ---------------------------------------------------------------- bad input

#[test]
fn unknown_key_exits_2_naming_file_line_column_image_and_suggestion() {
    let cx = Ctx::new();
    cx.yaml("images:\n  a:\n    from: scratch\n    layer: []\n");
    for cmd in ["check", "build", "plan", "graph"] {
        let mut args = vec![cmd];
        if cmd == "build" || cmd == "plan" {
            args.push("a");
        }
        let r = cx.run(&args).exit(2);
        r.stderr_has(&[
            "error: images.yaml:4:5: image a: unknown key `layer`",
            "\n  hint: did you mean `layers`?",
        ]);
    }
    // The file is named as the user named it.
    let r = cx
        .run(&["-f", &cx.path("images.yaml").display().to_string(), "check"])
        .exit(2);
    r.stderr_has(&[&format!(
        "{}:4:5: image a:",
        cx.path("images.yaml").display()
    )]);
    assert!(cx.store_blobs().is_empty(), "bad input must build nothing");
}

#[test]
fn cycle_is_named_with_its_members() {
    let cx = Ctx::new();
    cx.yaml("images:\n  a: {from: b}\n  b: {from: c}\n  c: {from: a}\n  d: {from: a}\n");
    let r = cx.run(&["check"]).exit(2);
    r.stderr_has(&["images.yaml:2:", "image a:", "cycle", "a → b → c → a"]);
    // Reported once, not once per member or per descendant.
    assert_eq!(
        r.stderr
            .matches("images are built from each other in a cycle")
            .count(),
        1,
        "{r}"
    );
}

#[test]
fn unknown_parent_is_named_with_a_suggestion() {
    let cx = Ctx::new();
    cx.yaml("images:\n  moodle:\n    from: scratch\n  client:\n    from: modle\n");
    cx.run(&["build", "--all"]).exit(2).stderr_has(&[
        "images.yaml:5:11: image client: unknown parent image `modle`",
        "hint: did you mean `moodle`?",
    ]);
}

#[test]
fn missing_layer_source_is_named_with_its_position() {
    let cx = Ctx::new();
    cx.yaml("images:\n  a:\n    from: scratch\n    layers:\n      - {src: nope/dir, dest: /x}\n");
    cx.run(&["check"]).exit(2).stderr_has(&[
        "images.yaml:5:15: image a: layer source `nope/dir` cannot be read",
        "no such file or directory",
    ]);
}

#[test]
fn bad_mode_is_rejected_with_a_hint() {
    let cx = Ctx::new();
    cx.write("files/x", "x");
    for bad in ["\"0999\"", "\"rwx\"", "\"17777\""] {
        cx.yaml(&format!(
            "images:\n  a:\n    from: scratch\n    layers:\n      - {{src: files, dest: /x, mode: {bad}}}\n"
        ));
        cx.run(&["build", "a"]).exit(2).stderr_has(&[
            "images.yaml:5:",
            "image a:",
            "is not an octal file mode",
            "hint:",
        ]);
    }
}

#[test]
fn socket_in_source_tree_fails_the_build_naming_the_path() {
    let cx = Ctx::new();
    cx.write("tree/ok.txt", "ok");
    let sock = cx.path("tree/run/app.sock");
    fs::create_dir_all(sock.parent().unwrap()).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    cx.yaml("images:\n  a:\n    from: scratch\n    layers: [tree]\n");
    let sock_text = sock.display().to_string();
    let plan = cx.run(&["plan", "a"]);
    plan.stderr_has(&[
        &sock_text,
        "socket files cannot go into a layer",
        "image a, layer 0",
    ]);
    let build = cx.run(&["build", "a"]);
    build.stderr_has(&[
        &sock_text,
        "socket files cannot go into a layer",
        "image a, layer 0",
    ]);
    let json = cx.run(&["--json", "build", "a"]);
    assert!(json.stdout.contains("app.sock"), "{json}");
    assert!(
        cx.store_blobs().is_empty(),
        "a refused layer leaves no blob"
    );
    // Bad input: exit 2 from every command.
    plan.exit(2);
    build.exit(2);
    json.exit(2);
}

#[test]
fn fifo_in_source_tree_fails_the_build_naming_the_path() {
    let cx = Ctx::new();
    cx.write("tree/ok.txt", "ok");
    let fifo = cx.path("tree/pipe");
    let mut mk = std::process::Command::new("mkfifo");
    mk.arg(&fifo);
    common::run_command(mk).success();
    cx.yaml("images:\n  a:\n    from: scratch\n    layers: [tree]\n");
    let r = cx.run(&["build", "a"]);
    r.stderr_has(&[&fifo.display().to_string(), "fifo"]);
    r.exit(2);
}

#[test]
fn unknown_owner_name_exits_2_naming_the_layer() {
    let cx = fleet();
    cx.yaml(&FLEET.replace("www-data:www-data", "nobody-here:www-data"));
    let r = cx.run(&["build", "client-a"]);
    r.stderr_has(&[
        "images.yaml:20:9: image client-a: owner `nobody-here:www-data`",
        "user `nobody-here` is not in the parent image's /etc/passwd",
        "hint:",
    ]);
    r.exit(2);
}

#[test]
fn unknown_image_on_the_command_line_exits_2_with_a_suggestion() {
    let cx = fleet();
    for cmd in ["build", "plan", "inspect"] {
        cx.run(&[cmd, "moodel"])
            .exit(2)
            .stderr_has(&["no image named `moodel`", "did you mean `moodle`?"]);
    }
    cx.run(&["build", "zzz"])
        .exit(2)
        .stderr_has(&["no image named `zzz`"]);
    assert!(cx.store_blobs().is_empty(), "nothing is built");
}

#[test]
fn usage_errors_exit_2() {
    let cx = fleet();
    cx.run(&["build"])
        .exit(2)
        .stderr_has(&["name the images", "--all"]);
    cx.run(&["build", "--bogus-flag", "base"]).exit(2);
    cx.run(&["build", "base", "-o", "tarball:x.tar"]).exit(2);
    cx.run(&["build", "base", "--compression", "lz4"]).exit(2);
    cx.run(&["nonsense"]).exit(2);
    cx.run_env(&["build", "base"], &[("SOURCE_DATE_EPOCH", "yesterday")])
        .exit(2)
        .stderr_has(&["SOURCE_DATE_EPOCH"]);
    cx.run(&["-f", "missing.yaml", "check"])
        .exit(2)
        .stderr_has(&["missing.yaml"]);
    cx.run(&["inspect", "base"])
        .exit(2)
        .stderr_has(&["has not been built"]);
}

#[test]
fn debian_problems_name_their_line() {
    let cx = Ctx::new();
    cx.yaml("images:\n  a:\n    from: scratch\n    debian: {}\n");
    cx.run(&["check"])
        .exit(2)
        .stderr_has(&["images.yaml:4:13: image a:", "`debian` needs a `suite`"]);
}

#[test]
fn check_json_lists_every_problem() {
    let cx = Ctx::new();
    cx.write("files/x", "x");
    cx.yaml(concat!(
        "images:\n",
        "  a:\n",
        "    from: scratch\n",
        "    layer: []\n",
        "  b:\n",
        "    from: aa\n",
        "  c:\n",
        "    from: scratch\n",
        "    layers:\n",
        "      - {src: files, mode: \"0999\"}\n",
        "      - {src: nope}\n",
    ));
    let r = cx.run(&["--json", "check"]).exit(2);
    // The first JSON document on stdout (see
    // `json_output_is_one_document_when_a_command_fails` for the rest).
    let v: Value = serde_json::Deserializer::from_str(&r.stdout)
        .into_iter::<Value>()
        .next()
        .expect("a JSON document")
        .expect("valid JSON");
    assert_eq!(v["ok"], false, "{r}");
    assert!(v["file"].as_str().unwrap().ends_with("images.yaml"), "{r}");
    let problems = v["problems"].as_array().expect("problems list");
    let summary: Vec<String> = problems
        .iter()
        .map(|p| {
            format!(
                "{}:{} {} {}",
                p["line"], p["column"], p["image"], p["message"]
            )
        })
        .collect();
    assert_eq!(problems.len(), 4, "{summary:#?}");
    // Sorted by position, each with its image.
    let lines: Vec<u64> = problems
        .iter()
        .map(|p| p["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [4, 6, 10, 11], "{summary:#?}");
    assert_eq!(problems[0]["column"], 5);
    assert_eq!(problems[0]["image"], "a");
    assert_eq!(problems[0]["hint"], "did you mean `layers`?");
    assert_eq!(problems[1]["image"], "b");
    assert!(
        problems[1]["message"]
            .as_str()
            .unwrap()
            .contains("unknown parent image `aa`")
    );
    assert!(problems[2]["message"].as_str().unwrap().contains("0999"));
    assert!(problems[3]["message"].as_str().unwrap().contains("`nope`"));
    for p in problems {
        assert!(p["column"].as_u64().unwrap() >= 1, "{p}");
    }

    let ok = fleet();
    let r = ok.run(&["--json", "check"]).success();
    // client-a's owner names wait for its parent's first build: a note.
    assert_eq!(
        r.json(),
        serde_json::json!({"ok": true, "images": FLEET_NAMES, "notes": [
            "image client-a: owner `www-data:www-data` cannot be checked yet: names resolve against the /etc/passwd and /etc/group of `moodle`, which has not been built here (build it, then check again)"
        ]})
    );
    let r = ok.run(&["check"]).success();
    assert!(r.stdout.contains("4 image(s), OK"), "{r}");
}

#[test]
fn json_output_is_one_document_when_a_command_fails() {
    // A script reads stdout as one JSON value; a second document after it
    // makes stdout unparseable.
    let cx = Ctx::new();
    cx.yaml("images:\n  a:\n    from: scratch\n    layer: []\n");
    let r = cx.run(&["--json", "check"]).exit(2);
    assert_eq!(r.json()["ok"], false, "{r}");

    let cx = Ctx::new();
    cx.write("tree/ok.txt", "ok");
    let sock = cx.path("tree/s.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    cx.yaml("images:\n  a:\n    from: scratch\n    layers: [tree]\n");
    let r = cx.run(&["--json", "build", "a"]);
    assert_ne!(r.code, 0, "{r}");
    let v = r.json();
    assert_eq!(v["failed"][0]["name"], "a", "{r}");
    assert!(
        v["failed"][0]["error"].as_str().unwrap().contains("s.sock"),
        "{r}"
    );
}

#[test]
fn graph_renders_text_dot_mermaid_and_json() {
    let cx = fleet();
    let text = cx.run(&["graph"]).success().stdout;
    assert_eq!(
        text,
        "scratch\n└── base\n    └── moodle\n        ├── client-a\n        └── client-b\n"
    );
    assert_eq!(
        cx.run(&["graph", "--format", "text"]).success().stdout,
        text
    );

    let dot = cx.run(&["graph", "--format", "dot"]).success().stdout;
    assert!(dot.starts_with("digraph"), "{dot}");
    assert!(dot.trim_end().ends_with('}'), "{dot}");
    for edge in [
        "\"base\" -> \"moodle\";",
        "\"moodle\" -> \"client-a\";",
        "\"moodle\" -> \"client-b\";",
    ] {
        assert!(dot.contains(edge), "{edge} missing from {dot}");
    }
    assert_eq!(dot.matches("->").count(), 3, "{dot}");

    let mermaid = cx.run(&["graph", "--format", "mermaid"]).success().stdout;
    assert!(mermaid.starts_with("graph LR\n"), "{mermaid}");
    assert!(
        mermaid.contains("moodle[\"moodle\"] --> client_a[\"client-a\"]"),
        "{mermaid}"
    );
    assert!(
        mermaid.contains("base[\"base\"] --> moodle[\"moodle\"]"),
        "{mermaid}"
    );

    let json: Value =
        serde_json::from_str(&cx.run(&["graph", "--format", "json"]).success().stdout)
            .expect("graph json");
    let node = |n: &str| {
        json["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == n)
            .unwrap_or_else(|| panic!("{n} missing: {json:#}"))
            .clone()
    };
    assert_eq!(node("base")["parent"], Value::Null);
    assert_eq!(
        node("moodle")["children"],
        serde_json::json!(["client-a", "client-b"])
    );
    assert_eq!(node("client-a")["parent"], "moodle");
    assert_eq!(
        node("client-a")["tags"],
        serde_json::json!(["client-a:5.1.4"])
    );
    // --json means json whatever the format.
    let implied: Value =
        serde_json::from_str(&cx.run(&["--json", "graph"]).success().stdout).unwrap();
    assert_eq!(implied, json);

    cx.run(&["graph", "--format", "svg"]).exit(2);
}

// ------------------------------------------------- plan, build, incremental

#[test]
fn plan_says_build_then_reuse_then_names_the_changed_file() {
    let cx = fleet();
    // Numeric owner: names before the first build are
    // `plan_before_the_first_build_accepts_owner_names`.
    cx.yaml(&FLEET.replace("www-data:www-data", "33:33"));
    let before = cx.plan(&["--all"]);
    for n in FLEET_NAMES {
        let p = plan_of(&before, n);
        assert_eq!(p["action"], "build", "{p:#}");
        for l in p["layers"].as_array().unwrap() {
            assert_eq!(l["build"], true, "{l:#}");
            assert_eq!(l["reason"], "not built before", "{l:#}");
        }
    }
    assert!(cx.store_blobs().is_empty(), "plan writes no blob");
    // The plan lists parents before children.
    let order: Vec<&str> = before
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let pos = |n: &str| order.iter().position(|o| *o == n).unwrap();
    assert!(
        pos("base") < pos("moodle") && pos("moodle") < pos("client-a"),
        "{order:?}"
    );
    // plan NAME covers what NAME needs.
    let one = cx.plan(&["client-b"]);
    let names: BTreeSet<&str> = one
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, BTreeSet::from(["base", "moodle", "client-b"]));

    let built = output_and_validate(&cx, &FLEET_NAMES);
    // The plan predicted the keys the build used.
    for n in FLEET_NAMES {
        let planned: Vec<&Value> = plan_of(&before, n)["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| &l["key"])
            .collect();
        let keys: Vec<Value> = built.layers(n).iter().map(|l| l["key"].clone()).collect();
        assert_eq!(planned, keys.iter().collect::<Vec<_>>(), "{n}");
    }

    let after = cx.plan(&["--all"]);
    for n in FLEET_NAMES {
        let p = plan_of(&after, n);
        assert_eq!(p["action"], "reuse", "{p:#}");
        assert_eq!(p["reasons"], serde_json::json!([]), "{p:#}");
        for l in p["layers"].as_array().unwrap() {
            assert_eq!(l["build"], false, "{l:#}");
            assert_eq!(l["reason"], Value::Null, "{l:#}");
        }
    }
    let human = cx.run(&["plan", "--all"]).success().stdout;
    assert!(human.contains("reuse     client-a"), "{human}");

    cx.write("clients/a/style.css", "body { color: green }\n");
    let changed = cx.plan(&["--all"]);
    for n in ["base", "moodle", "client-b"] {
        assert_eq!(plan_of(&changed, n)["action"], "reuse", "{n}: {changed:#}");
    }
    let a = plan_of(&changed, "client-a");
    assert_eq!(a["action"], "build", "{a:#}");
    let reason = a["layers"][0]["reason"].as_str().expect("a reason");
    assert!(
        reason.contains("changed") && reason.contains("var/www/moodle/theme/a/style.css"),
        "the reason names the changed file: {reason}"
    );
    let reasons = a["reasons"].as_array().unwrap();
    assert!(
        reasons
            .iter()
            .any(|r| r.as_str().unwrap().contains("style.css")),
        "{a:#}"
    );
    // Added and removed files are named too.
    cx.write("clients/a/new.js", "x");
    fs::remove_file(cx.path("clients/a/lang/en.php")).unwrap();
    let changed = cx.plan(&["client-a"]);
    let reason = plan_of(&changed, "client-a")["layers"][0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains("1 added (var/www/moodle/theme/a/new.js)"),
        "{reason}"
    );
    assert!(
        reason.contains("removed") && reason.contains("en.php"),
        "{reason}"
    );
    let human = cx.run(&["plan", "client-a"]).success().stdout;
    assert!(
        human.contains("build     client-a") && human.contains("new.js"),
        "{human}"
    );
}

#[test]
fn plan_reason_names_only_the_files_that_changed() {
    let cx = fleet();
    cx.build(&["--all"]);
    cx.write("clients/a/style.css", "body { color: green }\n");
    let plan = cx.plan(&["client-a"]);
    let reason = plan_of(&plan, "client-a")["layers"][0]["reason"]
        .as_str()
        .expect("a reason")
        .to_string();
    assert_eq!(reason, "1 changed (var/www/moodle/theme/a/style.css)");
}

#[test]
fn plan_before_the_first_build_accepts_owner_names() {
    // The parent is not built yet, so its /etc/passwd is not known: the
    // plan must still say what would be built rather than fail.
    let cx = fleet();
    let plan = cx.plan(&["--all"]);
    let a = plan_of(&plan, "client-a");
    assert_eq!(a["action"], "build", "{a:#}");
    // And after the build the owner resolves and the plan is all reuse.
    cx.build(&["--all"]);
    let plan = cx.plan(&["--all"]);
    assert_eq!(plan_of(&plan, "client-a")["action"], "reuse");
}

#[test]
fn rebuild_without_changes_reuses_every_layer_and_digest() {
    let cx = fleet();
    let first = cx.build(&["--all"]);
    assert_eq!(
        first.names(),
        FLEET_NAMES.iter().map(|s| s.to_string()).collect()
    );
    for n in FLEET_NAMES {
        assert_eq!(first.image(n)["assembled"], true);
        assert!(first.layer_summary(n).iter().all(|l| l.2), "{n}");
    }
    let second = output_and_validate(&cx, &FLEET_NAMES);
    for n in FLEET_NAMES {
        assert_eq!(second.manifest(n), first.manifest(n), "{n}");
        assert_eq!(second.image(n)["key"], first.image(n)["key"], "{n}");
        assert_eq!(second.image(n)["assembled"], false, "{n}");
        let (a, b) = (first.layer_summary(n), second.layer_summary(n));
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((&x.0, &x.1), (&y.0, &y.1), "{n}: same key and digest");
            assert!(!y.2, "{n}: layer {} rebuilt without a change", y.1);
        }
    }
    assert_eq!(second.0["failed"], serde_json::json!([]));
    // Touching files (new mtimes, same bytes) is not a change either.
    common::touch_all(&cx.root, 1_234_567_890);
    let third = cx.build(&["--all", "-j", "1"]);
    for n in FLEET_NAMES {
        assert_eq!(third.manifest(n), first.manifest(n), "{n}");
        assert!(third.layer_summary(n).iter().all(|l| !l.2), "{n}");
    }
    // inspect shows the last build.
    let inspect = cx.run(&["--json", "inspect", "client-a"]).success().json();
    assert_eq!(inspect["manifest"], first.manifest("client-a"));
    assert_eq!(inspect["layers"].as_array().unwrap().len(), 3);
}

#[test]
fn changing_one_client_rebuilds_only_its_own_layer() {
    let cx = fleet();
    let first = cx.build(&["--all"]);
    cx.write("clients/b/style.css", "body { color: black }\n");
    let second = output_and_validate(&cx, &FLEET_NAMES);
    for n in ["base", "moodle", "client-a"] {
        assert_eq!(second.manifest(n), first.manifest(n), "{n} changed");
        assert_eq!(second.image(n)["assembled"], false, "{n}");
        assert!(
            second.layer_summary(n).iter().all(|l| !l.2),
            "{n} rebuilt a layer"
        );
    }
    assert_ne!(second.manifest("client-b"), first.manifest("client-b"));
    assert_eq!(second.image("client-b")["assembled"], true);
    let layers = second.layer_summary("client-b");
    assert_eq!(layers.len(), 1);
    assert!(layers[0].2, "client-b's layer is rebuilt");
    assert_ne!(layers[0].1, first.layer_summary("client-b")[0].1);
    // Building only client-b does the same, and touches no other image.
    cx.write("clients/b/style.css", "body { color: white }\n");
    let third = cx.build(&["client-b"]);
    assert_eq!(
        third.names(),
        BTreeSet::from(["base", "moodle", "client-b"].map(String::from))
    );
    assert!(third.layer_summary("moodle").iter().all(|l| !l.2));
    assert!(third.layer_summary("client-b")[0].2);
}

#[test]
fn parent_change_rebases_child_without_rebuilding_its_layer() {
    let cx = fleet();
    let first = cx.build(&["--all"]);
    cx.write(
        "layers/moodle/var/www/moodle/version.php",
        "<?php $v = 2;\n",
    );
    let plan = cx.plan(&["--all"]);
    assert_eq!(plan_of(&plan, "moodle")["action"], "build");
    for n in ["client-a", "client-b"] {
        let p = plan_of(&plan, n);
        assert_eq!(p["action"], "assemble", "{p:#}");
        assert_eq!(p["layers"][0]["build"], false, "{p:#}");
        assert!(
            p["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r
                    == "re-pointed onto moodle, which changes: its layer is reused, not built"),
            "{p:#}"
        );
    }
    let human = cx.run(&["plan", "--all"]).success().stdout;
    assert!(
        human.contains("build     moodle")
            && human.contains("assemble  client-a\n          re-pointed onto moodle")
            && human.contains("1 image to build, 2 to assemble (no layer built), 1 reused"),
        "{human}"
    );
    let second = output_and_validate(&cx, &FLEET_NAMES);
    assert_eq!(second.manifest("base"), first.manifest("base"));
    let moodle = second.layer_summary("moodle");
    assert!(moodle[0].2, "the parent's layer is rebuilt");
    assert_ne!(moodle[0].1, first.layer_summary("moodle")[0].1);
    assert_ne!(moodle[0].0, first.layer_summary("moodle")[0].0);
    for n in ["client-a", "client-b"] {
        let (old, new) = (first.layer_summary(n), second.layer_summary(n));
        assert_eq!(new[0].0, old[0].0, "{n}: layer key unchanged");
        assert_eq!(new[0].1, old[0].1, "{n}: layer digest unchanged");
        assert!(!new[0].2, "{n}: layer not rebuilt");
        assert_ne!(second.manifest(n), first.manifest(n), "{n}: re-pointed");
        assert_eq!(second.image(n)["assembled"], true, "{n}");
    }
    // The child now sits on the new parent's layers, plus its own.
    let out = cx.scratch.join("oci-out");
    let child = validate_layout(&out, "client-a");
    let parent = validate_layout(&out, "moodle");
    let digests = |i: &common::ValidImage| -> Vec<String> {
        i.layers.iter().map(|l| l.digest.clone()).collect()
    };
    let mut expected = digests(&parent);
    expected.push(first.layer_summary("client-a")[0].1.clone());
    assert_eq!(digests(&child), expected);
    let ann = &child.manifest["annotations"];
    assert_eq!(ann["org.opencontainers.image.base.name"], "moodle");
    assert_eq!(
        ann["org.opencontainers.image.base.digest"],
        parent.manifest_digest.as_str()
    );
}

#[test]
fn gc_removes_unreferenced_blobs_and_keeps_referenced_ones() {
    let cx = fleet();
    let first = cx.build(&["--all"]);
    let before_change = cx.store_blobs();
    cx.write("clients/a/style.css", "body { color: purple }\n");
    let second = output_and_validate(&cx, &FLEET_NAMES);
    let referenced = common::list_names(&cx.scratch.join("oci-out/blobs/sha256"));
    let all = cx.store_blobs();
    let stale: BTreeSet<String> = all.difference(&referenced).cloned().collect();
    let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
    // The old client-a layer and manifest, and its config.
    assert!(
        stale.contains(&hex(&first.layer_summary("client-a")[0].1)),
        "{stale:?}"
    );
    assert!(
        stale.contains(&hex(&first.manifest("client-a"))),
        "{stale:?}"
    );
    assert_eq!(stale.len(), 3, "{stale:?}");
    assert!(before_change.is_superset(&stale));

    let gc = cx.run(&["--json", "gc"]).success().json();
    assert_eq!(gc["blobs_removed"], 3, "{gc:#}");
    assert_eq!(gc["blobs_kept"], referenced.len() as u64, "{gc:#}");
    assert_eq!(
        cx.store_blobs(),
        referenced,
        "gc keeps exactly what is referenced"
    );
    // Nothing referenced went: a rebuild reuses everything.
    let third = output_and_validate(&cx, &FLEET_NAMES);
    for n in FLEET_NAMES {
        assert_eq!(third.manifest(n), second.manifest(n), "{n}");
        assert_eq!(third.image(n)["assembled"], false, "{n}");
        assert!(third.layer_summary(n).iter().all(|l| !l.2), "{n}");
    }
    // A second gc has nothing to do; the human form says so.
    let r = cx.run(&["gc"]).success();
    assert!(r.stdout.contains("removed 0 blob(s)"), "{r}");
    // Going back to the old content builds the old layer again, identically.
    cx.write("clients/a/style.css", "body { color: red }\n");
    let back = cx.build(&["client-a"]);
    assert_eq!(back.manifest("client-a"), first.manifest("client-a"));
    assert!(
        back.layer_summary("client-a")[0].2,
        "its blob was collected"
    );
}

#[test]
fn gc_drops_graphs_whose_images_yaml_is_gone() {
    let cx = fleet();
    let fleet_report = cx.build(&["--all"]);
    let fleet_blobs = cx.store_blobs();
    // A second graph in the same store, with its own content.
    let other = cx.scratch.join("other");
    fs::create_dir_all(other.join("files")).unwrap();
    fs::write(other.join("files/only-here.txt"), "other graph\n").unwrap();
    fs::write(
        other.join("images.yaml"),
        "images:\n  solo:\n    from: scratch\n    layers: [files]\n",
    )
    .unwrap();
    let other_yaml = other.join("images.yaml").display().to_string();
    let solo = Report(
        cx.run(&["--json", "-f", &other_yaml, "build", "solo"])
            .success()
            .json(),
    );
    let solo_layer = solo.layer_summary("solo")[0]
        .1
        .trim_start_matches("sha256:")
        .to_string();
    assert!(cx.store_blobs().contains(&solo_layer));

    // While both exist, gc keeps both.
    let gc = cx.run(&["--json", "gc"]).success().json();
    assert_eq!(gc["blobs_removed"], 0, "{gc:#}");

    fs::remove_file(other.join("images.yaml")).unwrap();
    let gc = cx.run(&["--json", "gc"]).success().json();
    assert_eq!(
        gc["blobs_removed"], 3,
        "solo's layer, config and manifest: {gc:#}"
    );
    assert_eq!(cx.store_blobs(), fleet_blobs);
    let again = cx.build(&["--all"]);
    for n in FLEET_NAMES {
        assert_eq!(again.manifest(n), fleet_report.manifest(n));
        assert!(again.layer_summary(n).iter().all(|l| !l.2), "{n}");
    }
}

#[test]
fn gc_drops_images_removed_from_images_yaml() {
    // `gc` removes "blobs no image of any images.yaml still uses": an image
    // taken out of the file no longer uses its layer.
    let cx = fleet();
    let before = cx.build(&["--all"]);
    let b_layer = before.layer_summary("client-b")[0]
        .1
        .trim_start_matches("sha256:")
        .to_string();
    let b_manifest = before.manifest("client-b");
    let without_b = FLEET
        .split("  client-b:")
        .next()
        .expect("client-b is last")
        .to_string();
    cx.yaml(&without_b);
    cx.run(&["check"]).success();
    let gc = cx.run(&["--json", "gc"]).success().json();
    let blobs = cx.store_blobs();
    assert!(
        !blobs.contains(&b_layer) && !blobs.contains(b_manifest.trim_start_matches("sha256:")),
        "client-b's blobs outlive it: {gc:#}"
    );
    assert_eq!(gc["blobs_removed"], 3, "{gc:#}");
    // The images still in the file are whole.
    let after = output_and_validate(&cx, &["base", "moodle", "client-a"]);
    for n in ["base", "moodle", "client-a"] {
        assert_eq!(after.manifest(n), before.manifest(n), "{n}");
        assert!(after.layer_summary(n).iter().all(|l| !l.2), "{n}");
    }
}

#[test]
fn edit_keeping_size_and_mtime_is_still_seen() {
    // The stat cache must not take an unchanged size and mtime for an
    // unchanged file (as after `cp -p`, `touch -r` or a checkout).
    let cx = fleet();
    common::touch_all(&cx.root, 1_000_000_000);
    let first = cx.build(&["client-a"]);
    cx.write("clients/a/style.css", "body { color: RED }\n");
    common::touch_all(&cx.path("clients"), 1_000_000_000);
    let second = cx.build(&["client-a"]);
    let (a, b) = (
        first.layer_summary("client-a"),
        second.layer_summary("client-a"),
    );
    assert_ne!(a[0].1, b[0].1, "the new content is in the layer");
    assert!(b[0].2);
    let img = validate_layout_of(&cx, "client-a");
    let css = img.layers[2].entry("var/www/moodle/theme/a/style.css");
    assert_eq!(css.data, b"body { color: RED }\n");
}

/// Writes `name` to an OCI layout and validates it.
fn validate_layout_of(cx: &Ctx, name: &str) -> common::ValidImage {
    let out = cx.scratch.join(format!("layout-{name}"));
    let _ = fs::remove_dir_all(&out);
    let r = cx.build(&[name, "-o", &format!("oci:{}", out.display())]);
    let img = validate_layout(&out, name);
    assert_eq!(img.manifest_digest, r.manifest(name));
    img
}

// ---------------------------------------------------------- reproducibility

/// A tree with files of several kinds and sizes, written with `umask`.
fn varied_tree(dir: &Path, umask: u32) {
    use std::os::unix::fs::PermissionsExt;
    let file = |rel: &str, data: &[u8], mode: u32| {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode & !umask)).unwrap();
    };
    // Over a MiB of compressible text, so compression runs over many blocks.
    let mut big = Vec::new();
    let mut x: u64 = 1;
    while big.len() < 1_500_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        big.extend_from_slice(format!("line {} value {}\n", big.len(), x >> 40).as_bytes());
    }
    file("data/big.txt", &big, 0o666);
    file("bin/run.sh", b"#!/bin/sh\necho run\n", 0o777);
    file("etc/app.conf", b"key = value\n", 0o666);
    file("a/b/c/d/deep.txt", b"deep\n", 0o666);
    file("a-b/sibling.txt", b"sorts between a and a/b\n", 0o666);
    std::os::unix::fs::symlink("../etc/app.conf", dir.join("bin/app.conf")).unwrap();
    fs::hard_link(dir.join("etc/app.conf"), dir.join("etc/app.conf.link")).unwrap();
    fs::create_dir_all(dir.join("var/empty")).unwrap();
    // Directories get the umask too.
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            }
        }
        fs::set_permissions(&d, fs::Permissions::from_mode(0o777 & !umask)).unwrap();
    }
}

const VARIED: &str = r#"images:
  root:
    from: scratch
    layers:
      - tree
    config:
      env: {A: "1"}
  leaf:
    from: root
    layers:
      - {src: tree, dest: /opt/copy, owner: "1000:1000", mode: "0640"}
      - {src: tree/etc/app.conf, dest: /etc/leaf/}
"#;

fn build_varied(cx: &Ctx, args: &[&str]) -> Report {
    let out = cx.scratch.join("oci");
    let _ = fs::remove_dir_all(&out);
    let target = format!("oci:{}", out.display());
    let mut all = vec!["--all", "-o", target.as_str()];
    all.extend_from_slice(args);
    let r = cx.build(&all);
    for n in ["root", "leaf"] {
        assert_eq!(validate_layout(&out, n).manifest_digest, r.manifest(n));
    }
    r
}

#[test]
fn same_tree_in_two_directories_gives_identical_digests() {
    common::require_tool("taskset", "util-linux");
    let one = Ctx::new();
    varied_tree(&one.path("tree"), 0o022);
    one.yaml(VARIED);
    common::touch_all(&one.root, 1_000);

    // Another directory, another umask, other mtimes, one core (so one
    // compression thread and one job instead of several).
    let two = Ctx::new();
    varied_tree(&two.path("tree"), 0o077);
    two.yaml(VARIED);
    common::touch_all(&two.root, 2_000_000_000);
    let mut two = two;
    two.wrapper = vec!["taskset".into(), "-c".into(), "0".into()];

    assert_ne!(one.root, two.root);
    for compression in ["gzip", "zstd"] {
        let a = build_varied(&one, &["--compression", compression]);
        let b = build_varied(&two, &["--compression", compression]);
        for n in ["root", "leaf"] {
            assert_eq!(a.manifest(n), b.manifest(n), "{compression}: {n}");
            assert_eq!(a.layer_summary(n), b.layer_summary(n), "{compression}: {n}");
        }
    }
    let img = validate_layout(&one.scratch.join("oci"), "leaf");
    let layer = &img.layers[1];
    assert_eq!(layer.entry("opt/copy/etc/app.conf").mode, 0o640);
    assert_eq!(layer.entry("opt/copy/a/b").mode, 0o750);
    assert_eq!(layer.entry("opt/copy/etc/app.conf.link").kind, 'h');
}

#[test]
fn source_date_epoch_changes_digests_and_stamps_times() {
    let zero = Ctx::new();
    varied_tree(&zero.path("tree"), 0o022);
    zero.yaml(VARIED);
    let a = build_varied(&zero, &[]);

    let mut later = Ctx::new().with_epoch(1_700_000_000);
    varied_tree(&later.path("tree"), 0o022);
    later.yaml(VARIED);
    let b = build_varied(&later, &[]);
    for n in ["root", "leaf"] {
        assert_ne!(a.manifest(n), b.manifest(n), "{n}");
        let (x, y) = (a.layer_summary(n), b.layer_summary(n));
        for (l, m) in x.iter().zip(&y) {
            assert_ne!(l.0, m.0, "{n}: the epoch is part of a layer's key");
            assert_ne!(l.1, m.1, "{n}: mtimes are in the tar");
        }
    }
    for (cx, epoch, created) in [
        (&zero, 0u64, "1970-01-01T00:00:00Z"),
        (&later, 1_700_000_000, "2023-11-14T22:13:20Z"),
    ] {
        let img = validate_layout(&cx.scratch.join("oci"), "leaf");
        assert_eq!(img.config["created"], created);
        let labels = &img.config["config"]["Labels"];
        assert_eq!(labels["org.opencontainers.image.created"], created);
        assert_eq!(
            labels.get("org.opencontainers.image.revision"),
            None,
            "IMGBUILD_REVISION is empty: {labels}"
        );
        for h in img.config["history"].as_array().unwrap() {
            assert_eq!(h["created"], created);
        }
        for layer in &img.layers {
            for e in layer.entries() {
                assert_eq!(e.mtime, epoch, "{}", e.path);
            }
        }
    }

    // A revision label changes the config and manifest, not the layers.
    later
        .env
        .push(("IMGBUILD_REVISION".into(), "0123abcd".into()));
    let c = build_varied(&later, &[]);
    let img = validate_layout(&later.scratch.join("oci"), "leaf");
    assert_eq!(
        img.config["config"]["Labels"]["org.opencontainers.image.revision"],
        "0123abcd"
    );
    assert_ne!(c.manifest("leaf"), b.manifest("leaf"));
    assert_eq!(c.layer_summary("leaf")[0].1, b.layer_summary("leaf")[0].1);
    assert!(
        c.layer_summary("leaf").iter().all(|l| !l.2),
        "layers reused"
    );
}

// --------------------------------------------------------- layer semantics

/// An entry's kind, mode, uid and gid.
type Summary = (char, u32, u64, u64);

/// Each named entry of `layer` has this summary.
fn assert_summaries(layer: &common::ValidLayer, want: &[(&str, Summary)]) {
    for &(path, summary) in want {
        let e = layer.entry(path);
        assert_eq!((e.kind, e.mode, e.uid, e.gid), summary, "{path}");
    }
}

#[test]
fn layer_entries_follow_owner_mode_and_parent_dir_rules() {
    let cx = Ctx::new();
    cx.write("site/index.html", "<h1>hi</h1>\n");
    cx.chmod("site/index.html", 0o600);
    cx.write_exec("site/run.sh", "#!/bin/sh\n");
    cx.chmod("site/run.sh", 0o700);
    cx.write("site/sub/deep/x.txt", "x\n");
    cx.write("site/debug.log", "excluded\n");
    cx.write("site/sub/trace.log", "excluded at any depth\n");
    cx.symlink("index.html", "site/current");
    cx.hardlink("site/index.html", "site/same.html");
    cx.mkdir("site/empty");
    cx.write("conf/app.conf", "a=1\n");
    cx.write_exec("conf/tool", "#!/bin/sh\n");
    cx.write("private/key.pem", "secret\n");
    cx.write("private/d/more.pem", "more\n");
    cx.write("rootfiles/etc/motd", "hello\n");
    cx.yaml(concat!(
        "images:\n",
        "  a:\n",
        "    from: scratch\n",
        "    layers:\n",
        "      - {src: site, dest: /srv/www/site, owner: \"33:33\", exclude: [\"*.log\"]}\n",
        "      - {src: conf/app.conf, dest: /etc/app/app.conf, mode: \"0640\"}\n",
        "      - {src: private, dest: /opt/private, mode: \"0640\", owner: \"1001\"}\n",
        "      - {src: conf/tool, dest: /usr/local/bin/}\n",
        "      - rootfiles\n",
    ));
    let cx = cx.with_epoch(1_600_000_000);
    let out = cx.scratch.join("oci");
    let report = cx.build(&["a", "-o", &format!("oci:{}", out.display())]);
    let img = validate_layout(&out, "a");
    assert_eq!(img.manifest_digest, report.manifest("a"));
    assert_eq!(img.layers.len(), 5);
    for l in &img.layers {
        assert_eq!(l.media_type, common::LAYER_GZIP);
        let entries = l.entries();
        // Parents come before their children.
        for (i, e) in entries.iter().enumerate() {
            if let Some((parent, _)) = e.path.trim_end_matches('/').rsplit_once('/') {
                let at = entries
                    .iter()
                    .position(|p| p.path.trim_end_matches('/') == parent);
                assert!(at.is_some_and(|at| at < i), "{} before its parent", e.path);
            }
            assert_eq!(e.mtime, 1_600_000_000, "{}", e.path);
        }
    }
    let site = &img.layers[0];
    assert_summaries(
        site,
        &[
            ("srv", ('d', 0o755, 0, 0)),
            ("srv/www", ('d', 0o755, 0, 0)),
            ("srv/www/site", ('d', 0o755, 33, 33)),
            ("srv/www/site/index.html", ('f', 0o644, 33, 33)),
            ("srv/www/site/run.sh", ('f', 0o755, 33, 33)),
            ("srv/www/site/sub/deep", ('d', 0o755, 33, 33)),
            ("srv/www/site/empty", ('d', 0o755, 33, 33)),
        ],
    );
    assert_eq!(site.entry("srv/www/site/index.html").data, b"<h1>hi</h1>\n");
    let link = site.entry("srv/www/site/current");
    assert_eq!((link.kind, link.link.as_deref()), ('l', Some("index.html")));
    let hard = site.entry("srv/www/site/same.html");
    assert_eq!(
        (hard.kind, hard.link.as_deref()),
        ('h', Some("srv/www/site/index.html"))
    );
    let paths: Vec<String> = site.entries().iter().map(|e| e.path.clone()).collect();
    assert!(
        !paths.iter().any(|p| p.ends_with(".log")),
        "excluded files are left out: {paths:?}"
    );

    let conf = &img.layers[1];
    assert_summaries(
        conf,
        &[
            ("etc", ('d', 0o755, 0, 0)),
            ("etc/app", ('d', 0o755, 0, 0)),
            ("etc/app/app.conf", ('f', 0o640, 0, 0)),
        ],
    );
    assert_eq!(conf.entries().len(), 3);

    assert_summaries(
        &img.layers[2],
        &[
            ("opt", ('d', 0o755, 0, 0)),
            ("opt/private", ('d', 0o750, 1001, 1001)),
            ("opt/private/d", ('d', 0o750, 1001, 1001)),
            ("opt/private/key.pem", ('f', 0o640, 1001, 1001)),
        ],
    );

    assert_summaries(
        &img.layers[3],
        &[
            ("usr/local/bin/tool", ('f', 0o755, 0, 0)),
            ("usr/local", ('d', 0o755, 0, 0)),
        ],
    );

    let root = &img.layers[4];
    assert_summaries(root, &[("etc/motd", ('f', 0o644, 0, 0))]);
    assert!(
        !root
            .entries()
            .iter()
            .any(|e| e.path.is_empty() || e.path == "/" || e.path == "./"),
        "no entry for / itself"
    );
}

#[test]
fn oci_output_adds_names_to_an_existing_layout() {
    let cx = fleet();
    let out = cx.scratch.join("shared-layout");
    let target = format!("oci:{}", out.display());
    cx.build(&["base", "-o", &target]);
    let first = cx.build(&["client-b", "-o", &target]);
    // Both names are there and valid; client-b's parents are not named.
    validate_layout(&out, "base");
    validate_layout(&out, "client-b");
    let index: Value = serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{index:#}");
    // Building a changed image again replaces its name, not adds a second.
    cx.write("clients/b/style.css", "changed\n");
    let second = cx.build(&["client-b", "-o", &target]);
    assert_ne!(second.manifest("client-b"), first.manifest("client-b"));
    let img = validate_layout(&out, "client-b");
    assert_eq!(img.manifest_digest, second.manifest("client-b"));
    let index: Value = serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{index:#}");
    assert_eq!(second.0["outputs"], serde_json::json!([target]));
}

/// Lists and unpacks a tar file with GNU tar.
fn gnu_untar(file: &Path, dir: &Path) -> Vec<String> {
    fs::create_dir_all(dir).unwrap();
    let mut c = std::process::Command::new("tar");
    c.arg("-xvf").arg(file).arg("-C").arg(dir);
    common::run_command(c)
        .success()
        .stdout
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn docker_archive_holds_every_requested_image_and_its_tags() {
    let cx = fleet();
    let file = cx.scratch.join("fleet.tar");
    cx.build(&[
        "client-a",
        "client-b",
        "-o",
        &format!("docker-archive:{}", file.display()),
    ]);
    let dir = cx.scratch.join("unpacked");
    let listed = gnu_untar(&file, &dir);
    for needed in ["manifest.json", "index.json", "oci-layout"] {
        assert!(listed.iter().any(|l| l == needed), "{needed}: {listed:?}");
    }
    let manifest: Value =
        serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let tags: BTreeSet<String> = manifest
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["RepoTags"].as_array().unwrap().iter())
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        tags,
        BTreeSet::from(["client-a:latest", "client-a:5.1.4", "client-b:latest"].map(String::from))
    );
    for m in manifest.as_array().unwrap() {
        let layers = m["Layers"].as_array().unwrap();
        assert_eq!(layers.len(), 3, "{m}");
        for l in layers {
            assert!(dir.join(l.as_str().unwrap()).is_file(), "{l}");
        }
        assert!(dir.join(m["Config"].as_str().unwrap()).is_file(), "{m}");
    }
    // The archive is also an OCI layout naming the requested images.
    validate_layout(&dir, "client-a");
    validate_layout(&dir, "client-b");
}

#[test]
fn docker_archive_gives_docker_load_zstd_layers_as_plain_tars() {
    // Docker before 23 cannot decompress zstd in `docker load`: the
    // archive's manifest.json names plain tars (by diff_id), its OCI
    // layout the zstd blobs, for the same image.
    let cx = fleet();
    let file = cx.scratch.join("zstd.tar");
    cx.build(&[
        "client-a",
        "--compression",
        "zstd:9",
        "-o",
        &format!("docker-archive:{}", file.display()),
    ]);
    let dir = cx.scratch.join("unpacked");
    gnu_untar(&file, &dir);
    let image = validate_layout(&dir, "client-a");
    assert!(
        image
            .layers
            .iter()
            .all(|l| l.media_type == "application/vnd.oci.image.layer.v1.tar+zstd")
    );
    let manifest: Value =
        serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let layers = manifest[0]["Layers"].as_array().unwrap();
    let diff_ids = image.config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(layers.len(), diff_ids.len());
    for (l, diff_id) in layers.iter().zip(diff_ids) {
        let bytes = fs::read(dir.join(l.as_str().unwrap())).unwrap();
        let hex = common::sha256_hex(&bytes);
        assert_eq!(format!("sha256:{hex}"), diff_id.as_str().unwrap(), "{l}");
        assert_eq!(l.as_str().unwrap(), format!("blobs/sha256/{hex}"));
        // A plain tar: ustar magic at 257.
        assert_eq!(&bytes[257..262], b"ustar", "{l}");
    }
}

#[test]
fn docker_archive_headers_parse_with_strict_tar_readers() {
    // Every header field must be valid octal (a directory's size too), or
    // strict readers such as Rust's `tar` crate reject the archive.
    let cx = fleet();
    let file = cx.scratch.join("base.tar");
    cx.build(&["base", "-o", &format!("docker-archive:{}", file.display())]);
    let entries = tar_entries(&fs::read(&file).unwrap());
    assert!(entries.iter().any(|e| e.path == "manifest.json"));
    for e in &entries {
        assert_eq!(e.mtime, 0, "{}", e.path);
        assert_eq!((e.uid, e.gid), (0, 0), "{}", e.path);
    }
}

/// The files of an output under `umask`: 0666 less it, as any program's.
#[test]
fn outputs_follow_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let mut cx = fleet();
    for (umask, want) in [("022", 0o644), ("027", 0o640)] {
        cx.wrapper = ["sh", "-c", &format!("umask {umask} && exec \"$@\""), "sh"]
            .map(String::from)
            .to_vec();
        let archive = cx.scratch.join(format!("base-{umask}.tar"));
        let layout = cx.scratch.join(format!("oci-{umask}"));
        cx.build(&[
            "base",
            "-o",
            &format!("docker-archive:{}", archive.display()),
            "-o",
            &format!("oci:{}", layout.display()),
        ]);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&archive), want, "docker-archive under umask {umask}");
        let mut files = vec![layout.join("index.json"), layout.join("oci-layout")];
        for e in fs::read_dir(layout.join("blobs/sha256")).unwrap() {
            files.push(e.unwrap().path());
        }
        for f in &files {
            assert_eq!(mode(f), want, "{} under umask {umask}", f.display());
        }
        validate_layout(&layout, "base");
    }
}

/// Runs `build ARGS…` and SIGKILLs it once it has written more than a MiB
/// of a temporary file in its directory of the store's tmp/; that file.
fn kill_mid_write(cx: &Ctx, args: &[&str]) -> std::path::PathBuf {
    use std::process::Stdio;
    let mut child = cx
        .command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let prefix = format!("{}-", child.id());
    let started = std::time::Instant::now();
    let partial = loop {
        let big = fs::read_dir(cx.home.join("tmp"))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|d| d.file_name().to_string_lossy().starts_with(&prefix))
            .flat_map(|d| fs::read_dir(d.path()).into_iter().flatten())
            .filter_map(Result::ok)
            .find(|f| f.metadata().is_ok_and(|m| m.is_file() && m.len() > 1 << 20));
        if let Some(f) = big {
            break f.path();
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the build ended ({status}) before it was seen writing its layer in tmp/");
        }
        assert!(
            started.elapsed().as_secs() < 300,
            "no temporary file of the build in tmp/ after 300 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        fs::metadata(&partial).is_ok_and(|m| m.len() > 1 << 20),
        "the kill left no partial file: {}",
        partial.display()
    );
    partial
}

/// A build killed while writing a big layer leaves its partial file; the
/// next process to open the store removes it (and gc reports one).
#[test]
fn a_killed_builds_temporary_file_is_removed_by_the_next_build() {
    use std::io::Read;
    let cx = fleet();
    // Incompressible, so the layer is written for a while.
    let mut noise = Vec::new();
    fs::File::open("/dev/urandom")
        .unwrap()
        .take(96 << 20)
        .read_to_end(&mut noise)
        .unwrap();
    cx.write("layers/big/srv/noise", &noise);
    drop(noise);
    let yaml = fs::read_to_string(cx.path("images.yaml")).unwrap();
    cx.yaml(&format!(
        "{yaml}  big:\n    from: scratch\n    layers: [layers/big]\n"
    ));
    let tmp = cx.home.join("tmp");
    let partial = kill_mid_write(&cx, &["build", "big"]);
    let dead = partial.parent().unwrap().to_path_buf();
    assert_eq!(list_of(&tmp), [file_name(&dead)], "the killed build's");
    cx.build(&["base"]);
    assert!(!dead.exists(), "the next build removed {}", dead.display());
    assert!(
        list_of(&tmp).is_empty(),
        "tmp/ after a build that ended: {:?}",
        list_of(&tmp)
    );
    // gc removes and reports them too.
    let partial = kill_mid_write(&cx, &["build", "big"]);
    let gc = cx.run(&["--json", "gc"]).success().json();
    assert_eq!(gc["temps_removed"], 1, "{gc:#}");
    assert!(
        gc["temp_bytes_removed"].as_u64().unwrap() > 1 << 20,
        "{gc:#}"
    );
    assert!(!partial.exists());
    assert!(list_of(&tmp).is_empty(), "{:?}", list_of(&tmp));
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// The names in a directory, sorted.
fn list_of(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| file_name(&e.unwrap().path()))
        .collect();
    names.sort();
    names
}

/// Issue 13: `{src: ../../../../etc}` put the build machine's /etc/shadow
/// into a layer. Every path images.yaml names must resolve inside the build
/// context (the directory of images.yaml, or `--context DIR`), links
/// included; a link inside a layer's tree is copied as a link, not followed.
#[test]
fn paths_outside_the_build_context_are_refused() {
    let cx = Ctx::new();
    let outside = cx.scratch.join("machine/etc");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("shadow"), "root:$6$secret-hash:19000::::::\n").unwrap();
    fs::write(cx.scratch.join("machine/token"), "s3cret\n").unwrap();
    let refused = |yaml: &str, args: &[&str], at: &str, what: &str| {
        cx.yaml(yaml);
        for cmd in ["check", "build"] {
            let mut all = args.to_vec();
            all.extend(
                [cmd, "--all"]
                    .iter()
                    .take(if cmd == "check" { 1 } else { 2 }),
            );
            cx.run(&all).exit(2).stderr_has(&[
                at,
                what,
                "is outside the build context",
                "--context DIR",
            ]);
        }
    };
    // `..` out of the project.
    refused(
        "images:\n  x:\n    from: scratch\n    layers:\n      - {src: ../scratch/machine/etc, dest: /x}\n",
        &[],
        "images.yaml:5:15",
        "layer source `../scratch/machine/etc`",
    );
    // An absolute path elsewhere.
    let abs = outside.display().to_string();
    refused(
        &format!(
            "images:\n  x:\n    from: scratch\n    layers:\n      - {{src: \"{abs}\", dest: /x}}\n"
        ),
        &[],
        "images.yaml:5:15",
        &format!("layer source `{abs}`"),
    );
    // A link in the project that leads out, as `src` and as a directory
    // on the way to it.
    cx.symlink(&abs, "etc-link");
    let via_link = "images:\n  x:\n    from: scratch\n    layers:\n      - {src: etc-link, dest: /x}\n      - {src: etc-link/shadow, dest: /y}\n";
    refused(via_link, &[], "images.yaml:5:15", "through a link");
    cx.yaml(via_link);
    cx.run(&["check"])
        .exit(2)
        .stderr_has(&["images.yaml:6:15", "layer source `etc-link/shadow`"]);
    // A secret file outside.
    refused(
        "images:\n  x:\n    from: scratch\n    secrets:\n      tok: {file: ../scratch/machine/token}\n    run: [\"true\"]\n",
        &[],
        "images.yaml:5:19",
        "secret file `../scratch/machine/token`",
    );

    // Widened explicitly to the parent directory, the same link is read
    // (followed as `src`, as Docker's COPY follows one).
    cx.yaml(via_link);
    cx.run(&["--context", "..", "check"]).success();
    let out = cx.scratch.join("oci-context");
    cx.build(&[
        "--context",
        "..",
        "x",
        "-o",
        &format!("oci:{}", out.display()),
    ]);
    let img = validate_layout(&out, "x");
    assert_eq!(img.layers[0].entry("x/shadow").kind, 'f');
    assert_eq!(img.layers[1].entry("y").kind, 'f');

    // A link inside a layer's tree that points out is an entry of the
    // layer, copied as a link: what it points to is never read.
    cx.write("tree/app.conf", "a=1\n");
    cx.symlink(&abs, "tree/escape");
    cx.yaml("images:\n  x:\n    from: scratch\n    layers:\n      - {src: tree, dest: /x}\n");
    cx.run(&["check"]).success();
    let out = cx.scratch.join("oci-tree");
    cx.build(&["x", "-o", &format!("oci:{}", out.display())]);
    let img = validate_layout(&out, "x");
    let escape = img.layers[0].entry("x/escape");
    assert_eq!(
        (escape.kind, escape.link.as_deref()),
        ('l', Some(abs.as_str()))
    );
    let paths: Vec<String> = img.layers[0]
        .entries()
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert!(!paths.iter().any(|p| p.contains("shadow")), "{paths:?}");
}

/// `dir:` sources named through `--set` obey the same context.
#[test]
fn a_dir_source_set_outside_the_context_needs_context() {
    let cx = Ctx::new();
    fs::create_dir_all(cx.scratch.join("checkout/public")).unwrap();
    fs::write(cx.scratch.join("checkout/public/index.php"), "<?php\n").unwrap();
    cx.mkdir("here/public");
    cx.yaml("vars:\n  src: here\nsources:\n  local:\n    dir: \"${src}\"\nimages:\n  dev:\n    from: scratch\n    layers:\n      - {source: local, src: public, dest: /srv}\n");
    cx.run(&["check"]).success();
    cx.run(&["--set", "src=../scratch/checkout", "check"])
        .exit(2)
        .stderr_has(&[
            "images.yaml:5:10",
            "source directory `../scratch/checkout` is outside the build context",
            "--context DIR",
        ]);
    cx.run(&[
        "--set",
        "src=../scratch/checkout",
        "--context",
        "..",
        "check",
    ])
    .success();
    cx.run(&["--context", "nowhere", "check"])
        .exit(2)
        .stderr_has(&["nowhere", "`--context` must name a directory"]);
}

/// Issue 13: `check` passed an owner name that `build` then refused. It
/// checks names against the parent's last build, and says when it cannot
/// tell yet.
#[test]
fn check_resolves_owner_names_as_build_will() {
    let cx = Ctx::new();
    cx.write(
        "base/etc/passwd",
        "root:x:0:0::/root:/bin/sh\nwww-data:x:33:33::/var/www:/bin/false\n",
    );
    cx.write("base/etc/group", "root:x:0:\nwww-data:x:33:\n");
    cx.write("app/index.php", "<?php\n");
    let images = |owner: &str| {
        format!(
            "images:\n  base:\n    from: scratch\n    layers: [base]\n  app:\n    from: base\n    layers:\n      - {{src: app, dest: /srv, owner: \"{owner}\"}}\n"
        )
    };
    cx.yaml(&images("nobody"));
    // The parent has never been built: a note, and success.
    let run = cx.run(&["check"]).success();
    run.stderr_has(&[
        "note: image app: owner `nobody` cannot be checked yet",
        "`base`, which has not been built here",
    ]);
    let json = cx.run(&["--json", "check"]).success().json();
    assert_eq!(json["notes"].as_array().map(Vec::len), Some(1), "{json:#}");
    // Built, its /etc/passwd is known: the same error `build` gives.
    cx.build(&["base"]);
    cx.run(&["check"]).exit(2).stderr_has(&[
        "images.yaml:8:9: image app: owner `nobody`",
        "user `nobody` is not in the parent image's /etc/passwd, as `base` was last built",
        "hint: add the account to `base`",
    ]);
    cx.run(&["build", "app"])
        .exit(2)
        .stderr_has(&["user `nobody` is not in the parent image's /etc/passwd"]);
    let json = cx.run(&["--json", "check"]).exit(2).json();
    assert_eq!(json["problems"][0]["line"], 8, "{json:#}");
    // A name the parent has passes with no note.
    cx.yaml(&images("www-data:www-data"));
    let run = cx.run(&["check"]).success();
    assert!(!run.stderr.contains("note:"), "{}", run.stderr);
    // From scratch, nothing has a name but root.
    cx.yaml("images:\n  bare:\n    from: scratch\n    layers:\n      - {src: app, dest: /srv, owner: www-data}\n");
    cx.run(&["check"]).exit(2).stderr_has(&[
        "owner `www-data`: user `www-data` cannot be looked up: the parent image has no /etc/passwd (it starts from scratch)",
        "hint: give a numeric id",
    ]);
}

#[test]
fn a_long_chain_rebuilds_nothing_and_stores_each_layer_once() {
    // Each image from the one before, one tiny file layer each: records
    // that repeated every layer below made a no-change build quadratic.
    const N: usize = 150;
    let cx = Ctx::new();
    let mut yaml = String::from("images:\n");
    for i in 0..N {
        let parent = if i == 0 {
            "scratch".to_string()
        } else {
            format!("i{}", i - 1)
        };
        yaml.push_str(&format!(
            "  i{i}:\n    from: {parent}\n    layers: [{{src: files/f{i}.txt, dest: /f{i}.txt}}]\n"
        ));
        cx.write(&format!("files/f{i}.txt"), format!("{i}\n"));
    }
    cx.write("images.yaml", yaml);
    let first = cx.build(&["--all"]);
    let second = cx.build(&["--all"]);
    for i in 0..N {
        let n = format!("i{i}");
        assert_eq!(second.manifest(&n), first.manifest(&n), "{n}");
        assert_eq!(second.image(&n)["assembled"], false, "{n} assembled again");
        assert!(second.layer_summary(&n).iter().all(|l| !l.2), "{n}");
    }
    // Every image record and ref names its own layer only.
    for dir in ["images", &format!("refs/{}", only_graph(&cx))] {
        for e in fs::read_dir(cx.home.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let v: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
            let layers = v.get("layers").or_else(|| v["image"].get("layers"));
            let n = layers.and_then(Value::as_array).map_or(0, Vec::len);
            assert_eq!(n, 1, "{} lists {n} layers", p.display());
        }
    }
    // The whole image is still known: inspect, and a change at the bottom
    // rebuilds one layer and re-assembles every image above it.
    let top = format!("i{}", N - 1);
    let inspect = cx.run(&["--json", "inspect", &top]).success().json();
    assert_eq!(inspect["manifest"], first.manifest(&top));
    assert_eq!(inspect["layers"].as_array().unwrap().len(), N);
    cx.write("files/f0.txt", "changed\n");
    let third = cx.build(&["--all", "-j", "2"]);
    let built: usize = (0..N)
        .map(|i| {
            third
                .layer_summary(&format!("i{i}"))
                .iter()
                .filter(|l| l.2)
                .count()
        })
        .sum();
    assert_eq!(built, 1);
    for i in 0..N {
        assert_eq!(third.image(&format!("i{i}"))["assembled"], true, "i{i}");
    }
    validate_layout_of(&cx, &top);
}

/// The one graph (images.yaml) of a test's store.
fn only_graph(cx: &Ctx) -> String {
    let mut graphs: Vec<String> = fs::read_dir(cx.home.join("refs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(graphs.len(), 1, "{graphs:?}");
    graphs.remove(0)
}

#[test]
fn a_full_store_disk_fails_the_build_naming_it() {
    // The store on a 2 MiB tmpfs, mounted in a mount namespace of the
    // build's own (root, as on CI): a 4 MiB layer cannot be written.
    let unshare = ["/usr/bin/unshare", "/bin/unshare"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("this test needs unshare (util-linux)");
    let mut cx = Ctx::new();
    // Incompressible: the layer stays about 4 MiB.
    let mut noise = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(fs::File::open("/dev/urandom").unwrap(), 4 << 20),
        &mut noise,
    )
    .unwrap();
    cx.write("files/big.bin", noise);
    cx.write(
        "images.yaml",
        "images:\n  a:\n    from: scratch\n    layers: [{src: files/big.bin, dest: /big.bin}]\n",
    );
    cx.wrapper = vec![
        unshare.to_string(),
        "--mount".into(),
        "--propagation".into(),
        "private".into(),
        "/bin/sh".into(),
        "-c".into(),
        "mount -t tmpfs -o size=2m tmpfs \"$IMGBUILD_HOME\" || { echo 'cannot mount a tmpfs (needs root with CAP_SYS_ADMIN)' >&2; exit 99; }; exec \"$@\"".into(),
        "sh".into(),
    ];
    let r = cx.run(&["build", "a"]);
    assert_ne!(r.code, 99, "{r}");
    let r = r.exit(1);
    r.stderr_has(&["No space left on device", "disk is full", "IMGBUILD_HOME"]);
    assert!(!r.stderr.contains("changed while"), "{r}");
}
