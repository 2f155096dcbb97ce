//! `imgbuild ci gitlab`
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};

use imgbuild::graph::changes;
use imgbuild::graph::gitlab::{self, MAX_BYTES, MAX_JOBS, MAX_NEEDS};

use super::{Cli, Failure, load, print_json};

#[derive(Args)]
pub struct CiArgs {
    #[command(subcommand)]
    target: Target,
}

#[derive(Subcommand)]
enum Target {
    /// Write a child pipeline (for `trigger: include: artifact:`) that
    /// builds and pushes the images a change affects.
    Gitlab(GitlabArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Choice {
    /// From GitLab's variables.
    Auto,
    Yes,
    No,
}

#[derive(Args)]
struct GitlabArgs {
    /// Compare with this revision (default:
    /// $CI_MERGE_REQUEST_DIFF_BASE_SHA, then $CI_COMMIT_BEFORE_SHA).
    #[arg(long, value_name = "REV")]
    changed_since: Option<String>,
    /// Every image, whatever changed.
    #[arg(long, conflicts_with = "changed_since")]
    all: bool,
    /// The job image.
    #[arg(long, value_name = "IMAGE", default_value = "$IMGBUILD_IMAGE")]
    image: String,
    /// Where to write the pipeline (default: stdout).
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Push the images; auto: not in a merge request's pipeline
    /// ($CI_PIPELINE_SOURCE = merge_request_event).
    #[arg(long, value_name = "auto|yes|no", default_value = "auto")]
    push: Choice,
    /// Move `latest`; auto: only on the default branch
    /// ($CI_COMMIT_BRANCH = $CI_DEFAULT_BRANCH).
    #[arg(long, value_name = "auto|yes|no", default_value = "auto")]
    latest: Choice,
    /// The registry cache repository the jobs share layers through.
    #[arg(
        long,
        value_name = "HOST/REPO",
        default_value = "$CI_REGISTRY_IMAGE/imgbuild-cache"
    )]
    cache_repo: String,
    /// Images with no affected child per job (more when the limits need it).
    #[arg(long, value_name = "N", default_value_t = 1)]
    batch: usize,
    /// Jobs a pipeline may have.
    #[arg(long, value_name = "N", default_value_t = MAX_JOBS)]
    max_jobs: usize,
    /// `needs:` a job may have.
    #[arg(long, value_name = "N", default_value_t = MAX_NEEDS)]
    max_needs: usize,
    /// Bytes the pipeline file may have.
    #[arg(long, value_name = "N", default_value_t = MAX_BYTES)]
    max_bytes: usize,
    /// A job of the parent pipeline whose artifacts every job takes (e.g.
    /// the scheduled `lock --update` job's images.lock); the trigger
    /// passes `PARENT_PIPELINE_ID: $CI_PIPELINE_ID`.
    #[arg(long, value_name = "JOB")]
    artifacts_from: Option<String>,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

pub fn run(cli: &Cli, args: &CiArgs) -> Result<(), Failure> {
    let Target::Gitlab(a) = &args.target;
    let since = match (&a.changed_since, a.all) {
        (Some(rev), _) => Some(rev.clone()),
        (None, true) => None,
        (None, false) => Some(
            var("CI_MERGE_REQUEST_DIFF_BASE_SHA")
                .or_else(|| var("CI_COMMIT_BEFORE_SHA"))
                .ok_or_else(|| {
                    Failure::usage(
                        "give --changed-since REV (or --all): neither $CI_MERGE_REQUEST_DIFF_BASE_SHA nor $CI_COMMIT_BEFORE_SHA is set",
                    )
                })?,
        ),
    };
    let impact = match &since {
        Some(rev) => super::plan::changed_since(cli, rev)?.1,
        None => {
            let spec = load(&cli.file)?;
            changes::Impact {
                since: "--all".into(),
                commit: String::new(),
                changed_files: 0,
                images: changes::select_all(&spec, "--all"),
            }
        }
    };
    let mut global_args = Vec::new();
    if cli.file != Path::new("images.yaml") {
        global_args.extend(["-f".to_string(), cli.file.display().to_string()]);
    }
    for (k, v) in &cli.set {
        global_args.extend(["--set".to_string(), format!("{k}={v}")]);
    }
    if let Some(c) = &cli.context {
        global_args.extend(["--context".to_string(), c.display().to_string()]);
    }
    let merge_request = var("CI_PIPELINE_SOURCE").as_deref() == Some("merge_request_event");
    let default_branch =
        var("CI_COMMIT_BRANCH").is_some() && var("CI_COMMIT_BRANCH") == var("CI_DEFAULT_BRANCH");
    let opts = gitlab::Options {
        image: a.image.clone(),
        global_args,
        push: match a.push {
            Choice::Auto => !merge_request,
            Choice::Yes => true,
            Choice::No => false,
        },
        latest: match a.latest {
            Choice::Auto => default_branch,
            Choice::Yes => true,
            Choice::No => false,
        },
        cache_repo: a.cache_repo.clone(),
        batch: a.batch,
        max_jobs: a.max_jobs,
        max_needs: a.max_needs,
        max_bytes: a.max_bytes,
        artifacts_from: a.artifacts_from.clone(),
    };
    let pipeline = gitlab::child_pipeline(&impact, &opts).map_err(Failure::usage)?;
    match &a.output {
        Some(path) => imgbuild::fsutil::write_atomic(
            imgbuild::fsutil::parent_dir(path),
            path,
            pipeline.yaml.as_bytes(),
        )
        .map_err(|e| Failure::failed(format!("cannot write {}: {e}", path.display())))?,
        None if !cli.json => print!("{}", pipeline.yaml),
        None => {}
    }
    if cli.json {
        print_json(&serde_json::json!({ "impact": impact, "pipeline": pipeline }));
    }
    if !cli.quiet {
        eprintln!(
            "{} images affected since {}: {} jobs{}",
            impact.images.len(),
            impact.since,
            pipeline.jobs.len(),
            a.output
                .as_ref()
                .map_or(String::new(), |p| format!(", written to {}", p.display()))
        );
        for n in &pipeline.notes {
            eprintln!("note: {n}");
        }
    }
    Ok(())
}
