//! `from:` a registry reference, against a real registry (CNCF
//! distribution, run by `common::registry`) and real peers: images that
//! skopeo pushed (OCI and Docker media types, by tag, by digest, a
//! multi-platform index) are pulled and built on, and the results are
//! judged by `validate_layout`, umoci and docker; a build goes on offline
//! with the last pull; layers whose entries climb out of the root and blobs
//! that do not match their digest are refused and leave nothing behind; the
//! registry layer cache (`--cache-repo`) serves a runner with an empty store
//! and is never a reason to fail.
//!
//! Each consumer of a pulled image has its own `IMGBUILD_HOME`, apart from
//! the one that built the base, so every blob really comes from the
//! registry.
//!
//! Needs: docker-registry, skopeo, umoci (run as root), busybox-static, and
//! a reachable Docker daemon.
mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Value, json};

use common::registry::{Access, Registry, free_port};
use common::{
    CONFIG, Ctx, INDEX, LAYER_GZIP, MANIFEST, REF_NAME, Report, Run, ValidImage, require_root,
    require_tool, run_command, sha256_hex, umoci_unpack, validate_layout,
};
use common::{DockerImages, FOREIGN_ENV, docker, docker_run_offline, require_docker, skopeo};

const EPOCH: i64 = 1_700_000_000;
/// www-data in the base's /etc/passwd and /etc/group: not Debian's 33, so
/// that only a lookup in the pulled base can give it.
const WWW_ID: u64 = 82;
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww-data:x:82:82:www-data:/var/www:/bin/sh\n";
const GROUP: &str = "root:x:0:\nwww-data:x:82:\n";

const BASE_NAME: &str = "org.opencontainers.image.base.name";
const BASE_DIGEST: &str = "org.opencontainers.image.base.digest";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

// ---------------------------------------------------------------------------
// Peers and helpers

/// imgbuild with no credentials, registry or cache from the caller's
/// environment (`DOCKER_CONFIG` is an empty directory).
fn imgbuild(cx: &Ctx, args: &[&str]) -> Run {
    let mut c = cx.command(args);
    for k in FOREIGN_ENV {
        c.env_remove(k);
    }
    let empty = cx.scratch.join("docker-config-empty");
    fs::create_dir_all(&empty).unwrap();
    c.env("DOCKER_CONFIG", &empty);
    run_command(c)
}

/// `imgbuild --json build ARGS…`, which must succeed: the run (its stderr
/// has the progress and warnings) and the report.
fn build_json(cx: &Ctx, args: &[&str]) -> (Run, Report) {
    let mut all = vec!["--json", "build"];
    all.extend_from_slice(args);
    let run = imgbuild(cx, &all).success();
    let report = Report(run.json());
    (run, report)
}

/// `skopeo copy [EXTRA…] SRC DEST` to a plain-HTTP registry.
fn skopeo_copy(cx: &Ctx, src: &str, dest: &str, extra: &[&str]) -> Run {
    let mut args = vec!["copy", "--dest-tls-verify=false"];
    args.extend_from_slice(extra);
    args.extend([src, dest]);
    skopeo(cx, &args)
}

/// An image name unique to this process (parallel runs share the docker
/// daemon).
fn unique(name: &str) -> String {
    format!("pull{}-{name}", std::process::id())
}

/// A busybox root under `dir` of the project, with www-data and a marker
/// file `/etc/marker`.
fn busybox_tree(cx: &Ctx, dir: &str, marker: &str) {
    cx.busybox_tree(dir, &["sh", "cat", "ls", "stat", "echo"]);
    cx.write(&format!("{dir}/etc/passwd"), PASSWD);
    cx.write(&format!("{dir}/etc/group"), GROUP);
    cx.write(&format!("{dir}/etc/marker"), marker);
}

/// The base image, built by imgbuild into an OCI layout in its own project
/// and store, ready for skopeo to push.
struct Base {
    cx: Ctx,
    out: PathBuf,
    img: ValidImage,
}

impl Base {
    fn new() -> Base {
        let cx = Ctx::new().with_epoch(EPOCH);
        busybox_tree(&cx, "base", "base\n");
        cx.yaml(
            r#"images:
  base:
    from: scratch
    layers:
      - base
    config:
      env: {PATH: "/bin"}
      cmd: ["/bin/sh"]
"#,
        );
        let out = cx.scratch.join("oci");
        build_json(&cx, &["base", "-o", &format!("oci:{}", out.display())]);
        let img = validate_layout(&out, "base");
        Base { cx, out, img }
    }

    /// `oci:DIR:base`, for skopeo.
    fn oci(&self) -> String {
        format!("oci:{}:base", self.out.display())
    }

    /// Pushes the base to `docker://REFERENCE` with skopeo.
    fn push(&self, reference: &str, extra: &[&str]) {
        skopeo_copy(
            &self.cx,
            &self.oci(),
            &format!("docker://{reference}"),
            extra,
        )
        .success();
    }
}

/// A consumer project (its own store) with `site/index.html` and this
/// images.yaml.
fn consumer(yaml: &str) -> Ctx {
    let cx = Ctx::new().with_epoch(EPOCH);
    cx.write("site/index.html", "hello from a pulled base\n");
    cx.yaml(yaml);
    cx
}

/// An image of images.yaml: `from`, the site as /srv/site owned by
/// www-data, and a command that prints it.
fn site_image(name: &str, from: &str) -> String {
    format!(
        r#"  {name}:
    from: {from}
    layers:
      - {{src: site, dest: /srv/site, owner: "www-data:www-data"}}
    config:
      cmd: ["/bin/cat", "/srv/site/index.html"]
"#
    )
}

/// The base pushed as `base:1` to a registry of its own, and a consumer
/// whose `child` is a [`site_image`] on it.
struct OnPushedBase {
    base: Base,
    reg: Registry,
    /// `HOST/base:1`.
    reference: String,
    /// The base's manifest digest.
    digest: String,
    cx: Ctx,
}

fn on_pushed_base() -> OnPushedBase {
    let base = Base::new();
    let reg = Registry::anonymous();
    let reference = format!("{}/base:1", reg.host());
    base.push(&reference, &[]);
    let digest = reg.digest("base", "1").unwrap();
    let cx = consumer(&format!("images:\n{}", site_image("child", &reference)));
    OnPushedBase {
        base,
        reg,
        reference,
        digest,
        cx,
    }
}

/// Checks a child of the base: the base's layers, then one layer with the
/// site owned by the base's www-data; the base annotations.
fn check_child(img: &ValidImage, base: &ValidImage, base_name: &str, base_digest: &str) {
    let n = base.layers.len();
    assert_eq!(img.layers.len(), n + 1, "the base's layers and one more");
    for (i, (got, want)) in img.layers.iter().zip(&base.layers).enumerate() {
        assert_eq!(got.digest, want.digest, "parent layer {i}");
        assert_eq!(got.diff_id, want.diff_id, "parent layer {i}");
        assert_eq!(got.media_type, LAYER_GZIP, "parent layer {i}");
    }
    let top = &img.layers[n];
    for path in ["srv/site", "srv/site/index.html"] {
        let e = top.entry(path);
        assert_eq!((e.uid, e.gid), (WWW_ID, WWW_ID), "{path}: owner www-data");
    }
    assert_eq!(
        top.entry("srv/site/index.html").data,
        b"hello from a pulled base\n"
    );
    let annotations = &img.manifest["annotations"];
    assert_eq!(annotations[BASE_NAME], base_name, "{:#}", img.manifest);
    assert_eq!(annotations[BASE_DIGEST], base_digest, "{:#}", img.manifest);
    // The base's config carries on under the child's.
    let env = img.config["config"]["Env"].to_string();
    assert!(env.contains("PATH=/bin"), "{:#}", img.config);
    assert_eq!(
        img.config["config"]["Cmd"],
        json!(["/bin/cat", "/srv/site/index.html"])
    );
}

fn owner_of(p: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (u64::from(m.uid()), u64::from(m.gid()))
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Requests of the access log after the first `from`.
fn accesses_since(reg: &Registry, from: usize) -> Vec<Access> {
    reg.access_log().into_iter().skip(from).collect()
}

/// The files of a store's record directory.
fn records(cx: &Ctx, kind: &str) -> BTreeSet<String> {
    common::list_names(&cx.home.join(kind))
}

// ---------------------------------------------------------------------------
// Hand-made OCI layouts

/// Writes a blob into an OCI layout; its descriptor.
fn put_blob(layout: &Path, media_type: &str, bytes: &[u8]) -> Value {
    let hex = sha256_hex(bytes);
    let dir = layout.join("blobs/sha256");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(&hex), bytes).unwrap();
    json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()})
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A one-layer image (`tar` uncompressed; gzip in the layout) for linux on
/// `arch`: its manifest's descriptor, and the layer's.
fn put_image(layout: &Path, tar: &[u8], arch: &str) -> (Value, Value) {
    let layer = put_blob(layout, LAYER_GZIP, &gzip(tar));
    let config = json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(tar))]},
        "history": [{"created_by": "made by hand in tests/registry_pull.rs"}],
    });
    let config = put_blob(layout, CONFIG, &serde_json::to_vec(&config).unwrap());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config,
        "layers": [layer],
    });
    let desc = put_blob(layout, MANIFEST, &serde_json::to_vec(&manifest).unwrap());
    (desc, layer)
}

/// Writes `oci-layout` and `index.json` naming each descriptor.
fn write_index(layout: &Path, named: &[(&str, &Value)]) {
    fs::create_dir_all(layout).unwrap();
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let manifests: Vec<Value> = named
        .iter()
        .map(|(name, desc)| {
            let mut d = (*desc).clone();
            d["annotations"] = json!({ REF_NAME: name });
            d
        })
        .collect();
    let index = json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests});
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
}

/// A ustar header with `name` (and `link`) copied in as raw bytes, so that
/// nothing checks them.
fn raw_header(name: &str, kind: tar::EntryType, size: u64, link: Option<&str>) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    let u = h.as_ustar_mut().expect("a ustar header");
    u.name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(l) = link {
        u.linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_cksum();
    h
}

/// One PAX extended-header record: "LEN key=value\n", LEN counting itself.
fn pax_record(key: &str, value: &str) -> String {
    let body = format!(" {key}={value}\n");
    let mut n = body.len() + 1;
    loop {
        let s = format!("{n}{body}");
        if s.len() == n {
            return s;
        }
        n = s.len();
    }
}

/// A tar entry: its header and data.
type Entry = (tar::Header, Vec<u8>);

/// A tar stream of these entries.
fn tar_of(entries: Vec<Entry>) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (h, data) in entries {
        b.append(&h, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

fn file(name: &str, data: &[u8]) -> Entry {
    (
        raw_header(name, tar::EntryType::Regular, data.len() as u64, None),
        data.to_vec(),
    )
}

fn dir(name: &str) -> Entry {
    (raw_header(name, tar::EntryType::Directory, 0, None), vec![])
}

fn hard_link(name: &str, target: &str) -> Entry {
    (
        raw_header(name, tar::EntryType::Link, 0, Some(target)),
        vec![],
    )
}

fn symlink(name: &str, target: &str) -> Entry {
    (
        raw_header(name, tar::EntryType::Symlink, 0, Some(target)),
        vec![],
    )
}

/// A PAX header that names the next entry `path`, and that entry (whose
/// ustar name is harmless).
fn pax_named(path: &str, data: &[u8]) -> Vec<Entry> {
    let record = pax_record("path", path).into_bytes();
    vec![
        (
            raw_header(
                "PaxHeaders/harmless",
                tar::EntryType::XHeader,
                record.len() as u64,
                None,
            ),
            record,
        ),
        file("harmless", data),
    ]
}

// ---------------------------------------------------------------------------
// 1. Images pushed by skopeo are pulled and built on

#[test]
fn images_pushed_by_skopeo_are_pulled_and_built_on() {
    require_tool("skopeo", "skopeo");
    require_tool("umoci", "umoci");
    require_root();
    require_docker();
    let base = Base::new();
    let reg = Registry::anonymous();
    let host = reg.host();

    // skopeo pushes the base as it is (OCI media types) and as Docker's
    // schema 2 (Docker media types: another manifest, the same layers).
    base.push(&format!("{host}/base:oci"), &[]);
    base.push(&format!("{host}/base:v2s2"), &["--format", "v2s2"]);
    let oci_digest = reg.digest("base", "oci").expect("base:oci pushed");
    assert_eq!(oci_digest, base.img.manifest_digest);
    let v2s2_digest = reg.digest("base", "v2s2").expect("base:v2s2 pushed");
    assert_ne!(v2s2_digest, oci_digest);
    let v2s2 = reg.get("/v2/base/manifests/v2s2").json();
    assert_eq!(v2s2["mediaType"], DOCKER_MANIFEST, "{v2s2:#}");
    assert_eq!(v2s2["layers"][0]["mediaType"], DOCKER_LAYER, "{v2s2:#}");

    let (oci_child, v2s2_child, pinned_child) = (unique("oci"), unique("v2s2"), unique("pinned"));
    let pinned_ref = format!("{host}/base@{oci_digest}");
    let cx = consumer(&format!(
        "images:\n{}{}{}",
        site_image(&oci_child, &format!("{host}/base:oci")),
        site_image(&v2s2_child, &format!("{host}/base:v2s2")),
        site_image(&pinned_child, &pinned_ref),
    ));
    let out = cx.scratch.join("oci");
    let archive = cx.scratch.join("images.tar");
    let (run, report) = build_json(
        &cx,
        &[
            "--all",
            "-o",
            &format!("oci:{}", out.display()),
            "-o",
            &format!("docker-archive:{}", archive.display()),
        ],
    );
    assert!(
        !run.stderr.contains("warning:"),
        "the registry is up: {run}"
    );
    // Every blob of the base came from the registry into this store.
    let stored = cx.store_blobs();
    for l in &base.img.layers {
        assert!(
            stored.contains(l.digest.trim_start_matches("sha256:")),
            "{} pulled",
            l.digest
        );
    }
    for (name, base_name, base_digest) in [
        (&oci_child, format!("{host}/base:oci"), &oci_digest),
        (&v2s2_child, format!("{host}/base:v2s2"), &v2s2_digest),
        (&pinned_child, pinned_ref.clone(), &oci_digest),
    ] {
        let img = validate_layout(&out, name);
        assert_eq!(img.manifest_digest, report.manifest(name), "{name}");
        check_child(&img, &base.img, &base_name, base_digest);
        let layers = report.layer_summary(name);
        assert_eq!(layers.len(), 1, "{name}: one layer of its own");
    }

    // umoci unpacks what was built on each kind of pull: the site is
    // www-data's, as the base defines it; the base's files are there.
    for name in [&oci_child, &v2s2_child] {
        let rootfs = umoci_unpack(&out, name, &cx.scratch.join(format!("bundle-{name}")));
        for rel in ["srv/site", "srv/site/index.html"] {
            assert_eq!(
                owner_of(&rootfs.join(rel)),
                (WWW_ID, WWW_ID),
                "{name}: {rel}"
            );
        }
        assert_eq!(owner_of(&rootfs.join("srv")), (0, 0), "{name}: srv");
        assert_eq!(
            fs::read_to_string(rootfs.join("srv/site/index.html")).unwrap(),
            "hello from a pulled base\n"
        );
        assert_eq!(
            fs::read_to_string(rootfs.join("etc/marker")).unwrap(),
            "base\n"
        );
    }

    // docker loads and runs them.
    let tags: Vec<String> = [&oci_child, &v2s2_child, &pinned_child]
        .iter()
        .map(|n| format!("{n}:latest"))
        .collect();
    let _cleanup = DockerImages(tags.clone());
    let load = docker(&["load", "-i", archive.to_str().unwrap()]).success();
    for t in &tags {
        assert!(load.stdout.contains(t), "{t} loaded: {load}");
        let run = docker_run_offline(t, &[]).success();
        assert_eq!(run.stdout, "hello from a pulled base\n", "{t}: {run}");
    }
    let run = docker_run_offline(
        &tags[1],
        &[
            "/bin/sh",
            "-c",
            "stat -c '%u:%g %a' /srv/site /srv/site/index.html; cat /etc/marker",
        ],
    )
    .success();
    assert_eq!(run.stdout, "82:82 755\n82:82 644\nbase\n", "{run}");
}

// ---------------------------------------------------------------------------
// 2. Offline reuse

#[test]
fn a_build_goes_on_offline_with_the_last_pull() {
    require_tool("skopeo", "skopeo");
    let OnPushedBase {
        base,
        reg,
        reference,
        digest,
        cx,
    } = on_pushed_base();
    let host = reg.host();
    let out1 = cx.scratch.join("oci-1");
    let (run, _) = build_json(&cx, &["child", "-o", &format!("oci:{}", out1.display())]);
    assert!(!run.stderr.contains("warning:"), "{run}");
    let first = validate_layout(&out1, "child");
    check_child(&first, &base.img, &reference, &digest);

    // The registry goes away; the site changes.
    drop(reg);
    cx.write("site/index.html", "changed while offline\n");
    let out2 = cx.scratch.join("oci-2");
    let started = Instant::now();
    let run = imgbuild(
        &cx,
        &[
            "--json",
            "build",
            "child",
            "-o",
            &format!("oci:{}", out2.display()),
        ],
    );
    eprintln!("offline build: {:.1} s", started.elapsed().as_secs_f64());
    let run = run.success();
    run.stderr_has(&["warning:", &reference]);
    let report = Report(run.json());
    let second = validate_layout(&out2, "child");
    assert_eq!(second.manifest_digest, report.manifest("child"));
    let n = base.img.layers.len();
    assert_eq!(second.layers.len(), n + 1);
    for i in 0..n {
        assert_eq!(
            second.layers[i].digest, first.layers[i].digest,
            "parent layer {i}"
        );
    }
    assert_ne!(second.layers[n].digest, first.layers[n].digest);
    assert_eq!(
        second.layers[n].entry("srv/site/index.html").data,
        b"changed while offline\n"
    );
    let e = second.layers[n].entry("srv/site/index.html");
    assert_eq!(
        (e.uid, e.gid),
        (WWW_ID, WWW_ID),
        "owner names still resolve"
    );
    assert_eq!(second.manifest["annotations"][BASE_DIGEST], digest.as_str());
    assert!(
        report.layer_summary("child")[0].2,
        "the changed layer is built"
    );

    // plan works offline too, and says nothing is left to do.
    let plan = imgbuild(&cx, &["--json", "plan", "child"]).success();
    let p = common::plan_of(&plan.json(), "child").clone();
    assert_eq!(p["action"], "reuse", "{p:#}");

    // A reference never pulled cannot be built offline: an error naming it.
    let never = format!("{host}/never:1");
    cx.write(
        "other.yaml",
        format!("images:\n{}", site_image("x", &never)),
    );
    let r = imgbuild(&cx, &["-f", "other.yaml", "build", "x"]).exit(1);
    r.stderr_has(&[&never]);
}

// ---------------------------------------------------------------------------
// 3. Escaping layers are refused

#[test]
fn layers_that_climb_out_of_the_root_are_refused() {
    require_tool("skopeo", "skopeo");
    let reg = Registry::anonymous();
    let host = reg.host();
    let cx = Ctx::new().with_epoch(EPOCH);
    cx.write("site/index.html", "hello\n");
    let layout = cx.scratch.join("hand-made");
    let arch = host_arch();

    // (tag, layer entries, the entry an error must name)
    let cases: Vec<(&str, Vec<Entry>, &str)> = vec![
        (
            "dotdot",
            vec![
                dir("etc/"),
                file("etc/ok", b"ok\n"),
                file("../evil", b"x\n"),
            ],
            "../evil",
        ),
        (
            "nested",
            vec![dir("etc/"), file("etc/../../nested-evil", b"x\n")],
            "etc/../../nested-evil",
        ),
        (
            "hardlink",
            vec![
                dir("etc/"),
                file("etc/ok", b"ok\n"),
                hard_link("etc/shadow-copy", "../../etc/shadow"),
            ],
            "etc/shadow-copy",
        ),
        (
            "pax",
            [vec![dir("etc/")], pax_named("../pax-evil", b"x\n")].concat(),
            "../pax-evil",
        ),
    ];
    // A control: in-root hard links, a symlink out (resolved inside the
    // image at run time) and an absolute name are fine.
    let control = tar_of(vec![
        dir("etc/"),
        file("etc/ok", b"ok\n"),
        hard_link("etc/ok-again", "etc/ok"),
        symlink("etc/link", "../../../etc/shadow"),
        file("/abs-ok", b"abs\n"),
    ]);
    let mut named = Vec::new();
    let mut layers = Vec::new();
    for (tag, entries, _) in &cases {
        let (m, l) = put_image(&layout, &tar_of(entries.clone()), arch);
        named.push((tag.to_string(), m));
        layers.push(l["digest"].as_str().unwrap().to_string());
    }
    let (control_m, _) = put_image(&layout, &control, arch);
    named.push(("control".to_string(), control_m));
    let refs: Vec<(&str, &Value)> = named.iter().map(|(n, d)| (n.as_str(), d)).collect();
    write_index(&layout, &refs);
    for (tag, _) in &named {
        skopeo_copy(
            &cx,
            &format!("oci:{}:{tag}", layout.display()),
            &format!("docker://{host}/evil:{tag}"),
            &[],
        )
        .success();
    }

    let mut yaml = String::from("images:\n");
    for (tag, _) in &named {
        yaml.push_str(&format!(
            "  on-{tag}:\n    from: {host}/evil:{tag}\n    layers:\n      - {{src: site, dest: /srv/site}}\n"
        ));
    }
    cx.yaml(&yaml);

    // The control builds: the hand-made images are sound but for the
    // entries under test.
    let out = cx.scratch.join("oci");
    build_json(
        &cx,
        &["on-control", "-o", &format!("oci:{}", out.display())],
    );
    let img = validate_layout(&out, "on-control");
    assert_eq!(img.layers.len(), 2);
    let pulled_before = records(&cx, "pulled");
    assert_eq!(pulled_before.len(), 1, "the control's pull is recorded");

    for ((tag, _, entry), layer) in cases.iter().zip(&layers) {
        let name = format!("on-{tag}");
        let reference = format!("{host}/evil:{tag}");
        let r = imgbuild(&cx, &["build", &name]).exit(1);
        r.stderr_has(&[entry, layer, &reference]);
        // Nothing records it: no pull, no layer blob, no image of it.
        assert_eq!(records(&cx, "pulled"), pulled_before, "{tag}: {r}");
        assert!(
            !cx.store_blobs()
                .contains(layer.trim_start_matches("sha256:")),
            "{tag}: the refused layer stays in the store"
        );
        assert!(
            common::list_names(&cx.home.join("tmp")).is_empty(),
            "{tag}: temporary files left: {:?}",
            common::list_names(&cx.home.join("tmp"))
        );
        // Not a stale success the second time, nor in plan, nor as JSON.
        let again = imgbuild(&cx, &["build", &name]).exit(1);
        again.stderr_has(&[entry, layer]);
        let plan = imgbuild(&cx, &["plan", &name]).exit(1);
        plan.stderr_has(&[entry, layer]);
        // --json says so on stdout (as the report's `failed`, or as the
        // command's `error`).
        let json = imgbuild(&cx, &["--json", "build", &name]).exit(1);
        let said = json.json().to_string();
        assert!(said.contains(entry) && said.contains(layer), "{json}");
        assert_eq!(records(&cx, "pulled"), pulled_before, "{tag}");
    }
}

// ---------------------------------------------------------------------------
// 4. A corrupted blob is refused
//
// The fault proxy (common::proxy) can refuse, delay or cut requests but not
// rewrite response bodies, so the blob is corrupted where the registry keeps
// it, as a failing disk would.

/// Flips one byte in the middle of a file; the bytes as they were.
fn flip_a_byte(p: &Path) -> Vec<u8> {
    let before = fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut after = before.clone();
    let mid = after.len() / 2;
    after[mid] ^= 0x5a;
    fs::write(p, &after).unwrap();
    before
}

#[test]
fn a_corrupted_blob_is_refused() {
    require_tool("skopeo", "skopeo");
    let OnPushedBase {
        base,
        reg,
        reference,
        digest,
        cx,
    } = on_pushed_base();
    let layer = base.img.layers[0].digest.clone();
    let hex = layer.trim_start_matches("sha256:").to_string();
    let size = base.img.layers[0].size;
    let path = reg.stored_blob_path(&layer);
    let good = flip_a_byte(&path);
    let actual = format!("sha256:{}", sha256_hex(&fs::read(&path).unwrap()));

    let r = imgbuild(&cx, &["build", "child"]).exit(1);
    r.stderr_has(&[&layer, &actual, "expected", &reference]);
    assert!(
        r.stderr.contains(&size.to_string()),
        "the size is said too: {r}"
    );
    assert!(
        !cx.store_blobs().contains(&hex),
        "the corrupted blob is kept under its digest"
    );
    assert!(records(&cx, "pulled").is_empty(), "a pull is recorded: {r}");
    assert!(
        common::list_names(&cx.home.join("tmp")).is_empty(),
        "temporary files left: {:?}",
        common::list_names(&cx.home.join("tmp"))
    );
    let plan = imgbuild(&cx, &["plan", "child"]).exit(1);
    plan.stderr_has(&[&layer, &actual]);

    // Mended, the same build goes through: nothing bad was remembered.
    fs::write(&path, &good).unwrap();
    let out = cx.scratch.join("oci");
    build_json(&cx, &["child", "-o", &format!("oci:{}", out.display())]);
    let img = validate_layout(&out, "child");
    check_child(&img, &base.img, &reference, &digest);

    // A manifest pinned by digest whose bytes changed in storage (still a
    // valid manifest) is refused, naming the digest it should have.
    let pinned = format!("{}/base@{digest}", reg.host());
    let manifest_path = reg.stored_blob_path(&digest);
    let mut m: Value = serde_json::from_slice(&fs::read(&manifest_path).unwrap()).unwrap();
    m["annotations"] = json!({"tampered": "yes"});
    let tampered = serde_json::to_vec(&m).unwrap();
    fs::write(&manifest_path, &tampered).unwrap();
    let tampered_digest = format!("sha256:{}", sha256_hex(&tampered));
    let cx2 = consumer(&format!("images:\n{}", site_image("child", &pinned)));
    let r = imgbuild(&cx2, &["build", "child"]).exit(1);
    r.stderr_has(&[&digest, &tampered_digest]);
    assert!(
        records(&cx2, "pulled").is_empty(),
        "a pull is recorded: {r}"
    );
}

// ---------------------------------------------------------------------------
// 5. The registry cache on a fresh runner

/// base (busybox) ← app, whose layer is www-data's.
fn cache_project() -> Ctx {
    let cx = Ctx::new().with_epoch(EPOCH);
    busybox_tree(&cx, "base", "base\n");
    cx.write("app/hello.txt", "hello from app\n");
    cx.yaml(
        r#"images:
  base:
    from: scratch
    layers:
      - base
    config:
      env: {PATH: "/bin"}
  app:
    from: base
    layers:
      - {src: app, dest: /srv/app, owner: "www-data"}
    config:
      cmd: ["/bin/cat", "/srv/app/hello.txt"]
"#,
    );
    cx
}

#[test]
fn the_registry_cache_serves_a_fresh_runner_and_its_push() {
    let reg = Registry::anonymous();
    let host = reg.host();
    let cache = format!("{host}/cache");
    let mut cx = cache_project();
    let names = ["base", "app"];

    // Runner A builds everything and fills the cache.
    let (_, a) = build_json(&cx, &["--all", "--cache-repo", &cache]);
    let mut keys = Vec::new();
    let mut layer_digests = BTreeSet::new();
    for name in names {
        for (key, digest, built) in a.layer_summary(name) {
            assert!(built, "{name}: A builds every layer");
            keys.push(format!("layer-{key}"));
            layer_digests.insert(digest);
        }
    }
    keys.sort();
    assert_eq!(reg.tags("cache"), keys, "one cache tag per layer");

    // Runner B, an empty store: every layer comes from the cache.
    cx.home = cx.scratch.join("home-b");
    let out = cx.scratch.join("oci-b");
    let (_, b) = build_json(
        &cx,
        &[
            "--all",
            "--cache-repo",
            &cache,
            "-o",
            &format!("oci:{}", out.display()),
        ],
    );
    for name in names {
        assert_eq!(b.manifest(name), a.manifest(name), "{name}: same digest");
        for l in b.layers(name) {
            assert_eq!(l["built"], false, "{name}: {l}");
            assert_eq!(l["fetched"], true, "{name}: {l}");
        }
        let img = validate_layout(&out, name);
        assert_eq!(img.manifest_digest, a.manifest(name));
    }

    // B pushes: the layers are in the cache repository already, so they
    // are mounted from it, not uploaded again.
    let before = reg.access_log().len();
    let run = imgbuild(
        &cx,
        &[
            "push",
            "--all",
            "--registry",
            &format!("{host}/fleet"),
            "--cache-repo",
            &cache,
            "--json",
        ],
    )
    .success();
    let new = accesses_since(&reg, before);
    // (repository, digest) of each completed upload.
    let uploads: Vec<(String, String)> = new
        .iter()
        .filter(|x| x.method == "PUT" && x.status == 201 && x.target.contains("/blobs/uploads/"))
        .map(|x| {
            let digest = x
                .target
                .split_once("digest=")
                .map(|(_, d)| d.split('&').next().unwrap_or(d).replace("%3A", ":"))
                .unwrap_or_default();
            (x.repository().unwrap_or_default().to_string(), digest)
        })
        .collect();
    let layer_uploads: Vec<&(String, String)> = uploads
        .iter()
        .filter(|(_, d)| layer_digests.contains(d))
        .collect();
    let mounts: Vec<&Access> = new
        .iter()
        .filter(|x| x.method == "POST" && x.status == 201 && x.target.contains("mount="))
        .collect();
    assert!(
        layer_uploads.is_empty(),
        "layer blobs uploaded although the cache repository holds them (repository, digest): {layer_uploads:?}\n{run}"
    );
    assert_eq!(uploads.len(), 2, "only the two configs: {uploads:?}\n{run}");
    assert!(!mounts.is_empty(), "nothing mounted\n{run}");
    for name in names {
        assert_eq!(
            reg.digest(&format!("fleet/{name}"), "latest"),
            Some(a.manifest(name)),
            "{name}"
        );
    }
}

/// The cache repository cannot be reached (nothing listens on its port):
/// an empty store still builds, with a warning, the same digests; and an
/// unreachable cache costs at most about one round of retries, not a round
/// per layer.
#[test]
fn an_unreachable_cache_costs_a_build_not_a_failure() {
    let mut cx = cache_project();
    let names = ["base", "app"];
    // The digests without a cache.
    let (_, a) = build_json(&cx, &["--all"]);
    cx.home = cx.scratch.join("home-c");
    let nowhere = format!("127.0.0.1:{}/cache", free_port());
    let (run, c) = build_json(&cx, &["--all", "--cache-repo", &nowhere]);
    run.stderr_has(&["warning:"]);
    for name in names {
        assert_eq!(
            c.manifest(name),
            a.manifest(name),
            "{name}: the same digest as without a cache"
        );
        for l in c.layers(name) {
            assert_eq!(l["built"], true, "{name}: {l}");
            assert_eq!(l["fetched"], false, "{name}: {l}");
        }
    }
    // The cache is given up after its first failure, not retried for every
    // layer's get and put (each round of retries takes seconds).
    let warnings = run.stderr.matches("warning:").count();
    assert_eq!(
        warnings, 1,
        "one warning for the whole run, not one per layer\n{run}"
    );
    assert!(
        run.stderr
            .contains("not using the cache for the rest of this run"),
        "{run}"
    );
}

// ---------------------------------------------------------------------------
// 6. `from:` an index

/// Two images for two platforms in one index, pushed with `skopeo copy
/// --all`: the native one (busybox, marker "native") and a foreign one
/// (marker "foreign", its config saying another architecture), the foreign
/// one first in the index.
struct Multi {
    native: ValidImage,
    foreign_manifest: String,
    foreign_layer: String,
    index_digest: String,
    index: Value,
}

fn other_arch() -> &'static str {
    if host_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    }
}

fn push_multi(cx: &Ctx, reference: &str) -> Multi {
    busybox_tree(cx, "native", "native\n");
    busybox_tree(cx, "foreign", "foreign\n");
    cx.yaml(
        r#"images:
  native:
    from: scratch
    layers: [native]
    config: {env: {PATH: "/bin"}, cmd: ["/bin/cat", "/etc/marker"]}
  foreign:
    from: scratch
    layers: [foreign]
    config: {env: {PATH: "/bin"}, cmd: ["/bin/cat", "/etc/marker"]}
"#,
    );
    let out = cx.scratch.join("oci");
    build_json(cx, &["--all", "-o", &format!("oci:{}", out.display())]);
    let native = validate_layout(&out, "native");
    let foreign = validate_layout(&out, "foreign");
    assert_eq!(native.config["architecture"], host_arch());

    // The foreign image says it is for the other architecture.
    let mut config = foreign.config.clone();
    config["architecture"] = json!(other_arch());
    if other_arch() == "arm64" {
        config["variant"] = json!("v8");
    }
    let config_desc = put_blob(&out, CONFIG, &serde_json::to_vec(&config).unwrap());
    let mut manifest = foreign.manifest.clone();
    manifest["config"] = config_desc;
    let foreign_desc = put_blob(&out, MANIFEST, &serde_json::to_vec(&manifest).unwrap());
    let native_desc = json!({
        "mediaType": MANIFEST,
        "digest": native.manifest_digest,
        "size": fs::metadata(out.join("blobs/sha256").join(native.manifest_digest.trim_start_matches("sha256:"))).unwrap().len(),
    });
    let mut platform = json!({"architecture": other_arch(), "os": "linux"});
    if other_arch() == "arm64" {
        platform["variant"] = json!("v8");
    }
    let mut f = foreign_desc.clone();
    f["platform"] = platform;
    let mut n = native_desc.clone();
    n["platform"] = json!({"architecture": host_arch(), "os": "linux"});
    let index = json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": [f, n]});
    let index_desc = put_blob(&out, INDEX, &serde_json::to_vec(&index).unwrap());
    write_index(&out, &[("multi", &index_desc)]);
    skopeo_copy(
        cx,
        &format!("oci:{}:multi", out.display()),
        &format!("docker://{reference}"),
        &["--all"],
    )
    .success();
    Multi {
        native,
        foreign_manifest: foreign_desc["digest"].as_str().unwrap().to_string(),
        foreign_layer: foreign.layers[0].digest.clone(),
        index_digest: index_desc["digest"].as_str().unwrap().to_string(),
        index,
    }
}

#[test]
fn from_an_index_takes_the_host_platform() {
    require_tool("skopeo", "skopeo");
    require_docker();
    let reg = Registry::anonymous();
    let host = reg.host();
    let producer = Ctx::new().with_epoch(EPOCH);
    let reference = format!("{host}/multi:1");
    let multi = push_multi(&producer, &reference);
    let r = reg.request("GET", "/v2/multi/manifests/1", &[("Accept", INDEX)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["manifests"].as_array().unwrap().len(), 2);
    assert_eq!(
        reg.digest("multi", "1"),
        Some(multi.index_digest.clone()),
        "the index is pushed as it is"
    );

    let (child, pinned) = (unique("idx"), unique("idx-pinned"));
    let pinned_ref = format!("{host}/multi@{}", multi.index_digest);
    let cx = consumer(&format!(
        "images:\n{}{}",
        site_image(&child, &reference),
        site_image(&pinned, &pinned_ref)
    ));
    let out = cx.scratch.join("oci");
    let archive = cx.scratch.join("images.tar");
    build_json(
        &cx,
        &[
            "--all",
            "-o",
            &format!("oci:{}", out.display()),
            "-o",
            &format!("docker-archive:{}", archive.display()),
        ],
    );
    for (name, base_name) in [(&child, &reference), (&pinned, &pinned_ref)] {
        let img = validate_layout(&out, name);
        assert_eq!(img.layers.len(), 2, "{name}");
        assert_eq!(
            img.layers[0].digest,
            multi.native.layers[0].digest,
            "{name}: built on the {} image",
            host_arch()
        );
        assert_eq!(img.config["architecture"], host_arch());
        let annotations = &img.manifest["annotations"];
        assert_eq!(annotations[BASE_NAME], base_name.as_str(), "{name}");
        let base_digest = annotations[BASE_DIGEST].as_str().unwrap_or_default();
        assert!(
            base_digest == multi.native.manifest_digest || base_digest == multi.index_digest,
            "{name}: base.digest {base_digest} is neither the {} manifest {} nor the index {}",
            host_arch(),
            multi.native.manifest_digest,
            multi.index_digest
        );
        assert_ne!(base_digest, multi.foreign_manifest, "{name}");
        let e = img.layers[1].entry("srv/site/index.html");
        assert_eq!((e.uid, e.gid), (WWW_ID, WWW_ID), "{name}");
    }

    let tag = format!("{child}:latest");
    let _cleanup = DockerImages(vec![tag.clone(), format!("{pinned}:latest")]);
    docker(&["load", "-i", archive.to_str().unwrap()]).success();
    let run = docker_run_offline(
        &tag,
        &["/bin/sh", "-c", "cat /etc/marker /srv/site/index.html"],
    )
    .success();
    assert_eq!(run.stdout, "native\nhello from a pulled base\n", "{run}");
}

/// An index pinned by digest whose bytes changed in the registry's storage
/// (the host platform's entry now points at the foreign image) is refused.
#[test]
fn an_index_pinned_by_digest_is_verified() {
    require_tool("skopeo", "skopeo");
    let reg = Registry::anonymous();
    let host = reg.host();
    let producer = Ctx::new().with_epoch(EPOCH);
    let multi = push_multi(&producer, &format!("{host}/multi:1"));

    let mut index = multi.index.clone();
    index["manifests"][1]["digest"] = json!(multi.foreign_manifest);
    let foreign_size = index["manifests"][0]["size"].clone();
    index["manifests"][1]["size"] = foreign_size;
    let tampered = serde_json::to_vec(&index).unwrap();
    fs::write(reg.stored_blob_path(&multi.index_digest), &tampered).unwrap();
    let tampered_digest = format!("sha256:{}", sha256_hex(&tampered));

    let pinned = format!("{host}/multi@{}", multi.index_digest);
    let cx = consumer(&format!("images:\n{}", site_image("child", &pinned)));
    let out = cx.scratch.join("oci");
    let r = imgbuild(
        &cx,
        &["build", "child", "-o", &format!("oci:{}", out.display())],
    );
    let built_on = fs::read(out.join("index.json"))
        .ok()
        .map(|_| validate_layout(&out, "child").layers[0].digest.clone());
    assert_eq!(
        r.code,
        1,
        "an index that does not match its pinned digest was used: the child's first layer is {built_on:?} (the {} image's is {}, the {} image's {}): {r}",
        other_arch(),
        multi.foreign_layer,
        host_arch(),
        multi.native.layers[0].digest,
    );
    r.stderr_has(&[&multi.index_digest, &tampered_digest]);
    assert!(records(&cx, "pulled").is_empty(), "a pull is recorded: {r}");
}
