"""Tuned training recipes: `charlstm train --preset NAME`.

Each preset is a TOML file in this directory, read like a --config file: settings
resolve as TrainConfig defaults <- preset <- --config FILE <- flags, so any flag
(--data, --time-budget, --threads ...) overrides the recipe. A preset holds the model,
optimisation, regularisation and time budget only, never the corpus or the run
directory. Each file's header says how it was found and what it reached on Tiny
Shakespeare; the README's Presets table has the same figures and commands.
"""

from __future__ import annotations

from importlib import resources

from ..config import TrainConfig, load_toml

# Name -> the wall-clock budget it was tuned for; the files hold the rest.
PRESETS = {
    "small": "5 minutes, the demo",
    "medium": "20 minutes",
    "large": "2 hours",
}

# Settings a recipe must leave to the user: what to train on and where the run goes.
NOT_IN_PRESETS = ("data", "out", "init_from", "encoding_errors", "val_frac")


def preset_path(name: str):
    """The packaged TOML file of preset `name` (a Traversable; `name` is checked)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    return resources.files(__name__) / f"{name}.toml"


def load_preset(name: str) -> dict:
    """The settings of preset `name` as a dict of TrainConfig fields."""
    with resources.as_file(preset_path(name)) as path:
        settings = load_toml(path)
    TrainConfig.from_dict(settings)  # a broken preset is a bug: fail loudly here
    leaked = sorted(set(settings) & set(NOT_IN_PRESETS))
    if leaked:
        raise ValueError(f"preset {name} must not set {', '.join(leaked)}")
    return settings
