//! OCI objects: digests, config, manifest, index; layout and archive writers.
pub mod digest;
pub mod image;
pub mod output;

pub use image::{ImageRecord, LayerDesc, OciError};
