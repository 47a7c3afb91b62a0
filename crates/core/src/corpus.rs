//! Corpora: documents from text or JSONL files, and the shipped English corpus.
