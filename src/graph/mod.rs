//! The image graph: its order, closure, depths, cycles and ancestors (`dag`),
//! and its renderings (`draw`).
//!
//! The DAG functions take the graph as a "parent of" lookup, not a `Spec`,
//! so spec can use them while it is still resolving parents; on a loaded
//! `Spec`, pass `|n| spec.parent_of(n)`.
mod dag;
mod draw;

pub use dag::{Ancestors, ancestors, closure, cycles, depth, order};
pub use draw::{Format, children, render};
