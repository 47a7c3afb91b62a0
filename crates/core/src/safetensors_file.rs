//! A validating safetensors reader: one file or a sharded set, memory-mapped, read as f32.
//!
//! [`SafetensorsFile::open`] checks the header length against the file size, parses the JSON
//! header, and checks every tensor's dtype, shape and byte range (inside the data section,
//! `shape × dtype` bytes long, no two tensors overlapping) before handing the header to the
//! `safetensors` crate. Doing those checks first matters: the crate adds untrusted offsets
//! without overflow checks, which panics in debug builds on a hostile header.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::{Error, Result};

/// Bytes of the little-endian header length that starts every file.
const LEN_BYTES: usize = 8;
/// The largest JSON header accepted (the `safetensors` crate's own limit).
const MAX_HEADER_BYTES: u64 = 100_000_000;
/// The header key that holds free-form string metadata rather than a tensor.
const METADATA_KEY: &str = "__metadata__";

/// The bytes of one shard: memory-mapped from disk, or owned (in-memory input, tests).
enum Backing {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// One file of a (possibly sharded) checkpoint.
struct Shard {
    path: PathBuf,
    backing: Backing,
}

/// Where one validated tensor lives.
#[derive(Debug, Clone)]
struct Entry {
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Absolute byte range in the shard.
    start: usize,
    end: usize,
}

/// One or more memory-mapped safetensors files with a single name → tensor lookup.
pub struct SafetensorsFile {
    shards: Vec<Shard>,
    entries: BTreeMap<String, Entry>,
    metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let paths: Vec<&Path> = self.shards.iter().map(|s| s.path.as_path()).collect();
        f.debug_struct("SafetensorsFile")
            .field("paths", &paths)
            .field("tensors", &self.entries.len())
            .finish()
    }
}

impl SafetensorsFile {
    /// Open and validate one safetensors file.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_many(&[path])
    }

    /// Open and validate the shards of one checkpoint (`model-00001-of-00002.safetensors`, ...);
    /// a tensor name found in two shards is an error.
    pub fn open_many<P: AsRef<Path>>(paths: &[P]) -> Result<Self> {
        if paths.is_empty() {
            return Err(Error::Input("no safetensors files given".to_string()));
        }
        let mut shards = Vec::with_capacity(paths.len());
        for path in paths {
            let path = path.as_ref();
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            // SAFETY: the map is read-only and lives as long as `self`. As with every memory
            // map, another process truncating the file while it is mapped would fault; model
            // files are not rewritten in place.
            let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
            shards.push(Shard {
                path: path.to_path_buf(),
                backing: Backing::Mmap(mmap),
            });
        }
        Self::from_shards(shards)
    }

    /// Parse and validate a safetensors file held in memory (errors name the path `<memory>`).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::from_shards(vec![Shard {
            path: PathBuf::from("<memory>"),
            backing: Backing::Owned(bytes),
        }])
    }

    fn from_shards(shards: Vec<Shard>) -> Result<Self> {
        let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
        let mut metadata = BTreeMap::new();
        for (index, shard) in shards.iter().enumerate() {
            let header = parse_header(&shard.path, shard.backing.bytes(), index)?;
            for (name, entry) in header.entries {
                if let Some(first) = entries.get(&name) {
                    let reason = format!(
                        "tensor `{name}` is also in {}",
                        shards[first.shard].path.display()
                    );
                    return Err(Error::malformed(&shard.path, reason));
                }
                entries.insert(name, entry);
            }
            // Later shards repeat the same metadata as a rule; the first value wins.
            for (key, value) in header.metadata {
                metadata.entry(key).or_insert(value);
            }
        }
        Ok(Self {
            shards,
            entries,
            metadata,
        })
    }

    /// The paths of the shards, in the order given.
    pub fn paths(&self) -> Vec<&Path> {
        self.shards.iter().map(|s| s.path.as_path()).collect()
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.entries.keys().map(String::as_str).collect()
    }

    /// The number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the checkpoint holds no tensors.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a tensor of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The shape of a tensor, or `None` if there is no tensor of that name.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// The stored dtype of a tensor, or `None` if there is no tensor of that name.
    pub fn dtype(&self, name: &str) -> Option<Dtype> {
        self.entries.get(name).map(|e| e.dtype)
    }

    /// The `__metadata__` string pairs of the header(s).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Read a tensor as f32 on `device`, converting from F32, F16, BF16 or F64.
    pub fn tensor_f32(&self, name: &str, device: &Device) -> Result<Tensor> {
        let Some(entry) = self.entries.get(name) else {
            let path = self
                .shards
                .first()
                .map(|s| s.path.clone())
                .unwrap_or_default();
            let reason = if self.shards.len() > 1 {
                format!(
                    "no tensor named `{name}` in any of {} shards",
                    self.shards.len()
                )
            } else {
                format!("no tensor named `{name}`")
            };
            return Err(Error::malformed(path, reason));
        };
        let shard = &self.shards[entry.shard];
        let bytes = &shard.backing.bytes()[entry.start..entry.end];
        let values = match entry.dtype {
            Dtype::F32 => convert::<4>(bytes, f32::from_le_bytes),
            Dtype::F16 => convert::<2>(bytes, |b| half::f16::from_le_bytes(b).to_f32()),
            Dtype::BF16 => convert::<2>(bytes, |b| half::bf16::from_le_bytes(b).to_f32()),
            Dtype::F64 => convert::<8>(bytes, |b| f64::from_le_bytes(b) as f32),
            other => {
                return Err(Error::Unsupported(format!(
                    "{}: tensor `{name}` has dtype {other:?}; only F32, F16, BF16 and F64 \
                     are read as f32",
                    shard.path.display()
                )))
            }
        };
        Ok(Tensor::from_vec(values, entry.shape.clone(), device)?)
    }

    /// Read several tensors as f32 in parallel, returned in the order of `names`.
    pub fn tensors_f32(&self, names: &[&str], device: &Device) -> Result<Vec<Tensor>> {
        names
            .par_iter()
            .map(|name| self.tensor_f32(name, device))
            .collect()
    }
}

/// Decodes little-endian elements of `N` bytes each; the caller has checked the length.
fn convert<const N: usize>(bytes: &[u8], decode: impl Fn([u8; N]) -> f32) -> Vec<f32> {
    bytes
        .chunks_exact(N)
        .map(|chunk| {
            let mut b = [0u8; N];
            b.copy_from_slice(chunk);
            decode(b)
        })
        .collect()
}

/// What one shard's header holds, validated.
struct Header {
    entries: Vec<(String, Entry)>,
    metadata: BTreeMap<String, String>,
}

fn parse_header(path: &Path, buf: &[u8], shard: usize) -> Result<Header> {
    let err = |reason: String| Error::malformed(path, reason);
    let Some(len_bytes) = buf.get(..LEN_BYTES) else {
        return Err(err(format!(
            "truncated: the file is {} bytes, too short for the {LEN_BYTES}-byte header length",
            buf.len()
        )));
    };
    let mut len = [0u8; LEN_BYTES];
    len.copy_from_slice(len_bytes);
    let header_len = u64::from_le_bytes(len);
    let available = (buf.len() - LEN_BYTES) as u64;
    if header_len > available {
        return Err(err(format!(
            "header length {header_len} runs past the end of the file ({available} bytes follow it)"
        )));
    }
    if header_len > MAX_HEADER_BYTES {
        return Err(err(format!(
            "header length {header_len} exceeds the {MAX_HEADER_BYTES}-byte limit"
        )));
    }
    // header_len <= available, which is the length of an in-memory slice.
    let data_start = LEN_BYTES + header_len as usize;
    let header_bytes = &buf[LEN_BYTES..data_start];
    let data_len = buf.len() - data_start;
    let text = std::str::from_utf8(header_bytes)
        .map_err(|e| err(format!("header is not valid UTF-8: {e}")))?;
    let json: serde_json::Map<String, Value> =
        serde_json::from_str(text).map_err(|e| err(format!("header is not a JSON object: {e}")))?;

    let mut entries = Vec::with_capacity(json.len());
    let mut metadata = BTreeMap::new();
    for (name, value) in &json {
        if name == METADATA_KEY {
            metadata = parse_metadata(value).map_err(&err)?;
            continue;
        }
        let entry = parse_tensor(name, value, data_len).map_err(&err)?;
        entries.push((
            name.clone(),
            Entry {
                shard,
                start: data_start + entry.start,
                end: data_start + entry.end,
                ..entry
            },
        ));
    }

    let mut by_offset: Vec<&(String, Entry)> = entries.iter().collect();
    by_offset.sort_by_key(|(_, e)| (e.start, e.end));
    for pair in by_offset.windows(2) {
        let (a, ea) = pair[0];
        let (b, eb) = pair[1];
        if eb.start < ea.end {
            return Err(err(format!("tensors `{a}` and `{b}` overlap")));
        }
    }

    // Every offset is now inside the file, so the crate's unchecked sums cannot overflow; it
    // adds its own rules (tensors packed without gaps, data ending at the end of the file).
    SafeTensors::read_metadata(buf)
        .map_err(|e| err(format!("rejected by the safetensors reader: {e}")))?;

    Ok(Header { entries, metadata })
}

fn parse_metadata(value: &Value) -> std::result::Result<BTreeMap<String, String>, String> {
    let Some(map) = value.as_object() else {
        return Err(format!("`{METADATA_KEY}` is not a JSON object"));
    };
    let mut out = BTreeMap::new();
    for (key, v) in map {
        let Some(s) = v.as_str() else {
            return Err(format!("`{METADATA_KEY}` value of `{key}` is not a string"));
        };
        out.insert(key.clone(), s.to_string());
    }
    Ok(out)
}

/// Validates one tensor entry: dtype known, shape of non-negative integers whose byte size
/// does not overflow, offsets inside the data section and matching that size. The entry's
/// shard is 0 and its range is relative to the data section.
fn parse_tensor(name: &str, value: &Value, data_len: usize) -> std::result::Result<Entry, String> {
    let Some(obj) = value.as_object() else {
        return Err(format!("tensor `{name}` entry is not a JSON object"));
    };
    let Some(dtype_name) = obj.get("dtype").and_then(Value::as_str) else {
        return Err(format!("tensor `{name}` has no string `dtype`"));
    };
    let dtype: Dtype = serde_json::from_value(Value::String(dtype_name.to_string()))
        .map_err(|_| format!("tensor `{name}` has unknown dtype `{dtype_name}`"))?;
    let Some(shape_json) = obj.get("shape").and_then(Value::as_array) else {
        return Err(format!("tensor `{name}` has no array `shape`"));
    };
    let mut shape = Vec::with_capacity(shape_json.len());
    for d in shape_json {
        match d.as_u64().and_then(|d| usize::try_from(d).ok()) {
            Some(d) => shape.push(d),
            None => {
                return Err(format!(
                    "tensor `{name}` shape {d} is not a valid dimension"
                ))
            }
        }
    }
    // Zero-sized dims are left out of the overflow check so that `[0, 2^40, 2^40]` is refused
    // too: its element count is 0, but candle's strides would still overflow.
    let overflow = || format!("tensor `{name}` shape {shape:?} overflows its byte size");
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d.max(1)))
        .and_then(|n| n.checked_mul(dtype.bitsize()))
        .ok_or_else(overflow)?;
    let n_bytes = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|n| n.checked_mul(dtype.bitsize()))
        .ok_or_else(overflow)?;
    if n_bytes % 8 != 0 {
        return Err(format!(
            "tensor `{name}` of {dtype:?} with shape {shape:?} does not fill a whole number of bytes"
        ));
    }
    let n_bytes = n_bytes / 8;
    let offsets = obj
        .get("data_offsets")
        .and_then(Value::as_array)
        .filter(|a| a.len() == 2)
        .and_then(|a| Some((a[0].as_u64()?, a[1].as_u64()?)));
    let Some((start, end)) = offsets else {
        return Err(format!(
            "tensor `{name}` has no `data_offsets` pair of non-negative integers"
        ));
    };
    if start > end || end > data_len as u64 {
        return Err(format!(
            "tensor `{name}` data_offsets [{start}, {end}] are out of range \
             (the data section is {data_len} bytes)"
        ));
    }
    // Both fit in usize: they are at most data_len.
    let (start, end) = (start as usize, end as usize);
    if end - start != n_bytes {
        return Err(format!(
            "tensor `{name}` data_offsets [{start}, {end}] span {} bytes, but {dtype:?} {shape:?} \
             needs {n_bytes}",
            end - start
        ));
    }
    Ok(Entry {
        shard: 0,
        dtype,
        shape,
        start,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serialises tensors (name, dtype name, shape, raw bytes) back to back.
    fn build(tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        for (name, dtype, shape, bytes) in tensors {
            let start = data.len();
            data.extend_from_slice(bytes);
            header.insert(
                name.to_string(),
                serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
            );
        }
        header.insert(
            METADATA_KEY.to_string(),
            serde_json::json!({"format": "pt"}),
        );
        let text = serde_json::to_string(&header).unwrap();
        let mut out = (text.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(&data);
        out
    }

    fn sample() -> Vec<u8> {
        let xs = [1.0f32, -2.0, 3.5, 0.25, 5.0, 6.0];
        build(&[
            (
                "a",
                "F32",
                vec![2, 3],
                xs.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            (
                "b",
                "F16",
                vec![6],
                xs.iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect(),
            ),
            (
                "c",
                "BF16",
                vec![3, 2],
                xs.iter()
                    .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                    .collect(),
            ),
            (
                "d",
                "F64",
                vec![6],
                xs.iter().flat_map(|x| (*x as f64).to_le_bytes()).collect(),
            ),
            ("i", "I64", vec![1], 7i64.to_le_bytes().to_vec()),
        ])
    }

    #[test]
    fn reads_every_float_dtype() {
        let f = SafetensorsFile::from_bytes(sample()).unwrap();
        assert_eq!(f.names(), vec!["a", "b", "c", "d", "i"]);
        assert_eq!(f.shape("a"), Some(&[2, 3][..]));
        assert_eq!(f.dtype("c"), Some(Dtype::BF16));
        assert_eq!(f.metadata().get("format").map(String::as_str), Some("pt"));
        let want = vec![1.0f32, -2.0, 3.5, 0.25, 5.0, 6.0];
        for name in ["a", "b", "c", "d"] {
            let t = f.tensor_f32(name, &Device::Cpu).unwrap();
            assert_eq!(t.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
        }
        assert_eq!(f.tensor_f32("c", &Device::Cpu).unwrap().dims(), &[3, 2]);
        let all = f.tensors_f32(&["d", "a"], &Device::Cpu).unwrap();
        assert_eq!(all[1].dims(), &[2, 3]);
    }

    #[test]
    fn explains_missing_and_unsupported_tensors() {
        let f = SafetensorsFile::from_bytes(sample()).unwrap();
        let e = f.tensor_f32("zzz", &Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("no tensor named `zzz`"), "{e}");
        let e = f.tensor_f32("i", &Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("I64"), "{e}");
        assert!(f.shape("zzz").is_none());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample();
        for len in 0..bytes.len() {
            assert!(SafetensorsFile::from_bytes(bytes[..len].to_vec()).is_err());
        }
    }

    #[test]
    fn rejects_overflowing_offsets_that_would_panic_the_crate() {
        // Each entry alone is consistent and they are packed without gaps, but the end of the
        // last one plus the header size overflows usize.
        let big = usize::MAX / 8;
        let mut header = serde_json::Map::new();
        for i in 0..8 {
            header.insert(
                format!("t{i}"),
                serde_json::json!({"dtype": "F4", "shape": [2 * big], "data_offsets": [i * big, (i + 1) * big]}),
            );
        }
        let text = serde_json::to_string(&header).unwrap();
        let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(text.as_bytes());
        let e = SafetensorsFile::from_bytes(bytes).unwrap_err().to_string();
        assert!(e.contains("out of range"), "{e}");
    }

    #[test]
    fn rejects_shapes_whose_strides_overflow() {
        let header = serde_json::json!({
            "a": {"dtype": "F32", "shape": [0, 1u64 << 40, 1u64 << 40], "data_offsets": [0, 0]},
        });
        let text = header.to_string();
        let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(text.as_bytes());
        let e = SafetensorsFile::from_bytes(bytes).unwrap_err().to_string();
        assert!(e.contains("overflows"), "{e}");
    }

    #[test]
    fn rejects_overlaps() {
        let header = serde_json::json!({
            "a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
            "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]},
        });
        let text = header.to_string();
        let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(text.as_bytes());
        bytes.extend_from_slice(&[0; 6]);
        let e = SafetensorsFile::from_bytes(bytes).unwrap_err().to_string();
        assert!(e.contains("overlap"), "{e}");
    }

    #[test]
    fn shards_share_one_lookup() {
        let dir = std::env::temp_dir().join(format!("interplab-st-shards-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let one = dir.join("model-00001-of-00002.safetensors");
        let two = dir.join("model-00002-of-00002.safetensors");
        std::fs::write(
            &one,
            build(&[("x", "F32", vec![1], 1f32.to_le_bytes().to_vec())]),
        )
        .unwrap();
        std::fs::write(
            &two,
            build(&[("y", "F32", vec![1], 2f32.to_le_bytes().to_vec())]),
        )
        .unwrap();
        let f = SafetensorsFile::open_many(&[&one, &two]).unwrap();
        assert_eq!(f.names(), vec!["x", "y"]);
        let y = f.tensor_f32("y", &Device::Cpu).unwrap();
        assert_eq!(y.to_vec1::<f32>().unwrap(), vec![2.0]);
        let e = f.tensor_f32("z", &Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("any of 2 shards"), "{e}");
        let e = SafetensorsFile::open_many(&[&one, &one])
            .unwrap_err()
            .to_string();
        assert!(e.contains("tensor `x` is also in"), "{e}");
        let e = SafetensorsFile::open(&dir.join("absent.safetensors")).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
