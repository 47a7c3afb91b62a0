//! SentencePiece-style BPE over a GGUF `llama` vocabulary (Gemma), built to give the same ids
//! as the tokenizer Hugging Face `transformers` derives from the same file.
//!
//! What `transformers` does, and so what this does:
//! - Tokens made only of whitespace that contain a space (Gemma's `"  "`, `"   "`, ...) are
//!   respelled with `▁`, the character the model sees in place of a space.
//! - Text is split at added tokens first: control tokens (`token_type` 3, e.g. `<bos>`,
//!   `<start_of_turn>`) and user-defined ones (`token_type` 4, e.g. `"\n"`, `<table>`) are matched
//!   whole, leftmost-longest, in the raw text.
//! - Every other stretch of text has its spaces replaced by `▁` (no prefix space is added) and is
//!   one BPE word. Its characters start as symbols (a character missing from the vocabulary falls
//!   back to its UTF-8 bytes, `<0xNN>`), and the adjacent pair whose concatenation is the
//!   earliest token of the vocabulary is merged first; among splits of the same token the one
//!   with the longer left part wins, then the leftmost position. (`transformers` writes this as a
//!   merge list sorted by token position; ranking pairs on the fly gives the same order without
//!   building half a million merges.)
//! - Decoding maps `▁` back to a space and runs of `<0xNN>` tokens back to bytes (an invalid
//!   UTF-8 run becomes one U+FFFD per byte).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

/// Token type of a control token in `tokenizer.ggml.token_type`.
pub(crate) const TOKEN_TYPE_CONTROL: i32 = 3;
/// Token type of a user-defined token in `tokenizer.ggml.token_type`.
pub(crate) const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// The character SentencePiece writes for a space.
const SPACE: char = '\u{2581}';

/// Strings matched whole in raw text before any other processing, leftmost-longest.
#[derive(Debug, Clone, Default)]
pub(crate) struct AddedTokens {
    /// A byte trie: node 0 is the root.
    nodes: Vec<TrieNode>,
}

#[derive(Debug, Clone, Default)]
struct TrieNode {
    children: Vec<(u8, u32)>,
    token: Option<u32>,
}

impl AddedTokens {
    /// A matcher for `tokens` (content, id); empty contents are ignored and a repeated content
    /// keeps its last id.
    pub(crate) fn new<'a>(tokens: impl IntoIterator<Item = (&'a str, u32)>) -> Self {
        let mut nodes = vec![TrieNode::default()];
        for (content, id) in tokens {
            if content.is_empty() {
                continue;
            }
            let mut node = 0usize;
            for &b in content.as_bytes() {
                let next = nodes[node]
                    .children
                    .iter()
                    .find(|(c, _)| *c == b)
                    .map(|&(_, n)| n as usize);
                node = match next {
                    Some(n) => n,
                    None => {
                        nodes.push(TrieNode::default());
                        let n = nodes.len() - 1;
                        nodes[node].children.push((b, n as u32));
                        n
                    }
                };
            }
            nodes[node].token = Some(id);
        }
        Self { nodes }
    }

    /// The longest token that starts at the beginning of `bytes`: (length in bytes, id).
    fn longest_at(&self, bytes: &[u8]) -> Option<(usize, u32)> {
        let mut node = 0usize;
        let mut best = None;
        for (i, &b) in bytes.iter().enumerate() {
            match self.nodes[node].children.iter().find(|(c, _)| *c == b) {
                Some(&(_, n)) => node = n as usize,
                None => break,
            }
            if let Some(id) = self.nodes[node].token {
                best = Some((i + 1, id));
            }
        }
        best
    }

    /// Cuts `text` into pieces: `Ok(id)` for an added token, `Err(slice)` for the text between.
    pub(crate) fn split<'t>(&self, text: &'t str) -> Vec<Result<u32, &'t str>> {
        let mut out = Vec::new();
        if self.nodes.len() <= 1 {
            if !text.is_empty() {
                out.push(Err(text));
            }
            return out;
        }
        let bytes = text.as_bytes();
        let mut last = 0usize;
        let mut i = 0usize;
        while i < bytes.len() {
            // Tokens are valid UTF-8, so a match can only start on a character boundary.
            if text.is_char_boundary(i) {
                if let Some((len, id)) = self.longest_at(&bytes[i..]) {
                    if i > last {
                        out.push(Err(&text[last..i]));
                    }
                    out.push(Ok(id));
                    i += len;
                    last = i;
                    continue;
                }
            }
            i += 1;
        }
        if last < bytes.len() {
            out.push(Err(&text[last..]));
        }
        out
    }
}

/// A Gemma-style SentencePiece BPE tokenizer.
#[derive(Debug, Clone)]
pub(crate) struct SpmBpe {
    /// Token strings by id, spaces respelled as `▁`.
    pieces: Vec<String>,
    /// Token string to id (a repeated string keeps its last id, as a Python dict would).
    vocab: HashMap<String, u32>,
    /// The ids of `<0x00>`..`<0xFF>`, when the vocabulary has all of them.
    byte_ids: Option<[u32; 256]>,
    /// The byte a `<0xNN>` token stands for, by id.
    byte_of: HashMap<u32, u8>,
    unk_id: Option<u32>,
    added: AddedTokens,
    special: HashSet<u32>,
}

/// One symbol of a word being merged: a token and its neighbours.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    id: u32,
    /// Length of the token string in characters (the tie-break between splits of one token).
    chars: u32,
    prev: usize,
    next: usize,
    alive: bool,
}

const NONE: usize = usize::MAX;

/// A candidate merge in a min-heap: (merged token id, longer left part first, left position,
/// left id, right id, merged id).
type Candidate = Reverse<(u32, u32, usize, u32, u32, u32)>;

impl SpmBpe {
    /// Builds the tokenizer from the GGUF token list and token types (which may be empty).
    pub(crate) fn new(tokens: &[&str], token_types: &[i32], unk_id: Option<u32>) -> Self {
        let pieces: Vec<String> = tokens
            .iter()
            .map(|t| {
                if t.contains(' ') && t.chars().all(char::is_whitespace) {
                    std::iter::repeat_n(SPACE, t.chars().count()).collect()
                } else {
                    (*t).to_string()
                }
            })
            .collect();
        let mut vocab = HashMap::with_capacity(pieces.len());
        for (id, piece) in pieces.iter().enumerate() {
            vocab.insert(piece.clone(), id as u32);
        }

        let mut byte_of = HashMap::new();
        let mut byte_ids = [u32::MAX; 256];
        for (id, piece) in pieces.iter().enumerate() {
            if let Some(b) = byte_token_value(piece) {
                byte_of.insert(id as u32, b);
            }
        }
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            if let Some(&id) = vocab.get(&format!("<0x{b:02X}>")) {
                *slot = id;
            }
        }
        let byte_ids = byte_ids
            .iter()
            .all(|&id| id != u32::MAX)
            .then_some(byte_ids);

        let mut added_list: Vec<(&str, u32)> = Vec::new();
        let mut special = HashSet::new();
        for (i, token) in tokens.iter().enumerate() {
            match token_types.get(i).copied() {
                Some(TOKEN_TYPE_CONTROL) => {
                    if let Some(&id) = vocab.get(*token) {
                        added_list.push((token, id));
                        special.insert(id);
                    }
                }
                Some(TOKEN_TYPE_USER_DEFINED) => {
                    // Only where the token keeps its spelling: the respelled space runs are
                    // reached through BPE instead, as in `transformers`.
                    if let Some(&id) = vocab.get(*token) {
                        added_list.push((token, id));
                    }
                }
                _ => {}
            }
        }
        let added = AddedTokens::new(added_list);

        Self {
            pieces,
            vocab,
            byte_ids,
            byte_of,
            unk_id,
            added,
            special,
        }
    }

    /// Number of tokens.
    pub(crate) fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// The id of a token string, in the vocabulary's spelling or with spaces for `▁`.
    pub(crate) fn token_to_id(&self, token: &str) -> Option<u32> {
        self.vocab.get(token).copied().or_else(|| {
            token
                .contains(' ')
                .then(|| token.replace(' ', "\u{2581}"))
                .and_then(|t| self.vocab.get(&t).copied())
        })
    }

    /// Whether `id` is a control token.
    pub(crate) fn is_special(&self, id: u32) -> bool {
        self.special.contains(&id)
    }

    /// Appends the ids of `text` to `out`.
    pub(crate) fn encode_into(&self, text: &str, out: &mut Vec<u32>) {
        for piece in self.added.split(text) {
            match piece {
                Ok(id) => out.push(id),
                Err(segment) => self.encode_word(segment, out),
            }
        }
    }

    /// BPE over one stretch of text with no added tokens in it.
    fn encode_word(&self, text: &str, out: &mut Vec<u32>) {
        let normalized: String = text
            .chars()
            .map(|c| if c == ' ' { SPACE } else { c })
            .collect();
        let mut symbols: Vec<Symbol> = Vec::with_capacity(normalized.len());
        let mut buf = [0u8; 4];
        for c in normalized.chars() {
            let s: &str = c.encode_utf8(&mut buf);
            if let Some(&id) = self.vocab.get(s) {
                push_symbol(&mut symbols, id, 1);
            } else if let Some(byte_ids) = &self.byte_ids {
                for &b in s.as_bytes() {
                    push_symbol(&mut symbols, byte_ids[b as usize], 6);
                }
            } else if let Some(unk) = self.unk_id {
                // Consecutive unknown characters fuse into one `<unk>`.
                let fused = symbols.last().is_some_and(|last| last.id == unk);
                if !fused {
                    push_symbol(&mut symbols, unk, 1);
                }
            }
            // Without byte fallback or an unknown token the character is dropped, as in
            // `tokenizers`' BPE.
        }
        if symbols.is_empty() {
            return;
        }

        let mut heap: BinaryHeap<Candidate> = BinaryHeap::with_capacity(symbols.len());
        let mut key = String::new();
        for pos in 0..symbols.len().saturating_sub(1) {
            if let Some(c) = self.candidate(&symbols, pos, pos + 1, &mut key) {
                heap.push(c);
            }
        }
        while let Some(Reverse((_, _, pos, left_id, right_id, merged))) = heap.pop() {
            let left = symbols[pos];
            if !left.alive || left.id != left_id || left.next == NONE {
                continue;
            }
            let right_pos = left.next;
            let right = symbols[right_pos];
            if right.id != right_id {
                continue;
            }
            symbols[pos].id = merged;
            symbols[pos].chars = left.chars + right.chars;
            symbols[pos].next = right.next;
            symbols[right_pos].alive = false;
            if right.next != NONE {
                symbols[right.next].prev = pos;
            }
            if left.prev != NONE {
                if let Some(c) = self.candidate(&symbols, left.prev, pos, &mut key) {
                    heap.push(c);
                }
            }
            if right.next != NONE {
                if let Some(c) = self.candidate(&symbols, pos, right.next, &mut key) {
                    heap.push(c);
                }
            }
        }
        out.extend(symbols.iter().filter(|s| s.alive).map(|s| s.id));
    }

    /// The merge of the symbols at `l` and `r`, when their concatenation is a token.
    fn candidate(
        &self,
        symbols: &[Symbol],
        l: usize,
        r: usize,
        key: &mut String,
    ) -> Option<Candidate> {
        let (a, b) = (symbols[l], symbols[r]);
        key.clear();
        key.push_str(&self.pieces[a.id as usize]);
        key.push_str(&self.pieces[b.id as usize]);
        let merged = *self.vocab.get(key.as_str())?;
        Some(Reverse((merged, u32::MAX - a.chars, l, a.id, b.id, merged)))
    }

    /// The text of `ids`; the caller has checked that every id is in range.
    pub(crate) fn decode(&self, ids: &[u32]) -> String {
        let mut out = String::new();
        let mut bytes: Vec<u8> = Vec::new();
        for &id in ids {
            if let Some(&b) = self.byte_of.get(&id) {
                bytes.push(b);
                continue;
            }
            flush_bytes(&mut bytes, &mut out);
            if let Some(piece) = self.pieces.get(id as usize) {
                out.extend(piece.chars().map(|c| if c == SPACE { ' ' } else { c }));
            }
        }
        flush_bytes(&mut bytes, &mut out);
        out
    }
}

fn push_symbol(symbols: &mut Vec<Symbol>, id: u32, chars: u32) {
    let i = symbols.len();
    if let Some(last) = symbols.last_mut() {
        last.next = i;
    }
    symbols.push(Symbol {
        id,
        chars,
        prev: if i == 0 { NONE } else { i - 1 },
        next: NONE,
        alive: true,
    });
}

/// Appends a run of fallback bytes as text: the string when it is valid UTF-8, else one U+FFFD
/// per byte (as `tokenizers`' `ByteFallback` decoder).
fn flush_bytes(bytes: &mut Vec<u8>, out: &mut String) {
    if bytes.is_empty() {
        return;
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => out.push_str(s),
        Err(_) => out.extend(std::iter::repeat_n('\u{FFFD}', bytes.len())),
    }
    bytes.clear();
}

/// The byte of a `<0xNN>` token.
fn byte_token_value(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if piece.len() != 6 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> SpmBpe {
        // ids: 0 <unk>, 1 <bos>, 2..: pieces; merges are ranked by position.
        let mut tokens = vec!["<unk>", "<bos>", "\n", "  "];
        let bytes: Vec<String> = (0..=255u8).map(|b| format!("<0x{b:02X}>")).collect();
        tokens.extend(bytes.iter().map(String::as_str));
        tokens.extend(["ab", "bc", "abc", "▁a", "a", "b", "c", "▁"]);
        let mut types = vec![3, 3, 4, 4];
        types.extend(std::iter::repeat_n(6, 256));
        types.extend(std::iter::repeat_n(1, 8));
        SpmBpe::new(&tokens, &types, Some(0))
    }

    fn id(t: &SpmBpe, s: &str) -> u32 {
        t.token_to_id(s).unwrap()
    }

    #[test]
    fn merges_follow_token_position() {
        let t = toy();
        let mut out = Vec::new();
        t.encode_into("abc", &mut out);
        // "ab" (earlier) merges first, then "ab"+"c" makes "abc".
        assert_eq!(out, vec![id(&t, "abc")]);
        out.clear();
        t.encode_into("bc a", &mut out);
        assert_eq!(out, vec![id(&t, "bc"), id(&t, "▁a")]);
    }

    #[test]
    fn added_tokens_and_byte_fallback() {
        let t = toy();
        let mut out = Vec::new();
        t.encode_into("<bos>a\nz", &mut out);
        assert_eq!(out, vec![1, id(&t, "a"), 2, id(&t, "<0x7A>")]);
        assert_eq!(t.decode(&out), "<bos>a\nz");
        // The space run is respelled and reached through BPE, not matched as an added token.
        assert_eq!(t.token_to_id("▁▁"), Some(3));
        // A lone continuation byte decodes to U+FFFD.
        assert_eq!(t.decode(&[id(&t, "<0xE2>")]), "\u{FFFD}");
        assert!(t.is_special(1));
        assert!(!t.is_special(2));
    }

    #[test]
    fn leftmost_longest_added_tokens() {
        let added = AddedTokens::new([("<a>", 1), ("<a><b>", 2), ("b", 3)]);
        assert_eq!(
            added.split("x<a><b>y<a>b"),
            vec![Err("x"), Ok(2), Err("y"), Ok(1), Ok(3)]
        );
        assert_eq!(AddedTokens::new([]).split("abc"), vec![Err("abc")]);
        assert!(AddedTokens::new([]).split("").is_empty());
    }
}
