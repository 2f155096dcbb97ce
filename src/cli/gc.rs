//! `imgbuild gc`
use std::collections::BTreeSet;
use std::path::Path;

use imgbuild::build::StoredRef;
use imgbuild::spec::Spec;
use imgbuild::store::Store;

use super::{Cli, Failure, print_json};

pub fn run(cli: &Cli) -> Result<(), Failure> {
    let root = Store::default_root()?;
    let store = Store::open_exclusive(&root)?;
    // An images.yaml that does not load keeps all its images' blobs.
    let names = |file: &Path| {
        Spec::load(file)
            .ok()
            .map(|s| s.images.into_keys().collect::<BTreeSet<_>>())
    };
    let stats = store.gc(|r: &StoredRef| r.blobs(&store), names)?;
    if cli.json {
        print_json(&stats);
    } else {
        println!(
            "removed {} blob(s), {:.1} MiB, {} unpacked root filesystem(s), and {} temporary file(s) of killed processes, {:.1} MiB; kept {} blob(s), {:.1} MiB",
            stats.blobs_removed,
            stats.bytes_removed as f64 / 1_048_576.0,
            stats.rootfs_removed,
            stats.temps_removed,
            stats.temp_bytes_removed as f64 / 1_048_576.0,
            stats.blobs_kept,
            stats.bytes_kept as f64 / 1_048_576.0
        );
    }
    Ok(())
}
