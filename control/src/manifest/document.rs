//! One YAML (or JSON) document as a JSON value, read the way Kubernetes reads manifests
//! (`sigs.k8s.io/yaml`) rather than the way a generic deserializer would:
//!
//! * a **duplicate key** is refused, not "last one wins": YAML forbids duplicates and kubectl
//!   rejects them, and taking the last `ingress:` of two would silently drop the first rules;
//! * a **`<<` merge key** (YAML 1.1, `<<: *defaults`) merges its mapping (or list of mappings)
//!   under the keys written explicitly, as go-yaml does, instead of becoming a stray field;
//! * integer and boolean keys become strings (`80: x` is the key `"80"`); other keys, YAML tags
//!   (`!foo`) and numbers that JSON cannot carry (`.nan`, `.inf`, beyond 64 bits) are refused.
//!
//! A refusal is not a deserialization error: the visitor notes the first [`Refusal`] (with
//! where it is) and reads on to the end of the document. That keeps the YAML stream in step,
//! so the loader may go on with the next document. A real error (YAML syntax, an unknown anchor)
//! still comes back as an error, after which the stream cannot be resumed: serde_norway's
//! loader stops mid-document there, and reading on would start the next "document" inside a
//! mapping (its deserializer panics on such an event stream).

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IgnoredAny, MapAccess, SeqAccess, VariantAccess, Visitor,
};
use serde_json::{Map, Number, Value};
use std::cell::RefCell;
use std::fmt;

/// The YAML 1.1 merge key.
const MERGE_KEY: &str = "<<";

/// Content of a well-formed document that a manifest may not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// Where: `spec.ingress[0]`, or empty for the document itself.
    pub(crate) path: String,
    pub(crate) message: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// Where the visitor is in the document.
#[derive(Clone, Copy)]
enum At<'a> {
    Root,
    Key(&'a At<'a>, &'a str),
    Index(&'a At<'a>, usize),
}

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            At::Root => Ok(()),
            At::Key(At::Root, k) => f.write_str(k),
            At::Key(parent, k) => write!(f, "{parent}.{k}"),
            At::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// Deserializes one document into a [`Value`]; the first refusal, if any, is left in `refusal`
/// (and the value is then meaningless).
#[derive(Clone, Copy)]
pub(crate) struct DocumentSeed<'a> {
    refusal: &'a RefCell<Option<Refusal>>,
    at: At<'a>,
}

impl fmt::Debug for DocumentSeed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DocumentSeed").field("at", &self.at.to_string()).finish_non_exhaustive()
    }
}

impl<'a> DocumentSeed<'a> {
    pub(crate) fn new(refusal: &'a RefCell<Option<Refusal>>) -> DocumentSeed<'a> {
        DocumentSeed { refusal, at: At::Root }
    }

    fn at(self, at: At<'a>) -> DocumentSeed<'a> {
        DocumentSeed { refusal: self.refusal, at }
    }

    /// Note a refusal (the first one wins) and stand in `Null` for the refused value.
    fn refuse(self, message: impl fmt::Display) -> Value {
        let mut r = self.refusal.borrow_mut();
        if r.is_none() {
            *r = Some(Refusal { path: self.at.to_string(), message: message.to_string() });
        }
        Value::Null
    }
}

impl<'de> DeserializeSeed<'de> for DocumentSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DocumentSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML or JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or_else(|_| self.refuse(format!("integer {v} is out of range")), Value::from))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        Ok(u64::try_from(v).map_or_else(|_| self.refuse(format!("integer {v} is out of range")), Value::from))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v)
            .map_or_else(|| self.refuse(format!("{v} is not a number JSON can carry")), Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Value, E> {
        Ok(self.refuse("binary values are not supported"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        loop {
            let at = At::Index(&self.at, out.len());
            match seq.next_element_seed(self.at(at))? {
                Some(v) => out.push(v),
                None => break,
            }
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        let mut merge = None;
        let mut refused = false;
        while let Some(key) = map.next_key_seed(self)? {
            let key = match key {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    self.refuse(format!("mapping key {other} is not a string"));
                    map.next_value::<IgnoredAny>()?;
                    refused = true;
                    continue;
                }
            };
            let value = map.next_value_seed(self.at(At::Key(&self.at, &key)))?;
            if key == MERGE_KEY {
                if merge.is_some() {
                    self.refuse(format!("duplicate key {key:?}"));
                    refused = true;
                }
                merge = Some(value);
            } else if out.contains_key(&key) {
                self.refuse(format!("duplicate key {key:?}"));
                refused = true;
            } else {
                out.insert(key, value);
            }
        }
        if refused {
            return Ok(Value::Null);
        }
        // Merged mappings fill in what is not written explicitly; with a list, earlier mappings
        // take precedence over later ones (go-yaml's reading of the merge-key spec).
        let sources = match merge {
            None => Vec::new(),
            Some(Value::Object(m)) => vec![m],
            Some(Value::Array(items)) if items.iter().all(Value::is_object) => {
                items.into_iter().filter_map(|v| if let Value::Object(m) = v { Some(m) } else { None }).collect()
            }
            Some(_) => return Ok(self.refuse("`<<` (merge key) needs a mapping or a list of mappings")),
        };
        for source in sources {
            for (k, v) in source {
                out.entry(k).or_insert(v);
            }
        }
        Ok(Value::Object(out))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        // Read the tagged node to its end, so the document stays in step.
        let (tag, content) = data.variant::<String>()?;
        content.newtype_variant::<IgnoredAny>()?;
        Ok(self.refuse(format!("YAML tags (`!{tag}`) are not supported in manifests")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every document of a stream: a value, a refusal or (last) an error.
    fn read_all(text: &str) -> Vec<Result<Value, String>> {
        let mut out = Vec::new();
        for doc in serde_norway::Deserializer::from_str(text) {
            let refusal = RefCell::new(None);
            match DocumentSeed::new(&refusal).deserialize(doc) {
                Err(e) => {
                    out.push(Err(format!("error: {e}")));
                    break;
                }
                Ok(v) => out.push(refusal.into_inner().map_or(Ok(v), |r| Err(r.to_string()))),
            }
        }
        out
    }

    fn read(text: &str) -> Result<Value, String> {
        read_all(text).remove(0)
    }

    #[test]
    fn plain_documents_read_as_json() {
        let v = read("a: 1\nb: [x, 2.5, true, null]\n80: port\n");
        assert_eq!(v.unwrap(), json!({"a": 1, "b": ["x", 2.5, true, null], "80": "port"}));
    }

    #[test]
    fn duplicate_keys_are_refused_with_their_path() {
        let v = read("spec:\n  ingress: [{action: Allow}]\n  ingress: [{action: Deny}]\n");
        assert_eq!(v.unwrap_err(), "spec: duplicate key \"ingress\"");
        let v = read("a: [{x: 1, x: 2}]\n");
        assert_eq!(v.unwrap_err(), "a[0]: duplicate key \"x\"");
        assert_eq!(read(r#"{"a": 1, "a": 2}"#).unwrap_err(), "duplicate key \"a\"");
    }

    #[test]
    fn merge_keys_merge_under_explicit_keys() {
        let text = "base: &b {x: 1, y: 2}\nother: &o {y: 3, z: 4}\nm:\n  <<: [*b, *o]\n  x: 0\n";
        assert_eq!(read(text).unwrap()["m"], json!({"x": 0, "y": 2, "z": 4}));
        assert_eq!(read("m:\n  <<: 5\n").unwrap_err(), "m: `<<` (merge key) needs a mapping or a list of mappings");
    }

    #[test]
    fn tags_keys_and_odd_numbers_are_refused_and_the_stream_reads_on() {
        for (text, message) in [
            ("a: !custom {x: [1, 2]}\n", "a: YAML tags (`!custom`) are not supported in manifests"),
            ("a: .nan\n", "a: NaN is not a number JSON can carry"),
            ("? [a]\n: b\n", "mapping key [\"a\"] is not a string"),
        ] {
            let docs = read_all(&format!("{text}---\nnext: 1\n"));
            assert_eq!(docs.len(), 2, "{text}: {docs:?}");
            assert_eq!(docs[0].as_ref().unwrap_err(), message, "{text}");
            assert_eq!(docs[1].as_ref().unwrap(), &json!({"next": 1}), "{text}");
        }
    }

    #[test]
    fn errors_end_the_stream() {
        let docs = read_all("a: [\n---\nb: 1\n");
        assert_eq!(docs.len(), 1);
        assert!(docs[0].as_ref().unwrap_err().starts_with("error: "));
    }

    #[test]
    fn a_refusal_followed_by_an_error_in_the_same_document_is_an_error() {
        // Regression (fuzzing): a duplicate key, then an unknown anchor in the same document.
        // serde_norway's loader stops mid-document at the anchor; reading on from there made its
        // deserializer panic ("unexpected end of sequence").
        let docs = read_all("a: 1\na: 2\nb: [*missing, c]\nd: e\n---\nf: g\n");
        assert_eq!(docs.len(), 1, "{docs:?}");
        assert!(docs[0].as_ref().unwrap_err().contains("unknown anchor"), "{docs:?}");
    }
}
