//! SmolLM2-135M-Instruct from its GGUF against Hugging Face transformers (logits) and
//! TransformerLens (hook values), on the shared reference prompts. Hook values are compared with
//! 1e-3 absolute tolerance, relative where |x| > 1 (see `common::max_mixed_diff`).

use crate::common;

use candle_core::{DType, Tensor};
use common::{fixture, ids_of, max_abs_diff, max_mixed_diff, read_st, smollm2, tokens};
use interplab_core::model::NameFilter;

#[test]
fn logits_and_tokens_match_transformers() {
    let m = smollm2();
    let prompts = [
        "When Mary and John went to the store, John gave a drink to",
        "The Eiffel Tower is located in the city of",
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    ];
    common::assert_logits_match_reference(m, "smollm2", &prompts);
}

#[test]
fn hooks_match_transformer_lens() {
    let m = smollm2();
    let r = read_st(&fixture("reference/smollm2/tl_activations.safetensors"));
    let ids = m
        .tokenizer
        .encode(
            "When Mary and John went to the store, John gave a drink to",
            false,
        )
        .unwrap();
    // The file also holds TransformerLens' `logits`: our name for them is `unembed.hook_out`.
    let ours_name = |n: &str| {
        if n == "logits" {
            "unembed.hook_out".to_string()
        } else {
            n.to_string()
        }
    };
    if let Some(t) = r.get("tokens") {
        assert_eq!(ids_of(t), ids, "reference tokens");
    }
    let keys: Vec<&String> = r.keys().filter(|k| k.as_str() != "tokens").collect();
    let names: Vec<String> = keys.iter().map(|n| ours_name(n)).collect();
    let (_, cache) = m
        .model
        .run_with_cache(&tokens(&ids), &NameFilter::new(&names))
        .unwrap();
    assert!(names.len() >= 14, "{names:?}");
    let mut keys = keys;
    keys.sort();
    for n in keys {
        let ours = cache.get(&ours_name(n)).unwrap().squeeze(0).unwrap();
        let d = max_mixed_diff(&ours, &r[n]);
        assert!(
            d < 1e-3,
            "{n} differs from TransformerLens by {d} (abs, or rel where |x| > 1)"
        );
    }
}

#[test]
fn replaying_every_cached_hook_reproduces_the_logits() {
    let m = smollm2();
    let ids = m
        .tokenizer
        .encode("The Eiffel Tower is located in", false)
        .unwrap();
    let t = tokens(&ids);
    let (logits, cache) = m.model.run_with_cache(&t, &NameFilter::all()).unwrap();
    assert_eq!(cache.len(), m.model.hook_names().len());
    let mut hooks = interplab_core::model::Hooks::new();
    hooks.add("*", |_x: &Tensor, p| Ok(Some(cache.get(p.name)?.clone())));
    let replayed = m.model.run_with_hooks(&t, &mut hooks).unwrap();
    assert_eq!(max_abs_diff(&logits, &replayed), 0.0);
}

#[test]
fn start_at_layer_reproduces_the_full_forward() {
    let m = smollm2();
    let ids = m
        .tokenizer
        .encode("The Eiffel Tower is located in", false)
        .unwrap();
    let t = tokens(&ids);
    let (logits, cache) = m
        .model
        .run_with_cache(&t, &NameFilter::parse("blocks.*.hook_resid_pre"))
        .unwrap();
    for l in [1usize, 14, 29] {
        let resid = cache.get(&format!("blocks.{l}.hook_resid_pre")).unwrap();
        let opts = interplab_core::model::RunOptions {
            start_at_layer: Some(l),
            ..Default::default()
        };
        let (out, _) = m
            .model
            .run(
                interplab_core::model::Input::Resid(resid),
                &opts,
                None,
                None,
            )
            .unwrap();
        assert_eq!(max_abs_diff(&out, &logits), 0.0, "start_at_layer {l}");
    }
    // stop_at_layer returns the residual entering that block.
    let opts = interplab_core::model::RunOptions {
        stop_at_layer: Some(14),
        ..Default::default()
    };
    let (resid, _) = m
        .model
        .run(interplab_core::model::Input::Tokens(&t), &opts, None, None)
        .unwrap();
    assert_eq!(
        max_abs_diff(&resid, cache.get("blocks.14.hook_resid_pre").unwrap()),
        0.0
    );
}

#[test]
fn left_and_right_padding_give_the_same_per_sequence_results() {
    let m = smollm2();
    let a = m
        .tokenizer
        .encode("The Eiffel Tower is located in the city of", false)
        .unwrap();
    let b = m.tokenizer.encode("Hello there", false).unwrap();
    let n = a.len();
    let pad = 0u32;
    let single = |ids: &[u32]| m.model.forward(&tokens(ids)).unwrap().squeeze(0).unwrap();
    let (la, lb) = (single(&a), single(&b));
    for left in [true, false] {
        let mut rows = Vec::new();
        let mut mask = Vec::new();
        for ids in [&a, &b] {
            let padding = n - ids.len();
            let (mut r, mut mk) = (Vec::new(), Vec::new());
            if left {
                r.extend(std::iter::repeat_n(pad, padding));
                mk.extend(std::iter::repeat_n(0u32, padding));
            }
            r.extend_from_slice(ids);
            mk.extend(std::iter::repeat_n(1u32, ids.len()));
            if !left {
                r.extend(std::iter::repeat_n(pad, padding));
                mk.extend(std::iter::repeat_n(0u32, padding));
            }
            rows.extend(r);
            mask.extend(mk);
        }
        let t = Tensor::from_vec(rows, (2, n), &candle_core::Device::Cpu).unwrap();
        let mask = Tensor::from_vec(mask, (2, n), &candle_core::Device::Cpu).unwrap();
        let opts = interplab_core::model::RunOptions {
            attention_mask: Some(&mask),
            ..Default::default()
        };
        let (logits, _) = m
            .model
            .run(interplab_core::model::Input::Tokens(&t), &opts, None, None)
            .unwrap();
        let row_a = logits.get(0).unwrap();
        let row_b = logits.get(1).unwrap();
        let off = if left { n - b.len() } else { 0 };
        let got_b = row_b.narrow(0, off, b.len()).unwrap();
        let da = max_abs_diff(&row_a, &la);
        let db = max_abs_diff(&got_b, &lb);
        assert!(da < 1e-3 && db < 1e-3, "left={left}: {da} {db}");
    }
}

#[test]
fn generation_with_kv_cache_matches_full_forward_greedy() {
    let m = smollm2();
    let ids = m
        .tokenizer
        .encode("The Eiffel Tower is located in", false)
        .unwrap();
    let opts = interplab_core::model::GenerateOptions {
        max_new_tokens: 6,
        ..Default::default()
    };
    let out = m.model.generate(&ids, &opts, None).unwrap();
    // Without a cache: argmax of a full forward each step.
    let mut seq = ids.clone();
    for _ in 0..6 {
        let logits = m.model.forward(&tokens(&seq)).unwrap();
        let last = logits.get(0).unwrap().get(seq.len() - 1).unwrap();
        seq.push(
            last.argmax(0)
                .unwrap()
                .to_dtype(DType::U32)
                .unwrap()
                .to_scalar::<u32>()
                .unwrap(),
        );
    }
    assert_eq!(out, seq[ids.len()..].to_vec());
}

#[test]
fn chat_answer_names_paris() {
    let m = smollm2();
    let chat = m.chat.as_ref().expect("SmolLM2 has a chat template");
    let text = chat.render(
        &[interplab_core::tokenizer::ChatMessage::user(
            "What is the capital of France?",
        )],
        true,
    );
    let ids = m.tokenizer.encode(&text, false).unwrap();
    let opts = interplab_core::model::GenerateOptions {
        max_new_tokens: 24,
        stop_ids: m.tokenizer.eos_ids().to_vec(),
        ..Default::default()
    };
    let out = m.model.generate(&ids, &opts, None).unwrap();
    let answer = m.tokenizer.decode(&out).unwrap();
    assert!(answer.contains("Paris"), "answer: {answer}");
}

#[test]
fn replacing_hook_scale_changes_the_output() {
    // ln_final.hook_scale doubled halves the normalised residual, so the logits halve.
    let m = smollm2();
    let t = tokens(&m.tokenizer.encode("Hello world", false).unwrap());
    let logits = m.model.forward(&t).unwrap();
    let mut hooks = interplab_core::model::Hooks::new();
    hooks.add("ln_final.hook_scale", |s: &Tensor, _| Ok(Some((s * 2.0)?)));
    let halved = m.model.run_with_hooks(&t, &mut hooks).unwrap();
    let d = max_abs_diff(&(logits * 0.5).unwrap(), &halved);
    assert!(d < 1e-4, "{d}");
}

/// A call that hooks neither the scores nor the pattern takes the fused attention
/// (`model::attend`; it forms them only to cache them); a hook on the pattern forces the
/// composed ops. Logits and every cached activation must agree to the bit: over 150 positions (two query blocks of the fused path), two sequences, the second
/// left-padded by 40 positions (a per-sequence mask).
#[test]
fn fused_attention_gives_the_composed_attention_bit_for_bit() {
    let m = smollm2();
    let text = "The sonnets of Shakespeare were first printed in 1609. ".repeat(20);
    let ids = m.tokenizer.encode(&text, false).unwrap();
    let n = 150;
    assert!(ids.len() >= n);
    let mut rows = ids[..n].to_vec();
    rows.extend(std::iter::repeat_n(0u32, 40));
    rows.extend_from_slice(&ids[7..n - 33]);
    let mut mask = vec![1u32; n];
    mask.extend(std::iter::repeat_n(0u32, 40));
    mask.extend(std::iter::repeat_n(1u32, n - 40));
    let t = Tensor::from_vec(rows, (2, n), &candle_core::Device::Cpu).unwrap();
    let mask = Tensor::from_vec(mask, (2, n), &candle_core::Device::Cpu).unwrap();
    let opts = interplab_core::model::RunOptions {
        attention_mask: Some(&mask),
        ..Default::default()
    };
    let run = |filter: Option<&NameFilter>| {
        m.model
            .run(
                interplab_core::model::Input::Tokens(&t),
                &opts,
                None,
                filter,
            )
            .unwrap()
    };
    let (fused, _) = run(Some(&NameFilter::parse("blocks.*.hook_attn_out")));
    // A hook on the pattern (returning it unchanged) forces the composed ops; caching every
    // point makes the fused path keep its scores and pattern, which must equal the composed.
    let mut hooks = interplab_core::model::Hooks::new();
    hooks.add("blocks.*.attn.hook_pattern", |_x: &Tensor, _p| Ok(None));
    let all = NameFilter::all();
    let (composed, composed_cache) = m
        .model
        .run(
            interplab_core::model::Input::Tokens(&t),
            &opts,
            Some(&mut hooks),
            Some(&all),
        )
        .unwrap();
    assert_eq!(max_abs_diff(&fused, &composed), 0.0);
    let (kept, kept_cache) = run(Some(&all));
    assert_eq!(max_abs_diff(&kept, &composed), 0.0);
    assert_eq!(kept_cache.len(), composed_cache.len());
    for (name, want) in composed_cache.iter() {
        let got = kept_cache.get(name).unwrap();
        assert_eq!(got.dims(), want.dims(), "{name}");
        let bits = |t: &Tensor| -> Vec<u32> {
            let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            v.iter().map(|x| x.to_bits()).collect()
        };
        assert!(bits(got) == bits(want), "{name} differs");
    }
    // Without a mask (one bias for every sequence).
    let fused = m.model.forward(&t).unwrap();
    let mut hooks = interplab_core::model::Hooks::new();
    hooks.add("blocks.*.attn.hook_attn_scores", |_x: &Tensor, _p| Ok(None));
    let composed = m.model.run_with_hooks(&t, &mut hooks).unwrap();
    assert_eq!(max_abs_diff(&fused, &composed), 0.0);
    // A short prompt (15 positions: gemm chooses its kernels by shape, so the fused products
    // must have the composed ones' shapes to round the same), every cached point included.
    let ids = m
        .tokenizer
        .encode(
            "The Eiffel Tower is located in the city of Paris, which is in",
            false,
        )
        .unwrap();
    let t = tokens(&ids);
    let (kept, kept_cache) = m.model.run_with_cache(&t, &all).unwrap();
    let mut hooks = interplab_core::model::Hooks::new();
    hooks.add("blocks.*.attn.hook_pattern", |_x: &Tensor, _p| Ok(None));
    let (composed, composed_cache) = m
        .model
        .run(
            interplab_core::model::Input::Tokens(&t),
            &Default::default(),
            Some(&mut hooks),
            Some(&all),
        )
        .unwrap();
    assert_eq!(max_abs_diff(&kept, &composed), 0.0);
    assert_eq!(max_abs_diff(&m.model.forward(&t).unwrap(), &composed), 0.0);
    for name in [
        "blocks.0.attn.hook_pattern",
        "blocks.29.attn.hook_attn_scores",
    ] {
        let (a, b) = (
            kept_cache.get(name).unwrap(),
            composed_cache.get(name).unwrap(),
        );
        assert_eq!(max_abs_diff(a, b), 0.0, "{name}");
    }
}
