"""`charlstm completion bash|zsh|fish`: a completion script, written from the parser itself.

Each script completes the same things from the same tables: the command names, a
command's flags, a flag's choices, and file names elsewhere. They are generated, so a
new flag or command is completed by every shell without editing them.
"""

from __future__ import annotations

import argparse
import shlex

BASH = """# bash completion for charlstm: source it, or save it as
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

# The same logic as bash's, in zsh's terms: words (1-based) and CURRENT, compadd, _files.
ZSH = """#compdef charlstm
# zsh completion for charlstm: `source <(charlstm completion zsh)` after compinit, or
# save it as _charlstm in a directory on $fpath
_charlstm() {{
    local cmd="" i
    local -a opts
    for ((i = 2; i < CURRENT; i++)); do
        [[ ${{words[i]}} != -* ]] && {{ cmd=${{words[i]}}; break; }}
    done
    case "${{words[CURRENT-1]}}" in
{choices}    esac
    case "$cmd" in
{commands}        "") opts=({top}) ;;
    esac
    if [[ -z $cmd && ${{words[CURRENT]}} != -* ]]; then
        compadd -- {names}
    elif [[ ${{words[CURRENT]}} == -* ]]; then
        compadd -- $opts
    else
        _files
    fi
}}
if [[ ${{zsh_eval_context[-1]}} == loadautofunc ]]; then
    _charlstm "$@"
else
    compdef _charlstm charlstm
fi
"""

FISH_HEAD = """# fish completion for charlstm: `charlstm completion fish | source`, or save it as
# ~/.config/fish/completions/charlstm.fish
complete -c charlstm -n __fish_use_subcommand -f
"""


def register(sub) -> None:
    p = sub.add_parser("completion", help="print a shell completion script",
                       description="Print a completion script for the shell; it completes "
                       "commands, flags and flag choices. bash: `source <(charlstm completion "
                       "bash)` (add the line to ~/.bashrc to keep it); zsh: `source "
                       "<(charlstm completion zsh)` after compinit in ~/.zshrc; fish: "
                       "`charlstm completion fish > ~/.config/fish/completions/charlstm.fish`.")
    p.add_argument("shell", choices=sorted(SCRIPTS), help="the shell")
    p.set_defaults(run=run)


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    return [s for a in parser._actions for s in a.option_strings]


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions
                if isinstance(a, argparse._SubParsersAction)).choices


def _choices(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """flag -> its choices, across commands (a flag means one thing everywhere)."""
    found = {}
    for sub in _commands(parser).values():
        for action in sub._actions:
            if action.choices and action.option_strings:
                for flag in action.option_strings:
                    found.setdefault(flag, set()).update(map(str, action.choices))
    return {flag: sorted(values) for flag, values in sorted(found.items())}


def _case_script(parser: argparse.ArgumentParser, template: str, command_line,
                 choice_line) -> str:
    """A bash or zsh template filled in: command_line(name, flags) is one command's
    case branch, choice_line(flag, choices) one flag's."""
    commands = _commands(parser)
    return template.format(
        choices="".join(choice_line(flag, values) for flag, values in _choices(parser).items()),
        commands="".join(command_line(name, " ".join(_flags(sub)))
                         for name, sub in commands.items()),
        top=" ".join(_flags(parser)), names=" ".join(commands))


def bash_script(parser: argparse.ArgumentParser) -> str:
    """The bash completion script for `parser` (charlstm's, with its subcommands)."""
    return _case_script(
        parser, BASH, lambda name, flags: f'        {name}) opts="{flags}" ;;\n',
        lambda flag, values: f'        {flag}) COMPREPLY=($(compgen -W "{" ".join(values)}" '
                             f'-- "$cur")); return ;;\n')


def zsh_script(parser: argparse.ArgumentParser) -> str:
    """The zsh completion script for `parser`: bash_script's tables, zsh's builtins."""
    return _case_script(
        parser, ZSH, lambda name, flags: f"        {name}) opts=({flags}) ;;\n",
        lambda flag, values: f"        {flag}) compadd -- {' '.join(map(shlex.quote, values))}; "
                             "return ;;\n")


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish_option(condition: str, action: argparse.Action) -> str:
    """One `complete` line for an option: its names, what it takes, its help."""
    names = " ".join(f"-l {s[2:]}" if s.startswith("--") else f"-s {s[1:]}"
                     for s in action.option_strings)
    takes = ""
    if action.choices:
        takes = " -x -a " + _fish_quote(" ".join(map(str, action.choices)))
    elif action.nargs != 0:
        takes = " -r"  # a value: a file name, or whatever is typed
    summary = (action.help or "").split(";")[0].split(" (")[0]
    described = f" -d {_fish_quote(summary)}" if summary and summary != "==SUPPRESS==" else ""
    return f"complete -c charlstm -n {_fish_quote(condition)} {names}{takes}{described}\n"


def fish_script(parser: argparse.ArgumentParser) -> str:
    """The fish completion script for `parser`: commands (with their help) where no
    command is given yet, then each command's flags once it is."""
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    lines = [FISH_HEAD]
    for choice in subparsers._choices_actions:
        lines.append(f"complete -c charlstm -n __fish_use_subcommand -a {choice.dest} "
                     f"-d {_fish_quote(choice.help)}\n")
    lines += [_fish_option("__fish_use_subcommand", a) for a in parser._actions
              if a.option_strings]
    for name, sub in subparsers.choices.items():
        condition = f"__fish_seen_subcommand_from {name}"
        lines += [_fish_option(condition, a) for a in sub._actions if a.option_strings]
    return "".join(lines)


SCRIPTS = {"bash": bash_script, "zsh": zsh_script, "fish": fish_script}


def run(args) -> int:
    print(SCRIPTS[args.shell](args.root_parser), end="")
    return 0
