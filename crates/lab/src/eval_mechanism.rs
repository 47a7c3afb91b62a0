//! Behaviour → mechanism for a paired eval: on the items whose yes/no answer flips between two
//! conditions, which layers and heads carry the difference, and what ablating them does to the
//! eval over every item.
//!
//! The two conditions' prompts differ in length, so what is patched is what aligns: the
//! residual stream entering each layer, and each head's `z`, at the final position (where the
//! answer is read), from the clean condition's run into the corrupted one's
//! ([`interplab_analysis::final_patching`]). The metric is the answer's logit difference at
//! that position — the first token where the "Yes" and "No" continuations differ, after the
//! tokens they share (with a chat template, the newline the generation prompt ends with) —
//! normalised per item: 0 = the corrupted condition's answer, 1 = the clean one's. Attribution
//! patching (one backward per item) ranks every head; activation patching then measures each
//! exactly (a one-position patch is cheap), and the heads with the largest exact effect are
//! patched together and ablated over every item of both conditions.

use crate::rate::Rate;
use interplab_analysis::final_patching::{
    answer_logit_diffs, mean_z, AnswerPrompt, FinalPatching, HeadAblation,
};
use interplab_analysis::stats::{mean_stderr, pearson, Comparison};
use interplab_core::loader::LoadedModel;
use interplab_eval::loglik::encode;
use interplab_report::{BarChart, ColorScale, Figure, Heatmap, Report};
use serde::{Deserialize, Serialize};

use crate::Progress;

/// How much of the mechanism study to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MechanismOptions {
    /// Run it at all.
    pub enabled: bool,
    /// Flipping items studied at most (those with the largest logit-difference gap).
    pub items: usize,
    /// Heads listed, by attribution and by exact effect.
    pub top_heads: usize,
    /// Heads ablated together over every item (the largest exact effects).
    pub ablate_heads: usize,
    /// How they are ablated.
    pub ablation: HeadAblation,
}

impl Default for MechanismOptions {
    fn default() -> Self {
        MechanismOptions {
            enabled: true,
            items: 16,
            top_heads: 10,
            ablate_heads: 3,
            ablation: HeadAblation::Mean,
        }
    }
}

/// One head's effect, averaged over the studied items.
#[derive(Debug, Clone, Serialize)]
pub struct HeadEffect {
    pub layer: usize,
    pub head: usize,
    /// Mean attribution-patching estimate (fraction of the gap).
    pub attribution: f64,
    /// Mean exact activation-patching effect (fraction of the gap restored).
    pub activation: f64,
    /// Standard error of `activation` over items.
    pub activation_stderr: f64,
}

/// Last-position logit differences (answer − wrong) of every item, with and without the
/// ablation.
#[derive(Debug, Clone, Serialize)]
pub struct LogitDiffs {
    pub clean: Vec<f64>,
    pub corrupted: Vec<f64>,
    pub clean_ablated: Vec<f64>,
    pub corrupted_ablated: Vec<f64>,
}

/// The mechanism study of one pair of conditions.
#[derive(Debug, Clone, Serialize)]
pub struct Mechanism {
    /// The condition patched from, and the one patched into.
    pub clean: String,
    pub corrupted: String,
    /// The two tokens whose logit difference is the metric, as text.
    pub answer_tokens: [String; 2],
    /// Items whose answer flips between the conditions.
    pub n_flips: usize,
    /// The items studied (indices into the eval's items).
    pub items: Vec<usize>,
    /// Per studied item, the raw logit difference of the clean and the corrupted run.
    pub item_logit_diffs: Vec<(f64, f64)>,
    /// `resid_pre` at the final position per layer: mean exact effect, its stderr, and mean
    /// attribution estimate.
    pub resid_activation: Vec<f64>,
    pub resid_activation_stderr: Vec<f64>,
    pub resid_attribution: Vec<f64>,
    /// Every head's mean exact effect and attribution, `[layer][head]`.
    pub head_activation: Vec<Vec<f64>>,
    pub head_attribution: Vec<Vec<f64>>,
    /// Pearson correlation of attribution with the exact effect over every head (item means).
    pub attribution_correlation: f64,
    /// The heads ranked first by attribution, with their exact effects.
    pub top_by_attribution: Vec<HeadEffect>,
    /// The heads with the largest exact effect.
    pub top_by_activation: Vec<HeadEffect>,
    /// The `ablate_heads` heads of `top_by_activation` patched together: mean effect, stderr.
    pub together: (f64, f64),
    /// The heads ablated and how.
    pub ablated: Vec<(usize, usize)>,
    pub ablation: HeadAblation,
    /// Every item's logit differences with and without the ablation.
    pub logit_diffs: LogitDiffs,
    /// max |σ(logit difference) − P(yes)| over every item and both conditions: 0 when each
    /// answer is one token after the shared ones (then the eval's P(yes) is σ of the metric).
    pub single_token_gap: f64,
}

/// The prompt whose last position predicts the first token where `yes` and `no` differ after
/// `context`, tokenised as the log-likelihood scorer does.
pub fn answer_prompt(
    m: &LoadedModel,
    context: &str,
    answers: &[String; 2],
    add_bos: bool,
) -> anyhow::Result<AnswerPrompt> {
    let e = encode(&m.tokenizer, context, answers, add_bos)?;
    let (y, n) = (&e.continuations[0], &e.continuations[1]);
    let k = y.iter().zip(n).take_while(|(a, b)| a == b).count();
    if k >= y.len() || k >= n.len() {
        anyhow::bail!(
            "the answers {:?} and {:?} share every token of the shorter one: no token tells \
             them apart",
            answers[0],
            answers[1]
        );
    }
    let mut tokens = e.context;
    tokens.extend_from_slice(&y[..k]);
    Ok(AnswerPrompt {
        tokens,
        answer: y[k],
        wrong: n[k],
    })
}

/// Indices of the items whose answer (`p > 0.5`) differs between the two conditions.
pub fn flipped(a: &[f64], b: &[f64]) -> Vec<usize> {
    a.iter()
        .zip(b)
        .enumerate()
        .filter(|(_, (x, y))| (**x > 0.5) != (**y > 0.5))
        .map(|(i, _)| i)
        .collect()
}

/// The logistic function.
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn rank(values: &[Vec<f64>], by_abs: bool) -> Vec<(usize, usize)> {
    let mut all: Vec<(usize, usize)> = values
        .iter()
        .enumerate()
        .flat_map(|(l, r)| (0..r.len()).map(move |h| (l, h)))
        .collect();
    let key = |&(l, h): &(usize, usize)| {
        let v = values[l][h];
        if by_abs {
            v.abs()
        } else {
            v
        }
    };
    all.sort_by(|a, b| key(b).total_cmp(&key(a)).then(a.cmp(b)));
    all
}

/// Run the study: `clean`/`corrupted` are the two conditions' contexts per item (dressed),
/// `p_clean`/`p_corrupted` the eval's P(yes) per item (which decide the flips).
#[allow(clippy::too_many_arguments)]
pub fn study(
    m: &LoadedModel,
    add_bos: bool,
    names: (&str, &str),
    clean: &[String],
    corrupted: &[String],
    answers: &[String; 2],
    p_clean: &[f64],
    p_corrupted: &[f64],
    opts: &MechanismOptions,
    progress: &mut dyn Progress,
) -> anyhow::Result<Mechanism> {
    let model = &m.model;
    let to_prompts = |cs: &[String]| -> anyhow::Result<Vec<AnswerPrompt>> {
        cs.iter()
            .map(|c| answer_prompt(m, c, answers, add_bos))
            .collect()
    };
    let clean_p = to_prompts(clean)?;
    let corr_p = to_prompts(corrupted)?;
    progress.phase("mechanism: logit differences of every item");
    let ld_clean = answer_logit_diffs(model, &clean_p, &[], HeadAblation::Zero, None)?;
    let ld_corr = answer_logit_diffs(model, &corr_p, &[], HeadAblation::Zero, None)?;
    let single_token_gap = ld_clean
        .iter()
        .zip(p_clean)
        .chain(ld_corr.iter().zip(p_corrupted))
        .map(|(&ld, &p)| (sigmoid(ld) - p).abs())
        .fold(0.0, f64::max);
    let flips = flipped(p_clean, p_corrupted);
    let mut items = flips.clone();
    let gap = |i: usize| (ld_clean[i] - ld_corr[i]).abs();
    items.sort_by(|&a, &b| gap(b).total_cmp(&gap(a)).then(a.cmp(&b)));
    items.truncate(opts.items);
    let (nl, nh) = (model.cfg.n_layers, model.cfg.n_heads);
    let mut resid_exact: Vec<Vec<f64>> = vec![Vec::new(); nl];
    let mut resid_attr: Vec<Vec<f64>> = vec![Vec::new(); nl];
    let mut head_exact: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); nh]; nl];
    let mut head_attr: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); nh]; nl];
    let mut setups = Vec::new();
    progress.phase("mechanism: attribution and activation patching");
    progress.total(items.len() as u64, "items");
    for (k, &i) in items.iter().enumerate() {
        let s = FinalPatching::new(model, clean_p[i].clone(), corr_p[i].clone())?;
        let (ra, ha) = s.attribution()?;
        let re = s.resid_by_layer()?;
        let he = s.heads()?;
        for l in 0..nl {
            resid_exact[l].push(re[l]);
            resid_attr[l].push(ra[l]);
            for h in 0..nh {
                head_exact[l][h].push(he[l][h]);
                head_attr[l][h].push(ha[l][h]);
            }
        }
        setups.push(s);
        progress.position(k as u64 + 1);
    }
    let mean = |v: &[f64]| mean_stderr(v).0;
    let head_activation: Vec<Vec<f64>> = head_exact
        .iter()
        .map(|r| r.iter().map(|v| mean(v)).collect())
        .collect();
    let head_attribution: Vec<Vec<f64>> = head_attr
        .iter()
        .map(|r| r.iter().map(|v| mean(v)).collect())
        .collect();
    let effect = |(l, h): (usize, usize)| HeadEffect {
        layer: l,
        head: h,
        attribution: head_attribution[l][h],
        activation: head_activation[l][h],
        activation_stderr: mean_stderr(&head_exact[l][h]).1,
    };
    let studied = !items.is_empty();
    let (top_by_attribution, top_by_activation): (Vec<HeadEffect>, Vec<HeadEffect>) = if studied {
        (
            rank(&head_attribution, true)
                .into_iter()
                .take(opts.top_heads)
                .map(effect)
                .collect(),
            rank(&head_activation, false)
                .into_iter()
                .take(opts.top_heads)
                .map(effect)
                .collect(),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let ablated: Vec<(usize, usize)> = top_by_activation
        .iter()
        .take(opts.ablate_heads)
        .map(|e| (e.layer, e.head))
        .collect();
    let together_each = setups
        .iter()
        .map(|s| s.heads_together(&ablated))
        .collect::<interplab_core::Result<Vec<f64>>>()?;
    let together = if studied {
        mean_stderr(&together_each)
    } else {
        (f64::NAN, f64::NAN)
    };
    let flat = |v: &[Vec<f64>]| v.iter().flatten().copied().collect::<Vec<f64>>();
    let attribution_correlation = if studied {
        pearson(&flat(&head_attribution), &flat(&head_activation))
    } else {
        f64::NAN
    };
    let (clean_ablated, corrupted_ablated) = if ablated.is_empty() {
        (ld_clean.clone(), ld_corr.clone())
    } else {
        progress.phase("mechanism: ablating the top heads over every item");
        let means = match opts.ablation {
            HeadAblation::Mean => {
                let all: Vec<&[u32]> = clean_p
                    .iter()
                    .chain(&corr_p)
                    .map(|p| p.tokens.as_slice())
                    .collect();
                Some(mean_z(model, &all)?)
            }
            HeadAblation::Zero => None,
        };
        (
            answer_logit_diffs(model, &clean_p, &ablated, opts.ablation, means.as_deref())?,
            answer_logit_diffs(model, &corr_p, &ablated, opts.ablation, means.as_deref())?,
        )
    };
    let decode = |t: u32| {
        m.tokenizer
            .decode(&[t])
            .unwrap_or_else(|_| format!("<{t}>"))
    };
    let answer_tokens = clean_p
        .first()
        .map(|p| [decode(p.answer), decode(p.wrong)])
        .unwrap_or_default();
    Ok(Mechanism {
        clean: names.0.into(),
        corrupted: names.1.into(),
        answer_tokens,
        n_flips: flips.len(),
        item_logit_diffs: items.iter().map(|&i| (ld_clean[i], ld_corr[i])).collect(),
        items,
        resid_activation: resid_exact.iter().map(|v| mean(v)).collect(),
        resid_activation_stderr: resid_exact.iter().map(|v| mean_stderr(v).1).collect(),
        resid_attribution: resid_attr.iter().map(|v| mean(v)).collect(),
        head_activation,
        head_attribution,
        attribution_correlation,
        top_by_attribution,
        top_by_activation,
        together,
        ablated,
        ablation: opts.ablation,
        logit_diffs: LogitDiffs {
            clean: ld_clean,
            corrupted: ld_corr,
            clean_ablated,
            corrupted_ablated,
        },
        single_token_gap,
    })
}

fn head_rows(v: &[HeadEffect]) -> Vec<Vec<String>> {
    v.iter()
        .map(|e| {
            vec![
                format!("{}.{}", e.layer, e.head),
                format!("{:+.3}", e.attribution),
                format!("{:+.3} ± {:.3}", e.activation, e.activation_stderr),
            ]
        })
        .collect()
}

/// The study's report section and figures; `metric_rows` are the eval's own rows for the
/// ablation (metric, before, after, comparison), written by the eval.
pub fn render(
    report: &mut Report,
    mech: &Mechanism,
    ablation_rows: Vec<Vec<String>>,
) -> Vec<(&'static str, Figure)> {
    report.heading(format!(
        "Behaviour → mechanism: {} patched into {}",
        mech.clean, mech.corrupted
    ));
    report.paragraph(format!(
        "Items whose answer by log-likelihood (P(yes) > 0.5) flips between the two conditions: \
         {}. The {} with the largest gap between the two runs' logit differences were studied. \
         The prompts differ in length, so what is patched is what aligns at the final position, \
         where the answer is read: the residual stream entering each layer (resid_pre) and each \
         head's output (hook_z), from the {} run into the {} run. Metric: logit({:?}) − \
         logit({:?}) at that position, normalised per item as the fraction of the gap restored \
         (0 = the {} answer, 1 = the {} answer), averaged over items (± standard error over \
         items). Attribution patching (gradient × activation difference, one backward per item) \
         ranks the heads; activation patching then measures every head exactly. The metric \
         is the eval's P(yes) up to max |σ(logit difference) − P(yes)| = {:.2e} over all items.",
        mech.n_flips,
        mech.items.len(),
        mech.clean,
        mech.corrupted,
        mech.answer_tokens[0],
        mech.answer_tokens[1],
        mech.corrupted,
        mech.clean,
        mech.single_token_gap,
    ));
    let mut figures = Vec::new();
    if mech.items.is_empty() {
        report.paragraph(
            "No item flips between the conditions, so there is no behaviour difference to trace.",
        );
        return figures;
    }
    let rows: Vec<Vec<String>> = mech
        .items
        .iter()
        .zip(&mech.item_logit_diffs)
        .map(|(i, (c, x))| vec![i.to_string(), format!("{c:+.3}"), format!("{x:+.3}")])
        .collect();
    report.table(
        &[
            "item",
            &format!("ld, {}", mech.clean),
            &format!("ld, {}", mech.corrupted),
        ],
        rows,
    );
    let resid_rows = (0..mech.resid_activation.len())
        .map(|l| {
            vec![
                l.to_string(),
                format!(
                    "{:+.3} ± {:.3}",
                    mech.resid_activation[l], mech.resid_activation_stderr[l]
                ),
                format!("{:+.3}", mech.resid_attribution[l]),
            ]
        })
        .collect();
    report.heading("Residual stream at the final position, per layer");
    report.table(
        &[
            "layer",
            "activation patching (fraction restored)",
            "attribution",
        ],
        resid_rows,
    );
    report.heading("Heads");
    report.paragraph(format!(
        "Attribution against the exact effect over every head: Pearson r = {:.3}. Patching the \
         {} heads with the largest exact effects together restores {:+.3} ± {:.3} of the gap.",
        mech.attribution_correlation,
        mech.ablated.len(),
        mech.together.0,
        mech.together.1
    ));
    let header = [
        "head (layer.head)",
        "attribution",
        "activation (fraction restored)",
    ];
    report.paragraph("Ranked by |attribution|:");
    report.table(&header, head_rows(&mech.top_by_attribution));
    report.paragraph("Ranked by exact effect:");
    report.table(&header, head_rows(&mech.top_by_activation));
    let heat = Figure::Heatmap(Heatmap {
        title: format!(
            "patching each head's z at the final position, {} → {}",
            mech.clean, mech.corrupted
        ),
        x_label: "head".into(),
        y_label: "layer".into(),
        x_ticks: (0..mech.head_activation.first().map_or(0, Vec::len))
            .map(|h| h.to_string())
            .collect(),
        y_ticks: (0..mech.head_activation.len())
            .map(|l| l.to_string())
            .collect(),
        values: mech.head_activation.clone(),
        scale: ColorScale::Diverging,
        range: None,
        colorbar_label: "fraction of the gap restored".into(),
    });
    report.figure(
        "mean exact effect of each head (activation patching)",
        &heat,
    );
    figures.push(("mechanism_heads", heat));
    let bars = Figure::Bar(BarChart {
        title: "patching resid_pre at the final position (± 1 s.e.)".into(),
        x_label: "layer".into(),
        y_label: "fraction of the gap restored".into(),
        labels: (0..mech.resid_activation.len())
            .map(|l| l.to_string())
            .collect(),
        values: mech.resid_activation.clone(),
        errors: Some(mech.resid_activation_stderr.clone()),
        ..Default::default()
    });
    report.figure("mean exact effect of the residual stream per layer", &bars);
    figures.push(("mechanism_resid", bars));
    let heads: Vec<String> = mech
        .ablated
        .iter()
        .map(|(l, h)| format!("{l}.{h}"))
        .collect();
    report.heading("Ablating the top heads over every item");
    report.paragraph(format!(
        "Heads {} ({} ablation: each head's z replaced at every position by {}) in every prompt \
         of both conditions; the eval's metric read from the answer's logit difference \
         (P(yes) = σ(ld)).",
        heads.join(", "),
        match mech.ablation {
            HeadAblation::Mean => "mean",
            HeadAblation::Zero => "zero",
        },
        match mech.ablation {
            HeadAblation::Mean => "its mean over every position of every prompt of the study",
            HeadAblation::Zero => "zeros",
        }
    ));
    report.table(
        &[
            "metric",
            "before",
            "after ablation",
            "after − before [95% CI], p (test)",
        ],
        ablation_rows,
    );
    figures
}

/// `+0.12 [+0.03, +0.21], p = 0.0120 (exact McNemar), MDE 0.10`.
pub fn show_comparison(c: &Comparison) -> String {
    format!(
        "{:+.3} [{:+.3}, {:+.3}], p = {:.4} ({}), MDE {:.3}",
        c.effect, c.ci.0, c.ci.1, c.p_value, c.test, c.mde
    )
}

/// An ablation row: a binary metric per item before and after, compared paired.
pub fn ablation_row(
    name: &str,
    before: &[bool],
    after: &[bool],
    seed: u64,
) -> anyhow::Result<Vec<String>> {
    let c = Comparison::binary(after, before, 10_000, 0.95, seed)?;
    Ok(vec![
        name.to_string(),
        Rate::flags(before).show(),
        Rate::flags(after).show(),
        show_comparison(&c),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flips_are_answers_on_opposite_sides_of_one_half() {
        let a = [0.9, 0.2, 0.6, 0.4, 0.51];
        let b = [0.1, 0.3, 0.7, 0.8, 0.5];
        assert_eq!(flipped(&a, &b), vec![0, 3, 4]);
        assert!(flipped(&[], &[]).is_empty());
    }

    #[test]
    fn heads_rank_by_value_or_magnitude() {
        let v = vec![vec![0.1, -0.5], vec![0.3, 0.0]];
        assert_eq!(rank(&v, false)[0], (1, 0));
        assert_eq!(rank(&v, true)[0], (0, 1));
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-15);
    }

    #[test]
    fn rates_count_and_bound() {
        let r = Rate::flags(&[true, false, true, true]);
        assert_eq!((r.k, r.n), (3, 4));
        assert_eq!(r.rate, 0.75);
        assert!(r.ci.0 < 0.75 && r.ci.1 > 0.75 && r.ci.0 >= 0.0 && r.ci.1 <= 1.0);
        assert!(Rate::flags(&[]).rate.is_nan());
    }
}
