//! `imgbuild plan`
use imgbuild::build::Session;
use imgbuild::build::plan::Action;
use imgbuild::build::remote::{Remote, RemoteOptions};

use clap::Args;
use imgbuild::graph::changes::{self, ChangeError, Impact};

use super::progress::Progress;
use super::{Cli, Failure, LayerArgs, Selection, load, open_store, print_json};

#[derive(Args)]
pub struct PlanArgs {
    #[command(flatten)]
    select: Selection,
    /// Instead: the images whose inputs changed since this git revision
    /// (a commit, tag or branch), and everything below them, with why.
    #[arg(long, value_name = "REV", conflicts_with_all = ["names", "all"])]
    pub changed_since: Option<String>,
    /// Exit 1 when images.lock does not pin what the planned images ask
    /// for (Debian packages, git sources), as `build --locked` would: a CI
    /// job's cheap check before it builds.
    #[arg(long, conflicts_with = "changed_since")]
    pub locked: bool,
}

pub fn run(cli: &Cli, args: &PlanArgs) -> Result<(), Failure> {
    if let Some(rev) = &args.changed_since {
        let (spec, impact) = changed_since(cli, rev)?;
        if cli.json {
            print_json(&impact);
        } else {
            print_impact(&impact, spec.images.len());
        }
        return Ok(());
    }
    let select = &args.select;
    let spec = load(&cli.file)?;
    let names = select.resolve(&spec)?;
    let layer_args = LayerArgs::defaults();
    let opts = layer_args.options(&spec)?;
    let store = open_store()?;
    // Quiet: only warnings (a pull that fell back to the last one) show.
    let warnings = Progress::new(true);
    let remote = Remote::new(&store, &RemoteOptions::default(), &warnings)?;
    let plans = Session::new(&store, &spec, &opts)
        .with_puller(&remote)
        .plan(&names)?;
    let refused = args.locked.then(|| unpinned_failure(&plans)).flatten();
    if cli.json {
        print_json(&plans);
        return refused.map_or(Ok(()), |f| Err(f.reported()));
    }
    for p in &plans {
        let action = match p.action {
            Action::Reuse => "reuse",
            Action::Assemble => "assemble",
            Action::Build => "build",
        };
        println!("{action:<9} {}", p.name);
        for r in &p.reasons {
            println!("          {r}");
        }
        for u in &p.unpinned {
            println!("          not pinned in images.lock: {u}; run `imgbuild lock`");
        }
    }
    let count = |a: Action| plans.iter().filter(|p| p.action == a).count();
    let build = count(Action::Build);
    println!(
        "{build} image{} to build, {} to assemble (no layer built), {} reused",
        if build == 1 { "" } else { "s" },
        count(Action::Assemble),
        count(Action::Reuse)
    );
    let stale = plans.iter().filter(|p| !p.unpinned.is_empty()).count();
    if stale > 0 {
        println!(
            "{stale} image{} not pinned in images.lock (a --locked build refuses them): run `imgbuild lock` and commit it",
            if stale == 1 { "" } else { "s" }
        );
    }
    refused.map_or(Ok(()), Err)
}

/// `plan --locked`: what `build --locked` would refuse, as its failure.
fn unpinned_failure(plans: &[imgbuild::build::plan::ImagePlan]) -> Option<Failure> {
    let what: Vec<String> = plans
        .iter()
        .filter(|p| !p.unpinned.is_empty())
        .map(|p| format!("{}: {}", p.name, p.unpinned.join(", ")))
        .collect();
    (!what.is_empty()).then(|| {
        Failure::failed(format!(
            "--locked, and images.lock does not pin what images.yaml asks for: {}; run `imgbuild lock` and commit it",
            what.join("; ")
        ))
    })
}

/// The change impact of `rev` on the graph of `-f FILE`, with `--set` and
/// `--context` applied on both sides.
pub fn changed_since(cli: &Cli, rev: &str) -> Result<(imgbuild::spec::Spec, Impact), Failure> {
    let dir = cli.file.parent().unwrap_or(std::path::Path::new("."));
    let revision = imgbuild::build::revision_from_env(dir);
    let loading = changes::Loading {
        file: &cli.file,
        set: &cli.set,
        context: cli.context.as_deref(),
        revision: revision.as_deref(),
    };
    changes::changed_since(&loading, rev).map_err(|e| match e {
        ChangeError::Spec(e) => e.into(),
        ChangeError::Revision(e) => Failure::usage(e),
        e @ ChangeError::Io { .. } => Failure::failed(e),
    })
}

fn print_impact(impact: &Impact, total: usize) {
    let commit: String = impact.commit.chars().take(12).collect();
    let at = match commit.is_empty() {
        true => impact.since.clone(),
        false => format!("{} ({commit})", impact.since),
    };
    eprintln!(
        "since {at}: {} of {total} images affected, {} files changed",
        impact.images.len(),
        impact.changed_files
    );
    use std::io::Write as _;
    // A closed pipe (`| head`) ends the listing quietly.
    let mut out = std::io::stdout().lock();
    for a in &impact.images {
        let _ = writeln!(out, "{}", a.name);
        for r in &a.reasons {
            let _ = writeln!(out, "    {r}");
        }
    }
}
