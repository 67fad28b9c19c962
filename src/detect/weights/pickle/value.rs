//! The values the unpickler builds: plain data, shared through `Rc` exactly as the pickle's
//! memo shares them (a memo reference is a pointer copy, never a deep copy).
//!
//! Containers drop iteratively, so a maliciously deep nesting cannot overflow the stack when
//! it is freed, and [`Value::clear_contents`] breaks the reference cycles a pickle can build.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use candle_core::DType;

use super::policy::Global;

/// One Python object as far as a weights file needs it.
#[derive(Clone, Debug)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer wider than 64 bits (kept opaque; weights never need its value).
    BigInt,
    Float(f64),
    Str(Rc<str>),
    /// A bytes object, of this many bytes (weights never need its contents).
    Bytes(usize),
    Tuple(Rc<Items>),
    List(Rc<RefCell<Items>>),
    Set(Rc<RefCell<Items>>),
    Dict(Rc<RefCell<Dict>>),
    /// An allow-listed global itself (a class, a function or a constant such as `torch.float16`).
    Global(Rc<Global>),
    /// An instance of an allow-listed class (an `nn.Module`): a data container, never instantiated.
    Object(Rc<RefCell<Object>>),
    /// Something an allow-listed data constructor (`torch.Size`, numpy scalars, …) would build;
    /// weights never depend on it, so its arguments are not kept.
    Opaque(Rc<Global>),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
}

/// The elements of a tuple, list or set.
#[derive(Debug, Default)]
pub struct Items {
    pub items: Vec<Value>,
}

/// A dict in insertion order; string, integer, bool and None keys are deduplicated as in Python.
#[derive(Debug, Default)]
pub struct Dict {
    pub entries: Vec<(Value, Value)>,
    index: HashMap<HashKey, usize>,
}

#[derive(Debug, PartialEq, Eq, Hash)]
enum HashKey {
    Str(Rc<str>),
    Int(i64),
    None,
}

/// An instance of an allow-listed class with the state `BUILD` gave it (`Value::None` before).
#[derive(Debug)]
pub struct Object {
    pub class: Rc<Global>,
    pub state: Value,
}

/// A storage named by a persistent id `('storage', StorageType, key, location, numel)`.
#[derive(Debug)]
pub struct StorageRef {
    pub key: String,
    /// `None` for storage types candle cannot hold (int8, complex): tensors on them are skipped.
    pub dtype: Option<DType>,
    pub type_name: String,
    pub numel: usize,
}

/// A strided view into a storage, as `_rebuild_tensor_v2` describes it (in elements).
#[derive(Debug)]
pub struct TensorRef {
    pub storage: Rc<StorageRef>,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

impl TensorRef {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

impl Value {
    pub fn tuple(items: Vec<Value>) -> Value {
        Value::Tuple(Rc::new(Items { items }))
    }

    pub fn list(items: Vec<Value>) -> Value {
        Value::List(Rc::new(RefCell::new(Items { items })))
    }

    pub fn set(items: Vec<Value>) -> Value {
        Value::Set(Rc::new(RefCell::new(Items { items })))
    }

    pub fn empty_dict() -> Value {
        Value::Dict(Rc::new(RefCell::new(Dict::default())))
    }

    /// A short description for messages, never recursing (a pickle may nest arbitrarily).
    pub fn describe(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(b) => format!("the bool {b}"),
            Value::Int(i) => format!("the int {i}"),
            Value::BigInt => "a big int".into(),
            Value::Float(f) => format!("the float {f}"),
            Value::Str(_) => "a string".into(),
            Value::Bytes(n) => format!("a bytes object of {n} bytes"),
            Value::Tuple(t) => format!("a tuple of {} items", t.items.len()),
            Value::List(l) => format!("a list of {} items", l.borrow().items.len()),
            Value::Set(s) => format!("a set of {} items", s.borrow().items.len()),
            Value::Dict(d) => d.borrow().describe(),
            Value::Global(g) => format!("the global `{}`", g.qualified()),
            Value::Object(o) => format!("a `{}` object", o.borrow().class.qualified()),
            Value::Opaque(g) => format!("a `{}` value", g.qualified()),
            Value::Storage(s) => format!("a bare `{}`", s.type_name),
            Value::Tensor(t) => format!("a single tensor of shape {:?}", t.shape),
        }
    }

    /// The key as a state_dict name part: strings as they are, integers in decimal.
    pub fn as_name(&self) -> Option<String> {
        match self {
            Value::Str(s) => Some(s.to_string()),
            Value::Int(i) => Some(i.to_string()),
            _ => None,
        }
    }

    /// Empties this container in place, handing its children to `out`: used to tear a whole
    /// object graph down, which also breaks any reference cycles in it.
    pub fn clear_contents(&self, out: &mut Vec<Value>) {
        match self {
            Value::List(l) | Value::Set(l) => out.append(&mut l.borrow_mut().items),
            Value::Dict(d) => d.borrow_mut().drain_into(out),
            Value::Object(o) => out.push(std::mem::replace(&mut o.borrow_mut().state, Value::None)),
            _ => {}
        }
    }
}

impl Dict {
    /// Inserts or, for a key already present, replaces (Python semantics).
    pub fn insert(&mut self, key: Value, value: Value) {
        let hash_key = match &key {
            Value::Str(s) => Some(HashKey::Str(s.clone())),
            Value::Int(i) => Some(HashKey::Int(*i)),
            Value::Bool(b) => Some(HashKey::Int(i64::from(*b))),
            Value::None => Some(HashKey::None),
            _ => None,
        };
        if let Some(hash_key) = hash_key {
            if let Some(&at) = self.index.get(&hash_key) {
                self.entries[at].1 = value;
                return;
            }
            self.index.insert(hash_key, self.entries.len());
        }
        self.entries.push((key, value));
    }

    pub fn get_str(&self, key: &str) -> Option<&Value> {
        let at = *self.index.get(&HashKey::Str(Rc::from(key)))?;
        Some(&self.entries[at].1)
    }

    pub fn describe(&self) -> String {
        const SHOWN: usize = 8;
        let mut keys: Vec<String> = self
            .entries
            .iter()
            .take(SHOWN)
            .map(|(k, _)| {
                k.as_name()
                    .map_or_else(|| k.describe(), |n| format!("`{n}`"))
            })
            .collect();
        if self.entries.len() > SHOWN {
            keys.push(format!("… ({} keys)", self.entries.len()));
        }
        format!("a dict with keys [{}]", keys.join(", "))
    }

    fn drain_into(&mut self, out: &mut Vec<Value>) {
        self.index.clear();
        for (k, v) in self.entries.drain(..) {
            out.push(k);
            out.push(v);
        }
    }
}

/// Frees `pending` and everything only it holds, with a work list instead of recursion.
fn drop_iteratively(mut pending: Vec<Value>) {
    while let Some(value) = pending.pop() {
        match value {
            Value::Tuple(mut t) => {
                if let Some(inner) = Rc::get_mut(&mut t) {
                    pending.append(&mut inner.items);
                }
            }
            Value::List(mut l) | Value::Set(mut l) => {
                if let Some(inner) = Rc::get_mut(&mut l) {
                    pending.append(&mut inner.get_mut().items);
                }
            }
            Value::Dict(mut d) => {
                if let Some(inner) = Rc::get_mut(&mut d) {
                    inner.get_mut().drain_into(&mut pending);
                }
            }
            Value::Object(mut o) => {
                if let Some(inner) = Rc::get_mut(&mut o) {
                    pending.push(std::mem::replace(&mut inner.get_mut().state, Value::None));
                }
            }
            _ => {}
        }
    }
}

impl Drop for Items {
    fn drop(&mut self) {
        if !self.items.is_empty() {
            drop_iteratively(std::mem::take(&mut self.items));
        }
    }
}

impl Drop for Dict {
    fn drop(&mut self) {
        if !self.entries.is_empty() {
            let mut pending = Vec::with_capacity(self.entries.len() * 2);
            self.drain_into(&mut pending);
            drop_iteratively(pending);
        }
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        if !matches!(self.state, Value::None) {
            drop_iteratively(vec![std::mem::replace(&mut self.state, Value::None)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_a_million_nested_lists_does_not_overflow_the_stack() {
        let mut v = Value::list(vec![]);
        for _ in 0..1_000_000 {
            v = Value::list(vec![v]);
        }
        drop(v);
    }

    #[test]
    fn dict_replaces_duplicate_keys_like_python() {
        let mut d = Dict::default();
        d.insert(Value::Str("a".into()), Value::Int(1));
        d.insert(Value::Str("a".into()), Value::Int(2));
        d.insert(Value::Int(1), Value::Int(3));
        d.insert(Value::Bool(true), Value::Int(4));
        assert_eq!(d.entries.len(), 2);
        assert!(matches!(d.get_str("a"), Some(Value::Int(2))));
        assert!(matches!(d.entries[1].1, Value::Int(4)));
    }
}
