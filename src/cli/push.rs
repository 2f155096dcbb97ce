//! `imgbuild push` and `build --push`: the flags, and the report.
use clap::Args;

use imgbuild::build::remote::{Pushed, RemoteOptions};

use super::print_json;

/// Where and how to push.
#[derive(Args, Clone, Default)]
pub struct PushArgs {
    /// Registry prefix, HOST[:PORT]/PATH (default: `registry:` in images.yaml,
    /// then $IMGBUILD_REGISTRY, then GitLab's $CI_REGISTRY_IMAGE).
    #[arg(long, value_name = "HOST/PATH")]
    pub registry: Option<String>,
    /// More tags to push every image under (besides `latest` and `tags:`).
    #[arg(long = "tag", short = 't', value_name = "TAG")]
    pub tags: Vec<String>,
    /// Speak plain HTTP to this registry (loopback registries always are).
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure: Vec<String>,
    /// A repository that keeps every built layer under its cache key, so
    /// another machine with an empty store fetches instead of building
    /// (default: $IMGBUILD_CACHE_REPO).
    #[arg(long = "cache-repo", value_name = "HOST/REPO")]
    pub cache_repo: Option<String>,
    /// Leave `latest` where it is (a branch other than the default one);
    /// the `--tag`s name the image.
    #[arg(long, requires = "tags")]
    pub no_latest: bool,
    /// Attach an SBOM (default format spdx) to pushed images and OCI
    /// layouts, as an OCI 1.1 referrer.
    #[arg(long, value_name = "spdx|cyclonedx|both", num_args = 0..=1, default_missing_value = "spdx")]
    pub sbom: Option<String>,
    /// How the SBOM of an image built on another image of images.yaml
    /// covers that parent: `reference` (what the image adds, and the
    /// parent's attached SBOM referenced by checksum) or `full` (every
    /// package again, for scanners that do not follow references).
    /// Default: reference.
    #[arg(long, value_name = "reference|full")]
    pub sbom_parents: Option<String>,
    /// Attach SLSA v1 provenance (an in-toto statement) as a referrer.
    #[arg(long)]
    pub provenance: bool,
    /// Sign pushed images (cosign's format) and the attestations (DSSE)
    /// with this key: a file or env://VAR, its passphrase in
    /// $IMGBUILD_SIGN_PASSWORD.
    #[arg(long, value_name = "FILE|env://VAR")]
    pub sign_key: Option<String>,
}

impl PushArgs {
    /// What the library needs of these flags.
    pub fn options(&self) -> RemoteOptions {
        RemoteOptions {
            registry: self.registry.clone(),
            tags: self.tags.clone(),
            insecure: self.insecure.clone(),
            cache_repo: self.cache_repo.clone(),
            no_latest: self.no_latest,
        }
    }
}

pub fn report(json: bool, quiet: bool, pushed: &[Pushed]) {
    if json {
        print_json(&serde_json::json!({ "images": pushed }));
        return;
    }
    if quiet {
        return;
    }
    for p in pushed {
        eprintln!(
            "{}: pushed {}@{} ({} uploaded, {} mounted, {} already there; tags {})",
            p.name,
            p.reference
                .rsplit_once(':')
                .map_or(p.reference.as_str(), |(r, _)| r),
            p.digest,
            p.stats.blobs_uploaded,
            p.stats.blobs_mounted,
            p.stats.blobs_present,
            p.tags.join(", ")
        );
    }
}
