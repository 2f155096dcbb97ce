//! A build and what follows it: the outputs written and the images pushed,
//! each only when every image built (a fleet is shipped whole, never half).
use std::collections::BTreeMap;

use super::remote::{Pushed, Remote, RemoteError, repo_tags};
use super::{BuildError, ImageOutcome, Reporter, Session};
use crate::oci::output::{Named, Output, OutputError};

/// What to do with the images once built.
#[derive(Default)]
pub struct Delivery<'o> {
    /// Layouts and archives to write the requested images into.
    pub outputs: &'o [Output],
    /// Push the requested images through the remote.
    pub push: bool,
    /// SBOM, provenance and signature, attached to what is pushed and
    /// written into OCI layouts.
    pub evidence: super::evidence::Evidence,
}

/// Every image's result, and what was delivered.
pub struct Delivered {
    pub results: BTreeMap<String, Result<ImageOutcome, BuildError>>,
    pub outputs_written: bool,
    pub pushed: Option<Vec<Pushed>>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Sbom(#[from] crate::sbom::SbomError),
}

impl Session<'_> {
    /// Builds `names` and what they need, then writes the outputs and
    /// pushes, in that order, when all of them built.
    pub fn deliver(
        &self,
        names: &[String],
        remote: &Remote<'_>,
        delivery: &Delivery<'_>,
        reporter: &dyn Reporter,
    ) -> Result<Delivered, DeliverError> {
        let results = self.build(names, reporter)?;
        let all_built = results.values().all(Result::is_ok);
        let requested: Vec<&ImageOutcome> = names
            .iter()
            .filter_map(|n| results.get(n).and_then(|r| r.as_ref().ok()))
            .collect();
        // Evidence is made once per image, on its own thread while the
        // images' blobs go up (the one waits on the CPU, the other on the
        // registry); the tags move only once it is all made, so a failure
        // there pushes nothing an SBOM is missing from.
        let make_evidence = all_built && (delivery.push || !delivery.outputs.is_empty());
        let pushing = all_built && delivery.push;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let requested = &requested;
        let (referrers, pushed) = std::thread::scope(|s| {
            let evidence = s.spawn(move || {
                let mut referrers = BTreeMap::new();
                for o in requested.iter().filter(|_| make_evidence) {
                    let made = match self.referrers(o, &delivery.evidence) {
                        Ok(made) => made,
                        Err(e) => {
                            // Nobody listens when the push failed first.
                            let _ = tx.send(None);
                            return Err(e);
                        }
                    };
                    let blobs = made.iter().flat_map(|m| m.blobs.iter().cloned()).collect();
                    let _ = tx.send(Some((o.name.clone(), blobs)));
                    referrers.insert(o.name.clone(), made);
                }
                // The SBOMs that thin SBOMs reference, of parents not
                // delivered here: they go along (into layouts, and attached
                // to the parent in the registry), so every reference resolves.
                let mut referenced = Vec::new();
                if make_evidence {
                    let parents = match self.referenced_sboms(requested, &delivery.evidence) {
                        Ok(parents) => parents,
                        Err(e) => {
                            // As above: no tag may move.
                            let _ = tx.send(None);
                            return Err(e);
                        }
                    };
                    for (name, digest, list) in parents {
                        referrers.insert(name.clone(), list);
                        referenced.push((name, digest));
                    }
                }
                Ok((referrers, referenced))
            });
            let pushed = pushing.then(|| {
                let early = super::remote::EarlyEvidence {
                    incoming: rx,
                    key: delivery.evidence.key.as_ref(),
                };
                let early = (!delivery.evidence.is_empty()).then_some(early);
                remote.push_with(self.spec, requested, early)
            });
            let referrers = evidence
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e));
            (referrers, pushed)
        });
        let (referrers, referenced) = referrers?;
        let outputs_written = all_built && !delivery.outputs.is_empty();
        if outputs_written {
            let named: Vec<Named> = requested
                .iter()
                .map(|o| Named {
                    name: &o.name,
                    record: &o.record,
                    repo_tags: repo_tags(&o.name, &self.spec.images[&o.name].tags),
                })
                .collect();
            for out in delivery.outputs {
                out.write(self.store, &named, self.opts.stamp.epoch)?;
                out.write_referrers(&referrers)?;
            }
        }
        let pushed = match pushed {
            Some(pushed) => {
                let mut pushed = pushed?;
                remote.attach(&mut pushed, &referrers, delivery.evidence.key.as_ref())?;
                if !referenced.is_empty() {
                    remote.attach_unpushed(self.spec, &referenced, &referrers)?;
                }
                Some(pushed)
            }
            None => None,
        };
        Ok(Delivered {
            results,
            outputs_written,
            pushed,
        })
    }
}
