//! Tasks as files: the subset of lm-evaluation-harness's YAML task format that Interplab
//! reads, so that one file runs in both tools.
//!
//! Read: `task`, `dataset_path: json` with `dataset_kwargs.data_files` (JSON Lines or a JSON
//! array per split, relative to the YAML file), `test_split`, `validation_split`,
//! `training_split`, `fewshot_split`, `fewshot_config.sampler` (`default` — Python's
//! `random.Random(fewshot_random_seed).sample`, as the harness — or `first_n`),
//! `doc_to_text`, `doc_to_choice`, `doc_to_target` (a field name, a [`Template`], an integer,
//! or for choices a list), `target_delimiter` (`" "`), `fewshot_delimiter` (`"\n\n"`),
//! `num_fewshot`, `description`, `output_type` (`multiple_choice`, `loglikelihood`,
//! `generate_until`), `generation_kwargs`, `metric_list`. `tag`, `metadata`,
//! `should_decontaminate` and `doc_to_decontamination_query` are accepted and ignored; any
//! other key is an error naming it and its line.
//!
//! Prompts are built as lm-evaluation-harness 0.4.13 builds them ([`Task::requests`]): the
//! system prompt and the description joined by the fewshot delimiter (`maybe_delimit`: no
//! delimiter when either side has whitespace at the join), then each shot as
//! `text + target_delimiter + target + fewshot_delimiter`, then the item's text. With a chat
//! template, the harness's single-turn layout: a system message (when there is a system prompt
//! or description), one user message with the shots and the question, the generation prompt,
//! and an empty target delimiter. Few-shot examples are drawn as its samplers draw them (see
//! `draw_shots`), with one Python `random.Random(seed)` per task advanced item by item.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use interplab_core::tokenizer::{ChatMessage, ChatTemplate};
use interplab_core::{Error, Result};

use crate::pyrandom::PyRandom;
use crate::template::Template;

/// What a task asks of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputType {
    /// Pick the choice with the highest log-likelihood.
    MultipleChoice,
    /// The log-likelihood of the target after the text.
    Loglikelihood,
    /// Generate until a stop sequence and score the text.
    GenerateUntil,
}

/// `doc_to_text` / `doc_to_target`: a template (or field name) or a constant index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FieldSpec {
    Index(i64),
    Text(String),
}

/// `doc_to_choice`: a template (or field name) naming a list, or the list itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ChoiceSpec {
    List(Vec<String>),
    Text(String),
}

/// `dataset_kwargs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetKwargs {
    /// One file (the split `train`) or a file per split.
    pub data_files: DataFiles,
}

/// `data_files`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DataFiles {
    One(String),
    Splits(BTreeMap<String, String>),
}

/// `fewshot_config`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FewshotConfig {
    /// `default` (random, as the harness) or `first_n`.
    #[serde(default)]
    pub sampler: Option<String>,
    /// The split to draw from (overrides `fewshot_split`).
    #[serde(default)]
    pub split: Option<String>,
}

/// `generation_kwargs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationKwargs {
    /// Stop sequences (one string or a list; unset: the few-shot delimiter, as the harness).
    #[serde(default)]
    pub until: Option<Until>,
    #[serde(default = "default_max_gen_toks")]
    pub max_gen_toks: usize,
    #[serde(default)]
    pub do_sample: bool,
    #[serde(default)]
    pub temperature: f64,
    #[serde(default)]
    pub top_p: Option<f64>,
}

/// `until`: one stop string or several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Until {
    One(String),
    Many(Vec<String>),
}

fn default_max_gen_toks() -> usize {
    256
}

/// One entry of `metric_list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    pub metric: String,
    #[serde(default)]
    pub aggregation: Option<String>,
    #[serde(default)]
    pub higher_is_better: Option<bool>,
    #[serde(default)]
    pub ignore_case: Option<bool>,
    #[serde(default)]
    pub ignore_punctuation: Option<bool>,
    #[serde(default)]
    pub regexes_to_ignore: Option<Vec<String>>,
}

/// One step of a `filter_list` pipeline (the harness's filters that Interplab implements:
/// `regex`, `take_first`, `remove_whitespace`, `lowercase`, `uppercase`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterStep {
    pub function: String,
    #[serde(default)]
    pub regex_pattern: Option<String>,
    #[serde(default)]
    pub group_select: Option<i64>,
    #[serde(default)]
    pub fallback: Option<String>,
}

/// One entry of `filter_list`: a named pipeline; every metric is reported per pipeline as
/// `metric,name` (the harness's key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    pub name: String,
    pub filter: Vec<FilterStep>,
}

/// The filter functions read.
pub const FILTER_FUNCTIONS: [&str; 5] = [
    "regex",
    "take_first",
    "remove_whitespace",
    "lowercase",
    "uppercase",
];

/// A task file as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskFile {
    pub task: String,
    pub dataset_path: String,
    #[serde(default)]
    pub dataset_name: Option<String>,
    #[serde(default)]
    pub dataset_kwargs: Option<DatasetKwargs>,
    #[serde(default)]
    pub test_split: Option<String>,
    #[serde(default)]
    pub validation_split: Option<String>,
    #[serde(default)]
    pub training_split: Option<String>,
    #[serde(default)]
    pub fewshot_split: Option<String>,
    #[serde(default)]
    pub fewshot_config: Option<FewshotConfig>,
    pub output_type: OutputType,
    pub doc_to_text: FieldSpec,
    #[serde(default)]
    pub doc_to_choice: Option<ChoiceSpec>,
    pub doc_to_target: FieldSpec,
    #[serde(default = "default_target_delimiter")]
    pub target_delimiter: String,
    #[serde(default = "default_fewshot_delimiter")]
    pub fewshot_delimiter: String,
    #[serde(default)]
    pub num_fewshot: Option<usize>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub generation_kwargs: Option<GenerationKwargs>,
    #[serde(default)]
    pub metric_list: Option<Vec<MetricSpec>>,
    #[serde(default)]
    pub filter_list: Option<Vec<FilterSpec>>,
    // Accepted for compatibility, not used.
    #[serde(default, skip_serializing)]
    pub tag: Option<serde_yaml::Value>,
    #[serde(default, skip_serializing)]
    pub metadata: Option<serde_yaml::Value>,
    #[serde(default, skip_serializing)]
    pub should_decontaminate: Option<bool>,
    #[serde(default, skip_serializing)]
    pub doc_to_decontamination_query: Option<String>,
}

fn default_target_delimiter() -> String {
    " ".into()
}

fn default_fewshot_delimiter() -> String {
    "\n\n".into()
}

/// The harness's default `regex_pattern` of the `regex` filter.
pub const DEFAULT_REGEX: &str = r"#### (\-?[0-9\.\,]+)";

/// The seed the harness gives every task's few-shot sampler (`--fewshot_random_seed`).
pub const FEWSHOT_SEED: u64 = 1234;

/// One item with where it came from (for error messages).
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    pub value: Value,
    /// `file:line` (or `file[index]` for a JSON array).
    pub origin: String,
}

/// A loaded task: the spec, its parsed templates, the evaluation items and the few-shot pool.
#[derive(Debug, Clone)]
pub struct Task {
    pub file: TaskFile,
    /// Where the YAML came from (`builtin:<name>` for built-in tasks).
    pub origin: String,
    pub docs: Vec<Doc>,
    pub fewshot_docs: Vec<Doc>,
    /// Whether the few-shot split's name is the test split's (both unset counts): the
    /// harness then keeps the item being asked out of its own shots.
    pub fewshot_is_test: bool,
    text: Rendered,
    target: Rendered,
    choice: Option<ChoiceRendered>,
    description: Option<Template>,
}

#[derive(Debug, Clone)]
enum Rendered {
    Const(i64),
    Field(String),
    Template(Template),
}

#[derive(Debug, Clone)]
enum ChoiceRendered {
    List(Vec<String>),
    Field(String),
    Template(Template),
}

/// What `doc_to_target` gives.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Index(usize),
    Indices(Vec<usize>),
    Text(String),
}

/// One multiple-choice or log-likelihood question, ready to score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Request {
    /// Index of the item in the evaluation split.
    pub doc: usize,
    /// The prompt.
    pub context: String,
    /// The choices as the item gives them (for `acc_norm`'s lengths).
    pub choices: Vec<String>,
    /// What is scored after the context: `target_delimiter + choice`.
    pub continuations: Vec<String>,
    /// The correct choices (several when the target is a list).
    pub gold: Vec<usize>,
    /// `generate_until`: the target text the generation is scored against (else empty).
    pub target: String,
}

/// How prompts are dressed: the prompt-variant axes a grid varies.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptOptions {
    /// Overrides the file's `num_fewshot`.
    pub num_fewshot: Option<usize>,
    /// A system prompt (the harness's `--system_instruction`).
    pub system: Option<String>,
    /// Render with the model's chat template.
    pub chat: bool,
    /// The few-shot sampler's seed (the harness's default 1234).
    pub fewshot_seed: Option<u64>,
}

impl Task {
    /// Reads a task file and its data.
    pub fn from_file(path: &Path) -> Result<Task> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let file = parse_task_file(&text, &path.display().to_string())?;
        let base = path.parent().unwrap_or(Path::new("."));
        let splits = read_splits(&file, base, &path.display().to_string(), &text)?;
        Task::new(file, splits, path.display().to_string(), &text)
    }

    /// A task from a spec and its splits already in memory (built-in tasks).
    pub fn from_parts(
        file: TaskFile,
        splits: BTreeMap<String, Vec<Doc>>,
        origin: &str,
    ) -> Result<Task> {
        let yaml = serde_yaml::to_string(&file).unwrap_or_default();
        Task::new(file, splits, origin.to_string(), &yaml)
    }

    fn new(
        file: TaskFile,
        mut splits: BTreeMap<String, Vec<Doc>>,
        origin: String,
        yaml: &str,
    ) -> Result<Task> {
        let at = |key: &str| match line_of(yaml, key) {
            Some(line) => format!("{origin}: line {line}: {key}"),
            None => format!("{origin}: {key}"),
        };
        if file.output_type == OutputType::MultipleChoice && file.doc_to_choice.is_none() {
            return Err(Error::Input(format!(
                "{origin}: output_type multiple_choice needs doc_to_choice"
            )));
        }
        for f in file.filter_list.iter().flatten() {
            for step in &f.filter {
                if !FILTER_FUNCTIONS.contains(&step.function.as_str()) {
                    return Err(Error::Input(format!(
                        "{}: filter {:?}: unknown function {:?} (read: {})",
                        at("filter_list"),
                        f.name,
                        step.function,
                        FILTER_FUNCTIONS.join(", ")
                    )));
                }
                if step.function == "regex" {
                    let pattern = step.regex_pattern.as_deref().unwrap_or(DEFAULT_REGEX);
                    crate::scorers::compile(pattern).map_err(|e| {
                        Error::Input(format!(
                            "{}: filter {:?}: {}",
                            at("filter_list"),
                            f.name,
                            strip(e)
                        ))
                    })?;
                }
            }
        }
        if let Some(s) = file
            .fewshot_config
            .as_ref()
            .and_then(|c| c.sampler.as_deref())
        {
            if s != "default" && s != "first_n" {
                return Err(Error::Input(format!(
                    "{}: unknown sampler {s:?} (default or first_n)",
                    at("fewshot_config")
                )));
            }
        }
        let take = |name: &Option<String>, splits: &BTreeMap<String, Vec<Doc>>, key: &str| {
            name.as_ref()
                .map(|n| {
                    splits.get(n).cloned().ok_or_else(|| {
                        Error::Input(format!(
                            "{}: no split {n:?} in the data (it has {})",
                            at(key),
                            splits.keys().cloned().collect::<Vec<_>>().join(", ")
                        ))
                    })
                })
                .transpose()
        };
        let test = take(&file.test_split, &splits, "test_split")?;
        let validation = take(&file.validation_split, &splits, "validation_split")?;
        let training = take(&file.training_split, &splits, "training_split")?;
        let fewshot_split = file
            .fewshot_config
            .as_ref()
            .and_then(|c| c.split.clone())
            .or(file.fewshot_split.clone());
        let fewshot = take(&fewshot_split, &splits, "fewshot_split")?;
        let docs = match (test, &validation) {
            (Some(t), _) => t,
            (None, Some(v)) => v.clone(),
            (None, None) => {
                return Err(Error::Input(format!(
                    "{origin}: neither test_split nor validation_split is set"
                )))
            }
        };
        if docs.is_empty() {
            return Err(Error::Input(format!("{origin}: the dataset has no items")));
        }
        // The harness: fewshot_split, else the training split, else validation, else test.
        let fewshot_docs = fewshot
            .or(training)
            .or(validation)
            .unwrap_or_else(|| docs.clone());
        // The harness compares the two names, so two unset names count as equal.
        let fewshot_is_test = fewshot_split == file.test_split;
        splits.clear();

        let features: Vec<String> = docs
            .first()
            .and_then(|d| d.value.as_object())
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        let rendered = |spec: &FieldSpec, key: &str| -> Result<Rendered> {
            Ok(match spec {
                FieldSpec::Index(i) => Rendered::Const(*i),
                FieldSpec::Text(t) if features.contains(t) => Rendered::Field(t.clone()),
                FieldSpec::Text(t) => Rendered::Template(
                    Template::parse(t).map_err(|e| Error::Input(format!("{}: {e}", at(key))))?,
                ),
            })
        };
        let text = rendered(&file.doc_to_text, "doc_to_text")?;
        let target = rendered(&file.doc_to_target, "doc_to_target")?;
        let choice = match &file.doc_to_choice {
            None => None,
            Some(ChoiceSpec::List(l)) => Some(ChoiceRendered::List(l.clone())),
            Some(ChoiceSpec::Text(t)) if features.contains(t) => {
                Some(ChoiceRendered::Field(t.clone()))
            }
            Some(ChoiceSpec::Text(t)) => Some(ChoiceRendered::Template(
                Template::parse(t)
                    .map_err(|e| Error::Input(format!("{}: {e}", at("doc_to_choice"))))?,
            )),
        };
        let description = file
            .description
            .as_deref()
            .filter(|d| !d.is_empty())
            .map(Template::parse)
            .transpose()
            .map_err(|e| Error::Input(format!("{}: {e}", at("description"))))?;
        let task = Task {
            file,
            origin: origin.clone(),
            docs,
            fewshot_docs,
            fewshot_is_test,
            text,
            target,
            choice,
            description,
        };
        // Every item must render: errors name the template's line and the item's.
        for (pool, docs) in [("", &task.docs), (" (few-shot pool)", &task.fewshot_docs)] {
            for d in docs.iter() {
                let ctx = |key: &str, e: Error| {
                    Error::Input(format!("{}: {}{pool}: {}", at(key), d.origin, strip(e)))
                };
                task.doc_text(&d.value).map_err(|e| ctx("doc_to_text", e))?;
                let choices = task
                    .doc_choices(&d.value)
                    .map_err(|e| ctx("doc_to_choice", e))?;
                task.doc_gold(&d.value, &choices)
                    .map_err(|e| ctx("doc_to_target", e))?;
                if task.file.output_type == OutputType::MultipleChoice && choices.is_empty() {
                    return Err(ctx(
                        "doc_to_choice",
                        Error::Input("the item has no choices".into()),
                    ));
                }
            }
        }
        Ok(task)
    }

    /// The generation settings of a `generate_until` task as the harness fills them in: no
    /// `generation_kwargs` means greedy until the few-shot delimiter with 256 new tokens at
    /// most; no `until` means the few-shot delimiter.
    pub fn generation(&self) -> GenerationKwargs {
        let mut g = self
            .file
            .generation_kwargs
            .clone()
            .unwrap_or(GenerationKwargs {
                until: None,
                max_gen_toks: default_max_gen_toks(),
                do_sample: false,
                temperature: 0.0,
                top_p: None,
            });
        if g.until.is_none() {
            g.until = Some(Until::Many(vec![self.file.fewshot_delimiter.clone()]));
        }
        g
    }

    /// The stop strings of [`Task::generation`].
    pub fn until(&self) -> Vec<String> {
        match self.generation().until {
            Some(Until::One(s)) => vec![s],
            Some(Until::Many(v)) => v,
            None => Vec::new(),
        }
    }

    /// The same task with `doc_to_text` replaced by `template` (a template over the item's
    /// fields, or a field's name), for the shots and the question alike: a prompt-sensitivity
    /// axis over a built-in task. Every item and shot must render, or the error names the
    /// template and the item.
    pub fn with_doc_to_text(&self, template: &str) -> Result<Task> {
        let features: Vec<String> = self
            .docs
            .first()
            .and_then(|d| d.value.as_object())
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        let text = if features.iter().any(|f| f == template) {
            Rendered::Field(template.to_string())
        } else {
            Rendered::Template(Template::parse(template).map_err(|e| {
                Error::Input(format!("{}: doc_to_text {template:?}: {e}", self.origin))
            })?)
        };
        let mut task = self.clone();
        task.file.doc_to_text = FieldSpec::Text(template.to_string());
        task.text = text;
        for d in task.docs.iter().chain(&task.fewshot_docs) {
            task.doc_text(&d.value).map_err(|e| {
                Error::Input(format!(
                    "{}: doc_to_text {template:?}: {}: {}",
                    self.origin,
                    d.origin,
                    strip(e)
                ))
            })?;
        }
        Ok(task)
    }

    /// The number of shots after `opts`.
    pub fn num_fewshot(&self, opts: &PromptOptions) -> usize {
        opts.num_fewshot.or(self.file.num_fewshot).unwrap_or(0)
    }

    /// `doc_to_text` of an item.
    pub fn doc_text(&self, doc: &Value) -> Result<String> {
        match &self.text {
            Rendered::Const(i) => Ok(i.to_string()),
            Rendered::Field(f) => Ok(match &doc[f.as_str()] {
                Value::String(s) => s.clone(),
                v => crate::template::python_repr(v),
            }),
            Rendered::Template(t) => t.render(doc),
        }
    }

    /// `doc_to_choice` of an item (empty when the task has none).
    pub fn doc_choices(&self, doc: &Value) -> Result<Vec<String>> {
        let value = match &self.choice {
            None => return Ok(Vec::new()),
            Some(ChoiceRendered::List(l)) => return Ok(l.clone()),
            Some(ChoiceRendered::Field(f)) => doc[f.as_str()].clone(),
            Some(ChoiceRendered::Template(t)) => t.value(doc)?,
        };
        let list = value
            .as_array()
            .ok_or_else(|| Error::Input(format!("the choices are not a list: {value}")))?;
        list.iter()
            .map(|c| match c {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                other => Err(Error::Input(format!("a choice is not text: {other}"))),
            })
            .collect()
    }

    /// `doc_to_target` of an item, before it is matched to the choices.
    pub fn doc_target(&self, doc: &Value) -> Result<Target> {
        let from_value = |v: &Value| -> Result<Target> {
            match v {
                Value::Number(n) if n.as_u64().is_some() => {
                    Ok(Target::Index(n.as_u64().unwrap_or(0) as usize))
                }
                Value::String(s) => Ok(Target::Text(s.clone())),
                Value::Array(a) => a
                    .iter()
                    .map(|x| {
                        x.as_u64().map(|i| i as usize).ok_or_else(|| {
                            Error::Input(format!("a target in the list is not an index: {x}"))
                        })
                    })
                    .collect::<Result<Vec<_>>>()
                    .map(Target::Indices),
                other => Err(Error::Input(format!("unusable target {other}"))),
            }
        };
        match &self.target {
            Rendered::Const(i) if *i >= 0 => Ok(Target::Index(*i as usize)),
            Rendered::Const(i) => Err(Error::Input(format!("negative target index {i}"))),
            Rendered::Field(f) => from_value(&doc[f.as_str()]),
            Rendered::Template(t) => {
                let s = t.render(doc)?;
                let digits = !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
                if digits && self.choice.is_some() {
                    Ok(Target::Index(s.parse().map_err(|_| {
                        Error::Input(format!("target index {s} is too large"))
                    })?))
                } else if s.len() >= 2 && s.starts_with('[') && s.ends_with(']') {
                    match serde_json::from_str::<Value>(&s) {
                        Ok(v @ Value::Array(_)) => from_value(&v),
                        _ => Ok(Target::Text(s)),
                    }
                } else {
                    Ok(Target::Text(s))
                }
            }
        }
    }

    /// The correct choice indices of an item; a target outside the choices is an error (the
    /// harness only warns and scores the item as wrong).
    pub fn doc_gold(&self, doc: &Value, choices: &[String]) -> Result<Vec<usize>> {
        if self.choice.is_none() {
            return Ok(Vec::new());
        }
        let gold = match self.doc_target(doc)? {
            Target::Index(i) => vec![i],
            Target::Indices(v) => v,
            Target::Text(t) => match choices.iter().position(|c| *c == t) {
                Some(i) => vec![i],
                None => {
                    return Err(Error::Input(format!(
                        "the target {t:?} is not one of the choices"
                    )))
                }
            },
        };
        if let Some(bad) = gold.iter().find(|&&i| i >= choices.len()) {
            return Err(Error::Input(format!(
                "target index {bad} is out of range ({} choices)",
                choices.len()
            )));
        }
        Ok(gold)
    }

    /// The text a shot shows as its answer.
    fn shot_target(&self, doc: &Value) -> Result<String> {
        let choices = self.doc_choices(doc)?;
        Ok(match self.doc_target(doc)? {
            Target::Text(t) => t,
            Target::Indices(v) => match v.first() {
                // The harness prints the first index itself, not its choice.
                Some(i) => i.to_string(),
                None => String::new(),
            },
            Target::Index(i) if self.choice.is_some() => choices
                .get(i)
                .cloned()
                .ok_or_else(|| Error::Input(format!("target index {i} is out of range")))?,
            Target::Index(i) => i.to_string(),
        })
    }

    /// The shots for one item, as the harness's samplers draw them: `first_n` takes the
    /// first `n` of the pool, the default draws `random.sample(pool, n)`; when the few-shot
    /// split is the test split the item itself is kept out (the default draws `n + 1`, drops
    /// copies of the item and keeps `n`, and draws again from the pool without the item if
    /// too few remain).
    fn draw_shots<'a>(
        &'a self,
        rng: &mut PyRandom,
        doc: &Value,
        n: usize,
        first_n: bool,
    ) -> Result<Vec<&'a Value>> {
        let all: Vec<&'a Value> = self.fewshot_docs.iter().map(|d| &d.value).collect();
        let others: Vec<&'a Value> = all.iter().copied().filter(|v| *v != doc).collect();
        let too_few = |have: usize| {
            Error::Input(format!(
                "{}: {n} shots asked but only {have} other items can be shots",
                self.origin
            ))
        };
        if first_n {
            let pool = if self.fewshot_is_test { others } else { all };
            if pool.len() < n {
                return Err(too_few(pool.len()));
            }
            return Ok(pool[..n].to_vec());
        }
        if !self.fewshot_is_test {
            return Ok(rng
                .sample_indices(all.len(), n)
                .into_iter()
                .map(|j| all[j])
                .collect());
        }
        let drawn: Vec<&Value> = rng
            .sample_indices(all.len(), n + 1)
            .into_iter()
            .map(|j| all[j])
            .filter(|v| *v != doc)
            .take(n)
            .collect();
        if drawn.len() == n {
            return Ok(drawn);
        }
        if others.len() < n {
            return Err(too_few(others.len()));
        }
        Ok(rng
            .sample_indices(others.len(), n)
            .into_iter()
            .map(|j| others[j])
            .collect())
    }

    /// Builds the requests for every item in order (the first `limit`, if given), drawing
    /// shots exactly as the harness does. The chat template is needed when `opts.chat`.
    pub fn requests(
        &self,
        opts: &PromptOptions,
        chat: Option<&ChatTemplate>,
        limit: Option<usize>,
    ) -> Result<Vec<Request>> {
        let shots = self.num_fewshot(opts);
        let n_docs = limit.map_or(self.docs.len(), |l| l.min(self.docs.len()));
        let first_n = self
            .file
            .fewshot_config
            .as_ref()
            .and_then(|c| c.sampler.as_deref())
            == Some("first_n");
        let pool = self.fewshot_docs.len();
        let need = if self.fewshot_is_test && !first_n {
            shots + 1
        } else {
            shots
        };
        if shots > 0 && need > pool {
            return Err(Error::Input(format!(
                "{}: {shots} shots asked but the few-shot pool has {pool} items",
                self.origin
            )));
        }
        let chat = match (opts.chat, chat) {
            (true, Some(c)) => Some(c),
            (true, None) => {
                return Err(Error::Input(
                    "a chat-template prompt was asked but the model has no chat template".into(),
                ))
            }
            (false, _) => None,
        };
        let mut rng = PyRandom::new(opts.fewshot_seed.unwrap_or(FEWSHOT_SEED));
        let delimiter = if chat.is_some() {
            String::new()
        } else {
            self.file.target_delimiter.clone()
        };
        let mut out = Vec::with_capacity(n_docs);
        for (i, d) in self.docs.iter().take(n_docs).enumerate() {
            let doc = &d.value;
            let description = self
                .description
                .as_ref()
                .map(|t| t.render(doc))
                .transpose()?
                .unwrap_or_default();
            let system = maybe_delimit(
                opts.system.as_deref().unwrap_or(""),
                &description,
                &self.file.fewshot_delimiter,
            );
            let mut examples = String::new();
            if shots > 0 {
                let selected = self.draw_shots(&mut rng, doc, shots, first_n)?;
                for s in selected {
                    examples.push_str(&self.doc_text(s)?);
                    let target = self.shot_target(s)?;
                    if !target.is_empty() {
                        examples.push_str(&self.file.target_delimiter);
                        examples.push_str(&target);
                        examples.push_str(&self.file.fewshot_delimiter);
                    }
                }
            }
            let question = self.doc_text(doc)?;
            let context = match chat {
                None => format!("{system}{examples}{question}"),
                Some(c) => {
                    let mut messages = Vec::new();
                    if !system.is_empty() {
                        messages.push(ChatMessage::system(system));
                    }
                    messages.push(ChatMessage::user(format!("{examples}{question}")));
                    c.render(&messages, true)
                }
            };
            let target = if self.file.output_type == OutputType::GenerateUntil {
                self.shot_target(doc)?
            } else {
                String::new()
            };
            let (choices, continuations, gold) = match self.file.output_type {
                OutputType::MultipleChoice => {
                    let choices = self.doc_choices(doc)?;
                    let gold = self.doc_gold(doc, &choices)?;
                    let conts = choices.iter().map(|c| format!("{delimiter}{c}")).collect();
                    (choices, conts, gold)
                }
                OutputType::Loglikelihood => {
                    let target = self.shot_target(doc)?;
                    // The harness scores the target without the target delimiter here.
                    (vec![target.clone()], vec![target], vec![0])
                }
                OutputType::GenerateUntil => (Vec::new(), Vec::new(), Vec::new()),
            };
            out.push(Request {
                doc: i,
                context,
                choices,
                continuations,
                gold,
                target,
            });
        }
        Ok(out)
    }
}

/// The harness's `maybe_delimit`: `prefix + delimiter + suffix`, without the delimiter when
/// either side has whitespace at the join, and just the other when one is empty.
fn maybe_delimit(prefix: &str, suffix: &str, delimiter: &str) -> String {
    if prefix.is_empty() {
        return suffix.to_string();
    }
    if suffix.is_empty() {
        return prefix.to_string();
    }
    let touching = prefix.ends_with(char::is_whitespace) || suffix.starts_with(char::is_whitespace);
    if touching {
        format!("{prefix}{suffix}")
    } else {
        format!("{prefix}{delimiter}{suffix}")
    }
}

/// The message of an input error without its `invalid input: ` prefix.
fn strip(e: Error) -> String {
    match e {
        Error::Input(m) => m,
        other => other.to_string(),
    }
}

/// Parses a task file; serde's message carries the field and the line and column.
pub fn parse_task_file(text: &str, origin: &str) -> Result<TaskFile> {
    if text.trim().is_empty() {
        return Err(Error::Input(format!("{origin}: the task file is empty")));
    }
    serde_yaml::from_str(text).map_err(|e| Error::Input(format!("{origin}: {e}")))
}

/// The 1-based line on which `key:` starts at the top level of `yaml`.
fn line_of(yaml: &str, key: &str) -> Option<usize> {
    yaml.lines()
        .position(|l| l.starts_with(key) && l[key.len()..].trim_start().starts_with(':'))
        .map(|i| i + 1)
}

fn read_splits(
    file: &TaskFile,
    base: &Path,
    origin: &str,
    yaml: &str,
) -> Result<BTreeMap<String, Vec<Doc>>> {
    let at = |key: &str| match line_of(yaml, key) {
        Some(line) => format!("{origin}: line {line}: {key}"),
        None => format!("{origin}: {key}"),
    };
    if file.dataset_path != "json" {
        return Err(Error::Input(format!(
            "{}: {:?} is not supported (use json with dataset_kwargs.data_files, or a \
             built-in task)",
            at("dataset_path"),
            file.dataset_path
        )));
    }
    let Some(kw) = &file.dataset_kwargs else {
        return Err(Error::Input(format!(
            "{}: json needs dataset_kwargs.data_files",
            at("dataset_path")
        )));
    };
    let files: Vec<(String, String)> = match &kw.data_files {
        DataFiles::One(f) => vec![("train".into(), f.clone())],
        DataFiles::Splits(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    };
    let mut splits = BTreeMap::new();
    for (split, f) in files {
        let path = base.join(&f);
        splits.insert(split, read_docs(&path)?);
    }
    Ok(splits)
}

/// Reads JSON Lines, or one JSON array, of objects.
pub fn read_docs(path: &Path) -> Result<Vec<Doc>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let name = path.display().to_string();
    let bad = |where_: String, why: String| Error::Malformed {
        path: PathBuf::from(&name),
        reason: format!("{where_}: {why}"),
    };
    let mut docs = Vec::new();
    if text.trim_start().starts_with('[') {
        let v: Vec<Value> =
            serde_json::from_str(&text).map_err(|e| bad("JSON array".into(), e.to_string()))?;
        for (i, v) in v.into_iter().enumerate() {
            if !v.is_object() {
                return Err(bad(format!("item {i}"), "not an object".into()));
            }
            docs.push(Doc {
                value: v,
                origin: format!("{name}[{i}]"),
            });
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(line)
                .map_err(|e| bad(format!("line {}", i + 1), e.to_string()))?;
            if !v.is_object() {
                return Err(bad(format!("line {}", i + 1), "not an object".into()));
            }
            docs.push(Doc {
                value: v,
                origin: format!("{name}:{}", i + 1),
            });
        }
    }
    Ok(docs)
}
