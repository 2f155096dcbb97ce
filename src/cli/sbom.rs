//! `imgbuild sbom`
use std::io::Write;

use clap::Args;

use imgbuild::sbom::{Formats, inventory};

use super::{Cli, Failure};

#[derive(Args)]
pub struct SbomArgs {
    /// An image of images.yaml (built), or a registry reference whose
    /// SBOM referrer to print.
    name: String,
    /// spdx (SPDX 2.3 JSON) or cyclonedx (CycloneDX 1.6 JSON).
    #[arg(long, default_value = "spdx", value_name = "spdx|cyclonedx")]
    format: String,
    #[command(flatten)]
    net: super::remote::Net,
}

pub fn run(cli: &Cli, args: &SbomArgs) -> Result<(), Failure> {
    let format: Formats = args.format.parse().map_err(Failure::usage)?;
    if format == Formats::Both {
        return Err(Failure::usage(
            "`sbom` prints one document: pass --format spdx or --format cyclonedx",
        ));
    }
    if args.name.contains('/') {
        return super::remote::sbom(cli, &args.name, format, &args.net);
    }
    let (store, spec, last) = super::inspect::last_built(cli, &args.name)?;
    let inv = inventory(&store, &spec, &args.name, &last.image).map_err(Failure::failed)?;
    for (_, bytes) in format.render(&inv) {
        let _ = std::io::stdout().lock().write_all(&bytes);
    }
    Ok(())
}
