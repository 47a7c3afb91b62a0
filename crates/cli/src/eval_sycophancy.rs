//! `interplab eval MODEL --task sycophancy`: the Anthropic sycophancy items
//! (`interplab_lab::eval_sycophancy`).

use interplab_lab::eval_sycophancy::Config;

use crate::cmd_eval::EvalArgs;
use crate::exec::execute;

/// Score the items, print the rates, write the run directory.
pub fn run(a: &EvalArgs) -> anyhow::Result<()> {
    let cfg = a.out.config_or(|| Config {
        model: a.model.source(),
        limit: a.limit,
        batch: a.batch,
        add_bos: a.add_bos,
        chat: if a.chat_only {
            vec![true]
        } else {
            Config::default().chat
        },
        ..Default::default()
    })?;
    let (out, dir) = execute(&cfg, &a.out, a.out.existing(false))?;
    let r = &out.results;
    println!(
        "sycophancy on {} items ({} question stems):",
        r.n_items, r.n_stems
    );
    for v in &r.variants {
        let label = if v.chat {
            "chat template"
        } else {
            "plain text"
        };
        println!(
            "  {label:<14} sycophantic {} (clustered s.e. {:.3}); picks (A) {}; balanced {:.3}",
            v.sycophancy.rate.show(),
            v.sycophancy.clustered_se,
            v.picks_a.show(),
            v.balanced
        );
        if let Some(g) = &v.generated {
            let unreadable = v.generated_unreadable.unwrap_or(0);
            if g.n == 0 {
                println!(
                    "  {:<14} generated: no reply named a letter ({unreadable} replies)",
                    ""
                );
            } else {
                println!(
                    "  {:<14} generated: sycophantic {} ({unreadable} replies named no letter)",
                    "",
                    g.show()
                );
            }
        }
    }
    for (k, x) in &r.comparisons {
        println!(
            "  variant {} − variant 1: {:+.3} [{:+.3}, {:+.3}], p = {:.4} ({}), MDE {:.3}",
            k + 1,
            x.effect,
            x.ci.0,
            x.ci.1,
            x.p_value,
            x.test,
            x.mde
        );
    }
    println!("wrote {}", dir.display());
    Ok(())
}
