"""Every Interplab experiment by name: ``run(name, config)`` validates the config, loads
its models, runs it and writes the run directory (``results.json``, tensors, figures,
``report.html``, ``manifest.json``) exactly as the ``interplab`` CLI does."""

import json
import os

from . import _interplab

__all__ = ["run", "experiments", "defaults"]


def run(name, config=None, out=None, force=False, quantized_weights=False):
    """Run experiment ``name`` (``"heads"``, ``"ablate"``, ``"eval"``, ``"sae-eval"``, ...).

    ``config`` is a dict of the experiment's config fields (those of ``interplab NAME
    --config FILE``; missing fields take their defaults, unknown ones are errors). ``out`` is
    the run directory (default ``runs/<name>-<time>``); a non-empty one is refused unless
    ``force``. Returns ``{"results": <results.json>, "manifest": <manifest.json>,
    "run_dir": <path>}``.
    """
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise TypeError("config must be a dict of the experiment's fields")
    out = None if out is None else os.fspath(out)
    results, manifest, run_dir = _interplab._lab_run(
        name, json.dumps(config), out, force, quantized_weights
    )
    return {
        "results": json.loads(results),
        "manifest": json.loads(manifest),
        "run_dir": run_dir,
    }


def experiments():
    """The catalog's experiment names, in catalog order."""
    return [name for name, _ in _interplab._lab_experiments()]


def questions():
    """``{name: the research question it answers}`` for every experiment."""
    return dict(_interplab._lab_experiments())


def defaults(name):
    """Experiment ``name``'s config with every field at its default (``model`` empty)."""
    cfg = json.loads(_interplab._lab_defaults(name))
    cfg.pop("experiment", None)
    return cfg
