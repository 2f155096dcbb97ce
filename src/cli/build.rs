//! `imgbuild build`
use clap::Args;
use serde::Serialize;

use imgbuild::attach::provenance::Inputs;
use imgbuild::build::deliver::{Delivered, Delivery};
use imgbuild::build::evidence::Evidence;
use imgbuild::build::remote::{Pushed, Remote};
use imgbuild::build::{BuildError, ImageOutcome, Session};
use imgbuild::oci::output::Output;

use super::progress::Progress;
use super::push::PushArgs;
use super::{Cli, Failure, LayerArgs, Selection, load, open_store, print_json};

#[derive(Args)]
pub struct BuildArgs {
    #[command(flatten)]
    select: Selection,
    #[command(flatten)]
    pub(super) layer: LayerArgs,
    /// Write the built images: oci:DIR (an OCI image layout, each image
    /// named by its graph name) or docker-archive:FILE (for `docker load`).
    #[arg(long, short = 'o', value_name = "oci:DIR|docker-archive:FILE")]
    output: Vec<String>,
    /// Push the named images once built (see `imgbuild push --help`).
    #[arg(long)]
    push: bool,
    #[command(flatten)]
    remote: PushArgs,
    /// Report as `push` does (set by the `push` command).
    #[arg(skip)]
    push_report: bool,
    /// Run tests even when they passed (set by the `test` command).
    #[arg(skip)]
    force_tests: bool,
}

impl BuildArgs {
    /// A build with no outputs and no push, as `test` and `push` start from.
    fn plain(select: &Selection, layer: &LayerArgs) -> BuildArgs {
        BuildArgs {
            select: select.clone(),
            layer: layer.clone(),
            output: Vec::new(),
            push: false,
            remote: PushArgs::default(),
            push_report: false,
            force_tests: false,
        }
    }
}

/// `imgbuild test`: build, and run the smoke tests even if they passed.
pub fn test_command(cli: &Cli, select: &Selection, layer: &LayerArgs) -> Result<(), Failure> {
    let args = BuildArgs {
        force_tests: true,
        ..BuildArgs::plain(select, layer)
    };
    run(cli, &args)
}

/// `imgbuild push`: `build --push` without outputs.
pub fn push_command(
    cli: &Cli,
    select: &Selection,
    layer: &LayerArgs,
    remote: &PushArgs,
) -> Result<(), Failure> {
    let args = BuildArgs {
        push: true,
        remote: remote.clone(),
        push_report: true,
        ..BuildArgs::plain(select, layer)
    };
    run(cli, &args)
}

#[derive(Serialize)]
struct Report<'a> {
    images: Vec<&'a ImageOutcome>,
    failed: &'a [Failed],
    outputs: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pushed: Option<&'a [Pushed]>,
    /// What the probe found, when a layer needed a sandbox.
    #[serde(skip_serializing_if = "Option::is_none")]
    sandbox: Option<&'a imgbuild::sandbox::Probe>,
}

#[derive(Serialize)]
struct Failed {
    name: String,
    error: String,
    #[serde(skip)]
    code: u8,
    /// Failed only because what it is built from failed.
    #[serde(skip)]
    follows: bool,
}

/// What `--sbom`, `--provenance` and `--sign-key` ask to attach.
fn evidence(
    cli: &Cli,
    args: &BuildArgs,
    spec: &imgbuild::spec::Spec,
    opts: &imgbuild::build::Options,
) -> Result<Evidence, Failure> {
    let sbom = args
        .remote
        .sbom
        .as_deref()
        .map(str::parse::<imgbuild::sbom::Formats>)
        .transpose()
        .map_err(Failure::usage)?;
    let sbom_parents = args
        .remote
        .sbom_parents
        .as_deref()
        .map(str::parse::<imgbuild::sbom::Parents>)
        .transpose()
        .map_err(Failure::usage)?
        .unwrap_or_default();
    let key = args
        .remote
        .sign_key
        .as_deref()
        .map(imgbuild::sign::load_private)
        .transpose()
        .map_err(Failure::usage)?;
    let provenance = args.remote.provenance.then(|| {
        let sha = |p: &std::path::Path| {
            std::fs::read(p)
                .ok()
                .map(|b| imgbuild::digest::sha256_hex(&b))
        };
        let file_name = spec
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Inputs {
            file: (file_name, sha(&spec.file).unwrap_or_default()),
            lock: sha(&imgbuild::debian::lock::path_for(spec)),
            revision: opts.stamp.revision.clone(),
            repository: opts.stamp.source.clone(),
            set: cli.set.clone(),
            isolation: args.layer.isolation.to_string(),
            pipeline: imgbuild::env::var(imgbuild::env::CI_PIPELINE_URL),
            job: imgbuild::env::var(imgbuild::env::CI_JOB_URL),
        }
    });
    Ok(Evidence {
        sbom,
        sbom_parents,
        provenance,
        key,
        cache: Default::default(),
    })
}

pub fn run(cli: &Cli, args: &BuildArgs) -> Result<(), Failure> {
    let spec = load(&cli.file)?;
    let names = args.select.resolve(&spec)?;
    let outputs: Vec<Output> = args
        .output
        .iter()
        .map(|o| o.parse().map_err(Failure::usage))
        .collect::<Result<_, _>>()?;
    let mut opts = args.layer.options(&spec)?;
    opts.force_tests = args.force_tests;
    let remote_opts = args.remote.options();
    if args.push {
        // Before building: where to push is known, or the push cannot be.
        remote_opts.prefix(&spec)?;
    }
    let store = open_store()?;
    let progress = Progress::new(cli.quiet);
    let remote = Remote::new(&store, &remote_opts, &progress)?;
    let delivery = Delivery {
        outputs: &outputs,
        push: args.push,
        evidence: evidence(cli, args, &spec, &opts)?,
    };
    let mut session = Session::new(&store, &spec, &opts).with_remote(&remote);
    if delivery.evidence.sbom.is_some() {
        session = session.with_layer_facts();
    }
    let Delivered {
        results,
        outputs_written,
        pushed,
    } = session.deliver(&names, &remote, &delivery, &progress)?;

    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for (name, r) in &results {
        match r {
            Ok(o) => ok.push(o),
            Err(e) => failed.push(Failed {
                name: name.clone(),
                error: format!("{e}"),
                code: super::exit_code(e),
                follows: matches!(e, BuildError::ParentFailed { .. }),
            }),
        }
    }
    if let Some(p) = &pushed
        && !cli.json
    {
        super::push::report(false, cli.quiet, p);
    }
    if cli.json && args.push_report && failed.is_empty() {
        super::push::report(true, cli.quiet, pushed.as_deref().unwrap_or_default());
    } else if cli.json {
        print_json(&Report {
            images: ok,
            failed: &failed,
            outputs: if outputs_written { &args.output } else { &[] },
            pushed: pushed.as_deref(),
            sandbox: session.probed(),
        });
    }
    if failed.is_empty() {
        Ok(())
    } else {
        // Bad input (2) only when every failure that did not merely follow
        // from a parent's is bad input.
        let code = failed
            .iter()
            .filter(|f| !f.follows)
            .map(|f| f.code)
            .min()
            .unwrap_or(1);
        let list: Vec<String> = failed
            .iter()
            .map(|f| format!("{}: {}", f.name, f.error))
            .collect();
        let f = Failure::failed(format!(
            "{} image(s) failed:\n{}",
            failed.len(),
            list.join("\n")
        ));
        let f = Failure { code, ..f };
        Err(if cli.json { f.reported() } else { f })
    }
}
