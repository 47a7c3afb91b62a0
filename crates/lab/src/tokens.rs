//! Showing tokens in tables and reports.

use interplab_core::loader::LoadedModel;

/// A token as a quoted, escaped string (`"\u{2581}Paris"` shown as `" Paris"`), or `<id>` when
/// it does not decode.
pub fn show_token(m: &LoadedModel, id: u32) -> String {
    let s = m
        .tokenizer
        .decode(&[id])
        .unwrap_or_else(|_| format!("<{id}>"));
    format!("{s:?}")
}
