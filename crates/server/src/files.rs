//! Mapping a request path onto a file inside RUNS_DIR, and nothing outside it.
//!
//! The rules: the path is percent-decoded once; a decoded `/` or `\` that was encoded
//! (`%2f`, `%5c`), a NUL, a `..` or `.` segment, or an absolute segment is refused; the result
//! is canonicalised (following symlinks) and must still lie under the canonical RUNS_DIR, so a
//! symlink inside the directory that points out of it is refused too.

use std::path::{Component, Path, PathBuf};

/// Why a path was refused (every variant answers 404 to the client: a refused path and a
/// missing file look the same from outside).
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not valid percent-encoded UTF-8, or an encoded separator or NUL.
    BadEncoding,
    /// A `..`, `.`, empty-root or drive segment.
    BadSegment,
    /// Resolves (through symlinks) outside RUNS_DIR.
    Outside,
    /// Does not exist.
    Missing,
}

/// Resolve `raw` (the URL path after the route prefix, still percent-encoded) under `root`
/// (already canonical). Returns the canonical path of an existing file or directory.
pub fn resolve(root: &Path, raw: &str) -> Result<PathBuf, Refused> {
    let rel = decode_relative(raw)?;
    let joined = root.join(&rel);
    let canonical = std::fs::canonicalize(&joined).map_err(|_| Refused::Missing)?;
    if !canonical.starts_with(root) {
        return Err(Refused::Outside);
    }
    Ok(canonical)
}

/// Percent-decode a relative path, segment by segment, refusing anything that could climb.
pub fn decode_relative(raw: &str) -> Result<PathBuf, Refused> {
    let mut out = PathBuf::new();
    for seg in raw.split('/') {
        if seg.is_empty() {
            continue;
        }
        let decoded = percent_encoding::percent_decode_str(seg)
            .decode_utf8()
            .map_err(|_| Refused::BadEncoding)?;
        if decoded.contains(['/', '\\', '\0']) {
            return Err(Refused::BadEncoding);
        }
        let mut comps = Path::new(decoded.as_ref()).components();
        match (comps.next(), comps.next()) {
            (Some(Component::Normal(c)), None) => out.push(c),
            _ => return Err(Refused::BadSegment),
        }
    }
    Ok(out)
}

/// The `Content-Type` for a file name.
pub fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "json" | "jsonl" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "css" => "text/css; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "txt" | "md" | "log" | "toml" | "yaml" | "yml" | "csv" | "tsv" => {
            "text/plain; charset=utf-8"
        }
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_refuses_every_way_up() {
        assert_eq!(decode_relative("a/b.json"), Ok(PathBuf::from("a/b.json")));
        assert_eq!(decode_relative("a%20b/c"), Ok(PathBuf::from("a b/c")));
        assert_eq!(decode_relative("../x"), Err(Refused::BadSegment));
        assert_eq!(decode_relative("a/%2e%2e/x"), Err(Refused::BadSegment));
        assert_eq!(decode_relative("a/./x"), Err(Refused::BadSegment));
        assert_eq!(decode_relative("%2e%2e%2fx"), Err(Refused::BadEncoding));
        assert_eq!(decode_relative("a%5c..%5cx"), Err(Refused::BadEncoding));
        assert_eq!(decode_relative("a%00"), Err(Refused::BadEncoding));
        assert_eq!(decode_relative("%ff"), Err(Refused::BadEncoding));
    }
}
