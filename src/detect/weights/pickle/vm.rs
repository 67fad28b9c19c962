//! The unpickler: a stack machine over the opcodes `torch.save` emits (protocol 2, and the
//! simple parts of 3–5), building [`Value`]s and calling nothing.
//!
//! Every read is bounds-checked (truncation is an error, never a panic), every allocation
//! is proportional to bytes actually present, memo references are `Rc` copies, and globals
//! pass through [`policy::classify`] before anything else happens.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use super::policy::{self, Global, GlobalKind};
use super::value::{Object, StorageRef, TensorRef, Value};

/// Why a pickle could not be read, and at which byte of it.
#[derive(Debug)]
pub struct UnpickleError {
    pub offset: usize,
    pub kind: UnpickleErrorKind,
}

#[derive(Debug)]
pub enum UnpickleErrorKind {
    /// The pickle names a global outside the allow-list (`module.name`).
    Forbidden(String),
    UnknownOpcode(u8),
    Truncated,
    Malformed(String),
}

/// A fully read pickle: its top-level value, plus the memo, which is torn down on drop so
/// that reference cycles built through it are freed too.
pub struct Unpickled {
    pub root: Value,
    /// Opcodes executed: a bound on how many distinct objects the pickle can hold.
    pub ops: usize,
    memo: Vec<Value>,
}

impl Drop for Unpickled {
    fn drop(&mut self) {
        let mut all = std::mem::take(&mut self.memo);
        all.push(std::mem::replace(&mut self.root, Value::None));
        tear_down(all);
    }
}

/// Reads one pickle from `input`.
pub fn unpickle(input: &[u8]) -> Result<Unpickled, UnpickleError> {
    let mut machine = Machine {
        input,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        ops: 0,
    };
    let root = machine.run()?;
    // Leftovers on the stack may share containers with `root`: torn down with it, later.
    let mut memo: Vec<Value> = std::mem::take(&mut machine.stack);
    memo.extend(machine.memo.drain().map(|(_, v)| v));
    Ok(Unpickled {
        root,
        ops: machine.ops,
        memo,
    })
}

/// Empties every mutable container reachable from `values`, so that reference cycles
/// (which only lists, dicts, sets and objects can close) cannot keep anything alive.
fn tear_down(mut values: Vec<Value>) {
    // Tuples cannot be emptied, only walked: once each, as they may be shared many times.
    let mut tuples_seen = HashSet::new();
    while let Some(v) = values.pop() {
        match &v {
            Value::Tuple(t) => {
                if tuples_seen.insert(Rc::as_ptr(t)) {
                    values.extend(t.items.iter().cloned());
                }
            }
            other => other.clear_contents(&mut values),
        }
    }
}

struct Machine<'a> {
    input: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    /// Stack heights at each MARK (pickle's "metastack").
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    ops: usize,
}

impl Drop for Machine<'_> {
    fn drop(&mut self) {
        let mut all = std::mem::take(&mut self.stack);
        all.extend(self.memo.drain().map(|(_, v)| v));
        tear_down(all);
    }
}

type Step<T> = Result<T, UnpickleErrorKind>;

fn malformed<T>(reason: impl Into<String>) -> Step<T> {
    Err(UnpickleErrorKind::Malformed(reason.into()))
}

impl<'a> Machine<'a> {
    fn run(&mut self) -> Result<Value, UnpickleError> {
        loop {
            let at = self.pos;
            let opcode = self
                .take(1)
                .map_err(|kind| UnpickleError { offset: at, kind })?[0];
            self.ops += 1;
            match self.step(opcode) {
                Ok(None) => {}
                Ok(Some(root)) => return Ok(root),
                Err(kind) => return Err(UnpickleError { offset: at, kind }),
            }
        }
    }

    /// Executes one opcode; `Some(root)` at STOP.
    fn step(&mut self, opcode: u8) -> Step<Option<Value>> {
        match opcode {
            0x80 => {
                self.take(1)?; // PROTO: any version; unknown opcodes fail below
            }
            0x95 => {
                // FRAME: a length prefix for buffered reading; the frame's opcodes follow inline.
                let len = self.u64()?;
                if len > (self.input.len() - self.pos) as u64 {
                    return Err(UnpickleErrorKind::Truncated);
                }
            }
            b'.' => return self.pop().map(Some),
            b'(' => self.marks.push(self.stack.len()),
            b'0' => drop(self.pop()?),
            b'1' => drop(self.pop_mark()?),
            b'2' => self.stack.push(self.top()?.clone()),
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.push_global(module, name)?;
            }
            0x93 => {
                let name = self.pop_str("STACK_GLOBAL name")?;
                let module = self.pop_str("STACK_GLOBAL module")?;
                self.push_global(module.to_string(), name.to_string())?;
            }
            b'q' => {
                let key = u32::from(self.take(1)?[0]);
                self.memo.insert(key, self.top()?.clone());
            }
            b'r' => {
                let key = self.u32()?;
                self.memo.insert(key, self.top()?.clone());
            }
            0x94 => {
                let key = u32::try_from(self.memo.len()).or_else(|_| malformed("memo overflow"))?;
                self.memo.insert(key, self.top()?.clone());
            }
            b'h' => {
                let key = u32::from(self.take(1)?[0]);
                self.push_memo(key)?;
            }
            b'j' => {
                let key = self.u32()?;
                self.push_memo(key)?;
            }
            b'}' => self.stack.push(Value::empty_dict()),
            b'd' => {
                let items = self.pop_mark()?;
                let dict = Value::empty_dict();
                insert_pairs(&dict, items)?;
                self.stack.push(dict);
            }
            b']' => self.stack.push(Value::list(Vec::new())),
            b'l' => {
                let items = self.pop_mark()?;
                self.stack.push(Value::list(items));
            }
            b')' => self.stack.push(Value::tuple(Vec::new())),
            b't' => {
                let items = self.pop_mark()?;
                self.stack.push(Value::tuple(items));
            }
            0x85..=0x87 => {
                let n = usize::from(opcode - 0x84);
                let items = self.pop_n(n)?;
                self.stack.push(Value::tuple(items));
            }
            b's' => {
                let pair = self.pop_n(2)?;
                insert_pairs(self.top()?, pair)?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                insert_pairs(self.top()?, items)?;
            }
            b'a' => {
                let item = self.pop()?;
                extend_list(self.top()?, vec![item])?;
            }
            b'e' => {
                let items = self.pop_mark()?;
                extend_list(self.top()?, items)?;
            }
            0x8f => self.stack.push(Value::set(Vec::new())),
            0x90 => {
                let items = self.pop_mark()?;
                match self.top()? {
                    Value::Set(set) => set.borrow_mut().items.extend(items),
                    other => return malformed(format!("ADDITEMS on {}", other.describe())),
                }
            }
            0x91 => {
                let items = self.pop_mark()?;
                self.stack.push(Value::set(items));
            }
            b'J' => {
                let v = i32::from_le_bytes(self.array()?);
                self.stack.push(Value::Int(i64::from(v)));
            }
            b'K' => {
                let v = self.take(1)?[0];
                self.stack.push(Value::Int(i64::from(v)));
            }
            b'M' => {
                let v = u16::from_le_bytes(self.array()?);
                self.stack.push(Value::Int(i64::from(v)));
            }
            0x8a => {
                let len = usize::from(self.take(1)?[0]);
                let v = long_from_le(self.take(len)?);
                self.stack.push(v);
            }
            0x8b => {
                let len = self.i32_len()?;
                let v = long_from_le(self.take(len)?);
                self.stack.push(v);
            }
            b'G' => {
                let v = f64::from_be_bytes(self.array()?);
                self.stack.push(Value::Float(v));
            }
            b'X' => {
                let len = self.u32()? as usize;
                self.push_unicode(len)?;
            }
            0x8c => {
                let len = usize::from(self.take(1)?[0]);
                self.push_unicode(len)?;
            }
            0x8d => {
                let len = self.u64_len()?;
                self.push_unicode(len)?;
            }
            b'B' => {
                let len = self.u32()? as usize;
                self.push_bytes(len)?;
            }
            b'C' => {
                let len = usize::from(self.take(1)?[0]);
                self.push_bytes(len)?;
            }
            0x8e | 0x96 => {
                let len = self.u64_len()?;
                self.push_bytes(len)?;
            }
            // BINSTRING / SHORT_BINSTRING: Python 2 `str`, read as text when it is UTF-8.
            b'T' => {
                let len = self.i32_len()?;
                self.push_py2_string(len)?;
            }
            b'U' => {
                let len = usize::from(self.take(1)?[0]);
                self.push_py2_string(len)?;
            }
            b'N' => self.stack.push(Value::None),
            0x88 => self.stack.push(Value::Bool(true)),
            0x89 => self.stack.push(Value::Bool(false)),
            b'R' => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let result = reduce(&callable, &args)?;
                self.stack.push(result);
            }
            0x81 => {
                let args = self.pop()?;
                let class = self.pop()?;
                self.stack.push(new_object(&class, &args)?);
            }
            0x92 => {
                let _kwargs = self.pop()?;
                let args = self.pop()?;
                let class = self.pop()?;
                self.stack.push(new_object(&class, &args)?);
            }
            b'b' => {
                let state = self.pop()?;
                build(self.top()?, state)?;
            }
            b'Q' => {
                let pid = self.pop()?;
                self.stack.push(persistent_load(&pid)?);
            }
            other => return Err(UnpickleErrorKind::UnknownOpcode(other)),
        }
        Ok(None)
    }

    fn take(&mut self, n: usize) -> Step<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(UnpickleErrorKind::Truncated)?;
        let bytes = self
            .input
            .get(self.pos..end)
            .ok_or(UnpickleErrorKind::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Step<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u32(&mut self) -> Step<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Step<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A 64-bit length; anything past the input is truncation (checked again by `take`).
    fn u64_len(&mut self) -> Step<usize> {
        usize::try_from(self.u64()?).map_err(|_| UnpickleErrorKind::Truncated)
    }

    fn i32_len(&mut self) -> Step<usize> {
        let len = i32::from_le_bytes(self.array()?);
        usize::try_from(len).or_else(|_| malformed(format!("negative length {len}")))
    }

    /// A newline-terminated UTF-8 line (GLOBAL's arguments).
    fn line(&mut self) -> Step<String> {
        let rest = &self.input[self.pos..];
        let len = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(UnpickleErrorKind::Truncated)?;
        let line = std::str::from_utf8(&rest[..len])
            .or_else(|_| malformed("GLOBAL name is not UTF-8"))?
            .to_string();
        self.pos += len + 1;
        Ok(line)
    }

    fn push_unicode(&mut self, len: usize) -> Step<()> {
        let bytes = self.take(len)?;
        let text = std::str::from_utf8(bytes).or_else(|_| malformed("string is not UTF-8"))?;
        self.stack.push(Value::Str(Rc::from(text)));
        Ok(())
    }

    fn push_bytes(&mut self, len: usize) -> Step<()> {
        let bytes = self.take(len)?;
        self.stack.push(Value::Bytes(bytes.len()));
        Ok(())
    }

    fn push_py2_string(&mut self, len: usize) -> Step<()> {
        let bytes = self.take(len)?;
        let value = match std::str::from_utf8(bytes) {
            Ok(text) => Value::Str(Rc::from(text)),
            Err(_) => Value::Bytes(bytes.len()),
        };
        self.stack.push(value);
        Ok(())
    }

    fn push_global(&mut self, module: String, name: String) -> Step<()> {
        let Some(kind) = policy::classify(&module, &name) else {
            return Err(UnpickleErrorKind::Forbidden(format!("{module}.{name}")));
        };
        let global = Global { module, name, kind };
        self.stack.push(Value::Global(Rc::new(global)));
        Ok(())
    }

    fn push_memo(&mut self, key: u32) -> Step<()> {
        let value = self.memo.get(&key).cloned();
        let value = value.ok_or_else(|| {
            UnpickleErrorKind::Malformed(format!("memo entry {key} is read before it is stored"))
        })?;
        self.stack.push(value);
        Ok(())
    }

    fn pop(&mut self) -> Step<Value> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return malformed("stack underflow past a MARK");
        }
        self.stack
            .pop()
            .ok_or_else(|| UnpickleErrorKind::Malformed("stack underflow".into()))
    }

    fn pop_n(&mut self, n: usize) -> Step<Vec<Value>> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() < floor + n {
            return malformed("stack underflow");
        }
        Ok(self.stack.split_off(self.stack.len() - n))
    }

    fn pop_mark(&mut self) -> Step<Vec<Value>> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| UnpickleErrorKind::Malformed("no MARK to pop to".into()))?;
        Ok(self.stack.split_off(mark.min(self.stack.len())))
    }

    fn top(&self) -> Step<&Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return malformed("stack underflow");
        }
        self.stack
            .last()
            .ok_or_else(|| UnpickleErrorKind::Malformed("stack underflow".into()))
    }

    fn pop_str(&mut self, what: &str) -> Step<Rc<str>> {
        match self.pop()? {
            Value::Str(s) => Ok(s),
            other => malformed(format!("{what} is {}, not a string", other.describe())),
        }
    }
}

/// A LONG1/LONG4 payload: little-endian two's complement.
fn long_from_le(bytes: &[u8]) -> Value {
    if bytes.len() > 8 {
        return Value::BigInt;
    }
    let fill = if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
        0xff
    } else {
        0
    };
    let mut buf = [fill; 8];
    buf[..bytes.len()].copy_from_slice(bytes);
    Value::Int(i64::from_le_bytes(buf))
}

fn insert_pairs(target: &Value, items: Vec<Value>) -> Step<()> {
    let Value::Dict(dict) = target else {
        return malformed(format!("SETITEM(S) on {}", target.describe()));
    };
    if !items.len().is_multiple_of(2) {
        return malformed("odd number of items for a dict");
    }
    let mut dict = dict.borrow_mut();
    let mut items = items.into_iter();
    while let (Some(k), Some(v)) = (items.next(), items.next()) {
        dict.insert(k, v);
    }
    Ok(())
}

fn extend_list(target: &Value, items: Vec<Value>) -> Step<()> {
    match target {
        Value::List(list) => {
            list.borrow_mut().items.extend(items);
            Ok(())
        }
        other => malformed(format!("APPEND(S) on {}", other.describe())),
    }
}

fn args_of(args: &Value) -> Step<&[Value]> {
    match args {
        Value::Tuple(t) => Ok(&t.items),
        other => malformed(format!(
            "call arguments are {}, not a tuple",
            other.describe()
        )),
    }
}

/// REDUCE: `callable(*args)` for the allow-listed behaviours; nothing is ever executed.
fn reduce(callable: &Value, args: &Value) -> Step<Value> {
    let Value::Global(global) = callable else {
        return malformed(format!(
            "REDUCE calls {}, not a global",
            callable.describe()
        ));
    };
    let args = args_of(args)?;
    match global.kind {
        GlobalKind::RebuildTensorV2 => rebuild_tensor(args),
        GlobalKind::RebuildParameter => match args.first() {
            Some(tensor @ Value::Tensor(_)) => Ok(tensor.clone()),
            _ => malformed("_rebuild_parameter without a tensor"),
        },
        GlobalKind::RebuildFromTypeV2 => rebuild_from_type(args),
        GlobalKind::OrderedDict => {
            let dict = Value::empty_dict();
            if let Some(Value::List(pairs)) = args.first() {
                let pairs = pairs.borrow();
                for pair in &pairs.items {
                    match pair {
                        Value::Tuple(kv) if kv.items.len() == 2 => {
                            insert_pairs(&dict, kv.items.clone())?
                        }
                        _ => return malformed("OrderedDict from something other than pairs"),
                    }
                }
            }
            Ok(dict)
        }
        GlobalKind::Set => Ok(Value::set(match args.first() {
            Some(Value::List(items) | Value::Set(items)) => items.borrow().items.clone(),
            Some(Value::Tuple(items)) => items.items.clone(),
            _ => Vec::new(),
        })),
        GlobalKind::DataClass => Ok(new_data_object(global)),
        GlobalKind::OpaqueConstructor => Ok(Value::Opaque(global.clone())),
        GlobalKind::Storage(_) | GlobalKind::Constant => malformed(format!(
            "`{}` is called, which torch.save never does",
            global.qualified()
        )),
    }
}

/// `_rebuild_from_type_v2(func, new_type, args, state)`: a tensor subclass wrapper.
fn rebuild_from_type(args: &[Value]) -> Step<Value> {
    let [Value::Global(func), _new_type, Value::Tuple(inner), ..] = args else {
        return malformed("_rebuild_from_type_v2 with unexpected arguments");
    };
    match func.kind {
        GlobalKind::RebuildTensorV2 => rebuild_tensor(&inner.items),
        GlobalKind::RebuildParameter => match inner.items.first() {
            Some(tensor @ Value::Tensor(_)) => Ok(tensor.clone()),
            _ => malformed("_rebuild_parameter without a tensor"),
        },
        _ => malformed(format!(
            "_rebuild_from_type_v2 wraps `{}`",
            func.qualified()
        )),
    }
}

fn new_data_object(class: &Rc<Global>) -> Value {
    Value::Object(Rc::new(RefCell::new(Object {
        class: class.clone(),
        state: Value::None,
    })))
}

/// NEWOBJ: `cls.__new__(cls, *args)`, i.e. an empty instance of a data class.
fn new_object(class: &Value, args: &Value) -> Step<Value> {
    let Value::Global(global) = class else {
        return malformed(format!("NEWOBJ on {}, not a class", class.describe()));
    };
    args_of(args)?;
    match global.kind {
        GlobalKind::DataClass => Ok(new_data_object(global)),
        GlobalKind::OrderedDict => Ok(Value::empty_dict()),
        GlobalKind::Set => Ok(Value::set(Vec::new())),
        GlobalKind::OpaqueConstructor => Ok(Value::Opaque(global.clone())),
        _ => malformed(format!(
            "NEWOBJ on `{}`, which is not a class",
            global.qualified()
        )),
    }
}

/// BUILD: gives an object its state. Dicts (OrderedDict `_metadata`), tensors and opaque
/// values accept and ignore it, as weights do not depend on it.
fn build(target: &Value, state: Value) -> Step<()> {
    match target {
        Value::Object(object) => {
            let old = std::mem::replace(&mut object.borrow_mut().state, state);
            drop(old);
            Ok(())
        }
        Value::Dict(_) | Value::Tensor(_) | Value::Opaque(_) => Ok(()),
        other => malformed(format!("BUILD on {}", other.describe())),
    }
}

/// BINPERSID: torch's `('storage', StorageType, key, location, numel)`.
fn persistent_load(pid: &Value) -> Step<Value> {
    let Value::Tuple(pid) = pid else {
        return malformed(format!("persistent id is {}, not a tuple", pid.describe()));
    };
    let [Value::Str(tag), Value::Global(storage_type), key, _location, Value::Int(numel)] =
        pid.items.as_slice()
    else {
        return malformed("persistent id is not ('storage', type, key, location, numel)");
    };
    if &**tag != "storage" {
        return malformed(format!("persistent id of kind `{tag}`, expected `storage`"));
    }
    let GlobalKind::Storage(dtype) = storage_type.kind else {
        return malformed(format!(
            "`{}` is not a storage type",
            storage_type.qualified()
        ));
    };
    let key = key
        .as_name()
        .ok_or_else(|| UnpickleErrorKind::Malformed("storage key is not a string".into()))?;
    let numel =
        usize::try_from(*numel).or_else(|_| malformed(format!("storage of {numel} elements")))?;
    Ok(Value::Storage(Rc::new(StorageRef {
        key,
        dtype,
        type_name: storage_type.qualified(),
        numel,
    })))
}

/// `_rebuild_tensor_v2(storage, storage_offset, size, stride, ...)`, checked against the
/// storage's element count so a view can never reach past its data.
fn rebuild_tensor(args: &[Value]) -> Step<Value> {
    let [Value::Storage(storage), Value::Int(offset), size, stride, ..] = args else {
        return malformed("_rebuild_tensor_v2 without (storage, offset, size, stride)");
    };
    let offset = usize::try_from(*offset)
        .or_else(|_| malformed(format!("negative storage offset {offset}")))?;
    let shape = usizes(size, "size")?;
    let stride = usizes(stride, "stride")?;
    if shape.len() != stride.len() {
        return malformed(format!(
            "size {shape:?} and stride {stride:?} differ in rank"
        ));
    }
    let numel = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| UnpickleErrorKind::Malformed(format!("size {shape:?} overflows")))?;
    if numel > 0 {
        let last = shape
            .iter()
            .zip(&stride)
            .try_fold(offset, |at, (&d, &s)| {
                at.checked_add((d - 1).checked_mul(s)?)
            })
            .ok_or_else(|| UnpickleErrorKind::Malformed(format!("stride {stride:?} overflows")))?;
        if last >= storage.numel {
            return malformed(format!(
                "a tensor of size {shape:?}, stride {stride:?}, offset {offset} reaches element {last} of storage {} which holds {} elements",
                storage.key, storage.numel
            ));
        }
    }
    Ok(Value::Tensor(Rc::new(TensorRef {
        storage: storage.clone(),
        offset,
        shape,
        stride,
    })))
}

fn usizes(value: &Value, what: &str) -> Step<Vec<usize>> {
    let Value::Tuple(t) = value else {
        return malformed(format!(
            "tensor {what} is {}, not a tuple",
            value.describe()
        ));
    };
    t.items
        .iter()
        .map(|v| match v {
            Value::Int(i) => {
                usize::try_from(*i).or_else(|_| malformed(format!("negative tensor {what} {i}")))
            }
            other => malformed(format!("tensor {what} holds {}", other.describe())),
        })
        .collect()
}

impl std::fmt::Display for UnpickleErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnpickleErrorKind::Forbidden(global) => write!(f, "forbidden global `{global}`"),
            UnpickleErrorKind::UnknownOpcode(op) => {
                write!(f, "unknown or unsupported opcode 0x{op:02x}")
            }
            UnpickleErrorKind::Truncated => write!(f, "the pickle ends in the middle of an opcode"),
            UnpickleErrorKind::Malformed(reason) => write!(f, "{reason}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> Result<Unpickled, UnpickleError> {
        unpickle(bytes)
    }

    #[test]
    fn reads_plain_data() {
        // {'a': [1, -2, 3.5, 'x', None, True], 'b': (300, 70000)}
        let mut p = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffG\x40\x0c\x00\x00\x00\x00\x00\x00\x8c\x01xN\x88eX\x01\x00\x00\x00b".to_vec();
        p.extend_from_slice(b"M\x2c\x01\x8a\x03\x70\x11\x01\x86u.");
        let out = run(&p).unwrap();
        let Value::Dict(d) = &out.root else {
            panic!("{}", out.root.describe())
        };
        let d = d.borrow();
        let Some(Value::List(l)) = d.get_str("a") else {
            panic!()
        };
        let l = l.borrow();
        assert!(
            matches!(l.items[..], [Value::Int(1), Value::Int(-2), Value::Float(f), Value::Str(_), Value::None, Value::Bool(true)] if f == 3.5)
        );
        let Some(Value::Tuple(t)) = d.get_str("b") else {
            panic!()
        };
        assert!(matches!(t.items[..], [Value::Int(300), Value::Int(70000)]));
    }

    #[test]
    fn unknown_opcode_names_byte_and_offset() {
        let err = run(b"\x80\x02N\xff.").err().unwrap();
        assert_eq!(err.offset, 3);
        assert!(matches!(err.kind, UnpickleErrorKind::UnknownOpcode(0xff)));
    }

    #[test]
    fn truncated_input_is_an_error() {
        for p in [
            &b"\x80"[..],
            b"\x80\x02X\xff\xff\xff\xff",
            b"\x80\x02N",
            b"\x80\x02cos\nsys",
            b"",
        ] {
            assert!(run(p).is_err(), "{p:?}");
        }
    }

    #[test]
    fn self_referencing_list_is_freed() {
        // l = []; l.append(l)
        let out = run(b"\x80\x02]q\x00h\x00a.").unwrap();
        let Value::List(l) = &out.root else { panic!() };
        let weak = Rc::downgrade(l);
        drop(out);
        assert!(weak.upgrade().is_none(), "cycle leaked");
    }
}
