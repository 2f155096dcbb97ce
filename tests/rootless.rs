//! imgbuild as a normal user where unprivileged user namespaces are
//! allowed: it runs itself in a user namespace of its own (with the user's
//! subordinate ids when /etc/subuid has them), steps run as root inside
//! and can chown, and the image comes out as root's build makes it.
mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::aptrepo::{AptRepo, Variant, debian_project};
use common::{Ctx, run_command, validate_layout};

const USER: &str = "imgbuild-rootless";

/// The test's own user, with subordinate ids; its uid and gid. Made once
/// per test binary: this file's tests run side by side, and two `useradd`s
/// of one name racing on a fresh machine left a user whose uid had changed
/// under the first test (its steps' chown then failed).
fn test_user() -> (u32, u32) {
    static USER: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    *USER.get_or_init(make_test_user)
}

fn make_test_user() -> (u32, u32) {
    let id = |flag: &str| {
        Command::new("id")
            .args([flag, USER])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
    };
    if id("-u").is_none() {
        let mut c = Command::new("useradd");
        c.args(["--no-create-home", "--shell", "/bin/sh", USER]);
        // Another test binary may have made it in the meantime.
        let _ = c.status();
    }
    let subuid = fs::read_to_string("/etc/subuid").unwrap_or_default();
    if !subuid.lines().any(|l| l.starts_with(&format!("{USER}:"))) {
        let mut c = Command::new("usermod");
        c.args([
            "--add-subuids",
            "300000-365535",
            "--add-subgids",
            "300000-365535",
            USER,
        ]);
        run_command(c).success();
    }
    (id("-u").unwrap(), id("-g").unwrap())
}

fn open_up(cx: &Ctx) {
    // The test's temporary tree is the test runner's; the user must reach it.
    let top = cx.root.parent().unwrap();
    fs::set_permissions(top, fs::Permissions::from_mode(0o755)).unwrap();
    for d in [&cx.root, &cx.home, &cx.scratch] {
        fs::create_dir_all(d).unwrap();
        let mut c = Command::new("chmod");
        c.args(["-R", "a+rwX"]).arg(d);
        run_command(c).success();
    }
}

/// Whether the test can make its user: it needs root. CI runs the tests as
/// root, so there a test that cannot fails, naming why.
fn can_make_user() -> bool {
    let root = fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "this test makes a user with subordinate ids, which needs root; run the tests as root on CI"
        );
        eprintln!("skipped: making a test user needs root");
    }
    root
}

/// A wrapper that runs `then` (and the binary) where the machine is called
/// `leaky.example.org`, so that a leak of its name shows whatever this
/// machine's name is.
fn leaky(then: &[String]) -> Vec<String> {
    let mut w: Vec<String> = ["unshare", "--uts", "sh", "-c"].map(String::from).to_vec();
    w.push("hostname leaky.example.org && exec \"$@\"".into());
    w.push("sh".into());
    w.extend_from_slice(then);
    w
}

/// Runs as the test user, without supplementary groups.
fn as_user(uid: u32, gid: u32) -> Vec<String> {
    vec![
        "setpriv".into(),
        format!("--reuid={uid}"),
        format!("--regid={gid}"),
        "--clear-groups".into(),
        "--".into(),
    ]
}

/// The binary copied where the user can reach it: the checkout may sit
/// below a directory only its owner can enter (a `mktemp -d` clone).
fn user_binary(cx: &mut Ctx) {
    let bin = cx.scratch.join("bin/imgbuild");
    fs::create_dir_all(bin.parent().unwrap()).unwrap();
    fs::copy(&cx.bin, &bin).unwrap();
    cx.bin = bin;
}

#[test]
fn a_normal_user_builds_in_a_user_namespace_as_root_would() {
    if !can_make_user() {
        return;
    }
    let (uid, gid) = test_user();
    let mut cx = Ctx::new();
    cx.busybox_project(
        "",
        &[
            "sh", "echo", "rm", "chmod", "chown", "cat", "id", "hostname",
        ],
        concat!(
            "  stepped:\n",
            "    from: base\n",
            "    run:\n",
            "      - echo \"I am $(id -u)\"; echo hi > /srv/hello && chown 33:33 /srv/hello\n",
            "      - chmod 600 /srv/hello && rm /etc/motd\n",
            // What exim's and debconf's scripts ask; the build machine's
            // name must not be the answer (issue 13, item 9).
            "      - echo \"$(hostname) $(cat /proc/sys/kernel/hostname)\" > /srv/name\n",
            "    test: [\"cat /srv/hello\"]\n",
        ),
    );
    // Both builds run where the machine is called `leaky.example.org`.
    cx.wrapper = leaky(&[]);
    let root_out = cx.scratch.join("oci-root");
    cx.build(&["stepped", "-o", &format!("oci:{}", root_out.display())]);
    let as_root = cx.build(&["stepped"]).manifest("stepped");
    let name = validate_layout(&root_out, "stepped").layers[2]
        .entry("srv/name")
        .data;
    assert_eq!(String::from_utf8_lossy(&name), "localhost localhost\n");
    cx.home = cx.scratch.join("user-home");
    user_binary(&mut cx);
    open_up(&cx);
    cx.wrapper = leaky(&as_user(uid, gid));
    let user_out = cx.scratch.join("oci-user");
    let run = cx
        .run(&[
            "build",
            "stepped",
            "-o",
            &format!("oci:{}", user_out.display()),
        ])
        .success();
    run.stderr_has(&[
        "stepped: running steps with userns isolation",
        "stepped | I am 0",
        "stepped: running its tests",
    ]);
    let name = validate_layout(&user_out, "stepped").layers[2]
        .entry("srv/name")
        .data;
    assert_eq!(
        String::from_utf8_lossy(&name),
        "localhost localhost\n",
        "under userns"
    );
    let as_user = cx.build(&["stepped"]).manifest("stepped");
    assert_eq!(as_user, as_root, "the user's build differs from root's");
    // `imgbuild run` and gc work there too, and gc can remove what steps
    // gave to other ids.
    let id = cx.run(&["run", "stepped", "--", "id", "-u"]).success();
    assert_eq!(id.stdout.trim(), "0");
    fs::write(cx.path("images.yaml"), "images: {}\n").unwrap();
    cx.run(&["gc"]).success();
    let left = fs::read_dir(cx.home.join("rootfs")).map_or(0, |d| d.count());
    assert_eq!(left, 0, "unpacked root filesystems left after gc");
}

/// A Debian layer (packages whose scripts add a user and chown to it, over
/// a trixie minbase) and a step on it come out of a normal user's build bit
/// for bit as out of root's, where the machine has a name of its own
/// (issue 13, item 9).
#[test]
fn a_normal_users_debian_layer_equals_roots() {
    if !can_make_user() {
        return;
    }
    let (uid, gid) = test_user();
    let repo = AptRepo::start(Variant::Good);
    let mut cx = debian_project(
        &repo,
        "adds-user, alt-link, needs-mta",
        "    run:\n      - cat /proc/sys/kernel/hostname > /etc/built-on\n",
    );
    cx.build(&["debian-root"]);
    cx.run(&["lock"]).success();
    cx.wrapper = leaky(&[]);
    let root_out = cx.scratch.join("oci-root");
    let as_root = cx.build(&["app", "-o", &format!("oci:{}", root_out.display())]);
    let image = validate_layout(&root_out, "app");
    let built_on = image.layers.last().unwrap().entry("etc/built-on").data;
    assert_eq!(built_on, b"localhost\n");
    // Root's trees are not needed any more: room for the user's.
    fs::remove_dir_all(&cx.home).unwrap();
    fs::remove_dir_all(&root_out).unwrap();
    cx.home = cx.scratch.join("user-home");
    user_binary(&mut cx);
    open_up(&cx);
    cx.wrapper = leaky(&as_user(uid, gid));
    let as_user = cx.build(&["app"]);
    let key_and_digest = |r: &common::Report, name: &str| -> Vec<(String, String)> {
        r.layer_summary(name)
            .into_iter()
            .map(|(k, d, _)| (k, d))
            .collect()
    };
    for name in ["debian-root", "app"] {
        assert_eq!(
            key_and_digest(&as_user, name),
            key_and_digest(&as_root, name),
            "{name}: the user's layers differ from root's"
        );
        assert_eq!(as_user.manifest(name), as_root.manifest(name), "{name}");
    }
}
