//! Clients as data: `clients:` in images.yaml makes one image per
//! `clients/<name>/client.yaml` from a template. A fleet of three clients on
//! two lines built on a busybox base, read back with skopeo and umoci; a
//! fourth client that only adds its own build to the plan; problems in a
//! client file named by that file's line and column.
//!
//! Needs: busybox-static, skopeo, umoci, and root (umoci unpacks with owners).
mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::{Ctx, plan_of, require_root, require_tool, skopeo, umoci_unpack, validate_layout};
use serde_json::Value;

/// Two lines on the busybox base, and the clients group (top level, after
/// `images:`).
const LINES: &str = r#"  line-1:
    from: base
    vars: {release: "1.0.3"}
    layers:
      - {src: core/1, dest: /srv/core}
  line-2:
    from: base
    vars: {release: "2.1.0"}
    layers:
      - {src: core/2, dest: /srv/core}
clients:
  files: clients/*/client.yaml
  image: client-${client}
  template:
    from: line-${line}
    vars: {www: /srv/www}
    tags: ["client-${client}:${release}", "client-${client}:latest"]
    layers:
      - {src: shared/config.txt, dest: "${www}/config.txt", owner: "0:33", mode: "0640"}
    config:
      env: {SITE: "${client}", LINE: "${line}"}
"#;

/// (client, line, its own layer's dest) of the first three clients.
const CLIENTS: [(&str, &str, &str); 3] = [
    ("acme", "1", "/srv/www/theme/acme"),
    ("beta", "2", "/srv/www/local/betatools"),
    ("gamma", "1", "/srv/www/theme/gamma"),
];

fn client_yaml(line: &str, dest: &str) -> String {
    format!(
        "# A client of line {line}.\nvars: {{line: \"{line}\"}}\nlayers:\n  - {{src: files, dest: \"{dest}\"}}\nconfig:\n  labels: {{client.dest: \"{dest}\"}}\n"
    )
}

fn fleet() -> Ctx {
    let cx = Ctx::new();
    cx.busybox_project("", &["sh", "cat"], LINES);
    cx.write("core/1/index.txt", "core one\n");
    cx.write("core/2/index.txt", "core two\n");
    cx.write("shared/config.txt", "config for every client\n");
    for (name, line, dest) in CLIENTS {
        add_client(&cx, name, line, dest);
    }
    cx
}

fn add_client(cx: &Ctx, name: &str, line: &str, dest: &str) {
    cx.write(
        &format!("clients/{name}/client.yaml"),
        client_yaml(line, dest),
    );
    cx.write(
        &format!("clients/{name}/files/{name}.txt"),
        format!("{name}'s own file\n"),
    );
}

fn graph_json(cx: &Ctx) -> Value {
    serde_json::from_str(&cx.run(&["graph", "--format", "json"]).success().stdout)
        .expect("graph json")
}

fn graph_node<'a>(graph: &'a Value, name: &str) -> &'a Value {
    graph["images"]
        .as_array()
        .expect("`images` is a list")
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not in the graph: {graph:#}"))
}

#[test]
fn three_clients_on_two_lines_build_with_their_layers_and_tags() {
    require_tool("skopeo", "skopeo");
    require_tool("umoci", "umoci");
    require_root();
    let cx = fleet();
    let check = cx.run(&["check"]).success().stdout;
    assert!(check.contains("6 image(s), OK"), "{check}");

    let graph = graph_json(&cx);
    for (name, line, _) in CLIENTS {
        let node = graph_node(&graph, &format!("client-{name}"));
        assert_eq!(node["parent"], format!("line-{line}"), "{node:#}");
        let release = if line == "1" { "1.0.3" } else { "2.1.0" };
        assert_eq!(
            node["tags"],
            serde_json::json!([
                format!("client-{name}:{release}"),
                format!("client-{name}:latest")
            ]),
            "{node:#}"
        );
    }
    assert_eq!(
        graph_node(&graph, "line-1")["children"],
        serde_json::json!(["client-acme", "client-gamma"])
    );

    let out = cx.scratch.join("oci");
    let report = cx.build_all_oci("gzip", &out);
    for (name, line, dest) in CLIENTS {
        let image = format!("client-{name}");
        let valid = validate_layout(&out, &image);
        assert_eq!(valid.manifest_digest, report.manifest(&image));
        // base (busybox, site), the line, the template's config, the client's own files.
        assert_eq!(valid.layers.len(), 5, "{image}");
        let info = skopeo(&cx, &["inspect", &format!("oci:{}:{image}", out.display())])
            .success()
            .json();
        assert_eq!(info["Layers"].as_array().unwrap().len(), 5, "{info:#}");
        let env: BTreeSet<&str> = info["Env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        let site = format!("SITE={name}");
        let line_env = format!("LINE={line}");
        assert!(
            env.contains(site.as_str()) && env.contains(line_env.as_str()),
            "{env:?}"
        );
        assert_eq!(info["Labels"]["client.dest"], dest, "{info:#}");

        let rootfs = umoci_unpack(&out, &image, &cx.scratch.join(format!("bundle-{name}")));
        let own = rootfs
            .join(dest.trim_start_matches('/'))
            .join(format!("{name}.txt"));
        assert_eq!(
            fs::read_to_string(&own).unwrap_or_else(|e| panic!("{}: {e}", own.display())),
            format!("{name}'s own file\n")
        );
        let config = rootfs.join("srv/www/config.txt");
        assert_eq!(
            fs::read_to_string(&config).unwrap(),
            "config for every client\n"
        );
        let meta = fs::metadata(&config).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
        assert_eq!(
            std::os::unix::fs::MetadataExt::gid(&meta),
            33,
            "{}",
            config.display()
        );
        let core = if line == "1" {
            "core one\n"
        } else {
            "core two\n"
        };
        assert_eq!(
            fs::read_to_string(rootfs.join("srv/core/index.txt")).unwrap(),
            core
        );
        // No other client's files.
        for (other, _, other_dest) in CLIENTS {
            if other != name {
                let p = rootfs
                    .join(other_dest.trim_start_matches('/'))
                    .join(format!("{other}.txt"));
                assert!(!p.exists(), "{image} holds {}", p.display());
            }
        }
    }

    // The tags, as docker would load them.
    let archive = cx.scratch.join("fleet.tar");
    cx.build(&[
        "--all",
        "-o",
        &format!("docker-archive:{}", archive.display()),
    ]);
    for (name, line, dest) in CLIENTS {
        let release = if line == "1" { "1.0.3" } else { "2.1.0" };
        for tag in [release, "latest"] {
            let reference = format!("docker-archive:{}:client-{name}:{tag}", archive.display());
            let info = skopeo(&cx, &["inspect", &reference]).success().json();
            assert_eq!(info["Labels"]["client.dest"], dest, "{reference}: {info:#}");
            assert_eq!(info["Layers"].as_array().unwrap().len(), 5, "{info:#}");
        }
    }
}

#[test]
fn a_fourth_client_file_plans_only_its_own_build() {
    let cx = fleet();
    cx.build(&["--all"]);
    let plan = cx.plan(&["--all"]);
    for p in plan.as_array().unwrap() {
        assert_eq!(p["action"], "reuse", "{p:#}");
    }

    add_client(&cx, "delta", "2", "/srv/www/theme/delta");
    let plan = cx.plan(&["--all"]);
    let building: Vec<&str> = plan
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["action"] != "reuse")
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(building, ["client-delta"], "{plan:#}");
    assert_eq!(plan_of(&plan, "client-delta")["action"], "build");
    let human = cx.run(&["plan", "--all"]).success().stdout;
    assert!(human.contains("build     client-delta"), "{human}");
    assert!(human.contains("reuse     client-acme"), "{human}");

    // Built, it shares every layer but its own with beta, on the same line
    // (the template's config.txt layer too), and builds only that one.
    let report = cx.build(&["client-delta", "client-beta"]);
    let delta = report.layer_summary("client-delta");
    let beta = report.layer_summary("client-beta");
    // An image's own layers: the template's, then the client's.
    assert_eq!(delta.len(), 2, "{delta:?}");
    assert_eq!(delta[0].1, beta[0].1);
    assert_ne!(delta[1].1, beta[1].1);
    let built: Vec<bool> = delta.iter().map(|l| l.2).collect();
    assert_eq!(built, [false, true], "{delta:?}");
}

#[test]
fn a_bad_key_in_a_client_file_names_that_file_line_and_column() {
    let cx = fleet();
    cx.write(
        "clients/beta/client.yaml",
        "vars: {line: \"2\"}\nlayer:\n  - {src: files, dest: /srv/www/x}\n",
    );
    for cmd in ["check", "plan", "build", "graph"] {
        let mut args = vec![cmd];
        if cmd != "check" && cmd != "graph" {
            args.push("--all");
        }
        let run = cx.run(&args).exit(2);
        run.stderr_has(&[
            "clients/beta/client.yaml:2:1: image client-beta: unknown key `layer` in an image",
            "hint: did you mean `layers`?",
        ]);
    }
    // --json names the file of each problem.
    let run = cx.run(&["--json", "check"]).exit(2);
    let problems = &run.json()["problems"];
    assert_eq!(
        problems[0]["file"], "clients/beta/client.yaml",
        "{problems:#}"
    );
    assert_eq!(problems[0]["line"], 2);
    assert_eq!(problems[0]["column"], 1);

    // A missing source: the path is the client directory's.
    cx.write(
        "clients/beta/client.yaml",
        "vars: {line: \"2\"}\nlayers:\n  - {src: nope, dest: /srv/www/x}\n",
    );
    cx.run(&["check"]).exit(2).stderr_has(&[
        "clients/beta/client.yaml:3:11: image client-beta: layer source `nope` cannot be read",
        "clients/beta",
    ]);

    // A file the pattern matches that is not YAML.
    cx.write("clients/beta/client.yaml", client_yaml("2", "/srv/www/b"));
    fs::create_dir_all(cx.path("clients/odd/client.yaml")).unwrap();
    cx.run(&["check"]).exit(2).stderr_has(&[
        "images.yaml:",
        "matches what is not a YAML file: clients/odd/client.yaml",
        "hint:",
    ]);
}

#[test]
fn an_image_both_written_and_made_from_a_client_file_is_an_error() {
    let cx = Ctx::new();
    cx.busybox_project(
        "",
        &["sh"],
        &LINES.replace(
            "  line-2:\n",
            "  client-acme:\n    from: line-1\n  line-2:\n",
        ),
    );
    cx.write("core/1/index.txt", "core one\n");
    cx.write("core/2/index.txt", "core two\n");
    cx.write("shared/config.txt", "x\n");
    add_client(&cx, "acme", "1", "/srv/www/theme/acme");
    cx.run(&["check"]).exit(2).stderr_has(&[
        "images.yaml:10:3: image client-acme: image `client-acme` is written here and also made from clients/acme/client.yaml by `clients:`",
    ]);

    // An empty pattern is no error: no client images.
    fs::remove_dir_all(cx.path("clients")).unwrap();
    let check = cx.run(&["check"]).success().stdout;
    assert!(check.contains("4 image(s), OK"), "{check}");
}

#[test]
fn five_hundred_client_files_check_and_plan() {
    let cx = Ctx::new();
    cx.busybox_project("", &["sh"], LINES);
    cx.write("core/1/index.txt", "core one\n");
    cx.write("core/2/index.txt", "core two\n");
    cx.write("shared/config.txt", "x\n");
    for i in 0..500 {
        let line = if i % 2 == 0 { "1" } else { "2" };
        add_client(
            &cx,
            &format!("c{i:03}"),
            line,
            &format!("/srv/www/theme/c{i}"),
        );
    }
    let check = cx.run(&["check"]).success().stdout;
    assert!(check.contains("503 image(s), OK"), "{check}");
    let plan = cx.plan(&["--all"]);
    assert_eq!(plan.as_array().unwrap().len(), 503);
    let on_line_2 = graph_json(&cx)["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["parent"] == "line-2")
        .count();
    assert_eq!(on_line_2, 250);
}
