"""`charlstm visualize RUN_DIR|CHECKPOINT --out page.html`: what every cell tracks."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..activity import record
from ..checkpoint import load_checkpoint
from ..config import TrainConfig, a_cell
from ..errors import UserError
from ..fsutil import atomic_write_bytes, check_output
from ..runs import resolve_checkpoint
from ..sources import describe
from ..text import Vocab, read_text
from ..visualize import page, page_data, report
from .argtypes import integer
from .eval import SPLITS, resolve_eval_data, say_skipped, split_ids, training_config


def register(sub) -> None:
    p = sub.add_parser(
        "visualize", help="write an HTML page showing what each cell of a model tracks",
        description="Run a checkpoint over a text (default: the first 5,000 characters of "
        "its validation split) and write one self-contained HTML page (no network needed): "
        "the text coloured by any cell's activation (layer, h/c/gate, unit), the top-5 "
        "next-character predictions on hover, the cells that correlate best with simple "
        "text features (quotes, brackets, line position, ...) and a gate-saturation plot. "
        "A run directory means its best.safetensors, else its last.safetensors.")
    p.add_argument("checkpoint", metavar="RUN_DIR|CHECKPOINT",
                   help="a run directory or a .safetensors checkpoint")
    d = p.add_argument_group("text")
    src = d.add_mutually_exclusive_group()
    src.add_argument("--text", metavar="FILE", default=None,
                     help="a UTF-8 text file to run the model over")
    src.add_argument("--split", choices=SPLITS, default="val",
                     help="else this split of the text the model was trained on (default val)")
    d.add_argument("--chars", metavar="N", type=integer(2), default=5000,
                   help="characters from the start of the text (default 5000)")
    d.add_argument("--unknown", choices=("error", "skip"), default="error",
                   help="characters not in the model's vocabulary: error (default) or skip")
    o = p.add_argument_group("output")
    o.add_argument("--out", metavar="PAGE.html", required=True, help="the HTML page to write")
    o.add_argument("--json", metavar="FILE", default=None,
                   help="also write the statistics (interesting cells, saturation) as JSON")
    o.add_argument("--signals", metavar="NAMES", default=None,
                   help="comma-separated signals to embed for colouring, e.g. h or h,c "
                   "(default: all; each costs N*layers*hidden bytes, so 2x512 over 5,000 "
                   "characters is about 7 MB per signal); statistics cover all of them")
    o.add_argument("--top", metavar="N", type=integer(1), default=10,
                   help="cells listed per feature (default 10)")
    o.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.set_defaults(run=run)


def load_text(args, ckpt) -> tuple[str, str]:
    """(text the model runs over, where it came from), cut to --chars."""
    trained = training_config(ckpt.meta)
    errors = (trained or TrainConfig()).encoding_errors
    vocab = Vocab(ckpt.vocab)
    if args.text is not None:
        text, which, val_frac, test_frac = read_text(args.text, errors), "all", 0.0, 0.0
        where = Path(args.text).name
    else:
        text = resolve_eval_data(None, trained, errors, flag="--text").text
        # named as the run names it ("tinyshakespeare"), not by where it was found;
        # a file by its base name, as the page names every file (see _shown)
        where = f"{describe(trained.data)} ({args.split} split)"
        which = args.split
        val_frac, test_frac = trained.val_frac, trained.test_frac
        if which == "val" and val_frac == 0 or which == "test" and test_frac == 0:
            raise UserError(f"the model was trained with --{which}-frac 0: it has no "
                            f"{which} split; pass --split train or --text FILE")
    ids, skipped = split_ids(text, vocab, val_frac, which, args.unknown == "skip",
                             test_frac)
    say_skipped(skipped, where)
    ids = ids[:args.chars]
    if len(ids) < 2:
        raise UserError(f"{where} has {len(ids)} usable character(s); at least 2 are needed")
    return vocab.decode(ids), where


def run(args) -> int:
    outputs = [Path(p) for p in (args.out, args.json) if p is not None]
    if len(outputs) == 2 and os.path.abspath(outputs[0]) == os.path.abspath(outputs[1]):
        raise UserError(f"--out and --json both name {args.out}: give two different files")
    for path in outputs:
        check_output(path, args.force)
    ckpt_path = resolve_checkpoint(args.checkpoint)
    ckpt = load_checkpoint(ckpt_path)
    text, where = load_text(args, ckpt)
    start = time.perf_counter()
    ids = Vocab(ckpt.vocab).encode(text)
    acts = record(ckpt.params, ckpt.config, ids)
    signals = _signal_names(args.signals, [s.name for s in acts.signals[0]], ckpt.config.cell)
    stats = report(acts, text, ids, ckpt.config, args.top)
    stats["checkpoint"], stats["text"] = _shown(ckpt_path), where
    c = ckpt.config
    title = (f"{_shown(ckpt_path)}: {c.num_layers}x{c.hidden_size} {c.cell}, "
             f"{len(text):,} characters of {where}")
    html = page(page_data(acts, text, ids, ckpt.vocab, stats, title, signals)).encode("utf-8")
    atomic_write_bytes(Path(args.out), html)
    print(f"wrote {args.out} ({len(html) / 1e6:.1f} MB) in {time.perf_counter() - start:.1f}s")
    if args.json is not None:
        atomic_write_bytes(Path(args.json), (json.dumps(stats) + "\n").encode("utf-8"))
        print(f"wrote {args.json}")
    for feature, cells in stats["interesting_cells"].items():
        best = (f"layer {cells[0]['layer']} {cells[0]['signal']}[{cells[0]['unit']}]  "
                f"r = {cells[0]['r']:+.2f}" if cells else "(not in this text)")
        print(f"  {feature:14s} best cell: {best}")
    return 0


def _signal_names(spec: str | None, names: list[str], cell: str) -> list[str] | None:
    """--signals as a list (None: all), each one the cell's."""
    if spec is None:
        return None
    chosen = [s.strip() for s in spec.split(",") if s.strip()]
    wrong = [s for s in chosen if s not in names]
    if wrong or not chosen:
        raise UserError(f"--signals: {', '.join(wrong) or 'none given'}; {a_cell(cell)} has "
                        f"{', '.join(names)}")
    return chosen


def _shown(path: Path) -> str:
    """A checkpoint as the page names it: its run directory's name and its own
    (run/best.safetensors), never the absolute path, which tells whoever the page
    is shared with about the machine it was made on and nothing about the model."""
    path = Path(path).resolve()
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name

