//! `imgbuild check`
use imgbuild::spec::SpecError;

use super::{Cli, Failure, print_json};

pub fn run(cli: &Cli) -> Result<(), Failure> {
    match super::load_spec(&cli.file) {
        Ok(spec) => {
            if cli.json {
                print_json(
                    &serde_json::json!({ "ok": true, "images": spec.images.keys().collect::<Vec<_>>() }),
                );
            } else {
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
