//! SAELens interop: SAEs written by SAELens 6.54.12 itself (fixtures from
//! `scripts/reference/make_sae_fixtures.py`) load here and encode/decode the fixture inputs to
//! SAELens' own outputs; an SAE saved here loads back identically (and in SAELens:
//! `scripts/reference/check_sae_roundtrip.py`); damaged files are clear errors.

use std::path::{Path, PathBuf};

use interplab_sae::io::read_shaped;
use interplab_sae::saelens::{load, save, SaveInfo};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/saelens")
}

const NAMES: [&str; 7] = [
    "standard",
    "topk",
    "topk_rescale",
    "jumprelu",
    "batchtopk",
    "transcoder",
    "jumprelu_transcoder",
];

#[test]
fn saelens_written_saes_give_saelens_outputs() {
    let (io, _) = read_shaped(&fixtures().join("io.safetensors")).unwrap();
    let x = &io["x"].data;
    for name in NAMES {
        let sae = load(&fixtures().join(name)).unwrap().sae;
        let (codes, out) = sae.forward(x);
        let acts = codes.to_dense(sae.d_sae);
        let want_acts = &io[&format!("{name}.feature_acts")].data;
        let want_out = &io[&format!("{name}.sae_out")].data;
        assert_eq!(acts.len(), want_acts.len(), "{name}");
        for (a, b) in acts.iter().zip(want_acts) {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                "{name}: acts {a} vs {b}"
            );
            assert_eq!(*a == 0.0, *b == 0.0, "{name}: active set differs");
        }
        for (a, b) in out.iter().zip(want_out) {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                "{name}: out {a} vs {b}"
            );
        }
    }
}

#[test]
fn save_then_load_is_identical() {
    let tmp = tempfile::tempdir().unwrap();
    for name in [
        "standard",
        "topk",
        "jumprelu",
        "transcoder",
        "jumprelu_transcoder",
    ] {
        let sae = load(&fixtures().join(name)).unwrap().sae;
        let dir = tmp.path().join(name);
        let info = SaveInfo {
            hook_name: Some("blocks.3.hook_resid_post".into()),
            ..Default::default()
        };
        save(&sae, &dir, &info).unwrap();
        let back = load(&dir).unwrap();
        assert_eq!(back.sae, sae, "{name}");
        assert_eq!(back.hook_name.as_deref(), Some("blocks.3.hook_resid_post"));
        // A second save into the same directory is refused, and the first is kept.
        let err = save(&sae, &dir, &info).unwrap_err().to_string();
        assert!(err.contains("not empty"), "{err}");
        assert_eq!(load(&dir).unwrap().sae, sae);
    }
}

#[test]
fn damaged_files_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixtures().join("topk");
    let copy = |to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for f in ["cfg.json", "sae_weights.safetensors"] {
            std::fs::copy(src.join(f), to.join(f)).unwrap();
        }
    };
    // Truncated weights.
    let d = tmp.path().join("truncated");
    copy(&d);
    let bytes = std::fs::read(d.join("sae_weights.safetensors")).unwrap();
    std::fs::write(
        d.join("sae_weights.safetensors"),
        &bytes[..bytes.len() - 100],
    )
    .unwrap();
    let e = load(&d).unwrap_err().to_string();
    assert!(e.contains("not a valid safetensors file"), "{e}");
    // Garbage header.
    let d = tmp.path().join("garbage");
    copy(&d);
    std::fs::write(
        d.join("sae_weights.safetensors"),
        b"not a safetensors file at all",
    )
    .unwrap();
    assert!(load(&d).unwrap_err().to_string().contains("safetensors"));
    // Sizes that do not match the tensors.
    let d = tmp.path().join("sizes");
    copy(&d);
    let cfg = std::fs::read_to_string(d.join("cfg.json")).unwrap();
    std::fs::write(
        d.join("cfg.json"),
        cfg.replace("\"d_in\": 8", "\"d_in\": 9"),
    )
    .unwrap();
    let e = load(&d).unwrap_err().to_string();
    assert!(e.contains("W_enc has shape [8, 16]"), "{e}");
    // k larger than the number of latents.
    let d = tmp.path().join("k");
    copy(&d);
    std::fs::write(d.join("cfg.json"), cfg.replace("\"k\": 3", "\"k\": 99")).unwrap();
    let e = load(&d).unwrap_err().to_string();
    assert!(e.contains("k = 99"), "{e}");
    for e in [e] {
        assert!(!e.contains('\n'));
    }
}
