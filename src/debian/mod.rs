//! Debian from the archive: sources, signed index verification, version
//! order, the resolver, the lock, the download cache and installation.
//!
//! Nothing here runs a package's code: installation hands the chosen
//! `.deb`s to the target's own dpkg inside the sandbox.
pub mod control;
pub mod deb;
pub mod fetch;
pub mod lock;
pub mod order;
pub mod package;
pub mod paths;
pub mod release;
pub mod resolve;
pub mod sources;
#[doc(hidden)]
pub mod testutil;
pub mod version;
