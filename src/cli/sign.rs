//! `imgbuild keygen`, `imgbuild sign`, `imgbuild verify`
use std::path::PathBuf;

use clap::Args;

use imgbuild::registry::transfer::Known;
use imgbuild::sign::{self, SignError};

use super::remote::Net;
use super::{Cli, Failure, print_json, runtime};

#[derive(Args)]
pub struct KeygenArgs {
    /// Write PREFIX.key (encrypted with $IMGBUILD_SIGN_PASSWORD, cosign's
    /// format) and PREFIX.pub.
    #[arg(long, default_value = "cosign", value_name = "PREFIX")]
    prefix: PathBuf,
}

#[derive(Args)]
pub struct SignArgs {
    /// The image: HOST/REPO:TAG or HOST/REPO@sha256:….
    reference: String,
    /// The private key: a file or env://VAR (cosign's encrypted format).
    #[arg(long, value_name = "FILE|env://VAR")]
    key: String,
    #[command(flatten)]
    net: Net,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The image: HOST/REPO:TAG or HOST/REPO@sha256:….
    reference: String,
    /// The public key (PEM): a file or env://VAR.
    #[arg(long, value_name = "FILE|env://VAR")]
    key: String,
    #[command(flatten)]
    net: Net,
}

pub(super) fn failed(e: SignError) -> Failure {
    match e {
        SignError::Key(_) | SignError::NoPassphrase | SignError::NoKeyVariable(_) => {
            Failure::usage(e)
        }
        SignError::Io { .. } => Failure::usage(e),
        e => Failure::failed(e),
    }
}

pub fn keygen(cli: &Cli, args: &KeygenArgs) -> Result<(), Failure> {
    let pass = sign::passphrase().map_err(failed)?;
    let (private, public) = sign::key::generate(pass.as_bytes());
    let key_path = args.prefix.with_extension("key");
    let pub_path = args.prefix.with_extension("pub");
    for p in [&key_path, &pub_path] {
        if p.exists() {
            return Err(Failure::usage(format!(
                "{} exists; move it away or pass another --prefix",
                p.display()
            )));
        }
    }
    let write = |path: &PathBuf, text: &str, mode: u32| {
        // The temporary file is 0600 from the start: the key is never
        // readable by others, even for a moment.
        imgbuild::fsutil::write_atomic(imgbuild::fsutil::parent_dir(path), path, text.as_bytes())
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            })
            .map_err(|e| Failure::failed(format!("{}: {e}", path.display())))
    };
    write(&key_path, &private, 0o600)?;
    write(&pub_path, &public, 0o644)?;
    if cli.json {
        print_json(&serde_json::json!({
            "private_key": key_path, "public_key": pub_path,
        }));
    } else if !cli.quiet {
        eprintln!(
            "wrote {} (encrypted) and {}",
            key_path.display(),
            pub_path.display()
        );
    }
    Ok(())
}

pub fn sign(cli: &Cli, args: &SignArgs) -> Result<(), Failure> {
    let r = args.reference.parse().map_err(Failure::usage)?;
    let key = sign::load_private(&args.key).map_err(failed)?;
    let client = args.net.client()?;
    let digest = runtime()?
        .block_on(sign::sign_image(&client, &r, &[], &key, &Known::default()))
        .map_err(failed)?;
    if cli.json {
        print_json(
            &serde_json::json!({ "reference": r.to_string(), "digest": digest, "signed": true }),
        );
    } else if !cli.quiet {
        eprintln!("signed {r} ({digest})");
    }
    Ok(())
}

pub fn verify(cli: &Cli, args: &VerifyArgs) -> Result<(), Failure> {
    let r = args.reference.parse().map_err(Failure::usage)?;
    let (key, name) = sign::load_public(&args.key).map_err(failed)?;
    let client = args.net.client()?;
    let rt = runtime()?;
    let digest = rt
        .block_on(sign::verify_image(&client, &r, &key, &name))
        .map_err(failed)?;
    // The attestations attached beside it (SBOMs, provenance) must verify
    // too, and be about this image.
    let attested = rt
        .block_on(imgbuild::attach::verify::attestations(
            &client, &r, &digest, &key, &name,
        ))
        .map_err(Failure::failed)?;
    if cli.json {
        print_json(&serde_json::json!({
            "reference": r.to_string(), "digest": digest, "verified": true,
            "attestations": attested,
        }));
    } else if !cli.quiet {
        println!("{r}: signed by {name} ({digest})");
        for a in &attested {
            println!(
                "  attestation {} ({}): signed by {name}, about this image",
                a.predicate_type, a.artifact
            );
        }
    }
    Ok(())
}
