//! OV and QK circuits, and Q-, K- and V-composition scores (Elhage et al. 2021, "A Mathematical
//! Framework for Transformer Circuits"; TransformerLens `all_composition_scores`).
//!
//! With a head's OV circuit `W_V W_O` and QK circuit `W_Q W_Kᵀ` (both `d_model × d_model`,
//! acting on row vectors), the composition of an earlier head 1 into a later head 2 is
//!
//! `‖M1 · M2‖_F / (‖M1‖_F ‖M2‖_F)` with `M1 = OV₁` and
//! `M2 = QK₂` (Q-composition), `QK₂ᵀ` (K-composition) or `OV₂` (V-composition).
//!
//! Every matrix is kept factored, `M = A B` with thin `A: [d_model, r]`, `B: [r, d_model]`, and
//! no `d_model × d_model` product is ever formed: with `G = AᵀA`, `H = BBᵀ` (`r × r`),
//! `‖A B‖²_F = tr(G H)` and, for `C = B₁ A₂` (`r × r`), `‖A₁ B₁ A₂ B₂‖²_F = tr(Cᵀ G₁ C H₂)`.
//! Grouped-query attention: a query head's `W_K`, `W_V` are those of its key-value group.
//! Scores are zero where the later head is not in a later layer.

use candle_core::{DType, Device, Tensor};
use interplab_core::model::HookedTransformer;
use interplab_core::rng::SplitMix;
use interplab_core::{Error, Result};
use serde::Serialize;

/// Which input of the later head the earlier head's output feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CompositionKind {
    Q,
    K,
    V,
}

impl CompositionKind {
    /// All kinds.
    pub const ALL: [CompositionKind; 3] =
        [CompositionKind::Q, CompositionKind::K, CompositionKind::V];

    /// `q`, `k` or `v`.
    pub fn name(self) -> &'static str {
        match self {
            CompositionKind::Q => "q",
            CompositionKind::K => "k",
            CompositionKind::V => "v",
        }
    }
}

/// One head's circuits as thin factors (f64 would be exact-er; f32 keeps the sweep fast and the
/// test holds it to the dense computation within 1e-5).
struct HeadFactors {
    /// `W_V`, `W_O`: OV = `W_V W_O`.
    w_v: Tensor,
    w_o: Tensor,
    /// `W_Q`, `W_K`: QK = `W_Q W_Kᵀ`.
    w_q: Tensor,
    w_k: Tensor,
}

/// Composition scores of every (earlier head → later head) pair.
#[derive(Debug, Clone, Serialize)]
pub struct CompositionScores {
    pub kind: CompositionKind,
    pub n_layers: usize,
    pub n_heads: usize,
    /// `[l1][h1][l2][h2]`, row-major; zero unless `l1 < l2`.
    pub scores: Vec<f64>,
}

impl CompositionScores {
    /// The score of head (l1, h1) composing into (l2, h2).
    pub fn get(&self, l1: usize, h1: usize, l2: usize, h2: usize) -> f64 {
        let (l, h) = (self.n_layers, self.n_heads);
        self.scores[((l1 * h + h1) * l + l2) * h + h2]
    }

    /// The earlier head that composes most strongly into (l2, h2), with its score.
    pub fn strongest_partner(&self, l2: usize, h2: usize) -> Option<(usize, usize, f64)> {
        let mut best: Option<(usize, usize, f64)> = None;
        for l1 in 0..l2 {
            for h1 in 0..self.n_heads {
                let s = self.get(l1, h1, l2, h2);
                if best.is_none_or(|b| s > b.2) {
                    best = Some((l1, h1, s));
                }
            }
        }
        best
    }

    /// The `k` strongest pairs as (l1, h1, l2, h2, score).
    pub fn top_k(&self, k: usize) -> Vec<(usize, usize, usize, usize, f64)> {
        let (l, h) = (self.n_layers, self.n_heads);
        let mut all = Vec::new();
        for l1 in 0..l {
            for h1 in 0..h {
                for l2 in l1 + 1..l {
                    for h2 in 0..h {
                        all.push((l1, h1, l2, h2, self.get(l1, h1, l2, h2)));
                    }
                }
            }
        }
        all.sort_by(|a, b| b.4.total_cmp(&a.4));
        all.truncate(k);
        all
    }
}

fn head_factors(model: &HookedTransformer) -> Result<Vec<Vec<HeadFactors>>> {
    let c = &model.cfg;
    let rep = c.kv_repeat();
    model
        .weights
        .blocks
        .iter()
        .map(|b| {
            let a = &b.attn;
            let (wq, wk, wv, wo) = (
                a.w_q_heads(c.n_heads)?.to_dtype(DType::F32)?,
                a.w_k_heads(c.n_kv_heads)?.to_dtype(DType::F32)?,
                a.w_v_heads(c.n_kv_heads)?.to_dtype(DType::F32)?,
                a.w_o_heads(c.n_heads)?.to_dtype(DType::F32)?,
            );
            (0..c.n_heads)
                .map(|h| {
                    Ok(HeadFactors {
                        w_v: wv.get(h / rep)?,
                        w_o: wo.get(h)?,
                        w_q: wq.get(h)?,
                        w_k: wk.get(h / rep)?,
                    })
                })
                .collect()
        })
        .collect()
}

/// `(A, B)` of the later head's matrix for `kind`.
fn right_factors(f: &HeadFactors, kind: CompositionKind) -> Result<(Tensor, Tensor)> {
    Ok(match kind {
        CompositionKind::Q => (f.w_q.clone(), f.w_k.t()?.contiguous()?),
        CompositionKind::K => (f.w_k.clone(), f.w_q.t()?.contiguous()?),
        CompositionKind::V => (f.w_v.clone(), f.w_o.clone()),
    })
}

/// `AᵀA` and `BBᵀ`.
fn grams(a: &Tensor, b: &Tensor) -> Result<(Tensor, Tensor)> {
    Ok((a.t()?.matmul(a)?, b.matmul(&b.t()?)?))
}

/// tr(X Y) for square X, Y: Σ X ⊙ Yᵀ.
fn trace_prod(x: &Tensor, y: &Tensor) -> Result<f64> {
    Ok((x * y.t()?)?
        .to_dtype(DType::F64)?
        .sum_all()?
        .to_scalar::<f64>()?)
}

/// ‖A₁B₁ · A₂B₂‖_F / (‖A₁B₁‖_F ‖A₂B₂‖_F) for many right-hand factor pairs at once:
/// `a2s: [N, d, r2]`, `h2s = B₂B₂ᵀ: [N, r2, r2]`, `n2s = ‖A₂B₂‖_F: [N]`.
fn scores_against(
    a1: &Tensor,
    b1: &Tensor,
    a2s: &Tensor,
    h2s: &Tensor,
    n2s: &[f64],
) -> Result<Vec<f64>> {
    let (g1, h1) = grams(a1, b1)?;
    let n1 = trace_prod(&g1, &h1)?.max(0.0).sqrt();
    let n = a2s.dim(0)?;
    // C = B₁ A₂: [N, r1, r2]
    let c = b1
        .unsqueeze(0)?
        .broadcast_as((n, b1.dim(0)?, b1.dim(1)?))?
        .contiguous()?
        .matmul(a2s)?;
    // tr(Cᵀ G₁ C H₂) = Σ (G₁ C H₂) ⊙ C
    let g1c = g1
        .unsqueeze(0)?
        .broadcast_as((n, g1.dim(0)?, g1.dim(1)?))?
        .contiguous()?
        .matmul(&c)?;
    let num2: Vec<f32> = (g1c.matmul(h2s)? * &c)?.sum((1, 2))?.to_vec1()?;
    Ok(num2
        .iter()
        .zip(n2s)
        .map(|(&x, &n2)| {
            let den = n1 * n2;
            if den > 0.0 {
                (x as f64).max(0.0).sqrt() / den
            } else {
                0.0
            }
        })
        .collect())
}

/// Composition scores of `kind` for every pair of heads in different layers.
pub fn composition_scores(
    model: &HookedTransformer,
    kind: CompositionKind,
) -> Result<CompositionScores> {
    let (nl, nh) = (model.cfg.n_layers, model.cfg.n_heads);
    if nl < 2 {
        return Err(Error::Input("composition needs at least two layers".into()));
    }
    let f = head_factors(model)?;
    let mut scores = vec![0f64; nl * nh * nl * nh];
    // Right-hand factors of every head, grouped per layer, with their Gram matrices and norms.
    let mut right: Vec<(Tensor, Tensor, Vec<f64>)> = Vec::new();
    for layer in &f {
        let mut a2s = Vec::new();
        let mut h2s = Vec::new();
        let mut norms = Vec::new();
        for hf in layer {
            let (a2, b2) = right_factors(hf, kind)?;
            let (g2, h2) = grams(&a2, &b2)?;
            norms.push(trace_prod(&g2, &h2)?.max(0.0).sqrt());
            a2s.push(a2);
            h2s.push(h2);
        }
        right.push((Tensor::stack(&a2s, 0)?, Tensor::stack(&h2s, 0)?, norms));
    }
    for l1 in 0..nl - 1 {
        // All later layers' heads as one batch.
        let a2s = Tensor::cat(
            &right[l1 + 1..]
                .iter()
                .map(|r| r.0.clone())
                .collect::<Vec<_>>(),
            0,
        )?;
        let h2s = Tensor::cat(
            &right[l1 + 1..]
                .iter()
                .map(|r| r.1.clone())
                .collect::<Vec<_>>(),
            0,
        )?;
        let n2s: Vec<f64> = right[l1 + 1..]
            .iter()
            .flat_map(|r| r.2.iter().copied())
            .collect();
        for h1 in 0..nh {
            let s = scores_against(&f[l1][h1].w_v, &f[l1][h1].w_o, &a2s, &h2s, &n2s)?;
            for (i, v) in s.into_iter().enumerate() {
                let (l2, h2) = (l1 + 1 + i / nh, i % nh);
                scores[((l1 * nh + h1) * nl + l2) * nh + h2] = v;
            }
        }
    }
    Ok(CompositionScores {
        kind,
        n_layers: nl,
        n_heads: nh,
        scores,
    })
}

/// The mean score of `kind` between random Gaussian factors of the model's shapes (`samples`
/// draws, seeded): the level a score must clear to mean anything (≈ 1/√rank-ish for thin
/// random factors, not 0).
pub fn random_baseline(d_model: usize, d_head: usize, samples: usize, seed: u64) -> Result<f64> {
    let mut rng = SplitMix::new(seed);
    let dev = Device::Cpu;
    let mut gauss = |r: usize, c: usize| -> Result<Tensor> {
        let v: Vec<f32> = (0..r * c).map(|_| rng.normal() as f32).collect();
        Ok(Tensor::from_vec(v, (r, c), &dev)?)
    };
    let mut total = 0.0;
    for _ in 0..samples.max(1) {
        let (a1, b1) = (gauss(d_model, d_head)?, gauss(d_head, d_model)?);
        let (a2, b2) = (gauss(d_model, d_head)?, gauss(d_head, d_model)?);
        let (g2, h2) = grams(&a2, &b2)?;
        let n2 = trace_prod(&g2, &h2)?.sqrt();
        total += scores_against(&a1, &b1, &a2.unsqueeze(0)?, &h2.unsqueeze(0)?, &[n2])?[0];
    }
    Ok(total / samples.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frob(t: &Tensor) -> f64 {
        t.to_dtype(DType::F64)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
            .sqrt()
    }

    #[test]
    fn factored_equals_dense() {
        let mut rng = SplitMix::new(5);
        let dev = Device::Cpu;
        let mut g = |r: usize, c: usize| {
            let v: Vec<f32> = (0..r * c).map(|_| rng.normal() as f32).collect();
            Tensor::from_vec(v, (r, c), &dev).unwrap()
        };
        let (d, r) = (24, 4);
        let (a1, b1, a2, b2) = (g(d, r), g(r, d), g(d, r), g(r, d));
        // Dense, only here: d × d products.
        let m1 = a1.matmul(&b1).unwrap();
        let m2 = a2.matmul(&b2).unwrap();
        let dense = frob(&m1.matmul(&m2).unwrap()) / (frob(&m1) * frob(&m2));
        let (g2, h2) = grams(&a2, &b2).unwrap();
        let n2 = trace_prod(&g2, &h2).unwrap().sqrt();
        let fact = scores_against(
            &a1,
            &b1,
            &a2.unsqueeze(0).unwrap(),
            &h2.unsqueeze(0).unwrap(),
            &[n2],
        )
        .unwrap()[0];
        assert!((dense - fact).abs() < 1e-5, "dense {dense} factored {fact}");
    }
}
