//! numpy ↔ tensor conversions. Tensors are copied out as f32 without the GIL ([`Host`]) and
//! handed to numpy without a second copy (`PyArray::from_vec`).

use candle_core::{DType, Device, Tensor};
use numpy::{PyArray1, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::{py_err, py_msg};

/// A tensor's values as f32 in row-major order, with its shape.
pub(crate) struct Host {
    pub data: Vec<f32>,
    pub dims: Vec<usize>,
}

impl Host {
    /// Copy `t` out (any float dtype becomes f32).
    pub fn of(t: &Tensor) -> candle_core::Result<Host> {
        let dims = t.dims().to_vec();
        let data = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(Host { data, dims })
    }

    /// Drop a leading batch dimension of size 1.
    pub fn squeeze_batch(mut self) -> Host {
        if self.dims.len() > 1 && self.dims[0] == 1 {
            self.dims.remove(0);
        }
        self
    }

    /// A numpy `float32` array that owns the data.
    pub fn into_numpy(self, py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        let flat = PyArray1::from_vec(py, self.data);
        Ok(flat.reshape(self.dims)?.into_any())
    }
}

/// A float array-like as contiguous f32 values and its shape.
pub(crate) fn f32_from_py(obj: &Bound<'_, PyAny>) -> PyResult<(Vec<f32>, Vec<usize>)> {
    let np = obj.py().import("numpy")?;
    let arr = np.call_method1("ascontiguousarray", (obj, "float32"))?;
    let arr: PyReadonlyArrayDyn<'_, f32> = arr.extract()?;
    let shape = arr.shape().to_vec();
    let data = arr
        .as_slice()
        .map_err(|e| PyValueError::new_err(e.to_string()))?
        .to_vec();
    Ok((data, shape))
}

/// A tensor with the values of a float array-like, in `dtype`, on `device`.
pub(crate) fn tensor_from_py(
    obj: &Bound<'_, PyAny>,
    dtype: DType,
    device: &Device,
) -> PyResult<Tensor> {
    let (data, shape) = f32_from_py(obj)?;
    Tensor::from_vec(data, shape, device)
        .and_then(|t| t.to_dtype(dtype))
        .map_err(py_err)
}

/// Token ids `[batch, pos]` from an integer array-like of one or two dimensions.
pub(crate) fn token_ids_from_py(
    obj: &Bound<'_, PyAny>,
    d_vocab: usize,
) -> PyResult<(Vec<u32>, usize, usize)> {
    let np = obj.py().import("numpy")?;
    let arr = np.call_method1("asarray", (obj,))?;
    let kind: String = arr.getattr("dtype")?.getattr("kind")?.extract()?;
    if kind != "i" && kind != "u" {
        let dtype = arr.getattr("dtype")?.str()?.to_string();
        return Err(PyTypeError::new_err(format!(
            "tokens must be an integer array of shape [batch, pos] or [pos], got dtype {dtype}"
        )));
    }
    let arr = np.call_method1("ascontiguousarray", (arr, "int64"))?;
    let arr: PyReadonlyArrayDyn<'_, i64> = arr.extract()?;
    let (batch, pos) = match *arr.shape() {
        [p] => (1, p),
        [b, p] => (b, p),
        ref s => {
            return Err(py_msg(format!(
                "tokens must have shape [batch, pos] or [pos], got {s:?}"
            )))
        }
    };
    if batch == 0 || pos == 0 {
        return Err(py_msg("no tokens to run"));
    }
    let ids = arr
        .as_slice()
        .map_err(|e| PyValueError::new_err(e.to_string()))?
        .iter()
        .map(|&id| {
            // Ids that fit u32 are checked by the model itself (the CLI's message); these
            // could not reach it.
            u32::try_from(id).map_err(|_| {
                py_msg(format!(
                    "invalid input: token id {id} is out of the vocabulary (size {d_vocab})"
                ))
            })
        })
        .collect::<PyResult<Vec<u32>>>()?;
    Ok((ids, batch, pos))
}

/// Token ids `[batch, pos]` as an int64 numpy array.
pub(crate) fn tokens_to_numpy(
    py: Python<'_>,
    ids: Vec<u32>,
    batch: usize,
    pos: usize,
) -> PyResult<Bound<'_, PyAny>> {
    let v: Vec<i64> = ids.into_iter().map(i64::from).collect();
    Ok(PyArray1::from_vec(py, v).reshape([batch, pos])?.into_any())
}
