//! A restricted unpickler for the pickles `torch.save` writes: it understands the data opcodes
//! (numbers, strings, bytes, tuples, lists, dicts, the memo) and only the globals a state dict
//! needs (`torch._utils._rebuild_tensor_v2` and friends, the typed storages of each dtype,
//! `collections.OrderedDict`). It never executes anything: a `GLOBAL` naming any other callable
//! is refused *when it is read*, before a `REDUCE` could call it, and the error names it.
//!
//! Reference: Python's `pickle.py` / `pickletools.py` (opcode table) and `torch/serialization.py`,
//! `torch/_utils.py` (what the tensor globals take).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Element type of a PyTorch storage, from its class name (`torch.FloatStorage` ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StorageDType {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageDType {
    fn from_class(name: &str) -> Option<StorageDType> {
        Some(match name {
            "FloatStorage" => StorageDType::F32,
            "DoubleStorage" => StorageDType::F64,
            "HalfStorage" => StorageDType::F16,
            "BFloat16Storage" => StorageDType::BF16,
            "LongStorage" => StorageDType::I64,
            "IntStorage" => StorageDType::I32,
            "ShortStorage" => StorageDType::I16,
            "CharStorage" => StorageDType::I8,
            "ByteStorage" => StorageDType::U8,
            "BoolStorage" => StorageDType::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub(crate) fn size(self) -> usize {
        match self {
            StorageDType::F64 | StorageDType::I64 => 8,
            StorageDType::F32 | StorageDType::I32 => 4,
            StorageDType::F16 | StorageDType::BF16 | StorageDType::I16 => 2,
            StorageDType::I8 | StorageDType::U8 | StorageDType::Bool => 1,
        }
    }

    /// PyTorch's name of the dtype (`float16` ...).
    pub(crate) fn name(self) -> &'static str {
        match self {
            StorageDType::F32 => "float32",
            StorageDType::F64 => "float64",
            StorageDType::F16 => "float16",
            StorageDType::BF16 => "bfloat16",
            StorageDType::I64 => "int64",
            StorageDType::I32 => "int32",
            StorageDType::I16 => "int16",
            StorageDType::I8 => "int8",
            StorageDType::U8 => "uint8",
            StorageDType::Bool => "bool",
        }
    }

    /// Little-endian element bytes to f32 (fp16/bf16 widened exactly, f64 and integers rounded).
    pub(crate) fn to_f32(self, b: &[u8]) -> f32 {
        match self {
            StorageDType::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            StorageDType::F64 => f64::from_le_bytes(b[..8].try_into().unwrap()) as f32,
            StorageDType::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
            StorageDType::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            StorageDType::I64 => i64::from_le_bytes(b[..8].try_into().unwrap()) as f32,
            StorageDType::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
            StorageDType::I16 => i16::from_le_bytes([b[0], b[1]]) as f32,
            StorageDType::I8 => b[0] as i8 as f32,
            StorageDType::U8 | StorageDType::Bool => b[0] as f32,
        }
    }
}

/// The only callables a checkpoint may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Global {
    /// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`
    RebuildTensorV2,
    /// `torch._utils._rebuild_tensor(storage, offset, size, stride)` (PyTorch < 1.0)
    RebuildTensor,
    /// `torch._utils._rebuild_parameter(data, requires_grad, hooks)` (and `_with_state`)
    RebuildParameter,
    /// `collections.OrderedDict`
    OrderedDict,
    /// `torch.<Type>Storage`: only a marker inside persistent ids, never called.
    Storage(StorageDType),
}

impl Global {
    /// The allowed global `module.name`, or None. Python 2 names are read as Python 3 does
    /// (`__builtin__` -> `builtins`), so a refusal names what Python would have called.
    fn resolve(module: &str, name: &str) -> Option<Global> {
        Some(match (module, name) {
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
            ("torch._utils", "_rebuild_tensor") => Global::RebuildTensor,
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                Global::RebuildParameter
            }
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch", storage) => Global::Storage(StorageDType::from_class(storage)?),
            _ => return None,
        })
    }
}

/// A tensor as the pickle describes it: a view (offset, size, stride, in elements) of a storage.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TensorRef {
    pub storage: String,
    pub dtype: StorageDType,
    pub offset: usize,
    pub size: Vec<usize>,
    pub stride: Vec<usize>,
}

/// An unpickled value. Lists and dicts are shared (the memo refers to the same object, and later
/// opcodes may fill it), as in Python.
#[derive(Clone, Debug)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer too large for i64 (little-endian two's complement bytes), e.g. the legacy magic.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Rc<RefCell<Vec<Value>>>),
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    Global(Global),
    /// A storage from a persistent id: (key, dtype).
    Storage(String, StorageDType),
    Tensor(TensorRef),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Storage(..) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }

    /// A short human description (for metadata and reports).
    pub(crate) fn describe(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Str(s) => s.clone(),
            Value::Tensor(t) => format!("tensor {:?} {}", t.size, t.dtype.name()),
            Value::List(l) => format!("list of {}", l.borrow().len()),
            Value::Dict(d) => format!("dict of {}", d.borrow().len()),
            Value::Tuple(t) => format!("tuple of {}", t.len()),
            Value::Bytes(b) => format!("{} bytes", b.len()),
            other => other.kind().into(),
        }
    }
}

/// Why a pickle was refused.
#[derive(Debug)]
pub(crate) enum PickleError {
    /// A global outside the allowed set (`module.name`).
    Forbidden(String),
    /// Malformed, truncated, or using an opcode / construct `torch.save` does not emit.
    Malformed(String),
}

type PResult<T> = Result<T, PickleError>;

fn bad<T>(msg: impl Into<String>) -> PResult<T> {
    Err(PickleError::Malformed(msg.into()))
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> PResult<&'a [u8]> {
        if self.data.len() - self.pos < n {
            return bad(format!(
                "the pickle ends early (wanted {n} bytes at offset {}, {} left): truncated file?",
                self.pos,
                self.data.len() - self.pos
            ));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> PResult<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> PResult<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> PResult<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> PResult<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn len(&mut self, n: u64) -> PResult<usize> {
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.data.len() - self.pos)
            .map_or_else(
                || bad(format!("a length of {n} runs past the end of the pickle")),
                Ok,
            )
    }
    /// A text line (protocol 0 arguments), without the newline.
    fn line(&mut self) -> PResult<&'a str> {
        let rest = &self.data[self.pos..];
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return bad("the pickle ends inside a text argument: truncated file?");
        };
        self.pos += n + 1;
        std::str::from_utf8(&rest[..n])
            .map_err(|_| PickleError::Malformed("a text argument is not UTF-8".into()))
    }
}

fn int_from_le(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Int(0);
    }
    if bytes.len() <= 8 {
        let neg = bytes[bytes.len() - 1] & 0x80 != 0;
        let mut b = [if neg { 0xff } else { 0 }; 8];
        b[..bytes.len()].copy_from_slice(bytes);
        Value::Int(i64::from_le_bytes(b))
    } else {
        Value::BigInt(bytes.to_vec())
    }
}

fn as_usize(v: &Value, what: &str) -> PResult<usize> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as usize),
        other => bad(format!("{what} is {} rather than a size", other.describe())),
    }
}

fn as_sizes(v: &Value, what: &str) -> PResult<Vec<usize>> {
    match v {
        Value::Tuple(items) => items.iter().map(|x| as_usize(x, what)).collect(),
        Value::List(items) => items.borrow().iter().map(|x| as_usize(x, what)).collect(),
        other => bad(format!("{what} is a {} rather than a tuple", other.kind())),
    }
}

fn rebuild_tensor(args: &[Value]) -> PResult<Value> {
    if args.len() < 4 {
        return bad(format!(
            "_rebuild_tensor takes at least 4 arguments, got {}",
            args.len()
        ));
    }
    let Value::Storage(key, dtype) = &args[0] else {
        return bad(format!(
            "_rebuild_tensor's first argument is a {}, not a storage",
            args[0].kind()
        ));
    };
    let size = as_sizes(&args[2], "a tensor size")?;
    let stride = as_sizes(&args[3], "a tensor stride")?;
    if size.len() != stride.len() {
        return bad(format!("a tensor has size {size:?} but stride {stride:?}"));
    }
    Ok(Value::Tensor(TensorRef {
        storage: key.clone(),
        dtype: *dtype,
        offset: as_usize(&args[1], "a storage offset")?,
        size,
        stride,
    }))
}

fn call(f: Global, args: Value) -> PResult<Value> {
    let Value::Tuple(args) = args else {
        return bad(format!(
            "REDUCE arguments are a {}, not a tuple",
            args.kind()
        ));
    };
    match f {
        Global::RebuildTensorV2 | Global::RebuildTensor => rebuild_tensor(&args),
        Global::RebuildParameter => match args.first() {
            Some(t @ Value::Tensor(_)) => Ok(t.clone()),
            _ => bad("_rebuild_parameter without a tensor"),
        },
        Global::OrderedDict => {
            let mut items = Vec::new();
            if let Some(init) = args.first() {
                let pairs: Vec<Value> = match init {
                    Value::List(l) => l.borrow().clone(),
                    Value::Tuple(t) => t.clone(),
                    other => return bad(format!("OrderedDict({})", other.kind())),
                };
                for p in pairs {
                    match p {
                        Value::Tuple(kv) if kv.len() == 2 => {
                            items.push((kv[0].clone(), kv[1].clone()))
                        }
                        other => return bad(format!("OrderedDict item {}", other.kind())),
                    }
                }
            }
            Ok(Value::Dict(Rc::new(RefCell::new(items))))
        }
        Global::Storage(d) => bad(format!(
            "the pickle calls the storage class of {} (torch.save never does)",
            d.name()
        )),
    }
}

/// Unpickles one pickle starting at `data[start..]`. `persistent_load` turns a persistent id
/// (torch's `('storage', <Type>Storage, key, location, numel[, view])` tuple) into a value.
/// Returns the value and the offset just past its STOP opcode.
pub(crate) fn unpickle(
    data: &[u8],
    start: usize,
    persistent_load: &mut dyn FnMut(Value) -> PResult<Value>,
) -> PResult<(Value, usize)> {
    let mut r = Reader { data, pos: start };
    let mut stack: Vec<Value> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    let mut memo: HashMap<u64, Value> = HashMap::new();

    fn pop(stack: &mut Vec<Value>) -> PResult<Value> {
        stack
            .pop()
            .ok_or_else(|| PickleError::Malformed("stack underflow".into()))
    }
    fn pop_mark(stack: &mut Vec<Value>, marks: &mut Vec<usize>) -> PResult<Vec<Value>> {
        let m = marks
            .pop()
            .ok_or_else(|| PickleError::Malformed("no MARK on the stack".into()))?;
        if m > stack.len() {
            return bad("a MARK points past the stack");
        }
        Ok(stack.split_off(m))
    }
    fn top(stack: &mut [Value]) -> PResult<&mut Value> {
        stack
            .last_mut()
            .ok_or_else(|| PickleError::Malformed("stack underflow".into()))
    }
    fn set_items(target: &Value, items: Vec<Value>) -> PResult<()> {
        let Value::Dict(d) = target else {
            return bad(format!("SETITEM on a {}", target.kind()));
        };
        if items.len() % 2 != 0 {
            return bad("SETITEMS with an odd number of values");
        }
        let mut d = d.borrow_mut();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.push((k, v));
        }
        Ok(())
    }
    fn append(target: &Value, items: Vec<Value>) -> PResult<()> {
        match target {
            Value::List(l) => {
                l.borrow_mut().extend(items);
                Ok(())
            }
            other => bad(format!("APPEND on a {}", other.kind())),
        }
    }
    fn global(module: &str, name: &str) -> PResult<Value> {
        let module = match module {
            "__builtin__" => "builtins",
            "copy_reg" => "copyreg",
            m => m,
        };
        Global::resolve(module, name)
            .map(Value::Global)
            .ok_or_else(|| PickleError::Forbidden(format!("{module}.{name}")))
    }

    loop {
        let at = r.pos;
        let op = r.u8()?;
        match op {
            0x80 => {
                let proto = r.u8()?;
                if proto > 5 {
                    return bad(format!("pickle protocol {proto} is unknown"));
                }
            }
            0x95 => {
                r.u64()?; // FRAME: a length hint only
            }
            b'.' => {
                let v = pop(&mut stack)?;
                return Ok((v, r.pos));
            }
            b'(' => marks.push(stack.len()),
            b'0' => {
                pop(&mut stack)?;
            }
            b'1' => {
                pop_mark(&mut stack, &mut marks)?;
            }
            b'2' => {
                let v = top(&mut stack)?.clone();
                stack.push(v);
            }
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'I' => {
                let l = r.line()?;
                stack.push(match l {
                    "00" => Value::Bool(false),
                    "01" => Value::Bool(true),
                    s => Value::Int(
                        s.parse()
                            .map_err(|_| PickleError::Malformed(format!("INT {s:?}")))?,
                    ),
                });
            }
            b'L' => {
                let l = r.line()?.trim_end_matches('L');
                stack.push(Value::Int(
                    l.parse()
                        .map_err(|_| PickleError::Malformed(format!("LONG {l:?}")))?,
                ));
            }
            b'J' => stack.push(Value::Int(
                i32::from_le_bytes(r.take(4)?.try_into().unwrap()) as i64,
            )),
            b'K' => stack.push(Value::Int(r.u8()? as i64)),
            b'M' => stack.push(Value::Int(r.u16()? as i64)),
            0x8a => {
                let n = r.u8()? as u64;
                let n = r.len(n)?;
                stack.push(int_from_le(r.take(n)?));
            }
            0x8b => {
                let n = r.u32()? as u64;
                let n = r.len(n)?;
                stack.push(int_from_le(r.take(n)?));
            }
            b'F' => {
                let l = r.line()?;
                stack
                    .push(Value::Float(l.parse().map_err(|_| {
                        PickleError::Malformed(format!("FLOAT {l:?}"))
                    })?));
            }
            b'G' => stack.push(Value::Float(f64::from_be_bytes(
                r.take(8)?.try_into().unwrap(),
            ))),
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => r.u32()? as u64,
                    0x8c => r.u8()? as u64,
                    _ => r.u64()?,
                };
                let n = r.len(n)?;
                let s = std::str::from_utf8(r.take(n)?)
                    .map_err(|_| PickleError::Malformed("a string is not UTF-8".into()))?;
                stack.push(Value::Str(s.to_string()));
            }
            b'T' | b'U' => {
                // Python 2 byte strings: read as Latin-1 text, as torch.load's default does.
                let n = if op == b'T' {
                    r.u32()? as u64
                } else {
                    r.u8()? as u64
                };
                let n = r.len(n)?;
                stack.push(Value::Str(r.take(n)?.iter().map(|&b| b as char).collect()));
            }
            b'B' | b'C' | 0x8e => {
                let n = match op {
                    b'B' => r.u32()? as u64,
                    b'C' => r.u8()? as u64,
                    _ => r.u64()?,
                };
                let n = r.len(n)?;
                stack.push(Value::Bytes(r.take(n)?.to_vec()));
            }
            b')' => stack.push(Value::Tuple(Vec::new())),
            b't' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                stack.push(Value::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return bad("stack underflow");
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(items));
            }
            b']' => stack.push(Value::List(Rc::default())),
            b'l' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                stack.push(Value::List(Rc::new(RefCell::new(items))));
            }
            b'a' => {
                let v = pop(&mut stack)?;
                append(top(&mut stack)?, vec![v])?;
            }
            b'e' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                append(top(&mut stack)?, items)?;
            }
            0x8f => stack.push(Value::List(Rc::default())), // EMPTY_SET, kept as a list
            0x90 => {
                let items = pop_mark(&mut stack, &mut marks)?;
                append(top(&mut stack)?, items)?;
            }
            0x91 => {
                let items = pop_mark(&mut stack, &mut marks)?;
                stack.push(Value::List(Rc::new(RefCell::new(items))));
            }
            b'}' => stack.push(Value::Dict(Rc::default())),
            b'd' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                let d = Value::Dict(Rc::default());
                set_items(&d, items)?;
                stack.push(d);
            }
            b's' => {
                let v = pop(&mut stack)?;
                let k = pop(&mut stack)?;
                set_items(top(&mut stack)?, vec![k, v])?;
            }
            b'u' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                set_items(top(&mut stack)?, items)?;
            }
            b'p' | b'q' | b'r' | 0x94 => {
                let idx = match op {
                    b'p' => r
                        .line()?
                        .parse()
                        .map_err(|_| PickleError::Malformed("PUT index".into()))?,
                    b'q' => r.u8()? as u64,
                    b'r' => r.u32()? as u64,
                    _ => memo.len() as u64,
                };
                let v = top(&mut stack)?.clone();
                memo.insert(idx, v);
            }
            b'g' | b'h' | b'j' => {
                let idx = match op {
                    b'g' => r
                        .line()?
                        .parse()
                        .map_err(|_| PickleError::Malformed("GET index".into()))?,
                    b'h' => r.u8()? as u64,
                    _ => r.u32()? as u64,
                };
                let v = memo
                    .get(&idx)
                    .cloned()
                    .ok_or_else(|| PickleError::Malformed(format!("memo entry {idx} unset")))?;
                stack.push(v);
            }
            b'c' => {
                let module = r.line()?.to_string();
                let name = r.line()?.to_string();
                stack.push(global(&module, &name)?);
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => stack.push(global(&m, &n)?),
                    _ => return bad("STACK_GLOBAL without two strings"),
                }
            }
            b'R' | 0x81 => {
                let args = pop(&mut stack)?;
                let f = pop(&mut stack)?;
                let Value::Global(g) = f else {
                    return bad(format!("a call of a {} at offset {at}", f.kind()));
                };
                stack.push(call(g, args)?);
            }
            b'b' => {
                // BUILD: the state of an OrderedDict (its `_metadata` attribute) is dropped;
                // nothing else may be built.
                let _state = pop(&mut stack)?;
                let t = top(&mut stack)?;
                if !matches!(t, Value::Dict(_)) {
                    return bad(format!("BUILD on a {} at offset {at}", t.kind()));
                }
            }
            b'Q' => {
                let pid = pop(&mut stack)?;
                stack.push(persistent_load(pid)?);
            }
            b'P' => {
                let pid = r.line()?.to_string();
                stack.push(persistent_load(Value::Str(pid))?);
            }
            b'i' | b'o' => {
                return bad(format!(
                    "opcode {:?} (instantiate a class) at offset {at}: torch.save never writes it",
                    op as char
                ))
            }
            0x82..=0x84 => {
                return bad(format!(
                "extension-registry opcode 0x{op:02x} at offset {at}: torch.save never writes it"
            ))
            }
            other => {
                return bad(format!(
                    "unknown or unsupported pickle opcode 0x{other:02x} at offset {at}"
                ))
            }
        }
    }
}

/// The storage a torch persistent id names: `('storage', <Type>Storage, key, location, numel[, view])`.
pub(crate) fn storage_from_pid(pid: Value) -> PResult<Value> {
    let Value::Tuple(items) = pid else {
        return bad(format!(
            "a persistent id is a {}, not a tuple",
            pid.describe()
        ));
    };
    match items.as_slice() {
        [Value::Str(tag), Value::Global(Global::Storage(dtype)), key, ..] if tag == "storage" => {
            let key = match key {
                Value::Str(s) => s.clone(),
                Value::Int(i) => i.to_string(),
                other => return bad(format!("a storage key is a {}", other.kind())),
            };
            Ok(Value::Storage(key, *dtype))
        }
        _ => bad("a persistent id that is not ('storage', <Type>Storage, key, location, numel)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: Value) -> PResult<Value> {
        bad("no persistent ids here")
    }

    #[test]
    fn data_opcodes_and_shared_memo() {
        // {'a': [1, -2, 300, 2**40], 'b': (1.5, 'x'), 'c': <same list as 'a'>} in protocol 2,
        // bytes as CPython 3 writes them.
        let p: &[u8] = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffM,\x01\x8a\x06\x00\x00\x00\x00\x00\x01eX\x01\x00\x00\x00bq\x03G?\xf8\x00\x00\x00\x00\x00\x00X\x01\x00\x00\x00xq\x04\x86q\x05X\x01\x00\x00\x00cq\x06h\x02u.";
        let (v, end) = unpickle(p, 0, &mut none).unwrap();
        assert_eq!(end, p.len());
        let Value::Dict(d) = v else { panic!() };
        let d = d.borrow();
        assert_eq!(d.len(), 3);
        let Value::List(a) = &d[0].1 else { panic!() };
        let ints: Vec<i64> = a
            .borrow()
            .iter()
            .map(|x| match x {
                Value::Int(i) => *i,
                _ => panic!(),
            })
            .collect();
        assert_eq!(ints, vec![1, -2, 300, 1 << 40]);
        let Value::Tuple(b) = &d[1].1 else { panic!() };
        assert!(matches!(b[0], Value::Float(f) if f == 1.5));
        // 'c' is the very list 'a' (memo reference), filled after it was memoised.
        let Value::List(c) = &d[2].1 else { panic!() };
        assert!(Rc::ptr_eq(a, c));
    }

    #[test]
    fn other_globals_are_refused_by_name() {
        let p: &[u8] = b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85R.";
        match unpickle(p, 0, &mut none) {
            Err(PickleError::Forbidden(g)) => assert_eq!(g, "os.system"),
            other => panic!("{other:?}"),
        }
        let p: &[u8] = b"\x80\x02c__builtin__\neval\n.";
        assert!(
            matches!(unpickle(p, 0, &mut none), Err(PickleError::Forbidden(g)) if g == "builtins.eval")
        );
    }

    #[test]
    fn truncation_is_an_error_not_a_panic() {
        let p: &[u8] =
            b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffM,\x01eu.";
        for n in 0..p.len() {
            assert!(unpickle(&p[..n], 0, &mut none).is_err(), "prefix {n}");
        }
        assert!(unpickle(p, 0, &mut none).is_ok());
    }
}
