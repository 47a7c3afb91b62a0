//! Python bindings: `import interplab`.
//!
//! The native module is `interplab._interplab`; the Python package around it
//! (`crates/python/python/interplab/`) adds the `lab` and `sae` submodules. Names, argument
//! conventions and shapes follow TransformerLens (`model.run_with_cache`, `run_with_hooks`,
//! `to_tokens`, hook names), with numpy arrays in and out. Every Rust error becomes
//! `interplab.InterplabError` carrying the one-line message the CLI prints (`{:#}` of the
//! anyhow error); a Python exception raised inside a hook propagates unchanged.

mod array;
mod lab;
mod model;
mod sae;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

pyo3::create_exception!(
    interplab,
    InterplabError,
    PyRuntimeError,
    "An error from Interplab: the message the `interplab` CLI would print after `error: `."
);

/// The Python exception for a Rust error, with the CLI's one-line message.
pub(crate) fn py_err(e: impl Into<anyhow::Error>) -> PyErr {
    InterplabError::new_err(format!("{:#}", e.into()))
}

/// An [`InterplabError`] with this message.
pub(crate) fn py_msg(msg: impl Into<String>) -> PyErr {
    InterplabError::new_err(msg.into())
}

#[pymodule]
#[pyo3(name = "_interplab")]
fn interplab_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // As in the CLI (see crates/cli/src/main.rs): candle's elementwise pool parks idle workers
    // at once instead of spinning, which on two cores left a core to the gemm threads.
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "0");
    }
    m.add("InterplabError", m.py().get_type::<InterplabError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<model::Model>()?;
    m.add_class::<model::PyHookPoint>()?;
    m.add_class::<sae::PySae>()?;
    m.add_function(wrap_pyfunction!(model::load, m)?)?;
    m.add_function(wrap_pyfunction!(lab::lab_run, m)?)?;
    m.add_function(wrap_pyfunction!(lab::lab_experiments, m)?)?;
    m.add_function(wrap_pyfunction!(lab::lab_defaults, m)?)?;
    m.add_function(wrap_pyfunction!(sae::sae_load, m)?)?;
    Ok(())
}
