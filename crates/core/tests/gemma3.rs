//! Gemma 3 270M from its GGUF against Hugging Face transformers, on the shared reference prompts.

use crate::common;

use common::{fixture, gemma3, ids_of, max_abs_diff, read_st, tokens};

#[test]
fn logits_and_tokens_match_transformers() {
    let m = gemma3();
    let r = read_st(&fixture("reference/gemma3/hf_logits_slim.safetensors"));
    let prompts = ["The capital of France is", "def add(a, b):\n    return"];
    for (i, p) in prompts.iter().enumerate() {
        let want_ids = ids_of(&r[&format!("tokens_{i}")]);
        let ids = m.tokenizer.encode(p, true).unwrap();
        assert_eq!(ids, want_ids, "prompt {i} token ids");
        let logits = m.model.forward(&tokens(&ids)).unwrap().squeeze(0).unwrap();
        let last = &r[&format!("logits_last_{i}")];
        let k = last.dim(0).unwrap();
        let ours = logits.narrow(0, ids.len() - k, k).unwrap();
        let d = max_abs_diff(&ours, last);
        assert!(d < 1e-3, "prompt {i}: last-position logits differ by {d}");
        let argmax: Vec<u32> = logits.argmax(1).unwrap().to_vec1().unwrap();
        assert_eq!(
            argmax,
            ids_of(&r[&format!("argmax_{i}")]),
            "prompt {i} argmax"
        );
        // Every position's max logit (full rows of 262k logits are too big to ship).
        let max = logits.max(1).unwrap();
        let d = max_abs_diff(&max, &r[&format!("max_{i}")]);
        assert!(
            d < 1e-3,
            "prompt {i}: per-position max logit differs by {d}"
        );
    }
}
