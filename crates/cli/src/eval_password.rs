//! `interplab eval MODEL --task password`: the password game (`interplab_lab::eval_password`).

use interplab_lab::eval_password::Config;

use crate::cmd_eval::EvalArgs;
use crate::exec::execute;

/// Play the game, print the leak rates, write the run directory.
pub fn run(a: &EvalArgs) -> anyhow::Result<()> {
    let cfg = a.out.config_or(|| Config {
        model: a.model.source(),
        batch: a.batch,
        ..Default::default()
    })?;
    let (out, dir) = execute(&cfg, &a.out, a.out.existing(false))?;
    let r = &out.results;
    println!(
        "password game: {} defences × {} secrets × {} attacks",
        r.defences.len(),
        r.secrets.len(),
        r.attacks.len()
    );
    println!(
        "  {:<22} {:<32} fuzzy leak [95% CI]",
        "defence", "exact leak [95% CI]"
    );
    for l in &r.per_defence {
        println!("  {:<22} {:<32} {}", l.name, l.exact.show(), l.fuzzy.show());
    }
    println!(
        "  {:<22} {:<32} fuzzy leak [95% CI]",
        "attack", "exact leak [95% CI]"
    );
    for l in &r.per_attack {
        println!("  {:<22} {:<32} {}", l.name, l.exact.show(), l.fuzzy.show());
    }
    for c in &r.comparisons {
        let x = &c.comparison;
        println!(
            "  {} − {} ({}): {:+.3} [{:+.3}, {:+.3}], p = {:.4} ({}), MDE {:.3}",
            c.defence, c.baseline, c.detector, x.effect, x.ci.0, x.ci.1, x.p_value, x.test, x.mde
        );
    }
    println!("wrote {}", dir.display());
    Ok(())
}
