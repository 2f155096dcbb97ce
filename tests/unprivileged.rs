//! imgbuild as root inside an ordinary unprivileged container (Docker's
//! defaults: no --privileged, default capabilities and seccomp, no mounts),
//! as a GitLab runner's Docker executor runs it: `run:` steps fall back to
//! chroot, and the image comes out bit for bit as on the host.
mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

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

#[test]
fn run_steps_build_inside_an_unprivileged_container_with_chroot() {
    require_docker();
    let cx = Ctx::new();
    // The project, built on the host first (namespace isolation here).
    cx.busybox_project("", APPLETS, STEPPED);
    let host = cx.build(&["stepped"]);
    // The tool image: busybox, the imgbuild binary, its libraries, the project.
    cx.busybox_tree("tool", APPLETS);
    let bin = Path::new(env!("CARGO_BIN_EXE_imgbuild"));
    cx.mkdir("tool/usr/local/bin");
    fs::copy(bin, cx.path("tool/usr/local/bin/imgbuild")).unwrap();
    for lib in libraries(bin) {
        let dest = cx.path(&format!("tool{lib}"));
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(&lib, &dest).unwrap();
    }
    cx.busybox_project("tool/work/", APPLETS, STEPPED);
    cx.mkdir("tool/tmp");
    let tag = format!("imgbuild-unpriv-{}", std::process::id());
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
    let _cleanup = DockerImages(vec![format!("{tag}:latest")]);
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
