//! Finds the tensors of an unpickled checkpoint and names them as `state_dict()` would.
//!
//! A checkpoint is a module (ultralytics pickles the whole `DetectionModel`), a plain
//! state_dict, or a dict holding either under `ema`, `model` or `state_dict`. A module's
//! names come from its `_parameters`, persistent `_buffers` and, recursively, `_modules`.
//! The walk is bounded in depth and in visits, since a pickle can share one child module
//! many times over (a DAG that would otherwise unfold exponentially).

use std::collections::HashSet;
use std::rc::Rc;

use super::value::{Dict, Object, TensorRef, Value};

/// Modules nest a handful of levels in real models; this only stops malicious nesting.
const MAX_MODULE_DEPTH: usize = 256;

/// Why no state_dict could be found.
#[derive(Debug)]
pub enum NamingError {
    NoTensors { found: String },
    TooDeep,
    TooManyVisits { budget: usize },
}

pub type Named = Vec<(String, Rc<TensorRef>)>;

/// The checkpoint's tensors in state_dict order. `visit_budget` bounds the walk (modules
/// plus tensors visited); the caller derives it from the pickle's size.
pub fn state_dict(root: &Value, visit_budget: usize) -> Result<Named, NamingError> {
    let mut walk = Walk {
        out: Vec::new(),
        visits: 0,
        budget: visit_budget,
    };
    // Which part of a checkpoint dict was read, for the message when it held nothing.
    let used_part = match root {
        Value::Object(module) => walk.module(module, "", 0).map(|()| None)?,
        Value::Dict(dict) => walk.checkpoint_dict(&dict.borrow())?,
        _ => None,
    };
    if walk.out.is_empty() {
        let mut found = root.describe();
        if let Some(part) = used_part {
            found.push_str(&format!(" whose {part} holds no tensors"));
        }
        return Err(NamingError::NoTensors { found });
    }
    Ok(walk.out)
}

struct Walk {
    out: Named,
    visits: usize,
    budget: usize,
}

impl Walk {
    /// A top-level dict: `ema` (when a module), else `model`, else `state_dict`, else
    /// itself as a state_dict. Returns which part was used (`None`: the dict itself).
    fn checkpoint_dict(&mut self, top: &Dict) -> Result<Option<String>, NamingError> {
        if let Some(Value::Object(ema)) = top.get_str("ema") {
            self.module(ema, "", 0)?;
            return Ok(Some("`ema` module".into()));
        }
        for key in ["model", "state_dict"] {
            match top.get_str(key) {
                Some(Value::Object(module)) => {
                    self.module(module, "", 0)?;
                    return Ok(Some(format!("`{key}` module")));
                }
                Some(Value::Dict(inner)) if has_tensor_values(&inner.borrow()) => {
                    self.tensor_dict(&inner.borrow(), "")?;
                    return Ok(Some(format!("`{key}` dict")));
                }
                _ => {}
            }
        }
        self.tensor_dict(top, "")?;
        Ok(None)
    }

    fn visit(&mut self) -> Result<(), NamingError> {
        self.visits += 1;
        if self.visits > self.budget {
            return Err(NamingError::TooManyVisits {
                budget: self.budget,
            });
        }
        Ok(())
    }

    /// The tensor values of `dict`, named `prefix` + key; other values are skipped.
    fn tensor_dict(&mut self, dict: &Dict, prefix: &str) -> Result<(), NamingError> {
        self.tensor_entries(dict, prefix, &HashSet::new())
    }

    fn tensor_entries(
        &mut self,
        dict: &Dict,
        prefix: &str,
        skip: &HashSet<String>,
    ) -> Result<(), NamingError> {
        for (key, value) in &dict.entries {
            let (Value::Tensor(tensor), Some(name)) = (value, key.as_name()) else {
                continue;
            };
            if skip.contains(&name) {
                continue;
            }
            self.visit()?;
            self.out.push((format!("{prefix}{name}"), tensor.clone()));
        }
        Ok(())
    }

    /// `module._save_to_state_dict` then each child, as `nn.Module.state_dict` does.
    fn module(
        &mut self,
        module: &std::cell::RefCell<Object>,
        prefix: &str,
        depth: usize,
    ) -> Result<(), NamingError> {
        self.visit()?;
        if depth > MAX_MODULE_DEPTH {
            return Err(NamingError::TooDeep);
        }
        let module = module.borrow();
        let Some(state) = module_state(&module.state) else {
            return Ok(());
        };
        let state = state.borrow();
        if let Some(Value::Dict(params)) = state.get_str("_parameters") {
            self.tensor_dict(&params.borrow(), prefix)?;
        }
        if let Some(Value::Dict(buffers)) = state.get_str("_buffers") {
            let non_persistent = string_set(state.get_str("_non_persistent_buffers_set"));
            self.tensor_entries(&buffers.borrow(), prefix, &non_persistent)?;
        }
        if let Some(Value::Dict(children)) = state.get_str("_modules") {
            for (key, child) in &children.borrow().entries {
                if let (Value::Object(child), Some(name)) = (child, key.as_name()) {
                    self.module(child, &format!("{prefix}{name}."), depth + 1)?;
                }
            }
        }
        Ok(())
    }
}

/// A module's `__dict__` from its BUILD state (a dict, or `(dict, slots)` for slotted classes).
fn module_state(state: &Value) -> Option<&Rc<std::cell::RefCell<Dict>>> {
    match state {
        Value::Dict(d) => Some(d),
        Value::Tuple(t) => match t.items.first() {
            Some(Value::Dict(d)) => Some(d),
            _ => None,
        },
        _ => None,
    }
}

fn has_tensor_values(dict: &Dict) -> bool {
    dict.entries
        .iter()
        .any(|(_, v)| matches!(v, Value::Tensor(_)))
}

fn string_set(value: Option<&Value>) -> HashSet<String> {
    match value {
        Some(Value::Set(items) | Value::List(items)) => items
            .borrow()
            .items
            .iter()
            .filter_map(Value::as_name)
            .collect(),
        _ => HashSet::new(),
    }
}
