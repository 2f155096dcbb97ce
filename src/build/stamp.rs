//! The provenance stamp: build time, revision and source, from the
//! environment (and git).

use std::path::Path;

use crate::env;
use crate::oci::image::{self, Stamp};

#[derive(Debug, thiserror::Error)]
pub enum StampError {
    #[error(
        "SOURCE_DATE_EPOCH={value} is not a whole number of seconds since 1970; set it to e.g. $(git log -1 --format=%ct)"
    )]
    Epoch { value: String },
}

/// The stamp from the environment: `SOURCE_DATE_EPOCH` (default 0), the
/// revision from `IMGBUILD_REVISION`, `CI_COMMIT_SHA` or git, and the source
/// address from `CI_PROJECT_URL` or git's `origin`, without credentials.
pub fn stamp_from_env(dir: &Path) -> Result<Stamp, StampError> {
    let epoch_given = std::env::var(env::SOURCE_DATE_EPOCH).is_ok_and(|v| !v.trim().is_empty());
    let epoch = match std::env::var(env::SOURCE_DATE_EPOCH) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|e| *e >= 0)
            .ok_or_else(|| StampError::Epoch { value: v.clone() })?,
        _ => 0,
    };
    let revision = revision_from_env(dir);
    let source = match std::env::var(env::IMGBUILD_SOURCE) {
        Ok(v) => Some(v).filter(|v| !v.is_empty()),
        Err(_) => {
            env::var(env::CI_PROJECT_URL).or_else(|| git(dir, &["remote", "get-url", "origin"]))
        }
    }
    .map(|s| strip_credentials(&s));
    Ok(Stamp {
        epoch,
        epoch_given,
        arch: image::host_arch().to_string(),
        os: "linux".to_string(),
        revision,
        source,
    })
}

/// The project's commit: `IMGBUILD_REVISION`, else `CI_COMMIT_SHA`, else
/// git's `HEAD` in `dir`. The revision label and `${git.commit}` use it.
pub fn revision_from_env(dir: &Path) -> Option<String> {
    // Set but empty means "leave it out", unlike the CI fallbacks.
    match std::env::var(env::IMGBUILD_REVISION) {
        Ok(v) => Some(v).filter(|v| !v.is_empty()),
        Err(_) => env::var(env::CI_COMMIT_SHA).or_else(|| git(dir, &["rev-parse", "HEAD"])),
    }
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    // Outside a checkout, spare the two process starts.
    if !dir.ancestors().any(|d| d.join(".git").exists()) {
        return None;
    }
    let git = crate::sandbox::tools::host_tool(crate::sandbox::tools::Tool::Git).ok()?;
    let out = std::process::Command::new(git)
        .arg("-C")
        .arg(dir)
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

/// `https://user:token@host/x` → `https://host/x`: a label must not carry a secret.
pub fn strip_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_labels() {
        assert_eq!(
            strip_credentials("https://gitlab-ci-token:s3cret@gitlab.example.com/agency/fleet.git"),
            "https://gitlab.example.com/agency/fleet.git"
        );
        assert_eq!(strip_credentials("git@host:x/y.git"), "git@host:x/y.git");
        assert_eq!(strip_credentials("https://host/p@q"), "https://host/p@q");
    }
}
