"""Do the presets carry over? Train a preset and the same model without its
regularisers, for the same wall-clock budget, on a corpus, and compare their best
validation losses.

    python benchmarks/bench_presets.py --preset small [--corpus stdlib|tinyshakespeare|FILE]
        [--threads N] [--time-budget MIN] [--side-by-side] [--out runs/presets]

"Plain" is the preset with every regulariser off: no dropout of any kind, no weight
decay, no AR/TAR, no weight averaging; model size, optimiser, schedule, batch shape
and budget unchanged. Both runs are `charlstm train` commands (their commands are
printed), each on --threads workers, run one after the other, or with --side-by-side
at the same time (halves the wall clock of the 2-hour preset; give each run its own
cores, e.g. --threads 1 on two, so neither slows the other).

`--corpus stdlib` is a text that nobody here wrote and that differs from Tiny
Shakespeare in every way that matters (code, not verse; a larger vocabulary): the
top-level modules of the running Python's standard library (`Lib/*.py`, sorted by
name, whole files up to STDLIB_CHARS characters), written to the --out directory.
Its 10% validation split is therefore other modules than the ones trained on.
"""

from __future__ import annotations

import argparse
import math
import platform
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

import common  # noqa: F401  (drops OPENBLAS_CORETYPE before the children inherit the env)
from common import load_1min, machine_line, table

from charlstm.presets import PRESETS, load_preset
from charlstm.runs import read_log, resolve_log

STDLIB_CHARS = 2_000_000
# The settings that make "plain": every regulariser charlstm has, off.
PLAIN = {"dropout": 0.0, "weight_dropout": 0.0, "locked_dropout": 0.0, "input_dropout": 0.0,
         "weight_decay": 0.0, "ar": 0.0, "tar": 0.0, "ema_decay": 0.0}


def stdlib_corpus(out_dir: Path) -> Path:
    """The standard-library text (see the module docstring), written once per Python."""
    root = Path(sysconfig.get_paths()["stdlib"])
    path = out_dir / f"python{platform.python_version()}-stdlib.txt"
    if path.exists():
        return path
    parts, size = [], 0
    for module in sorted(root.glob("*.py")):
        text = module.read_text(encoding="utf-8", errors="replace")
        if size + len(text) > STDLIB_CHARS:
            break
        parts.append(text)
        size += len(text)
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts), encoding="utf-8")
    return path


def start(args: list[str], out: Path) -> subprocess.Popen:
    """Start `charlstm train ARGS --out OUT` (its command printed)."""
    args = [*args, "--out", str(out)]
    print("$ " + shlex.join(["charlstm", "train", *args]), flush=True)
    return subprocess.Popen([sys.executable, "-m", "charlstm.cli", "train", *args],
                            stdout=subprocess.DEVNULL)


def best_loss(proc: subprocess.Popen, out: Path) -> float:
    """Wait for a training run; its best validation loss (from its log)."""
    if proc.wait() != 0:
        raise SystemExit(f"training into {out} failed (exit {proc.returncode})")
    records, _ = read_log(resolve_log(out))
    losses = [rec["val_loss"] for rec in records if rec.get("val_loss") is not None]
    return min(losses) if losses else math.nan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=list(PRESETS), required=True)
    ap.add_argument("--corpus", default="stdlib",
                    help="stdlib (see above), tinyshakespeare, or a text file")
    ap.add_argument("--threads", type=int, default=None,
                    help="charlstm train --threads (default: its own, every core)")
    ap.add_argument("--time-budget", type=float, default=None,
                    help="minutes for each run (default: the preset's)")
    ap.add_argument("--side-by-side", action="store_true",
                    help="run the preset and plain trainings at the same time")
    ap.add_argument("--out", type=Path, default=Path("runs/presets"))
    args = ap.parse_args()

    data = str(stdlib_corpus(args.out)) if args.corpus == "stdlib" else args.corpus
    budget = args.time_budget or load_preset(args.preset)["time_budget"]
    common_flags = ["--preset", args.preset, "--data", data, "--time-budget", f"{budget:g}",
                    "--force"]
    if args.threads:
        common_flags += ["--threads", str(args.threads)]
    name = Path(data).stem if args.corpus != "tinyshakespeare" else "tinyshakespeare"
    print(machine_line(with_torch=False))
    if Path(data).is_file():
        text = Path(data).read_text(encoding="utf-8", errors="replace")
        print(f"corpus {data}: {len(text):,} characters, {len(set(text))} distinct")
    runs = {}
    for kind in ("preset", "plain"):
        extra = ([f"--{k.replace('_', '-')}={v:g}" for k, v in PLAIN.items()]
                 if kind == "plain" else [])
        out = args.out / f"{name}-{args.preset}-{kind}"
        runs[kind] = (start([*common_flags, *extra], out), out)
        if not args.side_by_side:
            runs[kind][0].wait()  # one after the other
    rows = [[f"{args.preset} ({kind})", name, f"{budget:g} min", f"{best_loss(proc, out):.4f}"]
            for kind, (proc, out) in runs.items()]
    print()
    print(table(["run", "corpus", "budget", "best val loss (nats/char)"], rows))
    print(f"\n1-min load at end {load_1min():.2f}")


if __name__ == "__main__":
    main()
