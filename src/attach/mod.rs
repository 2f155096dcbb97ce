//! Evidence attached to pushed images as OCI 1.1 referrers: SBOMs,
//! provenance, signatures (DSSE envelopes for attestations).
pub mod carry;
pub mod dsse;
pub mod provenance;
pub mod referrers;
pub mod verify;
