//! imgbuild as GitLab CI runs it, against the real registry (CNCF
//! distribution, run by `common::registry`):
//!
//! - a fleet spread over jobs, one image per job, each job a fresh runner
//!   (an empty store): a job fetches what its parents' jobs pushed through
//!   the registry layer cache instead of building it, and two jobs racing
//!   on the same layer both succeed with the same digest;
//! - GitLab's credentials: the job's `CI_REGISTRY*` variables push to the
//!   project's repository and pull a parent from another project that the
//!   job token's scope allows (a token registry whose policy is that scope),
//!   and `DOCKER_AUTH_CONFIG` (a CI/CD variable: the JSON, or a File
//!   variable's path) pushes to a second registry;
//! - the end-to-end run (`e2e` below): imgbuild's own image built from
//!   ci/image.yaml, `docker load`ed, and GitLab jobs run in it by
//!   `gitlabci-local` as a runner's default Docker executor runs them.
mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;

use common::registry::{Access, Registry, TokenOptions};
use common::{Ctx, FOREIGN_ENV, Report, Run, run_command};

#[path = "gitlab/e2e.rs"]
mod e2e;

/// GitLab's job credentials: `CI_REGISTRY_USER` is `gitlab-ci-token`, its
/// password the job token.
const JOB_USER: &str = "gitlab-ci-token";
const JOB_TOKEN: &str = "glcbt-job-token-4Xq9";

/// The applets the busybox base needs for `run:` steps.
const APPLETS: &[&str] = &["sh", "echo", "cat", "mkdir", "rm", "ls", "true"];

/// base (busybox) ← stepped (a `run:` layer) ← app (a file layer).
const FLEET: &str = concat!(
    "  stepped:\n",
    "    from: base\n",
    "    run:\n",
    "      - mkdir -p /srv && echo stepped > /srv/stepped.txt\n",
    "  app:\n",
    "    from: stepped\n",
    "    layers:\n",
    "      - {src: app, dest: /srv/app}\n",
);

fn fleet() -> Ctx {
    let cx = Ctx::new().with_epoch(1_700_000_000);
    cx.busybox_project("", APPLETS, FLEET);
    cx.write("app/hello.txt", "hello\n");
    cx
}

/// imgbuild in a GitLab job: the machine's credentials and registry
/// variables removed, `HOME` and `DOCKER_CONFIG` empty, then `env`.
fn job(cx: &Ctx, home: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = cx.command(args);
    for k in FOREIGN_ENV {
        c.env_remove(k);
    }
    let empty = cx.scratch.join("empty-home");
    fs::create_dir_all(&empty).unwrap();
    c.env("HOME", &empty)
        .env("DOCKER_CONFIG", &empty)
        .env("IMGBUILD_HOME", home);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// The job's variables as GitLab sets them for the project `group/fleet`
/// on `registry`, with the layer cache in the project's `cache` repository.
fn ci_env(registry: &str) -> Vec<(String, String)> {
    vec![
        ("CI".into(), "true".into()),
        ("CI_REGISTRY".into(), registry.into()),
        (
            "CI_REGISTRY_IMAGE".into(),
            format!("{registry}/group/fleet"),
        ),
        ("CI_REGISTRY_USER".into(), JOB_USER.into()),
        ("CI_REGISTRY_PASSWORD".into(), JOB_TOKEN.into()),
        ("CI_JOB_TOKEN".into(), JOB_TOKEN.into()),
        (
            "IMGBUILD_CACHE_REPO".into(),
            format!("{registry}/group/fleet/cache"),
        ),
    ]
}

fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// `build NAME --push --json` as the job of one image does, in a store of
/// its own (a fresh runner).
fn image_job(cx: &Ctx, store: &str, name: &str, env: &[(String, String)]) -> Report {
    let home = cx.scratch.join(store);
    let c = job(
        cx,
        &home,
        &["--json", "-q", "build", name, "--push"],
        &pairs(env),
    );
    let run = run_command(c).success();
    assert_no_secret(&run, JOB_TOKEN);
    Report(run.json())
}

fn assert_no_secret(run: &Run, secret: &str) {
    assert!(
        !run.stdout.contains(secret) && !run.stderr.contains(secret),
        "the output shows a credential: {run}"
    );
}

/// Completed blob uploads in these log entries.
fn uploads(log: &[Access]) -> Vec<&Access> {
    log.iter()
        .filter(|a| a.method == "PUT" && a.status == 201 && a.target.contains("/blobs/uploads/"))
        .collect()
}

#[test]
fn each_job_fetches_what_its_parents_jobs_pushed() {
    let reg = Registry::htpasswd(JOB_USER, JOB_TOKEN);
    let cx = fleet();
    let env = ci_env(&reg.host());
    // The whole fleet in one store, without a registry: the digests to get.
    let whole = cx.build(&["--all"]);

    // The pipeline: one job per image, parents first, each on a fresh runner.
    let base = image_job(&cx, "runner-base", "base", &env);
    assert!(base.layers("base").iter().all(|l| l["built"] == true));
    let stepped = image_job(&cx, "runner-stepped", "stepped", &env);
    let app = image_job(&cx, "runner-app", "app", &env);
    for (report, parents, own) in [
        (&stepped, &["base"][..], "stepped"),
        (&app, &["base", "stepped"][..], "app"),
    ] {
        for parent in parents {
            for l in report.layers(parent) {
                assert!(
                    l["built"] == false && l["fetched"] == true,
                    "{own}'s job built its parent {parent}'s layer instead of fetching it: {l}"
                );
            }
        }
        for l in report.layers(own) {
            assert_eq!(l["built"], true, "{own}'s job builds its own layer: {l}");
        }
    }
    for (report, name) in [(&base, "base"), (&stepped, "stepped"), (&app, "app")] {
        assert_eq!(report.manifest(name), whole.manifest(name), "{name}");
        assert_eq!(
            reg.digest(&format!("group/fleet/{name}"), "latest"),
            Some(whole.manifest(name)),
            "{name} pushed by its job"
        );
    }

    // The same pipeline again on fresh runners: nothing is built, no blob
    // is uploaded (each is in the registry already, or mounted).
    let before = reg.access_log().len();
    for (store, name) in [
        ("again-base", "base"),
        ("again-stepped", "stepped"),
        ("again-app", "app"),
    ] {
        let r = image_job(&cx, store, name, &env);
        for image in r.names() {
            for l in r.layers(&image) {
                assert_eq!(l["built"], false, "{name}'s job, {image}: {l}");
            }
        }
        assert_eq!(r.manifest(name), whole.manifest(name));
    }
    let log = reg.access_log();
    let again = uploads(&log[before..]);
    assert!(again.is_empty(), "blobs uploaded again: {again:?}");
}

#[test]
fn two_jobs_racing_on_a_layer_both_succeed_with_one_digest() {
    let reg = Registry::htpasswd(JOB_USER, JOB_TOKEN);
    let cx = fleet();
    let env = ci_env(&reg.host());
    let whole = cx.build(&["--all"]);
    // Two runners, empty stores, the same image at the same time: each
    // misses the cache, builds every layer and fills the cache and the
    // project's repository with the same blobs and tags.
    let reports: Vec<Report> = thread::scope(|s| {
        let jobs: Vec<_> = ["racer-1", "racer-2"]
            .into_iter()
            .map(|store| {
                let (cx, env) = (&cx, &env);
                s.spawn(move || image_job(cx, store, "app", env))
            })
            .collect();
        jobs.into_iter().map(|j| j.join().unwrap()).collect()
    });
    for r in &reports {
        for name in ["base", "stepped", "app"] {
            assert_eq!(r.manifest(name), whole.manifest(name), "{name}");
        }
    }
    assert_eq!(
        reg.digest("group/fleet/app", "latest"),
        Some(whole.manifest("app"))
    );
    // Every layer tag of the cache names the one digest both built.
    let keys: BTreeSet<String> = reports[0]
        .layers("app")
        .iter()
        .chain(reports[0].layers("stepped").iter())
        .map(|l| format!("layer-{}", l["key"].as_str().unwrap()))
        .collect();
    let tags: BTreeSet<String> = reg.tags("group/fleet/cache").into_iter().collect();
    assert!(keys.is_subset(&tags), "cache tags {tags:?} lack {keys:?}");
}

/// The token registry's policy as GitLab's job token scope would have it:
/// the job's own project `group/fleet` read and written, `group/base`
/// (whose allowlist admits this project) read only, anything else refused.
fn job_token_scope(user: &str, repo: &str, action: &str) -> bool {
    match user {
        JOB_USER => {
            repo.starts_with("group/fleet/")
                || (repo.starts_with("group/base/") && action == "pull")
        }
        _ => true,
    }
}

#[test]
fn a_parent_from_another_project_and_a_push_to_a_second_registry() {
    let reg = Registry::token(
        TokenOptions::new(JOB_USER, JOB_TOKEN)
            .user("base-maintainer", "base-pw-7Yk")
            .allow(job_token_scope),
    );
    let host = reg.host();
    let seeder = fleet();
    // The other project pushes its base image with its own credentials.
    let seed_env = [
        ("CI_REGISTRY", host.as_str()),
        ("CI_REGISTRY_USER", "base-maintainer"),
        ("CI_REGISTRY_PASSWORD", "base-pw-7Yk"),
    ];
    let base_prefix = format!("{host}/group/base");
    let c = job(
        &seeder,
        &seeder.scratch.join("seed"),
        &["--json", "-q", "push", "base", "--registry", &base_prefix],
        &seed_env,
    );
    run_command(c).success();
    assert!(
        reg.digest("group/base/base", "latest").is_some(),
        "base pushed"
    );

    // This project's image is on that base, by reference.
    let cx = Ctx::new().with_epoch(1_700_000_000);
    cx.write("app/hello.txt", "hello\n");
    cx.yaml(&format!(
        "images:\n  app:\n    from: {base_prefix}/base:latest\n    layers:\n      - {{src: app, dest: /srv/app}}\n"
    ));
    let env: Vec<(String, String)> = ci_env(&host)
        .into_iter()
        .filter(|(k, _)| k != "IMGBUILD_CACHE_REPO")
        .collect();
    let home = cx.scratch.join("runner");
    let run = run_command(job(
        &cx,
        &home,
        &["--json", "-q", "build", "app", "--push"],
        &pairs(&env),
    ))
    .success();
    assert_no_secret(&run, JOB_TOKEN);
    let app = Report(run.json()).manifest("app");
    assert_eq!(reg.digest("group/fleet/app", "latest"), Some(app.clone()));
    let grants = reg.token_server().unwrap().grants();
    assert!(
        grants
            .iter()
            .any(|g| g.user == JOB_USER && g.access.to_string().contains("group/base/base")),
        "the job token was never used to read group/base: {grants:?}"
    );
    // A project outside the scope: refused, and said so with the reference.
    let seed_other = job(
        &seeder,
        &seeder.scratch.join("seed"),
        &["-q", "push", "base", "--registry", &format!("{host}/other")],
        &seed_env,
    );
    run_command(seed_other).success();
    cx.yaml(&format!(
        "images:\n  app:\n    from: {host}/other/base:latest\n    layers:\n      - {{src: app, dest: /srv/app}}\n"
    ));
    let denied = run_command(job(
        &cx,
        &cx.scratch.join("runner-denied"),
        &["-q", "build", "app"],
        &pairs(&env),
    ));
    assert_ne!(denied.code, 0, "{denied}");
    denied.stderr_has(&["other/base"]);
    assert_no_secret(&denied, JOB_TOKEN);
    cx.yaml(&format!(
        "images:\n  app:\n    from: {base_prefix}/base:latest\n    layers:\n      - {{src: app, dest: /srv/app}}\n"
    ));

    // The production registry: its credentials in DOCKER_AUTH_CONFIG, as a
    // CI/CD variable's JSON, then as a File variable's path.
    let prod = Registry::htpasswd("deployer", "prod-pw-Q2w");
    let auth =
        serde_json::json!({"auths": {prod.host(): {"auth": base64("deployer:prod-pw-Q2w")}}})
            .to_string();
    let file = cx.scratch.join("docker-auth-config");
    fs::write(&file, &auth).unwrap();
    for (repo, value) in [
        ("agency", auth.clone()),
        ("agency-file", file.display().to_string()),
    ] {
        let mut env = env.clone();
        env.push(("DOCKER_AUTH_CONFIG".into(), value));
        let prefix = format!("{}/{repo}", prod.host());
        let run = run_command(job(
            &cx,
            &home,
            &["--json", "-q", "push", "app", "--registry", &prefix],
            &pairs(&env),
        ))
        .success();
        assert_no_secret(&run, "prod-pw-Q2w");
        assert_no_secret(&run, JOB_TOKEN);
        assert_eq!(
            prod.digest(&format!("{repo}/app"), "latest"),
            Some(app.clone())
        );
    }
    // Without it, the production registry refuses the job.
    let refused = run_command(job(
        &cx,
        &home,
        &[
            "-q",
            "push",
            "app",
            "--registry",
            &format!("{}/agency", prod.host()),
        ],
        &pairs(&env),
    ));
    assert_eq!(refused.code, 1, "{refused}");
}

fn base64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// ci/release.gitlab-ci.yml as GitLab's published CI schema has it (the
/// e2e test checks the child pipeline the generate job writes).
#[test]
fn the_release_job_follows_gitlabs_schema() {
    let release = Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/release.gitlab-ci.yml");
    let mut c = Command::new("check-jsonschema");
    c.args(["--builtin-schema", "vendor.gitlab-ci"])
        .arg(&release);
    let run = match c.output() {
        Ok(o) => Run {
            cmd: "check-jsonschema".into(),
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        },
        Err(e) => panic!(
            "check-jsonschema cannot run ({e}): pip install check-jsonschema (ci/setup installs it for CI)"
        ),
    };
    run.success();
}
