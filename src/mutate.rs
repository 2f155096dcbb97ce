//! Test-only inputs for the parsers' property tests: a valid sample with
//! bytes flipped, inserted, removed or cut off. Mutating a valid input
//! reaches the parsers' deeper states, which arbitrary bytes rarely do.
use proptest::prelude::*;

/// One edit; positions are taken modulo the input's length when applied.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
    /// A byte that means something to the parsers: a newline, a colon, a
    /// space, a NUL, a high byte (not UTF-8 alone).
    Special(usize, u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), 1..=255u8).prop_map(|(p, b)| Edit::Flip(p, b)),
        3 => (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Edit::Insert(p, b)),
        3 => any::<usize>().prop_map(Edit::Remove),
        1 => any::<usize>().prop_map(Edit::Truncate),
        3 => (any::<usize>(), prop::sample::select(&b"\n\n: \t\0\xff-/.(|,0"[..]))
            .prop_map(|(p, b)| Edit::Special(p, b)),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = bytes.len();
        match *e {
            Edit::Flip(p, x) if len > 0 => bytes[p % len] ^= x,
            Edit::Special(p, b) if len > 0 => bytes[p % len] = b,
            Edit::Insert(p, b) => bytes.insert(p % (len + 1), b),
            Edit::Remove(p) if len > 0 => {
                bytes.remove(p % len);
            }
            Edit::Truncate(p) => bytes.truncate(p % (len + 1)),
            _ => {}
        }
    }
    bytes
}

/// `sample` with one to eight edits.
pub fn mutated(sample: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(edit(), 1..=8).prop_map(move |edits| apply(sample.clone(), &edits))
}

/// Arbitrary bytes, up to `max` of them.
pub fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=max)
}

/// The property tests' settings: few enough cases that `cargo test --lib`
/// stays quick (`PROPTEST_CASES=N` for a longer hunt), and no regression
/// files written into the tree.
pub fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}
