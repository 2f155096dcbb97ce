//! `imgbuild lock [--update [PKG…]]`
use clap::Args;
use imgbuild::build::Session;
use imgbuild::build::remote::{Remote, RemoteOptions};
use imgbuild::debian::lock::{Lock, path_for};

use super::progress::Progress;
use super::{Cli, Failure, LayerArgs, open_store, print_json};

#[derive(Args)]
pub struct LockArgs {
    /// Resolve again from the archive and the sources' remotes as they are
    /// now: every image and git source, or the images that install one of
    /// the packages named and the git sources named.
    #[arg(long, num_args = 0.., value_name = "PKG|SOURCE")]
    update: Option<Vec<String>>,
    /// Speak plain HTTP to this registry when pulling a parent named by
    /// reference (loopback registries always are).
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure: Vec<String>,
}

pub fn run(cli: &Cli, args: &LockArgs) -> Result<(), Failure> {
    let pinning = match &args.update {
        Some(names) => imgbuild::source::Pinning::Update(names.clone()),
        None => imgbuild::source::Pinning::Use,
    };
    let (spec, pins, _) = super::load_pinned(&cli.file, &cli.set, pinning)?;
    let opts = LayerArgs::defaults().options(&spec)?;
    let store = open_store()?;
    // A parent named by registry reference is pulled: its dpkg status is
    // what the image's packages are resolved over.
    let remote_opts = RemoteOptions {
        insecure: args.insecure.clone(),
        ..RemoteOptions::default()
    };
    // Quiet: only warnings (a pull that fell back to the last one) show.
    let warnings = Progress::new(true);
    let remote = Remote::new(&store, &remote_opts, &warnings)?;
    // A Debian image's parent that this store never built is built first,
    // from the layer cache when one is set (a CI job's fresh store).
    let session = Session::new(&store, &spec, &opts).with_remote(&remote);
    let path = path_for(&spec);
    let old = Lock::read(&path).map_err(Failure::usage)?;
    let (mut lock, outcomes) = session.lock(old.as_ref(), args.update.as_deref())?;
    lock.sources = pins;
    let changed = old.as_ref() != Some(&lock);
    if changed {
        lock.write(&path).map_err(Failure::failed)?;
    }
    if cli.json {
        print_json(&serde_json::json!({
            "lock": path,
            "written": changed,
            "images": outcomes,
            "sources": lock.sources,
        }));
    } else {
        for o in &outcomes {
            eprintln!("{}: {} ({} packages)", o.image, o.action, o.packages);
            for c in &o.changed {
                eprintln!("  {c}");
            }
        }
        for (name, pin) in &lock.sources {
            let was = old.as_ref().and_then(|o| o.sources.get(name));
            let action = match was {
                Some(w) if w.commit == pin.commit => "kept",
                Some(_) => "updated",
                None => "pinned",
            };
            eprintln!("source {name}: {action} {} ({})", pin.commit, pin.reference);
        }
        let what = if changed { "written" } else { "unchanged" };
        eprintln!("{}: {what}", path.display());
    }
    Ok(())
}
