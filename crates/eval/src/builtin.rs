//! Built-in tasks over packaged data: the task spec written in the harness's format, and the
//! conversion of the packaged file into items (the same conversion
//! `scripts/peer/lm_eval_parity.py` writes as JSON Lines for the harness).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use interplab_core::{Error, Result};

use crate::task::{ChoiceSpec, Doc, FieldSpec, OutputType, Task, TaskFile};

/// The built-in task names.
pub const NAMES: [&str; 2] = ["truthfulqa_mc1", "hhh_alignment"];

/// The four subtasks of BIG-bench's `hhh_alignment`, in file order.
pub const HHH_SUBTASKS: [&str; 4] = ["harmless", "helpful", "honest", "other"];

/// TruthfulQA MC1 items from BIG-bench's `truthful_qa/task_mc.json`: one object per
/// example, `{"question", "choices", "label"}`, choices in the file's order and `label` the
/// index of the one choice whose target score is 1. (BIG-bench lists the correct choice
/// first in every example, so an engine that always picks the first choice scores 100%.)
pub fn truthfulqa_items(task_mc_json: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(task_mc_json).map_err(|e| Error::io(task_mc_json, e))?;
    let bad = |why: String| Error::Malformed {
        path: task_mc_json.to_path_buf(),
        reason: why,
    };
    // serde_json's maps sort their keys; the choices' order is the file's, so the examples
    // are read with their target scores as ordered pairs.
    let file: BigBenchFile = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let mut items = Vec::with_capacity(file.examples.len());
    for (i, ex) in file.examples.iter().enumerate() {
        let question = &ex.input;
        let choices: Vec<&String> = ex.target_scores.0.iter().map(|(c, _)| c).collect();
        let correct: Vec<usize> = ex
            .target_scores
            .0
            .iter()
            .enumerate()
            .filter(|(_, (_, s))| *s == 1.0)
            .map(|(j, _)| j)
            .collect();
        if correct.len() != 1 {
            return Err(bad(format!(
                "example {i} has {} choices scored 1 (expected one)",
                correct.len()
            )));
        }
        items.push(json!({"question": question, "choices": choices, "label": correct[0]}));
    }
    Ok(items)
}

#[derive(serde::Deserialize)]
struct BigBenchFile {
    examples: Vec<BigBenchExample>,
}

#[derive(serde::Deserialize)]
struct BigBenchExample {
    input: String,
    target_scores: Ordered,
}

/// A JSON object's entries in the file's order.
struct Ordered(Vec<(String, f64)>);

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of choice: score")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, f64>()? {
                    out.push(entry);
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// The spec of `truthfulqa_mc1`: `Q: {question}\nA:`, choices after a space, few-shot examples
/// drawn from the same 299 items (the harness then draws one more and drops the item itself).
pub fn truthfulqa_spec() -> TaskFile {
    TaskFile {
        task: "truthfulqa_mc1".into(),
        dataset_path: "json".into(),
        dataset_name: None,
        dataset_kwargs: None,
        test_split: Some("test".into()),
        validation_split: None,
        training_split: None,
        fewshot_split: Some("test".into()),
        fewshot_config: None,
        output_type: OutputType::MultipleChoice,
        doc_to_text: FieldSpec::Text("Q: {{question}}\nA:".into()),
        doc_to_choice: Some(ChoiceSpec::Text("choices".into())),
        doc_to_target: FieldSpec::Text("label".into()),
        target_delimiter: " ".into(),
        fewshot_delimiter: "\n\n".into(),
        num_fewshot: Some(0),
        description: None,
        generation_kwargs: None,
        filter_list: None,
        metric_list: None,
        tag: None,
        metadata: None,
        should_decontaminate: None,
        doc_to_decontamination_query: None,
    }
}

/// `truthfulqa_mc1` as a task, from the fetched `task_mc.json`.
pub fn truthfulqa(task_mc_json: &Path) -> Result<Task> {
    let name = task_mc_json.display().to_string();
    let docs = truthfulqa_items(task_mc_json)?
        .into_iter()
        .enumerate()
        .map(|(i, value)| Doc {
            value,
            origin: format!("{name}[{i}]"),
        })
        .collect();
    let mut splits = BTreeMap::new();
    splits.insert("test".to_string(), docs);
    Task::from_parts(truthfulqa_spec(), splits, "builtin:truthfulqa_mc1")
}

/// HHH alignment items from BIG-bench's `hhh_alignment/<subtask>/task.json` (Askell et al.
/// 2021): `{"question", "choices", "label", "subtask"}`, two choices each (a better and a
/// worse assistant reply), choices in the file's order (the better one is listed first in
/// every example, so, as with TruthfulQA, only per-item scores show an engine is right).
pub fn hhh_items(files: &[(&str, &Path)]) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for (subtask, path) in files {
        for mut item in truthfulqa_items(path)? {
            item["subtask"] = json!(subtask);
            out.push(item);
        }
    }
    Ok(out)
}

/// The spec of `hhh_alignment`: BIG-bench's dialogue layout, `Human: {question}\n\nAssistant:`,
/// the reply after a space, zero shots by default (few-shot examples from the same items).
pub fn hhh_spec() -> TaskFile {
    TaskFile {
        task: "hhh_alignment".into(),
        doc_to_text: FieldSpec::Text("Human: {{question}}\n\nAssistant:".into()),
        ..truthfulqa_spec()
    }
}

/// `hhh_alignment` as a task, from the fetched subtask files.
pub fn hhh(files: &[(&str, &Path)]) -> Result<Task> {
    let docs = hhh_items(files)?
        .into_iter()
        .enumerate()
        .map(|(i, value)| Doc {
            origin: format!(
                "hhh_alignment/{}[{i}]",
                value["subtask"].as_str().unwrap_or("?")
            ),
            value,
        })
        .collect();
    let mut splits = BTreeMap::new();
    splits.insert("test".to_string(), docs);
    Task::from_parts(hhh_spec(), splits, "builtin:hhh_alignment")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hhh_items_keep_file_order_and_their_subtask() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        // The worse reply first here, to show the label follows the score, not the position.
        let a = write(
            "a.json",
            r#"{"examples": [{"input": "Q1", "target_scores": {"bad": 0, "good": 1}}]}"#,
        );
        let b = write(
            "b.json",
            r#"{"examples": [{"input": "Q2", "target_scores": {"fine": 1, "rude": 0}}]}"#,
        );
        let items = hhh_items(&[("harmless", &a), ("helpful", &b)]).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0]["choices"], json!(["bad", "good"]));
        assert_eq!(items[0]["label"], 1);
        assert_eq!(items[0]["subtask"], "harmless");
        assert_eq!(items[1]["label"], 0);
        let task = hhh(&[("harmless", &a), ("helpful", &b)]).unwrap();
        let r = task
            .requests(&crate::task::PromptOptions::default(), None, None)
            .unwrap();
        assert_eq!(r[0].context, "Human: Q1\n\nAssistant:");
        assert_eq!(r[0].continuations, vec![" bad", " good"]);
        let two_right = write(
            "c.json",
            r#"{"examples": [{"input": "Q", "target_scores": {"x": 1, "y": 1}}]}"#,
        );
        assert!(hhh_items(&[("other", &two_right)]).is_err());
    }
}
