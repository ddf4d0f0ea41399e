//! A directory of Kubernetes and Calico manifests as a policy source.
//!
//! Every read loads the whole tree (`.yaml`, `.yml`, `.json`, recursively, in name order, hidden
//! files skipped) through [`crate::manifest`]. Enforcement is stricter than `moat policy eval`:
//! an unknown field is an error by default, because a misspelt `notPorts` or `namespaceSelector`
//! silently widens or narrows a policy; [`ManifestDir::lenient`] turns those into notes.

use super::{Refused, Snapshot};
use crate::manifest::{LoadOptions, UnknownFields, load_paths_with};
use std::path::{Path, PathBuf};

/// A manifests directory.
#[derive(Debug, Clone)]
pub struct ManifestDir {
    path: PathBuf,
    options: LoadOptions,
}

/// File extensions read as manifests.
pub const MANIFEST_EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

impl ManifestDir {
    /// Unknown fields are errors.
    pub fn new(path: impl Into<PathBuf>) -> ManifestDir {
        ManifestDir { path: path.into(), options: LoadOptions::strict() }
    }

    /// Unknown fields are dropped with a note instead of refusing the snapshot.
    pub fn lenient(mut self) -> ManifestDir {
        self.options.unknown_fields = UnknownFields::Warn;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the tree holds any manifest file at all.
    pub fn has_manifests(&self) -> std::io::Result<bool> {
        contains_manifest(&self.path)
    }

    /// Loads the whole tree; any error refuses the snapshot.
    pub fn load(&self) -> Result<Snapshot, Refused> {
        let report = load_paths_with(&[&self.path], self.options);
        if !report.errors.is_empty() {
            return Err(Refused {
                origin: self.path.display().to_string(),
                problems: report.errors.iter().map(ToString::to_string).collect(),
            });
        }
        let mut notes: Vec<String> = report.warnings.iter().map(ToString::to_string).collect();
        notes.extend(report.skipped.iter().map(ToString::to_string));
        Ok(Snapshot { model: report.to_model(), notes })
    }
}

fn contains_manifest(dir: &Path) -> std::io::Result<bool> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            if contains_manifest(&path)? {
                return Ok(true);
            }
        } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| MANIFEST_EXTENSIONS.contains(&e)) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: dmz, labels: {app: web}}\n\
                       status: {podIP: 10.1.0.2, podIPs: [{ip: 10.1.0.2}]}\n";

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn loads_a_tree_and_finds_manifests_in_subdirectories() {
        let dir = dir_with(&[("pods/web.yaml", POD), ("README.md", "not a manifest")]);
        let source = ManifestDir::new(dir.path());
        assert!(source.has_manifests().unwrap());
        let snapshot = source.load().unwrap();
        assert_eq!(snapshot.model.pods.len(), 1);
    }

    #[test]
    fn an_error_anywhere_refuses_the_whole_snapshot_and_names_the_file() {
        let bad = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: dmz}\n\
                   spec: {podSelector: {matchLabels: {app: web}}, policyTypes: [Sideways]}\n";
        let dir = dir_with(&[("a.yaml", POD), ("b.yaml", bad)]);
        let refused = ManifestDir::new(dir.path()).load().unwrap_err();
        assert_eq!(refused.problems.len(), 1);
        assert!(refused.problems[0].contains("b.yaml"), "{refused}");
    }

    #[test]
    fn unknown_fields_refuse_unless_lenient() {
        let typo = POD.replace("labels:", "lables: {x: y}, labels:");
        let dir = dir_with(&[("a.yaml", &typo)]);
        let refused = ManifestDir::new(dir.path()).load().unwrap_err();
        assert!(refused.to_string().contains("lables"), "{refused}");
        let snapshot = ManifestDir::new(dir.path()).lenient().load().unwrap();
        assert_eq!(snapshot.notes.len(), 1);
    }

    #[test]
    fn a_directory_without_manifests_says_so() {
        let dir = dir_with(&[("rules.acl", "allow any any any")]);
        assert!(!ManifestDir::new(dir.path()).has_manifests().unwrap());
    }
}
