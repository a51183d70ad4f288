"""`charlstm info CHECKPOINT`: what a checkpoint holds, without running it.

By default a summary of about ten lines (the model, its data, how it was trained, its
losses); --verbose adds every setting and piece of metadata, --json gives all of it as
one JSON object, the exact-resume bookkeeping included.
"""

from __future__ import annotations

import json
import math
import shlex

from safetensors import safe_open

from ..checkpoint import load_checkpoint
from ..config import describe_dropouts
from ..language_model import training_config
from ..layers import LN2
from ..library import describe_regularisation, describe_stop
from ..progress import format_duration
from ..runs import resolve_checkpoint


def register(sub) -> None:
    p = sub.add_parser("info", help="describe a checkpoint",
                       description="Print a summary of a checkpoint: model, parameter count, "
                       "vocabulary, data, training step and settings, validation losses. "
                       "--verbose adds every setting and piece of metadata. A run "
                       "directory means its best.safetensors, else its last.safetensors.")
    p.add_argument("checkpoint", metavar="RUN_DIR|CHECKPOINT",
                   help="a run directory or a .safetensors checkpoint")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--verbose", "-v", action="store_true",
                       help="print every setting and piece of metadata, not the summary")
    shown.add_argument("--json", action="store_true",
                       help="print everything as one JSON object instead of a table")
    p.set_defaults(run=run)


def describe(path) -> dict:
    """Everything `info` shows, as plain JSON-serialisable values."""
    ckpt = load_checkpoint(path)  # validates: a corrupt file is a one-line error
    with safe_open(str(path), framework="numpy") as f:
        header = f.metadata() or {}
    dtypes = sorted({str(v.dtype) for v in ckpt.params.values()})
    return {
        "checkpoint": str(path),
        "file_bytes": path.stat().st_size,
        "format": f"{header.get('format')} v{header.get('format_version')}",
        "package_version": header.get("package_version"),
        "config": ckpt.config.to_dict(),
        "parameters": sum(int(v.size) for v in ckpt.params.values()),
        "dtype": "/".join(dtypes),
        "vocab_size": len(ckpt.vocab),
        "vocab": "".join(ckpt.vocab),
        "other_tensors": sorted(ckpt.arrays),
        "meta": ckpt.meta,
    }


# Training internals that only --json shows: exact-resume bookkeeping, not facts a
# reader of the table needs (package_version is in the "format" row already).
HIDDEN_META = ("cursor", "optimizer_step", "pending_eval", "package_version")


def _loss_text(value) -> str:
    """A per-character loss in nats, also in bits per character and perplexity."""
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return str(value)
    # exp overflows a float past 709 nats; such a loss is only ever a sign of a broken run
    perplexity = f"{math.exp(value):,.3f}" if value < 700 else "overflows a float"
    return f"{value:.4f} nats/char ({value / LN2:.4f} bits/char, " \
           f"perplexity {perplexity})"


def _log_window_text(window) -> str:
    """The steps trained since the last log record. The checkpoint keeps sums over them
    (so a resumed run logs the same records); shown here as per-step means."""
    steps = window.get("steps", 0) if isinstance(window, dict) else 0
    if not isinstance(steps, int) or steps <= 0:
        return "no steps since the last log record"
    return (f"{steps} step{'s' * (steps > 1)} since the last log record, mean train loss "
            f"{_loss_text(window.get('loss', 0.0) / steps)}")


def _shorten(chars: str, limit: int = 100) -> str:
    """The vocabulary as a JSON string (escapes visible), cut to about `limit` characters."""
    text = json.dumps(chars[:limit], ensure_ascii=False)
    return text if len(chars) <= limit else text[:-1] + f'..." (+{len(chars) - limit} more)'


def _meta_lines(meta: dict, prefix: str = "") -> list[tuple[str, str]]:
    """Flatten scalars and small dicts for the table; long lists are summarised, RNG
    states and HIDDEN_META left out, sums over the log window shown as means."""
    rows = []
    for key in sorted(meta):
        value, name = meta[key], prefix + key
        if not prefix and key in HIDDEN_META:
            continue
        if key == "rng":
            rows.append((name, "saved (random streams, for exact resume)"))
        elif not prefix and key == "log_window":
            rows.append((name, _log_window_text(value)))
        elif not prefix and key == "elapsed_s" and isinstance(value, (int, float)):
            rows.append(("elapsed", f"{format_duration(value)} of training"))
        elif isinstance(value, dict):
            rows += _meta_lines(value, name + ".")
        elif isinstance(value, list) and len(json.dumps(value)) > 60:
            rows.append((name, f"[{len(value)} items]"))
        elif "loss" in key:
            rows.append((name, _loss_text(value)))
        else:
            rows.append((name, json.dumps(value) if not isinstance(value, str) else value))
    return rows


def run(args) -> int:
    info = describe(resolve_checkpoint(args.checkpoint))
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return 0
    c = info["config"]
    rows = [
        ("checkpoint", f"{info['checkpoint']} ({info['file_bytes'] / 1e6:.2f} MB)"),
        ("format", f"{info['format']}, written by charlstm {info['package_version']}"),
        ("model", f"{c['cell'].upper()}, {c['num_layers']} layer{'s' * (c['num_layers'] > 1)} "
                  f"x {c['hidden_size']} hidden, "
                  f"{describe_dropouts(c)}, forget bias {c['forget_bias']}"),
        ("parameters", f"{info['parameters']:,} ({info['dtype']})"),
        ("vocab", f"{info['vocab_size']} characters: {_shorten(info['vocab'])}"),
    ]
    if not args.verbose:
        rows = _summary(rows, info)
    else:
        if info["other_tensors"]:
            rows.append(("other tensors", f"{len(info['other_tensors'])} (optimizer state, "
                         "carried hidden state, ...)"))
        rows += _meta_lines(info["meta"])
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if not args.verbose:
        print(f"(every setting: charlstm info {shlex.quote(str(args.checkpoint))} --verbose; "
              "all of it as JSON: --json)")
    return 0


def _summary(rows: list[tuple[str, str]], info: dict) -> list[tuple[str, str]]:
    """The default table: the rows every checkpoint has (the format folded into the
    checkpoint row), then what a reader asks first of a trained one: its data, how far
    and how it was trained, and its losses. Rows a checkpoint lacks are left out."""
    (_, path), (_, fmt), *rows = rows
    rows = [("checkpoint", f"{path[:-1]}, {fmt})"), *rows]
    meta, config = info["meta"], training_config(info["meta"])
    if config is not None:
        rows.append(("data", f"{config.data} (last {config.val_frac:g} held out for "
                             "validation)"))
    if isinstance(meta.get("step"), int):
        done = f"step {meta['step']}"
        if isinstance(meta.get("epoch"), int | float):
            done += f" (epoch {meta['epoch']:g})"
        if isinstance(meta.get("elapsed_s"), int | float):
            done += f", {format_duration(meta['elapsed_s'])} of training"
        if config is not None:
            done += f"; limit {describe_stop(config).split(';')[0]}"
        rows.append(("trained", done))
    if config is not None:
        rows.append(("settings", f"{config.optimizer} lr {config.lr:g} ({config.lr_schedule}, "
                                 f"warmup {config.warmup_steps}), B={config.batch_size} x "
                                 f"T={config.seq_len}, clip {config.clip:g}"
                                 f"{describe_regularisation(config)}"))
    if "val_loss" in meta:
        rows.append(("val loss", _loss_text(meta["val_loss"])))
    if "best_val_loss" in meta:
        at = meta.get("best_step")
        rows.append(("best val loss", _loss_text(meta["best_val_loss"])
                     + (f" at step {at}" if isinstance(at, int) else "")))
    return rows
