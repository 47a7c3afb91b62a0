use interplab_core::rng::SplitMix;
use interplab_train::inverter::loss_and_grad;
use interplab_train::optim::{AdamW, AdamWConfig};
#[test]
fn bench_step() {
    let (b, d, c) = (256, 576, 3500);
    let mut r = SplitMix::new(1);
    let mut p: Vec<f32> = (0..d * c + c).map(|_| r.normal() as f32 * 0.01).collect();
    let x: Vec<f32> = (0..b * d).map(|_| r.normal() as f32).collect();
    let y: Vec<u32> = (0..b).map(|_| r.below(c as u64) as u32).collect();
    let mut opt = AdamW::new(AdamWConfig::default(), p.len());
    let t = std::time::Instant::now();
    for _ in 0..10 { let (_, g) = loss_and_grad(&p, d, 0, c, &x, &y).unwrap(); opt.step(&mut p, &g); }
    eprintln!("step {:?}", t.elapsed() / 10);
    let t = std::time::Instant::now();
    for _ in 0..10 { let (_, g) = loss_and_grad(&p, d, 0, c, &x, &y).unwrap(); std::hint::black_box(g); }
    eprintln!("grad only {:?}", t.elapsed() / 10);
}
