//! Malformed task files and data: one clear error naming the place.

use std::path::Path;

use interplab_eval::task::{PromptOptions, Task};

const GOOD: &str = r#"task: t
dataset_path: json
dataset_kwargs:
  data_files:
    test: data.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "Q: {{question}}\nA:"
doc_to_choice: choices
doc_to_target: label
"#;

const DATA: &str = r#"{"question": "Is water wet?", "choices": ["yes", "no"], "label": 0}
{"question": "Is fire cold?", "choices": ["yes", "no"], "label": 1}
"#;

fn load(yaml: &str, data: &str) -> Result<Task, String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("task.yaml"), yaml).unwrap();
    std::fs::write(dir.path().join("data.jsonl"), data).unwrap();
    Task::from_file(&dir.path().join("task.yaml")).map_err(|e| e.to_string())
}

#[test]
fn a_good_task_builds_the_harness_prompts() {
    let t = load(GOOD, DATA).unwrap();
    let r = t.requests(&PromptOptions::default(), None, None).unwrap();
    assert_eq!(r[1].context, "Q: Is fire cold?\nA:");
    assert_eq!(r[1].continuations, vec![" yes", " no"]);
    assert_eq!(r[1].gold, vec![1]);
    // One shot from the same split keeps the item itself out: item 0's shot is item 1.
    let opts = PromptOptions {
        num_fewshot: Some(1),
        system: Some("Answer truthfully.".into()),
        ..Default::default()
    };
    let yaml = GOOD.replace("test_split: test", "test_split: test\nfewshot_split: test");
    let t = load(&yaml, DATA).unwrap();
    let r = t.requests(&opts, None, None).unwrap();
    assert_eq!(
        r[0].context,
        "Answer truthfully.Q: Is fire cold?\nA: no\n\nQ: Is water wet?\nA:"
    );
}

#[test]
fn a_wrong_type_names_the_field_and_line() {
    let e = load(
        &GOOD.replace(
            "output_type: multiple_choice",
            "output_type: multiple_choice\nnum_fewshot: two",
        ),
        DATA,
    )
    .unwrap_err();
    assert!(e.contains("num_fewshot") && e.contains("line 8"), "{e}");
}

#[test]
fn an_unknown_field_is_named() {
    let e = load(&format!("{GOOD}doc_to_txet: x\n"), DATA).unwrap_err();
    assert!(
        e.contains("unknown field `doc_to_txet`") && e.contains("line 11"),
        "{e}"
    );
}

#[test]
fn a_template_reading_a_missing_field_names_template_item_and_field() {
    let e = load(&GOOD.replace("{{question}}", "{{questoin}}"), DATA).unwrap_err();
    assert!(
        e.contains("line 8: doc_to_text") && e.contains("data.jsonl:1") && e.contains("questoin"),
        "{e}"
    );
}

#[test]
fn an_empty_dataset_and_bad_json_are_refused() {
    let e = load(GOOD, "").unwrap_err();
    assert!(e.contains("no items"), "{e}");
    let e = load(GOOD, "{\"question\": \"x\",\n").unwrap_err();
    assert!(e.contains("data.jsonl") && e.contains("line 1"), "{e}");
}

#[test]
fn a_target_outside_the_choices_is_named() {
    let e = load(GOOD, &DATA.replace("\"label\": 1", "\"label\": 5")).unwrap_err();
    assert!(
        e.contains("data.jsonl:2") && e.contains("out of range"),
        "{e}"
    );
}

#[test]
fn a_missing_file_is_an_error_not_a_panic() {
    let e = Task::from_file(Path::new("/no/such/task.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/no/such/task.yaml"), "{e}");
}

#[test]
fn a_task_retemplated_uses_the_new_text_for_shots_and_question() {
    let yaml = GOOD.replace("test_split: test", "test_split: test\nfewshot_split: test");
    let t = load(&yaml, DATA).unwrap();
    let q = t
        .with_doc_to_text("Question: {{question}}\nAnswer:")
        .unwrap();
    let opts = PromptOptions {
        num_fewshot: Some(1),
        ..Default::default()
    };
    let r = q.requests(&opts, None, None).unwrap();
    assert_eq!(
        r[0].context,
        "Question: Is fire cold?\nAnswer: no\n\nQuestion: Is water wet?\nAnswer:"
    );
    assert_eq!(r[0].continuations, vec![" yes", " no"]);
    // A bare field name is the field itself; the original task is unchanged.
    let bare = t.with_doc_to_text("question").unwrap();
    let r = bare
        .requests(&PromptOptions::default(), None, None)
        .unwrap();
    assert_eq!(r[1].context, "Is fire cold?");
    let r = t.requests(&PromptOptions::default(), None, None).unwrap();
    assert_eq!(r[1].context, "Q: Is fire cold?\nA:");
    // A template over a missing field is refused, naming the template and the item.
    let e = t.with_doc_to_text("{{prompt}}").unwrap_err().to_string();
    assert!(
        e.contains("{{prompt}}") && e.contains("data.jsonl:1"),
        "{e}"
    );
}
