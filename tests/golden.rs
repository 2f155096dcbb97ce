//! Golden digests: the committed fixture under tests/fixtures/golden must
//! build to the manifest digests in its digests.json, with gzip and zstd.
//!
//! The fixture is copied to a temporary directory with its modes normalised
//! (0644, 0755 for the listed executables, directories 0755), so neither
//! its path, nor git, nor the checkout's umask or mtimes enter the digests.
//! Git keeps no empty directories and no modes but 644/755: the fixture has
//! neither, and modes other than that are set in its images.yaml.
//!
//! After an intended change to what imgbuild writes, regenerate with
//! `tests/regen-golden.sh` (IMGBUILD_REGEN_GOLDEN=1) and commit the diff.
mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{Ctx, copy_tree, validate_layout};
use serde_json::{Value, json};

const EPOCH: i64 = 1_700_000_000;
const IMAGES: [&str; 2] = ["golden-base", "golden-app"];
/// Files of the fixture that are executable; every other file is not.
const EXECUTABLES: [&str; 1] = ["base/usr/bin/greet"];
const SYMLINKS: [(&str, &str); 2] = [
    ("base/usr/bin/hello", "greet"),
    ("app/current", "index.html"),
];
const REGEN: &str = "IMGBUILD_REGEN_GOLDEN";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden")
}

/// Sets every mode in the copy from the fixture's definition, not from
/// whatever the checkout left.
fn normalise_modes(root: &Path, dir: &Path) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if m.file_type().is_symlink() {
            continue;
        }
        let mode = if m.is_dir() {
            normalise_modes(root, &p);
            0o755
        } else if EXECUTABLES.contains(&rel.as_str()) {
            0o755
        } else {
            0o644
        };
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// What digests.json holds for one compression: per image, the manifest
/// and config digests and each of its own layers' digest and diff_id.
fn describe(out: &Path, report: &common::Report) -> Value {
    let mut images = serde_json::Map::new();
    for name in IMAGES {
        let img = validate_layout(out, name);
        assert_eq!(img.manifest_digest, report.manifest(name), "{name}");
        let own = report.layers(name).len();
        let layers: Vec<Value> = img.layers[img.layers.len() - own..]
            .iter()
            .map(|l| json!({"digest": l.digest, "diff_id": l.diff_id}))
            .collect();
        images.insert(
            name.to_string(),
            json!({
                "manifest": img.manifest_digest,
                "config": img.config_digest,
                "layers": layers,
            }),
        );
    }
    Value::Object(images)
}

/// Where an expected and an actual image differ, in words.
fn explain(name: &str, want: &Value, got: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for field in ["manifest", "config"] {
        if want[field] != got[field] {
            out.push(format!(
                "  {name}: {field} expected {} got {}",
                want[field], got[field]
            ));
        }
    }
    let empty = Vec::new();
    let (wl, gl) = (
        want["layers"].as_array().unwrap_or(&empty),
        got["layers"].as_array().unwrap_or(&empty),
    );
    if wl.len() != gl.len() {
        out.push(format!(
            "  {name}: {} layers expected, {} built",
            wl.len(),
            gl.len()
        ));
    }
    for (i, (w, g)) in wl.iter().zip(gl).enumerate() {
        match (w["diff_id"] == g["diff_id"], w["digest"] == g["digest"]) {
            (true, true) => {}
            (true, false) => out.push(format!(
                "  {name}: layer {i}: same tar, different compressed bytes (the compressor's output changed)"
            )),
            (false, _) => out.push(format!(
                "  {name}: layer {i}: the tar changed (diff_id expected {} got {})",
                w["diff_id"], g["diff_id"]
            )),
        }
    }
    if out.is_empty() && want["manifest"] != got["manifest"] {
        out.push(format!("  {name}: only the manifest changed"));
    }
    out
}

#[test]
fn golden_fixture_builds_to_the_committed_digests() {
    let fixture = fixture_dir();
    for (link, target) in SYMLINKS {
        let p = fixture.join(link);
        let t = fs::read_link(&p).unwrap_or_else(|_| {
            panic!(
                "{} must be a symlink to {target} (is git's core.symlinks off?)",
                p.display()
            )
        });
        assert_eq!(t, Path::new(target), "{}", p.display());
    }

    let cx = Ctx::new().with_epoch(EPOCH);
    copy_tree(&fixture, &cx.root);
    let _ = fs::remove_file(cx.root.join("digests.json"));
    normalise_modes(&cx.root, &cx.root);
    fs::set_permissions(&cx.root, fs::Permissions::from_mode(0o755)).unwrap();

    // Tags come from vars: the file's, overridden by the image's own.
    let graph = cx.run(&["--json", "graph"]).success().json();
    let tags: BTreeMap<String, Value> = graph["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["name"].as_str().unwrap().to_string(), i["tags"].clone()))
        .collect();
    assert_eq!(tags["golden-base"], json!(["1.2.3"]));
    assert_eq!(tags["golden-app"], json!(["2.0.0", "golden-app:stable"]));

    let mut actual = serde_json::Map::new();
    actual.insert("source_date_epoch".into(), json!(EPOCH));
    let mut layouts = Vec::new();
    for compression in ["gzip", "zstd"] {
        let out = cx.scratch.join(compression);
        let report = cx.build_all_oci(compression, &out);
        actual.insert(compression.into(), describe(&out, &report));
        layouts.push(out);
    }
    let actual = Value::Object(actual);

    // A few facts the digests stand for, so a regeneration cannot bless
    // them away unnoticed.
    let app = validate_layout(&layouts[0], "golden-app");
    let c = &app.config["config"];
    assert_eq!(
        c["Env"],
        json!([
            "PATH=/usr/bin:/bin",
            "TZ=UTC",
            "APP_CHANNEL=stable",
            "APP_RELEASE=2.0.0"
        ])
    );
    assert_eq!(c["Entrypoint"], json!(["/usr/bin/greet"]));
    assert_eq!(c["Cmd"], json!(["--serve"]));
    assert_eq!(c["Labels"]["org.opencontainers.image.version"], "2.0.0");
    assert_eq!(c["Labels"]["org.opencontainers.image.title"], "golden base");
    assert_eq!(app.config["created"], "2023-11-14T22:13:20Z");
    let conf = app.layers[2].entry("etc/app/app.conf");
    assert_eq!((conf.mode, conf.uid, conf.gid), (0o640, 33, 33));
    let base = validate_layout(&layouts[0], "golden-base");
    assert_eq!(base.layers[0].entry("usr/bin/greet").mode, 0o755);
    assert_eq!(base.layers[0].entry("etc/passwd").mode, 0o644);

    let file = fixture.join("digests.json");
    let pretty = serde_json::to_string_pretty(&actual).unwrap() + "\n";
    if std::env::var_os(REGEN).is_some_and(|v| !v.is_empty() && v != "0") {
        fs::write(&file, &pretty).unwrap();
        eprintln!("golden: wrote {}", file.display());
        return;
    }
    let expected: Value = match fs::read(&file) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", file.display())),
        Err(e) => panic!(
            "{}: {e}; generate it with tests/regen-golden.sh",
            file.display()
        ),
    };
    if expected == actual {
        return;
    }
    let mut why = Vec::new();
    if expected["source_date_epoch"] != actual["source_date_epoch"] {
        why.push("  the fixture's SOURCE_DATE_EPOCH changed".to_string());
    }
    for compression in ["gzip", "zstd"] {
        for name in IMAGES {
            for line in explain(
                name,
                &expected[compression][name],
                &actual[compression][name],
            ) {
                why.push(format!("{compression}: {}", line.trim_start()));
            }
        }
    }
    // Keep what was built, to look at.
    let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join("golden-actual");
    let _ = fs::remove_dir_all(&keep);
    for l in &layouts {
        copy_tree(l, &keep.join(l.file_name().unwrap()));
    }
    fs::write(keep.join("digests.json"), &pretty).unwrap();
    panic!(
        "the golden fixture no longer builds to {}:\n{}\n\n\
         The images built are kept in {} (OCI layouts; digests.json there is what this build gives).\n\
         If the change is intended (a new layer format, config field or compressor), regenerate with\n    \
         tests/regen-golden.sh        (or: {REGEN}=1 cargo test --test golden)\n\
         and commit tests/fixtures/golden/digests.json with the change, saying why digests moved.\n\
         If not, the change broke reproducibility: every user's images get new digests.",
        file.display(),
        why.join("\n"),
        keep.display()
    );
}
