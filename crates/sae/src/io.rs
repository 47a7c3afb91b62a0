//! Named f32 tensors in safetensors files, written atomically (temporary file, then rename).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// Write 1-D-or-shaped f32 tensors (`name`, values) as 1-D tensors, with string metadata.
pub fn write_f32_safetensors(
    path: &Path,
    tensors: &[(String, Vec<f32>)],
    metadata: &[(&str, String)],
) -> anyhow::Result<()> {
    let shaped: Vec<(String, Vec<usize>, &[f32])> = tensors
        .iter()
        .map(|(n, v)| (n.clone(), vec![v.len()], v.as_slice()))
        .collect();
    write_shaped(path, &shaped, metadata)
}

/// Write f32 tensors with shapes.
pub fn write_shaped(
    path: &Path,
    tensors: &[(String, Vec<usize>, &[f32])],
    metadata: &[(&str, String)],
) -> anyhow::Result<()> {
    let mut views = Vec::with_capacity(tensors.len());
    for (name, shape, data) in tensors {
        anyhow::ensure!(
            shape.iter().product::<usize>() == data.len(),
            "tensor {name}: shape {shape:?} does not hold {} values",
            data.len()
        );
        let bytes: &[u8] = bytemuck_cast(data);
        views.push((
            name.clone(),
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map_err(|e| anyhow::anyhow!("tensor {name}: {e}"))?,
        ));
    }
    let meta: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let bytes = safetensors::serialize(views, Some(meta))
        .map_err(|e| anyhow::anyhow!("serialising {}: {e}", path.display()))?;
    interplab_core::atomic::write_atomic(path, &bytes)?;
    Ok(())
}

fn bytemuck_cast(v: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and any byte pattern is a valid u8; the length is exact.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

/// A tensor read back: shape and values.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Read every f32 tensor (as flat values) and the metadata of a safetensors file.
pub fn read_f32_safetensors(
    path: &Path,
) -> anyhow::Result<(BTreeMap<String, Vec<f32>>, BTreeMap<String, String>)> {
    let (t, m) = read_shaped(path)?;
    Ok((t.into_iter().map(|(k, v)| (k, v.data)).collect(), m))
}

/// Read every tensor with its shape (f32, or f16/bf16 converted), and the metadata.
pub fn read_shaped(
    path: &Path,
) -> anyhow::Result<(BTreeMap<String, Loaded>, BTreeMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file ({e})", path.display()))?;
    let meta: BTreeMap<String, String> = header
        .metadata()
        .clone()
        .map(|m| m.into_iter().collect())
        .unwrap_or_default();
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file ({e})", path.display()))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F64 => view
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            Dtype::F16 => view
                .data()
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => view
                .data()
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => anyhow::bail!(
                "{}: tensor {name} has dtype {other:?}; expected a float type",
                path.display()
            ),
        };
        out.insert(
            name.to_string(),
            Loaded {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok((out, meta))
}
