//! Corpora: documents from text or JSONL files.
//!
//! A `.jsonl` file holds one JSON object per line; its `"text"` field is one document. Any other
//! file is plain UTF-8 text whose documents are separated by one or more blank lines. Empty
//! documents are dropped; a file with no documents is an error.
//!
//! Built-in corpora ([`load_corpus`]): `sonnets` and `code`, shipped in the binary, and
//! `docs-and-plays` ([`docs`]), fetched into the cache when first used.

use std::path::Path;

pub mod docs;

pub use docs::{docs_and_plays, held_out_split, DOCS_AND_PLAYS};

use crate::{Error, Result};

/// Read the documents of a text or JSONL file.
pub fn load_documents(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let is_jsonl = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"));
    let docs = if is_jsonl {
        parse_jsonl(&text).map_err(|reason| Error::Malformed {
            path: path.to_path_buf(),
            reason,
        })?
    } else {
        split_paragraphs(&text)
    };
    if docs.is_empty() {
        return Err(Error::Input(format!(
            "{}: the corpus has no documents",
            path.display()
        )));
    }
    Ok(docs)
}

/// Documents of a plain text: runs of non-blank lines, joined with newlines.
pub fn split_paragraphs(text: &str) -> Vec<String> {
    let mut docs = Vec::new();
    let mut cur: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                docs.push(cur.join("\n"));
                cur.clear();
            }
        } else {
            cur.push(line);
        }
    }
    if !cur.is_empty() {
        docs.push(cur.join("\n"));
    }
    docs
}

/// Documents of a JSONL text: the `"text"` string of each non-blank line.
pub fn parse_jsonl(text: &str) -> std::result::Result<Vec<String>, String> {
    let mut docs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        let t = v
            .get("text")
            .and_then(|t| t.as_str())
            .ok_or_else(|| format!("line {}: no string field \"text\"", i + 1))?;
        if !t.trim().is_empty() {
            docs.push(t.to_string());
        }
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_and_jsonl() {
        assert_eq!(
            split_paragraphs("a\nb\n\n\n c\n  \n"),
            vec!["a\nb".to_string(), " c".to_string()]
        );
        assert_eq!(
            parse_jsonl("{\"text\": \"x y\"}\n\n{\"text\": \"\", \"id\": 2}\n{\"text\": \"z\"}")
                .unwrap(),
            vec!["x y".to_string(), "z".to_string()]
        );
        assert!(parse_jsonl("{\"body\": 1}").unwrap_err().contains("line 1"));
        assert!(parse_jsonl("not json").is_err());
    }

    #[test]
    fn empty_and_missing_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty.txt");
        std::fs::write(&p, "\n \n").unwrap();
        assert!(matches!(load_documents(&p), Err(Error::Input(_))));
        assert!(matches!(
            load_documents(&dir.path().join("missing.txt")),
            Err(Error::Io { .. })
        ));
        let j = dir.path().join("c.jsonl");
        std::fs::write(&j, "{\"text\": \"one\"}\n{\"text\": 3}\n").unwrap();
        assert!(matches!(load_documents(&j), Err(Error::Malformed { .. })));
    }
}

/// Shakespeare's 154 sonnets (public domain), shipped in the binary: `corpus/README.md` says
/// where they come from.
pub const SHAKESPEARE_SONNETS: &str = include_str!("../../../corpus/shakespeare_sonnets.txt");

/// Rust sources of this repository, shipped in the binary as a code corpus (`code`): the
/// project's own MIT/Apache-2.0 code, fixed at build time.
pub const RUST_SOURCES: [&str; 8] = [
    include_str!("corpus.rs"),
    include_str!("rng.rs"),
    include_str!("atomic.rs"),
    include_str!("source.rs"),
    include_str!("qmatmul.rs"),
    include_str!("model/generate.rs"),
    include_str!("../../analysis/src/diff.rs"),
    include_str!("../../analysis/src/heads.rs"),
];

/// The `code` corpus: [`RUST_SOURCES`] cut at blank lines into items (a function, a doc
/// comment with its item, a test), keeping those of at least 200 characters.
pub fn code_corpus() -> Vec<String> {
    RUST_SOURCES
        .iter()
        .flat_map(|file| split_paragraphs(file))
        .filter(|doc| doc.len() >= 200)
        .collect()
}

/// The documents of a corpus named on a command line: `sonnets` (the shipped sonnets), `code`
/// (the shipped Rust sources, [`code_corpus`]), `docs-and-plays` (Shakespeare and five
/// projects' documentation, fetched into the cache of [`FetchConfig::from_env`] when first
/// used: [`docs_and_plays`]) or a path to a text or JSONL file.
///
/// [`FetchConfig::from_env`]: crate::source::FetchConfig::from_env
pub fn load_corpus(spec: &str) -> Result<Vec<String>> {
    match spec {
        "sonnets" => Ok(split_paragraphs(SHAKESPEARE_SONNETS)),
        "code" => Ok(code_corpus()),
        DOCS_AND_PLAYS => docs_and_plays(&crate::source::FetchConfig::from_env()?, &mut |_| {}),
        _ => load_documents(Path::new(spec)),
    }
}

#[cfg(test)]
mod shipped {
    #[test]
    fn the_sonnets_are_154_documents() {
        let d = super::load_corpus("sonnets").unwrap();
        assert_eq!(d.len(), 154);
        assert!(d[0].starts_with("From fairest creatures we desire increase,"));
        assert!(d.iter().all(|s| s.lines().count() >= 12));
    }

    #[test]
    fn the_code_corpus_is_rust_items() {
        let d = super::load_corpus("code").unwrap();
        assert!(d.len() >= 50, "{} documents", d.len());
        assert!(d.iter().all(|s| s.len() >= 200));
        assert!(d
            .iter()
            .any(|s| s.contains("pub fn load_corpus(spec: &str)")));
        assert!(d.iter().filter(|s| s.contains("fn ")).count() * 2 > d.len());
    }
}
