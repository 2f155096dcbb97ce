//! End to end, as GitLab runs it: imgbuild's own image, built by imgbuild
//! from ci/image.yaml (with this build's binary) and `docker load`ed, is the
//! job image; `gitlabci-local` runs each job of a child pipeline (one job
//! per image, `needs:` following the graph) in the local Docker engine as a
//! runner's default Docker executor does: not privileged (`--privileged
//! false`: Docker's default capabilities and seccomp), the project
//! bind-mounted at /builds/NAME, the container's own root filesystem
//! `nodev` (fuse-overlayfs), so the store sits on the build directory.
//!
//! The job containers use the host's network: the registry (Basic auth,
//! htpasswd) and the signed apt repository listen on the host's loopback,
//! the only addresses tests here may serve on.
//!
//! Every job is a fresh runner: the store on the build directory is
//! removed before each job, as GitLab's clean checkout removes it.
//! Pipeline 1 builds and pushes the fixture fleet (a Debian root, a Debian
//! layer from the test repository with a `run:` step, a file layer); each
//! job fetches its parents' layers from the registry cache. Pipeline 2, on
//! fresh runners again, builds nothing and uploads no blob.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

use super::{JOB_TOKEN, JOB_USER, uploads};
use crate::common::aptrepo::{AptRepo, Variant, debian_project};
use crate::common::registry::Registry;
use crate::common::{
    Ctx, DockerImages, FOREIGN_ENV, Report, require_docker, require_tool, run_command,
};

/// The images of the fixture fleet, parents first, and each one's parent.
const FLEET: &[(&str, Option<&str>)] = &[
    ("debian-root", None),
    ("app", Some("debian-root")),
    ("site", Some("app")),
];

/// `app`'s `run:` step and the `site` image, after debian_project's `app`.
const MORE: &str = concat!(
    "    run:\n",
    "      - test -x /usr/bin/alt-tool && id appuser > /etc/app-user\n",
    "  site:\n",
    "    from: app\n",
    "    layers:\n",
    "      - {src: site, dest: /srv/site}\n",
);

/// The child pipeline `imgbuild ci gitlab` makes, written by hand: one job
/// per image, `needs:` following the graph, the registry layer cache in
/// the project's repository, pushes to `$CI_REGISTRY_IMAGE`.
pub(super) fn child_pipeline(image: &str) -> String {
    let mut y = format!(
        r#"# One job per image; needs: follows the graph.
stages: [build]
variables:
  IMGBUILD_HOME: "$CI_PROJECT_DIR/.imgbuild"
  IMGBUILD_CACHE_REPO: "$CI_REGISTRY_IMAGE/cache"
  IMGBUILD_REVISION: ""
  SOURCE_DATE_EPOCH: "0"
.image:
  stage: build
  image: {image}
  script:
    - grep -E '^(CapEff|Seccomp):' /proc/self/status
    - mkdir -p out
    - imgbuild --json build "$IMAGE" --push > "out/$IMAGE.json"
"#
    );
    for (name, parent) in FLEET {
        y.push_str(&format!(
            "image-{name}:\n  extends: .image\n  variables: {{IMAGE: {name}}}\n"
        ));
        if let Some(p) = parent {
            y.push_str(&format!("  needs: [image-{p}]\n"));
        }
    }
    y
}

/// gitlabci-local, or a failure that says how to get it.
fn require_gitlabci_local() {
    let found = Command::new("gitlabci-local")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "gitlabci-local is not installed, and this test runs GitLab jobs with it: \
         pip install gitlabci-local (ci/setup installs it for CI)"
    );
}

/// imgbuild's own image from ci/image.yaml, with this build's binary
/// (stripped) as ci/image does with the release one, loaded into Docker as
/// `TAG:latest`. Its store is kept under CARGO_TARGET_TMPDIR: the Debian
/// packages are downloaded once per target directory.
fn job_image() -> (String, DockerImages, Report) {
    require_tool("strip", "binutils");
    let mut cx = Ctx::new();
    cx.home = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gitlab-job-image-store");
    fs::create_dir_all(&cx.home).unwrap();
    let tag = format!("imgbuild-job-{}", std::process::id());
    let yaml = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/ci/image.yaml"))
        .expect("ci/image.yaml");
    assert!(
        yaml.contains("\n  imgbuild:\n"),
        "ci/image.yaml names no image imgbuild"
    );
    cx.yaml(&yaml.replace("\n  imgbuild:\n", &format!("\n  {tag}:\n")));
    cx.mkdir("dist");
    let mut strip = Command::new("strip");
    strip
        .arg("-o")
        .arg(cx.path("dist/imgbuild"))
        .arg(env!("CARGO_BIN_EXE_imgbuild"));
    run_command(strip).success();
    let archive = cx.scratch.join("job-image.tar");
    let report = cx.build(&[&tag, "-o", &format!("docker-archive:{}", archive.display())]);
    let mut load = Command::new("docker");
    load.args(["load", "-q", "-i"]).arg(&archive);
    run_command(load).success();
    let guard = DockerImages(vec![format!("{tag}:latest")]);
    (format!("{tag}:latest"), guard, report)
}

/// Runs one job of `pipeline` with gitlabci-local on a fresh runner: the
/// project's store removed first. Returns its output and its build report.
fn run_job(
    project: &Path,
    pipeline: &str,
    name: &str,
    env: &[(String, String)],
) -> (String, Report) {
    let _ = fs::remove_dir_all(project.join(".imgbuild"));
    let _ = fs::remove_file(project.join(format!("out/{name}.json")));
    let mut c = Command::new("gitlabci-local");
    c.current_dir(project).args([
        "--no-color",
        "-c",
        pipeline,
        "--privileged",
        "false",
        "-n",
        "host",
        "-R",
    ]);
    for k in FOREIGN_ENV {
        c.env_remove(k);
    }
    for (k, v) in env {
        // `-e NAME` passes the variable from gitlabci-local's environment:
        // the secret stays off its command line.
        c.env(k, v).args(["-e", k]);
    }
    c.args(["--", &format!("image-{name}")]);
    let run = run_command(c);
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(
        run.code == 0 && out.contains("Success"),
        "job image-{name} failed:\n{run}"
    );
    assert!(
        !out.contains(JOB_TOKEN),
        "the job's output shows the token:\n{out}"
    );
    // The job container as a runner's default Docker executor makes it.
    assert!(
        out.contains("CapEff:\t00000000a80425fb") && out.contains("Seccomp:\t2"),
        "the job did not run with Docker's default capabilities and seccomp:\n{out}"
    );
    let json = fs::read_to_string(project.join(format!("out/{name}.json")))
        .unwrap_or_else(|e| panic!("image-{name} wrote no report ({e}):\n{out}"));
    let report: Value = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("image-{name}'s report is not JSON ({e}): {json}"));
    (out, Report(report))
}

#[test]
fn a_pipeline_in_imgbuilds_own_image_builds_a_fleet_then_rebuilds_nothing() {
    let start = Instant::now();
    require_docker();
    require_gitlabci_local();
    let (image, _loaded, built) = job_image();
    let size: u64 = built
        .layers(image.trim_end_matches(":latest"))
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    eprintln!(
        "e2e: the job image (debug binary) is {:.1} MiB compressed, made in {:.1} s",
        size as f64 / 1048576.0,
        start.elapsed().as_secs_f64()
    );

    let reg = Registry::htpasswd(JOB_USER, JOB_TOKEN);
    let repo = AptRepo::start(Variant::Good);
    let cx: Ctx = debian_project(&repo, "adds-user, alt-link", MORE);
    cx.write("site/index.html", "<h1>site</h1>\n");
    cx.write("child.gitlab-ci.yml", child_pipeline(&image));

    let host_reg = reg.host();
    let env: Vec<(String, String)> = vec![
        ("CI_REGISTRY".into(), host_reg.clone()),
        (
            "CI_REGISTRY_IMAGE".into(),
            format!("{host_reg}/group/fleet"),
        ),
        ("CI_REGISTRY_USER".into(), JOB_USER.into()),
        ("CI_REGISTRY_PASSWORD".into(), JOB_TOKEN.into()),
        ("CI_JOB_TOKEN".into(), JOB_TOKEN.into()),
    ];

    eprintln!(
        "e2e: fixture ready at {:.1} s",
        start.elapsed().as_secs_f64()
    );
    // Pipeline 1: each job builds its image and fetches its parents'.
    let mut first = Vec::new();
    for (name, parent) in FLEET {
        let (out, report) = run_job(&cx.root, "child.gitlab-ci.yml", name, &env);
        for l in report.layers(name) {
            assert_eq!(
                l["built"], true,
                "image-{name} builds its own layer: {l}\n{out}"
            );
        }
        let mut above = *parent;
        while let Some(p) = above {
            for l in report.layers(p) {
                assert!(
                    l["built"] == false && l["fetched"] == true,
                    "image-{name} built {p}'s layer instead of fetching what image-{p} pushed: {l}\n{out}"
                );
            }
            above = FLEET.iter().find(|(n, _)| *n == p).and_then(|(_, pp)| *pp);
        }
        if *name == "app" {
            assert!(
                out.contains("chroot isolation"),
                "app's steps did not run under chroot:\n{out}"
            );
        }
        assert_eq!(
            reg.digest(&format!("group/fleet/{name}"), "latest"),
            Some(report.manifest(name)),
            "{name} pushed"
        );
        first.push(report.manifest(name));
    }
    assert!(
        repo.deb_fetches() > 0,
        "no job fetched a .deb from the repository"
    );

    eprintln!(
        "e2e: pipeline 1 done at {:.1} s",
        start.elapsed().as_secs_f64()
    );
    // Pipeline 2 on fresh runners: no blob uploaded, every layer fetched.
    let before = reg.access_log().len();
    for ((name, _), digest) in FLEET.iter().zip(&first) {
        let (out, report) = run_job(&cx.root, "child.gitlab-ci.yml", name, &env);
        assert_eq!(
            &report.manifest(name),
            digest,
            "{name}: pipeline 2's digest is pipeline 1's"
        );
        for image in report.names() {
            for l in report.layers(&image) {
                assert!(
                    l["built"] == false && l["fetched"] == true,
                    "pipeline 2, image-{name}: {image}'s layer not fetched from the registry: {l}\n{out}"
                );
            }
        }
    }
    let log = reg.access_log();
    let again = uploads(&log[before..]);
    assert!(again.is_empty(), "pipeline 2 uploaded blobs: {again:?}");
    eprintln!("e2e: {:.1} s in all", start.elapsed().as_secs_f64());
}
