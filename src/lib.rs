//! imgbuild: build a graph of layered OCI images from one `images.yaml`,
//! without a daemon and without privileges.
pub mod attach;
pub mod build;
pub mod debian;
pub mod digest;
pub mod env;
pub mod fsutil;
pub mod graph;
pub mod layer;
#[cfg(test)]
mod mutate;
pub mod oci;
pub mod passwd;
pub mod reference;
pub mod registry;
pub mod retry;
pub mod sandbox;
pub mod sbom;
pub mod sign;
pub mod source;
pub mod spec;
pub mod store;
pub mod suggest;
