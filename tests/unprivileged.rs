//! imgbuild as root inside an ordinary unprivileged container (Docker's
//! defaults: no --privileged, default capabilities and seccomp, no mounts),
//! as a GitLab runner's Docker executor runs it: `run:` steps fall back to
//! chroot, and the image comes out bit for bit as on the host.
mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::aptrepo::{AptRepo, Variant, debian_project};
use common::{Ctx, DockerImages, require_docker, run_command};

/// The image built on the host and in the container, on `base`.
const STEPPED: &str = concat!(
    "  stepped:\n",
    "    from: base\n",
    "    config:\n",
    "      workdir: /srv\n",
    "    run:\n",
    "      - echo made > /srv/made.txt && rm /etc/motd\n",
);

/// The applets a build needs inside the tool image, and a project's base.
const APPLETS: &[&str] = &[
    "sh", "chroot", "unshare", "cp", "mkdir", "cat", "ls", "echo", "rm", "id", "mount", "env",
    "true", "test", "[",
];

/// The shared libraries `ldd` names for a binary, to copy into a scratch image.
fn libraries(binary: &Path) -> Vec<String> {
    let out = Command::new("ldd").arg(binary).output().expect("ldd");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(str::to_string)
        })
        .collect()
}

/// The tool image: busybox, the imgbuild binary and its libraries, and the
/// project the caller put in `tool/work`; loaded into Docker as `TAG:latest`
/// (removed when the guard drops).
fn tool_image(cx: &Ctx) -> (String, DockerImages) {
    cx.busybox_tree("tool", APPLETS);
    let bin = Path::new(env!("CARGO_BIN_EXE_imgbuild"));
    cx.mkdir("tool/usr/local/bin");
    fs::copy(bin, cx.path("tool/usr/local/bin/imgbuild")).unwrap();
    for lib in libraries(bin) {
        let dest = cx.path(&format!("tool{lib}"));
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(&lib, &dest).unwrap();
    }
    cx.mkdir("tool/tmp");
    let tag = format!(
        "imgbuild-unpriv-{}-{}",
        std::process::id(),
        cx.root
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_lowercase()
    );
    cx.write(
        "tool.yaml",
        format!(
            "images:\n  {tag}:\n    from: scratch\n    layers: [tool]\n    config:\n      env: {{PATH: /usr/local/bin:/bin}}\n"
        ),
    );
    let archive = cx.scratch.join("tool.tar");
    cx.run(&[
        "-f",
        "tool.yaml",
        "build",
        &tag,
        "-o",
        &format!("docker-archive:{}", archive.display()),
    ])
    .success();
    let mut load = Command::new("docker");
    load.args(["load", "-q", "-i"]).arg(&archive);
    run_command(load).success();
    let cleanup = DockerImages(vec![format!("{tag}:latest")]);
    (tag, cleanup)
}

/// The manifest digest of `name` in a `build --json` report.
fn manifest_in(report: &serde_json::Value, name: &str) -> String {
    report["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .and_then(|i| i["manifest"].as_str())
        .unwrap_or_else(|| panic!("no {name} in {report:#}"))
        .to_string()
}

#[test]
fn run_steps_build_inside_an_unprivileged_container_with_chroot() {
    require_docker();
    let cx = Ctx::new();
    // The project, built on the host first (namespace isolation here).
    cx.busybox_project("", APPLETS, STEPPED);
    let host = cx.build(&["stepped"]);
    cx.busybox_project("tool/work/", APPLETS, STEPPED);
    let (tag, _cleanup) = tool_image(&cx);
    // Docker's defaults: not --privileged, no added capabilities.
    let mut c = Command::new("docker");
    c.args([
        "run",
        "--rm",
        &format!("{tag}:latest"),
        "sh",
        "-c",
        "cd /work && IMGBUILD_HOME=/tmp/store IMGBUILD_REVISION= imgbuild --json build stepped",
    ]);
    let run = run_command(c).success();
    run.stderr_has(&["running steps with chroot isolation"]);
    let inside: serde_json::Value = serde_json::from_str(&run.stdout).expect("build --json");
    let digest = inside["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "stepped")
        .map(|i| i["manifest"].as_str().unwrap().to_string())
        .unwrap();
    assert_eq!(
        digest,
        host.manifest("stepped"),
        "the same image under chroot in a container as under namespaces on the host"
    );
}

/// A Debian layer (dpkg and its maintainer scripts, under chroot) built as
/// root inside an unprivileged container from the test apt repository,
/// which the container reaches on the host's network: the same image as
/// the host's build.
#[test]
fn a_debian_layer_builds_inside_an_unprivileged_container_with_chroot() {
    require_docker();
    let repo = AptRepo::start(Variant::Good);
    let cx = debian_project(&repo, "adds-user, alt-link", "");
    cx.build(&["debian-root"]);
    cx.run(&["lock"]).success();
    let host = cx.build(&["app", "--locked"]);
    let debs = repo.deb_fetches();
    assert!(debs > 0, "the host's build fetched no .deb");
    // The same project in the tool image, lock included.
    cx.mkdir("tool/work");
    for f in [
        "images.yaml",
        "images.lock",
        "debian.tar",
        "test-keyring.gpg",
    ] {
        fs::copy(cx.path(f), cx.path(&format!("tool/work/{f}"))).unwrap();
    }
    // imgbuild's HTTP client wants the system's CA certificates, even for
    // an http:// mirror; a real tool image has them.
    cx.mkdir("tool/etc/ssl/certs");
    fs::copy(
        "/etc/ssl/certs/ca-certificates.crt",
        cx.path("tool/etc/ssl/certs/ca-certificates.crt"),
    )
    .expect("the host's CA certificates (apt-get install ca-certificates)");
    let (tag, _cleanup) = tool_image(&cx);
    // Docker's defaults but the network: the repository listens on the
    // host's loopback, which only the host's network namespace reaches.
    let mut c = Command::new("docker");
    c.args([
        "run",
        "--rm",
        "--network",
        "host",
        &format!("{tag}:latest"),
        "sh",
        "-c",
        // SOURCE_DATE_EPOCH as the host's build had it (Ctx sets 0): it
        // dates the layer's files and the shadow entries useradd writes.
        "cd /work && SOURCE_DATE_EPOCH=0 IMGBUILD_HOME=/tmp/store IMGBUILD_REVISION= imgbuild --json build app --locked",
    ]);
    let run = run_command(c).success();
    run.stderr_has(&["running steps with chroot isolation"]);
    let inside: serde_json::Value = serde_json::from_str(&run.stdout).expect("build --json");
    assert!(
        repo.deb_fetches() > debs,
        "the container's build fetched no .deb from the repository: {}",
        repo.log_text()
    );
    let layers = inside["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "app")
        .map(|i| i["layers"].as_array().unwrap().clone())
        .unwrap();
    assert_eq!(
        layers.last().map(|l| &l["built"]),
        Some(&serde_json::Value::Bool(true)),
        "the Debian layer was not built in the container: {inside:#}"
    );
    assert_eq!(
        manifest_in(&inside, "app"),
        host.manifest("app"),
        "the same Debian image under chroot in a container as under namespaces on the host"
    );
}
