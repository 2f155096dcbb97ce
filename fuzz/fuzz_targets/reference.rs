//! Image references and WWW-Authenticate challenges: parsed or refused;
//! a parsed reference prints to a string that parses to the same.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = text.parse::<imgbuild::reference::Reference>() {
        let again: imgbuild::reference::Reference =
            r.to_string().parse().expect("a printed reference parses");
        assert_eq!(again.to_string(), r.to_string());
    }
    let _ = imgbuild::registry::auth::Challenge::parse(text);
});
