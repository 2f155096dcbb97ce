//! `run:` steps in a real Debian root filesystem, made by mmdebstrap from
//! the Debian archive: what steps leave round-trips through umoci, the same
//! in every isolation this machine allows, and again in a fresh store.
mod common;

use std::fs;
use std::process::Command;

use common::{Ctx, debian_tarball, require_tool, run_command, umoci_unpack, validate_layout};

/// Every path under /srv, /etc/skel and a few files of /etc, with type,
/// mode, owner and size, by GNU find (the image's own, or the host's).
const LISTING: &str = "cd \"$1\" && find srv etc/passwd etc/group etc/skel usr/share/doc -printf '%p %y %m %U:%G %s %l\\n' 2>/dev/null | LC_ALL=C sort";

fn project(tar: &std::path::Path) -> Ctx {
    let cx = Ctx::new();
    fs::copy(tar, cx.path("debian.tar")).unwrap();
    cx.write("listing.sh", LISTING);
    cx.yaml(concat!(
        "images:\n",
        "  debian:\n",
        "    from: {rootfs: debian.tar}\n",
        "  app:\n",
        "    from: debian\n",
        "    layers: [{src: listing.sh, dest: /usr/local/bin/listing}]\n",
        "    run:\n",
        "      - groupadd --gid 990 app && useradd --uid 990 --gid 990 --home-dir /srv/app app\n",
        "      - mkdir -p /srv/app/data && echo hi > /srv/app/data/f && chown -R app:app /srv/app\n",
        "      - chmod 750 /srv/app && chmod 4755 /srv/app/data/f && ln -s data/f /srv/app/link\n",
        "      - rm -rf /usr/share/doc && mkdir /usr/share/doc && echo new > /usr/share/doc/README\n",
        "      - sh /usr/local/bin/listing /\n",
    ));
    cx
}

#[test]
fn steps_in_a_debian_root_filesystem_round_trip() {
    require_tool("umoci", "umoci");
    let tar = debian_tarball();
    let mut digests = Vec::new();
    for iso in ["namespace", "chroot"] {
        let cx = project(&tar);
        let out = cx.scratch.join("oci");
        let run = cx
            .run(&[
                "build",
                "app",
                "--isolation",
                iso,
                "-o",
                &format!("oci:{}", out.display()),
            ])
            .success();
        let mut left = run.step_output("app");
        left.retain(|l| !l.starts_with("useradd"));
        assert!(
            left.iter().any(|l| l == "srv/app/data/f f 4755 990:990 3 "),
            "{iso}: {left:?}"
        );
        let image = validate_layout(&out, "app");
        let layer = image.layers.last().unwrap();
        // The old docs are all gone: one opaque marker, not thousands of
        // whiteouts.
        layer.entry("usr/share/doc/.wh..wh..opq");
        assert!(layer.entries().len() < 60, "{}", layer.entries().len());
        let rootfs = umoci_unpack(&out, "app", &cx.scratch.join("bundle"));
        let mut list = Command::new("sh");
        list.args(["-c", LISTING, "listing"]).arg(rootfs);
        let unpacked = run_command(list).success().stdout_lines();
        assert_eq!(
            unpacked, left,
            "{iso}: umoci's tree differs from the steps'"
        );
        let again = cx
            .build_in_fresh_store(&["app", "--isolation", iso])
            .manifest("app");
        digests.push(again);
    }
    digests.dedup();
    assert_eq!(digests.len(), 1, "namespace and chroot gave {digests:?}");
}
