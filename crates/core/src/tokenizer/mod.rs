//! Tokenizers, from a Hugging Face `tokenizer.json` or from GGUF metadata, and chat templates.
//!
//! A [`Tokenizer`] turns text into token ids and back. It is built either from a
//! `tokenizer.json` (through the `tokenizers` crate) or from the `tokenizer.ggml.*` keys of a
//! GGUF file, where it reproduces the tokenizer Hugging Face `transformers` builds from the same
//! file:
//! - `tokenizer.ggml.model = "gpt2"` (SmolLM2): byte-level BPE from the vocabulary and merges,
//!   with the pre-tokenizer `tokenizer.ggml.pre` names (`smollm` puts every digit on its own,
//!   then splits as GPT-2 does).
//! - `tokenizer.ggml.model = "llama"` for Gemma architectures: SentencePiece-style BPE with byte
//!   fallback, merges ranked by token position, no prefix space.
//!
//! Control tokens (`<|im_start|>`, `<start_of_turn>`, `<bos>`, ...) written in the text are
//! always encoded as their single id. [`ChatTemplate`] renders conversations in the model's
//! prompt format.

mod byte_level;
mod chat;
mod spm;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

pub use chat::{ChatMessage, ChatTemplate};

use crate::gguf::GgufValue;
use crate::{Error, Result};

/// Typed access to GGUF metadata values, with errors that name the key.
pub(crate) mod meta {
    use std::collections::BTreeMap;

    use crate::gguf::GgufValue;
    use crate::{Error, Result};

    fn wrong(key: &str, want: &str, got: &GgufValue) -> Error {
        let kind = match got {
            GgufValue::String(_) => "a string",
            GgufValue::Array(_) => "an array",
            GgufValue::Bool(_) => "a bool",
            GgufValue::F32(_) | GgufValue::F64(_) => "a float",
            _ => "an integer",
        };
        Error::Tokenizer(format!("metadata {key}: expected {want}, found {kind}"))
    }

    /// An integer value as i64.
    fn int(v: &GgufValue) -> Option<i64> {
        Some(match *v {
            GgufValue::U8(x) => x.into(),
            GgufValue::I8(x) => x.into(),
            GgufValue::U16(x) => x.into(),
            GgufValue::I16(x) => x.into(),
            GgufValue::U32(x) => x.into(),
            GgufValue::I32(x) => x.into(),
            GgufValue::U64(x) => i64::try_from(x).ok()?,
            GgufValue::I64(x) => x,
            _ => return None,
        })
    }

    /// A string value, or `None` when the key is absent.
    pub(crate) fn string<'a>(
        meta: &'a BTreeMap<String, GgufValue>,
        key: &str,
    ) -> Result<Option<&'a str>> {
        match meta.get(key) {
            None => Ok(None),
            Some(GgufValue::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong(key, "a string", other)),
        }
    }

    /// An integer value that fits in u32, or `None` when the key is absent.
    pub(crate) fn u32(meta: &BTreeMap<String, GgufValue>, key: &str) -> Result<Option<u32>> {
        match meta.get(key) {
            None => Ok(None),
            Some(v) => match int(v).map(u32::try_from) {
                Some(Ok(x)) => Ok(Some(x)),
                Some(Err(_)) => Err(Error::Tokenizer(format!(
                    "metadata {key}: value {} out of range",
                    int(v).unwrap_or_default()
                ))),
                None => Err(wrong(key, "an integer", v)),
            },
        }
    }

    /// A bool value (or an integer 0/1), or `None` when the key is absent.
    pub(crate) fn bool(meta: &BTreeMap<String, GgufValue>, key: &str) -> Result<Option<bool>> {
        match meta.get(key) {
            None => Ok(None),
            Some(GgufValue::Bool(b)) => Ok(Some(*b)),
            Some(v) => match int(v) {
                Some(0) => Ok(Some(false)),
                Some(1) => Ok(Some(true)),
                _ => Err(wrong(key, "a bool", v)),
            },
        }
    }

    /// An array of strings, or `None` when the key is absent.
    pub(crate) fn string_array<'a>(
        meta: &'a BTreeMap<String, GgufValue>,
        key: &str,
    ) -> Result<Option<Vec<&'a str>>> {
        match meta.get(key) {
            None => Ok(None),
            Some(GgufValue::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    GgufValue::String(s) => Ok(s.as_str()),
                    other => Err(wrong(&format!("{key}[{i}]"), "a string", other)),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(other) => Err(wrong(key, "an array of strings", other)),
        }
    }

    /// An array of integers that fit in i32, or `None` when the key is absent.
    pub(crate) fn i32_array(
        meta: &BTreeMap<String, GgufValue>,
        key: &str,
    ) -> Result<Option<Vec<i32>>> {
        match meta.get(key) {
            None => Ok(None),
            Some(GgufValue::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    int(v)
                        .and_then(|x| i32::try_from(x).ok())
                        .ok_or_else(|| wrong(&format!("{key}[{i}]"), "an i32", v))
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(other) => Err(wrong(key, "an array of integers", other)),
        }
    }
}

/// The engine behind a [`Tokenizer`].
#[derive(Clone)]
enum Backend {
    /// A `tokenizers` pipeline: from `tokenizer.json`, or byte-level BPE from GGUF.
    Hf(Box<tokenizers::Tokenizer>),
    /// SentencePiece-style BPE from GGUF (Gemma).
    Spm(Box<spm::SpmBpe>),
}

/// A text tokenizer with the model's special tokens.
#[derive(Clone)]
pub struct Tokenizer {
    backend: Backend,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    eos_ids: Vec<u32>,
    add_bos: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.backend {
            Backend::Hf(_) => "tokenizers",
            Backend::Spm(_) => "sentencepiece-bpe",
        };
        f.debug_struct("Tokenizer")
            .field("kind", &kind)
            .field("vocab_size", &self.vocab_size())
            .field("bos_id", &self.bos_id)
            .field("eos_ids", &self.eos_ids)
            .field("add_bos", &self.add_bos)
            .finish()
    }
}

/// Token strings that end a turn or a document, besides the declared EOS.
const EXTRA_STOP_TOKENS: [&str; 4] = ["<|im_end|>", "<end_of_turn>", "<|endoftext|>", "<|eot_id|>"];

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json`; BOS/EOS and whether to add BOS come from a
    /// `tokenizer_config.json` (or `config.json`) beside it when there is one.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let hf = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let config = read_json_if_present(&dir.join("tokenizer_config.json"))?;
        let model_config = read_json_if_present(&dir.join("config.json"))?;

        let named = |key: &str| -> Option<u32> {
            let v = config.as_ref()?.get(key)?;
            let content = v
                .as_str()
                .or_else(|| v.get("content").and_then(|c| c.as_str()))?;
            hf.token_to_id(content)
        };
        let numbered = |key: &str| -> Vec<u32> {
            let Some(v) = model_config.as_ref().and_then(|c| c.get(key)) else {
                return Vec::new();
            };
            let list = v.as_array().cloned().unwrap_or_else(|| vec![v.clone()]);
            list.iter()
                .filter_map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok()))
                .collect()
        };
        let first_known = |names: &[&str]| names.iter().find_map(|n| hf.token_to_id(n));

        let bos_id = named("bos_token")
            .or_else(|| numbered("bos_token_id").first().copied())
            .or_else(|| first_known(&["<|begin_of_text|>", "<bos>", "<s>"]));
        let eos_id = named("eos_token")
            .or_else(|| numbered("eos_token_id").first().copied())
            .or_else(|| first_known(&["<|end_of_text|>", "<eos>", "</s>", "<|endoftext|>"]));

        let add_bos = match config
            .as_ref()
            .and_then(|c| c.get("add_bos_token"))
            .and_then(|v| v.as_bool())
        {
            Some(b) => b,
            // Otherwise: does the tokenizer's own post-processor put BOS first?
            None => match bos_id {
                Some(bos) => {
                    let with = hf.encode("a", true).map(|e| e.get_ids().first().copied());
                    let without = hf.encode("a", false).map(|e| e.get_ids().first().copied());
                    matches!((with, without), (Ok(Some(a)), Ok(b)) if a == bos && b != Some(bos))
                }
                None => false,
            },
        };

        let mut t = Tokenizer {
            backend: Backend::Hf(Box::new(hf)),
            bos_id,
            eos_id,
            eos_ids: Vec::new(),
            add_bos,
        };
        let extra = numbered("eos_token_id");
        t.eos_ids = t.collect_eos_ids(&extra);
        Ok(t)
    }

    /// Builds the tokenizer a GGUF file describes in its `tokenizer.ggml.*` metadata.
    pub fn from_gguf_metadata(meta: &BTreeMap<String, GgufValue>) -> Result<Self> {
        let model = meta::string(meta, "tokenizer.ggml.model")?
            .ok_or_else(|| Error::Tokenizer("metadata has no tokenizer.ggml.model".into()))?;
        let tokens = meta::string_array(meta, "tokenizer.ggml.tokens")?
            .ok_or_else(|| Error::Tokenizer("metadata has no tokenizer.ggml.tokens".into()))?;
        if tokens.is_empty() {
            return Err(Error::Tokenizer("tokenizer.ggml.tokens is empty".into()));
        }
        if u32::try_from(tokens.len()).is_err() {
            return Err(Error::Tokenizer("tokenizer.ggml.tokens is too long".into()));
        }
        let types = meta::i32_array(meta, "tokenizer.ggml.token_type")?.unwrap_or_default();
        if !types.is_empty() && types.len() != tokens.len() {
            return Err(Error::Tokenizer(format!(
                "tokenizer.ggml.token_type has {} entries for {} tokens",
                types.len(),
                tokens.len()
            )));
        }
        let n = tokens.len() as u32;
        let id_key = |key: &str| -> Result<Option<u32>> {
            match meta::u32(meta, key)? {
                Some(id) if id >= n => Err(Error::Tokenizer(format!(
                    "{key} = {id} is outside the vocabulary of {n} tokens"
                ))),
                other => Ok(other),
            }
        };
        let bos_id = id_key("tokenizer.ggml.bos_token_id")?;
        let eos_id = id_key("tokenizer.ggml.eos_token_id")?;
        let unk_id = id_key("tokenizer.ggml.unknown_token_id")?;
        let arch = meta::string(meta, "general.architecture")?.unwrap_or("");

        let (backend, default_add_bos) = match model {
            "gpt2" => {
                let merges =
                    meta::string_array(meta, "tokenizer.ggml.merges")?.ok_or_else(|| {
                        Error::Tokenizer(
                            "byte-level BPE metadata has no tokenizer.ggml.merges".into(),
                        )
                    })?;
                let pre = meta::string(meta, "tokenizer.ggml.pre")?.unwrap_or("default");
                let hf = byte_level::build(&tokens, &types, &merges, pre)?;
                (Backend::Hf(Box::new(hf)), false)
            }
            "llama" if arch.starts_with("gemma") => (
                Backend::Spm(Box::new(spm::SpmBpe::new(&tokens, &types, unk_id))),
                true,
            ),
            "llama" => {
                return Err(Error::Tokenizer(format!(
                    "SentencePiece (tokenizer.ggml.model = \"llama\") is supported for Gemma \
                     architectures only, not {arch:?}"
                )))
            }
            other => {
                return Err(Error::Tokenizer(format!(
                    "unsupported tokenizer.ggml.model {other:?} (supported: gpt2, llama for Gemma)"
                )))
            }
        };
        let add_bos = meta::bool(meta, "tokenizer.ggml.add_bos_token")?.unwrap_or(default_add_bos);
        let mut t = Tokenizer {
            backend,
            bos_id,
            eos_id,
            eos_ids: Vec::new(),
            add_bos,
        };
        t.eos_ids = t.collect_eos_ids(&[]);
        Ok(t)
    }

    /// EOS first, then `extra`, then the known end-of-turn tokens this vocabulary has.
    fn collect_eos_ids(&self, extra: &[u32]) -> Vec<u32> {
        let mut ids = Vec::new();
        let mut seen = HashSet::new();
        let size = self.vocab_size();
        let known = EXTRA_STOP_TOKENS
            .iter()
            .filter_map(|t| self.exact_token_id(t));
        for id in self
            .eos_id
            .into_iter()
            .chain(extra.iter().copied())
            .chain(known)
        {
            if (id as usize) < size && seen.insert(id) {
                ids.push(id);
            }
        }
        ids
    }

    /// The id of a token spelled exactly as in the vocabulary.
    fn exact_token_id(&self, token: &str) -> Option<u32> {
        match &self.backend {
            Backend::Hf(hf) => hf.token_to_id(token),
            Backend::Spm(s) => s.token_to_id(token).filter(|_| !token.contains(' ')),
        }
    }

    /// The id of `text` when it is exactly one token (no BOS), else an error saying how many.
    pub fn single_token(&self, text: &str) -> Result<u32> {
        match self.encode(text, false)?.as_slice() {
            [id] => Ok(*id),
            ids => Err(Error::Input(format!(
                "{text:?} is {} tokens, not one: {ids:?}",
                ids.len()
            ))),
        }
    }

    /// Token ids of `text`, with BOS first when `add_bos`; special tokens written in the text
    /// (`<|im_start|>`, `<start_of_turn>`, ...) become their single ids.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        if add_bos {
            let bos = self
                .bos_id
                .ok_or_else(|| Error::Tokenizer("this tokenizer has no BOS token".into()))?;
            ids.push(bos);
        }
        match &self.backend {
            Backend::Hf(hf) => {
                let enc = hf
                    .encode(text, false)
                    .map_err(|e| Error::Tokenizer(format!("encode: {e}")))?;
                ids.extend_from_slice(enc.get_ids());
            }
            Backend::Spm(s) => s.encode_into(text, &mut ids),
        }
        Ok(ids)
    }

    /// The text of `ids`, special tokens included as written; an error for ids outside the
    /// vocabulary.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let size = self.vocab_size();
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= size) {
            return Err(Error::Tokenizer(format!(
                "token id {bad} is outside the vocabulary of {size} tokens"
            )));
        }
        match &self.backend {
            Backend::Hf(hf) => hf
                .decode(ids, false)
                .map_err(|e| Error::Tokenizer(format!("decode: {e}"))),
            Backend::Spm(s) => Ok(s.decode(ids)),
        }
    }

    /// The display form of one token (its decoded text, e.g. `" Paris"`; a token that is part
    /// of a UTF-8 character shows as U+FFFD); `None` outside the vocabulary.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.decode(&[id]).ok()
    }

    /// The id of a token, given in the vocabulary's spelling (`"ĠParis"`, `"▁Paris"`) or in
    /// display form (`" Paris"`).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match &self.backend {
            Backend::Hf(hf) => hf.token_to_id(token).or_else(|| {
                let table = byte_level::byte_to_char_table();
                let spelled: String = token.bytes().map(|b| table[b as usize]).collect();
                hf.token_to_id(&spelled)
                    .or_else(|| hf.token_to_id(&token.replace(' ', "\u{2581}")))
            }),
            Backend::Spm(s) => s.token_to_id(token),
        }
    }

    /// Number of token ids (added tokens included).
    pub fn vocab_size(&self) -> usize {
        match &self.backend {
            Backend::Hf(hf) => hf.get_vocab_size(true),
            Backend::Spm(s) => s.vocab_size(),
        }
    }

    /// The beginning-of-sequence token, if the tokenizer has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// The declared end-of-sequence token, if any.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// Whether prompts for this model normally start with BOS (SmolLM2: no; Gemma: yes).
    pub fn add_bos_default(&self) -> bool {
        self.add_bos
    }

    /// Ids that end generation: EOS and the vocabulary's end-of-turn tokens (`<|im_end|>`,
    /// `<end_of_turn>`, `<|endoftext|>`, `<|eot_id|>` where present).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// Whether `id` is a special (control) token such as `<bos>` or `<|im_start|>`.
    pub fn is_special(&self, id: u32) -> bool {
        match &self.backend {
            Backend::Hf(hf) => hf
                .get_added_vocabulary()
                .simple_id_to_token(id)
                .is_some_and(|t| hf.get_added_vocabulary().is_special_token(&t)),
            Backend::Spm(s) => s.is_special(id),
        }
    }
}

/// A JSON file's contents, `None` when the file does not exist.
fn read_json_if_present(path: &Path) -> Result<Option<serde_json::Value>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}
