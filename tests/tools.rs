//! Real tools judge the output: oci-image-tool, skopeo, umoci and docker
//! read what imgbuild wrote. A missing tool fails the test, naming the
//! package to install (CI installs skopeo umoci oci-image-tool
//! busybox-static; docker is present there).
//!
//! The images: a scratch image holding a static busybox, and a child with
//! owners (numeric and by name), modes, symlinks, hard links, exec bits,
//! long paths and nested destinations.
mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    Ctx, Report, Run, ValidImage, docker_run_offline, require_tool, run_command, validate_layout,
};

const EPOCH: i64 = 1_700_000_000;

/// 60 + 1 + 60 + 9 characters: over tar's 100-character name field.
fn long_rel() -> String {
    format!("{}/{}/file.txt", "l".repeat(60), "m".repeat(60))
}

fn long_name() -> String {
    format!("{}.txt", "f".repeat(110))
}

/// The two images, built; `out` is the OCI layout holding both.
struct Fixture {
    cx: Ctx,
    base: String,
    child: String,
    out: PathBuf,
    report: Report,
}

/// Names unique to this process, so that parallel runs (and other people's
/// images in the same docker daemon) do not collide.
fn names() -> (String, String) {
    let prefix = format!("imgbuild-it{}", std::process::id());
    (format!("{prefix}-base"), format!("{prefix}-child"))
}

fn fixture(compression: &str) -> Fixture {
    let (base, child) = names();
    let cx = Ctx::new().with_epoch(EPOCH);

    // The base: busybox and the accounts that owner names resolve against.
    cx.busybox_tree(
        "base",
        &["sh", "ls", "cat", "stat", "readlink", "id", "find", "echo"],
    );
    cx.write(
        "base/etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/sh\napp:x:1001:1002:app:/srv:/bin/sh\n",
    );
    cx.write(
        "base/etc/group",
        "root:x:0:\nstaff:x:50:\nwww-data:x:33:\napp:x:1002:\n",
    );

    // The child's trees.
    cx.write("site/index.html", "<h1>site</h1>\n");
    cx.chmod("site/index.html", 0o600);
    cx.write_exec("site/run.sh", "#!/bin/sh\necho run\n");
    cx.chmod("site/run.sh", 0o700);
    cx.write("site/a/b/c/d.txt", "deep\n");
    cx.write("site/with space.txt", "space\n");
    cx.write("site/ünïcödé.txt", "utf-8\n");
    cx.write("site/junk.bak", "excluded\n");
    cx.mkdir("site/uploads");
    cx.symlink("index.html", "site/current");
    cx.symlink("/etc/passwd", "site/passwd-link");
    cx.hardlink("site/index.html", "site/same.html");
    cx.write(&format!("site/{}", long_rel()), "long path\n");
    cx.write(&format!("site/{}", long_name()), "long name\n");
    cx.symlink(&long_rel(), "site/long-symlink");
    cx.hardlink(&format!("site/{}", long_rel()), "site/long-hard.txt");
    cx.write("conf/app.conf", "key = value\n");
    cx.write("private/key.pem", "secret\n");
    cx.write("private/d/more.pem", "more\n");
    cx.write_exec(
        "tools/hello.sh",
        "#!/bin/sh\necho \"hello from $GREETING\"\n",
    );

    cx.yaml(&format!(
        r#"vars:
  who: layers
images:
  {base}:
    from: scratch
    layers:
      - base
    config:
      env: {{PATH: "/usr/local/bin:/bin"}}
      cmd: ["/bin/sh"]
  {child}:
    from: {base}
    layers:
      - {{src: site, dest: /var/www/site, owner: "www-data:www-data", exclude: ["*.bak"]}}
      - {{src: conf/app.conf, dest: /etc/app/conf.d/app.conf, mode: "0640", owner: "app:staff"}}
      - {{src: private, dest: /srv/private, mode: "0640", owner: app}}
      - {{src: tools/hello.sh, dest: /usr/local/bin/hello}}
    config:
      env: {{GREETING: "${{who}}"}}
      cmd: ["/usr/local/bin/hello"]
      workdir: /var/www/site
      ports: [8080]
      labels: {{org.example.role: child}}
    tags: ["v1", "{child}-alias:2"]
"#
    ));
    let out = cx.scratch.join("oci");
    let report = cx.build_all_oci(compression, &out);
    let fx = Fixture {
        cx,
        base,
        child,
        out,
        report,
    };
    let img = fx.validate(&fx.child);
    assert_eq!(img.layers.len(), 5);
    fx
}

impl Fixture {
    fn validate(&self, name: &str) -> ValidImage {
        let img = validate_layout(&self.out, name);
        assert_eq!(img.manifest_digest, self.report.manifest(name));
        img
    }

    /// `oci:DIR:NAME` for skopeo.
    fn oci_ref(&self, name: &str) -> String {
        format!("oci:{}:{name}", self.out.display())
    }
}

fn tool(program: &str, args: &[&str]) -> Run {
    let mut c = Command::new(program);
    c.args(args);
    run_command(c)
}

fn path_arg(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn oci_image_tool_validates_the_layout() {
    require_tool("oci-image-tool", "oci-image-tool");
    let fx = fixture("gzip");
    // oci-image-tool 1.0.0-rc1 has no `--type imageLayout` ("unimplemented");
    // `--type image` on a directory validates it as an image layout. Its
    // `--ref name=` lookup calls every name "not unique" once a layout holds
    // three or more images (skopeo's layouts too), so the fixture has two.
    for name in [&fx.base, &fx.child] {
        let r = tool(
            "oci-image-tool",
            &[
                "validate",
                "--type",
                "image",
                "--ref",
                &format!("name={name}"),
                &path_arg(&fx.out),
            ],
        )
        .success();
        let all = format!("{}{}", r.stdout, r.stderr);
        assert!(all.contains("Validation succeeded"), "{r}");
        assert!(all.contains("imageLayout"), "validated as a layout: {r}");
    }
    // The judge judges: a corrupted copy fails.
    let bad = fx.cx.scratch.join("corrupt");
    common::copy_tree(&fx.out, &bad);
    let layer = fx.validate(&fx.child).layers[0].digest.clone();
    let blob = bad
        .join("blobs/sha256")
        .join(layer.trim_start_matches("sha256:"));
    let mut bytes = fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::remove_file(&blob).unwrap();
    fs::write(&blob, bytes).unwrap();
    let r = tool(
        "oci-image-tool",
        &["validate", "--type", "image", &path_arg(&bad)],
    );
    assert_ne!(r.code, 0, "a corrupted layout must fail: {r}");
}

#[test]
fn skopeo_inspects_the_image_and_its_config() {
    require_tool("skopeo", "skopeo");
    let fx = fixture("gzip");
    let img = fx.validate(&fx.child);
    let info = tool("skopeo", &["inspect", &fx.oci_ref(&fx.child)])
        .success()
        .json();
    assert_eq!(info["Digest"], img.manifest_digest.as_str());
    let layers: Vec<&str> = img.layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(info["Layers"], serde_json::json!(layers));
    assert_eq!(info["Os"], "linux");
    assert_eq!(info["Created"], "2023-11-14T22:13:20Z");
    assert_eq!(info["Labels"]["org.example.role"], "child");
    let env: Vec<&str> = info["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(env.contains(&"GREETING=layers"), "{env:?}");
    assert!(
        env.contains(&"PATH=/usr/local/bin:/bin"),
        "inherited: {env:?}"
    );

    let config = tool("skopeo", &["inspect", "--config", &fx.oci_ref(&fx.child)])
        .success()
        .json();
    assert_eq!(config, img.config, "skopeo reads the same config");
    let c = &config["config"];
    assert_eq!(c["Cmd"], serde_json::json!(["/usr/local/bin/hello"]));
    assert_eq!(c["WorkingDir"], "/var/www/site");
    assert!(c["ExposedPorts"].get("8080/tcp").is_some(), "{c}");
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 5);

    let base = tool("skopeo", &["inspect", &fx.oci_ref(&fx.base)])
        .success()
        .json();
    assert_eq!(base["Digest"], fx.report.manifest(&fx.base).as_str());
    assert_eq!(base["Layers"].as_array().unwrap().len(), 1);
    // The child is the base plus its own layers.
    assert_eq!(info["Layers"][0], base["Layers"][0]);
}

#[test]
fn skopeo_copy_keeps_the_image_bit_for_bit() {
    require_tool("skopeo", "skopeo");
    let fx = fixture("gzip");
    let other = fx.cx.scratch.join("copied");
    let dest = format!("oci:{}:{}", other.display(), fx.child);
    tool("skopeo", &["copy", &fx.oci_ref(&fx.child), &dest]).success();
    let copied = validate_layout(&other, &fx.child);
    let original = fx.validate(&fx.child);
    assert_eq!(copied.manifest_digest, original.manifest_digest);
    assert_eq!(copied.config_digest, original.config_digest);
}

/// What a path in an unpacked root filesystem is: kind, mode, owner,
/// mtime, link target or content.
fn describe(path: &Path) -> String {
    let m = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let ft = m.file_type();
    let what = if ft.is_symlink() {
        format!("-> {}", fs::read_link(path).unwrap().display())
    } else if ft.is_dir() {
        "dir".to_string()
    } else {
        format!("{} bytes", m.len())
    };
    format!(
        "{:o} {}:{} {} {what}",
        m.mode() & 0o7777,
        m.uid(),
        m.gid(),
        m.mtime()
    )
}

/// Every path under `root` (relative), described.
fn tree_facts(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let mut fact = describe(&p);
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_file() {
                fact.push_str(&format!(" {}", common::sha256_hex(&fs::read(&p).unwrap())));
            }
            out.insert(rel, fact);
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

fn umoci_unpack(layout: &Path, name: &str, bundle: &Path) -> PathBuf {
    require_tool("umoci", "umoci");
    common::require_root();
    common::umoci_unpack(layout, name, bundle)
}

/// The expectations on the child's root filesystem, as umoci unpacks it.
fn check_child_rootfs(rootfs: &Path) {
    let f = |rel: &str| describe(&rootfs.join(rel));
    let e = EPOCH;
    // Parents of a destination: root's, 0755.
    assert_eq!(f("var"), format!("755 0:0 {e} dir"));
    assert_eq!(f("var/www"), format!("755 0:0 {e} dir"));
    // Owner by name from the base's /etc/passwd and /etc/group.
    assert_eq!(f("var/www/site"), format!("755 33:33 {e} dir"));
    assert_eq!(
        f("var/www/site/index.html"),
        format!("644 33:33 {e} 14 bytes")
    );
    assert_eq!(f("var/www/site/run.sh"), format!("755 33:33 {e} 19 bytes"));
    assert_eq!(f("var/www/site/a/b/c"), format!("755 33:33 {e} dir"));
    assert_eq!(f("var/www/site/uploads"), format!("755 33:33 {e} dir"));
    assert_eq!(
        f("var/www/site/with space.txt"),
        format!("644 33:33 {e} 6 bytes")
    );
    assert_eq!(
        f("var/www/site/ünïcödé.txt"),
        format!("644 33:33 {e} 6 bytes")
    );
    assert!(
        !rootfs.join("var/www/site/junk.bak").exists(),
        "excluded files are not in the image"
    );
    // Symlinks keep their targets, relative and absolute, long and short.
    assert!(f("var/www/site/current").ends_with("-> index.html"));
    assert!(f("var/www/site/passwd-link").ends_with("-> /etc/passwd"));
    assert!(
        f("var/www/site/long-symlink").ends_with(&format!("-> {}", long_rel())),
        "{}",
        f("var/www/site/long-symlink")
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("var/www/site/long-symlink")).unwrap(),
        "long path\n"
    );
    let lstat = fs::symlink_metadata(rootfs.join("var/www/site/current")).unwrap();
    assert_eq!((lstat.uid(), lstat.gid()), (33, 33));
    // Hard links share an inode.
    let ino = |rel: &str| fs::metadata(rootfs.join(rel)).unwrap().ino();
    assert_eq!(
        ino("var/www/site/index.html"),
        ino("var/www/site/same.html")
    );
    assert_eq!(
        ino(&format!("var/www/site/{}", long_rel())),
        ino("var/www/site/long-hard.txt")
    );
    assert_eq!(
        fs::metadata(rootfs.join("var/www/site/index.html"))
            .unwrap()
            .nlink(),
        2
    );
    // Long names.
    assert_eq!(
        fs::read_to_string(rootfs.join(format!("var/www/site/{}", long_rel()))).unwrap(),
        "long path\n"
    );
    assert_eq!(
        fs::read_to_string(rootfs.join(format!("var/www/site/{}", long_name()))).unwrap(),
        "long name\n"
    );
    // A file to a nested destination, with mode and owner by name.
    assert_eq!(f("etc/app"), format!("755 0:0 {e} dir"));
    assert_eq!(f("etc/app/conf.d"), format!("755 0:0 {e} dir"));
    assert_eq!(
        f("etc/app/conf.d/app.conf"),
        format!("640 1001:50 {e} 12 bytes")
    );
    // A tree with a mode: files get it, directories get x where r is set;
    // a user without a group gets the user's primary group.
    assert_eq!(f("srv/private"), format!("750 1001:1002 {e} dir"));
    assert_eq!(f("srv/private/d"), format!("750 1001:1002 {e} dir"));
    assert_eq!(
        f("srv/private/key.pem"),
        format!("640 1001:1002 {e} 7 bytes")
    );
    // The exec bit makes 0755.
    assert_eq!(f("usr/local/bin/hello"), format!("755 0:0 {e} 38 bytes"));
    // The base is underneath.
    assert!(f("bin/sh").ends_with("-> busybox"));
    assert_eq!(
        fs::read_to_string(rootfs.join("etc/passwd"))
            .unwrap()
            .lines()
            .count(),
        3
    );
}

#[test]
fn umoci_unpack_gives_the_expected_rootfs() {
    let fx = fixture("gzip");
    let rootfs = umoci_unpack(&fx.out, &fx.child, &fx.cx.scratch.join("bundle"));
    check_child_rootfs(&rootfs);
}

#[test]
fn zstd_layers_are_read_by_skopeo_and_umoci() {
    require_tool("skopeo", "skopeo");
    let zstd = fixture("zstd");
    let img = zstd.validate(&zstd.child);
    for l in &img.layers {
        assert_eq!(l.media_type, common::LAYER_ZSTD);
    }
    let raw = tool("skopeo", &["inspect", "--raw", &zstd.oci_ref(&zstd.child)])
        .success()
        .json();
    assert_eq!(raw, img.manifest, "skopeo reads the same manifest");
    let info = tool("skopeo", &["inspect", &zstd.oci_ref(&zstd.child)])
        .success()
        .json();
    assert_eq!(info["Digest"], img.manifest_digest.as_str());

    // umoci 0.4 has no zstd: skopeo recompresses to gzip, which needs it
    // to read every zstd layer; the tars it gets must be ours, bit for bit.
    let gz = zstd.cx.scratch.join("as-gzip");
    tool(
        "skopeo",
        &[
            "copy",
            "--dest-compress",
            "--dest-compress-format",
            "gzip",
            &zstd.oci_ref(&zstd.child),
            &format!("oci:{}:{}", gz.display(), zstd.child),
        ],
    )
    .success();
    let converted = validate_layout(&gz, &zstd.child);
    let diff_ids =
        |i: &ValidImage| -> Vec<String> { i.layers.iter().map(|l| l.diff_id.clone()).collect() };
    assert_eq!(diff_ids(&converted), diff_ids(&img));
    for l in &converted.layers {
        assert_eq!(l.media_type, common::LAYER_GZIP);
    }

    // The same tars as the gzip build, and the same root filesystem.
    let gzip = fixture("gzip");
    let gzip_img = gzip.validate(&gzip.child);
    assert_eq!(diff_ids(&gzip_img), diff_ids(&img));
    let a = umoci_unpack(&gz, &zstd.child, &zstd.cx.scratch.join("bundle"));
    check_child_rootfs(&a);
    let b = umoci_unpack(&gzip.out, &gzip.child, &gzip.cx.scratch.join("bundle"));
    assert_eq!(tree_facts(&a), tree_facts(&b));
}

/// Removes the docker images it names when dropped, even on panic.
struct DockerImages(Vec<String>);

impl Drop for DockerImages {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let mut c = Command::new("docker");
        c.arg("rmi").arg("--force").args(&self.0);
        let _ = c.output();
    }
}

#[test]
fn docker_loads_and_runs_the_archive() {
    require_tool("docker", "docker.io");
    let info = tool("docker", &["info", "--format", "{{.ServerVersion}}"]);
    assert_eq!(
        info.code, 0,
        "the docker daemon is not reachable (start it, or run where it runs): {info}"
    );
    let fx = fixture("gzip");
    let archive = fx.cx.scratch.join("child.tar");
    fx.cx.build(&[
        &fx.child,
        "-o",
        &format!("docker-archive:{}", archive.display()),
    ]);
    let tags = [
        format!("{}:latest", fx.child),
        format!("{}:v1", fx.child),
        format!("{}-alias:2", fx.child),
    ];
    let _cleanup = DockerImages(tags.to_vec());
    let load = tool("docker", &["load", "-i", &path_arg(&archive)]).success();
    for t in &tags {
        assert!(
            load.stdout.contains(&format!("Loaded image: {t}")),
            "{t} loaded: {load}"
        );
    }
    let img = fx.validate(&fx.child);
    // Docker's image id is the config digest; its layers are our diff_ids.
    for t in &tags {
        let inspect = tool("docker", &["image", "inspect", t]).success().json();
        let i = &inspect[0];
        assert_eq!(i["Id"], img.config_digest.as_str(), "{t}");
        let diff_ids: Vec<&str> = img.layers.iter().map(|l| l.diff_id.as_str()).collect();
        assert_eq!(i["RootFS"]["Layers"], serde_json::json!(diff_ids), "{t}");
        assert_eq!(i["Config"]["WorkingDir"], "/var/www/site");
        assert_eq!(i["Config"]["Labels"]["org.example.role"], "child");
    }

    let script = [
        "stat -c '%n %a %u:%g %Y' index.html run.sh a/b/c/d.txt /etc/app/conf.d/app.conf /srv/private /srv/private/key.pem",
        "readlink current",
        "readlink long-symlink",
        "[ \"$(stat -c %i index.html)\" = \"$(stat -c %i same.html)\" ] && echo hardlink-shared",
        "cat index.html \"$(readlink long-symlink)\"",
        "ls junk.bak 2>/dev/null || echo no-junk",
        "hello",
        "pwd",
    ]
    .join("; ");
    let run = docker_run_offline(&tags[0], &["/bin/sh", "-c", &script]).success();
    let e = EPOCH;
    let expected = format!(
        "index.html 644 33:33 {e}\n\
         run.sh 755 33:33 {e}\n\
         a/b/c/d.txt 644 33:33 {e}\n\
         /etc/app/conf.d/app.conf 640 1001:50 {e}\n\
         /srv/private 750 1001:1002 {e}\n\
         /srv/private/key.pem 640 1001:1002 {e}\n\
         index.html\n\
         {long}\n\
         hardlink-shared\n\
         <h1>site</h1>\n\
         long path\n\
         no-junk\n\
         hello from layers\n\
         /var/www/site\n",
        long = long_rel()
    );
    assert_eq!(run.stdout, expected, "{run}");

    // The default command is the image's cmd, with its env.
    let run = docker_run_offline(&tags[1], &[]).success();
    assert_eq!(run.stdout, "hello from layers\n", "{run}");
}
