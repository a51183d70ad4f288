"""PyTorch state dicts in and out of charlstm, without importing torch unless needed.

Our parameter names, shapes and gate orders already are those of
`charlstm.interop.torch.CharRNN` (nn.LSTM/GRU/RNN named after the cell, plus
nn.Linear `decoder`), so export and import are a check and a copy, no reshuffle:

    lstm.weight_ih_l{k}  (G, V if k == 0 else H)     G = 4H (LSTM), 3H (GRU), H (RNN)
    lstm.weight_hh_l{k}  (G, H)
    lstm.bias_ih_l{k}    (G,)
    lstm.bias_hh_l{k}    (G,)
    decoder.weight       (V, H)
    decoder.bias         (V,)

(`gru.` or `rnn.` in place of `lstm.` for the other cells.) Files: `.safetensors`
(read and written with safetensors.numpy; loadable with safetensors.torch.load_file)
or `.pt` (torch.save; read back only with torch.load(weights_only=True)).

VOCAB.json, the vocabulary that travels beside a state dict, is a JSON list of
single characters in id order: `["\\n", " ", "!", ...]`, the character with
id i at index i (the same list a checkpoint stores in its metadata).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from ..cells import CELLS
from ..checkpoint import Checkpoint, weight_problem
from ..config import ModelConfig
from ..errors import UserError
from ..fsutil import atomic_write_bytes
from ..model import param_shapes
from ..text import Vocab

STATE_DICT_FORMAT = "charlstm-torch-state-dict"
TORCH_MISSING = "PyTorch is not installed; install it with: pip install 'charlstm[torch]'"


def require_torch():
    """The torch module, or a one-line UserError saying how to install it."""
    try:
        import torch
    except ImportError:
        raise UserError(TORCH_MISSING, exit_code=1) from None
    return torch


def expected_names(cell: str) -> str:
    """One line describing the keys a state dict must have."""
    return (f"{cell}.weight_ih_l{{k}}, {cell}.weight_hh_l{{k}}, {cell}.bias_ih_l{{k}}, "
            f"{cell}.bias_hh_l{{k}} for k = 0..L-1, decoder.weight, decoder.bias")


def infer_config(shapes: dict[str, tuple[int, ...]], source: str = "state dict") -> ModelConfig:
    """Rebuild the ModelConfig a state dict describes, from its names and shapes alone.

    Args:
        shapes: name -> shape (works for numpy arrays and torch tensors alike).
        source: how to name the input in errors (a file name).
    Raises:
        UserError (one line) naming the first missing, unexpected or mis-shaped key.
    """
    prefixes = sorted({name.split(".", 1)[0] for name in shapes} - {"decoder"})
    if len(prefixes) != 1 or prefixes[0] not in CELLS:
        hint = ""
        if any(name.startswith("weight_ih_l") for name in shapes):
            hint = " (this looks like a bare nn.LSTM/GRU/RNN state dict; save CharRNN's instead)"
        cells = ", ".join(f"{c}.*" for c in CELLS)
        raise UserError(f"{source}: expected parameters of exactly one cell ({cells}), "
                        f"plus decoder.weight and decoder.bias; found prefixes "
                        f"{', '.join(prefixes) or 'none'}{hint}")
    cell = prefixes[0]
    dec = shapes.get("decoder.weight")
    if dec is None or len(dec) != 2:
        raise UserError(f"{source}: expected decoder.weight of shape (V, H), "
                        f"got {'none' if dec is None else tuple(dec)}")
    V, H = (int(n) for n in dec)
    L = 0
    while f"{cell}.weight_ih_l{L}" in shapes:
        L += 1
    if L == 0 or V == 0 or H == 0:
        raise UserError(f"{source}: expected keys {expected_names(cell)}; "
                        f"{cell}.weight_ih_l0 is missing or the decoder is empty")
    config = ModelConfig(vocab_size=V, hidden_size=H, num_layers=L, cell=cell)
    expected = param_shapes(config)
    what = f"an {cell.upper()} with V={V}, H={H}, L={L} (from decoder.weight and layer count)"
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    if missing or unexpected:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(unexpected)}"] if unexpected else [])
        raise UserError(f"{source}: {'; '.join(parts)}; expected exactly the keys "
                        f"{expected_names(cell)} of {what}")
    for name, shape in expected.items():
        if tuple(shapes[name]) != shape:
            raise UserError(f"{source}: {name} has shape {tuple(shapes[name])}, expected "
                            f"{shape} for {what}")
    return config


def _check_values(sd: dict, source: str) -> dict[str, np.ndarray]:
    """float32/float64 copies of the arrays (float16 widened), all finite."""
    out = {}
    for name, value in sd.items():
        value = np.asarray(value)
        if value.dtype == np.float16:
            value = value.astype(np.float32)
        if value.dtype not in (np.float32, np.float64):
            raise UserError(f"{source}: {name} has dtype {value.dtype}; expected floating point")
        problem = weight_problem(value)
        if problem:
            raise UserError(f"{source}: {name} {problem}")
        out[name] = np.ascontiguousarray(value)
    dtypes = {v.dtype for v in out.values()}
    if len(dtypes) > 1:  # mixed precision: keep the widest
        out = {k: v.astype(np.float64) for k, v in out.items()}
    return out


def _load_pt(path: Path) -> dict[str, np.ndarray]:
    """A flat {name: tensor} dict from torch.save, read with weights_only=True only."""
    torch = require_torch()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError for forbidden objects, others if corrupt
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{path}: refused or unreadable by torch.load(weights_only=True), "
                        f"which only reads tensors and plain containers; save "
                        f"model.state_dict() instead ({first})", exit_code=1) from None
    if not isinstance(obj, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise UserError(f"{path}: expected a flat state dict (name -> tensor), as saved by "
                        f"torch.save(model.state_dict(), ...); got {type(obj).__name__}")
    # float16/bfloat16 (numpy has no bfloat16) widen to float32; integers fail the dtype check
    return {k: (v.float() if v.is_floating_point() and v.dtype != torch.float64 else v)
            .detach().cpu().numpy() for k, v in obj.items()}


def load_state_dict(path) -> dict[str, np.ndarray]:
    """Read a state dict from .safetensors or .pt (weights_only); a one-line error if not."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}", exit_code=1) from None
    if path.suffix == ".pt":
        return _load_pt(path)
    if path.suffix == ".onnx":
        raise UserError(f"{path}: import reads PyTorch state dicts (.safetensors or .pt), not "
                        "ONNX graphs")
    try:
        sd = st_load(data)
    except Exception as e:  # safetensors raises several types for foreign or corrupt files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{path} is not a readable .safetensors file ({first}); a torch.save "
                        "file must end in .pt", exit_code=1) from None
    n = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8:8 + n]).get("__metadata__") or {}
    if meta.get("format") == "charlstm-checkpoint":
        raise UserError(f"{path} is already a charlstm checkpoint; use it directly")
    return sd


def read_vocab(path) -> list[str]:
    """VOCAB.json: a JSON list of distinct single characters, in id order."""
    path = Path(path)
    try:
        chars = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}", exit_code=1) from None
    except ValueError as e:
        raise UserError(f"{path} is not valid JSON: {e}") from None
    try:
        return Vocab(chars).chars
    except (ValueError, TypeError):
        raise UserError(f"{path}: expected a JSON list of distinct single characters in id "
                        'order, e.g. ["\\n", " ", "a"]') from None


def vocab_bytes(vocab: list[str]) -> bytes:
    """The contents of VOCAB.json for this vocabulary (UTF-8)."""
    return (json.dumps(vocab, ensure_ascii=False) + "\n").encode()


def write_vocab(path, vocab: list[str]) -> None:
    atomic_write_bytes(Path(path), vocab_bytes(vocab))


def checkpoint_from_state_dict(sd: dict, vocab: list[str], source: str = "state dict"):
    """A charlstm Checkpoint from a state dict and its vocabulary, after every check."""
    config = infer_config({k: tuple(v.shape) for k, v in sd.items()}, source)
    if len(vocab) != config.vocab_size:
        raise UserError(f"{source} is a model of {config.vocab_size} characters "
                        f"(decoder.weight rows) but the vocabulary has {len(vocab)}")
    params = _check_values(sd, source)
    return Checkpoint(config, list(vocab), {k: params[k] for k in param_shapes(config)},
                      meta={"imported_from": str(source), "step": 0})


def save_state_dict(path, ckpt: Checkpoint) -> None:
    """Write ckpt's parameters as CharRNN's state dict: .pt via torch.save, else safetensors.

    The safetensors header also carries the config and vocabulary (ignored by
    safetensors.torch.load_file, useful to a reader of the file).
    """
    path = Path(path)
    params = {k: np.ascontiguousarray(v) for k, v in ckpt.params.items()}
    if path.suffix == ".pt":
        torch = require_torch()
        buf = io.BytesIO()
        torch.save({k: torch.from_numpy(v.copy()) for k, v in params.items()}, buf)
        data = buf.getvalue()
    else:
        meta = {"format": STATE_DICT_FORMAT, "config": json.dumps(ckpt.config.to_dict()),
                "vocab": json.dumps(ckpt.vocab, ensure_ascii=False)}
        data = st_save(params, metadata=meta)
    atomic_write_bytes(path, data)
