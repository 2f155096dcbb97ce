//! `imgbuild push` and `build --push`: build what is needed, then push.
use std::collections::BTreeMap;

use clap::Args;
use serde::Serialize;

use imgbuild::build::ImageOutcome;
use imgbuild::registry::Reference;
use imgbuild::registry::transfer::{self, PushStats};
use imgbuild::spec::{Parent, Spec};
use imgbuild::store::Store;

use super::{Failure, print_json};

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
}

#[derive(Serialize)]
pub struct Pushed {
    pub name: String,
    pub reference: String,
    pub digest: String,
    pub tags: Vec<String>,
    pub stats: PushStats,
}

/// The prefix to push under.
pub fn prefix(args: &PushArgs, spec: &Spec) -> Result<String, Failure> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    args.registry
        .clone()
        .or_else(|| spec.registry.clone())
        .or_else(|| env("IMGBUILD_REGISTRY"))
        .or_else(|| env("CI_REGISTRY_IMAGE"))
        .map(|p| p.trim_end_matches('/').to_string())
        .ok_or_else(|| {
            Failure::usage(
                "push needs a registry: pass --registry HOST/PATH, set `registry:` in images.yaml, or set IMGBUILD_REGISTRY",
            )
        })
}

/// References an image is pushed to, grouped by repository: the image's
/// name with `latest`, its `tags:` (`tag` or `repo:tag`) and `--tag`s.
pub fn destinations(
    prefix: &str,
    name: &str,
    tags: &[String],
    extra: &[String],
) -> Result<BTreeMap<String, Vec<String>>, Failure> {
    let mut by_repo: BTreeMap<String, Vec<String>> = BTreeMap::new();
    by_repo
        .entry(format!("{prefix}/{name}"))
        .or_default()
        .push("latest".into());
    for t in tags.iter().chain(extra) {
        let (repo, tag) = match t.rsplit_once(':') {
            Some((r, tag)) if !tag.contains('/') => (format!("{prefix}/{r}"), tag.to_string()),
            _ => (format!("{prefix}/{name}"), t.clone()),
        };
        let list = by_repo.entry(repo).or_default();
        if !list.contains(&tag) {
            list.push(tag);
        }
    }
    for repo in by_repo.keys() {
        format!("{repo}:latest")
            .parse::<Reference>()
            .map_err(Failure::usage)?;
    }
    Ok(by_repo)
}

/// Pushes built images; returns what was pushed.
pub fn push_images(
    store: &Store,
    spec: &Spec,
    images: &[&ImageOutcome],
    args: &PushArgs,
    net: &super::net::Net<'_>,
) -> Result<Vec<Pushed>, Failure> {
    let prefix = prefix(args, spec)?;
    let (client, known, rt) = (&net.client, &net.known, &net.rt);
    // Parents first: a shared blob's first home is the image that adds it,
    // and children mount it from there.
    let depth = |name: &str| {
        let mut d = 0;
        let mut cur = &spec.images[name].parent;
        while let Parent::Image(p) = cur {
            d += 1;
            cur = &spec.images[p].parent;
        }
        d
    };
    let mut images: Vec<&&ImageOutcome> = images.iter().collect();
    images.sort_by_key(|i| depth(&i.name));
    let mut items = Vec::new();
    let mut meta = Vec::new();
    for image in images {
        let spec_image = &spec.images[&image.name];
        // Layers built or fetched with a cache repository are in it: mount
        // from there when it is on the same registry.
        if let Some(cache) = &net.cache_repo {
            for l in &image.record.layers {
                known.guess(&cache.registry, &l.digest, &cache.repository);
            }
        }
        // The parent's layers most likely sit in the parent's repository
        // already: offer it as the mount source (an upload if it is not).
        if let Parent::Image(parent) = &spec_image.parent {
            let inherited = image
                .record
                .layers
                .len()
                .saturating_sub(spec_image.layers.len());
            if let Ok(r) = format!("{prefix}/{parent}:latest").parse::<Reference>() {
                for l in &image.record.layers[..inherited] {
                    known.guess(&r.registry, &l.digest, &r.repository);
                }
            }
        }
        for (repo, tags) in destinations(&prefix, &image.name, &spec_image.tags, &args.tags)? {
            let dest: Reference = format!("{repo}:{}", tags[0])
                .parse()
                .map_err(Failure::usage)?;
            items.push(transfer::PushItem {
                record: &image.record,
                dest: dest.clone(),
                tags: tags[1..].to_vec(),
            });
            meta.push((
                image.name.clone(),
                dest.to_string(),
                image.manifest.clone(),
                tags,
            ));
        }
    }
    let stats = rt
        .block_on(transfer::push_many(client, store, &items, known))
        .map_err(Failure::failed)?;
    Ok(meta
        .into_iter()
        .zip(stats)
        .map(|((name, reference, digest, tags), stats)| Pushed {
            name,
            reference,
            digest,
            tags,
            stats,
        })
        .collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_map_to_repositories() {
        let d = destinations(
            "reg.example/agency",
            "client-acme",
            &[
                "client-acme:5.1.4".into(),
                "5.1".into(),
                "fleet:acme".into(),
            ],
            &["ci-123".into()],
        )
        .ok()
        .unwrap();
        assert_eq!(
            d["reg.example/agency/client-acme"],
            ["latest", "5.1.4", "5.1", "ci-123"]
        );
        assert_eq!(d["reg.example/agency/fleet"], ["acme"]);
    }
}
