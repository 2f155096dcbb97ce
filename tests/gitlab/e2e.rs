//! End to end, as GitLab runs it: imgbuild's own image, built by imgbuild
//! from ci/image.yaml (with this build's binary) and `docker load`ed, is the
//! job image; `gitlabci-local` runs the generate job of the template
//! ci/imgbuild.gitlab-ci.yml (included by the fixture fleet's
//! .gitlab-ci.yml), then each job of the child pipeline it writes (one job
//! per image, run in `needs:` order) in the local Docker engine as a
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
//! fresh runners again, builds nothing and uploads no blob. Then the
//! scheduled `imgbuild:lock-update` job: with images.lock already up to
//! date it commits and pushes nothing; with a stale one committed it pushes
//! the new lock on its branch, with the push options that make GitLab open
//! a merge request, to a local bare repository standing for the project's
//! (`IMGBUILD_LOCK_REMOTE`).
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

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

/// The fleet repository's `.gitlab-ci.yml`: the template included as the
/// agency includes it (a copy beside it, `include: local:`, since
/// gitlabci-local cannot fetch `include: project:`), the job image named,
/// and one observation added to the generate job: the container's
/// capabilities and seccomp mode.
fn fleet_ci(image: &str) -> String {
    format!(
        r#"include:
  - local: imgbuild.gitlab-ci.yml
variables:
  IMGBUILD_IMAGE: "{image}"
imgbuild:generate:
  before_script:
    - grep -E '^(CapEff|Seccomp):' /proc/self/status
imgbuild:lock-update:
  before_script:
    - grep -E '^(CapEff|Seccomp):' /proc/self/status
"#
    )
}

/// Runs the generated child pipeline as it is (GitLab's `trigger: include:
/// artifact:`), with the same observation added to its jobs' template.
const CHILD_RUN: &str = r#"include:
  - local: imgbuild-pipeline.yml
.imgbuild:
  before_script:
    - grep -E '^(CapEff|Seccomp):' /proc/self/status
"#;

/// Runs job `name` of `config` with gitlabci-local as a runner's default
/// Docker executor would, on a fresh runner: the project's store removed
/// first (GitLab's clean checkout). Returns the job's output.
fn run_job(project: &Path, config: &str, name: &str, env: &[(String, String)]) -> String {
    let _ = fs::remove_dir_all(project.join(".imgbuild"));
    let mut c = Command::new("gitlabci-local");
    c.current_dir(project).args([
        "--no-color",
        "-c",
        config,
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
    c.args(["--", name]);
    let run = run_command(c);
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(
        run.code == 0 && out.contains("Success"),
        "job {name} failed:\n{run}"
    );
    assert!(
        !out.contains(JOB_TOKEN),
        "the job's output shows the token:\n{out}"
    );
    // The job container as a runner's default Docker executor makes it.
    assert!(
        out.contains("CapEff:\t00000000a80425fb") && out.contains("Seccomp:\t2"),
        "job {name} did not run with Docker's default capabilities and seccomp:\n{out}"
    );
    out
}

/// The generated child pipeline's jobs in `needs:` order: (job, its
/// images, the jobs it needs).
fn jobs_in_needs_order(yaml: &str) -> Vec<(String, Vec<String>, Vec<String>)> {
    let docs = yaml_rust2::YamlLoader::load_from_str(yaml)
        .unwrap_or_else(|e| panic!("the generated pipeline is not YAML ({e}):\n{yaml}"));
    let top = docs[0]
        .as_hash()
        .unwrap_or_else(|| panic!("the generated pipeline is not a map:\n{yaml}"));
    let mut jobs = Vec::new();
    for (k, v) in top {
        let name = k.as_str().unwrap_or_default();
        if name.starts_with('.') || name == "stages" {
            continue;
        }
        let images = v["variables"]["IMGBUILD_IMAGES"]
            .as_str()
            .unwrap_or_else(|| panic!("job {name} names no IMGBUILD_IMAGES:\n{yaml}"));
        let needs: Vec<String> = v["needs"]
            .as_vec()
            .map(|n| {
                n.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        jobs.push((
            name.to_string(),
            images.split_whitespace().map(String::from).collect(),
            needs,
        ));
    }
    let mut order: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    while !jobs.is_empty() {
        let ready = jobs
            .iter()
            .position(|(_, _, needs)| needs.iter().all(|n| order.iter().any(|(o, _, _)| o == n)))
            .unwrap_or_else(|| panic!("the generated jobs' needs: form no order:\n{yaml}"));
        order.push(jobs.remove(ready));
    }
    order
}

/// What the job's progress lines say of each of `image`'s layers:
/// `built`, `fetched` (from the registry cache) or `reused`.
fn layer_outcomes<'a>(out: &'a str, image: &str) -> Vec<&'a str> {
    let prefix = format!("{image}: layer ");
    out.lines()
        .filter_map(|l| l.split_once(&prefix).map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_whitespace().nth(1))
        .collect()
}

/// The short manifest digest the job's progress line gives for `image`.
fn short(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    format!("sha256:{}", &hex[..12])
}

fn git(dir: &Path, args: &[&str]) -> String {
    let mut c = Command::new("git");
    c.current_dir(dir).args(args);
    run_command(c).success().stdout.trim().to_string()
}

/// The parent pipeline's generate job, then the child it wrote, job by job
/// in `needs:` order, each on a fresh runner. Returns each image's job
/// output.
fn pipeline(cx: &Ctx, env: &[(String, String)]) -> Vec<(String, String)> {
    let _ = fs::remove_file(cx.path("imgbuild-pipeline.yml"));
    let out = run_job(&cx.root, ".gitlab-ci.yml", "imgbuild:generate", env);
    let yaml = fs::read_to_string(cx.path("imgbuild-pipeline.yml")).unwrap_or_else(|e| {
        panic!("the generate job wrote no imgbuild-pipeline.yml ({e}):\n{out}")
    });
    check_schema(&cx.path("imgbuild-pipeline.yml"));
    let jobs = jobs_in_needs_order(&yaml);
    let built: Vec<&str> = jobs
        .iter()
        .flat_map(|(_, i, _)| i.iter().map(String::as_str))
        .collect();
    let fleet: Vec<&str> = FLEET.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        built, fleet,
        "the child pipeline's images, in needs order:\n{yaml}"
    );
    let mut outputs = Vec::new();
    for (job, images, needs) in &jobs {
        let name = &images[0];
        let parent = FLEET.iter().find(|(n, _)| n == name).unwrap().1;
        let want: Vec<String> = parent.map(|p| format!("build {p}")).into_iter().collect();
        assert_eq!(needs, &want, "{job}'s needs: follow the graph:\n{yaml}");
        outputs.push((
            name.clone(),
            run_job(&cx.root, "child-run.gitlab-ci.yml", job, env),
        ));
    }
    outputs
}

/// The file as GitLab's published CI schema has it.
fn check_schema(file: &Path) {
    let tool = require_tool(
        "check-jsonschema",
        "check-jsonschema (pip install check-jsonschema)",
    );
    let mut c = Command::new(tool);
    c.args(["--builtin-schema", "vendor.gitlab-ci"]).arg(file);
    run_command(c).success();
}

#[test]
fn a_pipeline_in_imgbuilds_own_image_builds_a_fleet_then_rebuilds_nothing() {
    let start = Instant::now();
    require_docker();
    require_gitlabci_local();
    // The job image (its Debian downloads) and the fleet fixture (the
    // root filesystem, the lock) are made at once: both wait mostly on the
    // network and dpkg.
    // (A scope: a failure here still waits for the image, and removes it.)
    let (reg, repo, cx, made) = std::thread::scope(|s| {
        let made = s.spawn(job_image);
        let reg = Registry::htpasswd(JOB_USER, JOB_TOKEN);
        let repo = AptRepo::start(Variant::Good);
        let cx: Ctx = debian_project(&repo, "adds-user, alt-link", MORE);
        cx.write("site/index.html", "<h1>site</h1>\n");
        // The fleet repository as the agency keeps it: images.yaml, the lock
        // and the CI file committed, the template included. (`lock` reads what
        // debian-root holds: built first, in the host's store.)
        cx.run(&["-q", "build", "debian-root"]).success();
        cx.run(&["lock"]).success();
        eprintln!(
            "e2e: the fleet fixture is locked at {:.1} s",
            start.elapsed().as_secs_f64()
        );
        (reg, repo, cx, made.join())
    });
    let (image, _loaded, built) = made.expect("the job image is made");
    let size: u64 = built
        .layers(image.trim_end_matches(":latest"))
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    eprintln!(
        "e2e: the job image is {:.1} MiB compressed, ready at {:.1} s",
        size as f64 / 1048576.0,
        start.elapsed().as_secs_f64()
    );
    fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/ci/imgbuild.gitlab-ci.yml"),
        cx.path("imgbuild.gitlab-ci.yml"),
    )
    .unwrap();
    cx.write(".gitlab-ci.yml", fleet_ci(&image));
    cx.write("child-run.gitlab-ci.yml", CHILD_RUN);
    // The root filesystem tarball stands for a file the fleet keeps
    // elsewhere: out of git, it saves hashing it.
    cx.write(
        ".gitignore",
        "/debian.tar\n/.imgbuild/\n/imgbuild-pipeline.yml\n/lock-remote.git/\n",
    );
    git(&cx.root, &["init", "-q", "-b", "main"]);
    git(&cx.root, &["add", "-A"]);
    git(
        &cx.root,
        &[
            "-c",
            "user.name=fleet",
            "-c",
            "user.email=fleet@example.org",
            "commit",
            "-q",
            "-m",
            "fleet",
        ],
    );
    let head = git(&cx.root, &["rev-parse", "HEAD"]);

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
        ("CI_PIPELINE_SOURCE".into(), "push".into()),
        ("CI_COMMIT_BRANCH".into(), "main".into()),
        ("CI_DEFAULT_BRANCH".into(), "main".into()),
        // A branch's first pipeline: everything is built.
        ("CI_COMMIT_BEFORE_SHA".into(), "0".repeat(40)),
    ];

    eprintln!(
        "e2e: fixture ready at {:.1} s",
        start.elapsed().as_secs_f64()
    );
    // Pipeline 1: each job builds its image and fetches its parents'.
    let mut first = Vec::new();
    for (name, out) in pipeline(&cx, &env) {
        let own = layer_outcomes(&out, &name);
        assert!(
            !own.is_empty() && own.iter().all(|w| *w == "built"),
            "build {name} builds its own layers: {own:?}\n{out}"
        );
        let mut above = FLEET.iter().find(|(n, _)| *n == name).unwrap().1;
        while let Some(p) = above {
            let theirs = layer_outcomes(&out, p);
            assert!(
                !theirs.is_empty() && theirs.iter().all(|w| *w == "fetched"),
                "build {name} built {p}'s layers instead of fetching what build {p} pushed: {theirs:?}\n{out}"
            );
            above = FLEET.iter().find(|(n, _)| *n == p).and_then(|(_, pp)| *pp);
        }
        if name == "app" {
            assert!(
                out.contains("chroot isolation"),
                "app's steps did not run under chroot:\n{out}"
            );
        }
        // Tagged with the short commit and the branch's slug; `latest` on
        // the default branch.
        let repo_name = format!("group/fleet/{name}");
        let digest = reg
            .digest(&repo_name, "main")
            .unwrap_or_else(|| panic!("{name} not pushed as :main\n{out}"));
        let tags = reg.tags(&repo_name);
        assert!(
            tags.iter()
                .any(|t| t.len() >= 7 && head.starts_with(t.as_str())),
            "{name} not tagged with the short commit of {head}: {tags:?}"
        );
        for tag in &tags {
            assert_eq!(
                reg.digest(&repo_name, tag).as_ref(),
                Some(&digest),
                "{name}:{tag}"
            );
        }
        assert!(tags.iter().any(|t| t == "latest"), "{name}: {tags:?}");
        assert!(
            out.contains(&format!("{name}: built {}", short(&digest))),
            "build {name}'s output does not name the pushed digest {digest}:\n{out}"
        );
        first.push(digest);
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
    for ((name, out), digest) in pipeline(&cx, &env).into_iter().zip(&first) {
        assert_eq!(
            reg.digest(&format!("group/fleet/{name}"), "main").as_ref(),
            Some(digest),
            "{name}: pipeline 2's digest is pipeline 1's"
        );
        assert!(
            out.contains(&short(digest)),
            "build {name}'s output does not name {digest}:\n{out}"
        );
        let mut above = Some(name.as_str());
        while let Some(image) = above {
            let layers = layer_outcomes(&out, image);
            assert!(
                !layers.is_empty() && layers.iter().all(|w| *w == "fetched"),
                "pipeline 2, build {name}: {image}'s layers not all fetched from the registry: {layers:?}\n{out}"
            );
            above = FLEET
                .iter()
                .find(|(n, _)| *n == image)
                .and_then(|(_, p)| *p);
        }
    }
    let log = reg.access_log();
    let again = uploads(&log[before..]);
    assert!(again.is_empty(), "pipeline 2 uploaded blobs: {again:?}");
    eprintln!(
        "e2e: pipeline 2 done at {:.1} s",
        start.elapsed().as_secs_f64()
    );

    lock_update(&cx, &env);
    eprintln!("e2e: {:.1} s in all", start.elapsed().as_secs_f64());
}

/// The branch the lock-update job pushes to (the template's default).
const LOCK_BRANCH: &str = "imgbuild/lock-update";

/// The scheduled lock-update job, twice: images.lock up to date (nothing
/// committed, nothing pushed), then stale (the new lock committed on
/// LOCK_BRANCH and pushed with GitLab's merge request push options).
fn lock_update(cx: &Ctx, env: &[(String, String)]) {
    // The project's repository as the job sees it: a bare one in the
    // build directory (a path the container has), which takes push
    // options, as GitLab does, and keeps them.
    let remote = cx.path("lock-remote.git");
    git(
        &cx.root,
        &["init", "-q", "--bare", remote.to_str().unwrap()],
    );
    git(&remote, &["config", "receive.advertisePushOptions", "true"]);
    let hook = remote.join("hooks/post-receive");
    fs::write(
        &hook,
        "#!/bin/sh\nenv | sed -n 's/^GIT_PUSH_OPTION_[0-9]*=//p' >> push-options\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    let mut env = env.to_vec();
    env.extend([
        ("CI_PIPELINE_SOURCE".to_string(), "schedule".to_string()),
        ("IMGBUILD_LOCK_UPDATE".into(), "1".into()),
        ("IMGBUILD_LOCK_REMOTE".into(), "./lock-remote.git".into()),
        ("IMGBUILD_LOCK_TOKEN".into(), "glpat-lock-token-8Hq2".into()),
        ("CI_PIPELINE_ID".into(), "4242".into()),
    ]);
    let refs = || git(&remote, &["for-each-ref", "--format=%(refname)"]);

    // Up to date: nothing to commit.
    let out = run_job(&cx.root, ".gitlab-ci.yml", "imgbuild:lock-update", &env);
    assert!(
        out.contains("images.lock: unchanged, nothing to commit"),
        "the lock-update job did not find images.lock unchanged:\n{out}"
    );
    assert_eq!(refs(), "", "an unchanged lock pushed something:\n{out}");
    assert!(!remote.join("push-options").exists());

    // Stale: a package pinned at a version the repository no longer has.
    let fresh = fs::read_to_string(cx.path("images.lock")).unwrap();
    let mut lock: serde_json::Value = serde_json::from_str(&fresh).unwrap();
    let packages = lock["images"]["app"]["packages"]
        .as_array_mut()
        .unwrap_or_else(|| panic!("images.lock pins no packages for app:\n{fresh}"));
    packages[0]["version"] = "0.0-0".into();
    let stale = serde_json::to_string_pretty(&lock).unwrap() + "\n";
    cx.write("images.lock", &stale);
    git(&cx.root, &["add", "images.lock"]);
    git(
        &cx.root,
        &[
            "-c",
            "user.name=fleet",
            "-c",
            "user.email=fleet@example.org",
            "commit",
            "-q",
            "-m",
            "images.lock: stale",
        ],
    );
    let main = git(&cx.root, &["rev-parse", "HEAD"]);
    let out = run_job(&cx.root, ".gitlab-ci.yml", "imgbuild:lock-update", &env);
    assert!(
        !out.contains("glpat-lock-token-8Hq2"),
        "the job's output shows the token:\n{out}"
    );
    assert_eq!(
        refs(),
        format!("refs/heads/{LOCK_BRANCH}"),
        "the new lock was not pushed on its branch:\n{out}"
    );
    let pushed = git(&remote, &["rev-parse", LOCK_BRANCH]);
    assert_eq!(
        git(&remote, &["rev-parse", &format!("{pushed}^")]),
        main,
        "the lock's commit is not on the scheduled pipeline's commit"
    );
    assert_eq!(
        git(
            &remote,
            &["diff-tree", "--no-commit-id", "--name-only", "-r", &pushed]
        ),
        "images.lock",
        "the lock's commit changes more than images.lock"
    );
    let new_lock = git(&remote, &["show", &format!("{pushed}:images.lock")]);
    assert_eq!(
        new_lock,
        fresh.trim_end(),
        "the pushed images.lock is not the one `lock --update` resolves"
    );
    let options = fs::read_to_string(remote.join("push-options")).unwrap_or_default();
    for want in [
        "merge_request.create",
        "merge_request.target=main",
        "merge_request.remove_source_branch",
    ] {
        assert!(
            options.lines().any(|l| l == want),
            "push option {want} missing: {options:?}"
        );
    }
}
