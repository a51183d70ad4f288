"""Memory a training run will need, and what the machine has: checked before a run
starts, so a model too big for the machine is refused in a line instead of growing
until the kernel kills it (and a run directory is left half made)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .cells import get_cell
from .config import ModelConfig, a_cell
from .errors import UserError

# Arrays of one parameter's size alive during training, besides optimizer slots:
# the parameters, their gradients, and the transposed/scaled copies the step keeps.
PARAM_COPIES = 3
OPTIMIZER_SLOTS = {"adam": 2, "rmsprop": 1, "sgd": 1, "adagrad": 1}
ITEMSIZE = 4  # float32


def training_bytes(config: ModelConfig, optimizer: str, batch_size: int, seq_len: int,
                   averaged: bool = False) -> int:
    """Estimated peak bytes of one training step: parameters, gradients and optimizer
    state (and the weights' moving average, if averaged; the masked weights of weight
    and input dropout), plus the activations one (seq_len, batch_size) window caches
    for BPTT.
    """
    H, L, V = config.hidden_size, config.num_layers, config.vocab_size
    G = get_cell(config.cell).GATES * H
    # model.param_shapes in closed form (a dict of 4L shapes would itself exhaust memory
    # for an absurd --num-layers): W_ih, W_hh, two biases per layer; the decoder
    n_params = G * V + (L - 1) * G * H + L * (G * H + 2 * G) + V * H + V
    # per layer and step: input projections and gates (2G), states and their tanh (4H);
    # once per step: backward's gate gradients (2G) and logits, probabilities, dlogits (3V)
    per_step = L * (2 * G + 4 * H) + 2 * G + 3 * V
    # a locked mask on the top layer keeps the decoder's masked input beside the output
    per_step += H * (config.locked_dropout > 0)
    values = (PARAM_COPIES + OPTIMIZER_SLOTS.get(optimizer, 2) + int(averaged)) * n_params
    # weight dropout: a mask and the masked copy of every W_hh (of W_ih_l0 for the input)
    values += 2 * (L * G * H * (config.weight_dropout > 0) + G * V * (config.input_dropout > 0))
    return ITEMSIZE * (values + seq_len * batch_size * per_step)


def available_memory() -> int | None:
    """Bytes this process can still allocate: the kernel's MemAvailable, lowered to a
    cgroup (container) limit when one is set; None when neither can be read."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    try:
        cgroup = Path("/sys/fs/cgroup")
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int((cgroup / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.3g} TB" if n < 1e6 else f"{n:.2e} TB"


def check_fits(config: ModelConfig, optimizer: str, batch_size: int, seq_len: int,
               averaged: bool = False) -> None:
    """Refuse (exit 2) a run whose estimated memory exceeds what is available."""
    need = training_bytes(config, optimizer, batch_size, seq_len, averaged)
    have = available_memory()
    if have is not None and need > have:
        raise UserError(
            f"{a_cell(config.cell)} {config.num_layers} x {config.hidden_size} model needs "
            f"about {format_bytes(need)} to train (parameters, {optimizer} state and one "
            f"{seq_len} x {batch_size} window's activations), more than the "
            f"{format_bytes(have)} of memory available; choose a smaller --hidden-size, "
            "--num-layers, --batch-size or --seq-len")
