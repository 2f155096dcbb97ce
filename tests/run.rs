//! `run:` steps: commands run in the image's root filesystem, what they
//! change becomes one layer, judged by umoci and the layer's own entries.
mod common;

use std::fs;

use common::{
    Ctx, on_busybox_base, require_tool, run_command, static_busybox, umoci_unpack, validate_layout,
};

/// A busybox base with a few applets, and a child whose steps write, chmod,
/// delete and append.
fn project() -> Ctx {
    let cx = Ctx::new();
    cx.busybox_project(
        "",
        &["sh", "echo", "rm", "chmod", "mkdir", "cat", "pwd", "id"],
        concat!(
            "  stepped:\n",
            "    from: base\n",
            "    config:\n",
            "      env: {GREETING: hi}\n",
            "      workdir: /srv/app\n",
            "    run:\n",
            "      - echo \"$GREETING from $(pwd)\" > hello.txt && chmod 600 hello.txt\n",
            "      - rm /etc/motd\n",
            "      - echo \"www-data:x:33:33::/var/www:/bin/sh\" >> /etc/passwd\n",
        ),
    );
    cx
}

/// Whether `iso` runs here, by a probe (`imgbuild run base --isolation ISO
/// -- true`); why not, from its error. On CI (`CI` set: root with full
/// rights) every isolation must run, so there a failed probe fails the
/// test, naming why.
fn usable(iso: &str) -> Result<(), String> {
    let probe = project().run(&["run", "base", "--isolation", iso, "--", "true"]);
    if probe.code == 0 {
        return Ok(());
    }
    let why = format!("{iso} isolation cannot run here: {}", probe.stderr.trim());
    assert!(
        std::env::var_os("CI").is_none(),
        "{why}\n(on CI, as root with full rights, every isolation must run)"
    );
    eprintln!("{why}; its case is not run");
    Err(why)
}

/// The isolations of `wanted` that run here (see [`usable`]): all on CI,
/// at least one anywhere, else the test fails naming why.
fn isolations(wanted: &[&'static str]) -> Vec<&'static str> {
    let mut why = Vec::new();
    let ok: Vec<&'static str> = wanted
        .iter()
        .copied()
        .filter(|iso| usable(iso).map_err(|e| why.push(e)).is_ok())
        .collect();
    assert!(!ok.is_empty(), "no isolation runs here: {why:?}");
    ok
}

#[test]
fn steps_become_one_layer_with_changes_and_deletions() {
    let cx = project();
    let out = cx.scratch.join("oci");
    let report = cx.build(&["stepped", "-o", &format!("oci:{}", out.display())]);
    let image = validate_layout(&out, "stepped");
    assert_eq!(image.layers.len(), 3, "two file layers and one run layer");
    let layer = &image.layers[2];
    let hello = layer.entry("srv/app/hello.txt");
    assert_eq!(hello.data, b"hi from /srv/app\n");
    assert_eq!(hello.mode & 0o7777, 0o600);
    layer.entry("etc/.wh.motd");
    assert!(String::from_utf8_lossy(&layer.entry("etc/passwd").data).contains("www-data:x:33:33"));
    // Nothing else: no /proc, /dev, /tmp residue from the sandbox.
    let names: Vec<String> = layer.entries().iter().map(|e| e.path.clone()).collect();
    assert!(
        names
            .iter()
            .all(|n| ["etc", "srv"].iter().any(|p| n.starts_with(p))),
        "{names:?}"
    );
    // umoci applies the whiteout.
    require_tool("umoci", "umoci");
    let rootfs = umoci_unpack(&out, "stepped", &cx.scratch.join("bundle"));
    assert!(!rootfs.join("etc/motd").exists());
    assert!(rootfs.join("srv/app/hello.txt").exists());
    // An unchanged step is not run again.
    let again = cx.build(&["stepped"]);
    assert_eq!(again.manifest("stepped"), report.manifest("stepped"));
    assert!(again.layers("stepped").iter().all(|l| l["built"] == false));
}

#[test]
fn the_same_steps_give_the_same_digest_in_a_fresh_store() {
    let cx = project();
    let first = cx.build(&["stepped"]).manifest("stepped");
    let mut other = project();
    other.home = other.scratch.join("other-home");
    assert_eq!(other.build(&["stepped"]).manifest("stepped"), first);
}

#[test]
fn a_failing_step_fails_the_build_with_its_command_and_output() {
    let cx = project();
    let yaml = fs::read_to_string(cx.path("images.yaml")).unwrap();
    cx.yaml(&yaml.replace("rm /etc/motd", "echo about to fail; cat /nonexistent"));
    let run = cx.run(&["build", "stepped"]).exit(1);
    run.stderr_has(&[
        "`echo about to fail; cat /nonexistent` failed with exit status 1",
        "about to fail",
    ]);
    // A step that changes makes the layer, and the build, anew.
    let cx2 = project();
    let a = cx2.build(&["stepped"]).manifest("stepped");
    let yaml = fs::read_to_string(cx2.path("images.yaml")).unwrap();
    cx2.yaml(&yaml.replace("GREETING: hi", "GREETING: hello"));
    let b = cx2.build(&["stepped"]);
    assert_ne!(b.manifest("stepped"), a);
    assert_eq!(b.layers("stepped")[0]["built"], true);
}

#[test]
fn an_impossible_isolation_is_explained() {
    let cx = project();
    // As root, userns is not what this machine offers root.
    let run = cx
        .run(&["build", "stepped", "--isolation", "userns"])
        .exit(1);
    run.stderr_has(&["isolation `userns` is not possible here"]);
}

#[test]
fn smoke_tests_run_once_per_image_and_fail_the_build() {
    let cx = project();
    cx.busybox_applets("busybox", &["test", "["]);
    let yaml = fs::read_to_string(cx.path("images.yaml")).unwrap();
    cx.yaml(&format!(
        "{yaml}    test:\n      - cat /srv/app/hello.txt\n      - \"[ ! -e /etc/motd ]\"\n"
    ));
    let run = cx.run(&["build", "stepped"]).success();
    run.stderr_has(&["stepped: running its tests", "stepped | hi from /srv/app"]);
    // Passed before: not run again by build, run again by `test`.
    let again = cx.run(&["build", "stepped"]).success();
    assert!(!again.stderr.contains("running its tests"), "{again}");
    cx.run(&["test", "stepped"])
        .success()
        .stderr_has(&["running its tests"]);
    // A failing test fails the image, and no output is written.
    cx.yaml(&format!("{yaml}    test:\n      - \"[ -e /etc/motd ]\"\n"));
    let out = cx.scratch.join("oci-failed");
    let failed = cx
        .run(&["build", "stepped", "-o", &format!("oci:{}", out.display())])
        .exit(1);
    failed.stderr_has(&["test `[ -e /etc/motd ]` failed with exit status 1"]);
    assert!(!out.join("index.json").exists());
}

#[test]
fn run_passes_the_exit_status_and_uses_the_image_config() {
    let cx = project();
    let run = cx.run(&[
        "run",
        "stepped",
        "--",
        "sh",
        "-c",
        "echo \"$GREETING in $(pwd) as $(id -u)\"; exit 7",
    ]);
    let run = run.exit(7);
    assert_eq!(run.stdout.trim(), "hi in /srv/app as 0");
    // Arguments are passed as they are, not expanded twice.
    let echo = cx
        .run(&["run", "stepped", "--", "echo", "$HOME and 'quotes'"])
        .success();
    assert_eq!(echo.stdout.trim(), "$HOME and 'quotes'");
}

#[test]
fn plan_knows_run_layers() {
    let cx = project();
    let action = |plan: &serde_json::Value| {
        common::plan_of(plan, "stepped")["action"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(action(&cx.plan(&["stepped"])), "build");
    cx.build(&["stepped"]);
    assert_eq!(action(&cx.plan(&["stepped"])), "reuse");
    let yaml = fs::read_to_string(cx.path("images.yaml")).unwrap();
    cx.yaml(&yaml.replace("rm /etc/motd", "rm -f /etc/motd"));
    let plan = cx.plan(&["stepped"]);
    assert_eq!(action(&plan), "build");
    let reasons = common::plan_of(&plan, "stepped")["reasons"].to_string();
    assert!(reasons.contains("(run)"), "{reasons}");
}

#[test]
fn the_image_user_is_looked_up_in_the_image() {
    let cx = project();
    cx.write(
        "site/etc/passwd",
        "root:x:0:0::/root:/bin/sh\nappuser:x:1234:1235::/srv:/bin/sh\n",
    );
    let yaml = fs::read_to_string(cx.path("images.yaml")).unwrap();
    cx.yaml(&format!(
        "{yaml}  asuser:\n    from: base\n    config:\n      user: appuser\n"
    ));
    let run = cx
        .run(&["run", "asuser", "--", "sh", "-c", "id -u; id -g"])
        .success();
    assert_eq!(
        run.stdout.split_whitespace().collect::<Vec<_>>(),
        ["1234", "1235"]
    );
    cx.yaml(&format!(
        "{yaml}  asuser:\n    from: base\n    config:\n      user: nobody-here\n"
    ));
    cx.run(&["run", "asuser", "--", "true"])
        .exit(1)
        .stderr_has(&["user `nobody-here`: not in the image's /etc/passwd"]);
}

/// Every path under srv and etc of a tree (run in its root), with its
/// type, mode, owner, and a file's content hash or a link's target, by
/// busybox's applets.
const LISTING: &str = "find srv etc | sort | while read -r p; do \
     stat -c '%n %F %a %u:%g' \"$p\"; \
     if [ -L \"$p\" ]; then readlink \"$p\"; elif [ -f \"$p\" ]; then md5sum \"$p\"; fi; \
     done\n";

/// Steps that create, change, chmod, chown, delete, hard-link and replace
/// a directory wholesale, over a base holding what they change; the last
/// step prints the tree they left.
fn round_trip_project() -> Ctx {
    let cx = project();
    cx.busybox_applets(
        "busybox",
        &[
            "chown", "find", "sort", "stat", "md5sum", "ln", "readlink", "[", "true",
        ],
    );
    cx.write("site/usr/local/bin/listing", LISTING);
    cx.write("site/srv/keep/file", "kept\n");
    cx.write("site/srv/data.txt", "data\n");
    cx.write("site/srv/gone.txt", "gone\n");
    cx.write("site/srv/replaced/x", "x\n");
    cx.write("site/srv/replaced/y", "y\n");
    cx.write("site/srv/emptied/a", "a\n");
    cx.write("site/srv/partial/a", "a\n");
    cx.write("site/srv/partial/b", "b\n");
    cx.yaml(&on_busybox_base(concat!(
        "  stepped:\n",
        "    from: base\n",
        "    run:\n",
        "      - mkdir -p /srv/new/deep && echo made > /srv/new/deep/file && ln /srv/new/deep/file /srv/new/link\n",
        "      - echo more >> /etc/motd && chmod 700 /srv/keep && chmod 640 /srv/keep/file\n",
        "      - chown 33:33 /srv/data.txt && rm /srv/gone.txt /srv/partial/a\n",
        "      - rm -rf /srv/replaced && mkdir /srv/replaced && echo fresh > /srv/replaced/x\n",
        "      - rm /srv/emptied/a && echo new > /srv/emptied/b\n",
        "      - cd / && sh /usr/local/bin/listing\n",
    )));
    cx
}

#[test]
fn steps_round_trip_through_umoci_in_every_isolation() {
    require_tool("umoci", "umoci");
    // What this machine allows (root: both; in a container: chroot).
    let abilities = isolations(&["namespace", "chroot"]);
    let mut digests = Vec::new();
    for iso in &abilities {
        let cx = round_trip_project();
        let out = cx.scratch.join("oci");
        let run = cx
            .run(&[
                "build",
                "stepped",
                "--isolation",
                iso,
                "-o",
                &format!("oci:{}", out.display()),
            ])
            .success();
        if *iso == "namespace"
            && fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("overlay"))
        {
            run.stderr_has(&["with namespace isolation, on an overlay"]);
        }
        // The listing the last step printed.
        let left = run.step_output("stepped");
        assert!(
            left.iter()
                .any(|l| l == "srv/data.txt regular file 644 33:33"),
            "{iso}: {left:?}"
        );
        let image = validate_layout(&out, "stepped");
        let layer = image.layers.last().unwrap();
        // Every old name gone: opaque; some left: whiteouts, whether the
        // directory was replaced or emptied (the same rules for overlay's
        // upper directory and a copy).
        layer.entry("srv/emptied/.wh..wh..opq");
        layer.entry("srv/replaced/.wh.y");
        layer.entry("srv/partial/.wh.a");
        layer.entry("srv/.wh.gone.txt");
        let rootfs = umoci_unpack(&out, "stepped", &cx.scratch.join("bundle"));
        let mut sh = std::process::Command::new(static_busybox());
        sh.args(["sh", "-c", LISTING])
            .env("LC_ALL", "C")
            .current_dir(rootfs);
        let unpacked = run_command(sh).success().stdout_lines();
        assert_eq!(
            unpacked, left,
            "{iso}: umoci's tree differs from the steps'"
        );
        // A second build in a fresh store gives the same digest.
        let again = cx
            .build_in_fresh_store(&["stepped", "--isolation", iso])
            .manifest("stepped");
        assert_eq!(again, cx.build(&["stepped"]).manifest("stepped"));
        digests.push(again);
    }
    digests.dedup();
    assert_eq!(digests.len(), 1, "{abilities:?} gave {digests:?}");
}

#[test]
fn a_rootfs_tarball_is_the_first_layer_with_its_owners_and_modes() {
    let cx = project();
    // A tarball as other tools make them: unsorted, "./" names, real times,
    // owners that are not the builder's.
    cx.write("tree/srv/www/index.html", "hello\n");
    cx.write("tree/usr/bin/tool", "#!/bin/sh\n");
    let tar = |args: &[&str]| {
        let mut c = std::process::Command::new("tar");
        c.current_dir(cx.path("tree")).args(args);
        run_command(c).success();
    };
    tar(&["-czf", "../rootfs.tar.gz", "--owner=0", "--group=0", "."]);
    // Then the same with one file given to www-data and a set-uid bit,
    // appended as a second archive.
    tar(&["-cf", "../plain.tar", "--owner=0", "--group=0", "./srv"]);
    tar(&[
        "-rf",
        "../owned.tar",
        "--owner=33",
        "--group=33",
        "--mode=4755",
        "./usr/bin/tool",
    ]);
    tar(&["-Af", "../plain.tar", "../owned.tar"]);
    let mut zstd = std::process::Command::new("zstd");
    zstd.current_dir(cx.path(""))
        .args(["-q", "plain.tar", "-o", "rootfs.tar.zst"]);
    run_command(zstd).success();
    cx.yaml(concat!(
        "images:\n",
        "  imported:\n",
        "    from: {rootfs: rootfs.tar.zst}\n",
        "    layers: [busybox]\n",
        "    run: [\"cat /srv/www/index.html > /srv/copy\"]\n",
    ));
    let out = cx.scratch.join("oci");
    let first = cx.build(&["imported", "-o", &format!("oci:{}", out.display())]);
    let image = validate_layout(&out, "imported");
    assert_eq!(image.layers.len(), 3, "tarball, busybox, run");
    let tool = image.layers[0].entry("usr/bin/tool");
    assert_eq!((tool.uid, tool.gid, tool.mode & 0o7777), (33, 33, 0o4755));
    assert_eq!(image.layers[0].entry("srv/www/index.html").data, b"hello\n");
    assert_eq!(image.layers[2].entry("srv/copy").data, b"hello\n");
    // Reused while the tarball is the same; a new tarball is a new layer.
    let again = cx.build(&["imported"]);
    assert_eq!(again.manifest("imported"), first.manifest("imported"));
    assert_eq!(again.layers("imported")[0]["built"], false);
    let yaml = fs::read_to_string(cx.path("images.yaml")).unwrap();
    cx.yaml(&yaml.replace("rootfs.tar.zst", "rootfs.tar.gz"));
    let plan = cx.plan(&["imported"]);
    assert!(
        common::plan_of(&plan, "imported")["reasons"]
            .to_string()
            .contains("the tarball changed"),
        "{plan}"
    );
    let gz = cx.build(&["imported"]);
    assert_ne!(gz.manifest("imported"), first.manifest("imported"));
    // A missing tarball is named with its line.
    cx.yaml(&yaml.replace("rootfs.tar.zst", "missing.tar"));
    cx.run(&["check"]).exit(2).stderr_has(&[
        "images.yaml:3:",
        "`rootfs: missing.tar` cannot be read: no such file or directory",
    ]);
}

#[test]
fn secrets_reach_steps_but_never_layers_output_or_keys() {
    const TOKEN: &str = "tok-3f9a1c77e2";
    const KEY: &str = "filekey-0b5d6e";
    for iso in isolations(&["namespace", "chroot"]) {
        let cx = project();
        cx.busybox_applets("busybox", &["grep", "wc", "ls"]);
        cx.write("deploy.key", format!("{KEY}\n"));
        cx.yaml(&on_busybox_base(concat!(
            "  secretive:\n",
            "    from: base\n",
            "    secrets:\n",
            "      token: {env: BUILD_TOKEN}\n",
            "      deploy_key: {file: deploy.key, rebuild: true}\n",
            "    run:\n",
            "      - echo \"token is $(cat /run/secrets/token), key $(cat /run/secrets/deploy_key)\"\n",
            "      - ls -ln /run/secrets/token\n",
            "      - echo used > /srv/done\n",
        )));
        let env = [("BUILD_TOKEN", TOKEN)];
        let run = cx
            .run_env(&["build", "secretive", "--isolation", iso], &env)
            .success();
        run.stderr_has(&["secretive | token is ***, key ***", "-r--------"]);
        assert!(
            !run.stderr.contains(TOKEN) && !run.stderr.contains(KEY),
            "{run}"
        );
        // Not in any blob of the store (layers, configs, records), nor in --json.
        let out = cx.scratch.join("oci");
        let json = cx
            .run_env(
                &[
                    "--json",
                    "build",
                    "secretive",
                    "--isolation",
                    iso,
                    "-o",
                    &format!("oci:{}", out.display()),
                ],
                &env,
            )
            .success();
        assert!(
            !json.stdout.contains(TOKEN) && !json.stdout.contains(KEY),
            "{json}"
        );
        let image = validate_layout(&out, "secretive");
        let layer = image.layers.last().unwrap();
        let names: Vec<String> = layer.entries().iter().map(|e| e.path.clone()).collect();
        assert_eq!(names, ["srv/", "srv/done"], "{iso}");
        for layer in &image.layers {
            for e in layer.entries() {
                let data = String::from_utf8_lossy(&e.data);
                assert!(!data.contains(TOKEN) && !data.contains(KEY), "{}", e.path);
            }
        }
        // Neither secret in any file of the store or the output.
        for secret in [TOKEN, KEY] {
            let grep = std::process::Command::new("grep")
                .args(["-rl", "-e", secret])
                .arg(&cx.home)
                .arg(&out)
                .output()
                .unwrap();
            assert_eq!(
                grep.status.code(),
                Some(1),
                "{iso}: grep {secret}: {grep:?}"
            );
        }
        // A new token reuses the layer; a new file secret (rebuild: true)
        // builds it again.
        let first = common::Report(json.json()).manifest("secretive");
        let again = cx.run_env(
            &["--json", "-q", "build", "secretive", "--isolation", iso],
            &[("BUILD_TOKEN", "another-token")],
        );
        assert_eq!(
            common::Report(again.success().json()).manifest("secretive"),
            first
        );
        cx.write("deploy.key", "rotated-key\n");
        let rotated = cx.run_env(
            &["--json", "-q", "build", "secretive", "--isolation", iso],
            &env,
        );
        let rotated = common::Report(rotated.success().json());
        assert_eq!(rotated.layers("secretive").last().unwrap()["built"], true);
        // A missing secret names the variable, and the step's image.
        cx.write("deploy.key", "third-key\n");
        let missing = cx.run(&["build", "secretive", "--isolation", iso]).exit(1);
        missing.stderr_has(&[
            "secretive",
            "secret `token`: the environment variable BUILD_TOKEN is not set",
        ]);
    }
}

#[test]
fn network_none_leaves_steps_only_loopback() {
    let cx = project();
    if usable("namespace").is_err() {
        // Only chroot here: `network: none` is refused, with the reason.
        let yaml = fs::read_to_string(cx.path("images.yaml")).unwrap();
        cx.yaml(&yaml.replace("  stepped:\n", "  stepped:\n    network: none\n"));
        cx.run(&["build", "stepped"])
            .exit(1)
            .stderr_has(&["`network: none` needs namespace"]);
        return;
    }
    cx.busybox_applets("busybox", &["grep", "wc"]);
    let yaml = |network: &str| {
        on_busybox_base(&format!(
            "  offline:\n    from: base\n{network}    run: [\"grep -c : /proc/net/dev\"]\n"
        ))
    };
    cx.yaml(&yaml("    network: none\n"));
    let run = cx
        .run(&["build", "offline", "--isolation", "namespace"])
        .success();
    // The header line has no colon; `lo:` alone is left.
    run.stderr_has(&["offline | 1"]);
    cx.yaml(&yaml("    network: fast\n"));
    cx.run(&["check"])
        .exit(2)
        .stderr_has(&["`network: fast` is not a network mode"]);
}

/// Every entry of a tree as a line: type, mode, owner, size, content hash,
/// link target, file mtime, and which earlier path a hard link shares.
/// Symlink and directory mtimes are left out: unpacking does not set them.
fn tree_listing(root: &std::path::Path) -> Vec<String> {
    use sha2::{Digest as _, Sha256};
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut first: std::collections::HashMap<(u64, u64), String> = Default::default();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = fs::symlink_metadata(&p).unwrap();
            let t = m.file_type();
            let what = if t.is_dir() {
                todo.push(p.clone());
                "dir".to_string()
            } else if t.is_symlink() {
                format!("link {}", fs::read_link(&p).unwrap().display())
            } else if t.is_file() {
                let sum = hex::encode(Sha256::digest(fs::read(&p).unwrap()));
                let same = first.entry((m.dev(), m.ino())).or_insert(rel.clone());
                let shared = if *same == rel {
                    String::new()
                } else {
                    format!(" = {same}")
                };
                format!("file {} {sum} {}{shared}", m.len(), m.mtime())
            } else {
                format!("other {:o}", m.mode())
            };
            out.push(format!(
                "{rel} {:o} {}:{} {what}",
                m.mode(),
                m.uid(),
                m.gid()
            ));
        }
    }
    out.sort();
    out
}

/// The trees kept in the store, by chain.
fn kept_trees(home: &std::path::Path) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut trees = std::collections::BTreeMap::new();
    for e in fs::read_dir(home.join("rootfs")).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            trees.insert(
                p.file_name().unwrap().to_string_lossy().into_owned(),
                tree_listing(&p),
            );
        }
    }
    trees
}

#[test]
fn trees_kept_while_layers_are_written_equal_the_unpacked_chains() {
    let cx = Ctx::new();
    cx.busybox_tree(
        "busybox",
        &[
            "sh", "echo", "rm", "chmod", "chown", "mkdir", "ln", "true", "touch",
        ],
    );
    cx.write("site/etc/motd", "welcome\n");
    cx.write("site/etc/keep", "kept\n");
    cx.mkdir("site/srv/old/sub");
    cx.write("site/srv/old/sub/f", "f\n");
    cx.yaml(&on_busybox_base(concat!(
        "  stepped:\n",
        "    from: base\n",
        "    run:\n",
        "      - echo hi > /etc/hello && chmod 600 /etc/hello && chown 33:33 /etc/hello\n",
        "      - ln /etc/hello /etc/hello.link && ln -s hello /etc/hello.sym\n",
        "      - rm /etc/motd && rm -r /srv/old && mkdir -p /srv/old && touch /srv/old/new\n",
        "  child:\n",
        "    from: stepped\n",
        "    run:\n",
        "      - rm /etc/hello.link && echo changed > /etc/keep && echo x > /etc/new\n",
        // A client: file layers only, and a test, so its tree starts as a
        // clone of child's with only its own layer unpacked over it (a
        // file the clone shares with child's tree is replaced).
        "  client:\n",
        "    from: child\n",
        "    layers:\n",
        "      - {src: client, dest: /etc}\n",
        "    test:\n",
        "      - test \"$(cat /etc/keep)\" = mine\n",
    )));
    cx.write("client/keep", "mine\n");
    cx.write("client/theme.conf", "t\n");
    cx.build(&["client"]);
    let kept = kept_trees(&cx.home);
    // base (unpacked), stepped and child (both kept while written),
    // client (cloned from child's), and the empty tree below base's
    // layers is not involved.
    assert!(kept.len() >= 4, "{:?}", kept.keys());
    // Unpacked afresh from the blobs, each chain gives the same tree: the
    // child's and the client's work left the trees they share files with
    // as they were.
    fs::remove_dir_all(cx.home.join("rootfs")).unwrap();
    cx.run(&["run", "client", "--", "true"]).success();
    cx.run(&["run", "child", "--", "true"]).success();
    cx.run(&["run", "stepped", "--", "true"]).success();
    cx.run(&["run", "base", "--", "true"]).success();
    let unpacked = kept_trees(&cx.home);
    for (chain, listing) in &kept {
        let fresh = unpacked
            .get(chain)
            .unwrap_or_else(|| panic!("{chain} was not unpacked again"));
        assert_eq!(listing, fresh, "tree {chain}");
    }
    let child = kept
        .values()
        .find(|l| l.iter().any(|e| e.starts_with("etc/new ")))
        .unwrap();
    assert!(
        child
            .iter()
            .any(|e| e.starts_with("etc/hello ") && e.contains(" 33:33 ")),
        "{child:#?}"
    );
    assert!(!child.iter().any(|e| e.starts_with("etc/hello.link ")));
    assert!(!child.iter().any(|e| e.starts_with("etc/motd ")));
    let client = kept
        .values()
        .find(|l| l.iter().any(|e| e.starts_with("etc/theme.conf ")))
        .unwrap();
    assert!(
        client.iter().any(|e| e.starts_with("etc/new ")),
        "{client:#?}"
    );
}

/// The build machine's name stays out of layers in every isolation: under
/// chroot, which cannot have a hostname of its own, `hostname` still
/// answers `localhost`. The build runs where the machine is called
/// `leaky.example.org` (a UTS namespace of the test's own, when root).
#[test]
fn steps_see_localhost_and_dev_null_not_the_build_machines() {
    let probe = run_command({
        let mut c = std::process::Command::new("unshare");
        c.args(["--uts", "hostname", "leaky.example.org"]);
        c
    });
    if probe.code != 0 {
        let why = format!("cannot make a UTS namespace here ({})", probe.stderr.trim());
        assert!(
            std::env::var_os("CI").is_none(),
            "{why}; CI must run this case"
        );
        eprintln!("skipped: {why}");
        return;
    }
    for iso in isolations(&["namespace", "chroot"]) {
        let mut cx = Ctx::new();
        cx.busybox_tree("busybox", &["sh", "hostname", "cat", "mkdir", "which"]);
        // As Debian has it: `hostname -f` looks the name up there.
        cx.write("site/etc/hosts", "127.0.0.1 localhost\n");
        // A /dev of the image's own (as Debian's): under chroot nothing is
        // mounted there, and `> /dev/null` must still not make a file.
        cx.mkdir("site/dev");
        cx.yaml(&on_busybox_base(concat!(
            "  named:\n",
            "    from: base\n",
            "    run:\n",
            // By PATH, as dash finds it (busybox's sh would run its own
            // applet whatever PATH says).
            "      - h=$(which hostname) && $h > /etc/plain && $h -f > /etc/fqdn\n",
            "      - echo noise > /dev/null\n",
        )));
        cx.wrapper = [
            "unshare",
            "--uts",
            "sh",
            "-c",
            "hostname leaky.example.org && exec \"$@\"",
            "sh",
        ]
        .map(String::from)
        .to_vec();
        let run = cx.run(&["build", "named", "--isolation", iso]).success();
        assert!(!run.stderr.contains("leaky"), "{iso}: {}", run.stderr);
        let out = cx.scratch.join("oci");
        cx.run(&[
            "build",
            "named",
            "--isolation",
            iso,
            "-o",
            &format!("oci:{}", out.display()),
        ])
        .success();
        let image = validate_layout(&out, "named");
        let layer = image.layers.last().unwrap();
        assert_eq!(layer.entry("etc/plain").data, b"localhost\n", "{iso}");
        assert_eq!(layer.entry("etc/fqdn").data, b"localhost\n", "{iso}");
        // Neither the shim nor a /dev/null is in the layer.
        let names: Vec<String> = layer.entries().iter().map(|e| e.path.clone()).collect();
        assert!(
            names.iter().all(|n| n.starts_with("etc")),
            "{iso}: {names:?}"
        );
    }
}

/// An image whose PATH has no sbin still runs its steps: the host's
/// `chroot` and `unshare` are found on a fixed PATH of their own, and the
/// step gets the image's (issue 13, item 8).
#[test]
fn steps_run_whatever_the_images_path_says() {
    const PATH: &str = "/usr/local/bin:/usr/bin:/bin";
    for iso in isolations(&["namespace", "chroot"]) {
        let cx = project();
        let yaml = fs::read_to_string(cx.path("images.yaml")).unwrap();
        cx.yaml(
            &yaml
                .replace(
                    "env: {GREETING: hi}",
                    &format!("env: {{GREETING: hi, PATH: \"{PATH}\"}}"),
                )
                .replace(
                    "      - rm /etc/motd\n",
                    "      - echo \"path $PATH\" && rm /etc/motd\n",
                ),
        );
        // Under chroot the `hostname` that answers `localhost` comes first.
        let seen = match iso {
            "chroot" => format!("/run/imgbuild-hostname:{PATH}"),
            _ => PATH.to_string(),
        };
        let run = cx.run(&["build", "stepped", "--isolation", iso]).success();
        run.stderr_has(&[&format!("stepped | path {seen}")]);
        let shown = cx
            .run(&[
                "run",
                "stepped",
                "--isolation",
                iso,
                "--",
                "sh",
                "-c",
                "echo $PATH",
            ])
            .success();
        assert_eq!(shown.stdout.trim(), seen, "{iso}");
    }
}
