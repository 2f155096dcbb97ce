//! The difference between two trees, as layer entries (see the sandbox issue).
