//! Chat templates: the prompt formats of the chat models Interplab knows, rendered without a
//! Jinja engine.
//!
//! - ChatML (SmolLM2, Qwen, ...): `<|im_start|>{role}\n{content}<|im_end|>\n` per message, and
//!   `<|im_start|>assistant\n` as the generation prompt. A template that writes a default system
//!   message when the conversation has none (SmolLM2's) keeps that text in `default_system`.
//! - Gemma: `<start_of_turn>{role}\n{content}<end_of_turn>\n`, with `assistant` written as
//!   `model` and content trimmed; Gemma has no system role, so a leading system message is put
//!   before the first turn's content, followed by a blank line (as Gemma 3's official template).
//!   `<bos>` is not written: it comes from `Tokenizer::encode(.., add_bos = true)`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::meta;
use crate::gguf::GgufValue;
use crate::{Error, Result};

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant` (other roles are written as given).
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message with any role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// A chat prompt format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatTemplate {
    /// ChatML; `default_system` is written first when the conversation has no system message.
    ChatMl {
        /// The system message the model's template inserts when none is given.
        default_system: Option<String>,
    },
    /// Gemma's turns (`<start_of_turn>` / `<end_of_turn>`).
    Gemma,
}

const IM_START: &str = "<|im_start|>";
const IM_END: &str = "<|im_end|>";

impl ChatTemplate {
    /// The template of a GGUF model, from `tokenizer.chat_template`, else from its architecture
    /// and vocabulary; an error when neither names a known format.
    pub fn for_model(meta: &BTreeMap<String, GgufValue>) -> Result<Self> {
        if let Some(template) = meta::string(meta, "tokenizer.chat_template")? {
            return Self::from_template_source(template);
        }
        let arch = meta::string(meta, "general.architecture")?.unwrap_or("");
        if arch.starts_with("gemma") {
            return Ok(ChatTemplate::Gemma);
        }
        if let Some(tokens) = meta::string_array(meta, "tokenizer.ggml.tokens")? {
            if tokens.contains(&IM_START) && tokens.contains(&IM_END) {
                return Ok(ChatTemplate::ChatMl {
                    default_system: None,
                });
            }
        }
        Err(Error::Tokenizer(format!(
            "no chat template in the model metadata and none known for architecture {arch:?}"
        )))
    }

    /// The format a Jinja chat template (as found in `tokenizer.chat_template` or
    /// `tokenizer_config.json`) writes; an error for formats Interplab does not know.
    pub fn from_template_source(template: &str) -> Result<Self> {
        if template.contains(IM_START) {
            Ok(ChatTemplate::ChatMl {
                default_system: default_system_of(template),
            })
        } else if template.contains("<start_of_turn>") {
            Ok(ChatTemplate::Gemma)
        } else {
            let head: String = template.chars().take(80).collect();
            Err(Error::Tokenizer(format!(
                "unknown chat template format (starts {head:?})"
            )))
        }
    }

    /// The prompt text for `messages`, ending with the model's turn opener when
    /// `add_generation_prompt` is set.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> String {
        let mut out = String::new();
        match self {
            ChatTemplate::ChatMl { default_system } => {
                for (i, m) in messages.iter().enumerate() {
                    if i == 0 && m.role != "system" {
                        if let Some(system) = default_system {
                            out.push_str(&format!("{IM_START}system\n{system}{IM_END}\n"));
                        }
                    }
                    out.push_str(&format!("{IM_START}{}\n{}{IM_END}\n", m.role, m.content));
                }
                if add_generation_prompt {
                    out.push_str(&format!("{IM_START}assistant\n"));
                }
            }
            ChatTemplate::Gemma => {
                let (prefix, turns) = match messages.split_first() {
                    Some((first, rest)) if first.role == "system" => {
                        (format!("{}\n\n", first.content), rest)
                    }
                    _ => (String::new(), messages),
                };
                for (i, m) in turns.iter().enumerate() {
                    let role = if m.role == "assistant" {
                        "model"
                    } else {
                        m.role.as_str()
                    };
                    out.push_str("<start_of_turn>");
                    out.push_str(role);
                    out.push('\n');
                    if i == 0 {
                        out.push_str(&prefix);
                    }
                    out.push_str(m.content.trim());
                    out.push_str("<end_of_turn>\n");
                }
                if add_generation_prompt {
                    out.push_str("<start_of_turn>model\n");
                }
            }
        }
        out
    }
}

/// The system message a ChatML template writes as a literal: the text between
/// `<|im_start|>system` + newline and `<|im_end|>` inside one string constant (a system block
/// built from `message['content']` is not a default).
fn default_system_of(template: &str) -> Option<String> {
    for marker in ["<|im_start|>system\n", "<|im_start|>system\\n"] {
        let mut rest = template;
        while let Some(at) = rest.find(marker) {
            let after = &rest[at + marker.len()..];
            rest = after;
            let Some(end) = after.find(IM_END) else {
                continue;
            };
            let text = &after[..end];
            if text.is_empty() || text.contains(['\'', '"', '{', '}', '+']) {
                continue;
            }
            return Some(unescape(text));
        }
    }
    None
}

/// Undoes the escapes a Jinja string constant may hold.
fn unescape(text: &str) -> String {
    if !text.contains('\\') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M-Instruct's template, as stored in its GGUF.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    const SMOL_SYSTEM: &str =
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

    fn meta(pairs: &[(&str, GgufValue)]) -> BTreeMap<String, GgufValue> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn smollm2_template_is_chatml_with_default_system() {
        let t = ChatTemplate::from_template_source(SMOLLM2).unwrap();
        assert_eq!(
            t,
            ChatTemplate::ChatMl {
                default_system: Some(SMOL_SYSTEM.to_string())
            }
        );
        let m = meta(&[
            ("general.architecture", GgufValue::String("llama".into())),
            ("tokenizer.chat_template", GgufValue::String(SMOLLM2.into())),
        ]);
        assert_eq!(ChatTemplate::for_model(&m).unwrap(), t);
    }

    #[test]
    fn chatml_render_inserts_default_system_only_without_one() {
        let t = ChatTemplate::from_template_source(SMOLLM2).unwrap();
        let got = t.render(&[ChatMessage::user("What is 2+2?")], true);
        assert_eq!(
            got,
            format!(
                "<|im_start|>system\n{SMOL_SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
            )
        );
        let got = t.render(
            &[
                ChatMessage::system("Be brief."),
                ChatMessage::user("Hi"),
                ChatMessage::assistant("Hello!"),
            ],
            false,
        );
        assert_eq!(
            got,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
        );
        // No messages: the template's loop never runs, so no default system either.
        assert_eq!(t.render(&[], true), "<|im_start|>assistant\n");
        assert_eq!(t.render(&[], false), "");
    }

    #[test]
    fn chatml_without_default_system() {
        let src = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}";
        let t = ChatTemplate::from_template_source(src).unwrap();
        assert_eq!(
            t,
            ChatTemplate::ChatMl {
                default_system: None
            }
        );
        assert_eq!(
            t.render(&[ChatMessage::user("x")], true),
            "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn escaped_newline_in_default_system() {
        let src = "{{ '<|im_start|>system\\nLine one\\nLine two<|im_end|>\\n' }}";
        assert_eq!(
            default_system_of(src).as_deref(),
            Some("Line one\nLine two")
        );
    }

    #[test]
    fn gemma_render() {
        let t = ChatTemplate::Gemma;
        assert_eq!(
            t.render(&[ChatMessage::user("Hello")], true),
            "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n"
        );
        let got = t.render(
            &[
                ChatMessage::system("You are terse."),
                ChatMessage::user("  Hi  "),
                ChatMessage::assistant("Hello."),
                ChatMessage::user("Bye"),
            ],
            false,
        );
        assert_eq!(
            got,
            "<start_of_turn>user\nYou are terse.\n\nHi<end_of_turn>\n\
             <start_of_turn>model\nHello.<end_of_turn>\n\
             <start_of_turn>user\nBye<end_of_turn>\n"
        );
        assert_eq!(t.render(&[], true), "<start_of_turn>model\n");
    }

    #[test]
    fn detection_by_architecture_and_vocabulary() {
        let gemma = meta(&[("general.architecture", GgufValue::String("gemma3".into()))]);
        assert_eq!(
            ChatTemplate::for_model(&gemma).unwrap(),
            ChatTemplate::Gemma
        );
        let chatml = meta(&[
            ("general.architecture", GgufValue::String("llama".into())),
            (
                "tokenizer.ggml.tokens",
                GgufValue::Array(vec![
                    GgufValue::String("<|im_start|>".into()),
                    GgufValue::String("<|im_end|>".into()),
                ]),
            ),
        ]);
        assert_eq!(
            ChatTemplate::for_model(&chatml).unwrap(),
            ChatTemplate::ChatMl {
                default_system: None
            }
        );
        let unknown = meta(&[("general.architecture", GgufValue::String("gpt2".into()))]);
        assert!(matches!(
            ChatTemplate::for_model(&unknown),
            Err(Error::Tokenizer(_))
        ));
        let odd = meta(&[(
            "tokenizer.chat_template",
            GgufValue::String("[INST] {{ m }} [/INST]".into()),
        )]);
        assert!(ChatTemplate::for_model(&odd).is_err());
        let wrong_type = meta(&[("tokenizer.chat_template", GgufValue::U32(3))]);
        assert!(ChatTemplate::for_model(&wrong_type).is_err());
    }
}
