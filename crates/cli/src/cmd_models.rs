//! `interplab models` and `interplab fetch`: the known model aliases, the local model cache,
//! and fetching a model into it with a progress bar.

use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{HumanBytes, ProgressBar};
use interplab_core::source::{self, FetchConfig, FetchEvent, ModelSource, ALIASES};

use crate::ui::show_progress;

/// Prints the aliases (cached or not, and where) and the other models in the local cache.
pub fn models() -> Result<()> {
    let config = FetchConfig::from_env()?;
    let cached = source::cached_models_in(&config)
        .with_context(|| format!("listing {}", config.models_dir().display()))?;

    let mut rows = vec![[
        "ALIAS".to_string(),
        "CACHED".to_string(),
        "DESCRIPTION".to_string(),
        "PATH".to_string(),
    ]];
    for alias in ALIASES {
        let path = ModelSource::Alias(alias)
            .cache_path(&config)
            .expect("aliases are fetched into the cache");
        let (status, shown_path) = match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => (
                HumanBytes(meta.len()).to_string(),
                path.display().to_string(),
            ),
            _ => (
                "no".to_string(),
                format!("(interplab fetch {})", alias.name),
            ),
        };
        rows.push([
            alias.name.to_string(),
            status,
            alias.description.to_string(),
            shown_path,
        ]);
    }
    print_table(&rows);

    let others: Vec<_> = cached
        .iter()
        .filter(|model| {
            !ALIASES.iter().any(|alias| {
                model.name == alias.name
                    && model
                        .path
                        .file_name()
                        .is_some_and(|f| f == alias.recipe.file_name)
            })
        })
        .collect();
    if !others.is_empty() {
        println!("\nOther cached models:");
        let mut rows = vec![["NAME".to_string(), "SIZE".to_string(), "PATH".to_string()]];
        for model in others {
            rows.push([
                model.name.clone(),
                HumanBytes(model.size).to_string(),
                model.path.display().to_string(),
            ]);
        }
        print_table(&rows);
    }
    println!("\nCache: {}", config.cache_dir.display());
    Ok(())
}

/// Fetches `name` (an alias or any model source) into the cache, showing progress, and
/// prints the local path and sha256.
pub fn fetch(name: &str) -> Result<()> {
    let source = ModelSource::parse(name)?;
    let start = Instant::now();
    let mut bar: Option<ProgressBar> = None;
    let mut fetched = false;
    let resolved = source::resolve(&source, &mut |event| {
        if matches!(event, FetchEvent::Started { .. }) {
            fetched = true;
        }
        show_progress(&mut bar, event);
    });
    if let Some(bar) = bar.take() {
        bar.finish_and_clear();
    }
    let resolved = resolved.with_context(|| format!("fetching {name}"))?;

    if fetched {
        eprintln!("fetched in {:.1} s", start.elapsed().as_secs_f64());
    }
    println!("{}", resolved.source);
    println!("  path    {}", resolved.path.display());
    println!("  sha256  {}", resolved.sha256);
    Ok(())
}

/// Prints rows as left-aligned columns; the first row is the header. The last column is not
/// padded.
fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut widths = [0; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < N {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            } else {
                line.push_str(cell);
            }
        }
        println!("{}", line.trim_end());
    }
}
