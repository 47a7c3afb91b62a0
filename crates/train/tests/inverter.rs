//! Activation inverter: the hand-written backward against finite differences of an independent
//! loss, and, on the real SmolLM2-135M, a case whose answer is known by construction.
//!
//! The known answer: `blocks.0.hook_resid_pre` of a Llama-family model is exactly the token
//! embedding `W_E[token]` (no positional embedding is added), so every occurrence of a token
//! has the same activation, and distinct tokens have distinct rows. A linear layer with bias can
//! then implement nearest-neighbour lookup among the training rows exactly
//! (`w_c = x_c`, `b_c = −‖x_c‖²/2` gives `score_c(x) = −‖x − x_c‖²/2 + ‖x‖²/2`), so the best
//! attainable accuracy on held-out positions whose token was seen in training is 1, and
//! softmax regression, whose cross-entropy keeps falling while any training row is
//! misclassified, approaches it. A deep layer mixes context into the position and its accuracy
//! is lower.

use candle_core::Device;
use interplab_core::corpus::load_corpus;
use interplab_core::loader::load;
use interplab_core::rng::SplitMix;
use interplab_train::inverter::{
    collect_activations, hook_name, loss_and_grad, split_documents, train_layer, InverterConfig,
    Problem,
};

/// Mean cross-entropy in f64, written independently of the hand-written pass.
fn loss_ref(p: &[f64], d: usize, h: usize, c: usize, x: &[f64], y: &[u32]) -> f64 {
    let b = y.len();
    let mut total = 0.0;
    for (xi, &yi) in x.chunks_exact(d).zip(y) {
        let feats: Vec<f64> = if h == 0 {
            xi.to_vec()
        } else {
            let (w1, b1) = (&p[..d * h], &p[d * h..d * h + h]);
            (0..h)
                .map(|j| (b1[j] + (0..d).map(|k| xi[k] * w1[k * h + j]).sum::<f64>()).max(0.0))
                .collect()
        };
        let off = if h == 0 { 0 } else { d * h + h };
        let dd = feats.len();
        let (w, bias) = (&p[off..off + dd * c], &p[off + dd * c..]);
        let logits: Vec<f64> = (0..c)
            .map(|j| bias[j] + (0..dd).map(|k| feats[k] * w[k * c + j]).sum::<f64>())
            .collect();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
        total += lse - logits[yi as usize];
    }
    total / b as f64
}

#[test]
fn gradients_match_finite_differences() {
    let (d, c, b) = (5, 7, 6);
    let mut rng = SplitMix::new(4);
    for h in [0, 4] {
        let n = if h == 0 {
            d * c + c
        } else {
            d * h + h + h * c + c
        };
        let p: Vec<f64> = (0..n).map(|_| rng.normal() * 0.7).collect();
        let x: Vec<f64> = (0..b * d).map(|_| rng.normal()).collect();
        let y: Vec<u32> = (0..b).map(|_| rng.below(c as u64) as u32).collect();
        let (loss, g) = loss_and_grad(&p, d, h, c, &x, &y).unwrap();
        let want = loss_ref(&p, d, h, c, &x, &y);
        assert!((loss - want).abs() < 1e-12, "loss {loss} vs {want}");
        for i in 0..n {
            let eps = 1e-6;
            let (mut a, mut m) = (p.clone(), p.clone());
            a[i] += eps;
            m[i] -= eps;
            let fd = (loss_ref(&a, d, h, c, &x, &y) - loss_ref(&m, d, h, c, &x, &y)) / (2.0 * eps);
            // Central differences in f64 are accurate to ~1e-9 here (ReLU kinks aside, which
            // random inputs avoid with probability 1).
            assert!(
                (fd - g[i]).abs() < 1e-6 * (1.0 + fd.abs()),
                "hidden {h}, param {i}: finite difference {fd}, backward {}",
                g[i]
            );
        }
    }
}

#[test]
fn layer0_recovers_every_seen_token_and_the_final_residual_less() {
    let t0 = std::time::Instant::now();
    let m = load("smollm2-135m", &Device::Cpu, &mut |_| {}).expect("loading smollm2-135m");
    eprintln!("loaded in {:?}", t0.elapsed());
    let docs = load_corpus("sonnets").unwrap();
    let docs = &docs[..8];
    // 100 steps of batch 256 (about 25 epochs of these ~1,000 training positions).
    let cfg = InverterConfig {
        layers: vec![0, 30],
        min_steps: 100,
        ..Default::default()
    };
    let (_, test_docs) = split_documents(docs.len(), cfg.test_fraction, cfg.seed).unwrap();
    let seqs: Vec<Vec<u32>> = docs
        .iter()
        .map(|t| {
            m.tokenizer
                .encode(t, m.tokenizer.add_bos_default())
                .unwrap()
        })
        .collect();
    let test: Vec<bool> = (0..docs.len()).map(|i| test_docs.contains(&i)).collect();
    let hooks: Vec<String> = cfg
        .layers
        .iter()
        .map(|&l| hook_name(&m.model, &cfg.hook, l).unwrap())
        .collect();
    let ex = collect_activations(&m.model, &seqs, &test, &hooks, &cfg, &mut |_| {}).unwrap();
    eprintln!(
        "{} positions through the model at {:?}",
        ex.token.len(),
        t0.elapsed()
    );
    // The premise: layer 0's activation is the embedding row of the input token, exactly.
    let w_e = m.model.weights.w_e.to_vec2::<f32>().unwrap();
    for (i, &t) in ex.token.iter().enumerate() {
        assert_eq!(
            &ex.acts[0][i * ex.width..(i + 1) * ex.width],
            &w_e[t as usize][..]
        );
    }
    let prob = Problem::new(&ex, 5, 1, 4);
    let mut distinct: Vec<&[f32]> = prob
        .classes
        .tokens
        .iter()
        .map(|&t| &w_e[t as usize][..])
        .collect();
    distinct.sort_by(|a, b| a.partial_cmp(b).unwrap());
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        prob.classes.len(),
        "two tokens share an embedding row"
    );

    let (_, r0) = train_layer(&cfg, &ex, 0, 0, &hooks[0], &prob, &mut |_, _| {}).unwrap();
    let (_, rd) = train_layer(&cfg, &ex, 1, 30, &hooks[1], &prob, &mut |_, _| {}).unwrap();
    let b = &prob.baselines;
    eprintln!("trained at {:?}", t0.elapsed());
    eprintln!(
        "layer 0: {:?} seen {:?}; layer 30: {:?} seen {:?}; baselines {b:?}",
        r0.test, r0.test_seen, rd.test, rd.test_seen
    );
    // Known answer 1; 0.99 leaves room for at most 1 in 100 seen positions whose (rare) token
    // the finite training has not yet separated.
    assert!(
        r0.test_seen.n > 100,
        "too few held-out positions: {}",
        r0.test_seen.n
    );
    assert!(
        r0.test_seen.top1 >= 0.99,
        "layer 0 seen-token accuracy {:?}",
        r0.test_seen
    );
    // Far above chance: the gap to always answering the most frequent token is more than five
    // binomial standard errors.
    let n = r0.test.n as f64;
    let se = |p: f64| (p * (1.0 - p) / n).sqrt();
    assert!(
        r0.test.top1 - b.frequent_top1 > 5.0 * se(b.frequent_top1).max(se(r0.test.top1)),
        "layer 0 {:?} vs most frequent {}",
        r0.test,
        b.frequent_top1
    );
    // The deep layer is lower by more than three standard errors of the difference.
    let diff_se = (se(r0.test.top1).powi(2) + se(rd.test.top1).powi(2)).sqrt();
    assert!(
        r0.test.top1 - rd.test.top1 > 3.0 * diff_se,
        "layer 0 {} vs layer 30 {} (se {diff_se})",
        r0.test.top1,
        rd.test.top1
    );
    // Tokens never seen in training cannot be guessed by either.
    assert!(r0.test.top1 <= b.seen_fraction + 1e-12 && rd.test.top1 <= b.seen_fraction + 1e-12);
}
