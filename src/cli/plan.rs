//! `imgbuild plan`
use imgbuild::build::Session;
use imgbuild::build::plan::Action;
use imgbuild::build::remote::{Remote, RemoteOptions};

use super::progress::Progress;
use super::{Cli, Failure, LayerArgs, Selection, load, open_store, print_json};

pub fn run(cli: &Cli, select: &Selection) -> Result<(), Failure> {
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
    if cli.json {
        print_json(&plans);
        return Ok(());
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
    }
    let count = |a: Action| plans.iter().filter(|p| p.action == a).count();
    let build = count(Action::Build);
    println!(
        "{build} image{} to build, {} to assemble (no layer built), {} reused",
        if build == 1 { "" } else { "s" },
        count(Action::Assemble),
        count(Action::Reuse)
    );
    Ok(())
}
