"""`charlstm plot RUN_DIR`: a PNG of train and val loss against step and time."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import UserError
from ..fsutil import atomic_write_bytes
from ..runs import PLOT, is_run_dir, read_log, resolve_log
from .argtypes import integer


def register(sub) -> None:
    p = sub.add_parser("plot", help="plot a run's loss curves to a PNG",
                       description="Read RUN_DIR/log.jsonl and draw train and validation loss "
                       "(nats/char, bits/char on the right) against step and against training "
                       "time. Works while the run is still training.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (or its log.jsonl)")
    p.add_argument("--out", "-o", default=None, metavar="FILE.png",
                   help="where to write the PNG (default: RUN_DIR/loss.png)")
    p.add_argument("--dpi", type=integer(20), default=120, help="resolution (default 120)")
    p.set_defaults(run=run)


def run(args) -> int:
    log = resolve_log(args.run_dir)
    records, bad = read_log(log)
    if bad:
        print(f"charlstm: skipped {bad} unreadable line(s) of {log}", file=sys.stderr)
    if not any(r.get("train_loss") is not None or r.get("val_loss") is not None
               for r in records):
        raise UserError(f"{log} has no loss records yet; plot again once the run has logged "
                        "a step", exit_code=1)
    out = Path(args.out) if args.out else log.parent / PLOT
    if not args.out and out.exists() and not is_run_dir(log.parent):
        raise UserError(f"{out} exists and {log.parent} is not a charlstm run directory, so "
                        "it is not ours to replace: name the PNG with --out")
    if out.suffix.lower() != ".png":
        raise UserError(f"--out must name a .png file, got {out}")
    if not out.parent.is_dir():
        raise UserError(f"cannot write {out}: no such directory {out.parent}")
    from ..plots import loss_figure, png_bytes  # matplotlib loads only for this command

    data = png_bytes(loss_figure(records, title=log.parent.name), dpi=args.dpi)
    atomic_write_bytes(out, data)  # an OSError names out; the CLI adds what to do
    print(f"wrote {out} ({len(records)} log records, up to step {records[-1]['step']})")
    return 0
