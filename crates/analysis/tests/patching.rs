//! Activation patching: the fast sweep against the plain definition, against TransformerLens on
//! SmolLM2 (`crates/core/tests/fixtures/reference/smollm2/tl_patching.*`, made with
//! `transformer_lens.patching.get_act_patch_resid_pre` / `get_act_patch_attn_out` by
//! `scripts/peer/make_analysis_reference.py`), and on cases whose answer is known.

use crate::common;

use candle_core::{DType, Device};
use interplab_analysis::patching::{
    patch_naive, HeadSite, Metric, PatchingSetup, PositionSite, Region,
};

fn reference() -> std::collections::HashMap<String, candle_core::Tensor> {
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../core/tests/fixtures/reference/smollm2/tl_patching.safetensors");
    candle_core::safetensors::load(p, &Device::Cpu).unwrap()
}

fn ids(t: &candle_core::Tensor) -> Vec<u32> {
    t.to_dtype(DType::U32).unwrap().to_vec1().unwrap()
}

fn ioi_setup() -> PatchingSetup<'static> {
    let m = common::smollm2();
    let r = reference();
    let answer = m.tokenizer.encode(" Mary", false).unwrap();
    let wrong = m.tokenizer.encode(" John", false).unwrap();
    assert_eq!((answer.len(), wrong.len()), (1, 1));
    let metric = Metric::LogitDiff {
        answer: answer[0],
        wrong: wrong[0],
    };
    PatchingSetup::new(
        &m.model,
        &ids(&r["clean_tokens"]),
        &ids(&r["corrupted_tokens"]),
        metric,
    )
    .unwrap()
}

fn max_diff(a: &[Vec<f64>], b: &candle_core::Tensor) -> f64 {
    let b: Vec<Vec<f32>> = b.to_vec2().unwrap();
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, &y)| (x - y as f64).abs())
        .fold(0.0, f64::max)
}

#[test]
fn resid_pre_and_attn_out_sweeps_match_transformer_lens() {
    let s = ioi_setup();
    let r = reference();
    // The clean and corrupted logit differences TransformerLens computed on the same GGUF
    // weights (tl_patching.json).
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(common::smollm2_reference("tl_patching.json")).unwrap(),
    )
    .unwrap();
    let tl_logit_diff = |k: &str| json[k].as_f64().unwrap_or_else(|| panic!("{k}"));
    let (clean, corrupted) = (
        tl_logit_diff("clean_logit_diff"),
        tl_logit_diff("corrupted_logit_diff"),
    );
    let (dc, dx) = (
        (s.clean_raw - clean).abs(),
        (s.corrupted_raw - corrupted).abs(),
    );
    eprintln!("logit differences: |ours - TL| clean {dc:.2e}, corrupted {dx:.2e}");
    // Measured 3.8e-6 and 6.7e-6 (of 6.1 and -5.5); bound 5e-5.
    assert!(dc < 5e-5 && dx < 5e-5, "clean {dc}, corrupted {dx}");
    let resid = s.sweep_positions(PositionSite::ResidPre).unwrap();
    let d = max_diff(&resid.values, &r["resid_pre"]);
    eprintln!("resid_pre: max |ours - TL| = {d:.2e}");
    // Normalised metric (values up to 1): measured 1.6e-6 (resid_pre), 1.4e-6 (attn_out);
    // bound 2e-5.
    assert!(d < 2e-5, "resid_pre: max |ours - TL| = {d}");
    let attn = s.sweep_positions(PositionSite::AttnOut).unwrap();
    let d = max_diff(&attn.values, &r["attn_out"]);
    eprintln!("attn_out: max |ours - TL| = {d:.2e}");
    assert!(d < 2e-5, "attn_out: max |ours - TL| = {d}");
}

#[test]
fn fast_sweep_equals_the_plain_definition() {
    let s = ioi_setup();
    let n = s.clean.len();
    for (name, layer, region) in [
        ("blocks.3.hook_resid_mid", 3, Region::Position(n - 4)),
        ("blocks.20.hook_mlp_out", 20, Region::Position(n - 1)),
        ("blocks.29.hook_resid_post", 29, Region::Position(n - 1)),
        ("blocks.12.attn.hook_z", 12, Region::Head(4)),
        ("blocks.8.attn.hook_k", 8, Region::Head(1)),
        ("blocks.15.attn.hook_pattern", 15, Region::Head(7)),
        ("blocks.23.attn.hook_z", 23, Region::HeadAt(3, n - 1)),
        ("blocks.18.attn.hook_pattern", 18, Region::HeadAt(6, n - 2)),
        ("blocks.10.hook_attn_out", 10, Region::All),
        ("blocks.21.hook_resid_pre", 21, Region::All),
    ] {
        let (fast, _) = s.patch_layer(name, layer, &[region]).unwrap();
        let plain = patch_naive(&s, name, region).unwrap();
        eprintln!(
            "{name} {region:?}: |fast - plain| = {:.2e}",
            (fast[0] - plain).abs()
        );
        assert!(
            (fast[0] - plain).abs() < 1e-5, // measured ≤ 9.9e-7 over these sites
            "{name} {region:?}: fast {} plain {plain}",
            fast[0]
        );
    }
}

#[test]
fn known_answers() {
    let s = ioi_setup();
    let resid = s.sweep_positions(PositionSite::ResidPre).unwrap();
    let diff_pos: Vec<usize> = (0..s.clean.len())
        .filter(|&p| s.clean[p] != s.corrupted[p])
        .collect();
    assert_eq!(diff_pos.len(), 1);
    // At layer 0 the residual is the embedding: positions whose tokens agree patch nothing
    // (exactly 0), and the differing position carries everything (exactly the clean run).
    for (p, &v) in resid.values[0].iter().enumerate() {
        if diff_pos.contains(&p) {
            assert!((v - 1.0).abs() < 1e-4, "position {p}: {v}");
        } else {
            assert_eq!(v, 0.0, "position {p}");
        }
    }
    // Patching the last position's final residual restores the clean logits exactly.
    let post = s.sweep_positions(PositionSite::ResidPost).unwrap();
    assert!((post.values[29][s.clean.len() - 1] - 1.0).abs() < 1e-4);
    // KL to clean: 0 when restored, positive for the corrupted run.
    let m = &s.model();
    let kl = PatchingSetup::new(m, &s.clean, &s.corrupted, Metric::Kl).unwrap();
    assert!(kl.corrupted_raw > 0.1);
    let (v, _) = kl
        .patch_layer(
            "blocks.0.hook_resid_pre",
            0,
            &[Region::Position(diff_pos[0])],
        )
        .unwrap();
    assert!(v[0].abs() < 1e-4, "{v:?}");
}

#[test]
fn bad_input_is_an_error() {
    let m = common::smollm2();
    let metric = Metric::LogitDiff {
        answer: 1,
        wrong: 2,
    };
    assert!(PatchingSetup::new(&m.model, &[1, 2, 3], &[1, 2], metric).is_err());
    let s = ioi_setup();
    assert!(s
        .patch_layer("blocks.0.attn.hook_z", 0, &[Region::Head(9)])
        .is_err());
    assert!(s
        .patch_layer("blocks.30.hook_resid_pre", 30, &[Region::Position(0)])
        .is_err());
    assert!(s.sweep_heads(HeadSite::V).unwrap().values[0].len() == 3);
}

#[test]
fn attribution_patching_agrees_with_activation_patching_on_ioi() {
    use interplab_analysis::attribution::{agreement, attribution_sweeps};
    let s = ioi_setup();
    let sites = [
        PositionSite::ResidPre,
        PositionSite::AttnOut,
        PositionSite::MlpOut,
    ];
    let attr = attribution_sweeps(&s, &sites, &[HeadSite::Z]).unwrap();
    let z = s.sweep_heads(HeadSite::Z).unwrap();
    let attn = s.sweep_positions(PositionSite::AttnOut).unwrap();
    let resid = s.sweep_positions(PositionSite::ResidPre).unwrap();
    let cz = agreement(&z, &attr[3], s.corrupted_value(), 10);
    let ca = agreement(&attn, &attr[1], s.corrupted_value(), 10);
    let cr = agreement(&resid, &attr[0], s.corrupted_value(), 10);
    // Thresholds and why: see the doc comment of `interplab_analysis::attribution`.
    assert!(
        cz.correlation > 0.9 && cz.top_k_overlap >= 0.7 && cz.sign_agreement >= 0.9,
        "z {cz:?}"
    );
    assert!(
        ca.correlation > 0.9 && ca.sign_agreement >= 0.9,
        "attn_out {ca:?}"
    );
    assert!(cr.sign_agreement >= 0.9, "resid_pre {cr:?}");
}
