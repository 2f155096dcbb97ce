//! `imgbuild check`
use imgbuild::build::{OwnerFinding, check_owners};
use imgbuild::spec::{Problem, Spec, SpecError};
use imgbuild::store::Store;

use super::{Cli, Failure, print_json};

pub fn run(cli: &Cli) -> Result<(), Failure> {
    let result = super::load_spec(&cli.file).and_then(|spec| {
        let notes = owners(&spec)?;
        Ok((spec, notes))
    });
    match result {
        Ok((spec, notes)) => {
            if cli.json {
                print_json(&serde_json::json!({
                    "ok": true,
                    "images": spec.images.keys().collect::<Vec<_>>(),
                    "notes": notes,
                }));
            } else {
                for n in &notes {
                    eprintln!("note: {n}");
                }
                println!("{}: {} image(s), OK", cli.file.display(), spec.images.len());
            }
            Ok(())
        }
        Err(SpecError::Invalid { file, problems }) if cli.json => {
            print_json(&serde_json::json!({ "ok": false, "file": file, "problems": problems }));
            Err(Failure::usage(format!(
                "{} problem(s) in {}",
                problems.len(),
                file.display()
            ))
            .reported())
        }
        Err(e) => Err(e.into()),
    }
}

/// Owner names checked as `build` will resolve them (issue 13: `check`
/// passed what `build` refused): a name the parent lacks is a problem; a
/// parent not built yet is a note, as its accounts are not known.
fn owners(spec: &Spec) -> Result<Vec<String>, SpecError> {
    if !spec.images.values().any(|i| {
        i.layers
            .iter()
            .any(|l| l.owner.as_ref().is_some_and(|o| o.has_names()))
    }) {
        return Ok(Vec::new());
    }
    let findings = match Store::default_root()
        .map_err(|e| e.to_string())
        .and_then(|root| Store::open(&root).map_err(|e| e.to_string()))
        .and_then(|store| check_owners(&store, spec).map_err(|e| e.to_string()))
    {
        Ok(f) => f,
        Err(why) => {
            return Ok(vec![format!(
                "owner names are not checked against parent images: the store cannot be read ({why})"
            )]);
        }
    };
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    for f in findings {
        match f {
            OwnerFinding::Missing {
                image,
                pos,
                owner,
                parent,
                why,
            } => {
                let (message, hint) = match &parent {
                    None => (
                        format!("owner `{owner}`: {why} (it starts from scratch)"),
                        "give a numeric id (`owner: \"33:33\"`), or build from an image whose /etc/passwd and /etc/group have the name".to_string(),
                    ),
                    Some(p) => (
                        format!("owner `{owner}`: {why}, as `{p}` was last built"),
                        format!("add the account to `{p}` (its /etc/passwd and /etc/group, or a Debian package or `run:` step that creates it), or give a numeric id; if `{p}` adds it since, build `{p}` and check again"),
                    ),
                };
                problems.push(Problem {
                    file: (pos.file != 0).then(|| spec.file_at(pos).to_path_buf()),
                    line: pos.line,
                    column: pos.col,
                    image: Some(image),
                    message,
                    hint: Some(hint),
                });
            }
            OwnerFinding::Unknown {
                image,
                owner,
                parent,
            } => notes.push(format!(
                "image {image}: owner `{owner}` cannot be checked yet: names resolve against the /etc/passwd and /etc/group of `{parent}`, which has not been built here (build it, then check again)"
            )),
        }
    }
    if problems.is_empty() {
        Ok(notes)
    } else {
        problems.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        Err(SpecError::Invalid {
            file: spec.file.clone(),
            problems,
        })
    }
}
