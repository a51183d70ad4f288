"""`charlstm help [COMMAND]`: the list of commands, or `charlstm COMMAND --help`."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("help", help="show the commands, or one command's help",
                       description="`charlstm help` lists the commands; `charlstm help "
                       "COMMAND` is `charlstm COMMAND --help`.")
    p.add_argument("topic", metavar="COMMAND", nargs="?", choices=sorted(sub.choices),
                   help="the command to explain")
    p.set_defaults(run=run)


def run(args) -> int:
    if args.topic is None:
        args.root_parser.print_help()
        return 0
    args.root_parser.parse_args([args.topic, "--help"])  # prints it and exits 0
    return 0
