//! A bounds-checked GGUF reader: metadata, tensor directory, and dequantisation to f32.
//!
//! The file is memory-mapped once; [`GgufFile::open`] parses and validates the header (GGUF v2
//! and v3, little-endian), every metadata value and every tensor's extent before returning, so
//! that a hostile or truncated file gives an [`Error::Malformed`] naming what is wrong instead of
//! a panic or a huge allocation. Tensor data is dequantised to f32 with candle's GGML kernels;
//! shapes come back in PyTorch order (the reverse of GGUF's innermost-first `dims`).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::GgmlDType;
use candle_core::{CpuStorage, Device, Tensor};
use rayon::prelude::*;

use crate::{Error, Result};

/// The four bytes every GGUF file starts with.
const MAGIC: &[u8; 4] = b"GGUF";
/// Alignment of the tensor data section when `general.alignment` is absent.
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most this many dimensions.
const MAX_DIMS: u32 = 4;
/// Arrays nested deeper than this are refused, so recursion stays shallow on any input.
const MAX_ARRAY_DEPTH: u32 = 8;
/// Upper bound on metadata values (array items included) held in memory: each costs tens of
/// bytes as a [`GgufValue`], so a large file of one-byte items could otherwise ask for tens of
/// gigabytes. Real tokenizers hold well under a million.
const MAX_METADATA_VALUES: u64 = 1 << 24;
/// The smallest encoding of one tensor info: name length, n_dims, type and offset.
const MIN_TENSOR_INFO_BYTES: usize = 8 + 4 + 4 + 8;
/// The smallest encoding of one key-value pair: key length, value type and a one-byte value.
const MIN_KV_BYTES: usize = 8 + 4 + 1;

/// One metadata value of a GGUF file.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// Unsigned 8-bit integer.
    U8(u8),
    /// Signed 8-bit integer.
    I8(i8),
    /// Unsigned 16-bit integer.
    U16(u16),
    /// Signed 16-bit integer.
    I16(i16),
    /// Unsigned 32-bit integer.
    U32(u32),
    /// Signed 32-bit integer.
    I32(i32),
    /// Unsigned 64-bit integer.
    U64(u64),
    /// Signed 64-bit integer.
    I64(i64),
    /// 32-bit float.
    F32(f32),
    /// 64-bit float.
    F64(f64),
    /// Boolean.
    Bool(bool),
    /// UTF-8 string (invalid sequences replaced by U+FFFD).
    String(String),
    /// Array of values, possibly nested.
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// The GGUF name of this value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            GgufValue::U8(_) => "u8",
            GgufValue::I8(_) => "i8",
            GgufValue::U16(_) => "u16",
            GgufValue::I16(_) => "i16",
            GgufValue::U32(_) => "u32",
            GgufValue::I32(_) => "i32",
            GgufValue::U64(_) => "u64",
            GgufValue::I64(_) => "i64",
            GgufValue::F32(_) => "f32",
            GgufValue::F64(_) => "f64",
            GgufValue::Bool(_) => "bool",
            GgufValue::String(_) => "string",
            GgufValue::Array(_) => "array",
        }
    }

    /// The value as a signed integer, if it is an integer type that fits in `i128`.
    fn as_i128(&self) -> Option<i128> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::I8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::I16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::I32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v.into()),
            GgufValue::I64(v) => Some(v.into()),
            _ => None,
        }
    }

    /// The value as a non-negative integer, if it is an integer type that fits in `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        self.as_i128().and_then(|v| u64::try_from(v).ok())
    }

    /// The value as a float, if it is a float or an integer type.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => self.as_i128().map(|v| v as f64),
        }
    }

    /// The value as a string slice, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The items, if the value is an array.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(items) => Some(items),
            _ => None,
        }
    }
}

/// Where one tensor lives in the file. `dims` are in GGUF order (innermost first).
#[derive(Debug, Clone)]
pub struct GgufTensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions, innermost first (the reverse of PyTorch order).
    pub dims: Vec<u64>,
    /// The ggml type id (0 = F32, 1 = F16, 2 = Q4_0, ...).
    pub ggml_type: u32,
    /// Offset relative to the start of the tensor data section.
    pub offset: u64,
}

impl GgufTensorInfo {
    /// The shape in PyTorch order (outermost first).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// The name of the tensor's ggml type (`"Q4_K"`), or `"unknown"`.
    pub fn type_name(&self) -> &'static str {
        ggml_type_name(self.ggml_type).unwrap_or("unknown")
    }
}

/// The name of a ggml type id (`12` → `"Q4_K"`), or `None` for an id ggml does not define.
pub fn ggml_type_name(ggml_type: u32) -> Option<&'static str> {
    GgmlTypeInfo::of(ggml_type).map(|t| t.name)
}

/// Block layout of one ggml type: `block_size` elements take `type_size` bytes.
#[derive(Debug, Clone, Copy)]
struct GgmlTypeInfo {
    name: &'static str,
    block_size: u64,
    type_size: u64,
}

impl GgmlTypeInfo {
    /// The layout of a ggml type id, for every id current ggml defines.
    fn of(ggml_type: u32) -> Option<Self> {
        let (name, block_size, type_size) = match ggml_type {
            0 => ("F32", 1, 4),
            1 => ("F16", 1, 2),
            2 => ("Q4_0", 32, 18),
            3 => ("Q4_1", 32, 20),
            6 => ("Q5_0", 32, 22),
            7 => ("Q5_1", 32, 24),
            8 => ("Q8_0", 32, 34),
            9 => ("Q8_1", 32, 36),
            10 => ("Q2_K", 256, 84),
            11 => ("Q3_K", 256, 110),
            12 => ("Q4_K", 256, 144),
            13 => ("Q5_K", 256, 176),
            14 => ("Q6_K", 256, 210),
            15 => ("Q8_K", 256, 292),
            16 => ("IQ2_XXS", 256, 66),
            17 => ("IQ2_XS", 256, 74),
            18 => ("IQ3_XXS", 256, 98),
            19 => ("IQ1_S", 256, 50),
            20 => ("IQ4_NL", 32, 18),
            21 => ("IQ3_S", 256, 110),
            22 => ("IQ2_S", 256, 82),
            23 => ("IQ4_XS", 256, 136),
            24 => ("I8", 1, 1),
            25 => ("I16", 1, 2),
            26 => ("I32", 1, 4),
            27 => ("I64", 1, 8),
            28 => ("F64", 1, 8),
            29 => ("IQ1_M", 256, 56),
            30 => ("BF16", 1, 2),
            34 => ("TQ1_0", 256, 54),
            35 => ("TQ2_0", 256, 66),
            39 => ("MXFP4", 32, 17),
            _ => return None,
        };
        Some(Self {
            name,
            block_size,
            type_size,
        })
    }

    /// The candle type that dequantises this ggml type, if candle has one.
    fn candle_dtype(ggml_type: u32) -> Option<GgmlDType> {
        let dtype = match ggml_type {
            0 => GgmlDType::F32,
            1 => GgmlDType::F16,
            2 => GgmlDType::Q4_0,
            3 => GgmlDType::Q4_1,
            6 => GgmlDType::Q5_0,
            7 => GgmlDType::Q5_1,
            8 => GgmlDType::Q8_0,
            9 => GgmlDType::Q8_1,
            10 => GgmlDType::Q2K,
            11 => GgmlDType::Q3K,
            12 => GgmlDType::Q4K,
            13 => GgmlDType::Q5K,
            14 => GgmlDType::Q6K,
            15 => GgmlDType::Q8K,
            30 => GgmlDType::BF16,
            _ => return None,
        };
        Some(dtype)
    }
}

/// The bytes of an opened file: memory-mapped from disk, or owned (in-memory input, tests).
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

/// A tensor's validated layout: its PyTorch shape, element count and absolute byte range.
struct TensorSpan {
    shape: Vec<usize>,
    elem_count: usize,
    start: usize,
    end: usize,
}

/// An opened GGUF file.
pub struct GgufFile {
    /// Metadata key-value pairs.
    pub metadata: BTreeMap<String, GgufValue>,
    /// The tensor directory, in file order.
    pub tensors: Vec<GgufTensorInfo>,
    path: PathBuf,
    version: u32,
    alignment: u64,
    data_start: u64,
    backing: Backing,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Open and validate a GGUF file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only and lives as long as `self`. As with every memory map,
        // another process truncating the file while it is mapped would fault; model files are
        // not rewritten in place.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Self::parse(path.to_path_buf(), Backing::Mmap(mmap))
    }

    /// Parse and validate a GGUF file held in memory (errors name the path `<memory>`).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::parse(PathBuf::from("<memory>"), Backing::Owned(bytes))
    }

    fn parse(path: PathBuf, backing: Backing) -> Result<Self> {
        let header = parse_header(&path, backing.bytes())?;
        Ok(Self {
            metadata: header.metadata,
            tensors: header.tensors,
            path,
            version: header.version,
            alignment: header.alignment,
            data_start: header.data_start,
            backing,
        })
    }

    /// The path the file was opened from (`<memory>` for [`GgufFile::from_bytes`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The alignment of tensor data in bytes (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// The absolute file offset where the tensor data section starts.
    pub fn data_offset(&self) -> u64 {
        self.data_start
    }

    /// A metadata value by key.
    pub fn meta(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    fn require(&self, key: &str) -> Result<&GgufValue> {
        self.metadata
            .get(key)
            .ok_or_else(|| self.malformed(format!("missing metadata key `{key}`")))
    }

    fn wrong_type(&self, key: &str, value: &GgufValue, expected: &str) -> Error {
        self.malformed(format!(
            "metadata key `{key}` is {}, expected {expected}",
            describe_value(value)
        ))
    }

    /// A metadata integer of any integer type, as `u64` (negative values are an error).
    pub fn meta_u64(&self, key: &str) -> Result<u64> {
        let value = self.require(key)?;
        value
            .as_u64()
            .ok_or_else(|| self.wrong_type(key, value, "a non-negative integer"))
    }

    /// A metadata number (float or integer), as `f64`.
    pub fn meta_f64(&self, key: &str) -> Result<f64> {
        let value = self.require(key)?;
        value
            .as_f64()
            .ok_or_else(|| self.wrong_type(key, value, "a number"))
    }

    /// A metadata string.
    pub fn meta_str(&self, key: &str) -> Result<&str> {
        let value = self.require(key)?;
        value
            .as_str()
            .ok_or_else(|| self.wrong_type(key, value, "a string"))
    }

    fn meta_array(&self, key: &str, expected: &str) -> Result<&[GgufValue]> {
        let value = self.require(key)?;
        value
            .as_array()
            .ok_or_else(|| self.wrong_type(key, value, expected))
    }

    /// A metadata array of strings.
    pub fn meta_str_array(&self, key: &str) -> Result<Vec<String>> {
        let expected = "an array of strings";
        let items = self.meta_array(key, expected)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(s) => out.push(s.to_string()),
                None => return Err(self.wrong_item(key, i, item, expected)),
            }
        }
        Ok(out)
    }

    /// A metadata array of numbers, as `f32`.
    pub fn meta_f32_array(&self, key: &str) -> Result<Vec<f32>> {
        let expected = "an array of numbers";
        let items = self.meta_array(key, expected)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.as_f64() {
                Some(v) => out.push(v as f32),
                None => return Err(self.wrong_item(key, i, item, expected)),
            }
        }
        Ok(out)
    }

    /// A metadata array of integers that fit in `i32`.
    pub fn meta_i32_array(&self, key: &str) -> Result<Vec<i32>> {
        let expected = "an array of 32-bit integers";
        let items = self.meta_array(key, expected)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.as_i128().and_then(|v| i32::try_from(v).ok()) {
                Some(v) => out.push(v),
                None => return Err(self.wrong_item(key, i, item, expected)),
            }
        }
        Ok(out)
    }

    fn wrong_item(&self, key: &str, index: usize, item: &GgufValue, expected: &str) -> Error {
        self.malformed(format!(
            "metadata key `{key}` should be {expected}, but item {index} is {}",
            describe_value(item)
        ))
    }

    /// The model architecture (`general.architecture`, e.g. `llama`, `gemma3`).
    pub fn architecture(&self) -> Result<&str> {
        self.meta_str("general.architecture")
    }

    /// The directory entry of a tensor by name.
    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The names of all tensors, in file order.
    pub fn tensor_names(&self) -> Vec<&str> {
        self.tensors.iter().map(|t| t.name.as_str()).collect()
    }

    /// Dequantise one tensor to f32 on `device`, shaped in PyTorch order.
    pub fn tensor_f32(&self, name: &str, device: &Device) -> Result<Tensor> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| self.malformed(format!("no tensor named `{name}`")))?;
        self.dequantize(info, device)
    }

    /// The blocks of a 2-D tensor kept quantised (see [`QuantizedMatrix`]), or `None` when the
    /// file stores it as f32 and there is nothing to save.
    pub fn tensor_quantized(&self, name: &str, device: &Device) -> Result<Option<QuantizedMatrix>> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| self.malformed(format!("no tensor named `{name}`")))?;
        let span = self.span(info)?;
        let dtype = match GgmlTypeInfo::candle_dtype(info.ggml_type) {
            Some(GgmlDType::F32) => return Ok(None),
            Some(dtype) => dtype,
            None => {
                return Err(Error::Unsupported(format!(
                    "GGUF tensor `{name}` has ggml type {}, which cannot be dequantised",
                    info.type_name()
                )))
            }
        };
        let &[rows, cols] = span.shape.as_slice() else {
            return Ok(None);
        };
        let bytes = &self.backing.bytes()[span.start..span.end];
        // Blocks run along `cols` (ggml's first dimension), so each row is whole blocks.
        if !cols.is_multiple_of(dtype.block_size()) {
            return Err(self.malformed(format!(
                "tensor `{name}`: rows of {cols} elements are not whole {dtype:?} blocks"
            )));
        }
        let mut words = vec![0u32; bytes.len().div_ceil(4)];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        Ok(Some(QuantizedMatrix {
            dtype,
            rows,
            cols,
            words,
            n_bytes: bytes.len(),
            device: device.clone(),
            qmatmul: std::sync::OnceLock::new(),
            scales: std::sync::OnceLock::new(),
        }))
    }

    /// Dequantise several tensors to f32 in parallel, returned in the order of `names`.
    pub fn tensors_f32(&self, names: &[&str], device: &Device) -> Result<Vec<Tensor>> {
        names
            .par_iter()
            .map(|name| self.tensor_f32(name, device))
            .collect()
    }

    fn malformed(&self, reason: impl Into<String>) -> Error {
        Error::malformed(&self.path, reason)
    }

    /// Checks a tensor's type, dims and extent against the file; `tensors` is public, so this
    /// is done again at every read rather than trusted from `open`.
    fn span(&self, info: &GgufTensorInfo) -> Result<TensorSpan> {
        let layout = tensor_layout(info).map_err(|reason| self.malformed(reason))?;
        let file_len = self.backing.bytes().len() as u64;
        let start = self.data_start.checked_add(info.offset);
        let end = start.and_then(|s| s.checked_add(layout.n_bytes));
        match (start, end) {
            (Some(start), Some(end)) if end <= file_len => Ok(TensorSpan {
                shape: layout.shape,
                elem_count: layout.elem_count,
                // Both fit in usize: they are at most the length of an in-memory slice.
                start: start as usize,
                end: end as usize,
            }),
            _ => Err(self.malformed(data_past_end(info, self.data_start, &layout, file_len))),
        }
    }

    fn dequantize(&self, info: &GgufTensorInfo, device: &Device) -> Result<Tensor> {
        let span = self.span(info)?;
        let Some(dtype) = GgmlTypeInfo::candle_dtype(info.ggml_type) else {
            return Err(Error::Unsupported(format!(
                "GGUF tensor `{}` has ggml type {} ({}), which cannot be dequantised",
                info.name,
                info.type_name(),
                info.ggml_type
            )));
        };
        let bytes = &self.backing.bytes()[span.start..span.end];
        // candle reinterprets the bytes as blocks and asserts their alignment (at most 4 for
        // every block type); copy into a word-aligned buffer when the file places them oddly.
        let values = if (bytes.as_ptr() as usize).is_multiple_of(4) {
            dequantize_bytes(bytes, dtype, span.elem_count)?
        } else {
            let mut words = vec![0u32; bytes.len().div_ceil(4)];
            let view: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
            view[..bytes.len()].copy_from_slice(bytes);
            dequantize_bytes(&view[..bytes.len()], dtype, span.elem_count)?
        };
        Ok(Tensor::from_vec(values, span.shape, device)?)
    }
}

/// A 2-D GGUF tensor kept as its GGML blocks (in a word-aligned copy) and dequantised to f32 on
/// each use, with the same kernels and so the same values as loading it dense. `[rows, cols]`
/// is PyTorch's `[out, in]`; each row is a whole number of blocks. Q4_1 holds 0.625 bytes per
/// weight instead of 4.
#[derive(Debug, Clone)]
pub struct QuantizedMatrix {
    dtype: GgmlDType,
    rows: usize,
    cols: usize,
    words: Vec<u32>,
    n_bytes: usize,
    /// Where the dequantised tensors go.
    device: Device,
    /// candle's quantised kernel for [`Self::matmul_rows`] on block types without an f32 path,
    /// built (a second copy of the blocks) on first use.
    qmatmul: std::sync::OnceLock<Option<candle_core::quantized::QMatMul>>,
    /// The blocks' scales as f32 for the decode kernels ([`crate::qmatmul::block_scales`]),
    /// converted on first use.
    scales: std::sync::OnceLock<Vec<f32>>,
}

impl QuantizedMatrix {
    /// `[rows, cols]` (PyTorch's `[out, in]`).
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Bytes of block data held.
    pub fn size_bytes(&self) -> usize {
        self.n_bytes
    }

    fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u32, u8>(&self.words)[..self.n_bytes]
    }

    /// The f32 matrix `[rows, cols]`.
    pub fn dequantize(&self) -> Result<Tensor> {
        let values = dequantize_bytes(self.bytes(), self.dtype, self.rows * self.cols)?;
        Ok(Tensor::from_vec(
            values,
            (self.rows, self.cols),
            &self.device,
        )?)
    }

    /// The transpose `[cols, rows]` (compute layout `[in, out]`): contiguous for Q4_1, which
    /// is dequantised straight into it; a transposed view of [`Self::dequantize`] otherwise.
    /// (A strided right-hand side makes gemm pack it on every call, which for a few rows of
    /// input costs more than the product itself.)
    pub fn dequantize_transposed(&self) -> Result<Tensor> {
        if self.dtype != GgmlDType::Q4_1 {
            return Ok(self.dequantize()?.t()?);
        }
        let (rows, cols) = (self.rows, self.cols);
        let row_bytes = cols / 32 * 20;
        let bytes = self.bytes();
        let mut out = vec![0f32; rows * cols];
        // Task k writes output rows 32k..32k+32: block column k of every input row.
        out.par_chunks_mut(32 * rows)
            .enumerate()
            .for_each(|(k, ys)| q4_1_block_column(bytes, row_bytes, k, ys));
        Ok(Tensor::from_vec(out, (cols, rows), &self.device)?)
    }

    /// The matrix with its rows reordered: row `i` of the result is row `order[i]` of `self`.
    pub fn select_rows(&self, order: &[usize]) -> Result<Self> {
        let row_bytes = self.n_bytes / self.rows.max(1);
        if order.len() != self.rows || order.iter().any(|&r| r >= self.rows) {
            return Err(Error::Input(format!(
                "row order of {} entries for a matrix of {} rows",
                order.len(),
                self.rows
            )));
        }
        let src = self.bytes();
        let mut words = vec![0u32; self.words.len()];
        let dst = bytemuck::cast_slice_mut::<u32, u8>(&mut words);
        for (i, &r) in order.iter().enumerate() {
            dst[i * row_bytes..(i + 1) * row_bytes]
                .copy_from_slice(&src[r * row_bytes..(r + 1) * row_bytes]);
        }
        Ok(Self {
            dtype: self.dtype,
            rows: self.rows,
            cols: self.cols,
            words,
            n_bytes: self.n_bytes,
            device: self.device.clone(),
            qmatmul: std::sync::OnceLock::new(),
            scales: std::sync::OnceLock::new(),
        })
    }

    /// `x @ Wᵀ` for `m` rows of f32 activations `x` (`[m, cols]`, row-major), read straight
    /// from the blocks (see [`crate::qmatmul`] for the two definitions by block type);
    /// returns `[m, rows]`. For decoding: a few rows, where dequantising the whole matrix
    /// would cost far more than the product.
    pub fn matmul_rows(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        let shape = (self.rows, self.cols);
        let q = match self.qmatmul.get() {
            Some(q) => q.as_ref(),
            None => {
                let built = crate::qmatmul::candle_qmatmul(self.dtype, self.bytes(), shape)?;
                self.qmatmul.get_or_init(|| built).as_ref()
            }
        };
        let scales = self
            .scales
            .get_or_init(|| crate::qmatmul::block_scales(self.dtype, self.bytes()));
        crate::qmatmul::matmul_rows(self.dtype, self.bytes(), shape, x, m, q, scales)
    }

    /// The GGML block type.
    pub fn ggml_dtype(&self) -> GgmlDType {
        self.dtype
    }
}

/// Elements dequantised per parallel task: enough to amortise scheduling, few enough that one
/// large tensor (an embedding) spreads over every core and each piece stays in cache.
const CHUNK_ELEMS: usize = 1 << 16;

/// Dequantises validated, 4-byte-aligned tensor bytes on the CPU with candle's GGML kernels,
/// in parallel pieces of whole blocks.
fn dequantize_bytes(bytes: &[u8], dtype: GgmlDType, elem_count: usize) -> Result<Vec<f32>> {
    let block_size = dtype.block_size();
    let type_size = dtype.type_size();
    if !bytes.len().is_multiple_of(type_size) || bytes.len() / type_size * block_size != elem_count
    {
        return Err(Error::Unsupported(format!(
            "{dtype:?}: {} bytes do not hold {elem_count} elements in candle's block layout",
            bytes.len()
        )));
    }
    let blocks_per_chunk = (CHUNK_ELEMS / block_size).max(1);
    let mut out = vec![0f32; elem_count];
    out.par_chunks_mut(blocks_per_chunk * block_size)
        .zip(bytes.par_chunks(blocks_per_chunk * type_size))
        .try_for_each(|(ys, xs)| -> Result<()> {
            if dtype == GgmlDType::Q4_1 {
                dequantize_q4_1(xs, ys);
                return Ok(());
            }
            let blocks = dtype.from_data(Cow::Borrowed(xs));
            match blocks.dequantize(ys.len())? {
                CpuStorage::F32(v) if v.len() == ys.len() => {
                    ys.copy_from_slice(&v);
                    Ok(())
                }
                _ => Err(Error::Unsupported(format!(
                    "{dtype:?}: candle did not dequantise to {} f32 values",
                    ys.len()
                ))),
            }
        })?;
    Ok(out)
}

/// Q4_1 blocks (f16 scale `d`, f16 minimum `m`, 16 bytes of 4-bit values: low nibbles are
/// elements 0–15, high nibbles 16–31) straight into `ys`, with candle's arithmetic `q * d + m`
/// (Rust never fuses it into an FMA) so the values are bit-identical to candle's, compiled for
/// AVX-512 or AVX2 when the CPU has them. SmolLM2's weights are Q4_1; with
/// `WeightStorage::Quantized` this runs on every forward.
fn dequantize_q4_1(xs: &[u8], ys: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            unsafe { q4_1_avx512(xs, ys) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            unsafe { q4_1_avx2(xs, ys) };
            return;
        }
    }
    q4_1_blocks(xs, ys)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn q4_1_avx512(xs: &[u8], ys: &mut [f32]) {
    q4_1_blocks(xs, ys)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn q4_1_avx2(xs: &[u8], ys: &mut [f32]) {
    q4_1_blocks(xs, ys)
}

/// Block column `k` of a Q4_1 matrix (`row_bytes` per row), transposed into `ys`
/// (`[32, rows]`), 16 rows at a time so each write is a run of 16 floats.
fn q4_1_block_column(bytes: &[u8], row_bytes: usize, k: usize, ys: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            unsafe { q4_1_block_column_avx512(bytes, row_bytes, k, ys) };
            return;
        }
    }
    q4_1_block_column_any(bytes, row_bytes, k, ys)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn q4_1_block_column_avx512(bytes: &[u8], row_bytes: usize, k: usize, ys: &mut [f32]) {
    q4_1_block_column_any(bytes, row_bytes, k, ys)
}

#[inline(always)]
fn q4_1_block_column_any(bytes: &[u8], row_bytes: usize, k: usize, ys: &mut [f32]) {
    let rows = ys.len() / 32;
    let mut tile = [[0f32; 32]; 16];
    for o0 in (0..rows).step_by(16) {
        let n = 16.min(rows - o0);
        for (t, values) in tile.iter_mut().take(n).enumerate() {
            let at = (o0 + t) * row_bytes + k * 20;
            q4_1_blocks(&bytes[at..at + 20], values);
        }
        for i in 0..32 {
            let dst = &mut ys[i * rows + o0..i * rows + o0 + n];
            for (d, values) in dst.iter_mut().zip(&tile) {
                *d = values[i];
            }
        }
    }
}

/// Whole blocks only: `xs` is 20 bytes per block, `ys` 32 values per block.
#[inline(always)]
fn q4_1_blocks(xs: &[u8], ys: &mut [f32]) {
    for (b, y) in xs.chunks_exact(20).zip(ys.chunks_exact_mut(32)) {
        let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
        let m = half::f16::from_le_bytes([b[2], b[3]]).to_f32();
        let Ok(qs) = <&[u8; 16]>::try_from(&b[4..20]) else {
            continue; // unreachable: chunks of exactly 20 bytes
        };
        let (lo, hi) = y.split_at_mut(16);
        for j in 0..16 {
            lo[j] = (qs[j] & 0x0F) as f32 * d + m;
            hi[j] = (qs[j] >> 4) as f32 * d + m;
        }
    }
}

/// A short description of a metadata value for error messages: its type, and the value when
/// it is a scalar.
fn describe_value(value: &GgufValue) -> String {
    match value {
        GgufValue::String(s) if s.len() <= 40 => format!("the string {s:?}"),
        GgufValue::String(_) => "a long string".to_string(),
        GgufValue::Array(items) => format!("an array of {} items", items.len()),
        GgufValue::Bool(b) => format!("the bool {b}"),
        GgufValue::F32(v) => format!("the f32 {v}"),
        GgufValue::F64(v) => format!("the f64 {v}"),
        other => match other.as_i128() {
            Some(v) => format!("the {} {v}", other.type_name()),
            None => other.type_name().to_string(),
        },
    }
}

/// A tensor's shape and size derived from its dims and type.
struct TensorLayout {
    shape: Vec<usize>,
    elem_count: usize,
    n_bytes: u64,
}

/// Validates a tensor's type and dims and computes its byte size, all with checked arithmetic.
fn tensor_layout(info: &GgufTensorInfo) -> std::result::Result<TensorLayout, String> {
    let name = &info.name;
    let Some(ty) = GgmlTypeInfo::of(info.ggml_type) else {
        return Err(format!(
            "tensor `{name}` has unknown ggml type {}",
            info.ggml_type
        ));
    };
    if info.dims.len() > MAX_DIMS as usize {
        return Err(format!(
            "tensor `{name}` has {} dimensions (ggml allows at most {MAX_DIMS})",
            info.dims.len()
        ));
    }
    // Zero-sized dims are left out of the overflow check so that `[0, 2^40, 2^40]` is refused
    // too: its element count is 0, but candle's strides would still overflow.
    let mut bound: u64 = 1;
    for &d in &info.dims {
        bound = match bound.checked_mul(d.max(1)) {
            Some(n) if n <= i64::MAX as u64 => n,
            _ => {
                return Err(format!(
                    "tensor `{name}` dims {:?} overflow the element count",
                    info.dims
                ))
            }
        };
    }
    let elem_count: u64 = info.dims.iter().product();
    let inner = info.dims.first().copied().unwrap_or(1);
    if inner % ty.block_size != 0 {
        return Err(format!(
            "tensor `{name}` of type {} has innermost dim {inner}, not a multiple of its block size {}",
            ty.name, ty.block_size
        ));
    }
    // elem_count is a multiple of block_size because the innermost dim is (or it is zero).
    let n_bytes = (elem_count / ty.block_size)
        .checked_mul(ty.type_size)
        .ok_or_else(|| format!("tensor `{name}` byte size overflows"))?;
    let elem_count = usize::try_from(elem_count)
        .map_err(|_| format!("tensor `{name}` has too many elements for this machine"))?;
    let shape = info.dims.iter().rev().map(|&d| d as usize).collect();
    Ok(TensorLayout {
        shape,
        elem_count,
        n_bytes,
    })
}

fn data_past_end(
    info: &GgufTensorInfo,
    data_start: u64,
    layout: &TensorLayout,
    file_len: u64,
) -> String {
    format!(
        "tensor `{}` data ({} bytes at offset {} of the data section, which starts at byte {}) \
         extends past the end of the file ({} bytes)",
        info.name, layout.n_bytes, info.offset, data_start, file_len
    )
}

/// Everything [`parse_header`] reads.
struct Header {
    version: u32,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<GgufTensorInfo>,
    alignment: u64,
    data_start: u64,
}

/// A cursor over the file's bytes whose every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
    /// Metadata values read so far, against [`MAX_METADATA_VALUES`].
    values: u64,
}

impl<'a> Reader<'a> {
    fn err(&self, reason: impl Into<String>) -> Error {
        Error::malformed(self.path, reason)
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "truncated: {what} needs {n} bytes at offset {}, but the file ends at {}",
                self.pos,
                self.buf.len()
            )));
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let bytes = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Reads a count and checks that `min_bytes` per item could fit in what is left.
    fn count(&mut self, what: &str, min_bytes: usize) -> Result<usize> {
        let at = self.pos;
        let n = self.u64(what)?;
        let fits = (self.remaining() / min_bytes.max(1)) as u64;
        if n > fits {
            return Err(self.err(format!(
                "{what} {n} at offset {at} cannot fit: each item takes at least {min_bytes} bytes \
                 and only {} bytes are left (an absurd count, or a truncated file)",
                self.remaining()
            )));
        }
        Ok(n as usize)
    }

    fn string_bytes(&mut self, what: &str) -> Result<&'a [u8]> {
        let at = self.pos;
        let len = self.u64(&format!("length of {what}"))?;
        if len > self.remaining() as u64 {
            return Err(self.err(format!(
                "{what} at offset {at} has length {len}, past the end of the file ({} bytes left)",
                self.remaining()
            )));
        }
        self.take(len as usize, what)
    }

    /// A string that must be valid UTF-8 (keys and tensor names).
    fn strict_string(&mut self, what: &str) -> Result<String> {
        let at = self.pos;
        let bytes = self.string_bytes(what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => Err(self.err(format!("{what} at offset {at} is not valid UTF-8"))),
        }
    }

    fn count_values(&mut self, n: u64) -> Result<()> {
        self.values = self.values.saturating_add(n);
        if self.values > MAX_METADATA_VALUES {
            return Err(self.err(format!(
                "metadata holds more than {MAX_METADATA_VALUES} values"
            )));
        }
        Ok(())
    }

    fn value(&mut self, value_type: u32, key: &str, depth: u32) -> Result<GgufValue> {
        let what = format!("value of `{key}`");
        let value = match value_type {
            0 => GgufValue::U8(u8::from_le_bytes(self.array(&what)?)),
            1 => GgufValue::I8(i8::from_le_bytes(self.array(&what)?)),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(&what)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(&what)?)),
            4 => GgufValue::U32(u32::from_le_bytes(self.array(&what)?)),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(&what)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(&what)?)),
            7 => {
                let [b] = self.array::<1>(&what)?;
                GgufValue::Bool(b != 0)
            }
            8 => GgufValue::String(String::from_utf8_lossy(self.string_bytes(&what)?).into_owned()),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err(format!(
                        "array `{key}` nests deeper than {MAX_ARRAY_DEPTH} levels"
                    )));
                }
                let at = self.pos;
                let item_type = self.u32(&format!("item type of array `{key}`"))?;
                let Some(item_size) = min_value_size(item_type) else {
                    return Err(self.err(format!(
                        "array `{key}` at offset {at} has unknown item type {item_type}"
                    )));
                };
                let n = self.count(&format!("item count of array `{key}`"), item_size)?;
                self.count_values(n as u64)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(item_type, key, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(u64::from_le_bytes(self.array(&what)?)),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(&what)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(&what)?)),
            other => {
                return Err(self.err(format!(
                    "metadata key `{key}` has unknown value type {other}"
                )))
            }
        };
        Ok(value)
    }
}

/// The fewest bytes one value of a GGUF value type can take, or `None` for an unknown type.
fn min_value_size(value_type: u32) -> Option<usize> {
    match value_type {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        8 => Some(8),
        9 => Some(4 + 8),
        10..=12 => Some(8),
        _ => None,
    }
}

fn parse_header(path: &Path, buf: &[u8]) -> Result<Header> {
    let mut r = Reader {
        buf,
        pos: 0,
        path,
        values: 0,
    };
    let magic = r.array::<4>("magic")?;
    if &magic != MAGIC {
        return Err(r.err(format!(
            "bad magic {magic:02x?}: not a GGUF file (expected \"GGUF\")"
        )));
    }
    let version = r.u32("version")?;
    if version != 2 && version != 3 {
        let hint = if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
            " (a big-endian file, which is not supported)"
        } else if version == 1 {
            " (GGUF v1 is obsolete; convert the file again)"
        } else {
            ""
        };
        return Err(r.err(format!(
            "unsupported GGUF version {version}{hint}; only versions 2 and 3 are read"
        )));
    }
    let n_tensors = r.count("tensor count", MIN_TENSOR_INFO_BYTES)?;
    let n_kv = r.count("metadata key-value count", MIN_KV_BYTES)?;

    let mut metadata = BTreeMap::new();
    for _ in 0..n_kv {
        let key = r.strict_string("metadata key")?;
        let value_type = r.u32(&format!("value type of `{key}`"))?;
        r.count_values(1)?;
        let value = r.value(value_type, &key, 0)?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(r.err(format!("duplicate metadata key `{key}`")));
        }
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(value) => match value.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() => a,
            _ => {
                return Err(r.err(format!(
                    "general.alignment is {}, expected a power of two",
                    describe_value(value)
                )))
            }
        },
    };

    let mut tensors = Vec::with_capacity(n_tensors);
    let mut names = HashSet::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        let name = r.strict_string("tensor name")?;
        let n_dims = r.u32(&format!("n_dims of tensor `{name}`"))?;
        if n_dims > MAX_DIMS {
            return Err(r.err(format!(
                "tensor `{name}` has {n_dims} dimensions (ggml allows at most {MAX_DIMS})"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(r.u64(&format!("dims of tensor `{name}`"))?);
        }
        let ggml_type = r.u32(&format!("type of tensor `{name}`"))?;
        let offset = r.u64(&format!("offset of tensor `{name}`"))?;
        if !names.insert(name.clone()) {
            return Err(r.err(format!("duplicate tensor name `{name}`")));
        }
        tensors.push(GgufTensorInfo {
            name,
            dims,
            ggml_type,
            offset,
        });
    }

    // `pos` is at most the length of an in-memory slice, so it fits in u64 and the padding
    // below cannot overflow unless the alignment is absurd.
    let end_of_header = r.pos as u64;
    let data_start = end_of_header
        .div_ceil(alignment)
        .checked_mul(alignment)
        .ok_or_else(|| r.err(format!("general.alignment {alignment} is too large")))?;
    let file_len = buf.len() as u64;
    for info in &tensors {
        let layout = tensor_layout(info).map_err(|reason| r.err(reason))?;
        if info.offset % alignment != 0 {
            return Err(r.err(format!(
                "tensor `{}` offset {} is misaligned (not a multiple of the alignment {alignment})",
                info.name, info.offset
            )));
        }
        let end = data_start
            .checked_add(info.offset)
            .and_then(|s| s.checked_add(layout.n_bytes));
        if !matches!(end, Some(end) if end <= file_len) {
            return Err(r.err(data_past_end(info, data_start, &layout, file_len)));
        }
    }

    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_start,
    })
}

#[cfg(test)]
pub(crate) mod test_writer {
    //! A minimal GGUF writer for building test files in memory.

    use super::GgufValue;

    /// One tensor to write: name, GGUF dims (innermost first), ggml type and raw data.
    pub(crate) struct RawTensor {
        pub name: String,
        pub dims: Vec<u64>,
        pub ggml_type: u32,
        pub data: Vec<u8>,
    }

    fn put_string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    fn value_type(v: &GgufValue) -> u32 {
        match v {
            GgufValue::U8(_) => 0,
            GgufValue::I8(_) => 1,
            GgufValue::U16(_) => 2,
            GgufValue::I16(_) => 3,
            GgufValue::U32(_) => 4,
            GgufValue::I32(_) => 5,
            GgufValue::F32(_) => 6,
            GgufValue::Bool(_) => 7,
            GgufValue::String(_) => 8,
            GgufValue::Array(_) => 9,
            GgufValue::U64(_) => 10,
            GgufValue::I64(_) => 11,
            GgufValue::F64(_) => 12,
        }
    }

    fn put_value(out: &mut Vec<u8>, v: &GgufValue) {
        match v {
            GgufValue::U8(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::Bool(x) => out.push(u8::from(*x)),
            GgufValue::String(s) => put_string(out, s),
            GgufValue::Array(items) => {
                let item_type = items.first().map(value_type).unwrap_or(0);
                out.extend_from_slice(&item_type.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for item in items {
                    put_value(out, item);
                }
            }
        }
    }

    /// Serialises a GGUF v3 file with the given metadata and tensors, aligned to `alignment`.
    pub(crate) fn write(
        meta: &[(&str, GgufValue)],
        tensors: &[RawTensor],
        alignment: u64,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(meta.len() as u64).to_le_bytes());
        for (key, value) in meta {
            put_string(&mut out, key);
            out.extend_from_slice(&value_type(value).to_le_bytes());
            put_value(&mut out, value);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for t in tensors {
            put_string(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ggml_type.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + t.data.len() as u64).div_ceil(alignment) * alignment;
        }
        while !(out.len() as u64).is_multiple_of(alignment) {
            out.push(0);
        }
        let data_start = out.len();
        for (t, off) in tensors.iter().zip(offsets) {
            out.resize(data_start + off as usize, 0);
            out.extend_from_slice(&t.data);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::test_writer::{write, RawTensor};
    use super::*;

    /// The Q4_1 fast path against candle's kernel, bit for bit, on random blocks whose scales
    /// and minimums cover normal, subnormal, zero, negative and large f16 values.
    #[test]
    fn q4_1_fast_path_is_bit_identical_to_candle() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let n_blocks = 4096;
        let mut bytes = Vec::with_capacity(n_blocks * 20);
        for i in 0..n_blocks {
            let r = next();
            let (d, m) = match i % 4 {
                // Any bit pattern but NaN/inf (exponent 0x1f).
                0 => ((r as u16) & 0x7bff, (r >> 16) as u16 & 0xfbff),
                1 => (0x0001, 0x8001), // smallest subnormals
                2 => (0x0000, 0x8000), // zeros
                _ => (
                    half::f16::from_f32(0.0123).to_bits(),
                    half::f16::from_f32(-0.09).to_bits(),
                ),
            };
            bytes.extend(d.to_le_bytes());
            bytes.extend(m.to_le_bytes());
            bytes.extend((0..16).map(|_| next() as u8));
        }
        let ours = dequantize_bytes(&bytes, GgmlDType::Q4_1, n_blocks * 32).unwrap();
        let mut theirs = vec![0f32; n_blocks * 32];
        match GgmlDType::Q4_1
            .from_data(Cow::Borrowed(&bytes))
            .dequantize(theirs.len())
            .unwrap()
        {
            CpuStorage::F32(v) => theirs.copy_from_slice(&v),
            _ => panic!("candle returned another dtype"),
        }
        let mut portable = vec![0f32; n_blocks * 32];
        q4_1_blocks(&bytes, &mut portable);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
        assert_eq!(bits(&ours), bits(&theirs), "run-time selected path");
        assert_eq!(bits(&portable), bits(&theirs), "portable path");
    }

    fn f32_bytes(xs: &[f32]) -> Vec<u8> {
        xs.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn f16_bytes(xs: &[f32]) -> Vec<u8> {
        xs.iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect()
    }

    fn bf16_bytes(xs: &[f32]) -> Vec<u8> {
        xs.iter()
            .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
            .collect()
    }

    /// One Q8_0 block: f16 scale then 32 signed bytes.
    fn q8_0_block(scale: f32, qs: &[i8; 32]) -> Vec<u8> {
        let mut out = half::f16::from_f32(scale).to_le_bytes().to_vec();
        out.extend(qs.iter().map(|q| *q as u8));
        out
    }

    fn sample() -> Vec<u8> {
        let meta = vec![
            ("general.architecture", GgufValue::String("llama".into())),
            ("llama.block_count", GgufValue::U32(2)),
            ("llama.rope.freq_base", GgufValue::F32(10000.0)),
            ("llama.context_length", GgufValue::U64(2048)),
            ("neg", GgufValue::I32(-3)),
            (
                "tokenizer.ggml.tokens",
                GgufValue::Array(vec![
                    GgufValue::String("a".into()),
                    GgufValue::String("b".into()),
                ]),
            ),
            (
                "tokenizer.ggml.scores",
                GgufValue::Array(vec![GgufValue::F32(0.5), GgufValue::F32(-1.0)]),
            ),
            (
                "tokenizer.ggml.token_type",
                GgufValue::Array(vec![GgufValue::I32(1), GgufValue::I32(3)]),
            ),
            (
                "nested",
                GgufValue::Array(vec![
                    GgufValue::Array(vec![GgufValue::U8(1), GgufValue::U8(2)]),
                    GgufValue::Array(vec![GgufValue::U8(3)]),
                ]),
            ),
        ];
        let xs: Vec<f32> = (0..6).map(|i| i as f32).collect();
        let mut q = [0i8; 32];
        for (i, v) in q.iter_mut().enumerate() {
            *v = i as i8 - 16;
        }
        let mut q8 = q8_0_block(0.5, &q);
        q8.extend(q8_0_block(2.0, &q));
        let tensors = vec![
            RawTensor {
                name: "f32".into(),
                dims: vec![3, 2],
                ggml_type: 0,
                data: f32_bytes(&xs),
            },
            RawTensor {
                name: "f16".into(),
                dims: vec![6],
                ggml_type: 1,
                data: f16_bytes(&xs),
            },
            RawTensor {
                name: "bf16".into(),
                dims: vec![2, 3],
                ggml_type: 30,
                data: bf16_bytes(&xs),
            },
            RawTensor {
                name: "q8".into(),
                dims: vec![32, 2],
                ggml_type: 8,
                data: q8,
            },
        ];
        write(&meta, &tensors, 32)
    }

    fn reason(err: Error) -> String {
        match err {
            Error::Malformed { reason, .. } => reason,
            other => panic!("expected a Malformed error, got {other:?}"),
        }
    }

    #[test]
    fn reads_metadata_of_every_kind() {
        let f = GgufFile::from_bytes(sample()).unwrap();
        assert_eq!(f.version(), 3);
        assert_eq!(f.alignment(), 32);
        assert_eq!(f.architecture().unwrap(), "llama");
        assert_eq!(f.meta_u64("llama.block_count").unwrap(), 2);
        assert_eq!(f.meta_u64("llama.context_length").unwrap(), 2048);
        assert_eq!(f.meta_f64("llama.rope.freq_base").unwrap(), 10000.0);
        assert_eq!(f.meta_f64("llama.block_count").unwrap(), 2.0);
        assert_eq!(
            f.meta_str_array("tokenizer.ggml.tokens").unwrap(),
            vec!["a", "b"]
        );
        assert_eq!(
            f.meta_f32_array("tokenizer.ggml.scores").unwrap(),
            vec![0.5, -1.0]
        );
        assert_eq!(
            f.meta_i32_array("tokenizer.ggml.token_type").unwrap(),
            vec![1, 3]
        );
        let nested = f.meta("nested").unwrap().as_array().unwrap();
        assert_eq!(
            nested[0],
            GgufValue::Array(vec![GgufValue::U8(1), GgufValue::U8(2)])
        );
    }

    #[test]
    fn getters_explain_missing_and_mistyped_keys() {
        let f = GgufFile::from_bytes(sample()).unwrap();
        let e = reason(f.meta_u64("llama.nope").unwrap_err());
        assert!(e.contains("missing metadata key `llama.nope`"), "{e}");
        let e = reason(f.meta_u64("neg").unwrap_err());
        assert!(e.contains("non-negative integer"), "{e}");
        let e = reason(f.meta_str("llama.block_count").unwrap_err());
        assert!(e.contains("expected a string"), "{e}");
        let e = reason(f.meta_str_array("tokenizer.ggml.scores").unwrap_err());
        assert!(e.contains("item 0"), "{e}");
        assert!(f.meta("absent").is_none());
    }

    #[test]
    fn lists_and_dequantises_tensors() {
        let f = GgufFile::from_bytes(sample()).unwrap();
        assert_eq!(f.tensor_names(), vec!["f32", "f16", "bf16", "q8"]);
        assert_eq!(f.tensor_info("f32").unwrap().shape(), vec![2, 3]);
        let want: Vec<f32> = (0..6).map(|i| i as f32).collect();
        for name in ["f32", "f16", "bf16"] {
            let t = f.tensor_f32(name, &Device::Cpu).unwrap();
            assert_eq!(t.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
        }
        let t = f.tensor_f32("f32", &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[2, 3]);
        assert_eq!(t.to_vec2::<f32>().unwrap()[1], vec![3.0, 4.0, 5.0]);
        let q = f.tensor_f32("q8", &Device::Cpu).unwrap();
        assert_eq!(q.dims(), &[2, 32]);
        let rows = q.to_vec2::<f32>().unwrap();
        assert_eq!(rows[0][0], -8.0);
        assert_eq!(rows[0][31], 7.5);
        assert_eq!(rows[1][0], -32.0);
        let all = f.tensors_f32(&["q8", "f32"], &Device::Cpu).unwrap();
        assert_eq!(all[0].dims(), &[2, 32]);
        assert_eq!(all[1].dims(), &[2, 3]);
        let e = reason(f.tensor_f32("missing", &Device::Cpu).unwrap_err());
        assert!(e.contains("no tensor named `missing`"), "{e}");
    }

    #[test]
    fn odd_alignment_is_read_through_an_aligned_copy() {
        let xs = [1.5f32, -2.0, 3.25];
        let tensors = vec![
            RawTensor {
                name: "a".into(),
                dims: vec![1],
                ggml_type: 24,
                data: vec![7],
            },
            RawTensor {
                name: "b".into(),
                dims: vec![3],
                ggml_type: 0,
                data: f32_bytes(&xs),
            },
        ];
        let bytes = write(&[("general.alignment", GgufValue::U32(1))], &tensors, 1);
        let f = GgufFile::from_bytes(bytes).unwrap();
        assert_eq!(f.alignment(), 1);
        let t = f.tensor_f32("b", &Device::Cpu).unwrap();
        assert_eq!(t.to_vec1::<f32>().unwrap(), xs);
        let e = f.tensor_f32("a", &Device::Cpu).unwrap_err();
        assert!(
            matches!(&e, Error::Unsupported(m) if m.contains("I8")),
            "{e}"
        );
    }

    #[test]
    fn scalar_and_empty_tensors() {
        let tensors = vec![
            RawTensor {
                name: "scalar".into(),
                dims: vec![],
                ggml_type: 0,
                data: f32_bytes(&[4.0]),
            },
            RawTensor {
                name: "empty".into(),
                dims: vec![0, 3],
                ggml_type: 2,
                data: vec![],
            },
        ];
        let f = GgufFile::from_bytes(write(&[], &tensors, 32)).unwrap();
        let s = f.tensor_f32("scalar", &Device::Cpu).unwrap();
        assert_eq!(s.dims(), &[] as &[usize]);
        assert_eq!(s.to_scalar::<f32>().unwrap(), 4.0);
        let e = f.tensor_f32("empty", &Device::Cpu).unwrap();
        assert_eq!(e.dims(), &[3, 0]);
    }

    #[test]
    fn rejects_bad_magic_and_version() {
        let mut bytes = sample();
        bytes[0] = b'X';
        let e = reason(GgufFile::from_bytes(bytes).unwrap_err());
        assert!(e.contains("bad magic"), "{e}");
        let mut bytes = sample();
        bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
        let e = reason(GgufFile::from_bytes(bytes).unwrap_err());
        assert!(e.contains("unsupported GGUF version 1"), "{e}");
        let mut bytes = sample();
        bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
        let e = reason(GgufFile::from_bytes(bytes).unwrap_err());
        assert!(e.contains("big-endian"), "{e}");
    }

    #[test]
    fn rejects_absurd_counts_without_allocating() {
        let mut bytes = sample();
        bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        let e = reason(GgufFile::from_bytes(bytes).unwrap_err());
        assert!(e.contains("tensor count") && e.contains("absurd"), "{e}");
        let mut bytes = sample();
        bytes[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let e = reason(GgufFile::from_bytes(bytes).unwrap_err());
        assert!(e.contains("key-value count"), "{e}");
    }

    #[test]
    fn rejects_string_past_end() {
        let mut bytes = sample();
        // The first key's length follows the 24-byte header.
        bytes[24..32].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
        let e = reason(GgufFile::from_bytes(bytes).unwrap_err());
        assert!(e.contains("past the end of the file"), "{e}");
    }

    #[test]
    fn rejects_deep_nesting() {
        let mut v = GgufValue::U8(1);
        for _ in 0..20 {
            v = GgufValue::Array(vec![v]);
        }
        let bytes = write(&[("deep", v)], &[], 32);
        let e = reason(GgufFile::from_bytes(bytes).unwrap_err());
        assert!(e.contains("nests deeper"), "{e}");
    }

    fn one_tensor(dims: Vec<u64>, ggml_type: u32, data: Vec<u8>) -> Vec<u8> {
        let t = RawTensor {
            name: "t".into(),
            dims,
            ggml_type,
            data,
        };
        write(&[], &[t], 32)
    }

    #[test]
    fn rejects_bad_tensor_infos() {
        let e = reason(GgufFile::from_bytes(one_tensor(vec![1; 5], 0, vec![0; 4])).unwrap_err());
        assert!(e.contains("5 dimensions"), "{e}");
        let e = reason(
            GgufFile::from_bytes(one_tensor(vec![1 << 32, 1 << 32], 0, vec![])).unwrap_err(),
        );
        assert!(e.contains("overflow"), "{e}");
        let e = reason(
            GgufFile::from_bytes(one_tensor(vec![0, 1 << 40, 1 << 40], 0, vec![])).unwrap_err(),
        );
        assert!(e.contains("overflow"), "{e}");
        let e = reason(GgufFile::from_bytes(one_tensor(vec![1], 99, vec![0; 4])).unwrap_err());
        assert!(e.contains("unknown ggml type 99"), "{e}");
        let e = reason(GgufFile::from_bytes(one_tensor(vec![16], 2, vec![0; 18])).unwrap_err());
        assert!(e.contains("block size 32"), "{e}");
        let e = reason(GgufFile::from_bytes(one_tensor(vec![4], 0, vec![0; 8])).unwrap_err());
        assert!(e.contains("extends past the end"), "{e}");
    }

    #[test]
    fn rejects_misaligned_offset_and_bad_alignment() {
        let mut bytes = one_tensor(vec![1], 0, vec![0; 64]);
        // The offset is the last 8 bytes of the tensor info, just before the padding.
        let info_end = 24 + 8 + 1 + 4 + 8 + 4 + 8;
        bytes[info_end - 8..info_end].copy_from_slice(&4u64.to_le_bytes());
        let e = reason(GgufFile::from_bytes(bytes).unwrap_err());
        assert!(e.contains("misaligned"), "{e}");
        let bytes = write(&[("general.alignment", GgufValue::U32(3))], &[], 32);
        let e = reason(GgufFile::from_bytes(bytes).unwrap_err());
        assert!(e.contains("power of two"), "{e}");
    }

    #[test]
    fn rejects_duplicates() {
        let t = || RawTensor {
            name: "t".into(),
            dims: vec![1],
            ggml_type: 0,
            data: vec![0; 4],
        };
        let e = reason(GgufFile::from_bytes(write(&[], &[t(), t()], 32)).unwrap_err());
        assert!(e.contains("duplicate tensor name `t`"), "{e}");
        let meta = [("k", GgufValue::U8(1)), ("k", GgufValue::U8(2))];
        let e = reason(GgufFile::from_bytes(write(&meta, &[], 32)).unwrap_err());
        assert!(e.contains("duplicate metadata key `k`"), "{e}");
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample();
        for len in 0..bytes.len() {
            let r = GgufFile::from_bytes(bytes[..len].to_vec());
            assert!(r.is_err(), "prefix of {len} bytes parsed");
        }
    }

    #[test]
    fn mutated_public_fields_are_checked_again() {
        let mut f = GgufFile::from_bytes(sample()).unwrap();
        f.tensors[0].offset = u64::MAX - 1;
        f.tensors[1].dims = vec![u64::MAX, 2];
        let e = reason(f.tensor_f32("f32", &Device::Cpu).unwrap_err());
        assert!(e.contains("past the end"), "{e}");
        let e = reason(f.tensor_f32("f16", &Device::Cpu).unwrap_err());
        assert!(e.contains("overflow"), "{e}");
    }
}
