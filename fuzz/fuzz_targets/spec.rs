//! images.yaml: any text parses to a spec or to problems, never a panic or
//! a hang.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dir = Path::new("/nonexistent-imgbuild-fuzz");
    let _ = imgbuild::spec::Spec::parse(text, &dir.join("images.yaml"), dir);
});
