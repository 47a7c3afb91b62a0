//! The induction trainer: three training steps against TransformerLens and
//! torch.optim.AdamW, the training loss's gradients against finite differences, bit-exact
//! resume, bad input, and the repeated-data format. Whether trained models form induction heads
//! is checked through the experiment itself, in `crates/lab/tests/induction.rs`.

use candle_core::{DType, Device, Tensor};
use interplab_core::model::{next_token_loss, Input, RunOptions};
use interplab_train::checkpoint;
use interplab_train::induction::{
    eval_batch, init_model, Data, DataConfig, InductionConfig, TrainState, Trainer,
};
use interplab_train::optim::{AdamW, AdamWConfig};
use interplab_train::optim_var::VarAdamWState;

/// Run `f` on a local one-thread rayon pool: these models are too small to split, and at 2
/// threads on a busy 2-core machine the 2-layer run took 4× longer (rayon oversubscription,
/// DESIGN.md). A local pool, not `RAYON_NUM_THREADS`: setting the environment while other tests
/// run is a data race.
fn on_one_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool")
        .install(f)
}

/// Loss of `model` (f64) with one element of `name` moved by `delta`.
fn loss_moved(
    model: &interplab_core::model::HookedTransformer,
    name: &str,
    index: usize,
    delta: f64,
    tokens: &Tensor,
) -> f64 {
    let mut m = model.clone();
    m.weights = m.weights.with_element_moved(name, index, delta).unwrap();
    let (logits, _) = m
        .run(Input::Tokens(tokens), &RunOptions::default(), None, None)
        .unwrap();
    next_token_loss(&logits, tokens)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

#[test]
fn training_loss_gradients_match_finite_differences() {
    for layer_norm in [true, false] {
        let cfg = InductionConfig {
            n_layers: 2,
            d_model: 16,
            batch: 3,
            layer_norm,
            // Larger weights than the default init so attention is far from uniform.
            init_std: Some(0.5),
            ..Default::default()
        };
        let data = Data::new(&cfg, None).unwrap();
        let tr = Trainer::new(cfg.clone()).unwrap();
        let tokens = tr.batch(&data, 0).unwrap();
        let model = init_model(&cfg).unwrap().to_dtype(DType::F64).unwrap();
        let mut trainable = model.clone();
        let vars = trainable.weights.make_trainable().unwrap();
        let (logits, _) = trainable
            .run(Input::Tokens(&tokens), &RunOptions::default(), None, None)
            .unwrap();
        let grads = next_token_loss(&logits, &tokens)
            .unwrap()
            .backward()
            .unwrap();
        let mut names = vec![
            "embed.W_E",
            "pos_embed.W_pos",
            "blocks.0.attn.W_Q",
            "blocks.0.attn.W_K",
            "blocks.0.attn.W_V",
            "blocks.1.attn.W_K",
            "blocks.1.attn.W_O",
            "unembed.W_U",
        ];
        if layer_norm {
            names.extend(["blocks.1.ln1.w", "blocks.0.ln1.b", "ln_final.w"]);
        }
        for name in names {
            let var = &vars.iter().find(|(n, _)| n == name).unwrap().1;
            let g: Vec<f64> = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"))
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let scale = g.iter().fold(0f64, |a, x| a.max(x.abs()));
            assert!(scale > 0.0, "{name}: zero gradient");
            // Elements the batch uses (rows of W_E for absent tokens have zero gradient).
            let mut idx: Vec<usize> = (0..g.len()).filter(|&i| g[i] != 0.0).collect();
            let n = idx.len();
            idx = vec![idx[0], idx[n / 3], idx[n / 2], idx[n - 1]];
            for i in idx {
                let eps = 1e-5;
                let fd = (loss_moved(&model, name, i, eps, &tokens)
                    - loss_moved(&model, name, i, -eps, &tokens))
                    / (2.0 * eps);
                assert!(
                    (fd - g[i]).abs() < 1e-7 + 1e-4 * scale,
                    "layer_norm {layer_norm} {name}[{i}]: autograd {} vs finite difference {fd}",
                    g[i]
                );
            }
        }
    }
}

fn params(tr: &Trainer) -> Vec<(String, Vec<u32>)> {
    tr.state()
        .unwrap()
        .params
        .into_iter()
        .map(|(n, _, v)| (n, v.iter().map(|x| x.to_bits()).collect()))
        .collect()
}

#[test]
fn resumed_training_ends_with_the_same_weights() {
    let cfg = InductionConfig {
        d_model: 16,
        batch: 4,
        steps: 30,
        lr: 1e-2,
        ..Default::default()
    };
    let data = Data::new(&cfg, None).unwrap();
    let mut whole = Trainer::new(cfg.clone()).unwrap();
    whole.train(&data, 30, &mut |_, _| {}).unwrap();
    let mut part = Trainer::new(cfg.clone()).unwrap();
    part.train(&data, 12, &mut |_, _| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint.json");
    checkpoint::save(&path, &part.state().unwrap()).unwrap();
    drop(part);
    let mut resumed = Trainer::from_state(checkpoint::load::<TrainState>(&path).unwrap()).unwrap();
    assert_eq!(resumed.step, 12);
    resumed.train(&data, 100, &mut |_, _| {}).unwrap();
    assert_eq!(resumed.step, 30);
    assert_eq!(params(&resumed), params(&whole));
    assert_eq!(resumed.loss_history, whole.loss_history);
    // And training moved the weights at all.
    let fresh = Trainer::new(cfg).unwrap();
    assert_ne!(params(&fresh), params(&whole));
}

#[test]
fn bad_configurations_and_states_are_errors() {
    let ok = InductionConfig::default();
    let bad = [
        InductionConfig {
            d_model: 50,
            ..ok.clone()
        },
        InductionConfig {
            n_layers: 0,
            ..ok.clone()
        },
        InductionConfig {
            lr: -1.0,
            ..ok.clone()
        },
        InductionConfig {
            n_ctx: 40,
            ..ok.clone()
        },
        InductionConfig {
            data: DataConfig::Repeated {
                seq_len: 16,
                min_seq_len: 17,
                repeats: 3,
            },
            ..ok.clone()
        },
    ];
    for c in bad {
        assert!(Trainer::new(c.clone()).is_err(), "{c:?} accepted");
    }
    // Text too short for its windows, and tokens outside the vocabulary.
    let text = InductionConfig {
        n_ctx: 64,
        data: DataConfig::Text { source: "t".into() },
        ..ok.clone()
    };
    assert!(Data::new(&text, Some(vec![1; 100])).is_err());
    assert!(Data::new(&text, Some(vec![200; 10_000])).is_err());
    assert!(Data::new(&text, None).is_err());
    // A state whose parameters do not fit its configuration.
    let mut st = Trainer::new(InductionConfig {
        d_model: 16,
        ..ok.clone()
    })
    .unwrap()
    .state()
    .unwrap();
    st.cfg.d_model = 32;
    assert!(Trainer::from_state(st.clone()).is_err());
    st.cfg.d_model = 16;
    st.params.pop();
    assert!(Trainer::from_state(st).is_err());
}

#[test]
fn repeated_data_varies_the_period_and_evaluation_uses_the_full_chunk() {
    let cfg = InductionConfig::default();
    let data = Data::new(&cfg, None).unwrap();
    let period = |s: &[u32]| (1..=s.len()).find(|&p| (p..s.len()).all(|i| s[i] == s[i - p]));
    let tr = Trainer::new(cfg.clone()).unwrap();
    let b: Vec<u32> = tr
        .batch(&data, 3)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let periods: Vec<usize> = b.chunks(48).filter_map(period).collect();
    assert!(periods.iter().all(|p| (1..=16).contains(p)), "{periods:?}");
    assert!(periods.iter().any(|&p| p != periods[0]), "{periods:?}");
    for s in eval_batch(&cfg, &data, 8) {
        assert_eq!((s.len(), &s[..16]), (48, &s[32..]));
    }
    // Same step, same batch; another step, another batch.
    assert_eq!(
        tr.batch(&data, 3).unwrap().to_vec2::<u32>().unwrap(),
        b.chunks(48).map(|c| c.to_vec()).collect::<Vec<_>>()
    );
    assert_ne!(
        tr.batch(&data, 4)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<u32>()
            .unwrap(),
        b
    );
}

/// Three training steps against TransformerLens' HookedTransformer (attn-only, LayerNorm) and
/// torch.optim.AdamW on the same weights and batches
/// (`scripts/train/induction_step_reference.py`): the loss before each step and the weights
/// after the third.
#[test]
fn three_steps_match_transformer_lens() {
    on_one_thread(|| {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/induction_steps_tl.safetensors");
        let r = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        let cfg = InductionConfig {
            n_layers: 2,
            d_model: 16,
            n_heads: 4,
            d_vocab: 32,
            n_ctx: 12,
            layer_norm: true,
            data: DataConfig::Repeated {
                seq_len: 4,
                min_seq_len: 4,
                repeats: 3,
            },
            steps: 3,
            batch: 3,
            lr: 1e-2,
            weight_decay: 1.0,
            ..Default::default()
        };
        let names: Vec<(String, usize)> = init_model(&cfg)
            .unwrap()
            .weights
            .named()
            .unwrap()
            .into_iter()
            .map(|(n, t)| (n, t.elem_count()))
            .collect();
        let flat = |key: String| -> Vec<f32> { r[&key].flatten_all().unwrap().to_vec1().unwrap() };
        let params = names
            .iter()
            .map(|(name, _)| {
                let key = format!("init.{name}");
                (name.clone(), r[&key].dims().to_vec(), flat(key))
            })
            .collect();
        let adamw = AdamWConfig {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1.0,
        };
        let state = TrainState {
            cfg: cfg.clone(),
            step: 0,
            loss_history: vec![],
            params,
            opt: VarAdamWState {
                states: names
                    .iter()
                    .map(|(n, len)| (n.clone(), AdamW::new(adamw, *len)))
                    .collect(),
            },
        };
        let mut tr = Trainer::from_state(state).unwrap();
        let tokens = r["tokens"].to_dtype(DType::U32).unwrap();
        let want_losses: Vec<f32> = r["losses"].to_vec1().unwrap();
        for (s, want) in want_losses.iter().enumerate() {
            let loss = tr.step_on(&tokens.get(s).unwrap()).unwrap();
            assert!(
                (loss - *want as f64).abs() < 1e-5,
                "step {s}: loss {loss} vs TransformerLens {want}"
            );
        }
        for (name, t) in tr.model.weights.named().unwrap() {
            let got: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            let want = flat(format!("final.{name}"));
            let init = flat(format!("init.{name}"));
            let moved = init
                .iter()
                .zip(&want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(moved > 1e-3, "{name} did not move in torch");
            for (i, (a, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - w).abs() < 2e-5,
                    "{name}[{i}]: {a} vs TransformerLens {w} (moved up to {moved})"
                );
            }
        }
    })
}
