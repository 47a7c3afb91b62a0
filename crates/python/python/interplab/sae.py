"""Sparse autoencoders and transcoders in SAELens' layout (``cfg.json`` +
``sae_weights.safetensors``), as ``interplab sae train`` writes them."""

import os

from . import _interplab
from ._interplab import Sae

__all__ = ["load", "Sae"]


def load(path):
    """Read the SAE in directory ``path``; ``sae.encode(x)`` maps ``[..., d_in]`` to latent
    activations ``[..., d_sae]``, ``sae.decode(acts)`` maps them to ``[..., d_out]``."""
    return _interplab._sae_load(os.fspath(path))
