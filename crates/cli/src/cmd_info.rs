//! `interplab info MODEL`: architecture, sizes and hook points.

use clap::Args;

use crate::ui::load_model;

/// Arguments of `interplab info`.
#[derive(Args)]
pub struct InfoArgs {
    /// Model: alias, path, pip:... or hf:...
    model: String,
    /// List every hook point, not one block's worth.
    #[arg(long)]
    all_hooks: bool,
}

/// Print what the model is.
pub fn info(a: InfoArgs) -> anyhow::Result<()> {
    let m = load_model(&a.model)?;
    let c = &m.model.cfg;
    let n_params: usize = m
        .model
        .weights
        .named()?
        .iter()
        .map(|(_, t)| t.elem_count())
        .sum();
    println!("model        {}", m.resolved.source);
    println!("path         {}", m.resolved.path.display());
    println!("sha256       {}", m.resolved.sha256);
    println!(
        "format       {}  (loaded in {:.2} s)",
        m.format, m.load_seconds
    );
    println!("architecture {:?}", c.architecture);
    println!(
        "sizes        {} layers, d_model {}, {} heads ({} kv) of {}, d_mlp {}, vocab {}, context {}",
        c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.d_head, c.d_mlp, c.d_vocab, c.n_ctx
    );
    println!("parameters   {n_params} ({:.1} M)", n_params as f64 / 1e6);
    println!("norm         {:?} (eps {:e})", c.norm, c.norm_eps);
    println!("positions    {:?}", c.positions);
    println!(
        "mlp          {:?}{}{}",
        c.act,
        if c.gated_mlp { ", gated" } else { "" },
        if c.parallel_attn_mlp {
            ", parallel with attention"
        } else {
            ""
        }
    );
    let windows: Vec<String> = c
        .layer_windows
        .iter()
        .enumerate()
        .filter_map(|(l, w)| w.map(|w| format!("{l}:{w}")))
        .collect();
    if !windows.is_empty() {
        println!("sliding      {}", windows.join(" "));
    }
    println!(
        "chat         {}",
        if m.chat.is_some() { "yes" } else { "no" }
    );
    let hooks = m.model.hook_names();
    println!("hook points  {} in all", hooks.len());
    for h in &hooks {
        let in_other_block = h.starts_with("blocks.") && !h.starts_with("blocks.0.");
        if a.all_hooks || !in_other_block {
            println!("  {h}");
        }
    }
    if !a.all_hooks {
        println!(
            "  (blocks.1 … blocks.{} have the same; --all-hooks lists every one)",
            c.n_layers - 1
        );
    }
    Ok(())
}
