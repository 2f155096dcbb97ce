//! `imgbuild inspect`
use clap::Args;
use serde::Serialize;

use imgbuild::build::{RefRecord, Session};
use imgbuild::oci::image::{hex_of, parse_config};
use imgbuild::spec::Spec;
use imgbuild::store::Store;

use super::{Cli, Failure, LayerArgs, load, open_store, print_json};

#[derive(Args)]
pub struct InspectArgs {
    /// An image of images.yaml, or a registry reference (HOST/REPO:TAG).
    name: String,
    #[command(flatten)]
    net: super::remote::Net,
}

#[derive(Serialize)]
struct Layer<'a> {
    digest: &'a str,
    diff_id: &'a str,
    size: u64,
    media_type: &'a str,
    created_by: Option<String>,
}

/// The store, the spec and the last build of `name` (an image of
/// images.yaml), or what to run first.
pub(super) fn last_built(cli: &Cli, name: &str) -> Result<(Store, Spec, RefRecord), Failure> {
    let spec = load(&cli.file)?;
    let opts = LayerArgs::defaults().options(&spec)?;
    let store = open_store()?;
    let session = Session::new(&store, &spec, &opts);
    session.image(name)?;
    let last = session.last_build(name)?;
    drop(session);
    match last {
        Some(last) => Ok((store, spec, last)),
        None => Err(Failure::usage(format!(
            "{name} has not been built from {} yet; run `imgbuild build {name}`",
            spec.file.display()
        ))),
    }
}

pub fn run(cli: &Cli, args: &InspectArgs) -> Result<(), Failure> {
    // Image names have no `/`; registry references do.
    if args.name.contains('/') {
        return super::remote::inspect(cli, &args.name, &args.net);
    }
    let (store, _, last) = last_built(cli, &args.name)?;
    let rec = &last.image;
    let config_bytes = store.read_blob(&hex_of(&rec.config))?;
    let config = parse_config(&config_bytes, "config").map_err(Failure::failed)?;
    let history: Vec<String> = config
        .history()
        .clone()
        .unwrap_or_default()
        .iter()
        .filter(|h| !h.empty_layer().unwrap_or(false))
        .map(|h| h.created_by().clone().unwrap_or_default())
        .collect();
    let layers: Vec<Layer> = rec
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| Layer {
            digest: &l.digest,
            diff_id: &l.diff_id,
            size: l.size,
            media_type: &l.media_type,
            created_by: history.get(i).cloned(),
        })
        .collect();
    let total: u64 = rec.layers.iter().map(|l| l.size).sum();
    if cli.json {
        print_json(&serde_json::json!({
            "name": args.name,
            "manifest": rec.manifest,
            "config_digest": rec.config,
            "size": total,
            "layers": layers,
            "config": config,
        }));
        return Ok(());
    }
    println!("image     {}", args.name);
    println!("manifest  {}", rec.manifest);
    println!("config    {}", rec.config);
    println!("platform  {}/{}", config.os(), config.architecture());
    println!(
        "size      {:.1} MiB in {} layer(s)",
        total as f64 / 1_048_576.0,
        layers.len()
    );
    for (i, l) in layers.iter().enumerate() {
        println!(
            "  {i:>3} {} {:>10.1} KiB  {}",
            l.digest,
            l.size as f64 / 1024.0,
            l.created_by.as_deref().unwrap_or("")
        );
    }
    if let Some(c) = config.config() {
        let show = |k: &str, v: String| {
            if !v.is_empty() {
                println!("{k:<10}{v}");
            }
        };
        show("env", c.env().clone().unwrap_or_default().join(" "));
        show(
            "entrypoint",
            c.entrypoint()
                .clone()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default(),
        );
        show(
            "cmd",
            c.cmd()
                .clone()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default(),
        );
        show("workdir", c.working_dir().clone().unwrap_or_default());
        show("user", c.user().clone().unwrap_or_default());
        show(
            "ports",
            c.exposed_ports().clone().unwrap_or_default().join(" "),
        );
        let mut labels: Vec<String> = c
            .labels()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.sort();
        for l in labels {
            println!("label     {l}");
        }
    }
    Ok(())
}
