//! The Rust → SAELens half of the interop check: trains a small SAE of each architecture on a
//! planted dictionary for 200 steps, saves each into `DIR/<arch>/` in SAELens' layout with
//! `io.safetensors` (`x`, and this crate's `feature_acts` and `sae_out` for it), for
//! `scripts/reference/check_sae_roundtrip.py DIR/<arch>` to load in SAELens and compare.
//!
//! ```sh
//! cargo run --release -p interplab-sae --example saelens_export -- /tmp/export
//! for a in relu topk batchtopk jumprelu relu-transcoder; do .venv-peer/bin/python scripts/reference/check_sae_roundtrip.py /tmp/export/$a; done
//! ```

use interplab_core::rng::SplitMix;
use interplab_sae::io::write_shaped;
use interplab_sae::saelens::{save, SaveInfo};
use interplab_sae::{Architecture, TrainConfig, Trainer};

fn main() -> anyhow::Result<()> {
    let dir = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("usage: saelens_export DIR"))?,
    );
    let (d, n) = (16usize, 4096usize);
    let mut rng = SplitMix::new(11);
    let x: Vec<f32> = (0..n * d).map(|_| rng.normal() as f32).collect();
    let y: Vec<f32> = x.iter().map(|v| 0.5 * v.tanh()).take(n * d).collect();
    for (name, arch, transcoder) in [
        ("relu", Architecture::Relu, false),
        ("topk", Architecture::Topk, false),
        ("batchtopk", Architecture::Batchtopk, false),
        ("jumprelu", Architecture::Jumprelu, false),
        ("relu-transcoder", Architecture::Relu, true),
    ] {
        let cfg = TrainConfig {
            arch,
            transcoder,
            d_in: d,
            d_sae: 64,
            k: 4,
            batch_size: 256,
            steps: 200,
            lr: 3e-3,
            sparsity_coefficient: if arch == Architecture::Jumprelu {
                0.01
            } else {
                0.1
            },
            ..Default::default()
        };
        let target = if transcoder { &y } else { &x };
        let mut tr = Trainer::new(cfg, target)?;
        for t in 0..200usize {
            let r = (t * 256) % n;
            let yb = transcoder.then(|| &y[r * d..(r + 256) * d]);
            tr.step(&x[r * d..(r + 256) * d], yb);
        }
        let sae = tr.inference_sae(None);
        let out = dir.join(name);
        save(&sae, &out, &SaveInfo::default())?;
        let xs = &x[..8 * d];
        let (codes, rec) = sae.forward(xs);
        let acts = codes.to_dense(sae.d_sae);
        write_shaped(
            &out.join("io.safetensors"),
            &[
                ("x".into(), vec![8, d], xs),
                ("feature_acts".into(), vec![8, sae.d_sae], &acts),
                ("sae_out".into(), vec![8, sae.d_out], &rec),
            ],
            &[],
        )?;
        println!("{name}: saved {}", out.display());
    }
    Ok(())
}
