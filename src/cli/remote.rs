//! Registry commands, like crane's: tag, copy, digest, ls, delete, login,
//! and inspect of a registry reference.
use std::io::Read;

use clap::Args;

use imgbuild::attach::carry;
use imgbuild::registry::auth::{Sources, base64_encode};
use imgbuild::registry::transfer::{self, Known};
use imgbuild::registry::{Client, Reference};

use super::{Cli, Failure, print_json, runtime};

#[derive(Args)]
pub struct Net {
    /// Speak plain HTTP to this registry (loopback registries always are).
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure: Vec<String>,
}

impl Net {
    pub(super) fn client(&self) -> Result<Client, Failure> {
        Client::new(Sources::from_process(), self.insecure.clone()).map_err(Failure::failed)
    }
}

fn reference(s: &str) -> Result<Reference, Failure> {
    s.parse().map_err(Failure::usage)
}

#[derive(Args)]
pub struct TagArgs {
    /// The image: HOST/REPO:TAG or HOST/REPO@sha256:….
    src: String,
    /// A tag (in the same repository), or a full reference.
    dst: String,
    #[command(flatten)]
    carry: Carry,
    #[command(flatten)]
    net: Net,
}

/// What goes along with an image copied to another repository.
#[derive(Args)]
pub struct Carry {
    /// Copy the image alone, without its referrers (SBOMs, provenance,
    /// attestations, signatures), which otherwise go with it.
    #[arg(long)]
    no_referrers: bool,
    /// Also sign the copy, as the destination names it (cosign's format):
    /// a signature names its repository, so one made for the source does
    /// not vouch for the copy under a policy matching the repository.
    #[arg(long, value_name = "FILE|env://VAR")]
    sign_key: Option<String>,
}

pub fn tag(cli: &Cli, a: &TagArgs) -> Result<(), Failure> {
    let src = reference(&a.src)?;
    let dst = if a.dst.contains('/') {
        reference(&a.dst)?
    } else {
        src.with_tag(&a.dst)
    };
    copy_between(cli, &a.net, &a.carry, &src, &dst)
}

#[derive(Args)]
pub struct CopyArgs {
    src: String,
    dst: String,
    #[command(flatten)]
    carry: Carry,
    #[command(flatten)]
    net: Net,
}

pub fn copy(cli: &Cli, a: &CopyArgs) -> Result<(), Failure> {
    copy_between(
        cli,
        &a.net,
        &a.carry,
        &reference(&a.src)?,
        &reference(&a.dst)?,
    )
}

fn copy_between(
    cli: &Cli,
    net: &Net,
    carry: &Carry,
    src: &Reference,
    dst: &Reference,
) -> Result<(), Failure> {
    // The key first: a bad key or passphrase fails before anything moves.
    let key = match &carry.sign_key {
        Some(k) => Some(imgbuild::sign::load_private(k).map_err(super::sign::failed)?),
        None => None,
    };
    let client = net.client()?;
    let known = Known::default();
    let rt = runtime()?;
    let digest = rt
        .block_on(transfer::copy(&client, src, dst, &known))
        .map_err(Failure::failed)?;
    let carried = if carry.no_referrers {
        Default::default()
    } else {
        rt.block_on(carry::carry(&client, src, dst, &digest, &known))
            .map_err(Failure::failed)?
    };
    if let Some(key) = &key {
        rt.block_on(imgbuild::sign::sign_image(
            &client,
            &dst.with_digest(&digest),
            &[match &dst.tag {
                Some(t) => format!("{}:{t}", imgbuild::sign::repository(dst)),
                None => imgbuild::sign::repository(dst),
            }],
            key,
            &known,
        ))
        .map_err(super::sign::failed)?;
    }
    if cli.json {
        print_json(&serde_json::json!({
            "source": src.to_string(),
            "destination": dst.to_string(),
            "digest": digest,
            "referrers": carried.referrers,
            "signed": key.is_some(),
        }));
    } else {
        println!("{dst}@{digest}");
    }
    Ok(())
}

#[derive(Args)]
pub struct RefArgs {
    reference: String,
    #[command(flatten)]
    net: Net,
}

pub fn digest(cli: &Cli, a: &RefArgs) -> Result<(), Failure> {
    let r = reference(&a.reference)?;
    let client = a.net.client()?;
    // The digest of the bytes received, never a header taken on trust:
    // get_manifest refuses bytes that differ from Docker-Content-Digest
    // or from the digest the reference pins.
    let (bytes, _) = runtime()?
        .block_on(client.get_manifest(&r))
        .map_err(Failure::failed)?;
    let digest = format!("sha256:{}", imgbuild::oci::digest::sha256_hex(&bytes));
    if cli.json {
        print_json(&serde_json::json!({ "reference": r.to_string(), "digest": digest }));
    } else {
        println!("{digest}");
    }
    Ok(())
}

pub fn ls(cli: &Cli, a: &RefArgs) -> Result<(), Failure> {
    let r = reference(&a.reference)?;
    let tags = runtime()?
        .block_on(a.net.client()?.tags(&r))
        .map_err(Failure::failed)?;
    if cli.json {
        print_json(&tags);
    } else {
        for t in tags {
            println!("{t}");
        }
    }
    Ok(())
}

pub fn delete(cli: &Cli, a: &RefArgs) -> Result<(), Failure> {
    let r = reference(&a.reference)?;
    let client = a.net.client()?;
    let rt = runtime()?;
    let digest = match &r.digest {
        Some(d) => d.clone(),
        None => rt
            .block_on(client.head_manifest(&r))
            .map_err(Failure::failed)?
            .ok_or_else(|| Failure::failed(format!("{r} does not exist")))?,
    };
    rt.block_on(client.delete_manifest(&r, &digest))
        .map_err(Failure::failed)?;
    if cli.json {
        print_json(&serde_json::json!({ "deleted": r.to_string(), "digest": digest }));
    } else {
        println!("deleted {r}@{digest}");
    }
    Ok(())
}

/// `inspect` of a registry reference: manifest, config, layers.
pub fn inspect(cli: &Cli, r: &str, net: &Net) -> Result<(), Failure> {
    let r = reference(r)?;
    let client = net.client()?;
    let rt = runtime()?;
    let (bytes, media_type) = rt
        .block_on(client.get_manifest(&r))
        .map_err(Failure::failed)?;
    let digest = format!("sha256:{}", imgbuild::oci::digest::sha256_hex(&bytes));
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).map_err(Failure::failed)?;
    let config = match (
        manifest["config"]["digest"].as_str(),
        manifest["config"]["size"].as_u64(),
    ) {
        (Some(cd), Some(size)) => {
            let buf = rt
                .block_on(client.get_config(&r, cd, size))
                .map_err(Failure::failed)?;
            serde_json::from_slice::<serde_json::Value>(&buf).ok()
        }
        _ => None,
    };
    // SBOMs, provenance, signatures: the referrers API, else the
    // `sha256-<hex>` tag.
    let referrers = rt
        .block_on(imgbuild::attach::referrers::list(&client, &r, &digest))
        .map_err(Failure::failed)?;
    if cli.json {
        let layers: Vec<serde_json::Value> = manifest["layers"]
            .as_array()
            .map(|ls| {
                ls.iter()
                    .map(|l| serde_json::json!({"digest": l["digest"], "size": l["size"], "media_type": l["mediaType"]}))
                    .collect()
            })
            .unwrap_or_default();
        print_json(&serde_json::json!({
            "reference": r.to_string(),
            "digest": digest,
            "media_type": media_type,
            "manifest": manifest,
            "config": config,
            "layers": layers,
            "referrers": referrers,
        }));
        return Ok(());
    }
    println!("reference {r}");
    println!("digest    {digest}");
    println!("type      {media_type}");
    if let Some(layers) = manifest["layers"].as_array() {
        let total: u64 = layers.iter().filter_map(|l| l["size"].as_u64()).sum();
        println!(
            "size      {:.1} MiB in {} layer(s)",
            total as f64 / 1_048_576.0,
            layers.len()
        );
        for l in layers {
            println!(
                "  {} {:>10.1} KiB",
                l["digest"].as_str().unwrap_or(""),
                l["size"].as_u64().unwrap_or(0) as f64 / 1024.0
            );
        }
    }
    if let Some(m) = manifest["manifests"].as_array() {
        for d in m {
            println!(
                "  {} {}/{}",
                d["digest"].as_str().unwrap_or(""),
                d["platform"]["os"].as_str().unwrap_or("?"),
                d["platform"]["architecture"].as_str().unwrap_or("?")
            );
        }
    }
    if !referrers.is_empty() {
        println!("referrers");
    }
    for d in &referrers {
        let predicate = d["annotations"]["in-toto.io/predicate-type"]
            .as_str()
            .map(|p| format!(" ({p})"))
            .unwrap_or_default();
        println!(
            "  {} {}{predicate}",
            d["digest"].as_str().unwrap_or(""),
            d["artifactType"].as_str().unwrap_or("?"),
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct LoginArgs {
    /// The registry host.
    host: String,
    #[arg(short, long)]
    username: String,
    /// Read the password from standard input (never from the command line).
    #[arg(long)]
    password_stdin: bool,
}

/// Stores credentials in Docker's config.json, where docker, crane and
/// skopeo find them too.
pub fn login(_cli: &Cli, a: &LoginArgs) -> Result<(), Failure> {
    if !a.password_stdin {
        return Err(Failure::usage(
            "pass the password on standard input with --password-stdin",
        ));
    }
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .map_err(Failure::failed)?;
    let password = password.trim_end_matches(['\n', '\r']);
    let path = Sources::from_process().docker_config();
    let mut config: serde_json::Value = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| serde_json::json!({}));
    if !config["auths"].is_object() {
        config["auths"] = serde_json::json!({});
    }
    config["auths"][&a.host] = serde_json::json!({
        "auth": base64_encode(format!("{}:{password}", a.username).as_bytes())
    });
    let dir = imgbuild::fsutil::parent_dir(&path);
    std::fs::create_dir_all(dir).map_err(Failure::failed)?;
    let bytes = serde_json::to_vec_pretty(&config).map_err(Failure::failed)?;
    imgbuild::fsutil::write_atomic(dir, &path, &bytes).map_err(Failure::failed)?;
    // The file holds a password: readable by its owner only.
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    eprintln!("login to {} saved in {}", a.host, path.display());
    Ok(())
}

/// `imgbuild sbom REF`: the SBOM attached to a pushed image, as a referrer.
pub fn sbom(
    _cli: &Cli,
    r: &str,
    format: imgbuild::sbom::Formats,
    net: &Net,
) -> Result<(), Failure> {
    let r = reference(r)?;
    let client = net.client()?;
    let rt = runtime()?;
    let want = match format {
        imgbuild::sbom::Formats::CycloneDx => imgbuild::sbom::cyclonedx::MEDIA_TYPE,
        _ => imgbuild::sbom::spdx::MEDIA_TYPE,
    };
    let bytes = rt
        .block_on(imgbuild::attach::referrers::fetch_artifact(
            &client, &r, want,
        ))
        .map_err(Failure::failed)?;
    match bytes {
        Some(b) => {
            use std::io::Write;
            let _ = std::io::stdout().lock().write_all(&b);
            Ok(())
        }
        None => Err(Failure::failed(format!(
            "{r} has no {want} referrer; push it with `imgbuild build --push` (which attaches the SBOM)"
        ))),
    }
}

/// `imgbuild sbom REF --full`: the SBOM attached to a pushed image, its
/// parents' followed through the registry and merged into one document.
pub fn sbom_full(_cli: &Cli, r: &str, media_type: &'static str, net: &Net) -> Result<(), Failure> {
    let r = reference(r)?;
    let client = net.client()?;
    let bytes = runtime()?
        .block_on(imgbuild::sbom::follow::from_registry(
            &client, &r, media_type,
        ))
        .map_err(Failure::failed)?;
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(&bytes);
    Ok(())
}
