//! Every environment variable imgbuild reads, in one place (the README's
//! "Environment" table lists the same). Code reads them through [`var`] or
//! [`var_os`] with these constants, never by a string of its own.

/// The store's directory (default `$XDG_CACHE_HOME/imgbuild`, then `~/.cache/imgbuild`).
pub const IMGBUILD_HOME: &str = "IMGBUILD_HOME";
/// The base of the default store directory.
pub const XDG_CACHE_HOME: &str = "XDG_CACHE_HOME";
/// The user's home: the default store and Docker's `~/.docker/config.json`.
pub const HOME: &str = "HOME";
/// Where `push` puts images when neither `--registry` nor `registry:` says.
pub const IMGBUILD_REGISTRY: &str = "IMGBUILD_REGISTRY";
/// The shared layer cache repository when `--cache-repo` is not given.
pub const IMGBUILD_CACHE_REPO: &str = "IMGBUILD_CACHE_REPO";
/// The Debian mirror when images.yaml names none and the host has no apt sources.
pub const IMGBUILD_DEBIAN_MIRROR: &str = "IMGBUILD_DEBIAN_MIRROR";
/// The `org.opencontainers.image.revision` label (empty: leave it out).
pub const IMGBUILD_REVISION: &str = "IMGBUILD_REVISION";
/// The `org.opencontainers.image.source` label.
pub const IMGBUILD_SOURCE: &str = "IMGBUILD_SOURCE";
/// Every timestamp in layers and configs (seconds since 1970).
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";
/// Set by imgbuild itself when it re-runs inside its own user namespace.
pub const IMGBUILD_USERNS: &str = "IMGBUILD_USERNS";
/// Any value: progress as plain lines, not bars.
pub const CI: &str = "CI";
/// GitLab: the commit, a fallback for the revision label.
pub const CI_COMMIT_SHA: &str = "CI_COMMIT_SHA";
/// GitLab: the project's URL, a fallback for the source label.
pub const CI_PROJECT_URL: &str = "CI_PROJECT_URL";
/// GitLab: the project's registry path, the last fallback for `push`'s prefix.
pub const CI_REGISTRY_IMAGE: &str = "CI_REGISTRY_IMAGE";
/// GitLab: the registry host whose credentials the next three give.
pub const CI_REGISTRY: &str = "CI_REGISTRY";
pub const CI_REGISTRY_USER: &str = "CI_REGISTRY_USER";
pub const CI_REGISTRY_PASSWORD: &str = "CI_REGISTRY_PASSWORD";
pub const CI_JOB_TOKEN: &str = "CI_JOB_TOKEN";
/// containers/image's credentials file.
pub const REGISTRY_AUTH_FILE: &str = "REGISTRY_AUTH_FILE";
/// podman's credentials live in `$XDG_RUNTIME_DIR/containers/auth.json`.
pub const XDG_RUNTIME_DIR: &str = "XDG_RUNTIME_DIR";
/// Docker's configuration directory (default `~/.docker`).
pub const DOCKER_CONFIG: &str = "DOCKER_CONFIG";
/// GitLab's docker config variable: the JSON of a `config.json` (a CI/CD
/// variable), or the path of one (a CI/CD variable of type File).
pub const DOCKER_AUTH_CONFIG: &str = "DOCKER_AUTH_CONFIG";

/// The passphrase of the signing key (`--sign-key`, `sign --key`, `keygen`).
pub const IMGBUILD_SIGN_PASSWORD: &str = "IMGBUILD_SIGN_PASSWORD";
/// cosign's name for the same, read when IMGBUILD_SIGN_PASSWORD is unset.
pub const COSIGN_PASSWORD: &str = "COSIGN_PASSWORD";
/// GitLab CI's pipeline and job addresses, for provenance.
pub const CI_PIPELINE_URL: &str = "CI_PIPELINE_URL";
pub const CI_JOB_URL: &str = "CI_JOB_URL";

/// Where the `git` command of `git:` sources is looked for.
pub const PATH: &str = "PATH";
// A source's `token_env: NAME` names a variable of the user's choosing; it
// is read (through [`var`]) only when that source is fetched.

/// A variable's value, set even when empty (a passphrase may be).
pub fn var_set(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A variable's value; unset and empty are the same.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}
