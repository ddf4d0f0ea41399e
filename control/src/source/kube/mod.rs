//! The Kubernetes API as a policy source: kube-rs watchers for every kind moat reads, one model,
//! debounced publications of complete snapshots with the identities that changed.
//!
//! ```text
//!  API server ──list (paged) + watch (bookmarks)──► one kube-rs watcher per kind ─┐ convert
//!  (pods, namespaces, serviceaccounts,                (kube::runtime::watcher,    │ (manifest
//!   networkpolicies, Calico ×10)                       backoff on errors)         │  loader)
//!                                                                                 ▼
//!                                  Updates ◄── debounce ◄── State (per-kind last-good objects,
//!                                  (Update: SharedSnapshot,   relists buffered until InitDone)
//!                                   changed keys, problems)
//! ```
//!
//! # Interface
//!
//! [`KubeSource::start`] (on a tokio runtime) or [`KubeSource::start_thread`] (its own thread,
//! for the synchronous `moat` binary) returns a [`KubeHandle`] (status, stop) and [`Updates`],
//! whose `next().await` / `blocking_next(timeout)` hands out [`Update`]s:
//!
//! * `snapshot`: the **complete** model ([`SharedSnapshot`] derefs to [`crate::source::Snapshot`],
//!   so `Pipeline::build(&update.snapshot, …)` takes it as it is). Cloning it is an `Arc` clone;
//!   the source copies the model only if it must change it while a consumer still holds one.
//! * `changed`: the [`ObjectKey`]s (kind, namespace, name) added, modified or deleted since the
//!   previous update ([`Changed::All`] for the first), for an incremental compiler. Updates the
//!   consumer has not taken are merged (the newest model, the union of the changes), so a slow
//!   consumer skips intermediate models but never a change.
//! * `problems`: every object refused right now, with its identity and field path.
//!
//! # When a model is published
//!
//! * **The first update comes only after every kind's initial list is complete.** Until then
//!   there is no model at all and the caller keeps the dataplane in its fail-closed / failsafe
//!   state; a cluster where one kind cannot be listed (RBAC, a broken aggregated API) never gets
//!   a partial table, and [`KubeHandle::status`] says which kind is missing and why.
//! * After that, changes are **debounced**: published when no further change came for
//!   [`KubeSourceConfig::debounce`] (1 ms: queued events are batched anyway, and the issue-6 target of 10 ms from watch event to enforcement leaves no room for more; BENCHMARKS.md), at the latest [`KubeSourceConfig::max_delay`]
//!   (50 ms) after the first change of the batch, so a burst (a Deployment rollout) is one
//!   recompile and a steady stream cannot postpone enforcement indefinitely.
//! * An object version that converts to the same resource as before (a pod's readiness
//!   conditions, a policy's annotations) changes nothing and publishes nothing.
//!
//! # Resilience
//!
//! * Every kind runs kube-rs's `watcher`: a dropped watch resumes from its last
//!   resourceVersion; `410 Gone` (an ERROR event, or an expired `continue` token) or an error
//!   in the middle of a paged list restarts the list from scratch; every error is followed by a
//!   backoff (client-go's parameters by default, [`KubeSourceConfig::backoff`]).
//! * **Never a half-built model.** A (re)list is buffered and applied only when it is complete
//!   (`Init` … `InitDone`), as one diff against what the kind held before (objects not relisted
//!   are deleted). During a relist — after a 410, an API server restart, a network cut — the
//!   last complete set of that kind stays in the model, and other kinds keep flowing.
//! * During an outage nothing is published: the last model (and the table built from it) stays
//!   in force until the API server answers again; watches resume or relist, and only the
//!   differences are published.
//! * Discovery (which Calico API is served) is retried until the API server answers; an error
//!   is never taken for "not installed".
//!
//! # Invalid objects
//!
//! Objects go through the manifest loader ([`crate::manifest::load_value_with`]), so an object
//! from the API is validated exactly like the same object in a manifests directory (strict about
//! unknown fields by default). An object that does not load is **reported, not dropped
//! silently**: it becomes a [`Problem`] (identity, field, reason) in every update until it is
//! fixed or deleted. What is enforced meanwhile: **the object's last valid version stays in the
//! model** (`Problem::kept`). Dropping a broken update of a deny policy would open what it
//! closed, and dropping a broken allow policy would cut what it allowed; keeping the last
//! version the operator saw enforced changes nothing until the object is valid again. An object
//! that was never valid is left out (`kept: false`): there is no earlier meaning to keep.
//! Whether to refuse publishing a table while problems exist is the caller's choice (the
//! manifests directory refuses the whole snapshot; with a live cluster one broken object must not
//! freeze every other change, so the problems are meant to be logged and exported loudly).
//!
//! # What each watch costs the API server
//!
//! One paged list (`limit` = [`KubeSourceConfig::page_size`], 500) per kind at start and after
//! each 410, then one long-running watch per kind with bookmarks (`allowWatchBookmarks=true`, so
//! a resumed watch rarely needs a relist) and a server-side timeout (290 s, after which the watch
//! resumes without listing). No polling, no `get`. By kind ([`kinds::WatchedKind::mode`]):
//!
//! * `namespaces`, `serviceaccounts`: **metadata-only** (`PartialObjectMetadata`): moat reads
//!   only their names and labels.
//! * `pods`: whole objects (labels, `spec` for service account, host networking and named
//!   ports, `status.podIPs`); the API server has nothing between metadata-only and whole
//!   objects. Field-selected to running pods (`status.phase!=Succeeded,status.phase!=Failed`):
//!   finished pods are no endpoints and their IPs may already belong to someone else. Every
//!   node watches every pod: policy on this node selects remote pods by label and address.
//!   This is the one watch whose cost grows with the cluster; its events are mostly status
//!   changes, which convert to an unchanged resource and cost no recompile.
//! * `networkpolicies` and the Calico kinds: whole objects (their `spec` is the policy).
//!
//! Memory: the source keeps the converted model (one copy while no consumer holds an older
//! update, two while one does), not the API objects; `metadata.managedFields` is dropped at once.
//! [`WATCHED`] lists every (group, version, resource, verbs) read, for the deploy RBAC.
//!
//! # Calico API group
//!
//! [`CalicoApi::Auto`] (default) reads `projectcalico.org/v3` when discovery shows the Calico API
//! server serving it, else the CRDs `crd.projectcalico.org/v1`. A Calico kind the chosen group
//! does not serve (an older Calico without staged policies), or every Calico kind when neither
//! group is served (a cluster without Calico), counts as empty and is named in the snapshot's
//! notes; kinds installed later are read after a restart of the source (re-discovering
//! periodically would be polling).
//!
//! # Testing without a cluster
//!
//! `control/tests/kube_source.rs` runs the source against `moat-kubesim` (plain HTTP on
//! 127.0.0.1, no authentication: `kube::Config::new(url)`), driven by scenario files in
//! `tests/kubesim/scenarios/`.

mod kinds;
mod run;
mod state;

pub use kinds::{CalicoApi, CalicoGroup, VERBS, WATCHED, WatchMode, WatchedKind, WatchedResource};
pub use run::{
    BackoffConfig, KindStatus, KubeHandle, KubeSource, KubeSourceConfig, KubeSourceError, SourceStatus, Update,
    Updates, WaitError,
};
pub use state::{Changed, ObjectKey, Problem, SharedSnapshot};
