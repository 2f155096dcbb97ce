//! `imgbuild run NAME -- CMD…`
use std::io::Write;

use clap::Args;

use imgbuild::build::Session;
use imgbuild::build::remote::{Remote, RemoteOptions};
use imgbuild::sandbox::Stream;

use super::progress::Progress;
use super::{Cli, Failure, LayerArgs, load, open_store};

#[derive(Args)]
pub struct RunArgs {
    /// An image of images.yaml.
    name: String,
    #[command(flatten)]
    layer: LayerArgs,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// Single quotes for sh.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub fn run(cli: &Cli, args: &RunArgs) -> Result<(), Failure> {
    let spec = load(&cli.file)?;
    let opts = args.layer.options(&spec)?;
    let store = open_store()?;
    let progress = Progress::new(true);
    let remote = Remote::new(&store, &RemoteOptions::default(), &progress)?;
    let session = Session::new(&store, &spec, &opts).with_puller(&remote);
    let results = session.build(std::slice::from_ref(&args.name), &progress)?;
    let outcome = match results.get(&args.name) {
        Some(Ok(o)) => o,
        Some(Err(e)) => return Err(Failure::failed(e)),
        None => return Err(Failure::failed(format!("{} was not built", args.name))),
    };
    // argv as one shell command, each word quoted: no second expansion.
    let command = args
        .command
        .iter()
        .map(|a| quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    let failed = session.run_in_image(
        &args.name,
        &outcome.record,
        &[command],
        &|stream, line| match stream {
            Stream::Stdout => {
                let _ = writeln!(std::io::stdout(), "{line}");
            }
            Stream::Stderr => {
                let _ = writeln!(std::io::stderr(), "{line}");
            }
        },
    )?;
    match failed {
        None => Ok(()),
        Some((_, code)) => Err(Failure::silent(u8::try_from(code).unwrap_or(1).max(1))),
    }
}
