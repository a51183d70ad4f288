"""Memory a training run will need, and what the machine has: checked before a run
starts, so a model too big for the machine is refused in a line instead of growing
until the kernel kills it (and a run directory is left half made)."""

from __future__ import annotations

import contextlib
import os
import resource
from pathlib import Path

from .cells import get_cell
from .config import ModelConfig, a_cell
from .errors import UserError

# Arrays of one parameter's size alive during training, besides optimizer slots:
# the parameters, their gradients, and the transposed/scaled copies the step keeps.
PARAM_COPIES = 3
OPTIMIZER_SLOTS = {"adam": 2, "rmsprop": 1, "sgd": 1, "adagrad": 1}
ITEMSIZE = 4  # float32
# Bytes per character the training data keeps: its ids and the batches' copy (int64 each).
CORPUS_BYTES_PER_CHAR = 16
# Peak bytes per byte of a text file while it is read and encoded: the bytes, the str,
# the ids as a list and as an array (21 measured on ASCII; a little headroom).
LOAD_BYTES_PER_BYTE = 24
# Sampling, per stream: its random generator (about 1 KB measured), then per character
# drawn its id twice (the steps, then the joined array) and the text (up to 4 bytes).
RNG_BYTES = 1100
SAMPLE_BYTES_PER_CHAR = 8 + 8 + 4
# Where the kernel tells; tests point these at fakes.
PROC_MEMINFO = "/proc/meminfo"
PROC_SELF_CGROUP = "/proc/self/cgroup"
PROC_SELF_STATUS = "/proc/self/status"
CGROUP_ROOT = "/sys/fs/cgroup"


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


def available_memory() -> tuple[int, str] | None:
    """(bytes this process can still allocate, what limits it): the smallest of the
    kernel's MemAvailable, the room left under this process's cgroup (container) memory
    limit (v2 memory.max, v1 memory.limit_in_bytes) and under its address-space limit
    (RLIMIT_AS, `ulimit -v`); None when none can be read."""
    found = []
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(PROC_MEMINFO).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append((int(line.split()[1]) * 1024, "memory available"))
    if not found:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            found.append((os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"),
                          "memory available"))
    found += [(left, "room under the container's memory limit") for left in _cgroup_left()]
    with contextlib.suppress(OSError, ValueError):
        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            found.append((soft - _address_space_used(),
                          "room under the address-space limit (ulimit -v)"))
    return min(found) if found else None


def _cgroup_dirs() -> list[Path]:
    """This process's cgroup directories (v2 unified, v1 memory), then the roots (a
    container sees its own cgroup there)."""
    dirs = []
    with contextlib.suppress(OSError):
        for line in Path(PROC_SELF_CGROUP).read_text().splitlines():
            _, controllers, where = line.split(":", 2)
            if controllers == "":
                dirs.append(Path(CGROUP_ROOT) / where.lstrip("/"))
            elif "memory" in controllers.split(","):
                dirs.append(Path(CGROUP_ROOT) / "memory" / where.lstrip("/"))
    return [*dirs, Path(CGROUP_ROOT), Path(CGROUP_ROOT) / "memory"]


def _cgroup_left() -> list[int]:
    """Limit minus usage of each cgroup memory limit that is set."""
    left = []
    for d in _cgroup_dirs():
        for limit_file, usage_file in (("memory.max", "memory.current"),
                                       ("memory.limit_in_bytes", "memory.usage_in_bytes")):
            with contextlib.suppress(OSError, ValueError):
                limit = (d / limit_file).read_text().strip()
                if limit != "max" and int(limit) < 2**62:  # v1 writes "no limit" so
                    left.append(int(limit) - int((d / usage_file).read_text()))
    return left


def _address_space_used() -> int:
    """This process's virtual memory size (VmSize), which RLIMIT_AS bounds."""
    for line in Path(PROC_SELF_STATUS).read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.3g} TB" if n < 1e6 else f"{n:.2e} TB"


def _refuse_if_short(need: int, what: str, detail: str, lower: str) -> None:
    """One line (exit 2) when need exceeds what is available: both figures, what to lower."""
    have = available_memory()
    if have is not None and need > have[0]:
        raise UserError(f"{what} needs about {format_bytes(need)}{detail}, more than the "
                        f"{format_bytes(max(have[0], 0))} of {have[1]}; {lower}")


def check_fits(config: ModelConfig, optimizer: str, batch_size: int, seq_len: int,
               averaged: bool = False, corpus_chars: int = 0) -> None:
    """Refuse (exit 2) a run whose estimated memory, with its corpus, exceeds what is
    available."""
    need = (training_bytes(config, optimizer, batch_size, seq_len, averaged)
            + CORPUS_BYTES_PER_CHAR * corpus_chars)
    _refuse_if_short(need, f"{a_cell(config.cell)} {config.num_layers} x "
                     f"{config.hidden_size} model", f" to train (parameters, {optimizer} "
                     f"state, one {seq_len} x {batch_size} window's activations and the "
                     "text)", "choose a smaller --hidden-size, --num-layers, --batch-size or "
                     "--seq-len, or a shorter text")


def check_text_fits(*paths) -> None:
    """Refuse (exit 2) text files too big, together, to read and encode in the memory
    available."""
    if not paths:
        return
    size = 0
    for path in paths:
        with contextlib.suppress(OSError):  # an unreadable file: reading it says so
            size += os.stat(path).st_size
    what = f"the text {paths[0]}" if len(paths) == 1 else f"the text of {len(paths)} files"
    _refuse_if_short(LOAD_BYTES_PER_BYTE * size, f"{what} ({format_bytes(size)})",
                     " to read and encode for training",
                     "encode it once with charlstm prepare TEXT --out DIR and train with "
                     "--data DIR (its ids are read from disk as training goes), or use a "
                     "shorter text")


def sampling_bytes(config: ModelConfig, num_samples: int, length: int, prime_len: int) -> int:
    """Estimated bytes of num_samples streams sampled side by side: each stream's
    generator, ids and text, and its share of one step's state, gates and probabilities
    (float64, a few arrays of V)."""
    H, L, V = config.hidden_size, config.num_layers, config.vocab_size
    G = get_cell(config.cell).GATES * H
    per_stream = (RNG_BYTES + SAMPLE_BYTES_PER_CHAR * (length + prime_len)
                  + ITEMSIZE * L * (2 * G + 4 * H) + 8 * 4 * V)
    return num_samples * per_stream


def check_sampling_fits(config: ModelConfig, num_samples: int, length: int,
                        prime_len: int) -> None:
    """Refuse (exit 2) side-by-side sampling that would not fit in memory."""
    _refuse_if_short(sampling_bytes(config, num_samples, length, prime_len),
                     f"drawing {num_samples:,} samples of {length:,} characters side by side",
                     "",
                     "lower --num-samples or --length (or draw them in several runs)")
