//! Pulling `from:` registry references for build and plan.
use imgbuild::build::Puller;
use imgbuild::oci::image::{ImageRecord, host_arch};
use imgbuild::registry::pull::{last_pull, pull};
use imgbuild::registry::{Client, Reference, auth::Sources};
use imgbuild::store::Store;

use super::{Failure, runtime};

pub struct NetPuller<'a> {
    store: &'a Store,
    client: Client,
    rt: tokio::runtime::Runtime,
}

impl<'a> NetPuller<'a> {
    pub fn new(store: &'a Store, insecure: &[String]) -> Result<NetPuller<'a>, Failure> {
        Ok(NetPuller {
            store,
            client: Client::new(Sources::from_process(), insecure.to_vec())
                .map_err(Failure::failed)?,
            rt: runtime()?,
        })
    }
}

impl Puller for NetPuller<'_> {
    fn pull(&self, reference: &str) -> Result<ImageRecord, String> {
        let r: Reference = reference
            .parse()
            .map_err(|e: imgbuild::registry::ReferenceError| e.to_string())?;
        match self
            .rt
            .block_on(pull(&self.client, self.store, &r, "linux", host_arch()))
        {
            Ok(record) => Ok(record),
            Err(e) => match last_pull(self.store, &r) {
                // Offline, or the registry is down: the last pull will do.
                Ok(Some(p)) if p.record.blobs().iter().all(|b| self.store.has_blob(b)) => {
                    eprintln!(
                        "warning: {r}: {e}; using the copy pulled before ({})",
                        p.record.manifest
                    );
                    Ok(p.record)
                }
                _ => Err(e.to_string()),
            },
        }
    }
}
