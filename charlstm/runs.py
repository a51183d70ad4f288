"""The run directory that `charlstm train --out RUN_DIR` writes: its layout, making it,
and finding things in it. The trainer decides what goes into these files; this module
decides where they are.

    RUN_DIR/config.toml        every setting, resolved (`--config` takes it back)
    RUN_DIR/last.safetensors   latest checkpoint (every --checkpoint-every steps, and at the end)
    RUN_DIR/best.safetensors   checkpoint with the lowest validation loss so far
    RUN_DIR/log.jsonl          one JSON object per logged step
    RUN_DIR/loss.png           `charlstm plot RUN_DIR` (drawn from log.jsonl)

A directory is a run once it holds a checkpoint: before the first one is written there
is nothing to resume or lose, and `charlstm train` may start it again.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from .config import TrainConfig, dump_toml
from .datasets import DATASETS
from .errors import UserError
from .fsutil import atomic_write_bytes

CONFIG = "config.toml"
LAST = "last.safetensors"
BEST = "best.safetensors"
LOG = "log.jsonl"
PLOT = "loss.png"
RUN_FILES = (CONFIG, LOG, LAST, BEST, PLOT)  # what --force replaces; nothing else is touched


def resolve_paths(config: TrainConfig) -> TrainConfig:
    """Make the stored config independent of the working directory: a data path (and an
    --init-from path) becomes absolute (a dataset name stays a name), an empty --out
    becomes runs/<data>-<time>."""
    data = config.data
    if data not in DATASETS or Path(data).expanduser().is_file():
        data = str(Path(data).expanduser().resolve())
    out = config.out or str(Path("runs") / (
        f"{Path(config.data).stem or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"))
    init_from = config.init_from and str(Path(config.init_from).expanduser().resolve())
    return replace(config, data=data, out=out, init_from=init_from)


def prepare_run_dir(out: Path, force: bool) -> bool:
    """Create out, refusing one that already holds a run (a checkpoint) unless force.
    The files of a run that stopped before its first checkpoint (config.toml, a log)
    are replaced without asking: there is nothing in them to resume. Only RUN_FILES
    are ever removed, never anything else in the directory.

    Returns True when such an unfinished start was replaced (the caller may say so)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    present = [name for name in RUN_FILES if (out / name).exists()]
    restarted = False
    if (out / LAST).exists() or (out / BEST).exists():
        if not force:
            raise UserError(f"{out} already holds a run ({', '.join(present)}); resume it "
                            f"with --resume {out}, pass --force to replace it, or choose "
                            "another --out")
    else:
        restarted = CONFIG in present
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in present:
            (out / name).unlink()
    except OSError as e:
        raise UserError(f"cannot prepare --out {out}: {e.strerror or e}") from None
    return restarted


def write_config(out: Path, config: TrainConfig) -> None:
    """RUN_DIR/config.toml, atomically."""
    atomic_write_bytes(out / CONFIG, dump_toml(config).encode("utf-8"))


def truncate_log(path: Path, step: int) -> None:
    """Drop log records past the checkpoint's step (written after it, before a crash),
    so the log of a resumed run reads as one run."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    keep = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line from a crash
    if len(keep) != len(lines):
        atomic_write_bytes(path, "".join(keep).encode("utf-8"))


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
