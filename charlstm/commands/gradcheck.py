"""`charlstm gradcheck`: prove the backward pass right on a random model."""

from __future__ import annotations

import time

import numpy as np

from ..cells import CELLS
from ..config import DROPOUTS, ModelConfig
from ..errors import UserError
from ..gradcheck import check_gradients, format_table, random_problem
from ..model import make_weight_masks
from ..penalties import Penalty
from .argtypes import integer, number

TOLERANCE = 1e-6



def register(sub) -> None:
    p = sub.add_parser("gradcheck", help="check every gradient against finite differences",
                       description="Compare the hand-written backward pass with 6th-order "
                       "central differences in float64, for every parameter and the initial "
                       f"state. Exits 1 if any max relative error exceeds {TOLERANCE:g}.")
    m = p.add_argument_group("model")
    m.add_argument("--vocab-size", type=integer(1), default=7, help="characters (default 7)")
    m.add_argument("--hidden-size", type=integer(1), default=5, help="H (default 5)")
    m.add_argument("--num-layers", type=integer(1), default=2, help="L (default 2)")
    m.add_argument("--cell", default="lstm", choices=sorted(CELLS),
                   help="recurrent cell (default lstm)")
    m.add_argument("--dropout", type=number(0, 1, high_open=True), default=0.0,
                   help="check with a fixed dropout mask of this rate (default 0)")
    r = p.add_argument_group("regularisation", "check with AWD-LSTM's dropouts (fixed "
                             "masks of these rates) and activation penalties on the top "
                             "layer's output in the objective")
    for name, what in (("weight_dropout", "DropConnect on every W_hh"),
                       ("locked_dropout", "locked dropout on every layer's output"),
                       ("input_dropout", "input-character dropout")):
        r.add_argument("--" + name.replace("_", "-"), type=number(0, 1, high_open=True),
                       default=0.0, help=f"{what}: rate of its mask (default 0)")
    r.add_argument("--ar", type=number(0), default=0.0,
                   help="weight of AR, mean(h^2) (default 0)")
    r.add_argument("--tar", type=number(0), default=0.0,
                   help="weight of TAR, mean((h[t] - h[t-1])^2) (default 0)")
    d = p.add_argument_group("data")
    d.add_argument("--seq-len", type=integer(1), default=4, help="T (default 4)")
    d.add_argument("--batch-size", type=integer(1), default=3, help="B (default 3)")
    d.add_argument("--seed", type=integer(0), default=0, help="random seed (default 0)")
    p.set_defaults(run=run)


def run(args) -> int:
    try:
        config = ModelConfig(vocab_size=args.vocab_size, hidden_size=args.hidden_size,
                             num_layers=args.num_layers, cell=args.cell,
                             **{name: getattr(args, name) for name in DROPOUTS})
    except ValueError as e:
        raise UserError(str(e)) from None
    problem = random_problem(config, args.seq_len, args.batch_size, args.seed,
                             dropout_mask=args.dropout > 0 or args.locked_dropout > 0)
    weight_masks = make_weight_masks(config, np.random.default_rng([args.seed, 1]), np.float64)
    start = time.perf_counter()
    penalty = Penalty(args.ar, args.tar)
    rows = check_gradients(*problem[:1], config, *problem[1:], penalty=penalty,
                           weight_masks=weight_masks)
    extra = "".join(f" {name}={getattr(config, name):g}" for name in DROPOUTS[1:]
                    if getattr(config, name))
    extra += f" AR={args.ar:g} TAR={args.tar:g}" if penalty else ""
    print(f"gradient check: {config.cell.upper()} V={config.vocab_size} H={config.hidden_size} "
          f"L={config.num_layers} T={args.seq_len} B={args.batch_size} dropout={config.dropout}"
          f"{extra} seed={args.seed}, float64, 6th-order central differences")
    print(format_table(rows, TOLERANCE))
    worst = max(r.max_rel_error for r in rows)
    verdict = "PASS" if worst < TOLERANCE else "FAIL"
    print(f"{verdict}: worst relative error {worst:.2e} (tolerance {TOLERANCE:g}), "
          f"{time.perf_counter() - start:.1f}s")
    return 0 if worst < TOLERANCE else 1
