//! `imgbuild sbom`
use std::io::Write;

use clap::Args;

use imgbuild::sbom::{Cache, Formats, Parents, document};

use super::{Cli, Failure};

#[derive(Args)]
pub struct SbomArgs {
    /// An image of images.yaml (built), or a registry reference whose
    /// SBOM referrer to print.
    name: String,
    /// spdx (SPDX 2.3 JSON) or cyclonedx (CycloneDX 1.6 JSON).
    #[arg(long, default_value = "spdx", value_name = "spdx|cyclonedx")]
    format: String,
    /// The whole image in one document, inherited packages included (the
    /// default, as attached to pushed images, is what the image adds to a
    /// parent of images.yaml, with the parent's SBOM referenced by
    /// checksum). For a registry reference, the parents' SBOMs are
    /// followed in the sibling repositories (PREFIX/PARENT), each checked
    /// against the checksum its child gives, and merged: the same document
    /// as `sbom NAME --full` from the build. Exit 1 when a parent's SBOM is
    /// missing there or has other bytes than its reference pins.
    #[arg(long)]
    full: bool,
    #[command(flatten)]
    net: super::remote::Net,
}

pub fn run(cli: &Cli, args: &SbomArgs) -> Result<(), Failure> {
    let format: Formats = args.format.parse().map_err(Failure::usage)?;
    let [media_type] = format.media_types()[..] else {
        return Err(Failure::usage(
            "`sbom` prints one document: pass --format spdx or --format cyclonedx",
        ));
    };
    if args.name.contains('/') {
        if args.full {
            return super::remote::sbom_full(cli, &args.name, media_type, &args.net);
        }
        return super::remote::sbom(cli, &args.name, format, &args.net);
    }
    let (store, spec, last) = super::inspect::last_built(cli, &args.name)?;
    let parents = if args.full {
        Parents::Full
    } else {
        Parents::Reference
    };
    let bytes = document(
        &store,
        &spec,
        &args.name,
        &last.image.manifest,
        media_type,
        parents,
        &Cache::default(),
    )
    .map_err(Failure::failed)?;
    let _ = std::io::stdout().lock().write_all(&bytes);
    Ok(())
}
