"""`charlstm gradflow`: the constant error carousel, measured on real text."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..datasets import resolve_data
from ..errors import UserError
from ..fsutil import refuse_non_regular
from ..gradflow import default_variants, format_table, measure, plot_png, write_csv
from ..text import Vocab, read_text
from .argtypes import integer, number

OUTPUTS = ("gradflow.csv", "gradflow.png")


def register(sub) -> None:
    p = sub.add_parser(
        "gradflow", help="measure how far gradients reach back in time (LSTM vs GRU vs RNN)",
        description="Put a loss on the last character of a window of real text and measure "
        "the norm of dL/dh_t and dL/dc_t at every distance back in time, for an LSTM with "
        "forget bias 1 and 0, a GRU and a vanilla tanh RNN of the same size, at "
        "initialisation and after a short training run. Writes gradflow.csv and "
        "gradflow.png (log scale) and prints a table.")
    d = p.add_argument_group("data")
    d.add_argument("--data", default="tinyshakespeare", metavar="PATH|NAME",
                   help="UTF-8 text file, or 'tinyshakespeare' (default)")
    d.add_argument("--seq-len", type=integer(1), default=200, metavar="T",
                   help="window behind the loss, in characters (default 200)")
    d.add_argument("--windows", type=integer(1), default=16, metavar="N",
                   help="windows measured and averaged (default 16)")
    m = p.add_argument_group("model")
    m.add_argument("--hidden-size", type=integer(1), default=128, metavar="H",
                   help="H of every model (default 128)")
    m.add_argument("--seed", type=integer(0), default=0, metavar="S",
                   help="init, data and training seed (default 0)")
    t = p.add_argument_group("short training run")
    t.add_argument("--train-steps", type=integer(0), default=150, metavar="N",
                   help="Adam steps per model before the second measurement; 0 skips it "
                   "(default 150)")
    t.add_argument("--train-batch-size", type=integer(1), default=32, metavar="B",
                   help="streams per training step (default 32)")
    t.add_argument("--train-seq-len", type=integer(1), default=64, metavar="T",
                   help="BPTT window while training (default 64)")
    t.add_argument("--lr", type=number(0, low_open=True), default=2e-3, metavar="LR",
                   help="Adam rate (default 2e-3)")
    o = p.add_argument_group("output")
    o.add_argument("--out", default="gradflow", metavar="DIR", help="directory for the CSV and PNG "
                   "(default ./gradflow)")
    o.add_argument("--force", action="store_true", help="overwrite earlier results in --out")
    p.set_defaults(run=run)


def run(args) -> int:
    out = Path(args.out)
    existing = [out / name for name in OUTPUTS if (out / name).exists()]
    if existing and not args.force:
        raise UserError(f"{existing[0]} already exists; pass --force to overwrite or "
                        "choose another --out")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is not a directory")
    for name in OUTPUTS:  # never written through a link, into a FIFO or a device
        refuse_non_regular(out / name)
    text = read_text(resolve_data(args.data))
    vocab = Vocab.from_text(text)
    ids = vocab.encode(text)
    variants = default_variants(len(vocab), args.hidden_size)
    start = time.perf_counter()

    def progress(msg):
        print(f"  {msg}", file=sys.stderr, flush=True)

    try:
        rows = measure(ids, variants, args.seq_len, args.windows, args.train_steps,
                       args.train_batch_size, args.train_seq_len, args.lr, args.seed,
                       progress=progress)
    except ValueError as e:
        raise UserError(str(e)) from None
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {out}: {e.strerror or e}") from None
    write_csv(rows, out / OUTPUTS[0])
    title = (f"loss on the last of {args.seq_len} characters of {args.data}, H={args.hidden_size}, "
             f"{args.windows} windows; trained = {args.train_steps} Adam steps")
    plot_png(rows, out / OUTPUTS[1], title)
    print(f"gradient norm ||dL/dstate|| at k steps back from a loss on the last of "
          f"{args.seq_len} characters (H={args.hidden_size}, geometric mean of {args.windows} "
          "windows)")
    print(format_table(rows))
    print(f"wrote {out / OUTPUTS[0]} and {out / OUTPUTS[1]} "
          f"({time.perf_counter() - start:.1f}s)")
    return 0
