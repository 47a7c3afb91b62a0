//! `generate_until` scoring as lm-evaluation-harness 0.4.13 scores it: each generation passes
//! through every `filter_list` pipeline (none given: one pipeline `none` that takes the first
//! response), and each metric is computed on each pipeline's output, keyed `metric,pipeline`.
//!
//! Filters: `regex` (Python's `re.findall` of `regex_pattern`, the `group_select`-th match —
//! negative from the end; of a match with several groups the first non-empty one; stripped;
//! `fallback`, default `"[invalid]"`, when nothing matches), `take_first` (one response, so
//! the identity), `remove_whitespace` (strip both ends), `lowercase`, `uppercase`.
//! Metric `exact_match` (Hugging Face `evaluate`'s, with the metric's `regexes_to_ignore`
//! removed from both sides first, then `ignore_case`, `ignore_punctuation`); `includes` and
//! `numeric` are Interplab's (the target in the text; the last number equal within 1e-6).

use std::collections::BTreeMap;

use regex::Regex;
use serde::Serialize;

use interplab_core::{Error, Result};

use crate::scorers::{self, compile, MatchOptions};
use crate::task::{FilterSpec, MetricSpec, DEFAULT_REGEX};

/// The generation metrics read.
pub const GEN_METRICS: [&str; 3] = ["exact_match", "includes", "numeric"];

/// One generation, scored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenItem {
    pub doc: usize,
    /// The generated text (cut at the stop strings).
    pub text: String,
    /// The target.
    pub target: String,
    /// Each pipeline's output.
    pub filtered: BTreeMap<String, String>,
    /// `metric,pipeline` → 0/1.
    pub scores: BTreeMap<String, f64>,
    /// New tokens.
    pub n_tokens: usize,
    /// `until`, `eos` or `length`.
    pub finish: String,
}

enum Step {
    Regex {
        re: Regex,
        select: i64,
        fallback: String,
    },
    TakeFirst,
    Strip,
    Lower,
    Upper,
}

/// A compiled pipeline.
pub struct Pipeline {
    pub name: String,
    steps: Vec<Step>,
}

/// The task's pipelines, compiled (none given: the harness's `none` = take_first).
pub fn pipelines(filters: Option<&[FilterSpec]>) -> Result<Vec<Pipeline>> {
    let Some(filters) = filters else {
        return Ok(vec![Pipeline {
            name: "none".into(),
            steps: vec![Step::TakeFirst],
        }]);
    };
    filters
        .iter()
        .map(|f| {
            let steps = f
                .filter
                .iter()
                .map(|s| {
                    Ok(match s.function.as_str() {
                        "regex" => Step::Regex {
                            re: compile(s.regex_pattern.as_deref().unwrap_or(DEFAULT_REGEX))?,
                            select: s.group_select.unwrap_or(0),
                            fallback: s.fallback.clone().unwrap_or_else(|| "[invalid]".into()),
                        },
                        "take_first" => Step::TakeFirst,
                        "remove_whitespace" => Step::Strip,
                        "lowercase" => Step::Lower,
                        "uppercase" => Step::Upper,
                        other => {
                            return Err(Error::Input(format!(
                                "filter {:?}: unknown function {other:?}",
                                f.name
                            )))
                        }
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Pipeline {
                name: f.name.clone(),
                steps,
            })
        })
        .collect()
}

impl Pipeline {
    /// The pipeline's output for one response.
    pub fn apply(&self, text: &str) -> String {
        let mut t = text.to_string();
        for s in &self.steps {
            t = match s {
                Step::Regex {
                    re,
                    select,
                    fallback,
                } => findall_select(re, &t, *select).unwrap_or_else(|| fallback.clone()),
                Step::TakeFirst => t,
                Step::Strip => t.trim().to_string(),
                Step::Lower => t.to_lowercase(),
                Step::Upper => t.to_uppercase(),
            };
        }
        t
    }
}

/// Python's `re.findall(re, text)[select]` as the harness's regex filter reads it, stripped;
/// `None` for no match, an index out of range, or a several-group match with every group
/// empty.
fn findall_select(re: &Regex, text: &str, select: i64) -> Option<String> {
    let all: Vec<regex::Captures> = re.captures_iter(text).collect();
    let n = all.len() as i64;
    let k = if select < 0 { n + select } else { select };
    if n == 0 || !(0..n).contains(&k) {
        return None;
    }
    let c = &all[k as usize];
    let groups = c.len() - 1;
    let m = match groups {
        0 => c.get(0).map(|m| m.as_str().to_string()),
        1 => Some(c.get(1).map_or(String::new(), |m| m.as_str().to_string())),
        _ => (1..=groups)
            .filter_map(|g| c.get(g))
            .map(|m| m.as_str())
            .find(|s| !s.is_empty())
            .map(str::to_string),
    }?;
    Some(m.trim().to_string())
}

/// A metric of `metric_list`, compiled.
pub struct GenMetric {
    pub name: String,
    ignore: Vec<Regex>,
    options: MatchOptions,
}

/// The task's generation metrics (`exact_match` when it names none).
pub fn gen_metrics(list: Option<&[MetricSpec]>) -> Result<Vec<GenMetric>> {
    let default = [MetricSpec {
        metric: "exact_match".into(),
        aggregation: None,
        higher_is_better: None,
        ignore_case: None,
        ignore_punctuation: None,
        regexes_to_ignore: None,
    }];
    list.unwrap_or(&default)
        .iter()
        .map(|m| {
            if !GEN_METRICS.contains(&m.metric.as_str()) {
                return Err(Error::Input(format!(
                    "metric {:?} is not a generation metric ({})",
                    m.metric,
                    GEN_METRICS.join(", ")
                )));
            }
            Ok(GenMetric {
                name: m.metric.clone(),
                ignore: m
                    .regexes_to_ignore
                    .iter()
                    .flatten()
                    .map(|r| compile(r))
                    .collect::<Result<_>>()?,
                options: MatchOptions {
                    ignore_case: m.ignore_case.unwrap_or(false),
                    ignore_punctuation: m.ignore_punctuation.unwrap_or(false),
                },
            })
        })
        .collect()
}

impl GenMetric {
    /// 1.0 or 0.0 for one prediction against its target.
    pub fn score(&self, pred: &str, target: &str) -> f64 {
        let clean = |s: &str| {
            self.ignore
                .iter()
                .fold(s.to_string(), |t, re| re.replace_all(&t, "").into_owned())
        };
        let (p, t) = (clean(pred), clean(target));
        let hit = match self.name.as_str() {
            "exact_match" => scorers::exact_match(&p, &t, self.options),
            "includes" => scorers::includes(&p, &t, self.options),
            _ => scorers::numeric_match(&p, &t, 1e-6),
        };
        if hit {
            1.0
        } else {
            0.0
        }
    }
}

/// Scores one generation through every pipeline and metric.
pub fn gen_item(
    doc: usize,
    generated: &crate::generate::Generated,
    target: &str,
    pipelines: &[Pipeline],
    metrics: &[GenMetric],
) -> GenItem {
    let mut filtered = BTreeMap::new();
    let mut scores = BTreeMap::new();
    for p in pipelines {
        let out = p.apply(&generated.text);
        for m in metrics {
            scores.insert(format!("{},{}", m.name, p.name), m.score(&out, target));
        }
        filtered.insert(p.name.clone(), out);
    }
    GenItem {
        doc,
        text: generated.text.clone(),
        target: target.to_string(),
        filtered,
        scores,
        n_tokens: generated.n_tokens,
        finish: generated.finish.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::FilterStep;

    fn step(function: &str, pattern: Option<&str>, select: Option<i64>) -> FilterStep {
        FilterStep {
            function: function.into(),
            regex_pattern: pattern.map(str::to_string),
            group_select: select,
            fallback: None,
        }
    }

    #[test]
    fn regex_filter_reads_findall_as_python() {
        let f = [FilterSpec {
            name: "strict".into(),
            filter: vec![step("regex", None, None), step("take_first", None, None)],
        }];
        let p = &pipelines(Some(&f)).unwrap()[0];
        // The default pattern, one group: the number after "#### ".
        assert_eq!(p.apply("so #### 1,234 done"), "1,234");
        assert_eq!(p.apply("no marker"), "[invalid]");
        // Several groups: the first non-empty; select −1: the last match.
        let re = compile(r"(a)|(b)").unwrap();
        assert_eq!(findall_select(&re, "xbx", 0).as_deref(), Some("b"));
        let re = compile(r"n=(\d+)").unwrap();
        assert_eq!(findall_select(&re, "n=1 n=2", -1).as_deref(), Some("2"));
        assert_eq!(findall_select(&re, "n=1", 3), None);
        // No group: the whole match, stripped.
        let re = compile(r" \w+ ").unwrap();
        assert_eq!(findall_select(&re, "a bc d", 0).as_deref(), Some("bc"));
    }

    #[test]
    fn whitespace_case_and_default_pipeline() {
        let f = [FilterSpec {
            name: "loose".into(),
            filter: vec![
                step("remove_whitespace", None, None),
                step("lowercase", None, None),
            ],
        }];
        assert_eq!(pipelines(Some(&f)).unwrap()[0].apply("  Paris \n"), "paris");
        let none = pipelines(None).unwrap();
        assert_eq!(none[0].name, "none");
        assert_eq!(none[0].apply(" Paris"), " Paris");
    }

    #[test]
    fn exact_match_with_regexes_to_ignore() {
        let m = gen_metrics(Some(&[MetricSpec {
            metric: "exact_match".into(),
            aggregation: None,
            higher_is_better: None,
            ignore_case: Some(true),
            ignore_punctuation: Some(false),
            regexes_to_ignore: Some(vec![",".into(), r"\$".into()]),
        }]))
        .unwrap();
        assert_eq!(m[0].score("$1,234", "1234"), 1.0);
        assert_eq!(m[0].score("1234.", "1234"), 0.0);
        // Untouched, " Paris" is not "Paris" (the harness does not strip).
        let plain = gen_metrics(None).unwrap();
        assert_eq!(plain[0].score(" Paris", "Paris"), 0.0);
        assert!(gen_metrics(Some(&[MetricSpec {
            metric: "acc".into(),
            aggregation: None,
            higher_is_better: None,
            ignore_case: None,
            ignore_punctuation: None,
            regexes_to_ignore: None,
        }]))
        .is_err());
    }
}
