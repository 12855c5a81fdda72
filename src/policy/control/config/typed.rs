//! Typing JSON with serde while reporting every error at once, each at its field path.

use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::fmt;

use super::{ConfigError, MAX_ERRORS};

/// A cross-field problem: where, what, and optionally the other place it refers to.
pub(super) type Issue = (Vec<Seg>, String, Option<Vec<Seg>>);
/// Stands for the rendered other place in an [`Issue`]'s message.
pub(super) const SAME: &str = "{same}";

/// A step of a field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

pub(super) fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

pub(super) fn extend(path: &[Seg], seg: Seg) -> Vec<Seg> {
    let mut p = path.to_vec();
    p.push(seg);
    p
}

pub(super) fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

pub(super) fn join(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (_, true) => prefix.to_string(),
        _ if path.starts_with('[') => format!("{prefix}{path}"),
        _ => format!("{prefix}.{path}"),
    }
}

/// `null` counts as absent: drop null-valued keys before typing.
fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Removes the node at `path`; returns false when there is none.
fn remove_at(v: &mut Value, path: &[Seg]) -> bool {
    let Some((last, parent)) = path.split_last() else {
        return false;
    };
    match (last, node_mut(v, parent)) {
        (Seg::Key(k), Some(Value::Object(m))) => m.remove(k).is_some(),
        (Seg::Index(i), Some(Value::Array(a))) if *i < a.len() => {
            a.remove(*i);
            true
        }
        _ => false,
    }
}

/// The node at `path`, if there is one.
fn node_mut<'a>(v: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |node, s| match (s, node) {
        (Seg::Key(k), Value::Object(m)) => m.get_mut(k),
        (Seg::Index(i), Value::Array(a)) => a.get_mut(*i),
        _ => None,
    })
}

/// A serde_path_to_error path as our steps.
fn segs(path: &serde_path_to_error::Path) -> Vec<Seg> {
    path.iter()
        .filter_map(|s| match s {
            serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
            serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
            _ => None,
        })
        .collect()
}

/// Tracks what was pruned, so paths in the pruned value map back to the input's paths.
#[derive(Default)]
struct Pruned(Vec<Vec<Seg>>);

impl Pruned {
    fn original(&self, current: &[Seg]) -> Vec<Seg> {
        let mut out: Vec<Seg> = Vec::with_capacity(current.len());
        for s in current {
            match s {
                Seg::Index(i) => {
                    let mut gone: Vec<usize> = self
                        .0
                        .iter()
                        .filter(|p| p.len() == out.len() + 1 && p.starts_with(&out))
                        .filter_map(|p| match p.last() {
                            Some(Seg::Index(k)) => Some(*k),
                            _ => None,
                        })
                        .collect();
                    gone.sort_unstable();
                    let mut idx = *i;
                    for k in gone {
                        if k <= idx {
                            idx += 1;
                        }
                    }
                    out.push(Seg::Index(idx));
                }
                k => out.push(k.clone()),
            }
        }
        out
    }

    /// True when an error here is only a consequence of something already pruned below it.
    fn covers(&self, path: &[Seg]) -> bool {
        self.0.iter().any(|p| p.starts_with(path))
    }
}

/// Types `value` as `T`, reporting every error at once, each at its path: a failed field is
/// reported, pruned, and typing runs again, so one bad field does not hide the next.
/// (serde stops at the first error; pruning keeps the derived types and their messages.)
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, Vec<ConfigError>> {
    typed::<T>(value, |_| Vec::new())
}

pub(super) fn typed<T: DeserializeOwned>(
    value: &Value,
    validate: impl Fn(&T) -> Vec<Issue>,
) -> Result<T, Vec<ConfigError>> {
    let mut v = value.clone();
    strip_nulls(&mut v);
    let mut pruned = Pruned::default();
    let mut errs: Vec<ConfigError> = Vec::new();
    while errs.len() < MAX_ERRORS {
        let e = match serde_path_to_error::deserialize::<_, T>(&v) {
            Ok(t) => {
                let extra: Vec<ConfigError> = validate(&t)
                    .into_iter()
                    .filter(|(p, _, _)| !pruned.covers(&pruned.original(p)))
                    .map(|(p, m, same)| {
                        let m = match same {
                            Some(other) => m.replace(SAME, &render(&pruned.original(&other))),
                            None => m,
                        };
                        ConfigError::new(&render(&pruned.original(&p)), m)
                    })
                    .collect();
                errs.extend(extra);
                return if errs.is_empty() { Ok(t) } else { Err(errs) };
            }
            Err(e) => e,
        };
        let current = segs(e.path());
        let message = e.inner().to_string();
        let original = pruned.original(&current);
        match missing_field(&message) {
            Some(field) => {
                let at = extend(&original, key(field));
                // A required field we pruned ourselves was reported already.
                if !pruned.0.contains(&at) {
                    errs.push(ConfigError::new(&render(&at), "required"));
                    // A stand-in lets the object's other fields (and other missing ones) be
                    // checked; checks of the stand-in itself are suppressed like a pruned node.
                    if stand_in::<T>(&mut v, &current, field) {
                        pruned.0.push(at);
                        continue;
                    }
                }
            }
            None => errs.push(ConfigError::new(&render(&original), tidy(&message))),
        }
        // A bad value inside a list entry drops the whole entry: a default in its place would
        // make up a backend (or network) the user did not write.
        let cut = match current.iter().rposition(|s| matches!(s, Seg::Index(_))) {
            Some(i)
                if missing_field(&message).is_none() && !message.starts_with("unknown field") =>
            {
                i + 1
            }
            _ => current.len(),
        };
        if !remove_at(&mut v, &current[..cut]) {
            break; // the whole input is unusable
        }
        pruned.0.push(pruned.original(&current[..cut]));
    }
    Err(errs)
}

/// Puts the first value that types at `object.field` there; false (and nothing put) if none.
fn stand_in<T: DeserializeOwned>(v: &mut Value, object: &[Seg], field: &str) -> bool {
    let candidates = [
        Value::from(1),
        Value::from(true),
        Value::from("placeholder.invalid"),
        Value::from("http://placeholder.invalid"),
        Value::from("cookie"),
        Value::Array(vec![]),
        Value::Object(Map::new()),
    ];
    let target = extend(object, key(field));
    for candidate in candidates {
        match node_mut(v, object) {
            Some(Value::Object(m)) => m.insert(field.to_string(), candidate),
            _ => return false,
        };
        let fits = match serde_path_to_error::deserialize::<_, T>(&*v) {
            Ok(_) => true,
            Err(e) => {
                let at: Vec<Seg> = segs(e.path());
                at != target
                    && !(at == object && missing_field(&e.inner().to_string()) == Some(field))
            }
        };
        if fits {
            return true;
        }
    }
    if let Some(Value::Object(m)) = node_mut(v, object) {
        m.remove(field);
    }
    false
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.strip_suffix('`')
}

/// serde's wording, made to name what is allowed.
fn tidy(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((name, allowed)) = rest.split_once("`, expected ") {
            let allowed = allowed.trim_start_matches("one of ").replace('`', "");
            return format!(
                "unknown key {name:?}; allowed: {}",
                allowed.replace(" or ", ", ")
            );
        }
    }
    message.replace("invalid type: ", "wrong type: found ")
}

/// Parses JSON text, refusing duplicate keys (serde_json would silently keep the last one).
pub fn parse_json(text: &str) -> Result<Value, ConfigError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize::<_, Unique>(&mut de)
        .map_err(|e| {
            // A syntax error has a line and column, not a field: say it plainly.
            let message = e.inner().to_string();
            let path = match e.inner().classify() {
                serde_json::error::Category::Data => e.path().to_string(),
                _ => String::new(),
            };
            let path = if path == "." { "" } else { &path };
            // A repeated key is reported at the key itself.
            let dup = message
                .strip_prefix(DUPLICATE_KEY)
                .and_then(|r| r.split_once("\";"))
                .map(|(k, _)| k.to_string());
            match dup {
                Some(k) => ConfigError::new(&join(path, &k), message),
                None => ConfigError::new(path, message),
            }
        })?
        .0;
    de.end().map_err(|e| ConfigError::new("", e.to_string()))?;
    Ok(value)
}

const DUPLICATE_KEY: &str = "duplicate key \"";

/// A JSON value whose objects have no repeated keys.
struct Unique(Value);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Unique;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, b: bool) -> Result<Unique, E> {
                Ok(Unique(Value::Bool(b)))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Unique, E> {
                Ok(Unique(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Unique, E> {
                Ok(Unique(n.into()))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Unique, E> {
                Ok(Unique(
                    serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number),
                ))
            }
            fn visit_str<E>(self, s: &str) -> Result<Unique, E> {
                Ok(Unique(Value::String(s.to_string())))
            }
            fn visit_unit<E>(self) -> Result<Unique, E> {
                Ok(Unique(Value::Null))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
                let mut out = Vec::new();
                while let Some(Unique(v)) = seq.next_element()? {
                    out.push(v);
                }
                Ok(Unique(Value::Array(out)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
                let mut out = Map::new();
                while let Some(k) = map.next_key::<String>()? {
                    if out.contains_key(&k) {
                        return Err(de::Error::custom(format!(
                            "{DUPLICATE_KEY}{k}\"; each key may appear once"
                        )));
                    }
                    let Unique(v) = map.next_value()?;
                    out.insert(k, v);
                }
                Ok(Unique(Value::Object(out)))
            }
        }
        d.deserialize_any(V)
    }
}
