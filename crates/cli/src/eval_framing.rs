//! `interplab eval MODEL --task framing`: the framing study (`interplab_lab::eval_framing`).

use interplab_lab::eval_framing::Config;

use crate::cmd_eval::EvalArgs;
use crate::exec::execute;

/// Run the framing study, print its table, write the run directory.
pub fn run(a: &EvalArgs) -> anyhow::Result<()> {
    let cfg = a.out.config_or(|| Config {
        model: a.model.source(),
        limit: a.limit,
        batch: a.batch,
        add_bos: a.add_bos,
        ..Default::default()
    })?;
    let (out, dir) = execute(&cfg, &a.out, a.out.existing(false))?;
    let r = &out.results;
    println!(
        "framing on {} actions (agreement by log-likelihood, Wilson 95% CI):",
        r.n_actions
    );
    for k in &r.kinds {
        println!(
            "  {:<8} framing 1 {}  framing 2 {}  consistent {}",
            k.kind,
            k.agree[0].show(),
            k.agree[1].show(),
            k.consistent.show()
        );
        println!("           {}", k.answer);
    }
    if let Some(m) = &r.mechanism {
        let heads: Vec<String> = m.ablated.iter().map(|(l, h)| format!("{l}.{h}")).collect();
        println!(
            "  mechanism: {} flipping items, {} studied; top heads {} restore {:+.3} of the gap",
            m.n_flips,
            m.items.len(),
            heads.join(", "),
            m.together.0
        );
    }
    println!("wrote {}", dir.display());
    Ok(())
}
