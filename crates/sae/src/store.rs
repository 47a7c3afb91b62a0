//! The activation store: token sequences packed from a corpus, activations harvested at a hook
//! point (and, for transcoders, a second one) in batches, a shuffling buffer of fixed capacity,
//! optional safetensors shards on disk, and the normalisation scale (docs/sae.md §Store).
//!
//! - [`pack_sequences`]: documents → fixed-length sequences of one token stream, documents
//!   separated by the end-of-text token;
//! - [`Harvester`]: runs the model (stopping after the last block read) and returns the rows of
//!   one batch of sequences, special-token positions left out on request;
//! - [`ShuffleBuffer`]: rows in, uniformly drawn rows out, never more than its capacity held;
//! - [`ShardWriter`] / [`ShardReader`]: the harvested rows as `acts_NNNNN.safetensors` files.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use candle_core::{DType, Tensor};
use interplab_core::loader::LoadedModel;
use interplab_core::model::{Input, NameFilter, RunOptions};
use interplab_core::rng::SplitMix;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::io::{read_shaped, write_shaped};

/// Documents tokenised (no BOS), joined into one stream with `sep` after each, and cut into
/// sequences of `context` tokens; the tail shorter than `context` is dropped. Each sequence
/// starts with BOS when the tokenizer adds one by default (then `context − 1` stream tokens).
pub fn pack_sequences(
    m: &LoadedModel,
    docs: &[String],
    context: usize,
) -> anyhow::Result<Vec<Vec<u32>>> {
    anyhow::ensure!(context >= 2, "context must be at least 2 tokens");
    let tok = &m.tokenizer;
    let sep = tok.eos_id().or(tok.bos_id());
    let encoded: Vec<Vec<u32>> = docs
        .par_iter()
        .map(|d| tok.encode(d, false))
        .collect::<Result<_, _>>()?;
    let bos = tok.add_bos_default().then(|| tok.bos_id()).flatten();
    let body = context - bos.is_some() as usize;
    let mut out = Vec::new();
    let mut cur: Vec<u32> = Vec::with_capacity(context);
    cur.extend(bos);
    for t in encoded.iter().flat_map(|d| d.iter().copied().chain(sep)) {
        cur.push(t);
        if cur.len() == context {
            out.push(std::mem::replace(&mut cur, Vec::with_capacity(context)));
            cur.extend(bos);
        }
    }
    debug_assert!(body > 0);
    Ok(out)
}

/// Whether position `pos` holding token `t` is left out when special positions are: a special
/// token (BOS, end-of-text), or the first position of a sequence — the attention sink, whose
/// residual stream is enormous (SmolLM2-135M at `blocks.15.hook_resid_post`: norm ~26,000
/// against a median of 172, 99% of the total variance from 1 row in 128), so that it would
/// dominate FVU and the SAE's loss, as BOS does where a model has one.
pub fn excluded(m: &LoadedModel, pos: usize, t: u32) -> bool {
    pos == 0 || m.tokenizer.is_special(t)
}

/// Tokens usable for training in `seqs`: every position, less the [`excluded`] ones when
/// `exclude_special`.
pub fn usable_tokens(m: &LoadedModel, seqs: &[Vec<u32>], exclude_special: bool) -> u64 {
    seqs.iter()
        .flat_map(|s| s.iter().enumerate())
        .filter(|&(p, &t)| !(exclude_special && excluded(m, p, t)))
        .count() as u64
}

/// The block a hook name belongs to (`blocks.L.…`), if any.
pub fn hook_layer(name: &str) -> Option<usize> {
    name.strip_prefix("blocks.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// What a [`Harvester`] reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HarvestSpec {
    /// The hook read as the SAE's input.
    pub hook: String,
    /// A transcoder's target hook (its output), read in the same pass.
    pub hook_out: Option<String>,
    /// Leave out special-token positions and each sequence's first position ([`excluded`]).
    pub exclude_special: bool,
    /// Sequences per forward pass.
    pub batch_sequences: usize,
}

/// The rows of one harvested batch: `x` `[n, d_in]`, `y` `[n, d_out]` for transcoders, and for
/// each row its (sequence, position).
#[derive(Debug, Clone, Default)]
pub struct Rows {
    pub x: Vec<f32>,
    pub y: Vec<f32>,
    pub at: Vec<(u32, u32)>,
}

impl Rows {
    /// Rows held.
    pub fn len(&self) -> usize {
        self.at.len()
    }
    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }
}

/// Harvests activations over sequences, one batch of sequences per call.
pub struct Harvester<'a> {
    m: &'a LoadedModel,
    spec: HarvestSpec,
    names: Vec<String>,
    stop_at_layer: Option<usize>,
    /// Width of the input hook and of the output hook.
    pub d_in: usize,
    pub d_out: usize,
}

impl<'a> Harvester<'a> {
    /// Check that the hooks exist and find their widths with a two-token pass.
    pub fn new(m: &'a LoadedModel, spec: HarvestSpec) -> anyhow::Result<Harvester<'a>> {
        anyhow::ensure!(spec.batch_sequences > 0, "batch_sequences must be positive");
        let available = m.model.hook_names();
        let mut names = vec![spec.hook.clone()];
        names.extend(spec.hook_out.clone());
        for n in &names {
            if !available.iter().any(|a| a == n) {
                bail!(
                    "hook `{n}` does not exist in this model (see `interplab info MODEL` for its hook points)"
                );
            }
        }
        let layers: Option<Vec<usize>> = names.iter().map(|n| hook_layer(n)).collect();
        let stop_at_layer = layers.map(|l| l.into_iter().max().unwrap_or(0) + 1);
        let mut h = Harvester {
            m,
            spec,
            names,
            stop_at_layer,
            d_in: 0,
            d_out: 0,
        };
        let probe_ids = vec![vec![
            m.tokenizer
                .bos_id()
                .or(m.tokenizer.eos_id())
                .unwrap_or(0);
            2
        ]];
        let (xs, ys) = h.forward(&probe_ids)?;
        h.d_in = xs.dims()[2];
        h.d_out = ys.as_ref().map(|y| y.dims()[2]).unwrap_or(h.d_in);
        Ok(h)
    }

    /// Sequences per forward pass.
    pub fn batch_sequences(&self) -> usize {
        self.spec.batch_sequences
    }

    /// The hook tensors of one batch, flattened to `[batch, pos, d]`.
    fn forward(&self, seqs: &[Vec<u32>]) -> anyhow::Result<(Tensor, Option<Tensor>)> {
        let (b, p) = (seqs.len(), seqs[0].len());
        let flat: Vec<u32> = seqs.iter().flatten().copied().collect();
        let tokens = Tensor::from_vec(flat, (b, p), self.m.model.device())?;
        let opts = RunOptions {
            stop_at_layer: self.stop_at_layer,
            ..Default::default()
        };
        let filter = NameFilter::new(&self.names);
        let (_, cache) = self
            .m
            .model
            .run(Input::Tokens(&tokens), &opts, None, Some(&filter))?;
        let get = |n: &str| -> anyhow::Result<Tensor> {
            let t = cache.get(n)?;
            Ok(t.reshape((b, p, ()))?.to_dtype(DType::F32)?)
        };
        let x = get(&self.spec.hook)?;
        let y = match &self.spec.hook_out {
            Some(n) => Some(get(n)?),
            None => None,
        };
        Ok((x, y))
    }

    /// The rows of `seqs` (all of one length); `first` numbers the first sequence.
    pub fn harvest(&self, seqs: &[Vec<u32>], first: usize) -> anyhow::Result<Rows> {
        let mut rows = Rows::default();
        for (ci, chunk) in seqs.chunks(self.spec.batch_sequences).enumerate() {
            let (x, y) = self.forward(chunk)?;
            let x = x.flatten_all()?.to_vec1::<f32>()?;
            let y = match y {
                Some(y) => Some(y.flatten_all()?.to_vec1::<f32>()?),
                None => None,
            };
            let p = chunk[0].len();
            for (s, seq) in chunk.iter().enumerate() {
                for (pos, &t) in seq.iter().enumerate() {
                    if self.spec.exclude_special && excluded(self.m, pos, t) {
                        continue;
                    }
                    let r = s * p + pos;
                    rows.x
                        .extend_from_slice(&x[r * self.d_in..(r + 1) * self.d_in]);
                    if let Some(y) = &y {
                        rows.y
                            .extend_from_slice(&y[r * self.d_out..(r + 1) * self.d_out]);
                    }
                    let seq_i = first + ci * self.spec.batch_sequences + s;
                    rows.at.push((seq_i as u32, pos as u32));
                }
            }
        }
        Ok(rows)
    }
}

/// A shuffling buffer: rows of `width` floats go in; [`ShuffleBuffer::draw`] takes rows out
/// uniformly at random (each draw is any held row with equal probability, then removed), so
/// the rows of one document are spread over many batches. It never holds more than
/// `capacity` rows: callers refill it when [`ShuffleBuffer::wants`] says so.
#[derive(Debug)]
pub struct ShuffleBuffer {
    width: usize,
    capacity: usize,
    data: Vec<f32>,
    rng: SplitMix,
}

impl ShuffleBuffer {
    /// An empty buffer of `capacity` rows of `width` floats (allocated up front, so the
    /// buffer's memory is known before any work).
    pub fn new(width: usize, capacity: usize, seed: u64) -> ShuffleBuffer {
        ShuffleBuffer {
            width,
            capacity,
            data: Vec::with_capacity(width * capacity),
            rng: SplitMix::new(seed ^ 0xB0FF_E125),
        }
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.data.len() / self.width
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Rows of free space.
    pub fn free(&self) -> usize {
        self.capacity - self.len()
    }

    /// Whether it holds less than half its capacity (refill then, so draws mix rows of many
    /// batches of sequences).
    pub fn wants(&self) -> bool {
        self.len() < self.capacity / 2
    }

    /// Add rows (`rows.len()` a multiple of the width); an error when they do not fit.
    pub fn push(&mut self, rows: &[f32]) -> anyhow::Result<()> {
        anyhow::ensure!(rows.len() % self.width == 0, "row width mismatch");
        anyhow::ensure!(
            rows.len() / self.width <= self.free(),
            "shuffle buffer full ({} rows)",
            self.capacity
        );
        self.data.extend_from_slice(rows);
        Ok(())
    }

    /// Take `n` rows drawn uniformly without replacement (fewer when fewer are held).
    pub fn draw(&mut self, n: usize) -> Vec<f32> {
        let w = self.width;
        let n = n.min(self.len());
        let mut out = Vec::with_capacity(n * w);
        for _ in 0..n {
            let len = self.len();
            let i = (self.rng.next_u64() % len as u64) as usize;
            out.extend_from_slice(&self.data[i * w..(i + 1) * w]);
            let last = len - 1;
            if i != last {
                self.data.copy_within(last * w..len * w, i * w);
            }
            self.data.truncate(last * w);
        }
        out
    }

    /// A view of the rows held (for estimates made before training starts, and checkpoints).
    pub fn rows(&self) -> &[f32] {
        &self.data
    }

    /// The random generator's state (for checkpoints).
    pub fn rng_state(&self) -> u64 {
        self.rng.0
    }

    /// A buffer restored from a checkpoint: its rows and generator state.
    pub fn restore(
        width: usize,
        capacity: usize,
        rows: Vec<f32>,
        rng_state: u64,
    ) -> anyhow::Result<ShuffleBuffer> {
        anyhow::ensure!(
            rows.len() % width == 0 && rows.len() / width <= capacity,
            "checkpointed buffer of {} values does not fit {capacity} rows of {width}",
            rows.len()
        );
        let mut data = Vec::with_capacity(width * capacity);
        data.extend_from_slice(&rows);
        Ok(ShuffleBuffer {
            width,
            capacity,
            data,
            rng: SplitMix(rng_state),
        })
    }

    /// Multiply the first `cols` columns of every row by `a` and the rest by `b` (the
    /// normalisation of input and target).
    pub fn scale(&mut self, cols: usize, a: f32, b: f32) {
        for row in self.data.chunks_exact_mut(self.width) {
            let (x, y) = row.split_at_mut(cols);
            x.iter_mut().for_each(|v| *v *= a);
            y.iter_mut().for_each(|v| *v *= b);
        }
    }
}

/// Rows `[n, d_in + d_out]` with the input and target side by side (`y` empty: input only).
pub fn interleave(x: &[f32], y: &[f32], d_in: usize, d_out: usize) -> Vec<f32> {
    if y.is_empty() {
        return x.to_vec();
    }
    let n = x.len() / d_in;
    let mut out = Vec::with_capacity(n * (d_in + d_out));
    for r in 0..n {
        out.extend_from_slice(&x[r * d_in..(r + 1) * d_in]);
        out.extend_from_slice(&y[r * d_out..(r + 1) * d_out]);
    }
    out
}

/// Split side-by-side rows back into input and target.
pub fn split_rows(rows: &[f32], d_in: usize, d_out: usize) -> (Vec<f32>, Vec<f32>) {
    let w = d_in + d_out;
    let n = rows.len() / w;
    let mut x = Vec::with_capacity(n * d_in);
    let mut y = Vec::with_capacity(n * d_out);
    for r in rows.chunks_exact(w) {
        x.extend_from_slice(&r[..d_in]);
        y.extend_from_slice(&r[d_in..]);
    }
    (x, y)
}

/// The factor that scales rows to mean norm `√d` (the `expected_norm` normalisation),
/// estimated on the rows given: `√d / mean‖x‖`, accumulated in f64.
pub fn expected_norm_scale(rows: &[f32], width: usize, cols: std::ops::Range<usize>) -> f64 {
    let d = cols.len();
    let n = rows.len() / width;
    if n == 0 {
        return 1.0;
    }
    let mean: f64 = rows
        .chunks_exact(width)
        .map(|r| {
            r[cols.clone()]
                .iter()
                .map(|&v| v as f64 * v as f64)
                .sum::<f64>()
                .sqrt()
        })
        .sum::<f64>()
        / n as f64;
    if mean > 0.0 {
        (d as f64).sqrt() / mean
    } else {
        1.0
    }
}

/// What a shard folder holds (`meta.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardMeta {
    pub hook: String,
    pub hook_out: Option<String>,
    pub d_in: usize,
    pub d_out: usize,
    /// Floats per row (`d_in`, or `d_in + d_out` for transcoders).
    pub width: usize,
    pub rows: u64,
    pub shards: usize,
    pub model: String,
}

/// Writes harvested rows as `acts_NNNNN.safetensors` (tensor `rows`, f32 `[n, width]`), each
/// file written whole to a temporary name and renamed, and `meta.json` when finished.
pub struct ShardWriter {
    dir: PathBuf,
    meta: ShardMeta,
}

impl ShardWriter {
    /// Start a shard folder; refuses a folder that already holds shards.
    pub fn create(dir: &Path, meta: ShardMeta) -> anyhow::Result<ShardWriter> {
        if dir.join("meta.json").exists() || dir.join("acts_00000.safetensors").exists() {
            bail!(
                "{} already holds activation shards; give a new folder",
                dir.display()
            );
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(ShardWriter {
            dir: dir.to_path_buf(),
            meta: ShardMeta {
                rows: 0,
                shards: 0,
                ..meta
            },
        })
    }

    /// Write one shard.
    pub fn write(&mut self, rows: &[f32]) -> anyhow::Result<()> {
        let n = rows.len() / self.meta.width;
        let path = self
            .dir
            .join(format!("acts_{:05}.safetensors", self.meta.shards));
        write_shaped(
            &path,
            &[("rows".into(), vec![n, self.meta.width], rows)],
            &[],
        )?;
        self.meta.shards += 1;
        self.meta.rows += n as u64;
        Ok(())
    }

    /// Write `meta.json`.
    pub fn finish(self) -> anyhow::Result<ShardMeta> {
        let path = self.dir.join("meta.json");
        interplab_core::atomic::write_atomic(
            &path,
            serde_json::to_string_pretty(&self.meta)?.as_bytes(),
        )?;
        Ok(self.meta)
    }
}

/// Reads a shard folder back, one shard at a time.
pub struct ShardReader {
    dir: PathBuf,
    pub meta: ShardMeta,
    next: usize,
}

impl ShardReader {
    /// Open a finished shard folder.
    pub fn open(dir: &Path) -> anyhow::Result<ShardReader> {
        let path = dir.join("meta.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{}: no activation shards here (meta.json missing)",
                dir.display()
            )
        })?;
        let meta: ShardMeta = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a shard folder's meta.json", path.display()))?;
        Ok(ShardReader {
            dir: dir.to_path_buf(),
            meta,
            next: 0,
        })
    }

    /// Shards read so far.
    pub fn position(&self) -> usize {
        self.next
    }

    /// Continue from shard `n` (a resumed run).
    pub fn seek(&mut self, n: usize) {
        self.next = n;
    }

    /// The next shard's rows, or `None` after the last.
    pub fn next_shard(&mut self) -> anyhow::Result<Option<Vec<f32>>> {
        if self.next >= self.meta.shards {
            return Ok(None);
        }
        let path = self.dir.join(format!("acts_{:05}.safetensors", self.next));
        let (mut tensors, _) = read_shaped(&path)?;
        let t = tensors
            .remove("rows")
            .with_context(|| format!("{}: no tensor `rows`", path.display()))?;
        anyhow::ensure!(
            t.shape.len() == 2 && t.shape[1] == self.meta.width,
            "{}: rows of width {:?}, expected {}",
            path.display(),
            t.shape.get(1),
            self.meta.width
        );
        self.next += 1;
        Ok(Some(t.data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_draws_every_row_once_and_never_exceeds_capacity() {
        let mut b = ShuffleBuffer::new(2, 10, 1);
        let rows: Vec<f32> = (0..20).map(|i| i as f32).collect(); // 10 rows
        b.push(&rows).unwrap();
        assert!(b.push(&[1.0, 2.0]).is_err(), "an 11th row must not fit");
        let out = b.draw(10);
        assert!(b.is_empty());
        let mut firsts: Vec<i32> = out.chunks(2).map(|r| r[0] as i32).collect();
        // rows stay whole
        for r in out.chunks(2) {
            assert_eq!(r[1], r[0] + 1.0);
        }
        assert_ne!(
            firsts,
            (0..10).map(|i| i * 2).collect::<Vec<_>>(),
            "not shuffled"
        );
        firsts.sort();
        assert_eq!(firsts, (0..10).map(|i| i * 2).collect::<Vec<_>>());
    }

    #[test]
    fn expected_norm_scale_gives_mean_norm_sqrt_d() {
        let rows = vec![3.0f32, 4.0, 0.0, 10.0]; // norms 5 and 10, d = 2
        let s = expected_norm_scale(&rows, 2, 0..2);
        assert!((s - 2f64.sqrt() / 7.5).abs() < 1e-12);
    }

    #[test]
    fn interleave_and_split_round_trip() {
        let x = vec![1.0, 2.0, 3.0, 4.0];
        let y = vec![9.0, 8.0];
        let r = interleave(&x, &y, 2, 1);
        assert_eq!(r, vec![1.0, 2.0, 9.0, 3.0, 4.0, 8.0]);
        assert_eq!(split_rows(&r, 2, 1), (x, y));
    }

    #[test]
    fn shards_round_trip_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let meta = ShardMeta {
            hook: "h".into(),
            hook_out: None,
            d_in: 3,
            d_out: 3,
            width: 3,
            rows: 0,
            shards: 0,
            model: "m".into(),
        };
        let mut w = ShardWriter::create(dir.path(), meta.clone()).unwrap();
        w.write(&[1.0, 2.0, 3.0]).unwrap();
        w.write(&[4.0, 5.0, 6.0, 7.0, 8.0, 9.0]).unwrap();
        let m = w.finish().unwrap();
        assert_eq!((m.rows, m.shards), (3, 2));
        assert!(ShardWriter::create(dir.path(), meta).is_err());
        let mut r = ShardReader::open(dir.path()).unwrap();
        assert_eq!(r.next_shard().unwrap().unwrap(), vec![1.0, 2.0, 3.0]);
        assert_eq!(r.next_shard().unwrap().unwrap().len(), 6);
        assert!(r.next_shard().unwrap().is_none());
    }
}
