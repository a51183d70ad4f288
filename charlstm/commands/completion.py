"""`charlstm completion bash`: a bash completion script, written from the parser itself."""

from __future__ import annotations

import argparse

SCRIPT = """# bash completion for charlstm: source it, or save it as
# ~/.local/share/bash-completion/completions/charlstm
_charlstm() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}} i cmd="" opts
    for ((i = 1; i < COMP_CWORD; i++)); do
        [[ ${{COMP_WORDS[i]}} != -* ]] && {{ cmd=${{COMP_WORDS[i]}}; break; }}
    done
    case "$prev" in
{choices}    esac
    case "$cmd" in
{commands}        "") opts="{top}" ;;
    esac
    if [[ -z $cmd && $cur != -* ]]; then
        COMPREPLY=($(compgen -W "{names}" -- "$cur"))
    elif [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}}
complete -o filenames -F _charlstm charlstm
"""


def register(sub) -> None:
    p = sub.add_parser("completion", help="print a shell completion script",
                       description="Print a completion script for the shell: "
                       "`source <(charlstm completion bash)` completes commands, flags and "
                       "flag choices (add the line to ~/.bashrc to keep it).")
    p.add_argument("shell", choices=["bash"], help="the shell (bash)")
    p.set_defaults(run=run)


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    return [s for a in parser._actions for s in a.option_strings]


def bash_script(parser: argparse.ArgumentParser) -> str:
    """The completion script for `parser` (charlstm's, with its subcommands)."""
    commands = next(a for a in parser._actions
                    if isinstance(a, argparse._SubParsersAction)).choices
    choices = {}  # flag -> its choices, across commands (a flag means one thing everywhere)
    lines = []
    for name, sub in commands.items():
        lines.append(f'        {name}) opts="{" ".join(_flags(sub))}" ;;\n')
        for action in sub._actions:
            if action.choices and action.option_strings:
                for flag in action.option_strings:
                    choices.setdefault(flag, set()).update(map(str, action.choices))
    choice_lines = [f'        {flag}) COMPREPLY=($(compgen -W "{" ".join(sorted(values))}" '
                    f'-- "$cur")); return ;;\n' for flag, values in sorted(choices.items())]
    return SCRIPT.format(choices="".join(choice_lines), commands="".join(lines),
                         top=" ".join(_flags(parser)), names=" ".join(commands))


def run(args) -> int:
    print(bash_script(args.parser), end="")
    return 0
