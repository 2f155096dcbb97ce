//! Shared test context for the integration tests: a temporary project and
//! store, the binary run with a fixed environment, tree helpers, and
//! `validate_layout`, which every test that makes an image calls at the end.
//!
//! Each test crate uses a different part of this module.
#![allow(dead_code)]

pub mod aptrepo;
pub mod proxy;
pub mod registry;
pub mod serve;

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

pub const BIN: &str = env!("CARGO_BIN_EXE_imgbuild");

pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A temporary project (`root`, where images.yaml lives), a temporary store
/// (`home`, the `IMGBUILD_HOME`) and scratch space (`scratch`), removed on
/// drop. Every run of the binary gets the same fixed environment.
pub struct Ctx {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub home: PathBuf,
    pub scratch: PathBuf,
    /// `SOURCE_DATE_EPOCH` for every run (0 unless changed).
    pub epoch: i64,
    /// Extra environment for every run.
    pub env: Vec<(String, String)>,
    /// A program (and its arguments) that runs the binary, e.g. `taskset -c 0`.
    pub wrapper: Vec<String>,
    /// The imgbuild binary to run (`BIN` unless a test copies it, say to a
    /// directory another user can reach).
    pub bin: PathBuf,
}

impl Default for Ctx {
    fn default() -> Self {
        Self::new()
    }
}

impl Ctx {
    pub fn new() -> Ctx {
        let tmp = tempfile::Builder::new()
            .prefix("imgbuild-test-")
            .tempdir()
            .expect("a temporary directory");
        let root = tmp.path().join("project");
        let home = tmp.path().join("home");
        let scratch = tmp.path().join("scratch");
        for d in [&root, &home, &scratch] {
            fs::create_dir_all(d).expect("create test dirs");
        }
        Ctx {
            _tmp: tmp,
            root,
            home,
            scratch,
            epoch: 0,
            env: Vec::new(),
            wrapper: Vec::new(),
            bin: PathBuf::from(BIN),
        }
    }

    pub fn with_epoch(mut self, epoch: i64) -> Ctx {
        self.epoch = epoch;
        self
    }

    /// A path inside the project.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Writes a file inside the project (parents created), mode 0644.
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(rel);
        write_file(&p, contents.as_ref(), 0o644);
        p
    }

    /// Writes an executable file (mode 0755) inside the project.
    pub fn write_exec(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(rel);
        write_file(&p, contents.as_ref(), 0o755);
        p
    }

    pub fn chmod(&self, rel: &str, mode: u32) {
        let p = self.path(rel);
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
    }

    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        p
    }

    /// `DIR/bin/busybox` (Debian's static one) and a link per applet, a
    /// tree to copy into an image as its `/`.
    pub fn busybox_tree(&self, dir: &str, applets: &[&str]) {
        self.mkdir(&format!("{dir}/bin"));
        fs::copy(static_busybox(), self.path(&format!("{dir}/bin/busybox"))).unwrap();
        self.busybox_applets(dir, applets);
    }

    /// More applets in the busybox tree `DIR`.
    pub fn busybox_applets(&self, dir: &str, applets: &[&str]) {
        for app in applets {
            self.symlink("busybox", &format!("{dir}/bin/{app}"));
        }
    }

    /// The project run-step tests start from, below `root` (`""` or
    /// `DIR/`): the busybox tree `busybox/` with `applets`, `site/` (a
    /// /etc/motd, root's /etc/passwd and an empty /srv), and images.yaml
    /// with [`on_busybox_base`]`(images)`.
    pub fn busybox_project(&self, root: &str, applets: &[&str], images: &str) {
        self.busybox_tree(&format!("{root}busybox"), applets);
        self.write(&format!("{root}site/etc/motd"), "welcome\n");
        self.write(
            &format!("{root}site/etc/passwd"),
            "root:x:0:0::/root:/bin/sh\n",
        );
        self.mkdir(&format!("{root}site/srv"));
        self.write(&format!("{root}images.yaml"), on_busybox_base(images));
    }

    /// A symlink at `rel` pointing at `target` (as written).
    pub fn symlink(&self, target: &str, rel: &str) {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).expect("create parent");
        }
        std::os::unix::fs::symlink(target, &p)
            .unwrap_or_else(|e| panic!("symlink {}: {e}", p.display()));
    }

    /// A second name `rel` for the existing file `existing`.
    pub fn hardlink(&self, existing: &str, rel: &str) {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).expect("create parent");
        }
        fs::hard_link(self.path(existing), &p)
            .unwrap_or_else(|e| panic!("hard link {}: {e}", p.display()));
    }

    /// Writes images.yaml.
    pub fn yaml(&self, text: &str) -> PathBuf {
        self.write("images.yaml", text)
    }

    /// The binary with the fixed environment, run in the project directory.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = match self.wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        c.args(args)
            .current_dir(&self.root)
            .env("IMGBUILD_HOME", &self.home)
            .env("SOURCE_DATE_EPOCH", self.epoch.to_string())
            .env("IMGBUILD_REVISION", "")
            .env("IMGBUILD_SOURCE", "")
            .env_remove("CI_COMMIT_SHA")
            .env_remove("CI_PROJECT_URL")
            .env("NO_COLOR", "1");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        run_command(self.command(args))
    }

    /// Runs with extra environment for this run only.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut c = self.command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        run_command(c)
    }

    /// `imgbuild --json build ARGS…`, which must succeed; its report.
    pub fn build(&self, args: &[&str]) -> Report {
        let mut all = vec!["--json", "-q", "build"];
        all.extend_from_slice(args);
        Report(self.run(&all).success().json())
    }

    /// As [`Ctx::build`], in a store of its own (`scratch/second-home`):
    /// what a build gives afresh.
    pub fn build_in_fresh_store(&self, args: &[&str]) -> Report {
        let mut all = vec!["--json", "-q", "build"];
        all.extend_from_slice(args);
        let mut c = self.command(&all);
        c.env("IMGBUILD_HOME", self.scratch.join("second-home"));
        Report(run_command(c).success().json())
    }

    /// `build --all --compression COMPRESSION -o oci:OUT`; its report.
    pub fn build_all_oci(&self, compression: &str, out: &Path) -> Report {
        self.build(&[
            "--all",
            "--compression",
            compression,
            "-o",
            &format!("oci:{}", out.display()),
        ])
    }

    /// `imgbuild --json plan ARGS…`, which must succeed.
    pub fn plan(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json", "plan"];
        all.extend_from_slice(args);
        self.run(&all).success().json()
    }

    /// The hex digests of the blobs in the store.
    pub fn store_blobs(&self) -> BTreeSet<String> {
        list_names(&self.home.join("blobs/sha256"))
    }
}

fn write_file(p: &Path, contents: &[u8], mode: u32) {
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).expect("create parent");
    }
    fs::write(p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

/// Names in a directory (sorted); none if it does not exist.
pub fn list_names(dir: &Path) -> BTreeSet<String> {
    match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| {
                e.expect("read dir")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| !n.starts_with('.'))
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// What a run printed, and how it ended.
pub struct Run {
    pub cmd: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` exited {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmd, self.code, self.stdout, self.stderr
        )
    }
}

impl Run {
    /// Panics unless it exited 0.
    pub fn success(self) -> Run {
        assert_eq!(self.code, 0, "expected success: {self}");
        self
    }

    /// Panics unless it exited `code`.
    pub fn exit(self, code: i32) -> Run {
        assert_eq!(self.code, code, "expected exit {code}: {self}");
        self
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self}"))
    }

    /// stdout's lines.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lines().map(str::to_string).collect()
    }

    /// What `image`'s steps printed: its `IMAGE | …` lines on stderr.
    pub fn step_output(&self, image: &str) -> Vec<String> {
        let prefix = format!("{image} | ");
        self.stderr
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .map(str::to_string)
            .collect()
    }

    /// Panics unless stderr contains every one of `parts`.
    pub fn stderr_has(&self, parts: &[&str]) -> &Run {
        for p in parts {
            assert!(self.stderr.contains(p), "stderr lacks {p:?}: {self}");
        }
        self
    }
}

/// Runs any command and captures its output.
pub fn run_command(mut c: Command) -> Run {
    let cmd = format!(
        "{} {}",
        c.get_program().to_string_lossy(),
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{cmd}`: {e}"));
    Run {
        cmd,
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `build --json` output.
pub struct Report(pub Value);

impl Report {
    /// The entry of image `name` under `images`.
    pub fn image(&self, name: &str) -> &Value {
        self.0["images"]
            .as_array()
            .expect("`images` is a list")
            .iter()
            .find(|i| i["name"] == name)
            .unwrap_or_else(|| panic!("no image {name} in the report: {:#}", self.0))
    }

    pub fn manifest(&self, name: &str) -> String {
        self.image(name)["manifest"]
            .as_str()
            .expect("manifest is a string")
            .to_string()
    }

    pub fn layers(&self, name: &str) -> Vec<Value> {
        self.image(name)["layers"]
            .as_array()
            .expect("`layers` is a list")
            .clone()
    }

    /// `(key, digest, built)` of each layer of `name`.
    pub fn layer_summary(&self, name: &str) -> Vec<(String, String, bool)> {
        self.layers(name)
            .iter()
            .map(|l| {
                (
                    l["key"].as_str().expect("key").to_string(),
                    l["digest"].as_str().expect("digest").to_string(),
                    l["built"].as_bool().expect("built"),
                )
            })
            .collect()
    }

    pub fn names(&self) -> BTreeSet<String> {
        self.0["images"]
            .as_array()
            .expect("`images` is a list")
            .iter()
            .map(|i| i["name"].as_str().expect("name").to_string())
            .collect()
    }
}

/// The plan entry of image `name` in `plan --json` output.
pub fn plan_of<'a>(plan: &'a Value, name: &str) -> &'a Value {
    plan.as_array()
        .expect("a plan is a list")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no image {name} in the plan: {plan:#}"))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Fails the test, saying what to install, when `tool` is not on PATH.
pub fn require_tool(tool: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(tool);
        if p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        {
            return p;
        }
    }
    panic!(
        "`{tool}` is not installed, and this test needs it: install it with `apt-get install {package}` (ci/ installs it for CI)"
    );
}

/// Fails the test unless it runs as root (umoci's non-rootless unpack and
/// owner checks need it).
pub fn require_root() {
    let uid = fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(u32::MAX);
    assert_eq!(
        uid, 0,
        "this test must run as root (CI runs it as root): it unpacks images with their owners"
    );
}

/// Copies a tree: files with their permission bits, symlinks as symlinks,
/// directories; the copies get new mtimes.
pub fn copy_tree(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap_or_else(|e| panic!("mkdir {}: {e}", dst.display()));
    let mut names: Vec<_> = fs::read_dir(src)
        .unwrap_or_else(|e| panic!("read {}: {e}", src.display()))
        .map(|e| e.expect("read dir").file_name())
        .collect();
    names.sort();
    for name in names {
        let s = src.join(&name);
        let d = dst.join(&name);
        let meta = fs::symlink_metadata(&s).expect("lstat");
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&s).expect("readlink");
            std::os::unix::fs::symlink(&target, &d).expect("symlink");
        } else if meta.is_dir() {
            copy_tree(&s, &d);
        } else {
            fs::copy(&s, &d).unwrap_or_else(|e| panic!("copy {}: {e}", s.display()));
        }
    }
}

/// Sets the mtime of everything under `dir` (symlinks themselves included).
pub fn touch_all(dir: &Path, epoch: i64) {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!(
            "find \"$1\" -depth -exec touch -h -d @{epoch} {{}} +"
        ))
        .arg("sh")
        .arg(dir);
    run_command(c).success();
}

/// One entry of a layer tar, as `tar` wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    pub path: String,
    /// 'f' file, 'd' directory, 'l' symlink, 'h' hard link, '?' other.
    pub kind: char,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// Symlink or hard link target.
    pub link: Option<String>,
    pub data: Vec<u8>,
}

/// A layer that passed validation.
pub struct ValidLayer {
    pub digest: String,
    pub diff_id: String,
    pub media_type: String,
    pub size: u64,
    /// The uncompressed tar.
    pub tar: Vec<u8>,
}

impl ValidLayer {
    pub fn entries(&self) -> Vec<TarEntry> {
        tar_entries(&self.tar)
    }

    pub fn entry(&self, path: &str) -> TarEntry {
        let entries = self.entries();
        entries
            .iter()
            .find(|e| e.path.trim_end_matches('/') == path)
            .cloned()
            .unwrap_or_else(|| {
                panic!(
                    "no entry {path} in layer {}: {:?}",
                    self.digest,
                    entries.iter().map(|e| &e.path).collect::<Vec<_>>()
                )
            })
    }
}

/// An image that passed validation.
pub struct ValidImage {
    pub manifest_digest: String,
    pub manifest: Value,
    pub config_digest: String,
    pub config: Value,
    pub layers: Vec<ValidLayer>,
}

/// A tar entry's type as one letter, as `ls -l` and find's `-type` spell it
/// (`h` for a hard link, `?` for the rest).
pub fn tar_kind(t: tar::EntryType) -> char {
    match t {
        tar::EntryType::Regular => 'f',
        tar::EntryType::Directory => 'd',
        tar::EntryType::Symlink => 'l',
        tar::EntryType::Link => 'h',
        tar::EntryType::Char => 'c',
        tar::EntryType::Block => 'b',
        tar::EntryType::Fifo => 'p',
        _ => '?',
    }
}

pub fn tar_entries(tar_bytes: &[u8]) -> Vec<TarEntry> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut out = Vec::new();
    for e in archive.entries().expect("a tar stream") {
        let mut e = e.expect("a tar entry");
        let h = e.header().clone();
        let kind = tar_kind(h.entry_type());
        let path = e.path().expect("entry path").to_string_lossy().into_owned();
        let link = e
            .link_name()
            .expect("link name")
            .map(|l| l.to_string_lossy().into_owned());
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("entry data");
        out.push(TarEntry {
            path,
            kind,
            mode: h.mode().expect("mode"),
            uid: h.uid().expect("uid"),
            gid: h.gid().expect("gid"),
            mtime: h.mtime().expect("mtime"),
            link,
            data,
        });
    }
    out
}

fn read_json(path: &Path) -> Value {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Reads the blob a descriptor names and checks its digest and size.
fn verified_blob(dir: &Path, desc: &Value, what: &str) -> Vec<u8> {
    let digest = desc["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: descriptor without a digest: {desc}"));
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("{what}: digest {digest} is not sha256"));
    assert!(
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{what}: malformed digest {digest}"
    );
    let path = dir.join("blobs/sha256").join(hex);
    let bytes =
        fs::read(&path).unwrap_or_else(|e| panic!("{what}: blob {} missing: {e}", path.display()));
    assert_eq!(
        sha256_hex(&bytes),
        hex,
        "{what}: blob {digest} does not hash to its name"
    );
    let size = desc["size"]
        .as_u64()
        .unwrap_or_else(|| panic!("{what}: descriptor without a size: {desc}"));
    assert_eq!(
        bytes.len() as u64,
        size,
        "{what}: blob {digest} has {} bytes, its descriptor says {size}",
        bytes.len()
    );
    bytes
}

/// Decompresses a layer by its media type, checking the magic number agrees.
pub fn decompress(bytes: &[u8], media_type: &str, what: &str) -> Vec<u8> {
    let mut out = Vec::new();
    match media_type {
        LAYER_GZIP => {
            assert!(
                bytes.starts_with(&[0x1f, 0x8b]),
                "{what}: {media_type} but not gzip"
            );
            flate2::read::MultiGzDecoder::new(bytes)
                .read_to_end(&mut out)
                .unwrap_or_else(|e| panic!("{what}: bad gzip: {e}"));
        }
        LAYER_ZSTD => {
            assert!(
                bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]),
                "{what}: {media_type} but not zstd"
            );
            zstd::stream::read::Decoder::new(bytes)
                .and_then(|mut d| d.read_to_end(&mut out))
                .unwrap_or_else(|e| panic!("{what}: bad zstd: {e}"));
        }
        LAYER_TAR => out = bytes.to_vec(),
        other => panic!("{what}: unexpected layer media type {other}"),
    }
    out
}

/// Validates the OCI image layout at `dir` and the image named `name` in it,
/// as go-containerregistry's `validate` does: index.json → manifest →
/// config; every blob's sha256 and size against its descriptor; the
/// config's diff_ids against the sha256 of each decompressed layer; history
/// against the layers; media types. Also checks every blob in the layout
/// hashes to its name and each layer is a readable tar.
pub fn validate_layout(dir: &Path, name: &str) -> ValidImage {
    let layout = read_json(&dir.join("oci-layout"));
    assert_eq!(
        layout["imageLayoutVersion"],
        "1.0.0",
        "{}: oci-layout",
        dir.display()
    );
    for hex in list_names(&dir.join("blobs/sha256")) {
        let bytes = fs::read(dir.join("blobs/sha256").join(&hex)).expect("read blob");
        assert_eq!(
            sha256_hex(&bytes),
            hex,
            "blob {hex} does not hash to its name"
        );
    }
    let index = read_json(&dir.join("index.json"));
    assert_eq!(index["schemaVersion"], 2, "index.json schemaVersion");
    if let Some(mt) = index.get("mediaType") {
        assert_eq!(mt, INDEX, "index.json mediaType");
    }
    let manifests = index["manifests"]
        .as_array()
        .expect("index.json has `manifests`");
    let named: Vec<&Value> = manifests
        .iter()
        .filter(|m| m["annotations"][REF_NAME] == name)
        .collect();
    assert_eq!(
        named.len(),
        1,
        "index.json must name {name} exactly once: {index:#}"
    );
    let desc = named[0];
    assert_eq!(
        desc["mediaType"], MANIFEST,
        "{name}: manifest descriptor mediaType"
    );
    let manifest_bytes = verified_blob(dir, desc, &format!("{name}: manifest"));
    let manifest: Value = serde_json::from_slice(&manifest_bytes).expect("manifest is JSON");
    assert_eq!(
        manifest["schemaVersion"], 2,
        "{name}: manifest schemaVersion"
    );
    assert_eq!(
        manifest["mediaType"], MANIFEST,
        "{name}: manifest mediaType"
    );
    let config_desc = &manifest["config"];
    assert_eq!(config_desc["mediaType"], CONFIG, "{name}: config mediaType");
    let config_bytes = verified_blob(dir, config_desc, &format!("{name}: config"));
    let config: Value = serde_json::from_slice(&config_bytes).expect("config is JSON");
    assert!(
        config["architecture"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{name}: config has no architecture"
    );
    assert_eq!(config["os"], "linux", "{name}: config os");
    assert_eq!(config["rootfs"]["type"], "layers", "{name}: rootfs.type");
    let diff_ids: Vec<&str> = config["rootfs"]["diff_ids"]
        .as_array()
        .expect("rootfs.diff_ids")
        .iter()
        .map(|d| d.as_str().expect("diff_id is a string"))
        .collect();
    let layer_descs = manifest["layers"].as_array().expect("manifest layers");
    assert_eq!(
        layer_descs.len(),
        diff_ids.len(),
        "{name}: {} layers but {} diff_ids",
        layer_descs.len(),
        diff_ids.len()
    );
    let history = config["history"].as_array().cloned().unwrap_or_default();
    assert!(!history.is_empty(), "{name}: config has no history");
    let non_empty = history
        .iter()
        .filter(|h| h["empty_layer"] != Value::Bool(true))
        .count();
    assert_eq!(
        non_empty,
        layer_descs.len(),
        "{name}: history has {non_empty} non-empty entries for {} layers",
        layer_descs.len()
    );
    let mut layers = Vec::new();
    for (i, (ld, diff_id)) in layer_descs.iter().zip(&diff_ids).enumerate() {
        let what = format!("{name}: layer {i}");
        let media_type = ld["mediaType"]
            .as_str()
            .expect("layer mediaType")
            .to_string();
        let bytes = verified_blob(dir, ld, &what);
        let tar = decompress(&bytes, &media_type, &what);
        assert_eq!(
            format!("sha256:{}", sha256_hex(&tar)),
            *diff_id,
            "{what}: the decompressed layer does not match diff_id"
        );
        // Readable to the end as a tar stream.
        let _ = tar_entries(&tar);
        layers.push(ValidLayer {
            digest: ld["digest"].as_str().expect("digest").to_string(),
            diff_id: diff_id.to_string(),
            media_type,
            size: bytes.len() as u64,
            tar,
        });
    }
    let config_digest = config_desc["digest"].as_str().expect("digest").to_string();
    ValidImage {
        manifest_digest: desc["digest"].as_str().expect("digest").to_string(),
        manifest,
        config_digest,
        config,
        layers,
    }
}

/// images.yaml's text: `base`, a scratch image of the project's `busybox`
/// and `site` trees, then `images` (more entries of the `images:` map).
pub fn on_busybox_base(images: &str) -> String {
    format!("images:\n  base:\n    from: scratch\n    layers: [busybox, site]\n{images}")
}

/// Fails unless /bin/busybox exists and is statically linked (a dynamic one
/// cannot run in a scratch image).
pub fn static_busybox() -> PathBuf {
    let path = PathBuf::from("/bin/busybox");
    let bytes = fs::read(&path).unwrap_or_else(|_| {
        panic!("/bin/busybox is missing: install it with `apt-get install busybox-static`")
    });
    assert!(
        bytes.starts_with(b"\x7fELF") && bytes[4] == 2 && bytes[5] == 1,
        "/bin/busybox is not a 64-bit little-endian ELF"
    );
    // Program headers: no PT_INTERP (3) means no dynamic loader is needed.
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    let dynamic = (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) == 3
    });
    assert!(
        !dynamic,
        "/bin/busybox is dynamically linked: install `busybox-static` (apt-get install busybox-static)"
    );
    path
}

pub fn require_docker() {
    require_tool("docker", "docker.io");
    let mut c = Command::new("docker");
    c.args(["info", "--format", "{{.ServerVersion}}"]);
    let info = run_command(c);
    assert_eq!(
        info.code, 0,
        "the docker daemon is not reachable (start it, or run where it runs): {info}"
    );
}

pub fn docker(args: &[&str]) -> Run {
    let mut c = Command::new("docker");
    c.args(args);
    run_command(c)
}

/// `docker run --rm --network none IMAGE COMMAND…`: the image run as a
/// container runtime runs it, with no network.
pub fn docker_run_offline(image: &str, command: &[&str]) -> Run {
    let mut args = vec!["run", "--rm", "--network", "none", image];
    args.extend_from_slice(command);
    docker(&args)
}

/// umoci unpacks `name` of the OCI layout `layout` into `bundle`; its rootfs.
pub fn umoci_unpack(layout: &Path, name: &str, bundle: &Path) -> PathBuf {
    let mut c = Command::new("umoci");
    c.arg("unpack")
        .arg("--image")
        .arg(format!("{}:{name}", layout.display()))
        .arg(bundle);
    run_command(c).success();
    bundle.join("rootfs")
}

/// Removes the docker images it names when dropped, even on panic.
pub struct DockerImages(pub Vec<String>);

impl Drop for DockerImages {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let mut c = Command::new("docker");
            c.arg("rmi").arg("--force").args(&self.0);
            let _ = c.output();
        }
    }
}

/// Environment that would let a peer or imgbuild find credentials or
/// proxies of the machine instead of the test's own.
pub const FOREIGN_ENV: &[&str] = &[
    "DOCKER_CONFIG",
    "DOCKER_AUTH_CONFIG",
    "REGISTRY_AUTH_FILE",
    "CI_REGISTRY",
    "CI_REGISTRY_USER",
    "CI_REGISTRY_PASSWORD",
    "CI_JOB_TOKEN",
    "CI_REGISTRY_IMAGE",
    "IMGBUILD_REGISTRY",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "IMGBUILD_CACHE_REPO",
];

/// skopeo with no credentials but the ones a test gives it.
pub fn skopeo(cx: &Ctx, args: &[&str]) -> Run {
    let (sub, rest) = args.split_first().expect("a skopeo command");
    let mut c = Command::new("skopeo");
    // An auth file that does not exist: no credentials but the ones given.
    c.arg(sub)
        .arg("--authfile")
        .arg(cx.scratch.join("no-auth.json"))
        .args(rest);
    for k in FOREIGN_ENV {
        c.env_remove(k);
    }
    run_command(c)
}

/// A trixie minbase tarball, made once per target directory.
pub fn debian_tarball() -> PathBuf {
    require_tool("mmdebstrap", "mmdebstrap");
    // Tests of one binary run on threads of one process: one makes it, the
    // others wait (the temporary name is per process, for other binaries).
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let tar = dir.join("trixie-minbase.tar");
    if tar.exists() {
        return tar;
    }
    let mirror = std::env::var("IMGBUILD_DEBIAN_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".into());
    let tmp = dir.join(format!("trixie-minbase.{}.tar", std::process::id()));
    let mut c = std::process::Command::new("mmdebstrap");
    c.args([
        "--mode=unshare",
        "--variant=minbase",
        "--include=passwd",
        "--quiet",
        "trixie",
    ])
    .arg(&tmp)
    .arg(&mirror);
    run_command(c).success();
    std::fs::rename(&tmp, &tar).unwrap();
    tar
}
