//! A bounds-checked GGUF reader: metadata, tensor directory, and dequantisation to f32.
//!
//! OWNER NOTE: skeleton; the GGUF helper replaces the bodies. The public names below are the
//! contract other modules code against.

use std::collections::BTreeMap;
use std::path::Path;

use crate::Result;

/// One metadata value of a GGUF file.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
}

/// Where one tensor lives in the file. `dims` are in GGUF order (innermost first).
#[derive(Debug, Clone)]
pub struct GgufTensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// Offset relative to the start of the tensor data section.
    pub offset: u64,
}

/// An opened GGUF file.
pub struct GgufFile {
    pub metadata: BTreeMap<String, GgufValue>,
    pub tensors: Vec<GgufTensorInfo>,
}

impl GgufFile {
    /// Open and validate a GGUF file.
    pub fn open(_path: &Path) -> Result<Self> {
        unimplemented!()
    }
}
