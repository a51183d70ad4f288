"""Checkpoints: one .safetensors file, written atomically, validated on load.

Layout of a file:
    tensors   model parameters under their PyTorch names ("lstm.weight_ih_l0", ...),
              plus, in a training checkpoint, optimizer slots "optim.<slot>.<name>"
              ("optim.exp_avg.lstm.weight_ih_l0", ...) and the carried state
              "train.state.<j>" (j indexes the cell's STATE_NAMES: 0 h, 1 c). A run
              with --ema-decay stores the averaged weights as the model parameters (so
              every reader, torch and ONNX export included, gets them unchanged) and
              its raw training weights as "train.raw.<name>".
    metadata  (strings) format, format_version, package_version, config (JSON
              ModelConfig), vocab (JSON list of characters), meta (JSON, written by
              run_state.Run.checkpoint: train_config, step, epoch, cursor, optimizer_step,
              rng, val_loss, best_val_loss, best_step, elapsed_s, log_window,
              pending_eval, data_sha256, package_version), sha256 (of every tensor and
              every other metadata entry, see content_digest).

Every load verifies the sha256, so a flipped bit (a failing disk, a bad copy) is
reported as a corrupt file instead of loading as a wrong model. Files written
before the checksum existed (no sha256 entry) load as before.

No pickle anywhere: safetensors stores raw little-endian arrays and a JSON header.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from ._version import __version__
from .cells import get_cell
from .config import ModelConfig
from .errors import UserError, os_error_message
from .fsutil import atomic_write_bytes, is_device
from .model import param_shapes

# The largest weight magnitude a checkpoint (or an import) may hold. A hidden state is in
# [-1, 1], so a pre-activation or a logit is at most about (H + 2) * MAX_WEIGHT: 1e4 keeps
# that, even divided by a small sampling temperature, far inside float32 (3.4e38), while
# no trained model comes near it (weights of a few units; decay and clipping keep them so).
MAX_WEIGHT = 1e4
FORMAT = "charlstm-checkpoint"
FORMAT_VERSION = 1
CHECKSUM = "sha256"  # metadata key of content_digest


class CheckpointError(UserError):
    """A checkpoint that cannot be read or does not describe a valid model: exit 1 (a
    damaged file), or 2 for a file that was never a charlstm checkpoint (the user's
    mistake, with a hint at what reads it)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message, exit_code=exit_code)


def weight_problem(value: np.ndarray) -> str | None:
    """What is wrong with a parameter's values (non-finite, beyond MAX_WEIGHT), or None."""
    if not np.all(np.isfinite(value)):
        return "holds NaN or infinite values"
    biggest = float(np.max(np.abs(value))) if value.size else 0.0
    if biggest > MAX_WEIGHT:
        return (f"holds a value of magnitude {biggest:.3g}, beyond the {MAX_WEIGHT:g} a "
                "model's forward pass is checked to stay finite with")
    return None


def _check_vocab(path: Path, vocab, config: ModelConfig) -> None:
    """A JSON list of vocab_size distinct single characters."""
    if not isinstance(vocab, list) or len(vocab) != config.vocab_size:
        raise CheckpointError(f"{path}: vocabulary does not match vocab_size "
                              f"{config.vocab_size}")
    for i, ch in enumerate(vocab):
        if not isinstance(ch, str) or len(ch) != 1:
            raise CheckpointError(f"{path}: vocabulary entry {i} ({ch!r}) is not a single "
                                  "character")
    if len(set(vocab)) != len(vocab):
        twice = next(ch for ch in vocab if vocab.count(ch) > 1)
        raise CheckpointError(f"{path}: vocabulary holds {twice!r} more than once")


# meta entries a reader uses, and what each must be (None is allowed for all)
_COUNTS = ("step", "epoch", "optimizer_step", "best_step")
_NUMBERS = ("val_loss", "best_val_loss", "elapsed_s")


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_meta(path: Path, meta) -> None:
    """The training metadata's shape: an object whose counts are integers >= 0, whose
    losses and times are finite numbers, whose cursor is {epoch, window} counts."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: metadata entry meta is not a JSON object")
    for key in _COUNTS:
        if meta.get(key) is not None and not _is_count(meta[key]):
            raise CheckpointError(f"{path}: meta {key} must be an integer >= 0, got "
                                  f"{meta[key]!r}")
    for key in _NUMBERS:
        value = meta.get(key)
        if value is not None and not (isinstance(value, int | float)
                                      and not isinstance(value, bool)
                                      and np.isfinite(value)):
            raise CheckpointError(f"{path}: meta {key} must be a finite number, got {value!r}")
    cursor = meta.get("cursor")
    if cursor is not None and not (isinstance(cursor, dict)
                                   and set(cursor) == {"epoch", "window"}
                                   and all(_is_count(v) for v in cursor.values())):
        raise CheckpointError(f"{path}: meta cursor must be {{\"epoch\": N, \"window\": N}} "
                              f"with integers >= 0, got {cursor!r}")


def is_checkpoint_file(path) -> bool:
    """Whether path's safetensors header says it is a charlstm checkpoint (the header
    only: how a run directory made before its marker existed is recognised)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little")
            if len(head) < 8 or n > 100_000_000:
                return False
            return _read_metadata(head + f.read(n)).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _looks_like_safetensors(data: bytes) -> bool:
    """An 8-byte header length of a plausible size, then a JSON object (a truncated
    checkpoint still starts so, and is reported as damaged, not as a wrong file)."""
    return int.from_bytes(data[:8], "little") < 100_000_000 and data[8:9] == b"{"


def not_a_checkpoint(path: Path, safetensors: bool) -> CheckpointError:
    """The error for a file that is not a charlstm checkpoint, saying what it may be."""
    if path.suffix == ".onnx":
        hint = ("it is an ONNX graph (charlstm export writes those; charlstm reads only "
                "checkpoints): give the checkpoint it was exported from")
    elif safetensors:
        hint = ("if it is a PyTorch state dict (charlstm export writes those), make it a "
                f"checkpoint with: charlstm import {path} OUT.safetensors --vocab VOCAB.json")
    else:
        hint = ("a checkpoint is the .safetensors file charlstm train, charlstm import or "
                "LanguageModel.save writes")
    return CheckpointError(f"{path} is not a charlstm checkpoint; {hint}", exit_code=2)


@dataclass
class Checkpoint:
    config: ModelConfig
    vocab: list[str]  # vocab[i] is the character with id i
    params: dict[str, np.ndarray]  # model parameters, PyTorch names
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # optimizer, carried state...
    meta: dict = field(default_factory=dict)  # JSON-serialisable training state


def content_digest(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> str:
    """SHA-256 of every tensor (name, dtype, shape and bytes, in name order) and every
    metadata entry but the checksum itself."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(a)
    for key in sorted(k for k in metadata if k != CHECKSUM):
        h.update(json.dumps([key, metadata[key]]).encode())
    return h.hexdigest()


def save_checkpoint(path, ckpt: Checkpoint) -> None:
    atomic_write_bytes(Path(path), checkpoint_bytes(ckpt))


def checkpoint_bytes(ckpt: Checkpoint) -> bytes:
    """The file save_checkpoint writes, as bytes (also what rank 0 sends the other ranks
    of a distributed run)."""
    clash = set(ckpt.params) & set(ckpt.arrays)
    if clash:
        raise ValueError(f"array names clash with parameter names: {sorted(clash)}")
    tensors = {k: np.ascontiguousarray(v) for k, v in {**ckpt.params, **ckpt.arrays}.items()}
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "package_version": __version__,
        "config": json.dumps(ckpt.config.to_dict()),
        "vocab": json.dumps(ckpt.vocab, ensure_ascii=False),
        "meta": json.dumps(ckpt.meta),
    }
    metadata[CHECKSUM] = content_digest(tensors, metadata)
    return st_save(tensors, metadata=metadata)


def _read_metadata(data: bytes) -> dict:
    """The JSON header of a safetensors byte string (8-byte length, then JSON)."""
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n]).get("__metadata__") or {}


def load_checkpoint(path) -> Checkpoint:
    """Read and validate a checkpoint; any problem is a one-line CheckpointError."""
    path = Path(path)
    if is_device(path):
        raise not_a_checkpoint(path, safetensors=False)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {os_error_message(e, path)}") from None
    return parse_checkpoint(data, path)


def parse_checkpoint(data: bytes, path) -> Checkpoint:
    """load_checkpoint of bytes already read; path names them in messages."""
    if not _looks_like_safetensors(data):
        raise not_a_checkpoint(path, safetensors=False)
    try:
        tensors = st_load(data)
        metadata = _read_metadata(data)
    except Exception as e:  # safetensors raises several types for truncated/corrupt files
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated: "
                              f"{first})") from None
    if CHECKSUM in metadata and metadata[CHECKSUM] != content_digest(tensors, metadata):
        raise CheckpointError(f"{path} is corrupt: its contents no longer match the checksum "
                              "it was saved with (a damaged disk or copy); use another "
                              "checkpoint (the run's best or last) or a backup")
    if metadata.get("format") != FORMAT:
        raise not_a_checkpoint(path, safetensors=True)
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise CheckpointError(f"{path} has checkpoint format version "
                              f"{metadata.get('format_version')}; this charlstm reads "
                              f"version {FORMAT_VERSION}")
    try:
        config = ModelConfig.from_dict(json.loads(metadata["config"]))
        get_cell(config.cell)  # a name the config does not check
        vocab = json.loads(metadata["vocab"])
        meta = json.loads(metadata.get("meta", "{}"))
    except KeyError as e:
        raise CheckpointError(f"{path} has invalid metadata: no {e.args[0]!r} entry") from None
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path} has invalid metadata: {e}") from None
    _check_vocab(path, vocab, config)
    _check_meta(path, meta)
    if 4 * config.num_layers + 2 > len(tensors):  # before listing 4L shapes of a huge L
        raise CheckpointError(f"{path}: config num_layers {config.num_layers} needs "
                              f"{4 * config.num_layers + 2} parameter tensors, the file "
                              f"holds {len(tensors)}")
    shapes = param_shapes(config)
    missing = [k for k in shapes if k not in tensors]
    if missing:
        raise CheckpointError(f"{path} lacks parameters: {', '.join(missing)}")
    params = {}
    for name, shape in shapes.items():
        value = tensors[name]
        if value.shape != shape:
            raise CheckpointError(f"{path}: {name} has shape {value.shape}, config says {shape}")
        if value.dtype not in (np.float32, np.float64):
            raise CheckpointError(f"{path}: {name} has dtype {value.dtype}, not float32/64")
        problem = weight_problem(value)
        if problem:
            raise CheckpointError(f"{path}: {name} {problem}")
        params[name] = value
    arrays = {k: v for k, v in tensors.items() if k not in shapes}
    return Checkpoint(config=config, vocab=vocab, params=params, arrays=arrays, meta=meta)
