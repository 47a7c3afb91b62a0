"""Interplab from Python.

TransformerLens' vocabulary on Interplab's Rust model: ``load`` a model, then
``model.to_tokens``, ``model(tokens)``, ``model.run_with_cache`` and
``model.run_with_hooks`` with numpy arrays in and out and TransformerLens' hook names and
shapes. ``interplab.lab.run(name, config)`` runs any experiment of the catalog into a run
directory exactly as the ``interplab`` CLI does; ``interplab.sae.load(dir)`` reads an SAE in
SAELens' layout.

Every error from Rust is an :class:`InterplabError` (a ``RuntimeError``) whose message is
the line the CLI prints after ``error:``.
"""

from ._interplab import HookPoint, InterplabError, Model, __version__, load


class Config(dict):
    """``model.cfg``: a dict whose keys also read as attributes (``cfg.n_layers``), as
    TransformerLens' ``HookedTransformerConfig``."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


from . import lab, sae  # noqa: E402

__all__ = ["load", "Model", "HookPoint", "InterplabError", "Config", "lab", "sae", "__version__"]
