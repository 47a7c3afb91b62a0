//! `interplab eval MODEL --task sensitivity`: TruthfulQA MC1 (the config's `task`) over
//! templates × shots
//! (`interplab_lab::eval_sensitivity`).

use interplab_lab::eval_sensitivity::Config;

use crate::cmd_eval::EvalArgs;
use crate::exec::execute;

/// Score every cell, print the grid and the comparisons, write the run directory.
pub fn run(a: &EvalArgs) -> anyhow::Result<()> {
    let cfg = a.out.config_or(|| Config {
        model: a.model.source(),
        limit: a.limit,
        batch: a.batch,
        add_bos: a.add_bos,
        shots: if a.num_fewshot.is_empty() {
            Config::default().shots
        } else {
            a.num_fewshot.clone()
        },
        ..Default::default()
    })?;
    let (out, dir) = execute(&cfg, &a.out, a.out.existing(false))?;
    let r = &out.results;
    println!(
        "prompt sensitivity on {}, {} items:",
        interplab_lab::eval_sensitivity::task_title(&r.task),
        r.n_items
    );
    for (k, c) in r.cells.iter().enumerate() {
        let vs = match k {
            0 => "baseline".to_string(),
            _ => {
                let x = &r.comparisons[k - 1].comparison;
                format!(
                    "Δ {:+.3} [{:+.3}, {:+.3}], p = {:.4} ({})",
                    x.effect, x.ci.0, x.ci.1, x.p_value, x.test
                )
            }
        };
        println!(
            "  {:<18} {}-shot  acc {}  {vs}",
            c.template,
            c.shots,
            c.acc.show()
        );
    }
    println!("  spread (max − min acc): {:.3}", r.spread);
    println!("wrote {}", dir.display());
    Ok(())
}
