//! The fused AdamW of [`crate::optim`] over candle [`Var`]s: the front end for models trained
//! with candle autograd (the hooked transformer after `make_trainable`).
//!
//! One step reads each Var's gradient from the [`GradStore`] and updates the Var's storage in
//! place with the slice AdamW (a candle in-place custom op on CPU f32, no tensor is allocated);
//! on other devices or dtypes the parameter is read out, updated and written back with
//! [`Var::set`]. A Var without a gradient (unused by the loss) still takes the step with a zero
//! gradient, as PyTorch does for a parameter whose `.grad` is zero: its weight decays.

use std::cell::RefCell;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Layout, Tensor, Var};
use interplab_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::optim::{AdamW, AdamWConfig};

/// AdamW over named Vars, one moment buffer per Var.
#[derive(Debug)]
pub struct VarAdamW {
    vars: Vec<(String, Var)>,
    states: Vec<AdamW>,
}

/// The optimiser's state without the Vars, for checkpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VarAdamWState {
    /// Per Var, in the optimiser's order: its name and moments.
    pub states: Vec<(String, AdamW)>,
}

impl VarAdamW {
    /// Fresh moments for `vars`.
    pub fn new(vars: Vec<(String, Var)>, cfg: AdamWConfig) -> VarAdamW {
        let states = vars
            .iter()
            .map(|(_, v)| AdamW::new(cfg, v.elem_count()))
            .collect();
        VarAdamW { vars, states }
    }

    /// Re-attach saved moments to `vars` (same names, order and sizes).
    pub fn from_state(vars: Vec<(String, Var)>, state: VarAdamWState) -> Result<VarAdamW> {
        if vars.len() != state.states.len() {
            return Err(Error::Input(format!(
                "optimiser state has {} parameters, the model {}",
                state.states.len(),
                vars.len()
            )));
        }
        let mut states = Vec::with_capacity(vars.len());
        for ((name, var), (sname, s)) in vars.iter().zip(state.states) {
            if *name != sname || s.m.len() != var.elem_count() || s.v.len() != s.m.len() {
                return Err(Error::Input(format!(
                    "optimiser state for {sname} ({} values) does not fit parameter {name} ({} values)",
                    s.m.len(),
                    var.elem_count()
                )));
            }
            states.push(s);
        }
        Ok(VarAdamW { vars, states })
    }

    /// The state to save.
    pub fn state(&self) -> VarAdamWState {
        VarAdamWState {
            states: self
                .vars
                .iter()
                .map(|(n, _)| n.clone())
                .zip(self.states.iter().cloned())
                .collect(),
        }
    }

    /// The Vars, with their names.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// Set the learning rate of every Var's next step (schedules).
    pub fn set_lr(&mut self, lr: f64) {
        for s in &mut self.states {
            s.cfg.lr = lr;
        }
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.states.first().map_or(0, |s| s.t)
    }

    /// One AdamW step of every Var from `grads`.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        for ((_, var), opt) in self.vars.iter().zip(self.states.iter_mut()) {
            let grad = match grads.get(var.as_tensor()) {
                Some(g) => g.clone(),
                None => var.zeros_like()?,
            };
            step_var(var, &grad, opt)?;
        }
        Ok(())
    }
}

/// One AdamW step of one Var.
fn step_var(var: &Var, grad: &Tensor, opt: &mut AdamW) -> Result<()> {
    if grad.dims() != var.dims() {
        return Err(Error::Input(format!(
            "gradient shape {:?} differs from the parameter's {:?}",
            grad.dims(),
            var.dims()
        )));
    }
    let t = var.as_tensor();
    if t.device().is_cpu()
        && t.dtype() == DType::F32
        && grad.dtype() == DType::F32
        && t.is_contiguous()
    {
        let grad = grad.contiguous()?;
        let op = InPlaceStep {
            opt: RefCell::new(opt),
        };
        t.inplace_op2(&grad, &op)?;
        return Ok(());
    }
    // Other devices and dtypes: through f32 host buffers.
    let mut p: Vec<f32> = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
    let g: Vec<f32> = grad.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
    opt.step(&mut p, &g);
    let new = Tensor::from_vec(p, t.dims(), t.device())?.to_dtype(t.dtype())?;
    var.set(&new)?;
    Ok(())
}

/// The slice AdamW as a candle in-place op on the parameter's storage.
struct InPlaceStep<'a> {
    opt: RefCell<&'a mut AdamW>,
}

impl candle_core::InplaceOp2 for InPlaceStep<'_> {
    fn name(&self) -> &'static str {
        "adamw-step"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(p), CpuStorage::F32(g)) = (s1, s2) else {
            candle_core::bail!("adamw-step wants f32 parameters and gradients")
        };
        let (Some((p0, p1)), Some((g0, g1))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("adamw-step wants contiguous parameters and gradients")
        };
        self.opt.borrow_mut().step(&mut p[p0..p1], &g[g0..g1]);
        Ok(())
    }
}
