//! `imgbuild ci gitlab`: a child pipeline (for `trigger: include:
//! artifact:`) that builds and pushes what a change affects.
//!
//! One job per image that has affected children (bases, PHP, Moodle
//! cores), and the leaves (clients) in jobs of up to `batch` images that
//! share a parent; `needs:` follows the graph, so a client's job starts
//! when its own Moodle core is pushed, not when every core is. When
//! GitLab's limits (jobs per pipeline, the size of the file) would be
//! passed, leaves are batched more and a note says so. Every job shares
//! layers through the registry cache (`IMGBUILD_CACHE_REPO`), so a runner
//! with an empty store fetches what another pushed instead of building it.
use std::collections::{BTreeMap, BTreeSet};

use yaml_rust2::yaml::Hash;
use yaml_rust2::{Yaml, YamlEmitter};

use super::changes::{Affected, Impact};

/// GitLab's own limits (gitlab.com and a default self-managed instance).
pub const MAX_NEEDS: usize = 50;
/// Jobs in one pipeline: gitlab.com's smallest plan allows 500; a job
/// more than needed is a runner's start-up more.
pub const MAX_JOBS: usize = 500;
/// An included file's size (GitLab's `max_yaml_size_bytes` is 2 MiB; half
/// leaves room).
pub const MAX_BYTES: usize = 1024 * 1024;

/// How the jobs are written.
#[derive(Debug, Clone)]
pub struct Options {
    /// The job image (default `$IMGBUILD_IMAGE`, expanded by GitLab).
    pub image: String,
    /// The arguments every `imgbuild` command line gets first (`-f FILE`,
    /// `--set`, `--context`), each one word.
    pub global_args: Vec<String>,
    /// Push (else only build: a merge request's pipeline).
    pub push: bool,
    /// Move `latest` (the default branch only).
    pub latest: bool,
    /// The registry cache repository (GitLab expands the variables).
    pub cache_repo: String,
    /// Leaves per job when the limits allow (1: a job each).
    pub batch: usize,
    pub max_jobs: usize,
    pub max_needs: usize,
    pub max_bytes: usize,
    /// A job of the parent pipeline whose artifacts every job takes (the
    /// scheduled `lock --update`'s images.lock).
    pub artifacts_from: Option<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            image: "$IMGBUILD_IMAGE".into(),
            global_args: Vec::new(),
            push: true,
            latest: false,
            cache_repo: "$CI_REGISTRY_IMAGE/imgbuild-cache".into(),
            batch: 1,
            max_jobs: MAX_JOBS,
            max_needs: MAX_NEEDS,
            max_bytes: MAX_BYTES,
            artifacts_from: None,
        }
    }
}

/// A pipeline, written.
#[derive(Debug, serde::Serialize)]
pub struct Pipeline {
    /// The YAML text.
    #[serde(skip)]
    pub yaml: String,
    /// Its jobs, in order: name → the images it builds.
    pub jobs: Vec<(String, Vec<String>)>,
    /// What was done to stay inside GitLab's limits.
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(
        "the affected images need at least {jobs} jobs (one per image with children to build, one per parent of clients), more than the {max} jobs a pipeline may have\n  hint: raise --max-jobs if your GitLab allows more, or build in two pipelines"
    )]
    TooManyJobs { jobs: usize, max: usize },
    #[error(
        "even with every client in one job per parent the pipeline is {bytes} bytes, over the {max} GitLab takes\n  hint: raise --max-bytes if your instance's max_yaml_size_bytes allows more"
    )]
    TooLarge { bytes: usize, max: usize },
}

/// One job: the images it builds (parents first) and the job it needs.
struct Job {
    name: String,
    images: Vec<String>,
    needs: Option<String>,
    depth: usize,
}

/// The child pipeline for `impact`.
pub fn child_pipeline(impact: &Impact, opts: &Options) -> Result<Pipeline, PipelineError> {
    if impact.images.is_empty() {
        return Ok(Pipeline {
            yaml: emit(&empty_pipeline(impact, opts)),
            jobs: vec![("nothing to build".into(), Vec::new())],
            notes: vec![
                "nothing affected: one job that says so (GitLab rejects an empty pipeline)".into(),
            ],
        });
    }
    let mut notes = Vec::new();
    let mut batch = opts.batch.max(1);
    loop {
        let jobs = plan_jobs(&impact.images, batch);
        let at_most = batch >= impact.images.len();
        if jobs.len() > opts.max_jobs {
            if at_most {
                return Err(PipelineError::TooManyJobs {
                    jobs: jobs.len(),
                    max: opts.max_jobs,
                });
            }
            batch = next_batch(batch);
            continue;
        }
        let yaml = emit(&pipeline(&jobs, opts));
        if yaml.len() > opts.max_bytes {
            if at_most {
                return Err(PipelineError::TooLarge {
                    bytes: yaml.len(),
                    max: opts.max_bytes,
                });
            }
            batch = next_batch(batch);
            continue;
        }
        if batch > opts.batch.max(1) {
            notes.push(format!(
                "{} images in {} jobs: clients batched up to {batch} to a job to stay within GitLab's limits ({} jobs a pipeline, {} bytes a file)",
                impact.images.len(),
                jobs.len(),
                opts.max_jobs,
                opts.max_bytes
            ));
        }
        // Each job waits for one job at most (its images share a parent),
        // and the parent pipeline's artifacts: far below GitLab's 50.
        let needs = 1 + usize::from(opts.artifacts_from.is_some());
        if needs > opts.max_needs {
            notes.push(format!(
                "jobs need {needs} jobs, over --max-needs {}",
                opts.max_needs
            ));
        }
        return Ok(Pipeline {
            yaml,
            jobs: jobs.into_iter().map(|j| (j.name, j.images)).collect(),
            notes,
        });
    }
}

fn next_batch(batch: usize) -> usize {
    (batch * 2).max(batch + 1)
}

/// `images` (parents first) in jobs: each image with affected children
/// alone, the others in batches of `batch` that share a parent.
fn plan_jobs(images: &[Affected], batch: usize) -> Vec<Job> {
    let affected: BTreeMap<&str, &Affected> = images.iter().map(|a| (a.name.as_str(), a)).collect();
    let parents: BTreeSet<&str> = images.iter().filter_map(|a| a.parent.as_deref()).collect();
    let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
    let mut jobs = Vec::new();
    // Leaves by the job they wait for (None: their parent is not rebuilt).
    let mut leaves: BTreeMap<Option<&str>, Vec<&str>> = BTreeMap::new();
    for a in images {
        let needs = a.parent.as_deref().filter(|p| affected.contains_key(p));
        let d = needs.map_or(0, |p| depth.get(p).copied().unwrap_or(0) + 1);
        depth.insert(&a.name, d);
        if parents.contains(a.name.as_str()) {
            jobs.push(Job {
                name: job_name(&[a.name.as_str()]),
                images: vec![a.name.clone()],
                needs: needs.map(|p| job_name(&[p])),
                depth: d,
            });
        } else {
            leaves.entry(needs).or_default().push(&a.name);
        }
    }
    for (needs, names) in leaves {
        let d = needs.map_or(0, |p| depth[p] + 1);
        for chunk in names.chunks(batch) {
            jobs.push(Job {
                name: job_name(chunk),
                images: chunk.iter().map(|s| s.to_string()).collect(),
                needs: needs.map(|p| job_name(&[p])),
                depth: d,
            });
        }
    }
    jobs
}

fn job_name(images: &[&str]) -> String {
    match images {
        [one] => format!("build {one}"),
        [first, .., last] => format!("build {first} … {last} ({})", images.len()),
        [] => "build".into(),
    }
}

fn s(text: impl Into<String>) -> Yaml {
    Yaml::String(text.into())
}

fn map(entries: Vec<(&str, Yaml)>) -> Yaml {
    let mut h = Hash::new();
    for (k, v) in entries {
        h.insert(s(k), v);
    }
    Yaml::Hash(h)
}

fn list(items: Vec<Yaml>) -> Yaml {
    Yaml::Array(items)
}

/// A word for `sh`: single-quoted unless it is plainly safe.
fn sh_word(w: &str) -> String {
    let safe = !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@+".contains(&b));
    if safe {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

fn pipeline(jobs: &[Job], opts: &Options) -> Yaml {
    let depth = jobs.iter().map(|j| j.depth).max().unwrap_or(0);
    let stages: Vec<Yaml> = (0..=depth).map(|d| s(format!("build-{d}"))).collect();
    let global: String = opts
        .global_args
        .iter()
        .map(|a| format!(" {}", sh_word(a)))
        .collect();
    let command = if opts.push {
        let latest = if opts.latest { "" } else { " --no-latest" };
        // IMGBUILD_PUSH_ARGS: what the including pipeline adds to a push
        // (the template: evidence and a signature on the default branch).
        format!(
            "imgbuild{global} push --locked --tag \"$CI_COMMIT_SHORT_SHA\" --tag \"$CI_COMMIT_REF_SLUG\"{latest} $IMGBUILD_PUSH_ARGS $IMGBUILD_IMAGES"
        )
    } else {
        format!("imgbuild{global} build --locked $IMGBUILD_IMAGES")
    };
    let template = vec![
        ("image", s(&opts.image)),
        (
            "variables",
            map(vec![
                // The store on the build directory: the container's own
                // filesystem may be mounted `nodev`.
                ("IMGBUILD_HOME", s("$CI_PROJECT_DIR/.imgbuild")),
                ("IMGBUILD_CACHE_REPO", s(&opts.cache_repo)),
            ]),
        ),
        ("interruptible", Yaml::Boolean(true)),
        (
            "retry",
            map(vec![
                ("max", Yaml::Integer(1)),
                (
                    "when",
                    list(vec![
                        s("runner_system_failure"),
                        s("stuck_or_timeout_failure"),
                    ]),
                ),
            ]),
        ),
        ("script", list(vec![s(command)])),
    ];
    let mut top = vec![("stages", list(stages)), (".imgbuild", map(template))];
    let mut owned: Vec<(String, Yaml)> = Vec::new();
    for j in jobs {
        let mut needs = Vec::new();
        if let Some(n) = &j.needs {
            needs.push(s(n.clone()));
        }
        if let Some(job) = &opts.artifacts_from {
            needs.push(map(vec![
                ("pipeline", s("$PARENT_PIPELINE_ID")),
                ("job", s(job.clone())),
            ]));
        }
        let fields = vec![
            ("extends", s(".imgbuild")),
            ("stage", s(format!("build-{}", j.depth))),
            ("needs", list(needs)),
            (
                "variables",
                map(vec![("IMGBUILD_IMAGES", s(j.images.join(" ")))]),
            ),
        ];
        owned.push((j.name.clone(), map(fields)));
    }
    let mut h = Hash::new();
    for (k, v) in top.drain(..) {
        h.insert(s(k), v);
    }
    for (k, v) in owned {
        h.insert(s(k), v);
    }
    Yaml::Hash(h)
}

fn empty_pipeline(impact: &Impact, opts: &Options) -> Yaml {
    let why = match impact.commit.is_empty() {
        true => format!("no image is affected since {}", impact.since),
        false => format!(
            "no image is affected since {} ({})",
            impact.since,
            &impact.commit[..12.min(impact.commit.len())]
        ),
    };
    map(vec![(
        "nothing to build",
        map(vec![
            ("image", s(&opts.image)),
            ("variables", map(vec![("GIT_STRATEGY", s("none"))])),
            ("script", list(vec![s(format!("echo {}", sh_word(&why)))])),
        ]),
    )])
}

fn emit(doc: &Yaml) -> String {
    let mut out = String::new();
    let mut e = YamlEmitter::new(&mut out);
    e.multiline_strings(false);
    let _ = e.dump(doc);
    // The emitter starts with a document marker and ends without a newline.
    let body = out.strip_prefix("---\n").unwrap_or(&out);
    format!("# Generated by `imgbuild ci gitlab`: the images a change affects.\n{body}\n")
}
