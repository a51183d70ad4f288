"""The run directory that `charlstm train --out RUN_DIR` writes, and finding things in it.

    RUN_DIR/last.safetensors   latest checkpoint (every --checkpoint-every steps, and at the end)
    RUN_DIR/best.safetensors   checkpoint with the lowest validation loss so far
    RUN_DIR/log.jsonl          one JSON object per logged step
    RUN_DIR/loss.png           `charlstm plot RUN_DIR` (drawn from log.jsonl)

A directory is a run once it holds a checkpoint: before the first one is written there
is nothing to resume or lose, and `charlstm train` may start it again.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import UserError

LAST = "last.safetensors"
BEST = "best.safetensors"
LOG = "log.jsonl"
PLOT = "loss.png"


def resolve_checkpoint(spec) -> Path:
    """A checkpoint file as given, or for a run directory its best checkpoint
    (lowest validation loss), else its last one."""
    path = Path(spec)
    if path.is_dir():
        for name in (BEST, LAST):
            if (path / name).is_file():
                return path / name
        raise UserError(f"{path} holds no checkpoint ({BEST} or {LAST}); is it a run "
                        "directory written by charlstm train?")
    if not path.exists():
        raise UserError(f"no such checkpoint or run directory: {path}")
    return path


def resolve_log(run_dir) -> Path:
    """RUN_DIR/log.jsonl, which must exist."""
    path = Path(run_dir)
    if path.is_file() and path.name.endswith(".jsonl"):
        return path
    if not path.is_dir():
        raise UserError(f"no such run directory: {path}")
    log = path / LOG
    if not log.is_file():
        raise UserError(f"{path} has no training log ({LOG}); is it a run directory "
                        "written by charlstm train?")
    return log


def read_log(path) -> tuple[list[dict], int]:
    """(records in file order, number of lines skipped) of a log.jsonl.

    A line that is not a JSON object with an integer "step" (say, the tail of a
    run killed mid-write) is skipped and counted, so the caller can say so.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    records, bad = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        if isinstance(rec, dict) and isinstance(rec.get("step"), int):
            records.append(rec)
        else:
            bad += 1
    return records, bad
