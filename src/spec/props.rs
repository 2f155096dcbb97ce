//! images.yaml is the user's text: no text makes loading panic; it parses
//! to a spec or to problems with their lines.
use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;

use super::{LoadOptions, ResolvedSource, SourceFailure, SourceFetcher, SourceSpec, Spec};
use crate::mutate;

/// A small images.yaml that uses most of the language (vars, sources,
/// debian, layers with owners and modes, run steps, config, tags), valid in
/// [`super::testutil::tree`].
const SAMPLE: &str = r#"vars:
  release: "1.2.3"
  tz: UTC
sources:
  core: {dir: layers}
images:
  base:
    from: scratch
    debian: {suite: trixie, variant: minbase, packages: [curl, "tzdata=2025b-1"], path_exclude: ["/usr/share/doc/*"]}
    layers:
      - layers/base
    config:
      env: {TZ: "${tz}", PATH: "/usr/bin:/bin"}
      cmd: ["/bin/sh"]
      labels: {org.opencontainers.image.title: base}
    tags: ["${release}"]
  app:
    from: base
    vars: {channel: stable}
    layers:
      - {src: config.php, dest: /var/www/config.php, owner: "33:33", mode: "0640"}
      - {source: core, dest: /srv/core, exclude: ["*.swp"]}
    run:
      - echo hi
    config:
      workdir: /var/www
      user: "33:33"
      ports: [8080, "9090/udp"]
      volumes: [/var/www/data]
    tags: ["${release}-${channel}", "app:${source.core.x}"]
"#;

/// Makes every source available as the directory images.yaml names, with
/// one var: what `dir:` sources would do, without a store.
struct Here<'a>(&'a Path);

impl SourceFetcher for Here<'_> {
    fn fetch(&self, _: &SourceSpec) -> Result<ResolvedSource, SourceFailure> {
        Ok(ResolvedSource {
            root: self.0.to_path_buf(),
            vars: BTreeMap::from([("x".to_string(), "1".to_string())]),
            identity: "dir".into(),
        })
    }
}

fn load(dir: &Path, bytes: &[u8]) -> Result<Spec, String> {
    let text = String::from_utf8_lossy(bytes);
    let opts = LoadOptions {
        fetcher: Some(&Here(dir)),
        revision: Some("0123456789abcdef0123456789abcdef01234567"),
        ..LoadOptions::default()
    };
    // The message is made too: `check` and `build` print it.
    Spec::parse_with(&text, Path::new("images.yaml"), dir, &opts).map_err(|e| e.to_string())
}

/// An images.yaml with `clients:`, and one client's file (the bytes a
/// property mutates), in [`super::testutil::tree`].
const FLEET: &str = r#"images:
  core:
    from: scratch
    layers: [layers/base]
clients:
  files: clients/*/client.yaml
  image: client-${client}
  template:
    from: core
    vars: {site: "${client} site"}
    tags: ["client-${client}:1"]
    layers:
      - {src: config.php, dest: /srv/config.php, mode: "0640"}
"#;
const CLIENT: &str = "vars: {site: Acme}\nlayers:\n  - {src: theme, dest: \"/srv/theme/${client}\"}\ntags: [\"client-acme:latest\"]\nconfig:\n  env: {SITE: \"${site}\"}\n";

fn fleet(client: &[u8]) -> (tempfile::TempDir, Result<Spec, String>) {
    let d = super::testutil::tree();
    std::fs::create_dir_all(d.path().join("clients/acme/theme")).unwrap();
    std::fs::write(d.path().join("clients/acme/theme/x.txt"), "x\n").unwrap();
    std::fs::write(d.path().join("clients/acme/client.yaml"), client).unwrap();
    let spec = load(d.path(), FLEET.as_bytes());
    (d, spec)
}

#[test]
fn the_fleet_sample_is_valid() {
    let (_d, spec) = fleet(CLIENT.as_bytes());
    let spec = spec.unwrap();
    assert_eq!(spec.images["client-acme"].config.env["SITE"], "Acme");
}

#[test]
fn the_sample_is_valid() {
    let d = super::testutil::tree();
    let spec = load(d.path(), SAMPLE.as_bytes()).unwrap();
    assert_eq!(spec.images.len(), 2);
}

proptest! {
    #![proptest_config(mutate::config())]

    #[test]
    fn arbitrary_bytes(bytes in mutate::bytes(512)) {
        let d = super::testutil::tree();
        let _ = load(d.path(), &bytes);
    }

    #[test]
    fn mutated_client_file(bytes in mutate::mutated(CLIENT.as_bytes().to_vec())) {
        let _ = fleet(&bytes);
    }

    #[test]
    fn mutated_sample(bytes in mutate::mutated(SAMPLE.as_bytes().to_vec())) {
        let d = super::testutil::tree();
        let _ = load(d.path(), &bytes);
    }

    /// YAML's own punctuation, in any order: flow and block collections,
    /// anchors, aliases, tags, quotes, documents.
    #[test]
    fn yaml_punctuation(text in "([-:{}\\[\\],&*!|>'\"#%@ \n]|images|from|layers|a|\\$\\{a\\}){0,120}") {
        let d = super::testutil::tree();
        let _ = load(d.path(), text.as_bytes());
    }
}
