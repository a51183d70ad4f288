"""Learning-rate schedules: the lr of every update, from the config and the run's progress.

SCHEDULES is the registry of `--lr-schedule` names (the CLI's choices and help, and
get_schedule's check, come from it). Each entry gives the lr after the warmup, from
the settings, the update's step number and the run's progress in [0, 1]; every
schedule starts with `warmup_steps` of linear warmup from 0. The settings are read as
plain attributes (Settings, which config.TrainConfig has), so this module stays below
config.
"""

from __future__ import annotations

import math
from typing import Protocol


class Settings(Protocol):
    """The TrainConfig fields a schedule reads."""

    lr: float
    lr_schedule: str
    warmup_steps: int
    lr_decay: float
    lr_decay_every: int
    min_lr_ratio: float
    max_steps: int | None
    epochs: float | None


def constant(config: Settings, step: int, progress: float) -> float:
    """--lr throughout"""
    return config.lr


def step_decay(config: Settings, step: int, progress: float) -> float:
    """--lr times --lr-decay every --lr-decay-every steps"""
    return config.lr * config.lr_decay ** (step // config.lr_decay_every)


def cosine(config: Settings, step: int, progress: float) -> float:
    """half a cosine from --lr down to --min-lr-ratio of it at the end of the run"""
    p = min(max(progress, 0.0), 1.0)
    r = config.min_lr_ratio
    return config.lr * (r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * p)))


SCHEDULES = {"constant": constant, "step": step_decay, "cosine": cosine}


def get_schedule(name: str):
    """The schedule registered as `name`; a ValueError naming the choices if none."""
    try:
        return SCHEDULES[name]
    except KeyError:
        raise ValueError(f"unknown lr schedule {name!r}; choose from {', '.join(SCHEDULES)}"
                         ) from None


def learning_rate(config: Settings, step: int, progress: float) -> float:
    """The lr of update number step + 1.

    progress: fraction of the run done, in [0, 1] (steps of the horizon, or
    minutes of the time budget when no step limit is set); only cosine uses it.
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    return get_schedule(config.lr_schedule)(config, step, progress)


def horizon_steps(config: Settings, windows_per_epoch: int) -> int | None:
    """Total steps the run will take, if a step or epoch limit fixes it."""
    limits = []
    if config.max_steps is not None:
        limits.append(config.max_steps)
    if config.epochs is not None:
        limits.append(max(1, math.ceil(config.epochs * windows_per_epoch)))
    return min(limits) if limits else None


def describe() -> str:
    """'constant: --lr throughout; step: ...', for the CLI's help."""
    return "; ".join(f"{name}: {f.__doc__}" for name, f in SCHEDULES.items())
