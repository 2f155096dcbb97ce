//! Image references: `[host[:port]/]path[:tag][@sha256:…]`, with Docker
//! Hub's short names expanded the way docker does (`debian` →
//! `docker.io/library/debian:latest`).
use std::fmt;
use std::str::FromStr;

pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's API actually lives.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `host[:port]`, `docker.io` for Docker Hub.
    pub registry: String,
    /// `library/debian`, `agency/moodle/client-acme`.
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:…`
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{input}` is not an image reference: {why}; write host/repository:tag or host/repository@sha256:…"
)]
pub struct ReferenceError {
    pub input: String,
    pub why: &'static str,
}

impl Reference {
    /// The host to send API requests to.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// The tag or digest to ask the registry for: the digest when both are
    /// given, since it is what the user pinned.
    pub fn object(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }

    /// The same repository at a digest.
    pub fn with_digest(&self, digest: &str) -> Reference {
        Reference {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }

    /// True for registries on this machine, which may be spoken to over
    /// plain HTTP without `--insecure-registry`.
    pub fn is_loopback(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => &self.registry,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// As its string, so a reference in JSON reads as the user wrote it
/// (expanded).
impl serde::Serialize for Reference {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn valid_component(c: &str) -> bool {
    // [a-z0-9]+ separated by one of . _ __ or any run of -
    !c.is_empty()
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && c.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

fn valid_tag(t: &str) -> bool {
    let mut bytes = t.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && t.len() <= 128
}

fn valid_digest(d: &str) -> bool {
    match d.split_once(':') {
        Some(("sha256", hex)) => {
            hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        }
        Some(("sha512", hex)) => {
            hex.len() == 128 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        }
        _ => false,
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Reference, ReferenceError> {
        let err = |why| ReferenceError {
            input: input.to_string(),
            why,
        };
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => {
                if !valid_digest(d) {
                    return Err(err("the digest is not sha256: and 64 lowercase hex digits"));
                }
                (r, Some(d.to_string()))
            }
            None => (input, None),
        };
        // A tag follows the last ':' that comes after the last '/'.
        let slash = rest.rfind('/');
        let (name, tag) = match rest.rfind(':') {
            Some(i) if slash.is_none_or(|s| i > s) => (&rest[..i], Some(rest[i + 1..].to_string())),
            _ => (rest, None),
        };
        if let Some(t) = &tag
            && !valid_tag(t)
        {
            return Err(err("the tag takes letters, digits, . _ - (at most 128)"));
        }
        if name.is_empty() {
            return Err(err("the repository is empty"));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.starts_with('[') =>
            {
                (first.to_string(), path.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" || registry == DOCKER_HUB_API {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        let path = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if !path.split('/').all(valid_component) {
            return Err(err(
                "repository path components take lowercase letters, digits and . _ -",
            ));
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Ok(Reference {
            registry,
            repository: path,
            tag,
            digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn docker_hub_short_names_expand() {
        assert_eq!(r("debian").to_string(), "docker.io/library/debian:latest");
        assert_eq!(
            r("debian:trixie").to_string(),
            "docker.io/library/debian:trixie"
        );
        assert_eq!(
            r("bitnami/moodle:5").to_string(),
            "docker.io/bitnami/moodle:5"
        );
        assert_eq!(r("index.docker.io/library/debian").registry, "docker.io");
        assert_eq!(r("debian").api_host(), "registry-1.docker.io");
    }

    #[test]
    fn hosts_ports_paths_tags_digests() {
        let d = format!("sha256:{}", "a".repeat(64));
        let x = r(&format!(
            "127.0.0.1:5000/agency/moodle/client-acme:5.1.4@{d}"
        ));
        assert_eq!(x.registry, "127.0.0.1:5000");
        assert_eq!(x.repository, "agency/moodle/client-acme");
        assert_eq!(x.tag.as_deref(), Some("5.1.4"));
        assert_eq!(x.object(), d);
        assert!(x.is_loopback());
        assert!(r("localhost/x").is_loopback());
        assert!(!r("registry.gitlab.com/a/b").is_loopback());
        let no_tag = r(&format!("registry.example.com:5000/x@{d}"));
        assert_eq!(no_tag.tag, None);
    }

    #[test]
    fn bad_references_say_why() {
        for bad in ["", "UPPER/case", "x:", "x@sha256:abc", "a//b", "x:-tag"] {
            assert!(bad.parse::<Reference>().is_err(), "{bad} parsed");
        }
        let e = "x@md5:00".parse::<Reference>().unwrap_err();
        assert!(e.to_string().contains("sha256"), "{e}");
    }
}
