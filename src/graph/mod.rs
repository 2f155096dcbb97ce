//! The image graph: its order, closure, depths, cycles and ancestors (`dag`),
//! its renderings (`draw`), what a commit changed (`since`, `changes`) and
//! the GitLab child pipeline that builds it (`gitlab`).
//!
//! The DAG functions take the graph as a "parent of" lookup, not a `Spec`,
//! so spec can use them while it is still resolving parents; on a loaded
//! `Spec`, pass `|n| spec.parent_of(n)`.
pub mod changes;
mod dag;
mod draw;
pub mod gitlab;
pub mod since;

pub use dag::{Ancestors, ancestors, closure, cycles, depth, order};
pub use draw::{Format, children, render};
