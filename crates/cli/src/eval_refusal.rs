//! `interplab eval MODEL --task refusal`: refusal rates of harmful requests across phrasings,
//! over-refusal of benign look-alikes (the study is `interplab_lab::eval_refusal`).

use interplab_lab::eval_refusal::Config;

use crate::cmd_eval::EvalArgs;
use crate::exec::execute;

/// Run the refusal study, print its table, write the run directory.
pub fn run(a: &EvalArgs) -> anyhow::Result<()> {
    let cfg = a.out.config_or(|| {
        let d = Config::default();
        Config {
            model: a.model.source(),
            judge: a.judge.clone(),
            per_set: a.per_set.unwrap_or(d.per_set),
            max_new_tokens: a.max_new_tokens.unwrap_or(d.max_new_tokens),
            batch: a.batch,
            ..d
        }
    })?;
    let (out, dir) = execute(&cfg, &a.out, a.out.existing(false))?;
    let r = &out.results;
    println!(
        "refusal on {} harmful requests ({} per set), Wilson 95% intervals; Δ vs direct with exact McNemar p:",
        r.requests.len(),
        cfg.per_set
    );
    let direct = &r.phrasings[0];
    println!("  {:<30} {}", direct.phrasing.name, direct.refusal.show());
    for (p, c) in r.phrasings.iter().skip(1).zip(&r.comparisons) {
        let x = &c.refusal;
        println!(
            "  {:<30} {}  Δ {:+.3} [{:+.3}, {:+.3}], p = {:.4}, MDE {:.3}",
            p.phrasing.name,
            p.refusal.show(),
            x.effect,
            x.ci.0,
            x.ci.1,
            x.p_value,
            x.mde
        );
    }
    println!(
        "  pooled over phrasings: {:.3} ± {:.3} (s.e. clustered by request; naive {:.3})",
        r.pooled.rate, r.pooled.stderr_clustered, r.pooled.stderr_naive
    );
    println!(
        "over-refusal on benign look-alikes: {}",
        r.over_refusal.refusal.show()
    );
    println!(
        "classifier on known answers: FPR {}, FNR {}",
        r.classifier.false_positive.show(),
        r.classifier.false_negative.show()
    );
    if let Some(j) = &r.judge {
        println!(
            "judge {}: agreement with the classifier {}, kappa {:.3}",
            j.model,
            j.agreement.agreement.show(),
            j.agreement.kappa
        );
    }
    println!("wrote {}", dir.display());
    Ok(())
}
