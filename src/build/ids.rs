//! Owner names → numeric ids, from the parent image's /etc/passwd and /etc/group.
use crate::layer::Ids;
use crate::layer::scan::{self, EtcFiles, Found};
use crate::oci::image::{ImageRecord, hex_of};
use std::collections::HashMap;

use crate::spec::{IdSpec, Owner, Parent, Pos, Spec};
use crate::store::{Kind, Store};

use super::BuildError;

/// Why an owner name has no id in the parent image.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error("user `{user}` cannot be looked up: the parent image has no /etc/passwd")]
    NoPasswd { user: String },
    #[error("user `{user}` is not in the parent image's /etc/passwd")]
    UnknownUser { user: String },
    #[error("group `{group}` cannot be looked up: the parent image has no /etc/group")]
    NoGroupFile { group: String },
    #[error("group `{group}` is not in the parent image's /etc/group")]
    UnknownGroup { group: String },
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct MetaRecord {
    digest: String,
    etc: EtcFiles,
}

/// The parent's /etc/passwd and /etc/group, as its top-most layer that
/// mentions each leaves it.
pub struct Accounts {
    pub passwd: Option<String>,
    pub group: Option<String>,
}

impl Accounts {
    /// No accounts: `from: scratch`.
    const NONE: Accounts = Accounts {
        passwd: None,
        group: None,
    };

    pub fn none() -> Accounts {
        Accounts {
            passwd: None,
            group: None,
        }
    }

    pub fn of(store: &Store, image: &ImageRecord) -> Result<Accounts, BuildError> {
        let mut passwd = None;
        let mut group = None;
        for layer in image.layers.iter().rev() {
            let etc = etc_of_layer(store, &layer.digest, &layer.media_type)?;
            if passwd.is_none() && etc.passwd != Found::Absent {
                passwd = Some(etc.passwd);
            }
            if group.is_none() && etc.group != Found::Absent {
                group = Some(etc.group);
            }
            if passwd.is_some() && group.is_some() {
                break;
            }
        }
        let content = |f: Option<Found>| match f {
            Some(Found::Content(s)) => Some(s),
            _ => None,
        };
        Ok(Accounts {
            passwd: content(passwd),
            group: content(group),
        })
    }

    /// Resolves `owner`; `Err` says what is missing.
    pub fn resolve(&self, owner: &Owner) -> Result<Ids, OwnerError> {
        let (uid, primary) = match &owner.user {
            IdSpec::Id(n) => (*n, *n),
            IdSpec::Name(name) => match self
                .passwd
                .as_deref()
                .and_then(|p| crate::passwd::lookup_user(p, name))
            {
                Some(ids) => ids,
                None if name == "root" => (0, 0),
                None if self.passwd.is_none() => {
                    return Err(OwnerError::NoPasswd { user: name.clone() });
                }
                None => {
                    return Err(OwnerError::UnknownUser { user: name.clone() });
                }
            },
        };
        let gid = match &owner.group {
            None => primary,
            Some(IdSpec::Id(n)) => *n,
            Some(IdSpec::Name(name)) => match self
                .group
                .as_deref()
                .and_then(|g| crate::passwd::lookup_group(g, name))
            {
                Some(g) => g,
                None if name == "root" => 0,
                None if self.group.is_none() => {
                    return Err(OwnerError::NoGroupFile {
                        group: name.clone(),
                    });
                }
                None => {
                    return Err(OwnerError::UnknownGroup {
                        group: name.clone(),
                    });
                }
            },
        };
        Ok(Ids { uid, gid })
    }
}

/// What `check` can tell of one layer's owner names without building.
#[derive(Debug)]
pub enum OwnerFinding {
    /// `build` would refuse it: the parent (scratch, or the parent's last
    /// build in the store) has no such name.
    Missing {
        image: String,
        pos: Pos,
        owner: String,
        /// None: `from: scratch`.
        parent: Option<String>,
        why: OwnerError,
    },
    /// The parent has never been built here (or comes from a registry):
    /// its accounts are not known yet.
    Unknown {
        image: String,
        owner: String,
        parent: String,
    },
}

/// Checks every owner name of `spec` against what `build` would resolve it
/// with: nothing for `from: scratch`, else the parent's last build. Each
/// parent's accounts are read once.
pub fn check_owners(store: &Store, spec: &Spec) -> Result<Vec<OwnerFinding>, BuildError> {
    let graph = crate::store::graph_id(&spec.file_abs());
    let mut accounts: HashMap<&str, Option<Accounts>> = HashMap::new();
    let memo = super::records::Memo::default();
    let mut out = Vec::new();
    for image in spec.images.values() {
        for l in &image.layers {
            let Some(owner) = l.owner.as_ref().filter(|o| o.has_names()) else {
                continue;
            };
            let (parent, known) = match &image.parent {
                Parent::Scratch => (None, Some(&Accounts::NONE)),
                Parent::Image(p) => {
                    if !accounts.contains_key(p.as_str()) {
                        let last = memo.last_build(store, &graph, p)?;
                        let a = match last {
                            Some(r) => Some(Accounts::of(store, &r.image)?),
                            None => None,
                        };
                        accounts.insert(p, a);
                    }
                    (Some(p.clone()), accounts[p.as_str()].as_ref())
                }
                Parent::Registry(r) => (Some(r.to_string()), None),
            };
            match known {
                Some(a) => {
                    if let Err(why) = a.resolve(owner) {
                        out.push(OwnerFinding::Missing {
                            image: image.name.clone(),
                            pos: l.pos,
                            owner: owner.to_string(),
                            parent,
                            why,
                        });
                    }
                }
                None => out.push(OwnerFinding::Unknown {
                    image: image.name.clone(),
                    owner: owner.to_string(),
                    parent: parent.unwrap_or_default(),
                }),
            }
        }
    }
    Ok(out)
}

/// Records what a layer this build wrote says about /etc, so children need
/// not scan it.
pub fn remember(store: &Store, digest: &str, etc: EtcFiles) -> Result<(), BuildError> {
    let record = MetaRecord {
        digest: digest.to_string(),
        etc,
    };
    store.put(Kind::Meta, &hex_of(digest), &record)?;
    Ok(())
}

fn etc_of_layer(store: &Store, digest: &str, media_type: &str) -> Result<EtcFiles, BuildError> {
    let hex = hex_of(digest);
    if let Some(m) = store.get::<MetaRecord>(Kind::Meta, &hex)? {
        return Ok(m.etc);
    }
    let path = store.blob_path(&hex);
    let etc = scan::scan_etc(&path, media_type).map_err(|source| BuildError::Io {
        path: path.clone(),
        source,
    })?;
    remember(store, digest, etc.clone())?;
    Ok(etc)
}
