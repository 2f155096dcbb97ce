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

/// A directory of the host for the container's store, as `-v` wants it
/// (`HOST:/builds`): a runner mounts its build directory so.
fn builds_dir(cx: &Ctx) -> String {
    let dir = cx.scratch.join("builds");
    fs::create_dir_all(&dir).unwrap();
    format!("{}:/builds", dir.display())
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
    // Docker's defaults: not --privileged, no added capabilities; the
    // store on a mounted directory, as a runner's build directory is (the
    // container's own filesystem may be `nodev`).
    let builds = builds_dir(&cx);
    let mut c = Command::new("docker");
    c.args([
        "run",
        "--rm",
        "-v",
        &builds,
        &format!("{tag}:latest"),
        "sh",
        "-c",
        "cd /work && IMGBUILD_HOME=/builds/store IMGBUILD_REVISION= imgbuild --json build stepped",
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
    // The same bytes here, but steps under chroot see no /proc: the run
    // layer's key says chroot, so a shared cache never hands one for the
    // other.
    let run_key = |layers: &[serde_json::Value]| layers.last().unwrap()["key"].clone();
    let inside_layers = inside["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "stepped")
        .map(|i| i["layers"].as_array().unwrap().clone())
        .unwrap();
    assert_ne!(
        run_key(&inside_layers),
        run_key(&host.layers("stepped")),
        "one key for a run layer made under chroot and under namespaces"
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
    let builds = builds_dir(&cx);
    // Without FSETID dpkg's setgid bits would be lost: refused before any
    // package is fetched.
    let fetched = repo.deb_fetches();
    let mut c = Command::new("docker");
    c.args([
        "run",
        "--rm",
        "--network",
        "host",
        "--cap-drop",
        "FSETID",
        "-v",
        &builds,
        &format!("{tag}:latest"),
        "sh",
        "-c",
        "cd /work && IMGBUILD_HOME=/builds/store imgbuild build app --locked",
    ]);
    run_command(c).exit(1).stderr_has(&[
        "image app: its Debian layer is not built here",
        "set-id bits are dropped here",
        "--cap-add FSETID",
    ]);
    assert_eq!(
        repo.deb_fetches(),
        fetched,
        "a refused build fetched packages"
    );
    // Docker's defaults but the network: the repository listens on the
    // host's loopback, which only the host's network namespace reaches.
    let mut c = Command::new("docker");
    c.args([
        "run",
        "--rm",
        "--network",
        "host",
        "-v",
        &builds,
        &format!("{tag}:latest"),
        "sh",
        "-c",
        // SOURCE_DATE_EPOCH as the host's build had it (Ctx sets 0): it
        // dates the layer's files and the shadow entries useradd writes.
        "cd /work && SOURCE_DATE_EPOCH=0 IMGBUILD_HOME=/builds/store IMGBUILD_REVISION= imgbuild --json build app --locked",
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
    // These packages give the same bytes, but maintainer scripts without
    // /proc may not (systemd's tmpfiles): the keys differ, so a cache shared
    // by runners (chroot) and laptops (namespaces) never mixes them.
    let host_layers = host.layers("app");
    assert_ne!(
        layers.last().unwrap()["key"],
        host_layers.last().unwrap()["key"],
        "one key for a Debian layer made under chroot and under namespaces"
    );
    assert_eq!(inside["sandbox"]["isolation"], "chroot", "{inside:#}");
}

/// `docker run --rm --network none DOCKER_ARGS… TAG` building `stepped` in
/// /work with the store at `store`; the container's mount table is printed
/// first, between marker lines, on stderr.
fn build_in_container(tag: &str, docker_args: &[&str], store: &str) -> common::Run {
    let mut c = Command::new("docker");
    c.args(["run", "--rm", "--network", "none"])
        .args(docker_args)
        .arg(format!("{tag}:latest"))
        .args([
            "sh",
            "-c",
            &format!(
                "echo MOUNTS >&2; cat /proc/self/mountinfo >&2; echo END >&2; cd /work && IMGBUILD_HOME={store} IMGBUILD_REVISION= imgbuild --json build stepped"
            ),
        ]);
    run_command(c)
}

/// The mount options of `point` in the mount table a container printed.
fn mount_options(run: &common::Run, point: &str) -> String {
    let table = run
        .stderr
        .split_once("MOUNTS\n")
        .and_then(|(_, t)| t.split_once("END\n"))
        .map(|(t, _)| t)
        .unwrap_or_else(|| panic!("no mount table: {run}"));
    table
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some(point))
        .and_then(|l| l.split(' ').nth(5))
        .unwrap_or_else(|| panic!("{point} is not mounted: {run}"))
        .to_string()
}

/// The one line imgbuild says what the container allows in.
fn probe_line(run: &common::Run) -> &str {
    run.stderr
        .lines()
        .find(|l| l.starts_with("isolation: "))
        .unwrap_or_else(|| panic!("no probe line: {run}"))
}

/// Where the container would make a layer differ from the same layer made
/// elsewhere (no mknod, no FSETID, a `nodev` store), imgbuild refuses and
/// names the missing capability or mount and the fix; where it cannot run
/// steps at all, it says why without telling root to run as root, or a
/// user to set a sysctl this kernel lacks. Every error names its image.
#[test]
fn a_container_that_would_make_a_different_layer_is_refused() {
    require_docker();
    let cx = Ctx::new();
    cx.busybox_project("tool/work/", APPLETS, STEPPED);
    let (tag, _cleanup) = tool_image(&cx);
    // A directory of the host, bind-mounted as GitLab mounts the build
    // directory: devices can be opened there.
    let bind = builds_dir(&cx);

    // Docker's defaults, the store on the bind mount: built, and the probe
    // says so in one line and in --json.
    let ok = build_in_container(&tag, &["-v", &bind], "/builds/store").success();
    let line = probe_line(&ok);
    assert!(
        line.starts_with("isolation: chroot (root, no namespaces); store on /builds (")
            && line.ends_with(", dev ok); mknod ok; chown ok; setid ok"),
        "{line}"
    );
    let report: serde_json::Value = serde_json::from_str(&ok.stdout).expect("build --json");
    let sandbox = &report["sandbox"];
    assert_eq!(sandbox["isolation"], "chroot", "{report:#}");
    assert_eq!(sandbox["store"]["mount"], "/builds", "{report:#}");
    assert_eq!(
        (&sandbox["mknod"], &sandbox["dev"], &sandbox["setid"]),
        (
            &serde_json::Value::Bool(true),
            &serde_json::Value::Bool(true),
            &serde_json::Value::Bool(true)
        ),
        "{report:#}"
    );

    // Docker's --tmpfs is `nodev` unless told otherwise.
    let nodev = build_in_container(&tag, &["--tmpfs", "/store"], "/store/s").exit(1);
    assert!(mount_options(&nodev, "/store").contains("nodev"), "{nodev}");
    nodev.stderr_has(&[
        "image stepped: its run layer is not built here",
        "the store is on /store (tmpfs), which is mounted `nodev`",
        "IMGBUILD_HOME=",
        "store on /store (tmpfs, nodev)",
    ]);

    // The container's own root filesystem (the default ~/.cache): whatever
    // the storage driver, the probe reads its mount as the kernel has it.
    let own = build_in_container(&tag, &[], "/root/.cache/imgbuild");
    let root_nodev = mount_options(&own, "/").split(',').any(|o| o == "nodev");
    eprintln!(
        "the container's root filesystem is {}: {}",
        if root_nodev { "nodev" } else { "not nodev" },
        probe_line(&own)
    );
    if root_nodev {
        own.exit(1)
            .stderr_has(&["the store is on / (", "mounted `nodev`", "IMGBUILD_HOME="]);
    } else {
        own.success();
    }

    // Capabilities dropped: refused, the capability and the fix named.
    let no_mknod = build_in_container(&tag, &["-v", &bind, "--cap-drop", "MKNOD"], "/builds/s2");
    no_mknod.exit(1).stderr_has(&[
        "image stepped: its run layer is not built here",
        "no CAP_MKNOD",
        "--cap-add MKNOD",
        "mknod not permitted",
    ]);
    let no_fsetid = build_in_container(&tag, &["-v", &bind, "--cap-drop", "FSETID"], "/builds/s3");
    no_fsetid.exit(1).stderr_has(&[
        "image stepped: its run layer is not built here",
        "set-id bits are dropped here",
        "--cap-add FSETID",
        "setid bits dropped",
    ]);

    // Root without any capability: told what it lacks, never to run as root.
    let bare = build_in_container(&tag, &["-v", &bind, "--cap-drop", "ALL"], "/builds/s4").exit(1);
    bare.stderr_has(&[
        "image stepped: run: no way to run commands here",
        "chroot: ",
        "CAP_SYS_CHROOT",
        "--cap-add SYS_CHROOT",
    ]);
    assert!(!bare.stderr.contains("image :"), "{bare}");
    assert!(
        !bare.stderr.to_lowercase().contains("run as root"),
        "{bare}"
    );

    // A normal user under Docker's seccomp profile: unshare's own error,
    // and no sysctl this kernel (the host's) does not have.
    let mine = cx.scratch.join("user-builds");
    fs::create_dir_all(&mine).unwrap();
    fs::set_permissions(&mine, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let user = build_in_container(
        &tag,
        &[
            "--user",
            "1000:1000",
            "-v",
            &format!("{}:/builds", mine.display()),
        ],
        "/builds/store",
    )
    .exit(1);
    user.stderr_has(&[
        "image stepped: run: no way to run commands here",
        "`unshare --user` failed: unshare: ",
        "Operation not permitted",
    ]);
    assert!(!user.stderr.contains("image :"), "{user}");
    for word in user.stderr.split("sysctl ").skip(1) {
        let name = word.split(['=', ' ']).next().unwrap();
        let path = format!("/proc/sys/{}", name.replace('.', "/"));
        assert!(
            Path::new(&path).exists(),
            "the hint names {name}, which this kernel does not have: {user}"
        );
    }
}
