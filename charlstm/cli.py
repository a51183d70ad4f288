"""Command-line entry point: parse, then hand over to a command module.

Each command lives in charlstm/commands/<name>.py and provides
`register(subparsers)` (its flags, grouped, each with help) and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys

from . import __version__
from .commands.argtypes import integer
from .errors import UserError, os_error_message
from .progress import silence_stdout

COMMANDS = ["train", "gradcheck", "export", "import_", "sample", "info", "eval", "plot", "gradflow",
            "fetch", "visualize", "completion"]
# What to lower when a command still runs out of memory (after the estimates that refuse
# what clearly cannot fit): the flags that size what it holds.
MEMORY_ADVICE = {
    "train": "--hidden-size, --num-layers, --batch-size or --seq-len, or the text",
    "sample": "--num-samples or --length",
    "eval": "--batch-size, or the text",
    "visualize": "--chars or --signals",
    "gradflow": "--hidden-size, --windows or --seq-len",
    "gradcheck": "the model's size",
}
# The commands that run the model on real amounts of data, where --threads matters.
THREADED = ("train", "eval", "sample", "gradcheck", "gradflow", "visualize")


class Parser(argparse.ArgumentParser):
    """argparse with charlstm's one error style: `charlstm: error: --flag: what is wrong
    (see charlstm COMMAND --help)`, one line, exit 2, instead of a usage block."""

    def error(self, message: str):
        message = message.replace("argument ", "", 1) if message.startswith("argument ") \
            else message
        self.exit(2, f"charlstm: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="charlstm",
        description="Character-level LSTM language models with hand-derived backprop in NumPy.")
    parser.add_argument("--version", action="version", version=f"charlstm {__version__}")
    add_debug(parser, default=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"charlstm.commands.{name}").register(sub)
    for name, command_parser in sub.choices.items():  # options every command shares
        g = command_parser.add_argument_group("runtime")
        if name in THREADED:
            g.add_argument("--threads", type=integer(1), metavar="N",
                           help="worker threads (default: every core this process may use): "
                           "the batch's streams are split across them, each on a one-thread "
                           "BLAS; also caps the BLAS pool elsewhere. 1 is often fastest on a "
                           "busy machine")
        add_debug(g, default=argparse.SUPPRESS)
    return parser


def add_debug(parser, default) -> None:
    """--debug, accepted before or after the command name. After it, the subparser's
    default must be SUPPRESS: argparse copies a subparser's defaults over the values
    the main parser has already set, which would undo a --debug given before it."""
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show full tracebacks instead of one-line errors")


@contextlib.contextmanager
def blas_threads(n: int | None):
    """Context running the command on n threads (None: the defaults): n stream-parallel
    workers (charlstm.engine) and a BLAS pool limited to n threads."""
    from . import engine
    with engine.num_threads(n):
        if n is None:
            yield
        else:
            from threadpoolctl import threadpool_limits
            with threadpool_limits(limits=n, user_api="blas"):
                yield


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with blas_threads(getattr(args, "threads", None)):
            return int(args.run(args) or 0)
    except UserError as e:
        if args.debug:
            raise
        print(f"charlstm: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("charlstm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output left (`| head`): that is fine
        silence_stdout()
        return 0
    except OSError as e:  # the machine's fault (disk full, read-only...), not the user's
        if args.debug:
            raise
        print(f"charlstm: error: {os_error_message(e)}", file=sys.stderr)
        return 1
    except MemoryError as e:  # every write is atomic: nothing is left half-written
        if args.debug:
            raise
        what = f" ({str(e).splitlines()[0]})" if str(e) else ""
        lower = MEMORY_ADVICE.get(args.command, "the sizes given")
        print(f"charlstm: error: out of memory{what} while running charlstm {args.command}; "
              f"lower {lower} (files written before are intact)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
