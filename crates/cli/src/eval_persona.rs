//! `interplab eval MODEL --task persona`: the persona-truthfulness study
//! (`interplab_lab::eval_persona`).

use interplab_lab::eval_persona::Config;

use crate::cmd_eval::EvalArgs;
use crate::exec::execute;

/// Run the persona study, print its table, write the run directory.
pub fn run(a: &EvalArgs) -> anyhow::Result<()> {
    let cfg = a.out.config_or(|| {
        let d = Config::default();
        Config {
            model: a.model.source(),
            n_claims: if a.limit > 0 { a.limit } else { d.n_claims },
            batch: a.batch,
            add_bos: a.add_bos,
            ..d
        }
    })?;
    let (out, dir) = execute(&cfg, &a.out, a.out.existing(false))?;
    let r = &out.results;
    println!(
        "persona on {} false statements (call-out rate, Wilson 95% CI):",
        r.n_claims
    );
    for p in &r.personas {
        let vs = p.vs_truthful.as_ref().map_or(String::new(), |v| {
            let c = &v.callout;
            format!(
                "  vs truthful {:+.3} [{:+.3}, {:+.3}], p = {:.4}",
                c.effect, c.ci.0, c.ci.1, c.p_value
            )
        });
        println!(
            "  {:<13} log-lik. {}  generation {}{vs}",
            p.name,
            p.callout.show(),
            p.gen_callout.show()
        );
    }
    println!("wrote {}", dir.display());
    Ok(())
}
