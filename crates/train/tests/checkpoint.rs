//! Resume: interrupting a run and resuming from its checkpoint gives bit-identical final weights
//! to an uninterrupted run. A truncated checkpoint is an error, not a panic.

use interplab_train::checkpoint::{load, save};
use interplab_train::superposition::{SuperpositionConfig, ToyModel};

#[test]
fn interrupted_and_resumed_equals_uninterrupted() {
    let cfg = SuperpositionConfig {
        steps: 300,
        batch: 256,
        sparsities: vec![0.0, 0.9, 0.99],
        ..Default::default()
    };
    let mut straight = ToyModel::new(cfg.clone()).unwrap();
    straight.train(300, &mut |_, _| {});

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint.json");
    let mut first = ToyModel::new(cfg).unwrap();
    first.train(137, &mut |_, _| {});
    save(&path, &first).unwrap();
    drop(first);
    let mut resumed: ToyModel = load(&path).unwrap();
    assert_eq!(resumed.step, 137);
    resumed.train(1000, &mut |_, _| {}); // stops at cfg.steps
    assert_eq!(resumed.step, 300);
    for (a, b) in straight.instances.iter().zip(&resumed.instances) {
        assert_eq!(a.w(), b.w());
        assert_eq!(a.b(), b.b());
    }
    assert_eq!(straight.loss_history, resumed.loss_history);

    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert!(load::<ToyModel>(&path).is_err());
    assert!(load::<ToyModel>(&dir.path().join("missing.json")).is_err());
}
