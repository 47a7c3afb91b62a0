//! `WeightStorage::Bf16` (`--dtype bf16`): the block matrices and the unembedding rounded to
//! bf16 and multiplied with bf16 inputs and f32 sums (`interplab_core::bf16`, whose unit tests
//! check the product against an f64 one). Here, on SmolLM2: the stored weights are exactly the
//! rounded dense ones, in half the memory; the logits stay within the bf16 error of the f32
//! model's and of transformers', and the next-token argmax agrees at nearly every position.
//! Measured here (the test prints them): against f32 over 256 tokens max |Δ| 0.58, rms 0.060,
//! argmax agreement 0.988; against transformers at the IOI prompt's last positions 0.22. The
//! bounds are ~2.5× those.

use crate::common;

use candle_core::{DType, Device, Tensor};
use common::{fixture, max_abs_diff, read_st, tokens};
use interplab_core::bf16::{from_bf16, to_bf16};
use interplab_core::loader::{load_resolved, WeightStorage};
use interplab_core::model::Matrix;
use interplab_core::source::{resolve, ModelSource};

#[test]
fn bf16_smollm2_holds_the_rounded_weights_and_stays_near_the_f32_logits() {
    let dense = common::smollm2();
    let resolved = resolve(&ModelSource::parse("smollm2-135m").unwrap(), &mut |_| {}).unwrap();
    let bf = load_resolved(resolved, &Device::Cpu, WeightStorage::Bf16).unwrap();

    // Stored weights: every block matrix packed, holding exactly bf16(dense), in half the bytes.
    let (mut dense_bytes, mut bf_bytes) = (0usize, 0usize);
    for (db, bb) in dense
        .model
        .weights
        .blocks
        .iter()
        .zip(&bf.model.weights.blocks)
    {
        let (dm, bm) = (db.mlp.as_ref().unwrap(), bb.mlp.as_ref().unwrap());
        for (d, b) in [
            (&db.attn.w_q, &bb.attn.w_q),
            (&db.attn.w_o, &bb.attn.w_o),
            (&dm.w_in, &bm.w_in),
            (dm.w_gate.as_ref().unwrap(), bm.w_gate.as_ref().unwrap()),
            (&dm.w_out, &bm.w_out),
        ] {
            assert!(matches!(b, Matrix::Bf16(_)));
            let values = |m: &Matrix| -> Vec<f32> {
                m.tensor()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            };
            let (want, got) = (values(d), values(b));
            assert!(want
                .iter()
                .zip(&got)
                .all(|(w, g)| from_bf16(to_bf16(*w)).to_bits() == g.to_bits()));
            dense_bytes += d.size_bytes();
            bf_bytes += b.size_bytes();
        }
    }
    assert_eq!(bf_bytes * 2, dense_bytes);

    // Logits over 256 tokens of the sonnets (enough rows for the many-rows path of the product).
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../corpus/shakespeare_sonnets.txt"),
    )
    .unwrap();
    let mut ids = dense.tokenizer.encode(&text, true).unwrap();
    ids.truncate(256);
    let a = dense
        .model
        .forward(&tokens(&ids))
        .unwrap()
        .squeeze(0)
        .unwrap();
    let b = bf.model.forward(&tokens(&ids)).unwrap().squeeze(0).unwrap();
    let d = max_abs_diff(&a, &b);
    let rms = ((&a - &b).unwrap().sqr().unwrap().mean_all().unwrap())
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
        .sqrt();
    let top = |t: &Tensor| -> Vec<u32> { t.argmax(1).unwrap().to_vec1().unwrap() };
    let agree = top(&a)
        .iter()
        .zip(top(&b))
        .filter(|(x, y)| **x == *y)
        .count() as f64
        / ids.len() as f64;
    eprintln!(
        "bf16 vs f32 logits over {} tokens: max |diff| {d:.4}, rms {rms:.4}, argmax agreement {agree:.4}",
        ids.len()
    );
    assert!(d < 1.5, "bf16 logits differ from f32 by {d}");
    assert!(rms < 0.15, "bf16 logits differ from f32 by {rms} rms");
    assert!(agree > 0.95, "argmax agrees at only {agree} of positions");

    // Against transformers' logits (f32) at the reference prompt's last positions.
    let r = read_st(&fixture("reference/smollm2/hf_logits_slim.safetensors"));
    let prompt = "When Mary and John went to the store, John gave a drink to";
    let ids = bf.tokenizer.encode(prompt, false).unwrap();
    let last = &r["logits_last_0"];
    let k = last.dim(0).unwrap();
    let ours = bf.model.forward(&tokens(&ids)).unwrap().squeeze(0).unwrap();
    let ours = ours.narrow(0, ids.len() - k, k).unwrap();
    let d = max_abs_diff(&ours, last);
    eprintln!("bf16 vs transformers, last {k} positions of the IOI prompt: max |diff| {d:.4}");
    assert!(d < 0.6, "bf16 logits differ from transformers' by {d}");
    assert_eq!(
        top(&ours),
        top(last),
        "the bf16 model's next tokens differ from transformers'"
    );
}
