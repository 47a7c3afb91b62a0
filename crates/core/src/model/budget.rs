//! Memory budgets: how many bytes an activation cache will hold, known from the hook names and
//! the model's shapes before any forward work, so a cache that cannot fit is refused with the
//! numbers instead of being killed by the kernel halfway through.

use candle_core::Tensor;

use super::{ActivationCache, HookedTransformer, Input, NameFilter, RunOptions};
use crate::{Error, Result};

/// The most bytes an activation cache may hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheBudget {
    /// The memory the kernel says is available (`MemAvailable` in `/proc/meminfo`); no limit
    /// where that cannot be read.
    #[default]
    Available,
    /// At most this many bytes, whatever the machine has.
    Bytes(u64),
}

impl CacheBudget {
    /// `Bytes(b)` when given, else [`CacheBudget::Available`].
    pub fn from_option(max_bytes: Option<u64>) -> Self {
        max_bytes.map_or(CacheBudget::Available, CacheBudget::Bytes)
    }

    /// The budget in bytes and where it came from; `None` when there is no limit.
    pub fn resolve(self) -> Option<(u64, &'static str)> {
        match self {
            CacheBudget::Bytes(b) => Some((b, "the --max-cache-bytes budget")),
            CacheBudget::Available => mem_available().map(|b| (b, "MemAvailable in /proc/meminfo")),
        }
    }
}

/// `MemAvailable` from `/proc/meminfo` in bytes, `None` where it cannot be read.
pub fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

impl HookedTransformer {
    /// The shape of the activation at hook point `name` in a forward over `batch` × `pos`
    /// tokens (TransformerLens' shapes; see the hook table in DESIGN.md).
    pub fn hook_shape(&self, name: &str, batch: usize, pos: usize) -> Result<Vec<usize>> {
        let c = &self.cfg;
        let (b, p, d) = (batch, pos, c.d_model);
        let (h, kvh, dh) = (c.n_heads, c.n_kv_heads, c.d_head);
        let unknown = || Error::Hook(format!("`{name}` is not a hook point of this model"));
        let point = match name.strip_prefix("blocks.") {
            Some(rest) => rest.split_once('.').ok_or_else(unknown)?.1,
            None => name,
        };
        // With split q/k/v inputs ln1 runs once per input on `[b, p, heads, d]`; the cache keeps
        // the last one, the value input's (`n_kv_heads` wide).
        let ln1_heads = self.settings.use_split_qkv_input;
        Ok(match point {
            "hook_embed"
            | "hook_pos_embed"
            | "ln_final.hook_normalized"
            | "ln2.hook_normalized"
            | "hook_resid_pre"
            | "hook_resid_mid"
            | "hook_resid_post"
            | "hook_attn_out"
            | "hook_mlp_out"
            | "hook_attn_in"
            | "hook_mlp_in" => vec![b, p, d],
            "ln1.hook_normalized" if ln1_heads => vec![b, p, kvh, d],
            "ln1.hook_normalized" => vec![b, p, d],
            "ln1.hook_scale" if ln1_heads => vec![b, p, kvh, 1],
            "ln_final.hook_scale" | "ln1.hook_scale" | "ln2.hook_scale" => vec![b, p, 1],
            "unembed.hook_out" => vec![b, p, c.d_vocab],
            "hook_q_input" => vec![b, p, h, d],
            "hook_k_input" | "hook_v_input" => vec![b, p, kvh, d],
            "attn.hook_q" | "attn.hook_rot_q" | "attn.hook_z" => vec![b, p, h, dh],
            "attn.hook_k" | "attn.hook_v" | "attn.hook_rot_k" => vec![b, p, kvh, dh],
            "attn.hook_attn_scores" | "attn.hook_pattern" => vec![b, h, p, p],
            "attn.hook_result" => vec![b, p, h, d],
            "mlp.hook_pre" | "mlp.hook_pre_linear" | "mlp.hook_post" => vec![b, p, c.d_mlp],
            _ => return Err(unknown()),
        })
    }

    /// The bytes of the cache that `run_with_cache(tokens, filter)` fills for `batch` × `pos`
    /// tokens (what [`ActivationCache::size_bytes`] will say); an error if a pattern of
    /// `filter` matches no hook point.
    pub fn cache_bytes(&self, filter: &NameFilter, batch: usize, pos: usize) -> Result<u64> {
        let elem = self.dtype().size_in_bytes() as u64;
        let mut total = 0u64;
        for name in filter.resolve(&self.hook_names())? {
            let n: u64 = self
                .hook_shape(&name, batch, pos)?
                .iter()
                .map(|&x| x as u64)
                .product();
            total = total.saturating_add(n.saturating_mul(elem));
        }
        Ok(total)
    }

    /// Refuse, before any work, a cache over `batch` × `pos` tokens whose bytes plus the
    /// logits' exceed `budget`. Returns the bytes it will hold.
    pub fn check_cache_budget(
        &self,
        filter: &NameFilter,
        batch: usize,
        pos: usize,
        budget: CacheBudget,
    ) -> Result<u64> {
        let cached = self.cache_bytes(filter, batch, pos)?;
        // The logits are returned beside the cache (shared with it when it holds them).
        let logits = if filter.matches("unembed.hook_out") {
            0
        } else {
            self.cache_bytes(&NameFilter::new(&["unembed.hook_out"]), batch, pos)?
        };
        let needed = cached.saturating_add(logits);
        let Some((available, source)) = budget.resolve() else {
            return Ok(needed);
        };
        if needed > available {
            let points = filter.resolve(&self.hook_names())?.len();
            return Err(Error::TooLarge {
                what: format!(
                    "an activation cache of {points} hook points over {batch}×{pos} tokens (with the logits)"
                ),
                needed,
                available,
                budget: source.into(),
                hint: "cache fewer hook points with a narrower filter (e.g. --cache \
                       'blocks.*.hook_resid_post'), use a shorter prompt, or set the budget with \
                       --max-cache-bytes"
                    .into(),
            });
        }
        Ok(needed)
    }

    /// [`HookedTransformer::run_with_cache`] under an explicit budget: refused before the
    /// forward when the cache would not fit.
    pub fn run_with_cache_within(
        &self,
        tokens: &Tensor,
        filter: &NameFilter,
        budget: CacheBudget,
    ) -> Result<(Tensor, ActivationCache)> {
        let (batch, pos) = tokens.dims2().map_err(|_| {
            Error::Input(format!(
                "tokens must be [batch, pos], got {:?}",
                tokens.dims()
            ))
        })?;
        self.check_cache_budget(filter, batch, pos, budget)?;
        self.run(
            Input::Tokens(tokens),
            &RunOptions::default(),
            None,
            Some(filter),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::{load_resolved, WeightStorage};
    use crate::model::HookSettings;
    use crate::source::ResolvedModel;
    use candle_core::Device;

    fn tiny(name: &str) -> HookedTransformer {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/hf")
            .join(name);
        let resolved = ResolvedModel {
            path: path.clone(),
            sha256: String::new(),
            source: path.display().to_string(),
        };
        load_resolved(resolved, &Device::Cpu, WeightStorage::Dense)
            .unwrap_or_else(|e| panic!("loading {name}: {e}"))
            .model
    }

    #[test]
    fn the_estimate_is_the_cache_size_for_every_architecture_and_setting() {
        let tokens = Tensor::new(&[[1u32, 5, 7, 2, 9], [3, 3, 8, 1, 4]], &Device::Cpu).unwrap();
        for fixture in ["gpt2-tiny", "neox-tiny", "llama-tiny", "gemma3-tiny"] {
            let mut m = tiny(fixture);
            for bits in 0..16u8 {
                m.settings = HookSettings {
                    use_attn_result: bits & 1 != 0,
                    use_split_qkv_input: bits & 2 != 0,
                    use_attn_in: bits & 4 != 0,
                    use_hook_mlp_in: bits & 8 != 0,
                };
                let all = NameFilter::all();
                let (_, cache) = m.run_with_cache(&tokens, &all).unwrap();
                assert_eq!(cache.len(), m.hook_names().len(), "{fixture} {bits}");
                for (name, t) in cache.iter() {
                    let want = m.hook_shape(name, 2, 5).unwrap();
                    assert_eq!(t.dims(), want.as_slice(), "{fixture} {bits}: {name}");
                }
                let estimate = m.cache_bytes(&all, 2, 5).unwrap();
                assert_eq!(estimate, cache.size_bytes() as u64, "{fixture} {bits}");
                let some = NameFilter::parse("blocks.0.*,unembed.hook_out");
                let (_, cache) = m.run_with_cache(&tokens, &some).unwrap();
                let estimate = m.cache_bytes(&some, 2, 5).unwrap();
                assert_eq!(estimate, cache.size_bytes() as u64, "{fixture} {bits}");
            }
        }
    }

    #[test]
    fn a_cache_over_budget_is_refused_with_the_numbers() {
        let m = tiny("llama-tiny");
        let tokens = Tensor::new(&[[1u32, 5, 7, 2]], &Device::Cpu).unwrap();
        let filter = NameFilter::parse("blocks.*.attn.hook_pattern");
        let needed = m.check_cache_budget(&filter, 1, 4, CacheBudget::Bytes(u64::MAX));
        let needed = needed.unwrap();
        let c = &m.cfg;
        let f32s = c.n_layers * c.n_heads * 4 * 4 + 4 * c.d_vocab;
        assert_eq!(needed, 4 * f32s as u64);
        let e = m
            .run_with_cache_within(&tokens, &filter, CacheBudget::Bytes(needed - 1))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("needs {needed} bytes")), "{e}");
        assert!(e.contains(&format!("but {} bytes", needed - 1)), "{e}");
        assert!(
            e.contains("--max-cache-bytes") && e.contains("narrower"),
            "{e}"
        );
        let (_, cache) = m
            .run_with_cache_within(&tokens, &filter, CacheBudget::Bytes(needed))
            .unwrap();
        assert_eq!(cache.len(), c.n_layers);
        assert!(mem_available().is_some_and(|b| b > 0));
    }
}
