//! Where the policy model comes from.
//!
//! A source turns the outside world into a complete [`Model`] snapshot, or refuses: a snapshot
//! with any problem is never handed on, because enforcing part of a policy (a deny rule left out
//! because its object failed to load) can open what the operator closed. The caller keeps the
//! table in force and reports the [`Refused`] problems.
//!
//! * [`manifests`]: a directory of Kubernetes and Calico manifests (the embedded default, no
//!   cluster needed), re-read as a whole on every change.
//! * [`kube`] (feature `kube`, default on): the Kubernetes API through kube-rs watchers; the
//!   first snapshot once every kind is listed, then debounced snapshots with the identities that
//!   changed. Invalid objects are reported with their identity while their last valid version
//!   stays in force; refusing is the caller's choice.

#[cfg(feature = "kube")]
pub mod kube;
pub mod manifests;

use crate::Model;
use std::fmt;

/// A complete model, with what the operator should still know about it.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub model: Model,
    /// Not problems, but worth a look (kinds moat does not use, for example).
    pub notes: Vec<String>,
}

/// Why a source produced no snapshot; each problem names the file, object and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// What was read (a directory, an API server).
    pub origin: String,
    pub problems: Vec<String>,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} problem(s), nothing from it is enforced", self.origin, self.problems.len())?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Refused {}
