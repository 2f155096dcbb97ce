//! What the spec tests share: parsing in a directory, a small tree of
//! layer sources, and "these problems were reported".
use std::path::Path;

use super::{Problem, Spec, SpecError};

pub(super) fn parse_in(dir: &Path, text: &str) -> Result<Spec, Vec<Problem>> {
    Spec::parse(text, Path::new("images.yaml"), dir).map_err(|e| match e {
        SpecError::Invalid { problems, .. } | SpecError::Fetch { problems, .. } => problems,
        other => panic!("{other}"),
    })
}

pub(super) fn tree() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("layers/base/etc")).unwrap();
    std::fs::write(d.path().join("layers/base/etc/motd"), "hi\n").unwrap();
    std::fs::write(d.path().join("config.php"), "<?php\n").unwrap();
    d
}

/// Each of `want` ("LINE: message") is among the problems.
pub(super) fn assert_problems(problems: &[Problem], want: &[&str]) {
    let msgs: Vec<String> = problems
        .iter()
        .map(|p| format!("{}: {}", p.line, p.message))
        .collect();
    for w in want {
        assert!(msgs.iter().any(|m| m == w), "{w}: {msgs:?}");
    }
}
