"""Command-line entry point: parse, then hand over to a command module.

Each command lives in charlstm/commands/<name>.py and provides
`register(subparsers)` (its flags, grouped, each with help) and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys

from . import pool
from ._version import __version__
from .commands.argtypes import integer
from .errors import UserError, closest, os_error_message
from .progress import silence_stdout

# In the order `charlstm --help` lists them: the everyday ones first, then the rest.
COMMANDS = ["train", "sample", "eval", "info", "plot", "visualize", "export", "import_", "fetch",
            "prepare", "gradcheck", "gradflow", "completion", "help"]
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
        typo = re.search(r"invalid choice: '(.*)' \(choose from (.*)\)$", message)
        guess = typo and closest(typo[1], re.findall(r"'([^']*)'", typo[2]))
        message += f"; did you mean {guess}?" if guess else ""
        self.exit(2, f"charlstm: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="charlstm",
        description="Character-level LSTM language models with hand-derived backprop in NumPy.")
    parser.add_argument("--version", action="version", version=f"charlstm {__version__}")
    add_debug(parser, default=False)
    # not required: `charlstm` alone prints the list of commands (see main)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"charlstm.commands.{name}").register(sub)
    for name, command_parser in sub.choices.items():  # options every command shares
        g = command_parser.add_argument_group("runtime")
        if name in THREADED:
            g.add_argument("--threads", type=integer(1), metavar="N",
                           help="run on at most N cores (default: every core this process "
                           "may use): N worker threads, the batch's streams split across them, "
                           "and NumPy's BLAS limited to N threads everywhere (one per worker "
                           "while they run). 1 is often fastest on a busy machine")
        add_debug(g, default=argparse.SUPPRESS)
    return parser


def add_debug(parser, default) -> None:
    """--debug, accepted before or after the command name. After it, the subparser's
    default must be SUPPRESS: argparse copies a subparser's defaults over the values
    the main parser has already set, which would undo a --debug given before it."""
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show full tracebacks instead of one-line errors")


def use_threads(n: int | None):
    """Context running the command on n cores (None: the defaults): pool.num_threads,
    which holds the workers and NumPy's BLAS to n threads together."""
    return pool.num_threads(n)


def subparser(parser: argparse.ArgumentParser, name: str | None):
    """The parser of command `name` (None: no command) under charlstm's `parser`."""
    return parser._subparsers._group_actions[0].choices.get(name) if name else None


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """parser.parse_args, with "did you mean --xyz?" for an unknown flag close to one of
    the command's own (Python 3.11's argparse has no suggest_on_error)."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        command = subparser(parser, args.command) or parser
        flags = [f for a in command._actions for f in a.option_strings]
        guesses = [closest(e.split("=", 1)[0], flags) for e in extras if e.startswith("-")]
        hint = "".join(f"; did you mean {g}?" for g in dict.fromkeys(guesses) if g)
        command.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parse(parser, argv)
    if args.command is None:
        # like git: the list of commands, but exit 1, since nothing was done; a script
        # running `charlstm $CMD` with CMD empty must not pass. `charlstm help` exits 0.
        parser.print_help()
        return 1
    args.root_parser = parser  # for the commands about the commands: help, completion
    try:
        with use_threads(getattr(args, "threads", None)):
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
