//! Byte-level BPE (GPT-2 style) from GGUF metadata, built as a `tokenizers` pipeline.
//!
//! The vocabulary and merges come from `tokenizer.ggml.tokens` / `tokenizer.ggml.merges`; the
//! pre-tokenizer is chosen by `tokenizer.ggml.pre`, so that text is split the way the merges
//! were learned (SmolLM2's `smollm`: every digit on its own, then GPT-2's split).

use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use super::spm::{TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED};
use crate::{Error, Result};

/// Llama 3's split (also used by several other byte-level vocabularies).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen 2's split.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GPT-2's table from bytes to the printable characters byte-level vocabularies are spelled in.
pub(crate) fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[b as usize] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(next).unwrap_or('\u{FFFD}');
            next += 1;
            c
        };
    }
    table
}

/// The pre-tokenizer for a `tokenizer.ggml.pre` value.
fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper> {
    let gpt2 = || ByteLevel::new(false, true, true);
    let with_split = |regex: &str| -> Result<PreTokenizerWrapper> {
        let split = Split::new(
            SplitPattern::Regex(regex.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| Error::Tokenizer(format!("pre-tokenizer {pre:?}: {e}")))?;
        Ok(Sequence::new(vec![
            split.into(),
            ByteLevel::new(false, true, false).into(),
        ])
        .into())
    };
    match pre {
        "default" | "gpt2" | "gpt-2" => Ok(gpt2().into()),
        "smollm" => Ok(Sequence::new(vec![Digits::new(true).into(), gpt2().into()]).into()),
        "llama3" | "llama-v3" | "llama-bpe" | "smaug-bpe" | "falcon3" => with_split(LLAMA3_SPLIT),
        "qwen2" | "deepseek-r1-qwen" => with_split(QWEN2_SPLIT),
        other => Err(Error::Tokenizer(format!(
            "byte-level BPE with pre-tokenizer {other:?} is not supported \
             (known: default, gpt2, smollm, llama3, llama-bpe, qwen2)"
        ))),
    }
}

/// Builds the tokenizer. `token_types` may be empty.
pub(crate) fn build(
    tokens: &[&str],
    token_types: &[i32],
    merges: &[&str],
    pre: &str,
) -> Result<tokenizers::Tokenizer> {
    let table = byte_to_char_table();
    let alphabet: std::collections::HashSet<char> = table.iter().copied().collect();
    let in_alphabet = |t: &str| t.chars().all(|c| alphabet.contains(&c));

    // A token spelled outside the byte alphabet is respelled from its UTF-8 bytes.
    let mut vocab = tokenizers::models::bpe::Vocab::with_capacity(tokens.len());
    for (id, t) in tokens.iter().enumerate() {
        let spelled = if in_alphabet(t) {
            (*t).to_string()
        } else {
            t.bytes().map(|b| table[b as usize]).collect()
        };
        vocab.insert(spelled, id as u32);
    }
    let mut pairs = Vec::with_capacity(merges.len());
    for (i, m) in merges.iter().enumerate() {
        let (a, b) = m.split_once(' ').ok_or_else(|| {
            Error::Tokenizer(format!(
                "merge {i} ({m:?}) is not two tokens separated by a space"
            ))
        })?;
        pairs.push((a.to_string(), b.to_string()));
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, pairs)
        .build()
        .map_err(|e| Error::Tokenizer(format!("byte-level BPE: {e}")))?;

    let mut tokenizer = tokenizers::Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer(pre)?));
    tokenizer.with_decoder(Some(ByteLevel::default()));

    // Control tokens are special; one spelled outside the byte alphabet is a mislabel and is
    // left out (as `transformers` does). User-defined tokens are matched whole but not special.
    let mut special = Vec::new();
    let mut user = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        match token_types.get(i).copied() {
            Some(TOKEN_TYPE_CONTROL) if in_alphabet(t) && !t.is_empty() => {
                special.push(AddedToken::from(*t, true).normalized(false));
            }
            Some(TOKEN_TYPE_USER_DEFINED) if in_alphabet(t) && !t.is_empty() => {
                user.push(AddedToken::from(*t, false).normalized(false));
            }
            _ => {}
        }
    }
    if !special.is_empty() {
        tokenizer
            .add_special_tokens(special)
            .map_err(|e| Error::Tokenizer(format!("special tokens: {e}")))?;
    }
    if !user.is_empty() {
        tokenizer
            .add_tokens(user)
            .map_err(|e| Error::Tokenizer(format!("user-defined tokens: {e}")))?;
    }
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_gpt2s() {
        let t = byte_to_char_table();
        assert_eq!(t[b' ' as usize], '\u{120}'); // Ġ
        assert_eq!(t[b'\n' as usize], '\u{10A}'); // Ċ
        assert_eq!(t[b'A' as usize], 'A');
        assert_eq!(t[0xAD], '\u{143}');
        let distinct: std::collections::HashSet<char> = t.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }

    #[test]
    fn unknown_pre_tokenizer_is_an_error() {
        assert!(matches!(
            pre_tokenizer("nonesuch"),
            Err(Error::Tokenizer(_))
        ));
        assert!(pre_tokenizer("smollm").is_ok());
        assert!(pre_tokenizer("llama-bpe").is_ok());
    }
}
