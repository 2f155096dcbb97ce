//! Manifest, config and index JSON as a registry may send them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = imgbuild::oci::image::parse_manifest(data, "fuzz");
    let _ = imgbuild::oci::image::parse_config(data, "fuzz");
    let _ = serde_json::from_slice::<oci_spec::image::ImageIndex>(data);
});
