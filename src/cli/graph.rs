//! `imgbuild graph`
use clap::Args;

use imgbuild::graph::{Format, render};

use super::{Cli, Failure, load};

#[derive(Args)]
pub struct GraphArgs {
    /// text, dot, mermaid or json (--json implies json).
    #[arg(long, default_value = "text")]
    format: Format,
}

pub fn run(cli: &Cli, args: &GraphArgs) -> Result<(), Failure> {
    let spec = load(&cli.file)?;
    let format = if cli.json { Format::Json } else { args.format };
    print!("{}", render(&spec, format));
    Ok(())
}
