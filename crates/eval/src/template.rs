//! The subset of Jinja2 that lm-evaluation-harness task files use for `doc_to_text`,
//! `doc_to_choice` and `doc_to_target`: literal text with `{{ expression }}` substitutions,
//! where an expression is a path into the item — `question`, `mc1_targets.choices`,
//! `choices[0]`, `answers['text']` — with optional whitespace-control dashes (`{{- x -}}`).
//!
//! Values render as Jinja renders them from Python objects: strings as they are, integers in
//! decimal, booleans as `True`/`False`, null as `None`, floats as Python's `repr`, lists and
//! objects as Python's `repr` (`['a', 'b']`). A template that is exactly one substitution
//! can also be evaluated to the value itself ([`Template::value`]), which is what the harness
//! gets from `ast.literal_eval` of a rendered list. Anything else (`{% ... %}` blocks, filters,
//! arithmetic) is refused when the template is parsed, naming the construct.

use serde_json::Value;

use interplab_core::{Error, Result};

/// One parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Expr(Vec<Step>),
}

/// One step of a path: a field name or a list index.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

impl Template {
    /// Parses `source`; errors name the construct that is not supported.
    pub fn parse(source: &str) -> Result<Template> {
        let mut parts = Vec::new();
        let mut rest = source;
        let mut text = String::new();
        // Whether the previous substitution ended with `-}}`: strip leading whitespace.
        let mut trim_next = false;
        loop {
            let open = [rest.find("{{"), rest.find("{%"), rest.find("{#")]
                .into_iter()
                .flatten()
                .min();
            let Some(at) = open else {
                text.push_str(if trim_next { rest.trim_start() } else { rest });
                break;
            };
            let before = &rest[..at];
            let before = if trim_next {
                before.trim_start()
            } else {
                before
            };
            let tag = &rest[at..at + 2];
            if tag != "{{" {
                return Err(Error::Input(format!(
                    "template {source:?}: `{tag} ... ` blocks and comments are not supported \
                     (only {{{{ field }}}} substitutions)"
                )));
            }
            let inner_start = at + 2;
            let Some(close) = rest[inner_start..].find("}}") else {
                return Err(Error::Input(format!(
                    "template {source:?}: `{{{{` without a closing `}}}}`"
                )));
            };
            let mut inner = &rest[inner_start..inner_start + close];
            let mut before = before.to_string();
            if let Some(s) = inner.strip_prefix('-') {
                inner = s;
                before = before.trim_end().to_string();
            }
            trim_next = false;
            if let Some(s) = inner.strip_suffix('-') {
                inner = s;
                trim_next = true;
            }
            text.push_str(&before);
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(Part::Expr(parse_path(inner.trim(), source)?));
            rest = &rest[inner_start + close + 2..];
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template {
            source: source.to_string(),
            parts,
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders the template over `item`. A missing field is an error naming it.
    pub fn render(&self, item: &Value) -> Result<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Expr(path) => match lookup(item, path)? {
                    Value::String(s) => out.push_str(s),
                    v => out.push_str(&python_repr(v)),
                },
            }
        }
        Ok(out)
    }

    /// When the template is exactly one substitution, the value it names (a list stays a
    /// list); otherwise the rendered string.
    pub fn value(&self, item: &Value) -> Result<Value> {
        match self.parts.as_slice() {
            [Part::Expr(path)] => Ok(lookup(item, path)?.clone()),
            _ => Ok(Value::String(self.render(item)?)),
        }
    }

    /// The item fields the template reads (the first step of every path).
    pub fn fields(&self) -> Vec<&str> {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Expr(path) => match path.first() {
                    Some(Step::Key(k)) => Some(k.as_str()),
                    _ => None,
                },
                Part::Text(_) => None,
            })
            .collect()
    }
}

fn parse_path(expr: &str, source: &str) -> Result<Vec<Step>> {
    let bad = |why: &str| {
        Error::Input(format!(
            "template {source:?}: `{{{{ {expr} }}}}`: {why} (only field paths such as \
             question, a.b, a[0], a['k'] are supported)"
        ))
    };
    if expr.is_empty() {
        return Err(bad("empty substitution"));
    }
    let mut steps = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    let ident = |i: &mut usize| -> Option<String> {
        let start = *i;
        while *i < bytes.len() && (bytes[*i].is_ascii_alphanumeric() || bytes[*i] == b'_') {
            *i += 1;
        }
        (*i > start && !bytes[start].is_ascii_digit()).then(|| expr[start..*i].to_string())
    };
    steps.push(Step::Key(
        ident(&mut i).ok_or_else(|| bad("expected a field name"))?,
    ));
    while i < bytes.len() {
        match bytes[i] {
            b'.' => {
                i += 1;
                steps.push(Step::Key(
                    ident(&mut i).ok_or_else(|| bad("expected a field name after `.`"))?,
                ));
            }
            b'[' => {
                let Some(end) = expr[i..].find(']') else {
                    return Err(bad("`[` without `]`"));
                };
                let inside = expr[i + 1..i + end].trim();
                let quoted = (inside.starts_with('\'') && inside.ends_with('\''))
                    || (inside.starts_with('"') && inside.ends_with('"'));
                if quoted && inside.len() >= 2 {
                    steps.push(Step::Key(inside[1..inside.len() - 1].to_string()));
                } else if let Ok(n) = inside.parse::<usize>() {
                    steps.push(Step::Index(n));
                } else {
                    return Err(bad("an index must be a number or a quoted key"));
                }
                i += end + 1;
            }
            b' ' if expr[i..].trim_start().starts_with('|') => {
                return Err(bad("filters are not supported"))
            }
            b' ' => return Err(bad("unexpected space")),
            b'|' => return Err(bad("filters are not supported")),
            _ => return Err(bad("unexpected character")),
        }
    }
    Ok(steps)
}

fn lookup<'a>(item: &'a Value, path: &[Step]) -> Result<&'a Value> {
    let mut v = item;
    let mut shown = String::new();
    for step in path {
        v = match step {
            Step::Key(k) => {
                if !shown.is_empty() {
                    shown.push('.');
                }
                shown.push_str(k);
                v.get(k.as_str())
                    .ok_or_else(|| Error::Input(format!("the item has no field `{shown}`")))?
            }
            Step::Index(n) => {
                shown.push_str(&format!("[{n}]"));
                let len = v.as_array().map(Vec::len);
                v.get(*n).ok_or_else(|| {
                    Error::Input(match len {
                        Some(len) => format!("`{shown}` is out of range (the list has {len})"),
                        None => format!("`{shown}`: not a list"),
                    })
                })?
            }
        };
    }
    Ok(v)
}

/// How Python's `repr` (and so Jinja) prints a JSON value.
pub fn python_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                python_float(f)
            } else {
                n.to_string()
            }
        }
        Value::String(s) => python_str_repr(s),
        Value::Array(a) => {
            let inner: Vec<String> = a.iter().map(python_repr).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(o) => {
            let inner: Vec<String> = o
                .iter()
                .map(|(k, v)| format!("{}: {}", python_str_repr(k), python_repr(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    // Rust's shortest round-trip form is Python's repr, except that Python writes a trailing
    // `.0` on integral values and switches to exponents outside [1e-4, 1e16).
    let a = f.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        let s = format!("{f:e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let e: i32 = e.parse().unwrap_or(0);
        return format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    }
    let s = format!("{f}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

/// Python's `repr` of a string: single quotes unless the text holds a single quote and no
/// double quote.
fn python_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn substitutes_paths_and_keeps_text() {
        let item = json!({"question": "Why?", "mc": {"choices": ["a", "b"]}, "n": 3});
        let t = Template::parse("Q: {{question}}\nA: {{ mc.choices[1] }} ({{n}})").unwrap();
        assert_eq!(t.render(&item).unwrap(), "Q: Why?\nA: b (3)");
        assert_eq!(t.fields(), vec!["question", "mc", "n"]);
        let whole = Template::parse("{{mc['choices']}}").unwrap();
        assert_eq!(whole.value(&item).unwrap(), json!(["a", "b"]));
        assert_eq!(whole.render(&item).unwrap(), "['a', 'b']");
    }

    #[test]
    fn whitespace_control_trims_like_jinja() {
        let item = json!({"x": "X"});
        let t = Template::parse("a  {{- x -}}  b").unwrap();
        assert_eq!(t.render(&item).unwrap(), "aXb");
    }

    #[test]
    fn python_reprs() {
        assert_eq!(python_repr(&json!("it's")), "\"it's\"");
        assert_eq!(python_repr(&json!("a'\"b")), "'a\\'\"b'");
        assert_eq!(
            python_repr(&json!([1, 2.5, true, null])),
            "[1, 2.5, True, None]"
        );
        assert_eq!(python_repr(&json!(2.0)), "2.0");
        assert_eq!(python_repr(&json!(1e-5)), "1e-05");
        assert_eq!(python_repr(&json!(1.5e20)), "1.5e+20");
    }

    #[test]
    fn unsupported_syntax_and_missing_fields_are_named() {
        let e = Template::parse("{% for x in y %}").unwrap_err().to_string();
        assert!(e.contains("{%"), "{e}");
        let e = Template::parse("{{ x | upper }}").unwrap_err().to_string();
        assert!(e.contains("filters"), "{e}");
        let e = Template::parse("{{ x").unwrap_err().to_string();
        assert!(e.contains("closing"), "{e}");
        let t = Template::parse("{{ a.b[2] }}").unwrap();
        let e = t.render(&json!({"a": {"b": [1]}})).unwrap_err().to_string();
        assert!(e.contains("a.b[2]") && e.contains("out of range"), "{e}");
        let e = t.render(&json!({"c": 1})).unwrap_err().to_string();
        assert!(e.contains("no field `a`"), "{e}");
    }
}
