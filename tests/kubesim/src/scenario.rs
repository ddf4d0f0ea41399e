//! Scenario files: a cluster's initial objects and what happens to it afterwards.
//!
//! ```yaml
//! name: relabel                     # for messages
//! serve: {calico_crds: true, calico_v3: false}   # optional; these are the defaults
//! objects:                          # applied in order before the server accepts a connection
//!   - {apiVersion: v1, kind: Namespace, metadata: {name: dmz}}
//! expect: {...}                     # optional, opaque here: what the test should see once synced
//! steps:
//!   - name: move-web                # a test runs it with `run_step("move-web")`
//!     at: 200ms                     # optional: `play_timed` runs it this long after it starts
//!     actions:
//!       - apply: {apiVersion: v1, kind: Pod, metadata: {...}, ...}
//!       - relabel: {apiVersion: v1, kind: Pod, namespace: dmz, name: web, labels: {app: api, old: null}}
//!       - delete: {apiVersion: v1, kind: Pod, namespace: dmz, name: web}
//!       - fail_next: {count: 2, fault: {status: 500}, on: list, path: /api/v1/pods}
//!       - fail_next: {fault: truncate}          # count 1, list/watch/get requests
//!       - fail_next: {fault: reset, query: "continue="}   # the next page after a first
//!       - outage: true                          # new connections reset, open ones closed
//!       - expire_history                        # compaction: resuming old watches gets 410
//!       - restart                               # connections closed, history and pages forgotten
//!       - gone                                  # every open watch ends with ERROR 410
//!       - drop_watches                          # every open watch is cut mid-stream
//!       - bookmark                              # BOOKMARK to every watch that allows them
//!       - serve: {calico_v3: true}              # change which API groups are served
//!       - sleep: 50ms
//!     expect: {...}                 # optional, opaque here
//! ```
//!
//! `expect` blocks are carried as plain JSON for the test to interpret: kubesim knows the wire
//! format, not what a client should make of it.

use crate::{FaultRule, Serve};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub serve: Serve,
    #[serde(default)]
    pub objects: Vec<Value>,
    #[serde(default)]
    pub expect: Option<Value>,
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// A named group of actions, run on demand or at a time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    #[serde(default)]
    pub name: String,
    /// When set, [`crate::SimControl::play_timed`] runs the step this long after it starts.
    #[serde(default, deserialize_with = "opt_duration")]
    pub at: Option<Duration>,
    #[serde(default)]
    pub actions: Vec<Action>,
    #[serde(default)]
    pub expect: Option<Value>,
}

/// An object's identity in an action.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectId {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub namespace: Option<String>,
    pub name: String,
}

/// New labels for an object; `null` removes a label.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Relabel {
    #[serde(flatten)]
    pub id: ObjectId,
    pub labels: BTreeMap<String, Option<String>>,
}

/// One thing that happens to the cluster or to the API server.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Apply(Value),
    Delete(ObjectId),
    Relabel(Relabel),
    FailNext(FaultRule),
    Outage(bool),
    ExpireHistory,
    Restart,
    Gone,
    DropWatches,
    Bookmark,
    Serve(Serve),
    Sleep(#[serde(deserialize_with = "duration")] Duration),
}

/// A scenario that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: {message}")]
    Read { path: String, message: String },
    #[error("scenario {scenario:?} has no step {step:?}")]
    NoStep { scenario: String, step: String },
}

impl Scenario {
    /// Reads a scenario file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Scenario, ScenarioError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ScenarioError::Read { path: path.display().to_string(), message: e.to_string() })?;
        Scenario::parse(&text, &path.display().to_string())
    }

    /// Reads a scenario from text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let read = |message: String| ScenarioError::Read { path: origin.into(), message };
        // Through JSON values: YAML enums would otherwise need `!tags`, and `- apply: {...}` reads
        // better than `- !apply {...}`.
        let value: Value = serde_norway::from_str(text).map_err(|e| read(e.to_string()))?;
        serde_path_to_error::deserialize(value).map_err(|e| read(format!("{}: {}", e.path(), e.inner())))
    }

    /// A file of this crate's `scenarios/` directory.
    pub fn bundled(name: &str) -> Result<Scenario, ScenarioError> {
        Scenario::from_file(scenarios_dir().join(name))
    }

    /// The step called `name`.
    pub fn step(&self, name: &str) -> Result<&Step, ScenarioError> {
        self.steps
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| ScenarioError::NoStep { scenario: self.name.clone(), step: name.into() })
    }
}

/// Where the scenario files shipped with kubesim live.
pub fn scenarios_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

/// `250ms`, `2s`, `1m`, or a number of milliseconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let (number, unit) = t.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((t, ""), |i| t.split_at(i));
    let n: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "" | "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Millis(u64),
    Text(String),
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match RawDuration::deserialize(d)? {
        RawDuration::Millis(ms) => Ok(Duration::from_millis(ms)),
        RawDuration::Text(t) => {
            parse_duration(&t).ok_or_else(|| serde::de::Error::custom(format!("not a duration: {t:?} (250ms, 2s)")))
        }
    }
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Fault, Target};

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("40"), Some(Duration::from_millis(40)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("soon"), None);
    }

    #[test]
    fn a_scenario_reads_with_every_action() {
        let text = r#"
name: all
serve: {calico_v3: true}
objects:
  - {apiVersion: v1, kind: Namespace, metadata: {name: dmz}}
steps:
  - name: one
    at: 20ms
    actions:
      - apply: {apiVersion: v1, kind: Namespace, metadata: {name: x}}
      - delete: {apiVersion: v1, kind: Namespace, name: x}
      - relabel: {apiVersion: v1, kind: Pod, namespace: dmz, name: web, labels: {a: b, c: null}}
      - fail_next: {count: 2, fault: {status: 500}, on: list, path: /api/v1/pods}
      - fail_next: {fault: truncate}
      - outage: true
      - expire_history
      - restart
      - gone
      - drop_watches
      - bookmark
      - serve: {calico_v3: false}
      - sleep: 5ms
"#;
        let s = Scenario::parse(text, "inline").unwrap();
        assert!(s.serve.calico_v3 && s.serve.calico_crds);
        let step = s.step("one").unwrap();
        assert_eq!(step.at, Some(Duration::from_millis(20)));
        assert_eq!(step.actions.len(), 13);
        match &step.actions[3] {
            Action::FailNext(r) => {
                assert_eq!((r.count, &r.fault, r.on), (2, &Fault::Status(500), Target::List));
            }
            other => panic!("{other:?}"),
        }
        match &step.actions[4] {
            Action::FailNext(r) => assert_eq!((r.count, &r.fault, r.on), (1, &Fault::Truncate, Target::Resources)),
            other => panic!("{other:?}"),
        }
        assert!(s.step("two").is_err());
        assert!(Scenario::parse("steps: [{actions: [{explode: 1}]}]", "x").is_err());
    }

    #[test]
    fn bundled_scenarios_read() {
        for entry in std::fs::read_dir(scenarios_dir()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                Scenario::from_file(&path).unwrap();
            }
        }
    }
}
