"""The run directory that `charlstm train --out RUN_DIR` writes: its layout, making it,
and finding things in it. The trainer decides what goes into these files; this module
decides where they are.

    RUN_DIR/config.toml        every setting, resolved (`--config` takes it back)
    RUN_DIR/last.safetensors   latest checkpoint (every --checkpoint-every steps, and at the end)
    RUN_DIR/best.safetensors   checkpoint with the lowest validation loss so far
    RUN_DIR/log.jsonl          one JSON object per logged step
    RUN_DIR/loss.png           `charlstm plot RUN_DIR` (drawn from log.jsonl)
    RUN_DIR/samples.txt        --sample-every: a short sample every N steps, with its step
    RUN_DIR/stdin.txt          --data -: the text read from standard input, kept to resume
    RUN_DIR/step-002500-val1.6994.safetensors   --keep N: the last N evaluated checkpoints
    RUN_DIR/.charlstm-run      written first: {"format": ".charlstm-run", "format_version": 1}

charlstm writes only into a new or empty directory or one it made: the marker says so,
or, for a run made before the marker existed, a charlstm checkpoint or a config.toml of
train settings whose out is the directory. There it replaces or removes only the
regular files named above (the step-* checkpoints by their exact pattern, KEPT), and
.lock, and its own temporary files.
A directory holds a run once it holds a checkpoint: before the first one is written there
is nothing to resume or lose, and `charlstm train` may start it again.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import replace
from pathlib import Path

from .checkpoint import CheckpointError, is_checkpoint_file
from .config import TrainConfig, dump_toml, load_toml
from .datasets import DATASETS
from .errors import UserError, os_error_message
from .fsutil import atomic_write_bytes, refuse_non_regular
from .lockfile import LOCK
from .sources import STDIN, specs

CONFIG = "config.toml"
LAST = "last.safetensors"
BEST = "best.safetensors"
LOG = "log.jsonl"
PLOT = "loss.png"
SAMPLES = "samples.txt"
STDIN_COPY = "stdin.txt"
# what --force replaces (with the KEPT checkpoints); nothing else is touched
RUN_FILES = (CONFIG, LOG, LAST, BEST, PLOT, SAMPLES, STDIN_COPY)
# --keep's checkpoints: exactly the names kept_name writes
KEPT = re.compile(r"step-(\d{6,})-val(\d+\.\d{4})\.safetensors")
# Written first into every run directory charlstm makes: a small JSON saying so.
MARKER = ".charlstm-run"
MARKER_VERSION = 1


def resolve_paths(config: TrainConfig) -> TrainConfig:
    """Make the stored config independent of the working directory: a data path (and an
    --init-from path) becomes absolute (a dataset name stays a name), an empty --out
    becomes runs/<data>-<time> (with -2, -3, ... when two runs start in one second)."""
    data = tuple(_absolute(spec) for spec in specs(config.data))
    first = specs(config.data)[0]
    out = config.out or _new_run_name("stdin" if first == STDIN else Path(first).stem or "run")
    init_from = config.init_from and str(Path(config.init_from).expanduser().resolve())
    return replace(config, data=data, out=out, init_from=init_from)


def _absolute(spec: str) -> str:
    """A --data path made absolute; a dataset name and - (standard input) as they are."""
    if spec == STDIN or (spec in DATASETS and not Path(spec).expanduser().is_file()):
        return spec
    return str(Path(spec).expanduser().resolve())


def kept_name(step: int, val_loss: float) -> str:
    """--keep's name for the checkpoint of `step`: step-002500-val1.6994.safetensors."""
    return f"step-{step:06d}-val{val_loss:.4f}.safetensors"


def kept_files(out: Path) -> list[Path]:
    """--keep's checkpoints in out, by step: regular files named by KEPT only."""
    try:
        found = [p for p in out.iterdir() if KEPT.fullmatch(p.name)
                 and p.is_file() and not p.is_symlink()]
    except OSError:
        return []
    return sorted(found, key=lambda p: int(KEPT.fullmatch(p.name).group(1)))


def _new_run_name(stem: str) -> str:
    """runs/<stem>-<time>, a name no existing path has."""
    base = Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    name, n = base, 1
    while name.exists() or name.is_symlink():
        n += 1
        name = base.with_name(f"{base.name}-{n}")
    return str(name)


def _is_our_config(path: Path) -> bool:
    """A config.toml that charlstm train wrote for this directory: TOML holding train
    settings only, whose `out` (every run records it) is the directory it is in. A
    user's own config.toml is not, nor a run's config copied elsewhere to reuse."""
    try:
        settings = load_toml(path)
        TrainConfig.from_dict(settings)
        return Path(settings["out"]).expanduser().resolve() == path.parent.resolve()
    except (ValueError, TypeError, KeyError, OSError, RuntimeError):
        return False


def is_run_dir(out: Path) -> bool:
    """Whether charlstm made `out`: it holds the MARKER written first into every run
    directory, or (a run made before the marker existed) a charlstm checkpoint or a
    config.toml charlstm wrote, each a regular file."""
    def regular(name):
        return (out / name).is_file() and not (out / name).is_symlink()
    if regular(MARKER):
        try:
            return json.loads((out / MARKER).read_text(encoding="utf-8"))["format"] == MARKER
        except (OSError, ValueError, KeyError, TypeError):
            return False
    return (any(regular(name) and is_checkpoint_file(out / name) for name in (LAST, BEST))
            or (regular(CONFIG) and _is_our_config(out / CONFIG)))


def check_run_dir(out: Path, ignore: tuple = ()) -> None:
    """Refuse (one line) an --out that exists and is not a directory, or a directory
    holding anything (but `ignore`) that is not a run charlstm made: charlstm writes
    only into a new or empty directory or its own run, --force or not."""
    if os.path.lexists(out) and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    if not out.is_dir() or is_run_dir(out):
        return
    try:
        names = sorted(p.name for p in out.iterdir() if p.name not in ignore)
    except OSError as e:
        raise UserError(f"cannot read --out {out}: {e.strerror or e}", exit_code=1) from None
    if names:
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise UserError(f"--out {out} is a directory that is not a charlstm run (it holds "
                        f"{shown}); charlstm writes only into a new or empty directory or a "
                        "run it made, even with --force: choose another --out")


def prepare_run_dir(out: Path, force: bool) -> bool:
    """Make out a run directory (the caller holds its lock, so .lock is ours): refuse
    one that is not a run (check_run_dir) or that already holds a run (a checkpoint)
    unless force; write the MARKER first. The files of a run that stopped before its
    first checkpoint (config.toml, a log) are replaced without asking: there is nothing
    in them to resume. Only RUN_FILES are ever removed, each only if a regular file.

    Returns True when such an unfinished start was replaced (the caller may say so)."""
    check_run_dir(out, ignore=(LOCK,))
    check_run_files(out)
    present = [name for name in RUN_FILES if os.path.lexists(out / name)]
    present += [p.name for p in kept_files(out)] if out.is_dir() else []
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
        mark_run_dir(out)
        for name in present:
            (out / name).unlink()
    except OSError as e:
        raise UserError(f"cannot prepare --out {out}: {os_error_message(e)}",
                        exit_code=1) from None
    return restarted


def check_run_files(out: Path) -> None:
    """Refuse (one line) a run whose files are not all regular files (a link, a FIFO):
    before training, not at the first save."""
    for name in (MARKER, *RUN_FILES):
        refuse_non_regular(out / name, "a run holds only the files charlstm wrote there; "
                           "move it away or choose another --out")


def mark_run_dir(out: Path) -> None:
    """Write out/MARKER (if missing): from now on charlstm knows the directory is its own."""
    if not (out / MARKER).is_file():
        atomic_write_bytes(out / MARKER, (json.dumps(
            {"format": MARKER, "format_version": MARKER_VERSION}) + "\n").encode("utf-8"))


def write_config(out: Path, config: TrainConfig) -> None:
    """RUN_DIR/config.toml, atomically."""
    atomic_write_bytes(out / CONFIG, dump_toml(config).encode("utf-8"))


def truncate_log(path: Path, step: int) -> int:
    """Drop log records past the checkpoint's step (written after it, before a crash),
    so the log of a resumed run reads as one run. Lines that are not a record (a torn
    last line from a crash, bytes that are not UTF-8 or JSON: a damaged disk) are
    dropped too, and counted: the caller says so once; the checkpoint, not the log, is
    what a resume continues from. Returns that count."""
    if not path.exists():
        return 0
    lines = path.read_bytes().splitlines(keepends=True)
    keep, bad = [], 0
    for line in lines:
        try:
            rec = json.loads(line.decode("utf-8"))
            if isinstance(rec["step"], int) and rec["step"] <= step:
                keep.append(line)
            continue
        except (ValueError, KeyError, TypeError):
            pass
        bad += bool(line.strip())  # a torn last line, or garbage
    if len(keep) != len(lines):
        atomic_write_bytes(path, b"".join(keep))
    return bad


def resolve_checkpoint(spec) -> Path:
    """A checkpoint file as given, or for a run directory its best checkpoint
    (lowest validation loss), else its last one."""
    path = Path(spec)
    if path.is_dir():
        for name in (BEST, LAST):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path} holds no checkpoint ({BEST} or {LAST}); is it a run "
                              "directory written by charlstm train?", exit_code=2)
    if not path.exists():
        raise CheckpointError(f"no such checkpoint or run directory: {path}", exit_code=2)
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
        lines = path.read_bytes().splitlines()
    except OSError as e:
        raise UserError(f"cannot read {os_error_message(e, path)}", exit_code=1) from None
    records, bad = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError included
            rec = None
        if isinstance(rec, dict) and isinstance(rec.get("step"), int):
            records.append(rec)
        else:
            bad += 1
    return records, bad
