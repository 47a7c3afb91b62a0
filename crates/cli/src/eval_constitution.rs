//! `interplab eval MODEL --task constitution`: Constitutional AI's critique → revise loop,
//! scored per round (the study is `interplab_lab::eval_constitution`).

use interplab_lab::eval_constitution::Config;

use crate::cmd_eval::EvalArgs;
use crate::exec::execute;

/// Run the constitutional study, print its table, write the run directory.
pub fn run(a: &EvalArgs) -> anyhow::Result<()> {
    let cfg = a.out.config_or(|| {
        let d = Config::default();
        Config {
            model: a.model.source(),
            judge: a.judge.clone(),
            per_set: a.per_set.unwrap_or(d.per_set),
            max_new_tokens: a.max_new_tokens.unwrap_or(d.max_new_tokens),
            rounds: a.rounds.unwrap_or(d.rounds),
            batch: a.batch,
            ..d
        }
    })?;
    let (out, dir) = execute(&cfg, &a.out, a.out.existing(false))?;
    let r = &out.results;
    println!(
        "critique → revise on {} harmful requests; refusal rate (Wilson 95%), Δ vs round 0 with exact McNemar p:",
        r.requests.len()
    );
    for s in &r.rounds {
        let mut line = format!(
            "  round {} {:<22} {}",
            s.round,
            s.principle.as_deref().unwrap_or("(initial)"),
            s.refusal.show()
        );
        if let Some(x) = &s.refusal_vs_round0 {
            line.push_str(&format!(
                "  Δ {:+.3} [{:+.3}, {:+.3}], p = {:.4}",
                x.effect, x.ci.0, x.ci.1, x.p_value
            ));
        }
        if let Some(h) = &s.harm {
            line.push_str(&format!("  harm {}", h.show()));
        }
        if let Some(x) = &s.harm_vs_round0 {
            line.push_str(&format!(" (Δ {:+.3}, p = {:.4})", x.effect, x.p_value));
        }
        println!("{line}");
    }
    println!("wrote {}", dir.display());
    Ok(())
}
