//! The command line: clap types, one small file per command.
mod build;
mod check;
mod ci;
mod gc;
mod graph;
mod inspect;
mod lock;
mod plan;
mod progress;
mod push;
mod remote;
mod run;
mod sbom;
mod sign;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use imgbuild::build::remote::RemoteError;
use imgbuild::build::{BuildError, Options, stamp_from_env};
use imgbuild::debian::lock::LockedSource;
use imgbuild::layer::{LayerCompression, LayerError};
use imgbuild::source::{Fetcher, Pinning};
use imgbuild::spec::{LoadOptions, Spec, SpecError};
use imgbuild::store::Store;

#[derive(Parser)]
#[command(
    name = "imgbuild",
    version,
    about = "Build a graph of layered OCI images from images.yaml, without a daemon or privileges"
)]
pub struct Cli {
    /// The image graph.
    #[arg(
        short = 'f',
        long = "file",
        global = true,
        default_value = "images.yaml",
        value_name = "FILE"
    )]
    file: PathBuf,
    /// Machine-readable output on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// No progress on stderr.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Override a top-level var of images.yaml for this run (repeatable),
    /// e.g. `--set moodle_51_src=../moodle --context ..` to build against
    /// a checkout beside the project.
    #[arg(long = "set", global = true, value_name = "NAME=VALUE", value_parser = parse_set)]
    set: Vec<(String, String)>,
    /// The build context: every path images.yaml names (layer sources,
    /// `dir:` sources, secret files, keyrings, tarballs, client files) must
    /// be inside it, links resolved. Default: the directory of images.yaml;
    /// name a wider one explicitly, e.g. `--context ..`.
    #[arg(long, global = true, value_name = "DIR")]
    context: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the named images and what they need.
    Build(build::BuildArgs),
    /// What would be built or reused, and the input that changed.
    Plan(plan::PlanArgs),
    /// Continuous integration: `ci gitlab` writes a child pipeline that
    /// builds what a change affects.
    Ci(ci::CiArgs),
    /// The image graph: a text tree, dot, mermaid or json.
    Graph(graph::GraphArgs),
    /// Validate images.yaml and the trees it names.
    Check,
    /// Layers, sizes, digests and config: of the last build of an image of
    /// images.yaml, or of a registry reference (HOST/REPO:TAG).
    Inspect(inspect::InspectArgs),
    /// Remove blobs no image of any images.yaml still uses.
    Gc,
    /// Resolve the Debian packages of every `debian:` image and pin them in
    /// images.lock.
    Lock(lock::LockArgs),
    /// Build what is needed and push the named images to the registry.
    Push(PushCommand),
    /// Point another tag at an image (no blob moves within a repository).
    Tag(remote::TagArgs),
    /// Copy an image to another repository or registry (mounting blobs when it can).
    Copy(remote::CopyArgs),
    /// The manifest digest of a registry reference.
    Digest(remote::RefArgs),
    /// The tags of a repository.
    Ls(remote::RefArgs),
    /// Delete a manifest from a registry.
    Delete(remote::RefArgs),
    /// Save registry credentials in Docker's config.json.
    Login(remote::LoginArgs),
    /// Build the named images and run their smoke tests (`test:`), even
    /// when they passed before.
    Test(TestCommand),
    /// Run a command in a built image (built first if needed), throw-away,
    /// with the image's env, workdir and user; its exit status is passed on.
    Run(run::RunArgs),
    /// Print an image's SBOM (SPDX 2.3 or CycloneDX 1.6 JSON), made from
    /// what imgbuild knows: its layers, dpkg database, images.lock, sources.
    Sbom(sbom::SbomArgs),
    /// Make a signing key pair in cosign's format (PREFIX.key, encrypted
    /// with $IMGBUILD_SIGN_PASSWORD, and PREFIX.pub).
    Keygen(sign::KeygenArgs),
    /// Sign a pushed image as cosign does (a `sha256-<hex>.sig` tag).
    Sign(sign::SignArgs),
    /// Verify a pushed image's cosign signature with a public key; exit 1
    /// and the reason when it is unsigned, changed or signed by another key.
    Verify(sign::VerifyArgs),
}

#[derive(Args)]
struct TestCommand {
    #[command(flatten)]
    select: Selection,
    #[command(flatten)]
    layer: LayerArgs,
}

#[derive(Args)]
struct PushCommand {
    #[command(flatten)]
    select: Selection,
    #[command(flatten)]
    layer: LayerArgs,
    #[command(flatten)]
    push: push::PushArgs,
}

/// Which images.
#[derive(Args, Clone)]
struct Selection {
    /// Image names from images.yaml.
    names: Vec<String>,
    /// Every image in images.yaml.
    #[arg(long, conflicts_with = "names")]
    all: bool,
}

impl Selection {
    fn resolve(&self, spec: &Spec) -> Result<Vec<String>, Failure> {
        if self.all {
            return Ok(spec.images.keys().cloned().collect());
        }
        if self.names.is_empty() {
            return Err(Failure::usage("name the images to work on, or pass --all"));
        }
        Ok(self.names.clone())
    }
}

/// Options shared by commands that compute layers.
#[derive(Args, Clone)]
struct LayerArgs {
    /// Layer compression, for images whose images.yaml entry has no
    /// `compression:`: gzip or zstd, at a level with `:LEVEL` (zstd:9).
    #[arg(long, default_value = "gzip", value_name = "gzip|zstd[:LEVEL]")]
    compression: LayerCompression,
    /// Images built at once (default: the number of cores).
    #[arg(long, short = 'j')]
    jobs: Option<usize>,
    /// How `run:` steps are isolated: auto, namespace (root with full
    /// rights), chroot (root in an unprivileged container) or userns.
    #[arg(long, default_value = "auto", value_name = "MODE")]
    isolation: imgbuild::sandbox::Request,
    /// Install Debian packages only as images.lock pins them; fail when it
    /// is missing or images.yaml changed since (the CI mode).
    #[arg(long)]
    locked: bool,
}

impl LayerArgs {
    /// For commands that compute keys but never build (plan, inspect,
    /// lock): the defaults the build commands have.
    fn defaults() -> LayerArgs {
        LayerArgs {
            compression: LayerCompression::GZIP,
            jobs: None,
            isolation: imgbuild::sandbox::Request::Auto,
            locked: false,
        }
    }

    fn options(&self, spec: &Spec) -> Result<Options, Failure> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let stamp = stamp_from_env(&spec.dir).map_err(Failure::usage)?;
        Ok(Options {
            compression: self.compression,
            threads: cores,
            jobs: self.jobs.unwrap_or(cores).max(1),
            stamp,
            isolation: self.isolation,
            force_tests: false,
            locked: self.locked,
        })
    }
}

/// An error and the exit status it gives.
pub struct Failure {
    code: u8,
    error: anyhow::Error,
    /// The command already printed its JSON document, which says it failed.
    reported: bool,
}

impl Failure {
    /// Exit with `code` and say nothing (the command said it all).
    fn silent(code: u8) -> Failure {
        Failure {
            code,
            error: anyhow::anyhow!(""),
            reported: true,
        }
    }
}

impl Failure {
    fn usage(msg: impl std::fmt::Display) -> Failure {
        Failure {
            code: 2,
            error: anyhow::anyhow!("{msg}"),
            reported: false,
        }
    }

    fn failed(msg: impl std::fmt::Display) -> Failure {
        Failure {
            code: 1,
            error: anyhow::anyhow!("{msg}"),
            reported: false,
        }
    }

    /// Marks the failure as already told in the command's JSON output.
    fn reported(mut self) -> Failure {
        self.reported = true;
        self
    }
}

impl From<SpecError> for Failure {
    fn from(e: SpecError) -> Failure {
        Failure {
            // A source that could not be fetched is not bad input.
            code: if matches!(e, SpecError::Fetch { .. }) {
                1
            } else {
                2
            },
            error: e.into(),
            reported: false,
        }
    }
}

impl From<BuildError> for Failure {
    fn from(e: BuildError) -> Failure {
        Failure {
            code: exit_code(&e),
            error: e.into(),
            reported: false,
        }
    }
}

impl From<imgbuild::store::StoreError> for Failure {
    fn from(e: imgbuild::store::StoreError) -> Failure {
        Failure {
            code: 1,
            error: e.into(),
            reported: false,
        }
    }
}

impl From<RemoteError> for Failure {
    fn from(e: RemoteError) -> Failure {
        Failure {
            code: if e.is_bad_input() { 2 } else { 1 },
            error: e.into(),
            reported: false,
        }
    }
}

impl From<imgbuild::build::deliver::DeliverError> for Failure {
    fn from(e: imgbuild::build::deliver::DeliverError) -> Failure {
        use imgbuild::build::deliver::DeliverError;
        match e {
            DeliverError::Build(e) => e.into(),
            DeliverError::Remote(e) => e.into(),
            DeliverError::Output(e) => Failure::failed(e),
            DeliverError::Sbom(e) => Failure::failed(e),
        }
    }
}

/// 2 for what the user's input got wrong, 1 for everything else.
pub fn exit_code(e: &BuildError) -> u8 {
    match e {
        BuildError::UnknownImage { .. } | BuildError::Owner { .. } => 2,
        BuildError::Layer {
            source: LayerError::Unsupported { .. },
            ..
        } => 2,
        _ => 1,
    }
}

fn parse_set(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if imgbuild::spec::vars::valid_name(name) => {
            Ok((name.to_string(), value.to_string()))
        }
        Some((name, _)) => Err(format!("`{name}` is not a var name")),
        None => Err("write NAME=VALUE".into()),
    }
}

/// What loading images.yaml takes from the whole command line (set once,
/// in [`run`]): `--set`, and how git sources meet images.lock.
static LOADING: std::sync::OnceLock<(Vec<(String, String)>, Pinning)> = std::sync::OnceLock::new();

/// `--context DIR`, set once in [`run`].
static CONTEXT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();

fn load(file: &Path) -> Result<Spec, Failure> {
    Ok(load_spec(file)?)
}

/// images.yaml with `--set` applied and its sources fetched.
fn load_spec(file: &Path) -> Result<Spec, SpecError> {
    let (set, pinning) = LOADING.get().cloned().unwrap_or((Vec::new(), Pinning::Use));
    let (spec, _, unpinned) = load_pinned(file, &set, pinning)?;
    for name in unpinned {
        eprintln!(
            "warning: git source `{name}` is not pinned in {}: using the commit its ref names now; run `imgbuild lock` to pin it",
            imgbuild::debian::lock::path_for(&spec).display()
        );
    }
    Ok(spec)
}

/// A loaded spec, the git commits its sources were fetched at (what
/// images.lock's `sources` pins), and the git sources no pin held.
type Loaded = (Spec, BTreeMap<String, LockedSource>, Vec<String>);

/// [`load_spec`], with the commits its git sources were fetched at.
fn load_pinned(
    file: &Path,
    set: &[(String, String)],
    pinning: Pinning,
) -> Result<Loaded, SpecError> {
    let read_err = |source| SpecError::Read {
        file: file.to_path_buf(),
        source,
    };
    let lock_path = std::path::absolute(file)
        .map_err(read_err)?
        .with_file_name(imgbuild::debian::lock::FILE_NAME);
    // A lock that cannot be read pins nothing; `lock` and `--locked`
    // builds report it themselves.
    let pins = imgbuild::debian::lock::Lock::read(&lock_path)
        .ok()
        .flatten()
        .map(|l| l.sources)
        .unwrap_or_default();
    let context = CONTEXT.get().and_then(Option::as_deref);
    if let Some(c) = context
        && !c.is_dir()
    {
        return Err(SpecError::Read {
            file: c.to_path_buf(),
            source: std::io::Error::other("`--context` must name a directory"),
        });
    }
    let root = Store::default_root().map_err(|e| read_err(std::io::Error::other(e)))?;
    let fetcher = Fetcher::new(root, pins, pinning);
    let dir = std::path::absolute(file)
        .map_err(read_err)?
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let revision = imgbuild::build::revision_from_env(&dir);
    let spec = Spec::load_with(
        file,
        &LoadOptions {
            set,
            fetcher: Some(&fetcher),
            context,
            kinds: None,
            revision: revision.as_deref(),
        },
    )?;
    Ok((spec, fetcher.pins(), fetcher.unpinned()))
}

fn open_store() -> Result<Store, Failure> {
    let root = Store::default_root()?;
    Ok(Store::open(&root)?)
}

/// The async runtime registry work runs on.
fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    imgbuild::build::remote::runtime().map_err(Failure::failed)
}

fn print_json(value: &impl serde::Serialize) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, value);
    let _ = writeln!(out);
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let pinning = match &cli.command {
        Command::Build(a) if a.layer.locked => Pinning::Locked,
        // Unpinned git sources fail the load as a --locked build's do,
        // before anything is fetched.
        Command::Plan(a) if a.locked => Pinning::Locked,
        Command::Push(PushCommand { layer, .. }) | Command::Test(TestCommand { layer, .. })
            if layer.locked =>
        {
            Pinning::Locked
        }
        _ => Pinning::Use,
    };
    let _ = LOADING.set((cli.set.clone(), pinning));
    let _ = CONTEXT.set(cli.context.clone());
    // A normal user's builds run inside a user namespace of their own,
    // where unpacked images keep their owners and steps can chown.
    if matches!(
        cli.command,
        Command::Build(_)
            | Command::Push(_)
            | Command::Test(_)
            | Command::Run(_)
            | Command::Gc
            | Command::Lock(_)
    ) && let Some(code) = imgbuild::sandbox::reenter_in_userns()
    {
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let result = match &cli.command {
        Command::Build(a) => build::run(&cli, a),
        Command::Plan(a) => plan::run(&cli, a),
        Command::Graph(a) => graph::run(&cli, a),
        Command::Ci(a) => ci::run(&cli, a),
        Command::Check => check::run(&cli),
        Command::Inspect(a) => inspect::run(&cli, a),
        Command::Gc => gc::run(&cli),
        Command::Lock(a) => lock::run(&cli, a),
        Command::Push(a) => build::push_command(&cli, &a.select, &a.layer, &a.push),
        Command::Tag(a) => remote::tag(&cli, a),
        Command::Copy(a) => remote::copy(&cli, a),
        Command::Digest(a) => remote::digest(&cli, a),
        Command::Ls(a) => remote::ls(&cli, a),
        Command::Delete(a) => remote::delete(&cli, a),
        Command::Login(a) => remote::login(&cli, a),
        Command::Test(a) => build::test_command(&cli, &a.select, &a.layer),
        Command::Run(a) => run::run(&cli, a),
        Command::Sbom(a) => sbom::run(&cli, a),
        Command::Keygen(a) => sign::keygen(&cli, a),
        Command::Sign(a) => sign::sign(&cli, a),
        Command::Verify(a) => sign::verify(&cli, a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if cli.json && !f.reported {
                print_json(&serde_json::json!({ "error": f.error.to_string(), "exit": f.code }));
            }
            // Our errors name their cause in their own message.
            let text = f.error.to_string();
            if !text.is_empty() {
                eprintln!("error: {text}");
            }
            ExitCode::from(f.code)
        }
    }
}
