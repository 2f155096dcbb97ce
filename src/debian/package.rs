//! A binary package as an archive's `Packages` index describes it.
use serde::{Deserialize, Serialize};

/// A version relation of a dependency: `(>= 1.2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Relation {
    /// `<<`
    Less,
    /// `<=`
    LessEq,
    /// `=`
    Eq,
    /// `>=`
    GreaterEq,
    /// `>>`
    Greater,
}

/// One name of a dependency, with its optional architecture qualifier
/// (`:any`, `:native`, `:amd64`) and version relation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Dep {
    pub name: String,
    pub arch: Option<String>,
    pub version: Option<(Relation, String)>,
}

/// `a | b (>= 1)`: any one of the alternatives satisfies it.
pub type Alternatives = Vec<Dep>;

/// What a package provides: a name, optionally versioned (`foo (= 1.0)`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Provide {
    pub name: String,
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// `same`, `foreign`, `allowed` or `no` (the default).
    pub multi_arch: String,
    pub essential: bool,
    /// `required`, `important`, `standard`, `optional`, `extra`.
    pub priority: String,
    pub pre_depends: Vec<Alternatives>,
    pub depends: Vec<Alternatives>,
    pub recommends: Vec<Alternatives>,
    pub conflicts: Vec<Dep>,
    pub breaks: Vec<Dep>,
    pub provides: Vec<Provide>,
    /// The source package name (the binary's own when the field is absent).
    pub source: String,
    /// Path below the mirror's root: `pool/main/a/apt/apt_3.0.3_amd64.deb`.
    pub filename: String,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

impl Package {
    /// A package known only by what identifies its file (a lock's entry):
    /// no relations, not Essential.
    pub fn bare(name: &str, version: &str, architecture: &str) -> Package {
        Package {
            name: name.to_string(),
            version: version.to_string(),
            architecture: architecture.to_string(),
            multi_arch: "no".into(),
            essential: false,
            priority: String::new(),
            pre_depends: Vec::new(),
            depends: Vec::new(),
            recommends: Vec::new(),
            conflicts: Vec::new(),
            breaks: Vec::new(),
            provides: Vec::new(),
            source: name.to_string(),
            filename: String::new(),
            size: 0,
            sha256: String::new(),
        }
    }
}
