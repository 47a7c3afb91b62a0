//! `interplab.sae.load`: an SAE or transcoder in SAELens' layout, with `encode` and
//! `decode` on numpy arrays.

use std::path::PathBuf;

use interplab_sae::saelens::{self, Loaded};
use interplab_sae::Codes;
use pyo3::prelude::*;

use crate::array::{f32_from_py, Host};
use crate::{py_err, py_msg};

/// Read an SAE directory (`cfg.json` + `sae_weights.safetensors`, as SAELens saves it, and as
/// `interplab sae train` writes it).
#[pyfunction]
#[pyo3(name = "_sae_load")]
pub fn sae_load(py: Python<'_>, path: PathBuf) -> PyResult<PySae> {
    let loaded = py.detach(|| saelens::load(&path)).map_err(py_err)?;
    Ok(PySae {
        inner: loaded,
        path,
    })
}

/// A sparse autoencoder or transcoder.
#[pyclass(frozen, module = "interplab.sae", name = "Sae")]
pub struct PySae {
    inner: Loaded,
    path: PathBuf,
}

impl PySae {
    /// Rows `[n, width]` of an array `[..., width]`, with the leading shape.
    fn rows(
        &self,
        x: &Bound<'_, PyAny>,
        width: usize,
        what: &str,
    ) -> PyResult<(Vec<f32>, Vec<usize>)> {
        let (data, shape) = f32_from_py(x)?;
        if shape.last() != Some(&width) {
            return Err(py_msg(format!(
                "{what} must have shape [..., {width}], got {shape:?}"
            )));
        }
        Ok((data, shape[..shape.len() - 1].to_vec()))
    }
}

fn array<'py>(
    py: Python<'py>,
    data: Vec<f32>,
    lead: &[usize],
    width: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let mut dims = lead.to_vec();
    dims.push(width);
    Host { data, dims }.into_numpy(py)
}

#[pymethods]
impl PySae {
    /// Input width.
    #[getter]
    fn d_in(&self) -> usize {
        self.inner.sae.d_in
    }

    /// Number of latents.
    #[getter]
    fn d_sae(&self) -> usize {
        self.inner.sae.d_sae
    }

    /// Output width (`d_in` for an SAE).
    #[getter]
    fn d_out(&self) -> usize {
        self.inner.sae.d_out
    }

    /// `relu`, `topk`, `batchtopk` or `jumprelu`.
    #[getter]
    fn architecture(&self) -> &'static str {
        self.inner.sae.arch.name()
    }

    /// Whether it reads one hook and predicts another.
    #[getter]
    fn transcoder(&self) -> bool {
        self.inner.sae.transcoder
    }

    /// The hook it reads, if `cfg.json` names it.
    #[getter]
    fn hook_name(&self) -> Option<String> {
        self.inner.hook_name.clone()
    }

    /// A transcoder's output hook, if named.
    #[getter]
    fn hook_name_out(&self) -> Option<String> {
        self.inner.hook_name_out.clone()
    }

    /// The whole `cfg.json` as a dict.
    #[getter]
    fn cfg<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        crate::lab::json_to_py(py, &self.inner.cfg)
    }

    /// The directory it was loaded from.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// The encoder `[d_in, d_sae]`.
    #[getter(W_enc)]
    fn w_enc<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = &self.inner.sae;
        array(py, s.w_enc(), &[s.d_in], s.d_sae)
    }

    /// The decoder `[d_sae, d_out]`.
    #[getter(W_dec)]
    fn w_dec<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = &self.inner.sae;
        array(py, s.w_dec.clone(), &[s.d_sae], s.d_out)
    }

    /// `[d_sae]`.
    #[getter]
    fn b_enc<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        array(py, self.inner.sae.b_enc.clone(), &[], self.inner.sae.d_sae)
    }

    /// `[d_out]`.
    #[getter]
    fn b_dec<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        array(py, self.inner.sae.b_dec.clone(), &[], self.inner.sae.d_out)
    }

    /// Latent activations `[..., d_sae]` of inputs `[..., d_in]`, as at inference.
    fn encode<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let s = &self.inner.sae;
        let (data, lead) = self.rows(x, s.d_in, "the input")?;
        let dense = py.detach(|| s.encode(&data).to_dense(s.d_sae));
        array(py, dense, &lead, s.d_sae)
    }

    /// Reconstructions `[..., d_out]` of latent activations `[..., d_sae]`.
    fn decode<'py>(
        &self,
        py: Python<'py>,
        acts: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let s = &self.inner.sae;
        let (data, lead) = self.rows(acts, s.d_sae, "the latent activations")?;
        let out = py.detach(|| {
            let rows = data
                .chunks_exact(s.d_sae)
                .map(|r| {
                    r.iter()
                        .enumerate()
                        .filter(|(_, v)| **v != 0.0)
                        .map(|(i, v)| (i as u32, *v))
                        .collect()
                })
                .collect();
            s.decode(&Codes::from_rows(rows))
        });
        array(py, out, &lead, s.d_out)
    }

    /// `decode(encode(x))`.
    fn forward<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let s = &self.inner.sae;
        let (data, lead) = self.rows(x, s.d_in, "the input")?;
        let out = py.detach(|| s.forward(&data).1);
        array(py, out, &lead, s.d_out)
    }

    fn __repr__(&self) -> String {
        let s = &self.inner.sae;
        format!(
            "Sae({} {}, d_in {}, d_sae {}{})",
            s.arch.name(),
            if s.transcoder { "transcoder" } else { "SAE" },
            s.d_in,
            s.d_sae,
            self.inner
                .hook_name
                .as_ref()
                .map(|h| format!(", hook {h}"))
                .unwrap_or_default()
        )
    }
}
