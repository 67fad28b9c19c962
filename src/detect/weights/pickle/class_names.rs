//! The class names an ultralytics checkpoint carries: `ckpt["model"].names` (or `ema`'s).
//!
//! ultralytics keeps them in the `DetectionModel`'s `__dict__` (its BUILD state) as a dict
//! `{0: "person", 1: "bicycle", …}`; YOLOv5-era models used a list. A model built from a
//! yaml and never trained on a dataset has the placeholders `{0: "0", 1: "1", …}`, which
//! name nothing and are treated as no names. Only the data already unpickled is read:
//! nothing is looked up or run.

use super::value::{Dict, Object, Value};

/// What the checkpoint says about its class names.
#[derive(Debug, PartialEq, Eq)]
pub enum ClassNames {
    /// Names in class-id order.
    Found(Vec<String>),
    /// No names, or names of an unexpected shape.
    Absent,
    /// A names dict whose integer keys are not exactly `0..n` (the keys, sorted).
    BadIds(Vec<i64>),
}

/// The names of the checkpoint rooted at `root`: a pickled module itself, or a checkpoint
/// dict with the module under `model` (else `ema`).
pub fn class_names(root: &Value) -> ClassNames {
    let module = match root {
        Value::Object(module) => Some(module.clone()),
        Value::Dict(top) => {
            let top = top.borrow();
            ["model", "ema"]
                .into_iter()
                .find_map(|key| match top.get_str(key) {
                    Some(Value::Object(module)) => Some(module.clone()),
                    _ => None,
                })
        }
        _ => None,
    };
    match module {
        Some(module) => module_names(&module.borrow()),
        None => ClassNames::Absent,
    }
}

/// `module.names`, else `module.yaml["names"]`.
fn module_names(module: &Object) -> ClassNames {
    let state = match &module.state {
        Value::Dict(d) => d,
        Value::Tuple(t) => match t.items.first() {
            Some(Value::Dict(d)) => d,
            _ => return ClassNames::Absent,
        },
        _ => return ClassNames::Absent,
    };
    let state = state.borrow();
    if let Some(names) = state.get_str("names") {
        return from_value(names);
    }
    match state.get_str("yaml") {
        Some(Value::Dict(yaml)) => match yaml.borrow().get_str("names") {
            Some(names) => from_value(names),
            None => ClassNames::Absent,
        },
        _ => ClassNames::Absent,
    }
}

fn from_value(names: &Value) -> ClassNames {
    let found = match names {
        Value::Dict(dict) => return from_dict(&dict.borrow()),
        Value::List(items) => strings(items.borrow().items.iter()),
        Value::Tuple(items) => strings(items.items.iter()),
        _ => None,
    };
    found.map_or(ClassNames::Absent, real_names)
}

/// A dict `{id: name}`; ids may be ints or decimal strings (`check_class_names` accepts both).
fn from_dict(dict: &Dict) -> ClassNames {
    let mut pairs = Vec::with_capacity(dict.entries.len());
    for (key, value) in &dict.entries {
        let id = match key {
            Value::Int(i) => *i,
            Value::Str(s) => match s.trim().parse() {
                Ok(i) => i,
                Err(_) => return ClassNames::Absent,
            },
            _ => return ClassNames::Absent,
        };
        let Value::Str(name) = value else {
            return ClassNames::Absent;
        };
        pairs.push((id, name.to_string()));
    }
    pairs.sort();
    let in_order = pairs
        .iter()
        .enumerate()
        .all(|(i, (id, _))| i64::try_from(i).is_ok_and(|i| i == *id));
    if !in_order {
        return ClassNames::BadIds(pairs.into_iter().map(|(id, _)| id).collect());
    }
    real_names(pairs.into_iter().map(|(_, name)| name).collect())
}

fn strings<'a>(items: impl Iterator<Item = &'a Value>) -> Option<Vec<String>> {
    items
        .map(|v| match v {
            Value::Str(s) => Some(s.to_string()),
            _ => None,
        })
        .collect()
}

/// `Absent` for an empty list; placeholders (`"0"`, `"1"`, …) are kept: whether they name
/// anything is [`crate::detect::classes::ClassNames::for_model`]'s call.
fn real_names(names: Vec<String>) -> ClassNames {
    if names.is_empty() {
        ClassNames::Absent
    } else {
        ClassNames::Found(names)
    }
}
