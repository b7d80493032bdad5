//! PyTorch checkpoint files (`.pth`, `.pt`, `.pth.tar`) read without Python and without executing
//! anything: the zip format of `torch.save` (PyTorch >= 1.6: `ARCHIVE/data.pkl` + one stored
//! entry per storage, `ARCHIVE/data/KEY`) and the legacy format (`_use_new_zipfile_serialization=False`:
//! five pickles — magic number, protocol 1001, system info, the object, the storage keys — then
//! each storage as an i64 element count followed by its bytes). Pickles go through the restricted
//! reader in `nn::pickle`.
//!
//! Reference: `torch/serialization.py` (`_save`, `_legacy_save`, `_load`, `_legacy_load`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::pickle::{storage_from_pid, unpickle, PickleError, StorageDType, TensorRef, Value};
use super::weights::{HostTensor, WeightsError};

/// The file formats `read_checkpoint` tells apart by content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointFormat {
    Safetensors,
    /// `torch.save` since PyTorch 1.6 (a zip archive).
    TorchZip,
    /// `torch.save(..., _use_new_zipfile_serialization=False)` and PyTorch < 1.6.
    TorchLegacy,
}

impl std::fmt::Display for CheckpointFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CheckpointFormat::Safetensors => "safetensors",
            CheckpointFormat::TorchZip => "PyTorch zip",
            CheckpointFormat::TorchLegacy => "PyTorch legacy pickle",
        })
    }
}

/// The magic number the legacy format starts with (`torch.serialization.MAGIC_NUMBER`).
const LEGACY_MAGIC: u128 = 0x1950a86a20f9469cfc6c;

/// Which format `bytes` (a whole file) is in, by content. Errors name what it looks like instead.
pub fn detect_format(path: &Path, bytes: &[u8]) -> Result<CheckpointFormat, WeightsError> {
    let format = |message: String| WeightsError::Format {
        path: path.to_path_buf(),
        message,
    };
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        return Ok(CheckpointFormat::TorchZip);
    }
    if bytes.len() >= 2 && bytes[0] == 0x80 && (2..=5).contains(&bytes[1]) {
        return Ok(CheckpointFormat::TorchLegacy);
    }
    if bytes.len() >= 262 && &bytes[257..262] == b"ustar" {
        return Err(format(
            "a tar archive: PyTorch's pre-1.0 tar checkpoint format is not supported; load it in \
             PyTorch and torch.save it again (or convert it to safetensors)"
                .into(),
        ));
    }
    if bytes.len() >= 9 {
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        if bytes[8] == b'{' && n <= bytes.len() as u64 - 8 {
            return Ok(CheckpointFormat::Safetensors);
        }
    }
    let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Err(format(format!(
        "neither safetensors nor a PyTorch checkpoint ({} bytes, starting {})",
        bytes.len(),
        head.join(" ")
    )))
}

/// A PyTorch checkpoint's content: the tensors of its state dict (raw names, f32 values) and the
/// other top-level entries (epoch, best_mAP, ...) as text.
pub struct TorchCheckpoint {
    /// Where the state dict sat: `None` for a bare state dict, else the top-level key
    /// (`state_dict` for SpCL/MMT/Cluster Contrast, `model` for fast-reid).
    pub container: Option<String>,
    /// name -> (PyTorch dtype name, shape and f32 values), in file order of names.
    pub tensors: BTreeMap<String, (&'static str, HostTensor)>,
    /// Non-tensor entries beside the state dict, and non-tensor entries inside it, described.
    pub extras: BTreeMap<String, String>,
}

fn pickle_err(path: &Path, e: PickleError) -> WeightsError {
    match e {
        PickleError::Forbidden(global) => WeightsError::ForbiddenGlobal {
            path: path.to_path_buf(),
            global,
        },
        PickleError::Malformed(message) => WeightsError::Format {
            path: path.to_path_buf(),
            message: format!("unreadable pickle: {message}"),
        },
    }
}

/// Reads a PyTorch checkpoint (`format` TorchZip or TorchLegacy) from its bytes.
pub fn read_torch(
    path: &Path,
    bytes: &[u8],
    format: CheckpointFormat,
) -> Result<TorchCheckpoint, WeightsError> {
    let (root, storages) = match format {
        CheckpointFormat::TorchZip => read_zip(path, bytes)?,
        CheckpointFormat::TorchLegacy => read_legacy(path, bytes)?,
        CheckpointFormat::Safetensors => unreachable!("safetensors is read by nn::weights"),
    };
    let (container, dict, mut extras) = find_state_dict(path, &root)?;
    let mut tensors = BTreeMap::new();
    for (k, v) in dict {
        match v {
            Value::Tensor(t) => {
                let host = materialise(path, &k, &t, &storages)?;
                tensors.insert(k, (t.dtype.name(), host));
            }
            other => {
                extras.insert(k, other.describe());
            }
        }
    }
    Ok(TorchCheckpoint {
        container,
        tensors,
        extras,
    })
}

fn key_string(k: &Value) -> Option<String> {
    match k {
        Value::Str(s) => Some(s.clone()),
        _ => None,
    }
}

fn dict_items(v: &Value) -> Option<Vec<(Value, Value)>> {
    match v {
        Value::Dict(d) => Some(d.borrow().clone()),
        _ => None,
    }
}

type Found = (
    Option<String>,
    Vec<(String, Value)>,
    BTreeMap<String, String>,
);

/// The state dict inside the unpickled object: the object itself when its values are tensors,
/// else the first of `state_dict`, `model`, `net`, `network`, `module` that holds tensors.
fn find_state_dict(path: &Path, root: &Value) -> Result<Found, WeightsError> {
    let format = |message: String| WeightsError::Format {
        path: path.to_path_buf(),
        message,
    };
    let Some(items) = dict_items(root) else {
        return Err(format(format!(
            "the checkpoint holds a {} rather than a dict of tensors",
            root.describe()
        )));
    };
    let named = |items: Vec<(Value, Value)>| -> Vec<(String, Value)> {
        items
            .into_iter()
            .filter_map(|(k, v)| Some((key_string(&k)?, v)))
            .collect()
    };
    let items = named(items);
    if items.iter().any(|(_, v)| matches!(v, Value::Tensor(_))) {
        return Ok((None, items, BTreeMap::new()));
    }
    for key in ["state_dict", "model", "net", "network", "module"] {
        let Some((_, inner)) = items.iter().find(|(k, _)| k == key) else {
            continue;
        };
        let Some(inner) = dict_items(inner) else {
            continue;
        };
        let inner = named(inner);
        if inner.iter().any(|(_, v)| matches!(v, Value::Tensor(_))) {
            let extras = items
                .iter()
                .filter(|(k, _)| k != key)
                .map(|(k, v)| (k.clone(), v.describe()))
                .collect();
            return Ok((Some(key.to_string()), inner, extras));
        }
    }
    let keys: Vec<String> = items
        .iter()
        .map(|(k, v)| format!("{k} ({})", v.describe()))
        .collect();
    Err(format(format!(
        "no state dict found: the top-level entries are {}",
        if keys.is_empty() {
            "none".to_string()
        } else {
            keys.join(", ")
        }
    )))
}

/// Storage key -> (dtype, bytes).
type Storages<'a> = HashMap<String, (StorageDType, &'a [u8])>;

/// Collects the storages a pickle refers to (key -> dtype) while unpickling it.
fn unpickle_torch(
    path: &Path,
    data: &[u8],
    start: usize,
) -> Result<(Value, usize, HashMap<String, StorageDType>), WeightsError> {
    let mut seen: HashMap<String, StorageDType> = HashMap::new();
    let mut load = |pid: Value| -> Result<Value, PickleError> {
        let v = storage_from_pid(pid)?;
        if let Value::Storage(k, d) = &v {
            if let Some(prev) = seen.insert(k.clone(), *d) {
                if prev != *d {
                    return Err(PickleError::Malformed(format!(
                        "storage {k} is both {} and {}",
                        prev.name(),
                        d.name()
                    )));
                }
            }
        }
        Ok(v)
    };
    let (v, end) = unpickle(data, start, &mut load).map_err(|e| pickle_err(path, e))?;
    Ok((v, end, seen))
}

fn read_zip<'a>(path: &Path, bytes: &'a [u8]) -> Result<(Value, Storages<'a>), WeightsError> {
    let format = |message: String| WeightsError::Format {
        path: path.to_path_buf(),
        message,
    };
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| {
        format(format!(
            "not a complete zip archive ({e}): the file is truncated or damaged"
        ))
    })?;
    let names: Vec<String> = zip.file_names().map(str::to_string).collect();
    let Some(pkl) = names
        .iter()
        .filter(|n| n.ends_with("data.pkl") && n.matches('/').count() <= 1)
        .min_by_key(|n| n.len())
        .cloned()
    else {
        return Err(format(
            "a zip archive without data.pkl: not a torch.save checkpoint".into(),
        ));
    };
    let prefix = pkl.trim_end_matches("data.pkl").to_string();
    let entry = |zip: &mut zip::ZipArchive<std::io::Cursor<&'a [u8]>>,
                 name: &str|
     -> Result<&'a [u8], WeightsError> {
        let f = zip
            .by_name(name)
            .map_err(|e| format(format!("zip entry {name}: {e}")))?;
        if f.compression() != zip::CompressionMethod::Stored {
            return Err(format(format!(
                "zip entry {name} is compressed ({:?}); torch.save stores entries uncompressed",
                f.compression()
            )));
        }
        let start = f
            .data_start()
            .ok_or_else(|| format(format!("zip entry {name}: data offset unknown")))?
            as usize;
        let len = f.size() as usize;
        bytes
            .get(start..start.saturating_add(len))
            .ok_or_else(|| format(format!("zip entry {name} runs past the end of the file")))
    };
    if names.iter().any(|n| *n == format!("{prefix}byteorder")) {
        let order = entry(&mut zip, &format!("{prefix}byteorder"))?;
        if order != b"little" {
            return Err(format(format!(
                "byte order {:?}: only little-endian checkpoints are supported",
                String::from_utf8_lossy(order)
            )));
        }
    }
    let data = entry(&mut zip, &pkl)?;
    let (root, _, seen) = unpickle_torch(path, data, 0)?;
    let mut storages = HashMap::new();
    for (key, dtype) in seen {
        let name = format!("{prefix}data/{key}");
        if !names.contains(&name) {
            return Err(format(format!(
                "storage {key} is named by the pickle but {name} is not in the archive"
            )));
        }
        storages.insert(key, (dtype, entry(&mut zip, &name)?));
    }
    Ok((root, storages))
}

fn read_legacy<'a>(path: &Path, bytes: &'a [u8]) -> Result<(Value, Storages<'a>), WeightsError> {
    let format = |message: String| WeightsError::Format {
        path: path.to_path_buf(),
        message,
    };
    let mut none = |_: Value| -> Result<Value, PickleError> {
        Err(PickleError::Malformed(
            "a persistent id in a header pickle".into(),
        ))
    };
    let (magic, pos) = unpickle(bytes, 0, &mut none).map_err(|e| pickle_err(path, e))?;
    let magic_ok = match &magic {
        Value::BigInt(b) if b.len() <= 16 => {
            let mut w = [0u8; 16];
            w[..b.len()].copy_from_slice(b);
            u128::from_le_bytes(w) == LEGACY_MAGIC
        }
        _ => false,
    };
    if !magic_ok {
        return Err(format(
            "a pickle, but not a torch.save checkpoint (no PyTorch magic number); plain pickles \
             are not read"
                .into(),
        ));
    }
    let (proto, pos) = unpickle(bytes, pos, &mut none).map_err(|e| pickle_err(path, e))?;
    if !matches!(proto, Value::Int(1001)) {
        return Err(format(format!(
            "legacy protocol version {} (expected 1001)",
            proto.describe()
        )));
    }
    let (sys_info, pos) = unpickle(bytes, pos, &mut none).map_err(|e| pickle_err(path, e))?;
    if let Some(items) = dict_items(&sys_info) {
        for (k, v) in items {
            if key_string(&k).as_deref() == Some("little_endian") && !matches!(v, Value::Bool(true))
            {
                return Err(format(
                    "a big-endian checkpoint: only little-endian checkpoints are supported".into(),
                ));
            }
        }
    }
    let (root, pos, seen) = unpickle_torch(path, bytes, pos)?;
    let (keys, mut pos) = unpickle(bytes, pos, &mut none).map_err(|e| pickle_err(path, e))?;
    let keys: Vec<String> = match &keys {
        Value::List(l) => l.borrow().iter().filter_map(key_string).collect(),
        other => {
            return Err(format(format!(
                "the storage key list is a {}",
                other.describe()
            )))
        }
    };
    let mut storages = HashMap::new();
    for key in keys {
        let dtype = *seen.get(&key).ok_or_else(|| {
            format(format!(
                "storage {key} is listed but no tensor refers to it"
            ))
        })?;
        let at = pos;
        let truncated = |what: &str| {
            format(format!(
                "the file ends inside {what} of storage {key} (offset {at} of {}): truncated file",
                bytes.len()
            ))
        };
        let count = bytes
            .get(pos..pos + 8)
            .ok_or_else(|| truncated("the size"))?;
        let count = i64::from_le_bytes(count.try_into().unwrap());
        let len = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(dtype.size()))
            .ok_or_else(|| format(format!("storage {key} has size {count}")))?;
        pos += 8;
        let data = bytes
            .get(pos..pos.saturating_add(len))
            .ok_or_else(|| truncated("the data"))?;
        pos += len;
        storages.insert(key, (dtype, data));
    }
    Ok((root, storages))
}

/// A tensor view of a storage as contiguous row-major f32 values.
fn materialise(
    path: &Path,
    name: &str,
    t: &TensorRef,
    storages: &Storages<'_>,
) -> Result<HostTensor, WeightsError> {
    let err = |message: String| WeightsError::Tensor {
        path: path.to_path_buf(),
        tensor: name.to_string(),
        message,
    };
    let (dtype, data) = storages
        .get(&t.storage)
        .ok_or_else(|| err(format!("its storage {} is missing", t.storage)))?;
    if *dtype != t.dtype {
        return Err(err(format!(
            "storage {} is {} but the tensor says {}",
            t.storage,
            dtype.name(),
            t.dtype.name()
        )));
    }
    let es = dtype.size();
    let available = data.len() / es;
    let numel: usize = t.size.iter().product();
    if numel > 0 {
        let last = t
            .size
            .iter()
            .zip(&t.stride)
            .try_fold(t.offset, |acc, (&n, &s)| {
                acc.checked_add((n - 1).checked_mul(s)?)
            });
        match last {
            Some(l) if l < available => {}
            _ => {
                return Err(err(format!(
                    "size {:?}, stride {:?}, offset {} reach past its storage of {available} {} \
                     elements: truncated or damaged file",
                    t.size,
                    t.stride,
                    t.offset,
                    dtype.name()
                )))
            }
        }
    }
    let mut out = Vec::with_capacity(numel);
    let rank = t.size.len();
    let mut idx = vec![0usize; rank];
    for _ in 0..numel {
        let off = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
        out.push(dtype.to_f32(&data[off * es..off * es + es]));
        for d in (0..rank).rev() {
            idx[d] += 1;
            if idx[d] < t.size[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok((t.size.clone(), out))
}
