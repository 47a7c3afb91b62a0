//! Hook points: names (TransformerLens'), name filters, hook functions and the activation cache.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use candle_core::Tensor;

use super::HookName;
use crate::{Error, Result};

/// Where a hook fired: its full name and, for block hooks, the layer.
#[derive(Debug, Clone, Copy)]
pub struct HookPoint<'a> {
    /// The TransformerLens name, e.g. `blocks.3.attn.hook_pattern`.
    pub name: &'a str,
    /// The block index for `blocks.L.*` hooks.
    pub layer: Option<usize>,
}

/// A hook sees an activation and may return a replacement of the same shape.
pub type HookFn<'a> = Box<dyn FnMut(&Tensor, HookPoint) -> Result<Option<Tensor>> + 'a>;

/// A set of hook names given as exact names or globs (`*` matches any run of characters,
/// so `blocks.*.attn.hook_pattern` selects every layer's pattern).
#[derive(Debug, Clone, Default)]
pub struct NameFilter {
    patterns: Vec<String>,
}

impl NameFilter {
    /// Every hook.
    pub fn all() -> Self {
        NameFilter {
            patterns: vec!["*".to_string()],
        }
    }

    /// From a list of names or globs.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Self {
        NameFilter {
            patterns: patterns.iter().map(|s| s.as_ref().to_string()).collect(),
        }
    }

    /// From a comma-separated list, as the CLI takes it.
    pub fn parse(list: &str) -> Self {
        NameFilter {
            patterns: list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        }
    }

    /// The patterns as given.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether `name` is selected.
    pub fn matches(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| glob_match(p, name))
    }

    /// The names of `available` this filter selects; an error if a pattern selects none of them,
    /// so a typo never silently caches nothing.
    pub fn resolve(&self, available: &[String]) -> Result<Vec<String>> {
        for p in &self.patterns {
            if !available.iter().any(|n| glob_match(p, n)) {
                return Err(Error::Hook(format!(
                    "`{p}` matches no hook point of this model (see `interplab info MODEL` for the list)"
                )));
            }
        }
        Ok(available
            .iter()
            .filter(|n| self.matches(n))
            .cloned()
            .collect())
    }
}

impl From<&str> for NameFilter {
    fn from(s: &str) -> Self {
        NameFilter::parse(s)
    }
}

impl From<String> for NameFilter {
    fn from(s: String) -> Self {
        NameFilter::parse(&s)
    }
}

/// Glob match where `*` matches any (possibly empty) run of characters and `?` one character.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// A module spliced into the forward at one hook point (its host), with hook points of its
/// own: an SAE attached at `blocks.3.hook_resid_post` exposes
/// `blocks.3.hook_resid_post.sae.hook_sae_acts_post` and the rest. When a call hooks or caches
/// none of its points it is not run at all and the host activation passes unchanged.
pub trait Attachment: std::fmt::Debug + Send + Sync {
    /// The hook point it reads and whose activation its output replaces.
    fn host(&self) -> &str;
    /// Its own points, relative to the host (`sae.hook_sae_acts_post`), in the order they fire.
    fn points(&self) -> Vec<String>;
    /// Run on the host activation `x`. `fire(point, t)` runs the hooks and the cache of one of
    /// its points (relative name) and returns the possibly replaced tensor. Returns the
    /// activation that continues through the model.
    fn forward(
        &self,
        x: &Tensor,
        fire: &mut dyn FnMut(&str, Tensor) -> Result<Tensor>,
    ) -> Result<Tensor>;
}

/// Hook functions for one model call; they live for that call only.
#[derive(Default)]
pub struct Hooks<'a> {
    entries: Vec<(NameFilter, HookFn<'a>)>,
}

impl<'a> Hooks<'a> {
    /// No hooks.
    pub fn new() -> Self {
        Hooks {
            entries: Vec::new(),
        }
    }

    /// Add a hook on every point `filter` selects; hooks on the same point run in the order added.
    pub fn add(
        &mut self,
        filter: impl Into<NameFilter>,
        f: impl FnMut(&Tensor, HookPoint) -> Result<Option<Tensor>> + 'a,
    ) -> &mut Self {
        self.entries.push((filter.into(), Box::new(f)));
        self
    }

    /// Builder form of [`Hooks::add`].
    pub fn with(
        mut self,
        filter: impl Into<NameFilter>,
        f: impl FnMut(&Tensor, HookPoint) -> Result<Option<Tensor>> + 'a,
    ) -> Self {
        self.add(filter, f);
        self
    }

    /// Whether there are no hooks.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn filters(&self) -> impl Iterator<Item = &NameFilter> {
        self.entries.iter().map(|(f, _)| f)
    }

    pub(crate) fn entry_mut(&mut self, i: usize) -> &mut HookFn<'a> {
        &mut self.entries[i].1
    }
}

/// Activations recorded during a forward pass, keyed by hook name; tensors keep their batch dimension.
#[derive(Debug, Clone, Default)]
pub struct ActivationCache {
    tensors: BTreeMap<String, Tensor>,
}

impl ActivationCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The activation at `name`, or a clear error naming what the cache holds.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| {
            Error::Hook(format!(
                "`{name}` is not in the cache ({} entries cached)",
                self.tensors.len()
            ))
        })
    }

    /// Insert or replace an activation.
    pub fn insert(&mut self, name: impl Into<String>, t: Tensor) {
        self.tensors.insert(name.into(), t);
    }

    /// Whether `name` is cached.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Cached names in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }

    /// `(name, tensor)` pairs in sorted order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Tensor)> {
        self.tensors.iter()
    }

    /// Number of cached activations.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Total bytes held (counting views of shared storage once per name).
    pub fn size_bytes(&self) -> usize {
        self.tensors
            .values()
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
    }

    /// Write every activation to one `.safetensors` file (f32, batch dimension kept), through a
    /// temporary file renamed into place so a failure never leaves a partial file.
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        let contiguous: Vec<(String, Tensor)> = self
            .tensors
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.contiguous()?)))
            .collect::<Result<_>>()?;
        let map = contiguous.into_iter().collect::<HashMap<_, _>>();
        crate::atomic::write_atomic_with(path, |tmp| {
            candle_core::safetensors::save(&map, tmp).map_err(Error::from)
        })
    }
}

/// Per-call hook state: which names are hooked or cached, the hooks, and the cache being filled.
pub(crate) struct HookRuntime<'h, 'a> {
    hooks: Option<&'h mut Hooks<'a>>,
    /// For each active name, the indices of the hooks on it.
    hooked: HashMap<String, Vec<usize>>,
    cache_names: Option<HashSet<String>>,
    pub(crate) cache: ActivationCache,
    any: bool,
    /// When set, every point the forward passes, in order (duplicates kept).
    pub(crate) emitted: Option<Vec<HookName>>,
    /// Attachments whose points this call hooks or caches, by host name.
    attached: HashMap<String, Vec<Arc<dyn Attachment>>>,
}

impl<'h, 'a> HookRuntime<'h, 'a> {
    /// Set up for a call, validating every filter against the model's hook names.
    pub(crate) fn new(
        available: &[String],
        hooks: Option<&'h mut Hooks<'a>>,
        cache_filter: Option<&NameFilter>,
    ) -> Result<Self> {
        let mut hooked: HashMap<String, Vec<usize>> = HashMap::new();
        if let Some(h) = hooks.as_deref() {
            for (i, f) in h.filters().enumerate() {
                for name in f.resolve(available)? {
                    hooked.entry(name).or_default().push(i);
                }
            }
        }
        let cache_names: Option<HashSet<String>> = match cache_filter {
            Some(f) => Some(f.resolve(available)?.into_iter().collect()),
            None => None,
        };
        let any = !hooked.is_empty() || cache_names.as_ref().is_some_and(|c| !c.is_empty());
        Ok(HookRuntime {
            hooks,
            hooked,
            cache_names,
            cache: ActivationCache::new(),
            any,
            emitted: None,
            attached: HashMap::new(),
        })
    }

    /// Run `attachments` at their hosts during this call, those of them whose points are hooked
    /// or cached (the others would change nothing).
    pub(crate) fn with_attachments(mut self, attachments: &[Arc<dyn Attachment>]) -> Self {
        for a in attachments {
            let host = a.host().to_string();
            let used = a.points().iter().any(|p| {
                let n = format!("{host}.{p}");
                self.hooked.contains_key(&n)
                    || self.cache_names.as_ref().is_some_and(|c| c.contains(&n))
            });
            if used {
                self.attached.entry(host).or_default().push(a.clone());
                self.any = true;
            }
        }
        self
    }

    /// Hooks and cache of a point given by name (an attachment's).
    fn fire_named(&mut self, name: &str, layer: Option<usize>, x: Tensor) -> Result<Tensor> {
        let mut x = x;
        if let (Some(idx), Some(hooks)) = (self.hooked.get(name), self.hooks.as_deref_mut()) {
            for &i in idx {
                let point = HookPoint { name, layer };
                if let Some(new) = (hooks.entry_mut(i))(&x, point)? {
                    if new.dims() != x.dims() {
                        return Err(Error::Hook(format!(
                            "hook on `{name}` returned shape {:?}, expected {:?}",
                            new.dims(),
                            x.dims()
                        )));
                    }
                    x = new;
                }
            }
        }
        if self.cache_names.as_ref().is_some_and(|c| c.contains(name)) {
            self.cache.insert(name.to_string(), x.clone());
        }
        Ok(x)
    }

    /// A runtime that does nothing (plain forward).
    pub(crate) fn none() -> Self {
        HookRuntime {
            hooks: None,
            hooked: HashMap::new(),
            cache_names: None,
            cache: ActivationCache::new(),
            any: false,
            emitted: None,
            attached: HashMap::new(),
        }
    }

    /// Whether `name` will be hooked or cached (lets the model skip work for unused hooks).
    pub(crate) fn wants(&self, name: HookName) -> bool {
        if !self.any {
            return false;
        }
        let n = name.to_string();
        self.hooked.contains_key(&n) || self.cache_names.as_ref().is_some_and(|c| c.contains(&n))
    }

    /// Whether nothing at all happens at `name` in this call (no hook, cache entry, attachment
    /// or record of emitted points), so the model may compute through it without forming it.
    pub(crate) fn silent(&self, name: HookName) -> bool {
        if self.emitted.is_some() {
            return false;
        }
        if !self.any {
            return true;
        }
        let n = name.to_string();
        !self.hooked.contains_key(&n)
            && !self.cache_names.as_ref().is_some_and(|c| c.contains(&n))
            && !self.attached.contains_key(&n)
    }

    /// Whether nothing can change the value at `name` in this call (no hook, no attachment):
    /// at most it is cached or recorded.
    pub(crate) fn passive(&self, name: HookName) -> bool {
        if !self.any {
            return true;
        }
        let n = name.to_string();
        !self.hooked.contains_key(&n) && !self.attached.contains_key(&n)
    }

    /// Whether a hook (not just the cache) is attached at `name`.
    pub(crate) fn hooked(&self, name: HookName) -> bool {
        !self.hooked.is_empty() && self.hooked.contains_key(&name.to_string())
    }

    /// Run the hooks at a point, cache the (possibly replaced) activation, and return it.
    pub(crate) fn point(&mut self, hook: HookName, x: Tensor) -> Result<Tensor> {
        if let Some(e) = self.emitted.as_mut() {
            e.push(hook);
        }
        if !self.any {
            return Ok(x);
        }
        let name = hook.to_string();
        let layer = hook.layer();
        let mut x = x;
        if let (Some(idx), Some(hooks)) = (self.hooked.get(&name), self.hooks.as_deref_mut()) {
            for &i in idx {
                let point = HookPoint { name: &name, layer };
                if let Some(new) = (hooks.entry_mut(i))(&x, point)? {
                    if new.dims() != x.dims() {
                        return Err(Error::Hook(format!(
                            "hook on `{name}` returned shape {:?}, expected {:?}",
                            new.dims(),
                            x.dims()
                        )));
                    }
                    x = new;
                }
            }
        }
        if self.cache_names.as_ref().is_some_and(|c| c.contains(&name)) {
            self.cache.insert(name.clone(), x.clone());
        }
        if let Some(atts) = self.attached.get(&name).cloned() {
            for a in atts {
                let host = name.clone();
                x = a.forward(&x, &mut |p, t| {
                    self.fire_named(&format!("{host}.{p}"), layer, t)
                })?;
            }
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(
            "blocks.*.attn.hook_pattern",
            "blocks.12.attn.hook_pattern"
        ));
        assert!(!glob_match(
            "blocks.*.attn.hook_pattern",
            "blocks.12.attn.hook_z"
        ));
        assert!(glob_match("*", "hook_embed"));
        assert!(glob_match(
            "blocks.1?.hook_resid_pre",
            "blocks.13.hook_resid_pre"
        ));
        assert!(!glob_match(
            "blocks.1?.hook_resid_pre",
            "blocks.1.hook_resid_pre"
        ));
        assert!(glob_match("*resid*", "blocks.0.hook_resid_mid"));
    }

    #[test]
    fn filter_that_matches_nothing_is_an_error() {
        let names = vec![
            "hook_embed".to_string(),
            "blocks.0.hook_resid_pre".to_string(),
        ];
        let err = NameFilter::parse("blocks.*.hook_resid_pree")
            .resolve(&names)
            .unwrap_err();
        assert!(err.to_string().contains("matches no hook point"), "{err}");
        let ok = NameFilter::parse("blocks.*.hook_resid_pre, hook_embed")
            .resolve(&names)
            .unwrap();
        assert_eq!(ok.len(), 2);
    }
}
