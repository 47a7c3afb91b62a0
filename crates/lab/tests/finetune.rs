//! `finetune`: fine-tuning creates an induction head in a tiny model that had none; a run
//! stopped mid-way resumes to the same weights bit for bit; the experiment runs end to end on
//! the real model; bad input is refused before anything is written.

use crate::common;

use interplab_analysis::heads::{head_scores, repeated_random_tokens, HeadKind, HeadScoreOptions};
use interplab_lab::finetune::Config;
use interplab_lab::Experiment;
use interplab_train::finetune::{FinetuneConfig, Finetuner};
use interplab_train::induction::{init_model, InductionConfig};

/// A stream of 48-token blocks, each a random chunk of 8–16 tokens (vocabulary 1..128) repeated
/// to fill the block, as the toy lab's induction data.
fn repeated_chunks(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = interplab_core::rng::SplitMix(seed);
    let mut out = Vec::new();
    for _ in 0..n {
        let len = 8 + (rng.next_u64() % 9) as usize;
        let chunk: Vec<u32> = (0..len)
            .map(|_| 1 + (rng.next_u64() % 127) as u32)
            .collect();
        out.extend(chunk.iter().cycle().take(48));
    }
    out
}

fn best_induction(model: &interplab_core::model::HookedTransformer) -> f64 {
    let pool: Vec<u32> = (1..128).collect();
    let seqs = repeated_random_tokens(&pool, 20, 16, 7, None).unwrap();
    let s = head_scores(
        model,
        &seqs,
        &[HeadKind::Induction],
        HeadScoreOptions::default(),
    )
    .unwrap();
    s[0].top_k(1)[0].2
}

/// The phase change comes near step 350 (seed 0); 600 leaves room.
const STEPS: usize = 600;
/// A perfect induction head's score on [`best_induction`]'s sequences (20 random tokens, then
/// the same 20, no BOS): the 20 second-half queries put all attention on their target, the 20
/// first-half queries have none.
const PERFECT_INDUCTION: f64 = 0.5;

#[test]
fn fine_tuning_on_repeated_text_builds_an_induction_head_that_was_not_there() {
    // The toy lab's two-layer attention-only model at initialisation, fine-tuned by the same
    // Finetuner that trains the real models, on text that only induction predicts.
    let base = init_model(&InductionConfig::default()).unwrap();
    let before = best_induction(&base);
    let stream = repeated_chunks(30_000, 1);
    let mut ft = Finetuner::new(
        &base,
        FinetuneConfig {
            steps: STEPS,
            batch: 32,
            seq_len: 48,
            lr: 3e-3,
            warmup: 10,
            weight_decay: 1.0,
            seed: 0,
            bf16_products: false,
        },
    )
    .unwrap();
    for _ in 0..STEPS {
        ft.train_step(&stream).unwrap();
    }
    let after = best_induction(&ft.model);
    assert!(
        before < 0.1 * PERFECT_INDUCTION,
        "an induction head before training: {before}"
    );
    assert!(
        after > 0.5 * PERFECT_INDUCTION,
        "no induction head after {STEPS} steps: {after} (before {before})"
    );
    // The loss shows the phase change: the last 50 steps are over 2 nats below the first 50.
    let mean = |r: &[f64]| r.iter().sum::<f64>() / r.len() as f64;
    let h = &ft.loss_history;
    assert!(
        mean(&h[..50]) - mean(&h[STEPS - 50..]) > 2.0,
        "{:?}",
        (mean(&h[..50]), mean(&h[STEPS - 50..]))
    );
    // The base model is untouched.
    assert_eq!(best_induction(&base), before);
}

#[test]
fn a_run_stopped_midway_resumes_to_the_same_weights() {
    let base = init_model(&InductionConfig {
        d_model: 16,
        ..Default::default()
    })
    .unwrap();
    let stream = repeated_chunks(200, 2);
    let cfg = FinetuneConfig {
        steps: 6,
        batch: 4,
        seq_len: 24,
        lr: 1e-3,
        warmup: 2,
        weight_decay: 0.01,
        seed: 3,
        bf16_products: false,
    };
    let mut straight = Finetuner::new(&base, cfg.clone()).unwrap();
    for _ in 0..6 {
        straight.train_step(&stream).unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("checkpoint.safetensors");
    let mut first = Finetuner::new(&base, cfg.clone()).unwrap();
    for _ in 0..3 {
        first.train_step(&stream).unwrap();
    }
    first.save(&ckpt).unwrap();
    drop(first);
    let mut resumed = Finetuner::resume(&base, cfg.clone(), &ckpt).unwrap();
    assert_eq!(resumed.step, 3);
    for _ in 0..3 {
        resumed.train_step(&stream).unwrap();
    }
    assert_eq!(resumed.loss_history, straight.loss_history);
    let a = straight.model.weights.named().unwrap();
    let b = resumed.model.weights.named().unwrap();
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let va: Vec<f32> = ta.flatten_all().unwrap().to_vec1().unwrap();
        let vb: Vec<f32> = tb.flatten_all().unwrap().to_vec1().unwrap();
        assert!(
            va.iter().zip(&vb).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{na} differs"
        );
    }
    // Another config, or a damaged file, is refused with a clear error.
    let other = FinetuneConfig {
        lr: 2e-3,
        ..cfg.clone()
    };
    let e = Finetuner::resume(&base, other, &ckpt)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("another config"), "{e}");
    std::fs::write(&ckpt, b"not a checkpoint").unwrap();
    let e = Finetuner::resume(&base, cfg, &ckpt)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not a safetensors checkpoint"), "{e}");
}

#[test]
fn the_experiment_runs_end_to_end_and_resumes() {
    // Stopped after 2 of 4 steps, then resumed in the same directory: the same results as a
    // run straight through.
    let tmp = tempfile::tempdir().unwrap();
    let straight = common::run_into(
        Config::quick().into(),
        &tmp.path().join("straight"),
        interplab_lab::Existing::Refuse,
        &mut interplab_lab::NoProgress,
    );
    let dir = tmp.path().join("stopped");
    let stopped = interplab_lab::rerun::run_to_dir(
        &Config {
            stop_after: Some(2),
            ..Config::quick()
        }
        .into(),
        Some(&dir),
        interplab_lab::Existing::Refuse,
        interplab_core::loader::WeightStorage::Dense,
        &mut |_| {},
        &mut interplab_lab::NoProgress,
    );
    let e = stopped.err().expect("the run stops after 2 steps");
    assert!(format!("{e:#}").contains("stopped at step 2"), "{e:#}");
    let r = |w: &interplab_lab::rerun::Written| w.outcome.results.clone();
    let resumed = common::run_into(
        Config::quick().into(),
        &dir,
        interplab_lab::Existing::Resume,
        &mut interplab_lab::NoProgress,
    );
    assert_eq!(r(&straight)["loss_history"], r(&resumed)["loss_history"]);
    assert_eq!(
        r(&straight)["head_weight_change"],
        r(&resumed)["head_weight_change"]
    );
    for f in [
        "report.html",
        "training_loss.png",
        "weight_change.svg",
        "checkpoint.safetensors",
    ] {
        assert!(straight.dir.join(f).is_file(), "{f}");
    }
}

#[test]
fn bad_input_is_refused_without_writing() {
    let mut cfg = Config::quick();
    cfg.train.lr = f64::INFINITY;
    cfg.train.seq_len = 1;
    cfg.held_out_every = 1;
    let e = cfg.validate().unwrap_err().to_string();
    for needle in [
        "lr must be a positive number",
        "seq_len must be at least 2",
        "held_out_every",
    ] {
        assert!(e.contains(needle), "{needle:?} missing from: {e}");
    }
    let e = common::refused_without_writing(
        Config {
            corpus: "/no/such/corpus.txt".into(),
            ..Config::quick()
        }
        .into(),
    );
    assert!(e.contains("/no/such/corpus.txt"), "{e}");
}

#[test]
fn bf16_products_train_like_f32_products() {
    let base = init_model(&InductionConfig {
        d_model: 16,
        ..Default::default()
    })
    .unwrap();
    let stream = repeated_chunks(2_000, 4);
    let run = |bf16_products| {
        let mut ft = Finetuner::new(
            &base,
            FinetuneConfig {
                steps: 60,
                batch: 8,
                seq_len: 24,
                lr: 3e-3,
                warmup: 5,
                weight_decay: 0.0,
                seed: 1,
                bf16_products,
            },
        )
        .unwrap();
        for _ in 0..60 {
            ft.train_step(&stream).unwrap();
        }
        ft.loss_history
    };
    let (f32_run, bf16_run) = (run(false), run(true));
    // Step 0 sees the same weights and batch: the products' inputs differ by bf16 rounding
    // only (at most 2⁻⁹ relative each), so the losses agree to well under 1%.
    let rel = (f32_run[0] - bf16_run[0]).abs() / f32_run[0];
    assert!(
        rel < 0.01,
        "first losses {} and {}",
        f32_run[0],
        bf16_run[0]
    );
    assert_ne!(f32_run[0], bf16_run[0], "the bf16 products were not used");
    // Both runs learn, and the bf16 one at least half as much as the f32 one.
    let mean = |h: &[f64]| h.iter().sum::<f64>() / h.len() as f64;
    let drop = |h: &[f64]| mean(&h[..5]) - mean(&h[h.len() - 5..]);
    assert!(drop(&f32_run) > 0.0, "{f32_run:?}");
    assert!(
        drop(&bf16_run) > 0.5 * drop(&f32_run),
        "f32 {f32_run:?}\nbf16 {bf16_run:?}"
    );
}
