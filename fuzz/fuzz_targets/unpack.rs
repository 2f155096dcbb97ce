//! Layer unpacking: any tar (whiteouts, links, PAX headers) is applied
//! into the root or refused, never written outside it, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).expect("the root");
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).expect("a sibling");
    let opts = imgbuild::layer::unpack::UnpackOptions {
        chown: false,
        xattrs: false,
    };
    let _ =
        imgbuild::layer::unpack::apply_tar(data, std::path::Path::new("fuzz.tar"), &root, &opts);
    // Nothing escapes the root.
    assert_eq!(
        std::fs::read_dir(&outside).expect("the sibling").count(),
        0,
        "an entry was written outside the root"
    );
});
