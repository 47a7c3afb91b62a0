//! Showing tokens in tables and reports.

use interplab_core::loader::LoadedModel;

/// A token's text, decoded alone, or `<id>` when it does not decode.
pub fn token_text(m: &LoadedModel, id: u32) -> String {
    m.tokenizer
        .decode(&[id])
        .unwrap_or_else(|_| format!("<{id}>"))
}

/// A token as a quoted, escaped string (`"\u{2581}Paris"` shown as `" Paris"`), or `"<id>"` when
/// it does not decode.
pub fn show_token(m: &LoadedModel, id: u32) -> String {
    format!("{:?}", token_text(m, id))
}
