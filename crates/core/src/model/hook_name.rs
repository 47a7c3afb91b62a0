//! Hook point names: one table, in forward order, from which the model both emits its
//! activations and lists them ([`HookName::all`], behind `HookedTransformer::hook_names`).
//!
//! A [`HookName`] displays as its TransformerLens name (`blocks.3.attn.hook_pattern`) and
//! [`HookName::parse`] reads one back. Which points a model has depends on its config and its
//! [`HookSettings`]:
//! - opt-in (off by default, as in TransformerLens): `attn.hook_result`
//!   (`use_attn_result`), `hook_q_input`/`hook_k_input`/`hook_v_input` (`use_split_qkv_input`),
//!   `hook_attn_in` (`use_attn_in`, not together with split inputs), `hook_mlp_in`
//!   (`use_hook_mlp_in`);
//! - by architecture: `hook_pos_embed` with learned positions only, `attn.hook_rot_q`/`hook_rot_k`
//!   with rotary positions only, `ln*.hook_scale`/`hook_normalized` when the model has norms,
//!   `mlp.hook_pre_linear` for gated MLPs only, `hook_resid_mid` unless attention and MLP run in
//!   parallel, and no MLP points at all for attention-only models.

use std::fmt;

use super::HookSettings;
use crate::config::{ModelConfig, NormKind, Positions};

/// One hook point; block points carry their layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookName {
    /// `hook_embed`: the token embedding (after Gemma's embedding scale).
    Embed,
    /// `hook_pos_embed`: the learned positional embedding.
    PosEmbed,
    /// `blocks.L.hook_resid_pre`
    ResidPre(usize),
    /// `blocks.L.hook_q_input` `[batch, pos, head, d_model]`
    QInput(usize),
    /// `blocks.L.hook_k_input`
    KInput(usize),
    /// `blocks.L.hook_v_input`
    VInput(usize),
    /// `blocks.L.hook_attn_in`
    AttnIn(usize),
    /// `blocks.L.ln1.hook_scale`
    Ln1Scale(usize),
    /// `blocks.L.ln1.hook_normalized`
    Ln1Normalized(usize),
    /// `blocks.L.attn.hook_q`
    AttnQ(usize),
    /// `blocks.L.attn.hook_k`
    AttnK(usize),
    /// `blocks.L.attn.hook_v`
    AttnV(usize),
    /// `blocks.L.attn.hook_rot_q`
    AttnRotQ(usize),
    /// `blocks.L.attn.hook_rot_k`
    AttnRotK(usize),
    /// `blocks.L.attn.hook_attn_scores`
    AttnScores(usize),
    /// `blocks.L.attn.hook_pattern`
    AttnPattern(usize),
    /// `blocks.L.attn.hook_z`
    AttnZ(usize),
    /// `blocks.L.attn.hook_result`
    AttnResult(usize),
    /// `blocks.L.hook_attn_out`
    AttnOut(usize),
    /// `blocks.L.hook_resid_mid`
    ResidMid(usize),
    /// `blocks.L.hook_mlp_in`
    MlpIn(usize),
    /// `blocks.L.ln2.hook_scale`
    Ln2Scale(usize),
    /// `blocks.L.ln2.hook_normalized`
    Ln2Normalized(usize),
    /// `blocks.L.mlp.hook_pre` (the gate's pre-activation for gated MLPs)
    MlpPre(usize),
    /// `blocks.L.mlp.hook_pre_linear` (gated MLPs: the linear branch)
    MlpPreLinear(usize),
    /// `blocks.L.mlp.hook_post`
    MlpPost(usize),
    /// `blocks.L.hook_mlp_out`
    MlpOut(usize),
    /// `blocks.L.hook_resid_post`
    ResidPost(usize),
    /// `ln_final.hook_scale`
    LnFinalScale,
    /// `ln_final.hook_normalized`
    LnFinalNormalized,
    /// `unembed.hook_out`: the logits.
    UnembedOut,
}

/// When a hook point exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    Always,
    LearnedPositions,
    /// `use_split_qkv_input`
    SplitQkvInput,
    /// `use_attn_in` without `use_split_qkv_input` (split inputs replace it).
    AttnIn,
    /// The model has norms.
    Norm,
    Rotary,
    /// `use_attn_result`
    AttnResult,
    /// The block has an MLP.
    Mlp,
    /// The block has an MLP that reads `resid_mid` (not parallel attention and MLP).
    SequentialMlp,
    /// `use_hook_mlp_in` and the block has an MLP.
    MlpIn,
    /// The block has an MLP and the model has norms.
    MlpNorm,
    /// The block has a gated MLP.
    GatedMlp,
}

impl When {
    fn holds(self, c: &ModelConfig, s: &HookSettings) -> bool {
        let norm = c.norm != NormKind::None;
        let mlp = !c.attn_only;
        match self {
            When::Always => true,
            When::LearnedPositions => c.positions == Positions::Learned,
            When::SplitQkvInput => s.use_split_qkv_input,
            When::AttnIn => s.use_attn_in && !s.use_split_qkv_input,
            When::Norm => norm,
            When::Rotary => matches!(c.positions, Positions::Rotary { .. }),
            When::AttnResult => s.use_attn_result,
            When::Mlp => mlp,
            When::SequentialMlp => mlp && !c.parallel_attn_mlp,
            When::MlpIn => mlp && s.use_hook_mlp_in,
            When::MlpNorm => mlp && norm,
            When::GatedMlp => mlp && c.gated_mlp,
        }
    }
}

/// Points before the first block, in forward order.
const BEFORE: [(HookName, &str, When); 2] = [
    (HookName::Embed, "hook_embed", When::Always),
    (HookName::PosEmbed, "hook_pos_embed", When::LearnedPositions),
];

/// A block point: its constructor (taking the layer), its name after `blocks.L.`, and when it exists.
type BlockRow = (fn(usize) -> HookName, &'static str, When);

/// Points of block `L` (names after `blocks.L.`), in forward order.
const BLOCK: [BlockRow; 26] = [
    (HookName::ResidPre, "hook_resid_pre", When::Always),
    (HookName::QInput, "hook_q_input", When::SplitQkvInput),
    (HookName::KInput, "hook_k_input", When::SplitQkvInput),
    (HookName::VInput, "hook_v_input", When::SplitQkvInput),
    (HookName::AttnIn, "hook_attn_in", When::AttnIn),
    (HookName::Ln1Scale, "ln1.hook_scale", When::Norm),
    (HookName::Ln1Normalized, "ln1.hook_normalized", When::Norm),
    (HookName::AttnQ, "attn.hook_q", When::Always),
    (HookName::AttnK, "attn.hook_k", When::Always),
    (HookName::AttnV, "attn.hook_v", When::Always),
    (HookName::AttnRotQ, "attn.hook_rot_q", When::Rotary),
    (HookName::AttnRotK, "attn.hook_rot_k", When::Rotary),
    (HookName::AttnScores, "attn.hook_attn_scores", When::Always),
    (HookName::AttnPattern, "attn.hook_pattern", When::Always),
    (HookName::AttnZ, "attn.hook_z", When::Always),
    (HookName::AttnResult, "attn.hook_result", When::AttnResult),
    (HookName::AttnOut, "hook_attn_out", When::Always),
    (HookName::ResidMid, "hook_resid_mid", When::SequentialMlp),
    (HookName::MlpIn, "hook_mlp_in", When::MlpIn),
    (HookName::Ln2Scale, "ln2.hook_scale", When::MlpNorm),
    (
        HookName::Ln2Normalized,
        "ln2.hook_normalized",
        When::MlpNorm,
    ),
    (HookName::MlpPre, "mlp.hook_pre", When::Mlp),
    (
        HookName::MlpPreLinear,
        "mlp.hook_pre_linear",
        When::GatedMlp,
    ),
    (HookName::MlpPost, "mlp.hook_post", When::Mlp),
    (HookName::MlpOut, "hook_mlp_out", When::Mlp),
    (HookName::ResidPost, "hook_resid_post", When::Always),
];

/// Points after the last block, in forward order.
const AFTER: [(HookName, &str, When); 3] = [
    (HookName::LnFinalScale, "ln_final.hook_scale", When::Norm),
    (
        HookName::LnFinalNormalized,
        "ln_final.hook_normalized",
        When::Norm,
    ),
    (HookName::UnembedOut, "unembed.hook_out", When::Always),
];

impl HookName {
    /// Every hook point of a model with config `cfg` and hook settings `settings`, in forward
    /// order: exactly the points its forward emits.
    pub fn all(cfg: &ModelConfig, settings: &HookSettings) -> Vec<HookName> {
        let mut v: Vec<HookName> = BEFORE
            .iter()
            .filter(|e| e.2.holds(cfg, settings))
            .map(|e| e.0)
            .collect();
        for l in 0..cfg.n_layers {
            v.extend(
                BLOCK
                    .iter()
                    .filter(|e| e.2.holds(cfg, settings))
                    .map(|e| (e.0)(l)),
            );
        }
        v.extend(
            AFTER
                .iter()
                .filter(|e| e.2.holds(cfg, settings))
                .map(|e| e.0),
        );
        v
    }

    /// The block of a `blocks.L.*` point.
    pub fn layer(self) -> Option<usize> {
        use HookName::*;
        match self {
            Embed | PosEmbed | LnFinalScale | LnFinalNormalized | UnembedOut => None,
            ResidPre(l) | QInput(l) | KInput(l) | VInput(l) | AttnIn(l) | Ln1Scale(l)
            | Ln1Normalized(l) | AttnQ(l) | AttnK(l) | AttnV(l) | AttnRotQ(l) | AttnRotK(l)
            | AttnScores(l) | AttnPattern(l) | AttnZ(l) | AttnResult(l) | AttnOut(l)
            | ResidMid(l) | MlpIn(l) | Ln2Scale(l) | Ln2Normalized(l) | MlpPre(l)
            | MlpPreLinear(l) | MlpPost(l) | MlpOut(l) | ResidPost(l) => Some(l),
        }
    }

    /// The name without its `blocks.L.` prefix (`attn.hook_z`, `hook_embed`, ...).
    pub fn site(self) -> &'static str {
        let found = match self.layer() {
            Some(l) => BLOCK.iter().find(|e| (e.0)(l) == self).map(|e| e.1),
            None => BEFORE
                .iter()
                .chain(AFTER.iter())
                .find(|e| e.0 == self)
                .map(|e| e.1),
        };
        // Every variant has a row in the tables (the tests list every one).
        found.expect("every hook name has a row in the table")
    }

    /// The TransformerLens name (the same as `to_string()`).
    pub fn as_string(self) -> String {
        self.to_string()
    }

    /// The glob that selects this point in every block (`blocks.*.attn.hook_z`); for a point
    /// outside the blocks, its name.
    pub fn every_layer(self) -> String {
        match self.layer() {
            Some(_) => format!("blocks.*.{}", self.site()),
            None => self.to_string(),
        }
    }

    /// Read a TransformerLens name back; `None` if it names no hook point of any model.
    pub fn parse(name: &str) -> Option<HookName> {
        if let Some(rest) = name.strip_prefix("blocks.") {
            let (layer, site) = rest.split_once('.')?;
            // Plain decimal only, so `blocks.+1.` or `blocks.01.` do not alias `blocks.1.`.
            if layer.is_empty()
                || !layer.bytes().all(|b| b.is_ascii_digit())
                || (layer.len() > 1 && layer.starts_with('0'))
            {
                return None;
            }
            let l: usize = layer.parse().ok()?;
            return BLOCK.iter().find(|e| e.1 == site).map(|e| (e.0)(l));
        }
        BEFORE
            .iter()
            .chain(AFTER.iter())
            .find(|e| e.1 == name)
            .map(|e| e.0)
    }
}

impl fmt::Display for HookName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.layer() {
            Some(l) => write!(f, "blocks.{l}.{}", self.site()),
            None => f.write_str(self.site()),
        }
    }
}

impl From<HookName> for String {
    fn from(h: HookName) -> String {
        h.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings_combinations() -> Vec<HookSettings> {
        (0..16u8)
            .map(|bits| HookSettings {
                use_attn_result: bits & 1 != 0,
                use_split_qkv_input: bits & 2 != 0,
                use_attn_in: bits & 4 != 0,
                use_hook_mlp_in: bits & 8 != 0,
            })
            .collect()
    }

    #[test]
    fn names_are_transformer_lens_names_and_parse_back() {
        assert_eq!(HookName::Embed.to_string(), "hook_embed");
        assert_eq!(HookName::ResidPre(3).to_string(), "blocks.3.hook_resid_pre");
        assert_eq!(
            HookName::AttnPattern(12).to_string(),
            "blocks.12.attn.hook_pattern"
        );
        assert_eq!(HookName::Ln2Scale(0).as_string(), "blocks.0.ln2.hook_scale");
        assert_eq!(HookName::LnFinalScale.to_string(), "ln_final.hook_scale");
        assert_eq!(HookName::UnembedOut.to_string(), "unembed.hook_out");
        assert_eq!(HookName::AttnZ(5).every_layer(), "blocks.*.attn.hook_z");
        assert_eq!(HookName::Embed.every_layer(), "hook_embed");
        assert_eq!(
            HookName::parse("blocks.7.mlp.hook_pre_linear"),
            Some(HookName::MlpPreLinear(7))
        );
        for bad in [
            "",
            "blocks",
            "blocks.",
            "blocks.1",
            "blocks.x.hook_resid_pre",
            "blocks.01.hook_resid_pre",
            "blocks.+1.hook_resid_pre",
            "blocks.-1.hook_resid_pre",
            "blocks.1.hook_resid_pree",
            "blocks.1.hook_embed",
            "hook_resid_pre",
            "ln1.hook_scale",
            "blocks.*.attn.hook_z",
        ] {
            assert_eq!(HookName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_table_row_round_trips() {
        for e in BEFORE.iter().chain(AFTER.iter()) {
            assert_eq!(e.0.to_string(), e.1);
            assert_eq!(HookName::parse(e.1), Some(e.0));
            assert_eq!(e.0.layer(), None);
        }
        for l in [0, 1, 9, 10, 123] {
            for e in BLOCK.iter() {
                let h = (e.0)(l);
                assert_eq!(h.layer(), Some(l));
                assert_eq!(h.site(), e.1);
                assert_eq!(h.to_string(), format!("blocks.{l}.{}", e.1));
                assert_eq!(HookName::parse(&h.to_string()), Some(h));
            }
        }
        // Sites are unique, so parse is a function.
        let mut sites: Vec<&str> = BLOCK.iter().map(|e| e.1).collect();
        sites.extend(BEFORE.iter().chain(AFTER.iter()).map(|e| e.1));
        let n = sites.len();
        sites.sort();
        sites.dedup();
        assert_eq!(sites.len(), n);
    }

    #[test]
    fn every_variant_is_listed_by_some_config() {
        let mut cfg = ModelConfig::attention_only(8, 2, 2, 4, 10, 16);
        let mut seen = std::collections::BTreeSet::new();
        for (norm, positions, attn_only, parallel, gated) in [
            (NormKind::None, Positions::Learned, true, false, false),
            (NormKind::LayerNorm, Positions::Learned, false, false, false),
            (
                NormKind::RmsNorm,
                Positions::Rotary {
                    dim: 4,
                    base: 1e4,
                    local_base: None,
                },
                false,
                true,
                true,
            ),
        ] {
            cfg.norm = norm;
            cfg.positions = positions;
            cfg.attn_only = attn_only;
            cfg.parallel_attn_mlp = parallel;
            cfg.gated_mlp = gated;
            for s in settings_combinations() {
                let all = HookName::all(&cfg, &s);
                for h in &all {
                    assert_eq!(HookName::parse(&h.to_string()), Some(*h));
                }
                let mut distinct = all.clone();
                distinct.sort();
                distinct.dedup();
                assert_eq!(distinct.len(), all.len(), "duplicates in {all:?}");
                seen.extend(all.iter().map(|h| h.site()));
            }
        }
        assert_eq!(seen.len(), BEFORE.len() + BLOCK.len() + AFTER.len());
    }
}
