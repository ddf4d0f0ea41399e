//! moat control plane: the Calico/Kubernetes policy model and what is built on it.
//!
//! Data flows one way:
//!
//! ```text
//! manifests ──► manifest (load, validate) ──► model::Model ──► resolve::Resolved ──► evaluate::Evaluator
//!                                              (declared)      (as Felix enforces)   (reference verdicts)
//! ```
//!
//! * [`selector`]: the Calico selector language.
//! * [`model`]: typed resources exactly as declared (Kubernetes and Calico), keyed by identity.
//! * [`manifest`]: reads files, directory trees, multi-document YAML, JSON and `List`s; an
//!   invalid object is reported with file, object and field and the rest still loads.
//! * [`convert`]: Kubernetes NetworkPolicy → Calico policy, as libcalico-go does it.
//! * [`resolve`]: endpoint labels as Calico sees them, rule selectors rewritten over endpoint
//!   labels, tiers and policies in evaluation order — shared by the evaluator and the compiler.
//! * [`evaluate`]: the reference evaluator, slow and obviously correct, explaining every verdict.
//! * [`source`]: where the model comes from (a manifests directory; the Kubernetes API), as
//!   complete snapshots or a refusal naming every problem.
//! * [`compile`]: the compiler from the same resolution to the dataplane's
//!   `moat_fastpath::classify::PolicyTable`, tested against the evaluator.
//! * [`pipeline`]: snapshot → resolution → compiled `RuleTable`, ready for the workers' swap.
//!
//! Invariants: nothing here panics on input (unwrap/expect are denied outside tests); the
//! evaluator is deterministic for a given model; no `unsafe`.
#![forbid(unsafe_code)]

pub mod compile;
pub mod convert;
pub mod evaluate;
pub mod flowlog;
pub mod manifest;
pub mod model;
pub mod pipeline;
pub mod resolve;
pub mod selector;
pub mod source;

pub use evaluate::{Evaluator, Flow, FlowEnd, FlowResult, Verdict};
pub use manifest::{LoadReport, load_paths};
pub use model::Model;
pub use resolve::Resolved;
