//! OCI objects: config, manifest, index; layout and archive writers.
// The digest helpers live in a leaf module; this path stays for existing imports.
pub use crate::digest;
pub mod image;
pub mod output;

pub use image::{ImageRecord, LayerDesc, OciError};
