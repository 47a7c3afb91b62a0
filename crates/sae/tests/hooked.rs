//! An SAE attached to SmolLM2-135M as hook points (the committed quick SAE, TopK k = 16 at
//! `blocks.3.hook_resid_post`): the attachment leaves the model unchanged until a point is
//! hooked, its codes are the SAE's, ablating a latent equals removing its decoder contribution
//! at the host, and steering along a decoder direction adds exactly that vector.

use candle_core::{Device, Tensor};
use interplab_core::loader::load;
use interplab_core::model::{Hooks, Input, NameFilter, RunOptions};
use interplab_sae::hooked::{attach, decoder_direction};
use interplab_sae::saelens;

const HOST: &str = "blocks.3.hook_resid_post";

fn fixture() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2_l3_topk")
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn an_attached_sae_exposes_its_latents_as_hook_points() {
    let mut m = load("smollm2-135m", &Device::Cpu, &mut |_| {}).unwrap();
    let text = "The quick brown fox jumps over the lazy dog, and then it rests.";
    let ids = m.tokenizer.encode(text, false).unwrap();
    let n = ids.len();
    let tokens = Tensor::from_vec(ids, (1, n), &Device::Cpu).unwrap();
    let clean = m.model.forward(&tokens).unwrap();
    let (_, host_cache) = m
        .model
        .run(
            Input::Tokens(&tokens),
            &RunOptions::default(),
            None,
            Some(&NameFilter::new(&[HOST])),
        )
        .unwrap();
    let x: Vec<f32> = host_cache
        .get(HOST)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();

    let sae = saelens::load(&fixture()).unwrap().sae;
    let (codes, _) = sae.forward(&x);
    attach(&mut m.model, HOST, sae.clone()).unwrap();
    let names = m.model.hook_names();
    let acts_name = format!("{HOST}.sae.hook_sae_acts_post");
    let at = names
        .iter()
        .position(|s| *s == acts_name)
        .expect("acts_post listed");
    assert_eq!(names[at - 3], HOST, "the SAE's points follow its host");

    // Nothing hooked: the same logits, bit for bit.
    assert_eq!(
        max_abs_diff(&m.model.forward(&tokens).unwrap(), &clean),
        0.0
    );

    // Caching the codes runs the SAE; its output is recons + error = x up to rounding.
    let filter = NameFilter::new(&[acts_name.as_str(), &format!("{HOST}.sae.hook_sae_output")]);
    let (logits, cache) = m
        .model
        .run(
            Input::Tokens(&tokens),
            &RunOptions::default(),
            None,
            Some(&filter),
        )
        .unwrap();
    assert!(
        max_abs_diff(&logits, &clean) < 1e-3,
        "{}",
        max_abs_diff(&logits, &clean)
    );
    let acts: Vec<f32> = cache
        .get(&acts_name)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let want = codes.to_dense(sae.d_sae);
    let worst = acts
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-3, "codes differ from Sae::encode by {worst}");
    for r in 0..n {
        let nz = acts[r * sae.d_sae..(r + 1) * sae.d_sae]
            .iter()
            .filter(|v| **v != 0.0)
            .count();
        assert!(
            nz <= sae.k,
            "row {r}: {nz} active latents with k = {}",
            sae.k
        );
    }

    // Zero-ablating the latent most active on the last token = subtracting a·W_dec[i] at the host.
    let last = &want[(n - 1) * sae.d_sae..n * sae.d_sae];
    let (latent, a) = last
        .iter()
        .enumerate()
        .max_by(|p, q| p.1.total_cmp(q.1))
        .map(|(i, v)| (i, *v))
        .unwrap();
    assert!(a > 0.0);
    let d_sae = sae.d_sae;
    let mut hooks = Hooks::new();
    hooks.add(acts_name.as_str(), move |t, _| {
        let mut v: Vec<f32> = t.flatten_all()?.to_vec1()?;
        for row in v.chunks_exact_mut(d_sae) {
            row[latent] = 0.0;
        }
        Ok(Some(Tensor::from_vec(v, t.dims(), t.device())?))
    });
    let ablated = m.model.run_with_hooks(&tokens, &mut hooks).unwrap();
    drop(hooks);

    let dir = decoder_direction(&sae, latent, false).unwrap();
    let column: Vec<f32> = want.chunks_exact(d_sae).map(|r| r[latent]).collect();
    m.model.detach_all();
    let mut by_hand = Hooks::new();
    let (col, dvec) = (column.clone(), dir.clone());
    by_hand.add(HOST, move |t, _| {
        let d = dvec.len();
        let mut v: Vec<f32> = t.flatten_all()?.to_vec1()?;
        for (r, row) in v.chunks_exact_mut(d).enumerate() {
            for (x, w) in row.iter_mut().zip(&dvec) {
                *x -= col[r] * w;
            }
        }
        Ok(Some(Tensor::from_vec(v, t.dims(), t.device())?))
    });
    let expected = m.model.run_with_hooks(&tokens, &mut by_hand).unwrap();
    drop(by_hand);
    let effect = max_abs_diff(&ablated, &clean);
    let gap = max_abs_diff(&ablated, &expected);
    assert!(
        effect > 1e-2,
        "ablating an active latent changes the logits ({effect})"
    );
    assert!(
        gap < 1e-2 * effect.max(1.0),
        "ablation {gap} away from the hand-made edit (effect {effect})"
    );

    // Steering: + c·W_dec[i] (unit) at the host, through the steering intervention.
    let unit = decoder_direction(&sae, latent, true).unwrap();
    let steer = interplab_analysis::steer::Intervention::Add {
        hook: HOST.into(),
        vector: unit.clone(),
        coefficient: 4.0,
    };
    let mut hooks = steer.hooks(&Device::Cpu).unwrap();
    let (_, c2) = m
        .model
        .run(
            Input::Tokens(&tokens),
            &RunOptions::default(),
            Some(&mut hooks),
            Some(&NameFilter::new(&[HOST])),
        )
        .unwrap();
    let steered: Vec<f32> = c2
        .get(HOST)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    for (r, (s, c)) in steered
        .chunks_exact(unit.len())
        .zip(x.chunks_exact(unit.len()))
        .enumerate()
    {
        for ((s, c), u) in s.iter().zip(c).zip(&unit) {
            assert!((s - c - 4.0 * u).abs() < 1e-4, "row {r}");
        }
    }
}

#[test]
fn attaching_at_a_missing_hook_or_with_the_wrong_width_is_an_error() {
    let mut m = load("smollm2-135m", &Device::Cpu, &mut |_| {}).unwrap();
    let sae = saelens::load(&fixture()).unwrap().sae;
    let e = attach(&mut m.model, "blocks.99.hook_resid_post", sae.clone()).unwrap_err();
    assert!(e.to_string().contains("not a hook point"), "{e}");
    attach(&mut m.model, "blocks.3.mlp.hook_post", sae).unwrap();
    let tokens = Tensor::from_vec(vec![1u32, 2, 3], (1, 3), &Device::Cpu).unwrap();
    let f = NameFilter::new(&["blocks.3.mlp.hook_post.sae.hook_sae_acts_post"]);
    let e = m
        .model
        .run(
            Input::Tokens(&tokens),
            &RunOptions::default(),
            None,
            Some(&f),
        )
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("reads 576 dimensions but the activation has 1536"),
        "{e}"
    );
}
