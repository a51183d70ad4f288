"""`charlstm fetch NAME`: put a named dataset where `--data NAME` finds it, verified."""

from __future__ import annotations

from ..datasets import DATASETS, resolve_data


def register(sub) -> None:
    p = sub.add_parser(
        "fetch", help="download a named dataset into the cache (verified)",
        description="Find the dataset ($CHARLSTM_DATA_DIR, then the cache) or download it, "
        "check its SHA-256 and keep it in $XDG_CACHE_HOME/charlstm (~/.cache/charlstm), "
        "where `--data NAME` finds it without the network. Prints its path.")
    p.add_argument("name", choices=sorted(DATASETS), help="the dataset")
    p.set_defaults(run=run)


def run(args) -> int:
    print(resolve_data(args.name))
    return 0
